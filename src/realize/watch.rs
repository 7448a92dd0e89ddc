//! Noticing at once what happens outside leviathan: a bound workload whose
//! process exits (a pidfd per bound `/proc/<pid>/ns/net`, readable when the
//! process ends).
//!
//! The watches run as small tokio tasks (no setns anywhere: a pidfd is a
//! plain fd polled by the runtime) and send [`Event`]s on a channel the
//! driver listens to; the driver then applies just the CENs concerned.

use std::os::fd::{FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc::UnboundedSender;

use super::observed::NsId;

/// Something seen in the kernel that the driver should act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The process of a bound namespace exited.
    Gone(NsId),
}

/// Aborts its task when dropped.
pub struct Watch(tokio::task::JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The pid in a `/proc/<pid>/ns/net` path.
pub fn pid_of(path: &str) -> Option<i32> {
    let rest = path.strip_prefix("/proc/")?.strip_suffix("/ns/net")?;
    rest.parse::<i32>().ok().filter(|p| *p > 0 && rest.bytes().all(|b| b.is_ascii_digit()))
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain syscall; on success it returns a new fd we own.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Watches the process of a bound namespace, when its path names one:
/// sends [`Event::Gone`] once it exits. `None` where there is no pid to
/// watch or pidfds are not supported (the reconcile still notices).
pub fn watch_pid(ns: &NsId, tx: UnboundedSender<Event>) -> Option<Watch> {
    let NsId::Path(p) = ns else { return None };
    let pid = pid_of(p)?;
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => {
            // Already gone: say so now.
            let _ = tx.send(Event::Gone(ns.clone()));
            return None;
        }
        Err(e) => {
            tracing::debug!("no pidfd for pid {pid}: {e}; the reconcile will notice its exit");
            return None;
        }
    };
    // SAFETY: the OwnedFd is moved in and stays open, unchanged, for the
    // AsyncFd's whole life.
    let afd = match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
        Ok(a) => a,
        Err(_) => {
            tracing::debug!("cannot poll the pidfd of pid {pid}; the reconcile will notice its exit");
            return None;
        }
    };
    let ns = ns.clone();
    Some(Watch(tokio::spawn(async move {
        if afd.readable().await.is_ok() {
            tracing::info!(pid, "the process of {ns} exited");
            let _ = tx.send(Event::Gone(ns));
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_from_paths() {
        assert_eq!(pid_of("/proc/123/ns/net"), Some(123));
        assert_eq!(pid_of("/proc/self/ns/net"), None);
        assert_eq!(pid_of("/run/netns/x"), None);
        assert_eq!(pid_of("/proc/+1/ns/net"), None);
        assert_eq!(pid_of("/proc/0/ns/net"), None);
    }

    #[tokio::test]
    async fn an_exiting_process_is_noticed() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let ns = NsId::Path(format!("/proc/{}/ns/net", child.id()));
        let Some(_w) = watch_pid(&ns, tx) else {
            let _ = child.kill();
            eprintln!("pidfd_open is not supported here");
            return;
        };
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert_eq!(rx.recv().await, Some(Event::Gone(ns)));
    }
}
