//! Binding containers to workloads that already run: resolving what a user
//! gives as `netnsPath` (a path, `pid:1234`, `docker:NAME`, `podman:NAME`)
//! to a network namespace, and checking that it is one.
//!
//! This does I/O (it opens files, runs the container runtime's CLI), so it
//! runs in the API layer before the command, never inside the pure model.
//! Every failure is a `BAD_REQUEST` that names what is wrong; nothing is
//! changed then.
//!
//! What may be bound is configured by value ([`Workloads`], a service
//! option), never by a process-global: the service binds workloads for the
//! resolvers and the driver (`Service::bind_workload`,
//! `Service::resolve_netns`).

use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use crate::model::{ModelError, NetnsBinding};

/// How long a runtime's `inspect` may take.
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(15);

/// How workloads may be bound (`serve` options).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Workloads {
    /// `serve --allow-host-netns`: allow binding a container to the
    /// namespace the server itself runs in (off by default: wiring it
    /// would put leviathan's interfaces in the host's own namespace).
    pub allow_host_netns: bool,
}

/// What a `netnsPath` names, before any I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A namespace file (`/proc/PID/ns/net`, `/run/netns/NAME`).
    Path(String),
    /// The network namespace of a process.
    Pid(u32),
    /// A container of a runtime (`docker`, `podman`), by name or id.
    Runtime { runtime: &'static str, name: String },
}

fn bad(said: &str, why: impl std::fmt::Display) -> ModelError {
    ModelError::bad_request(format!("netnsPath '{}': {why}", said.escape_debug()))
}

/// Parses a `netnsPath`.
pub fn parse(said: &str) -> Result<Target, ModelError> {
    if said.starts_with('/') {
        if said.len() > crate::model::MAX_NETNS_PATH || said.contains('\0') || said.split('/').any(|s| s == "..") {
            return Err(bad(said, "an absolute path without '..' is required"));
        }
        return Ok(Target::Path(said.to_string()));
    }
    if let Some(pid) = said.strip_prefix("pid:") {
        return match pid.parse::<u32>() {
            Ok(n) if n > 0 && pid.bytes().all(|b| b.is_ascii_digit()) => Ok(Target::Pid(n)),
            _ => Err(bad(said, "pid: takes a process id (a positive number)")),
        };
    }
    for runtime in ["docker", "podman"] {
        if let Some(name) = said.strip_prefix(runtime).and_then(|r| r.strip_prefix(':')) {
            let ok = !name.is_empty()
                && name.len() <= 128
                && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(bad(said, format!("{runtime}: takes a container name or id ([A-Za-z0-9][A-Za-z0-9_.-]*)")));
            }
            return Ok(Target::Runtime { runtime, name: name.to_string() });
        }
    }
    Err(bad(said, "give an absolute path (/proc/PID/ns/net, /run/netns/NAME), pid:PID, docker:NAME or podman:NAME"))
}

impl Workloads {
    /// Resolves a `netnsPath` to a network namespace, checked: it exists,
    /// it is a network namespace, and it is not the server's own (unless
    /// allowed).
    pub async fn resolve(self, said: &str) -> Result<NetnsBinding, ModelError> {
        let path = match parse(said)? {
            Target::Path(p) => p,
            Target::Pid(pid) => proc_path(said, pid)?,
            Target::Runtime { runtime, name } => {
                let pid = runtime_pid(said, runtime, &name).await?;
                proc_path(said, pid)?
            }
        };
        // A namespace file where the kernel or a runtime keeps them takes
        // microseconds to open and ask (procfs; nsfs mounted in a
        // directory only root writes to): done here, with no hand-off to
        // another thread on the path of every join. Any other path may
        // lead to any file system: a thread of the blocking pool waits.
        if namespace_file(&path) {
            return self.check_namespace(said, &path);
        }
        let said2 = said.to_string();
        let checked = tokio::task::spawn_blocking(move || self.check_namespace(&said2, &path))
            .await
            .map_err(|e| ModelError::internal(format!("resolving a namespace: {e}")))?;
        checked
    }

    /// Opens a namespace file and returns its identity, if it is a network
    /// namespace other than the server's own (unless that is allowed).
    pub fn check_namespace(self, said: &str, path: &str) -> Result<NetnsBinding, ModelError> {
        // Non-blocking: a FIFO (or a device) where a namespace file was
        // expected answers at once, and is then refused as not one.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => bad(said, format!("{path} does not exist")),
                _ => bad(said, format!("cannot open {path}: {e}")),
            })?;
        // SAFETY: an ioctl without argument on a file we hold open.
        let kind = unsafe { nix::libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind != nix::libc::CLONE_NEWNET {
            return Err(bad(said, format!("{path} is not a network namespace")));
        }
        let meta = f.metadata().map_err(|e| bad(said, format!("cannot stat {path}: {e}")))?;
        let (device, inode) = (meta.dev(), meta.ino());
        if !self.allow_host_netns {
            for own in ["/proc/self/ns/net", "/proc/1/ns/net"] {
                if std::fs::metadata(own).is_ok_and(|m| m.dev() == device && m.ino() == inode) {
                    return Err(bad(
                        said,
                        format!(
                            "{path} is the namespace leviathan itself runs in (the host's); \
                             wiring it is refused unless the server runs with --allow-host-netns"
                        ),
                    ));
                }
            }
        }
        Ok(NetnsBinding { path: path.to_string(), device, inode })
    }
}

/// Whether a path is one of the shapes a network namespace file has where
/// the kernel and runtimes keep them: `/proc/<pid|self|thread-self>/ns/net`,
/// `/proc/<pid>/task/<tid>/ns/net`, or `<dir>/<name>` for `ip netns`'s and
/// Docker's directories (root's alone). Nothing else under /proc or /run
/// qualifies: `/proc/<pid>/root/...` leads to any file system, and /run
/// holds mounts and directories others write to.
fn namespace_file(path: &str) -> bool {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["", "proc", pid, "ns", "net"] => number(pid) || *pid == "self" || *pid == "thread-self",
        ["", "proc", pid, "task", tid, "ns", "net"] => number(pid) && number(tid),
        ["", "run", "netns", name] | ["", "var", "run", "netns", name] | ["", "run", "docker", "netns", name] => {
            !name.is_empty()
        }
        _ => false,
    }
}

fn proc_path(said: &str, pid: u32) -> Result<String, ModelError> {
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(bad(said, format!("no process with pid {pid}")));
    }
    Ok(format!("/proc/{pid}/ns/net"))
}

/// The pid of a running container, through the runtime's own CLI.
async fn runtime_pid(said: &str, runtime: &str, name: &str) -> Result<u32, ModelError> {
    let mut cmd = tokio::process::Command::new(runtime);
    cmd.args(["inspect", "--format", "{{.State.Pid}}", name]).stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = match tokio::time::timeout(RUNTIME_TIMEOUT, cmd.output()).await {
        Err(_) => return Err(bad(said, format!("{runtime} inspect {name} did not answer in {RUNTIME_TIMEOUT:?}"))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad(said, format!("{runtime} is not installed (no '{runtime}' command in PATH)")))
        }
        Ok(Err(e)) => return Err(bad(said, format!("cannot run {runtime}: {e}"))),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no reason given");
        return Err(bad(said, format!("'{runtime} inspect {name}' failed (no such container?): {first}")));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().parse::<u32>() {
        Ok(0) => Err(bad(said, format!("{runtime} container '{name}' is not running"))),
        Ok(pid) => Ok(pid),
        Err(_) => Err(bad(said, format!("{runtime} inspect {name} gave no pid: {:?}", text.trim()))),
    }
}

/// Whether a binding's path still leads to the namespace it was bound to.
pub fn still_bound(b: &NetnsBinding) -> bool {
    std::fs::metadata(&b.path).is_ok_and(|m| m.dev() == b.device && m.ino() == b.inode)
}

/// `NS_GET_NSTYPE` (`_IO(0xb7, 0x3)`): the kind of namespace an nsfs file is.
const NS_GET_NSTYPE: u64 = 0xb703;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(parse("/proc/12/ns/net").unwrap(), Target::Path("/proc/12/ns/net".into()));
        assert_eq!(parse("pid:12").unwrap(), Target::Pid(12));
        assert_eq!(parse("docker:web-1").unwrap(), Target::Runtime { runtime: "docker", name: "web-1".into() });
        assert_eq!(parse("podman:db").unwrap(), Target::Runtime { runtime: "podman", name: "db".into() });
        for bad in
            ["pid:", "pid:0", "pid:-1", "pid:+3", "pid:1x", "docker:", "docker:-rm", "podman:a b", "x", "", "/a/../b"]
        {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code, crate::model::ErrorCode::BadRequest, "{bad}");
        }
    }

    #[test]
    fn namespace_files_are_checked_in_place_and_others_on_the_blocking_pool() {
        let here = [
            "/proc/12/ns/net",
            "/proc/self/ns/net",
            "/proc/thread-self/ns/net",
            "/proc/12/task/13/ns/net",
            "/run/netns/web",
            "/var/run/netns/web",
            "/run/docker/netns/1f",
        ];
        for p in here {
            assert!(namespace_file(p), "{p}");
        }
        let pool = [
            "/mnt/nfs/ns",
            "/proc/12/root/mnt/nfs/ns",
            "/proc/12/cwd/ns",
            "/proc/x/ns/net",
            "/proc/12/ns/net/x",
            "/run/media/disk/ns",
            "/run/user/1000/ns",
            "/run/lock/fifo",
            "/run/netns/",
            "/run/netns/a/b",
            "/",
        ];
        for p in pool {
            assert!(!namespace_file(p), "{p}");
        }
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let p = fifo.to_str().unwrap().to_string();
        // A blocking open would wait for a writer that never comes: asked
        // on a thread of its own, with a bound that only catches that.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(Workloads::default().check_namespace(&p, &p)));
        let checked = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("the open of a FIFO waited");
        let e = checked.unwrap_err();
        assert!(e.message.contains("not a network namespace"), "{}", e.message);
    }

    #[test]
    fn a_plain_file_is_not_a_namespace() {
        let e = Workloads::default().check_namespace("/etc/passwd", "/etc/passwd").unwrap_err();
        assert!(e.message.contains("not a network namespace"), "{}", e.message);
        let e = Workloads::default().check_namespace("/nope", "/nope/x").unwrap_err();
        assert!(e.message.contains("does not exist"), "{}", e.message);
    }

    #[test]
    fn own_namespace_is_refused() {
        match Workloads::default().check_namespace("pid:1", "/proc/self/ns/net") {
            Err(e) => assert!(e.message.contains("--allow-host-netns"), "{}", e.message),
            // Not permitted to open it here (no root): nothing to check.
            Ok(b) => panic!("own namespace accepted: {b:?}"),
        }
    }
}
