//! One server per prefix and per state file: exclusive `flock`s taken
//! before anything else is touched, held for the life of the process (the
//! kernel drops them when it ends, however it ends). A second server finds
//! the lock held, names the holder and exits having changed nothing.

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where prefix locks live.
pub const LOCK_DIR: &str = "/run/leviathan";

/// A held lock; released when dropped.
pub struct Lock {
    _file: Flock<File>,
}

/// The process holding a `flock` on `file`, from /proc/locks.
fn holder(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let (dev, ino) = (meta.dev(), meta.ino());
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (kind, pid, id) = (f.get(1)?, f.get(4)?, f.get(5)?);
        let mut parts = id.split(':');
        let (ma, mi, i) = (parts.next()?, parts.next()?, parts.next()?);
        let same = u64::from_str_radix(ma, 16).ok()? == major
            && u64::from_str_radix(mi, 16).ok()? == minor
            && i.parse::<u64>().ok()? == ino;
        (*kind == "FLOCK" && same).then(|| pid.parse().ok()).flatten()
    })
}

fn take(file: File, what: &str, path: &Path) -> anyhow::Result<Flock<File>> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            let who = holder(&file).map_or_else(|| "another process".to_string(), |p| format!("process {p}"));
            bail!("{what} is already in use by another leviathan ({who} holds {}); stop it first, or give this one another {}", path.display(), if what.starts_with("prefix") { "--prefix" } else { "--state" })
        }
        Err((_, e)) => bail!("locking {}: {e}", path.display()),
    }
}

/// The lock of a realization prefix: `/run/leviathan/prefix-<P>lock`.
pub fn prefix(prefix: &str) -> anyhow::Result<Lock> {
    std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
    let path = prefix_path(prefix);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut l = take(file, &format!("prefix '{prefix}'"), &path)?;
    // For people: who holds it.
    let _ = l.set_len(0);
    let _ = writeln!(&mut *l, "{}", std::process::id());
    Ok(Lock { _file: l })
}

/// Where the lock of a prefix lives.
pub fn prefix_path(prefix: &str) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("prefix-{prefix}lock"))
}

/// Whether another process holds the lock of a prefix (and which).
pub fn prefix_holder(prefix: &str) -> Option<String> {
    let path = prefix_path(prefix);
    let file = File::open(&path).ok()?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_) => None,
        Err((file, _)) => Some(holder(&file).map_or_else(|| "another process".into(), |p| format!("process {p}"))),
    }
}

/// The lock of a state file (the file itself; SQLite's own locks are
/// `fcntl` locks, which `flock` does not touch).
pub fn state_file(path: &Path) -> anyhow::Result<Lock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .or_else(|_| File::open(path))
        .with_context(|| format!("opening state file {}", path.display()))?;
    Ok(Lock { _file: take(file, &format!("state file {}", path.display()), path)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        let first = state_file(&p).unwrap();
        // flock locks belong to the open file description: a second open
        // in this process conflicts like another process would.
        let e = state_file(&p).err().unwrap().to_string();
        assert!(e.contains("already in use") && e.contains(&format!("process {}", std::process::id())), "{e}");
        drop(first);
        assert!(state_file(&p).is_ok());
    }
}
