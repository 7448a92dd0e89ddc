//! The README and the pages of docs/ say what is true:
//!
//! - every GraphQL block of README.md and docs/*.md pastes into GraphiQL as
//!   is: it parses, a block with several operations names each of them,
//!   and every query and mutation passes the server's validation (run
//!   against an empty server, where a lookup answers null and a mutation
//!   may answer NOT_FOUND, but never BAD_REQUEST);
//! - the README's five-minute tour (its ```sh blocks after a
//!   `<!-- tour -->` line) runs with `bash -e`, as written, against a
//!   server the test starts, and every command followed by `# ` lines
//!   prints exactly those lines;
//! - so does the plain-process example of docs/workloads.md
//!   (`<!-- workload-tour -->`);
//! - the monitor session of docs/legacy-api.md is what the server answers.

mod common;

use common::kernel;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The address the README shows: the CLI's default server.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// README.md and every page of docs/.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// A fenced block: its language, the marker comment on the line before it
/// (blank lines skipped), and its text.
struct Block {
    lang: String,
    marker: Option<String>,
    text: String,
}

fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    let mut last_line = "";
    for line in md.lines() {
        let l = line.trim_end();
        match &mut current {
            None => {
                if let Some(lang) = l.strip_prefix("```") {
                    let marker = last_line.strip_prefix("<!-- ").and_then(|m| m.strip_suffix(" -->")).map(String::from);
                    current = Some(Block { lang: lang.to_string(), marker, text: String::new() });
                } else if !l.is_empty() {
                    last_line = l;
                }
            }
            Some(b) if l == "```" => {
                out.push(std::mem::replace(b, Block { lang: String::new(), marker: None, text: String::new() }));
                current = None;
                last_line = "";
            }
            Some(b) => {
                b.text.push_str(l);
                b.text.push('\n');
            }
        }
    }
    out
}

#[tokio::test]
async fn every_graphql_block_of_the_readme_and_the_docs_parses_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &[]);
    let mut seen = 0;
    for file in doc_files() {
        let gql: Vec<Block> = blocks(&read(&file)).into_iter().filter(|b| b.lang == "graphql").collect();
        if file.ends_with("README.md") {
            assert!(gql.len() >= 3, "found only {} graphql blocks in the README", gql.len());
        }
        seen += gql.len();
        for b in gql.iter().map(|b| &b.text) {
            let doc = async_graphql::parser::parse_query(b).unwrap_or_else(|e| panic!("{}: {e}\n{b}", file.display()));
            let names: Vec<Option<String>> = doc.operations.iter().map(|(n, _)| n.map(|n| n.to_string())).collect();
            if names.len() > 1 {
                assert!(
                    names.iter().all(Option::is_some),
                    "{}: several operations, not all named:\n{b}",
                    file.display()
                );
            }
            for name in names {
                if b.contains("subscription") {
                    continue;
                }
                let (_, body) = s.post(&json!({"query": b, "operationName": name})).await;
                let code = body["errors"][0]["extensions"]["code"].as_str().unwrap_or("");
                assert_ne!(code, "BAD_REQUEST", "{}: {name:?} does not validate: {body}\n{b}", file.display());
            }
        }
    }
    assert!(seen >= 10, "found only {seen} graphql blocks in README.md and docs/");
}

/// One step of the tour: shell lines, and the lines they print when the
/// README shows them.
struct Step {
    commands: String,
    expected: Option<String>,
}

fn tour_steps(md: &str, marker: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for b in blocks(md).into_iter().filter(|b| b.lang == "sh" && b.marker.as_deref() == Some(marker)) {
        let mut cur = Step { commands: String::new(), expected: None };
        for line in b.text.lines() {
            if let Some(out) = line.strip_prefix("# ").or(if line == "#" { Some("") } else { None }) {
                let e = cur.expected.get_or_insert_with(String::new);
                e.push_str(out);
                e.push('\n');
            } else {
                if cur.expected.is_some() {
                    steps.push(std::mem::replace(&mut cur, Step { commands: String::new(), expected: None }));
                }
                cur.commands.push_str(line);
                cur.commands.push('\n');
            }
        }
        if !cur.commands.trim().is_empty() {
            steps.push(cur);
        }
    }
    steps
}

/// Trailing blanks of each line and trailing empty lines are not part of
/// an answer (curl prints JSON without a newline), nor is the time of day
/// a change was made at (`12:34:56.789Z` in `watch`): each is compared as
/// `HH:MM:SS.mmmZ`.
fn normalize(s: &str) -> String {
    let text = s.lines().map(str::trim_end).collect::<Vec<_>>().join("\n").trim_end().to_string();
    mask_times(&text)
}

/// Every `DD:DD:DD.DDDZ` in `s` as `HH:MM:SS.mmmZ`.
fn mask_times(s: &str) -> String {
    const SHAPE: &[u8] = b"99:99:99.999Z";
    let b = s.as_bytes();
    let fits = |i: usize| {
        b.len() >= i + SHAPE.len()
            && SHAPE
                .iter()
                .zip(&b[i..])
                .all(|(want, got)| if *want == b'9' { got.is_ascii_digit() } else { want == got })
    };
    let (mut out, mut i) = (String::with_capacity(s.len()), 0);
    while i < b.len() {
        if fits(i) {
            out.push_str("HH:MM:SS.mmmZ");
            i += SHAPE.len();
        } else {
            let c = s[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[test]
fn times_of_day_are_masked_and_nothing_else() {
    assert_eq!(mask_times("(anonymous, 00:45:54.792Z) 1.5 12:00"), "(anonymous, HH:MM:SS.mmmZ) 1.5 12:00");
    assert_eq!(mask_times("é 23:59:59.999Z"), "é HH:MM:SS.mmmZ");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Runs the ```sh blocks of `md` marked `<!-- {marker} -->` in one `bash -e`
/// (in a copy of examples/, with the binary on the PATH and
/// `LEVIATHAN_SERVER` naming `s`), and checks that every step printed what
/// the page shows. Namespaces carry the test's prefix instead of `lev-`.
async fn run_tour(s: &Server, prefix: &kernel::Prefix, md: &str, marker: &str) {
    let steps = tour_steps(md, marker);
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("checkout");
    copy_dir(&root().join("examples"), &work.join("examples"));
    // One shell for the whole tour (variables and files carry over); a
    // marker after each step splits what it printed.
    let mut script = String::new();
    for (i, step) in steps.iter().enumerate() {
        script.push_str(&step.commands.replace("ip netns exec lev-", &format!("ip netns exec {}", prefix.0)));
        script.push_str(&format!("printf '\\n@@step {i}@@\\n'\n"));
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_leviathan")).parent().unwrap().to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    // Output goes to files, not pipes, and the shell leads a process group
    // of its own that is killed once it is done: a background process the
    // page starts (and did not stop, because a step failed) neither keeps
    // the test waiting nor outlives it.
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = tokio::process::Command::new("bash")
        .args(["-e", "-c", &script])
        .current_dir(&work)
        .env("PATH", path)
        .env("LEVIATHAN_SERVER", s.url(""))
        .env_remove("LEVIATHAN_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("run bash");
    let group = child.id().expect("bash's pid");
    let status = tokio::time::timeout(WAIT, child.wait()).await;
    // What the page starts, it stops: nothing of the group outlives a
    // tour that ran to its end (`kill -0` succeeds while one is left).
    // (A process killed at the end may take a moment to be reaped: wait
    // for the group to be gone, within the bound that only catches hangs.)
    let running = || {
        let o = std::process::Command::new("kill").args(["-0", "--", &format!("-{group}")]).output();
        o.is_ok_and(|o| o.status.success())
    };
    let deadline = std::time::Instant::now() + WAIT;
    while running() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = running();
    let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
    let stdout = read(&out_path).replace(&s.url(""), DEFAULT_SERVER);
    let stderr = read(&err_path);
    let Ok(status) = status else { panic!("the tour hung; it printed:\n{stdout}\nand on stderr:\n{stderr}") };
    let status = status.expect("wait for bash");
    let mut printed = stdout.split("@@step ");
    let mut before = printed.next().unwrap_or("").to_string();
    for (i, step) in steps.iter().enumerate() {
        let Some(chunk) = printed.next() else {
            panic!(
                "{marker}: failed at step {i} (exit {:?}):\n{}\nit printed:\n{before}\nstderr:\n{stderr}",
                status.code(),
                step.commands
            );
        };
        if let Some(expected) = &step.expected {
            assert_eq!(
                normalize(&before),
                normalize(expected),
                "{marker}: step {i} answered differently:\n{}\nstderr:\n{stderr}",
                step.commands
            );
        }
        before = chunk.split_once("@@\n").map(|(_, rest)| rest.to_string()).unwrap_or_default();
    }
    assert!(status.success(), "{marker}: failed after its last step:\n{stderr}");
    assert!(!left, "{marker}: a process it started was still running at its end");
}

/// A realizing server of its own prefix (bind them in this order: the
/// server stops before the prefix is cleaned up).
fn realizing_server(dir: &Path) -> (kernel::Prefix, Server) {
    let prefix = kernel::Prefix::new("r");
    let s = Server::start(&dir.join("s.db"), &["--prefix", &prefix.0, "--reconcile-interval", "0"]);
    (prefix, s)
}

#[tokio::test]
async fn the_tour_of_the_readme_runs_as_written_and_answers_as_shown() {
    if !kernel::can_run("the_tour_of_the_readme_runs_as_written_and_answers_as_shown") {
        return;
    }
    let readme = read(&root().join("README.md"));
    // The variable the tour's commands use, set as the README sets it: to
    // the CLI's default server, which the test's server stands in for.
    let setup: Vec<Block> = blocks(&readme).into_iter().filter(|b| b.marker.as_deref() == Some("tour-setup")).collect();
    assert_eq!(setup.len(), 1, "one <!-- tour-setup --> block");
    assert_eq!(setup[0].text.trim(), format!("export LEVIATHAN_SERVER={DEFAULT_SERVER}"));
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_leviathan")).args(["get", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains(&format!("[default: {DEFAULT_SERVER}]")), "the CLI's default server changed:\n{help}");
    let steps = tour_steps(&readme, "tour");
    assert!(steps.len() >= 10 && steps.iter().filter(|s| s.expected.is_some()).count() >= 8, "the tour shrank");

    let dir = tempfile::tempdir().unwrap();
    let (prefix, s) = realizing_server(dir.path());
    run_tour(&s, &prefix, &readme, "tour").await;
    // The tour tidies up after itself: only the fabric namespace is left.
    let left = kernel::namespaces(&prefix.0);
    assert!(left.iter().all(|n| n == &prefix.fabric()), "the tour left namespaces behind: {left:?}");
}

#[tokio::test]
async fn the_plain_process_of_the_workloads_page_is_wired_as_shown() {
    if !kernel::can_run("the_plain_process_of_the_workloads_page_is_wired_as_shown") {
        return;
    }
    let md = read(&root().join("docs/workloads.md"));
    assert!(tour_steps(&md, "workload-tour").len() >= 4, "the workload example shrank");
    let dir = tempfile::tempdir().unwrap();
    let (prefix, s) = realizing_server(dir.path());
    run_tour(&s, &prefix, &md, "workload-tour").await;
}

/// One line of the monitor session of docs/legacy-api.md.
enum SessionLine {
    /// `$ command`: run in a shell.
    Shell(String),
    /// `> message`: sent on the websocket.
    Send(Value),
    /// `< message`: what the server sends next.
    Receive(Value),
}

fn monitor_session(md: &str) -> Vec<SessionLine> {
    let b = blocks(md)
        .into_iter()
        .find(|b| b.marker.as_deref() == Some("monitor-session"))
        .expect("a <!-- monitor-session --> block in docs/legacy-api.md");
    let json = |s: &str| serde_json::from_str::<Value>(s).unwrap_or_else(|e| panic!("{e}: {s}"));
    b.text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match l.split_at(2) {
            ("$ ", c) => SessionLine::Shell(c.to_string()),
            ("> ", m) => SessionLine::Send(json(m)),
            ("< ", m) => SessionLine::Receive(json(m)),
            _ => panic!("a session line starts with `$ `, `> ` or `< `: {l}"),
        })
        .collect()
}

#[tokio::test]
async fn the_monitor_session_of_the_legacy_api_page_is_what_the_server_answers() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let session = monitor_session(&read(&root().join("docs/legacy-api.md")));
    assert!(session.iter().any(|l| matches!(l, SessionLine::Receive(v) if v["event"] == "create")));
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &[]);
    let ws_url = format!("ws://{}/leviathan/monitor", s.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.expect("connect to the monitor");
    for line in session {
        match line {
            SessionLine::Shell(c) => {
                let out = tokio::process::Command::new("bash")
                    .args(["-e", "-c", &c])
                    .current_dir(root())
                    .env("LEVIATHAN_SERVER", s.url(""))
                    .output()
                    .await
                    .unwrap();
                assert!(out.status.success(), "{c}: {}", String::from_utf8_lossy(&out.stderr));
            }
            SessionLine::Send(m) => ws.send(Message::Text(m.to_string().into())).await.unwrap(),
            SessionLine::Receive(want) => {
                let got = loop {
                    let msg = tokio::time::timeout(WAIT, ws.next())
                        .await
                        .unwrap_or_else(|_| panic!("no answer; expected {want}"))
                        .expect("the monitor closed")
                        .unwrap();
                    if let Message::Text(t) = msg {
                        break serde_json::from_str::<Value>(&t).unwrap();
                    }
                };
                assert_eq!(got, want);
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
}

/// Relative link targets of a page: `](target)` not starting with a scheme
/// or `#`, without an anchor.
fn relative_links(md: &str) -> Vec<String> {
    md.split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(t, _)| t.split('#').next().unwrap_or("").to_string()))
        .filter(|t| !t.is_empty() && !t.contains("://"))
        .collect()
}

#[test]
fn the_readme_is_short_and_maps_every_page_of_docs_each_with_a_title_and_a_purpose() {
    let readme = read(&root().join("README.md"));
    let lines = readme.lines().count();
    assert!(lines <= 200, "README.md has {lines} lines: move the details to docs/");
    let pages: Vec<PathBuf> = doc_files().into_iter().skip(1).collect();
    assert!(pages.len() >= 8, "{pages:?}");
    for page in &pages {
        let name = page.file_name().unwrap().to_str().unwrap();
        let md = read(page);
        assert!(md.starts_with("# "), "{name} does not start with a title");
        assert!(md.contains("What this page is for: "), "{name} does not say what it is for");
        assert!(readme.contains(&format!("](docs/{name})")), "the README's map of the docs lacks {name}");
    }
    for file in doc_files() {
        let base = file.parent().unwrap();
        for target in relative_links(&read(&file)) {
            assert!(base.join(&target).exists(), "{}: the link {target} leads nowhere", file.display());
        }
    }
}

#[tokio::test]
async fn the_docker_example_of_the_workloads_page_stops_when_a_binding_fails() {
    let md = read(&root().join("docs/workloads.md"));
    let b = blocks(&md)
        .into_iter()
        .find(|b| b.marker.as_deref() == Some("workload-bindings"))
        .expect("a <!-- workload-bindings --> block in docs/workloads.md");
    // Without the `docker run` and `podman run` lines, the bindings fail
    // here (no such containers, or no runtime at all).
    let script: String = b
        .text
        .lines()
        .filter(|l| !l.starts_with("docker run") && !l.starts_with("podman run"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(script.contains("containerCreate") && script.contains("cenImport"), "{script}");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &[]);
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("bash")
            .args(["-e", "-c", &script])
            .env("LEVIATHAN_SERVER", s.url(""))
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("the example hung")
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("\"errors\"") && stdout.contains("BAD_REQUEST"), "the bindings did not fail: {stdout}");
    assert!(stderr.contains("a binding failed"), "{stderr}");
    let d = s
        .gql(
            "{ web: container(id: \"web\") { id } db: container(id: \"db\") { id } cen(id: \"web-db\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(d, json!({"web": null, "db": null, "cen": null}), "wired after a failed binding");
}
