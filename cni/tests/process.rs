//! The plugin as a process, as a runtime may start it: with a standard
//! descriptor closed, or with an output nobody reads. (It has its own C
//! `main`, so what Rust's start-up would do for these is its own.)

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

mod common;

#[test]
fn version_with_stdin_closed_reads_an_empty_configuration() {
    // `0<&-`: the plugin starts with descriptor 0 closed.
    let out = Command::new("sh")
        .args(["-c", "exec \"$0\" 0<&-"])
        .arg(common::plugin())
        .env("CNI_COMMAND", "VERSION")
        .stderr(Stdio::inherit())
        .output()
        .expect("sh");
    assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stdout));
    let v = common::json_of(&out);
    assert_eq!(v["cniVersion"], "1.1.0", "{v}");
    assert!(v["supportedVersions"].as_array().is_some_and(|a| a.len() == 5), "{v}");
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
