//! What the CLI prints for people, checked where people see it: the DOT
//! export rendered by Graphviz's `dot`, the progress of `apply` in a
//! pseudo-terminal (`script` from bsdutils), the shell completion scripts
//! loaded by bash, the manual page, and `--version`.
//!
//! Tests that need a tool (`dot`) or root (the progress test makes
//! namespaces) fail in CI without it and skip loudly elsewhere.

mod common;

use common::kernel;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_leviathan")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/topology.yaml")
}

/// `leviathan ARGS` (no token or server from the environment): stdout,
/// failing on a non-zero exit.
fn ok(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).env_remove("LEVIATHAN_TOKEN").env_remove("LEVIATHAN_SERVER").output();
    let out = out.expect("run leviathan");
    assert!(out.status.success(), "leviathan {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Whether `tool` runs here; in CI (`CI` set) a missing tool fails the
/// test (.ci/run installs it), elsewhere the test skips loudly.
fn have(tool: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs `{tool}` (Debian: see .ci/run), and CI must run it");
    }
    eprintln!("\n*** SKIPPING {test}: `{tool}` is not installed ***\n");
    false
}

/// The text of every `<text>` element of an SVG, in order.
fn svg_texts(svg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find("<text") {
        let after = &rest[start..];
        let open_end = after.find('>').expect("a <text> element closes its tag");
        let close = after.find("</text>").expect("a <text> element ends");
        out.push(after[open_end + 1..close].to_string());
        rest = &after[close..];
    }
    out
}

#[tokio::test]
async fn the_dot_export_renders_two_line_labels_in_graphviz() {
    if !have("dot", "the_dot_export_renders_two_line_labels_in_graphviz") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &[]);
    let url = s.url("");
    ok(&["apply", example().to_str().unwrap(), "--server", &url]);
    let dot = ok(&["export", "-o", "dot", "--server", &url]);

    let mut render = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dot");
    {
        use std::io::Write;
        render.stdin.take().unwrap().write_all(dot.as_bytes()).unwrap();
    }
    let out = render.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "dot said: {err}\n{dot}");
    let svg = String::from_utf8(out.stdout).unwrap();
    let texts = svg_texts(&svg);
    // A tagged container: its id and its tag on two lines, two elements.
    let at = texts.iter().position(|t| t == "db1").unwrap_or_else(|| panic!("no <text>db1</text> in {texts:?}"));
    assert_eq!(texts[at + 1], "[db]", "{texts:?}");
    // A CEN and a CIN: the id, then the status.
    for id in ["front", "back", "public", "private"] {
        let at = texts.iter().position(|t| t == id).unwrap_or_else(|| panic!("no <text>{id}</text> in {texts:?}"));
        assert_eq!(texts[at + 1], "PENDING", "{id}: {texts:?}");
    }
    assert!(texts.iter().any(|t| t == "lb"), "{texts:?}");
    assert!(!svg.contains("\\n") && !svg.contains('\\'), "a backslash was drawn:\n{svg}");
}

/// The screen as a terminal shows it, line by line: every redraw (after a
/// carriage return or a newline) is one entry, escape sequences removed.
fn screens(raw: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte.
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
            plain.push('\r');
            continue;
        }
        plain.push(c);
    }
    plain.split(['\r', '\n']).map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// `x/y` before " step" in a drawn bar.
fn drawn_count(line: &str) -> Option<(u64, u64)> {
    let end = line.find(" step")?;
    let head = &line[..end];
    let pair = head.rsplit(' ').next()?;
    let (a, b) = pair.split_once('/')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[tokio::test]
async fn apply_in_a_terminal_waits_for_the_count_then_draws_each_step_and_the_final_one() {
    const NAME: &str = "apply_in_a_terminal_waits_for_the_count_then_draws_each_step_and_the_final_one";
    if !kernel::can_run(NAME) || !have("script", NAME) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = kernel::Prefix::new("p");
    let s = Server::start(&dir.path().join("s.db"), &["--prefix", &prefix.0, "--reconcile-interval", "0"]);
    let cmd = format!("'{}' apply '{}' --server '{}'", bin(), example().display(), s.url(""));
    let out = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("LEVIATHAN_TOKEN")
        .env_remove("LEVIATHAN_SERVER")
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "apply under a terminal failed:\n{raw}");
    let lines = screens(&raw);
    let shown = lines.join("\n");

    for label in ["make cen front, back", "make cin public, private"] {
        let mine: Vec<&String> = lines.iter().filter(|l| l.contains(label)).collect();
        // The outcome: the count, with the plural that agrees with it.
        let done = mine
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{label}: done (")))
            .unwrap_or_else(|| panic!("no outcome line for {label}:\n{shown}"));
        let (n, word) = done.trim_end_matches(')').split_once(' ').expect("N step(s)");
        let n: u64 = n.parse().unwrap();
        assert!(n > 0, "{shown}");
        assert_eq!(word, if n == 1 { "step" } else { "steps" }, "{shown}");
        // Before the server counts the steps: a spinner that says so.
        assert!(
            mine.iter().any(|l| l.contains("waiting for the server to count the steps")),
            "no waiting spinner for {label}:\n{shown}"
        );
        // Every bar drawn has a known total; positions only grow; the
        // last picture is the final count, not a bar cut short.
        let drawn: Vec<(u64, u64)> = mine.iter().filter_map(|l| drawn_count(l)).collect();
        assert!(drawn.iter().all(|(_, total)| *total > 0), "a bar of 0/0 was drawn: {drawn:?}\n{shown}");
        assert!(drawn.windows(2).all(|w| w[0].0 <= w[1].0), "{drawn:?}");
        assert_eq!(drawn.last(), Some(&(n, n)), "the final count is not drawn last:\n{shown}");
        let unit = if n == 1 { "step" } else { "steps" };
        assert!(mine.iter().any(|l| l.contains(&format!("{n}/{n} {unit}"))), "{shown}");
    }
    assert!(!shown.contains("(1 steps)") && !shown.contains("0/0"), "{shown}");
    assert!(shown.contains("Done in"), "{shown}");
    drop(s);
}

#[test]
fn the_bash_completion_script_loads_and_the_others_name_the_verbs() {
    let script = ok(&["completions", "bash"]);
    let path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(path.path(), &script).unwrap();
    // As a user's shell would: `source <(leviathan completions bash)`.
    let out = Command::new("bash")
        .args(["-c", &format!("source <('{}' completions bash) && complete -p leviathan", bin())])
        .output()
        .expect("bash");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.starts_with("complete ") && said.trim_end().ends_with(" leviathan"), "{said}");
    // The function it names offers the verbs after `leviathan `.
    let offer = Command::new("bash")
        .args([
            "-c",
            &format!(
                "source '{}'; COMP_WORDS=(leviathan se); COMP_CWORD=1; COMP_LINE='leviathan se'; COMP_POINT=12; \
                 _leviathan leviathan se leviathan; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                path.path().display()
            ),
        ])
        .output()
        .expect("bash");
    let offered = String::from_utf8_lossy(&offer.stdout);
    assert!(offered.lines().any(|l| l == "serve"), "{offered}");
    for (shell, mark) in [("zsh", "#compdef leviathan"), ("fish", "complete -c leviathan")] {
        let text = ok(&["completions", shell]);
        assert!(text.contains(mark) && text.contains("serve") && text.contains("apply"), "{shell}:\n{text}");
    }
    let out = Command::new(bin()).args(["completions", "tcsh"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn the_manual_page_is_roff_and_names_every_verb() {
    let page = ok(&["man"]);
    let first = page.lines().next().unwrap_or("");
    assert!(first.starts_with('.'), "not roff: {first}");
    assert!(page.lines().any(|l| l.starts_with(".TH leviathan 1 ")), "{page}");
    for verb in ["serve", "apply", "export", "completions", "man"] {
        assert!(page.contains(&format!("leviathan\\-{verb}(1)")), "{verb}:\n{page}");
    }
    assert!(page.contains(env!("CARGO_PKG_VERSION")), "{page}");
    let serve = ok(&["man", "serve"]);
    assert!(serve.lines().any(|l| l.starts_with(".TH leviathan-serve 1 ")), "{serve}");
    assert!(serve.contains("\\-\\-listen") && serve.contains("\\-\\-no\\-realize"), "{serve}");
    let out = Command::new(bin()).args(["man", "nope"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("serve"));
}

#[test]
fn version_names_the_package_version_and_the_commit() {
    let v = ok(&["--version"]);
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let top = git(&["rev-parse", "--show-toplevel"]).map(PathBuf::from).and_then(|p| p.canonicalize().ok());
    let commit = match top == Path::new(dir).canonicalize().ok() {
        true => git(&["rev-parse", "--short", "HEAD"]).expect("a commit"),
        false => "unknown".to_string(),
    };
    assert_eq!(v.trim(), format!("leviathan {} (commit {commit})", env!("CARGO_PKG_VERSION")));
}
