//! The `leviathan` CLI run against a test server, as a user runs it.

use super::Server;
use std::process::Command;

/// What a CLI run gave.
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `leviathan ARGS --server URL` with the server's token in the
/// environment.
pub fn cli(s: &Server, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leviathan"));
    cmd.args(args).arg("--server").arg(s.url("")).env_remove("LEVIATHAN_TOKEN").env_remove("LEVIATHAN_SERVER");
    if let Some(t) = &s.token {
        cmd.env("LEVIATHAN_TOKEN", t);
    }
    let out = cmd.output().expect("run leviathan");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a verb that must succeed; returns its stdout.
pub fn ok(s: &Server, args: &[&str]) -> String {
    let out = cli(s, args);
    assert!(out.ok, "leviathan {args:?} failed:\n{}\n{}", out.stdout, out.stderr);
    out.stdout
}
