//! What `leviathan serve` says when it starts, and when it cannot: the
//! real binary, its real output. A started server tells where its pages
//! are (never its token), where its state is, its prefix and whether it
//! realizes; a refused start names the cause and the fix, and leaves no
//! file behind that it created (a state file that was there stays as it
//! was).

mod common;

use common::kernel::{can_run, is_root, Prefix};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `serve`, returns its first stdout line and the stderr lines up
/// to and including the `kernel` line of the startup message.
fn started(args: &[&str]) -> (String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .arg("serve")
        .args(args)
        .env_remove("LEVIATHAN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let done = line.trim_start().starts_with("kernel ");
            lines.push(line);
            if done {
                break;
            }
        }
        let _ = tx.send(lines);
    });
    let lines = rx.recv_timeout(Duration::from_secs(60)).expect("no startup message on stderr within 60 s");
    let _ = child.kill();
    let _ = child.wait();
    (first, lines)
}

/// Runs `serve` expecting it to be refused; returns its stderr.
fn refused(cmd: &mut Command) -> String {
    let out = cmd.env_remove("LEVIATHAN_TOKEN").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "not refused: {stderr}");
    stderr
}

fn serve() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leviathan"));
    c.arg("serve");
    c
}

/// The files of a directory (names), to see what a refused start left.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn startup_says_where_the_pages_are_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let secret = "s3cret-t0ken-not-shown";
    let (first, lines) =
        started(&["--no-realize", "--listen", "127.0.0.1:0", "--state", state.to_str().unwrap(), "--token", secret]);
    let addr = first.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line {first:?}"));
    let text = lines.join("\n");
    for page in ["/?token=…", "/graphiql?token=…", "/topology?token=…"] {
        assert!(text.contains(&format!("http://{addr}{page}")), "no {page} in:\n{text}");
    }
    assert!(!text.contains(secret), "the token is shown:\n{text}");
    assert!(text.contains(&format!("state     {} (SQLite)", state.display())), "{text}");
    assert!(text.contains("not realizing (--no-realize)") && text.contains("prefix lev-"), "{text}");

    // Without a token the addresses are plain.
    let (first, lines) = started(&["--no-realize", "--listen", "127.0.0.1:0", "--state", state.to_str().unwrap()]);
    let addr = first.trim().strip_prefix("listening on ").unwrap();
    let text = lines.join("\n");
    assert!(text.contains(&format!("http://{addr}/topology\n")), "{text}");
    assert!(!text.contains("token"), "{text}");
}

#[test]
fn startup_of_a_realizing_server_names_its_prefix() {
    if !can_run("startup_of_a_realizing_server_names_its_prefix") {
        return;
    }
    let p = Prefix::new("w");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let (_, lines) = started(&["--prefix", &p.0, "--listen", "127.0.0.1:0", "--state", state.to_str().unwrap()]);
    let text = lines.join("\n");
    assert!(text.contains(&format!("kernel    realizing: namespaces and links named {}*", p.0)), "{text}");
}

#[test]
fn a_taken_port_names_the_fix_and_leaves_no_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let state = dir.path().join("s.db");
    let e = refused(serve().args(["--no-realize", "--listen", &listen, "--state"]).arg(&state));
    assert!(e.contains(&format!("binding {listen}")) && e.contains("already in use"), "{e}");
    assert!(e.contains("another server") && e.contains("--listen ADDR"), "{e}");
    assert_eq!(files(dir.path()), Vec::<String>::new(), "a refused start left files behind");

    // A state file that was there stays, byte for byte.
    let (first, _) = started(&["--no-realize", "--listen", "127.0.0.1:0", "--state", state.to_str().unwrap()]);
    assert!(first.starts_with("listening on "));
    let before = std::fs::read(&state).unwrap();
    let e = refused(serve().args(["--no-realize", "--listen", &listen, "--state"]).arg(&state));
    assert!(e.contains("already in use"), "{e}");
    assert_eq!(files(dir.path()), ["s.db"]);
    assert_eq!(std::fs::read(&state).unwrap(), before, "a refused start changed the state file");
}

#[test]
fn an_option_checked_after_the_state_file_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let e = refused(
        serve().args(["--no-realize", "--listen", "127.0.0.1:0", "--keep-changes", "0", "--state"]).arg(&state),
    );
    assert!(e.contains("--keep-changes"), "{e}");
    assert_eq!(files(dir.path()), Vec::<String>::new(), "a refused start left files behind");
}

#[test]
fn a_missing_state_directory_is_named_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nope").join("s.db");
    let e = refused(serve().args(["--no-realize", "--listen", "127.0.0.1:0", "--state"]).arg(&state));
    assert!(e.contains(&format!("the directory {} does not exist", dir.path().join("nope").display())), "{e}");
    assert!(e.contains("mkdir -p") && e.contains("--state"), "{e}");
    assert!(!e.contains("No such file"), "{e}");
    assert_eq!(files(dir.path()), Vec::<String>::new());
}

/// As an unprivileged user (root bypasses permissions): a directory it may
/// not write in is reported as permission denied, with the fix.
#[test]
fn a_state_directory_the_server_cannot_write_says_permission_denied() {
    if !is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs this test as root (it switches to nobody)");
        eprintln!("\n*** SKIPPING: needs root to run the server as another user; CI runs it ***\n");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("s.db");
    let e = refused(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_leviathan")])
            .args(["serve", "--no-realize", "--listen", "127.0.0.1:0", "--state"])
            .arg(&state),
    );
    assert!(e.contains("permission denied (EACCES)"), "{e}");
    assert!(e.contains("choose another --state") && e.contains("fix the permissions"), "{e}");
    assert!(!e.contains("No such file"), "{e}");
    assert_eq!(files(dir.path()), Vec::<String>::new());
}
