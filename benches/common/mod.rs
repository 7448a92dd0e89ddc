//! What the benches share: the release binary started as a server on a
//! free loopback port, and the address it says it listens on.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// `leviathan serve --listen 127.0.0.1:0 ARGS…` with no token from the
/// environment and its log at `warn` (on the bench's stderr when `log`):
/// the child, and the address of its first line, `listening on ADDR`.
pub fn serve<I, S>(args: I, log: bool) -> (Child, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("LEVIATHAN_TOKEN")
        .env("LEVIATHAN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(if log { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .expect("start leviathan");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the listening line");
    let addr = line.trim().strip_prefix("listening on ").expect("listening on ADDR").to_string();
    (child, addr)
}
