//! Records the commit the binary is built from, for `leviathan --version`:
//! `git rev-parse --short HEAD` when the package is the top of a git
//! checkout (a clean clone in CI is one), "unknown" otherwise (a source
//! tarball, or a package vendored inside somebody else's repository).
//!
//! Cargo runs this again when HEAD moves: when `.git/HEAD` changes (a
//! checkout of another branch) or the ref it points to does (a commit),
//! including the packed refs. Only files that exist are watched: a missing
//! one would make Cargo run this on every build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A path git names (relative to `dir` when not absolute).
fn git_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(git(dir, &["rev-parse", "--git-path", name])?);
    Some(if p.is_absolute() { p } else { dir.join(p) })
}

fn commit(dir: &Path) -> Option<String> {
    let top = PathBuf::from(git(dir, &["rev-parse", "--show-toplevel"])?);
    // Another repository around the package is not where it came from.
    if top.canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let mut watched = vec![git_path(dir, "HEAD")?, git_path(dir, "packed-refs")?];
    if let Some(r) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git_path(dir, &r)?);
    }
    for p in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    git(dir, &["rev-parse", "--short", "HEAD"])
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = commit(&dir).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=LEVIATHAN_COMMIT={commit}");
}
