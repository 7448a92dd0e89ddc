//! The plugin as a process, as a runtime may start it: with stdout
//! closed, or with an output nobody reads. (It has its own C
//! `main`, so what Rust's start-up would do for these is its own.)

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

/// Started with stdout closed, the plugin opens `/dev/null` there before
/// anything else: its connection to the server, the first descriptor it
/// opens, must not become its stdout (its answer would go to the server).
/// Looked at while the plugin waits for the server's answer.
#[test]
fn with_stdout_closed_its_own_socket_does_not_become_stdout() {
    let dir = std::env::temp_dir().join(format!("lev-cni-process-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test directory");
    let sock = dir.join("s.sock");
    let listener = UnixListener::bind(&sock).expect("listen");
    listener.set_nonblocking(true).expect("non-blocking");
    let conf = serde_json::json!({"cniVersion": "1.1.0", "name": "n", "type": "leviathan-cni",
        "server": format!("unix://{}", sock.display())});
    let mut cmd = Command::new(common::plugin());
    cmd.env("CNI_COMMAND", "STATUS").stdin(Stdio::piped()).stderr(Stdio::null());
    // SAFETY: close is async-signal-safe; the child closes its stdout
    // just before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::close(1);
            Ok(())
        })
    };
    let mut child = cmd.spawn().expect("start the plugin");
    child.stdin.take().expect("stdin").write_all(conf.to_string().as_bytes()).expect("configuration");
    // The plugin's connection, waited for (the bound only catches a hang).
    let deadline = Instant::now() + Duration::from_secs(60);
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                assert!(child.try_wait().expect("wait").is_none(), "the plugin ended before connecting");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("no connection from the plugin: {e}"),
        }
    };
    let stdout = std::fs::read_link(format!("/proc/{}/fd/1", child.id()));
    // The answer never comes: the plugin reads the end and ends.
    drop(conn);
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(stdout.expect("the plugin's descriptor 1"), std::path::PathBuf::from("/dev/null"));
}

#[test]
fn an_output_nobody_reads_is_an_error_not_a_killed_plugin() {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe");
    // SAFETY: both descriptors were just made and are owned here only.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The reading end is closed before the plugin writes anything.
    drop(reader);
    let mut child = Command::new(common::plugin())
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .spawn()
        .expect("start the plugin");
    let status = child.wait().expect("wait for the plugin");
    assert_eq!(status.signal(), None, "killed by a signal: {status:?}");
    assert!(status.code().is_some(), "{status:?}");
}
