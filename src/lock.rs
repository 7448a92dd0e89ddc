//! One server per prefix and per state file: exclusive `flock`s taken
//! before anything else is touched, held for the life of the process (the
//! kernel drops them when it ends, however it ends). A second server finds
//! the lock held, names the holder and exits having changed nothing.
//!
//! Also what a start leaves behind: [`NewFiles`] removes the files a
//! refused start created (never one that was there before), and
//! [`open_error`] says why a state file cannot be opened and what to do.

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
/// `fcntl` locks, which `flock` does not touch). The file is created if
/// missing, its directory never: a missing directory is named as such, and
/// a directory the server may not write in is reported as that (with the
/// fix), not as the error of a read-only retry.
pub fn state_file(path: &Path) -> anyhow::Result<Lock> {
    let file = match OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path) {
        Ok(f) => f,
        // An existing file this user may only read: locked all the same
        // (the store then says it cannot be written).
        Err(e) => File::open(path).map_err(|_| anyhow::anyhow!(open_error(path, &e)))?,
    };
    Ok(Lock { _file: take(file, &format!("state file {}", path.display()), path)? })
}

/// Why a state file cannot be opened, and what to do about it.
pub fn open_error(path: &Path, e: &std::io::Error) -> String {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match e.kind() {
        std::io::ErrorKind::NotFound if !dir.is_dir() => format!(
            "opening state file {}: the directory {} does not exist (leviathan does not create it): create it (mkdir -p {}), or choose another --state",
            path.display(),
            dir.display(),
            dir.display()
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "opening state file {}: permission denied (EACCES): this user may not {} it: choose another --state (e.g. one in a directory you own), or fix the permissions of {}",
            path.display(),
            if path.exists() { "write" } else { "create" },
            if path.exists() { path.display() } else { dir.display() }
        ),
        _ => format!("opening state file {}: {e}: choose another --state", path.display()),
    }
}

/// Files a start creates (a state file, its SQLite companions, a ledger):
/// removed when dropped unless [`NewFiles::keep`] was called, so a refused
/// start leaves nothing behind. A file that existed before it was watched
/// is never removed.
#[derive(Default)]
pub struct NewFiles {
    paths: Vec<PathBuf>,
    kept: bool,
}

impl NewFiles {
    /// Watches `path` (with its `-wal`, `-shm` and `-journal` companions):
    /// each of them that does not exist now is removed on a refused start.
    pub fn watch(&mut self, path: &Path) {
        let mut all = vec![path.to_path_buf()];
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut p = path.as_os_str().to_os_string();
            p.push(suffix);
            all.push(PathBuf::from(p));
        }
        self.paths.extend(all.into_iter().filter(|p| std::fs::symlink_metadata(p).is_err()));
    }

    /// The start succeeded: the files stay.
    pub fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for NewFiles {
    fn drop(&mut self) {
        if !self.kept {
            for p in &self.paths {
                let _ = std::fs::remove_file(p);
            }
        }
    }
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

    #[test]
    fn a_missing_directory_is_named_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope").join("s.db");
        let e = state_file(&p).err().unwrap().to_string();
        assert!(e.contains("does not exist") && e.contains("mkdir -p") && e.contains("--state"), "{e}");
        assert!(!dir.path().join("nope").exists());
    }

    #[test]
    fn new_files_go_on_a_refused_start_and_old_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old.db"), dir.path().join("new.db"));
        std::fs::write(&old, b"x").unwrap();
        let mut files = NewFiles::default();
        files.watch(&old);
        files.watch(&new);
        std::fs::write(&new, b"y").unwrap();
        std::fs::write(dir.path().join("new.db-wal"), b"y").unwrap();
        drop(files);
        assert!(old.exists() && !new.exists() && !dir.path().join("new.db-wal").exists());
        let mut files = NewFiles::default();
        files.watch(&new);
        std::fs::write(&new, b"y").unwrap();
        files.keep();
        drop(files);
        assert!(new.exists());
    }
}
