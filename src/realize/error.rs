//! Typed errors of the kernel side: [`KernelError`] for every netlink and
//! namespace call (which call, on what, the kernel's errno when it gave
//! one, and the words the message has always had), [`LedgerError`] for the
//! ledger of owned objects, and [`RealizeError`] for what stops the
//! realizer as a whole.
//!
//! Invariants: an errno is kept as [`Errno`] and compared as one
//! (`Errno::EEXIST`), never as a number; the `Display` of an error is the
//! text status messages and logs show (`context: cause`), unchanged from
//! when these errors were plain strings.

use std::fmt;
use std::net::Ipv4Addr;

use nix::errno::Errno;

/// A netlink or namespace call that failed (or could not be made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// The call, in the words of `nl`/`netns` and `Op` (`add_link`,
    /// `del_addr`, `dump_links`, `setns`, `mount`, ...).
    pub op: &'static str,
    /// What it was about (a namespace, a path, a link), as shown to people.
    pub object: String,
    /// The kernel's errno, when the kernel gave one.
    pub errno: Option<Errno>,
    /// What was being done, as the message starts (`cannot unmount
    /// /run/netns/x`); empty where the caller says it (a plan step's
    /// description).
    pub context: String,
    /// The cause as the kernel or the library words it; empty when the
    /// context says it all (`lev-fabric is not open`).
    pub cause: String,
}

impl KernelError {
    /// A failure with no errno: `cause` says why.
    pub fn other(op: &'static str, object: impl Into<String>, cause: impl fmt::Display) -> Self {
        KernelError { op, object: object.into(), errno: None, context: String::new(), cause: cause.to_string() }
    }

    /// A call that could not be made because of our own state (a namespace
    /// not open, an interface not known): `what` is the whole message.
    pub fn state(op: &'static str, object: impl Into<String>, what: impl Into<String>) -> Self {
        KernelError { op, object: object.into(), errno: None, context: what.into(), cause: String::new() }
    }

    /// A refusal by a system call through `nix`.
    pub fn nix(op: &'static str, object: impl Into<String>, e: Errno) -> Self {
        KernelError { op, object: object.into(), errno: Some(e), context: String::new(), cause: e.to_string() }
    }

    /// A refusal through `std::io` (the errno, when there is one, is kept).
    pub fn io(op: &'static str, object: impl Into<String>, e: &std::io::Error) -> Self {
        KernelError {
            op,
            object: object.into(),
            errno: e.raw_os_error().map(Errno::from_raw),
            context: String::new(),
            cause: e.to_string(),
        }
    }

    /// An rtnetlink failure: a kernel refusal keeps its errno, worded as
    /// the kernel's reason; anything else (a closed connection, a message
    /// that did not decode) as rtnetlink words it.
    pub fn netlink(op: &'static str, object: impl Into<String>, e: &rtnetlink::Error) -> Self {
        let (errno, cause) = match e {
            rtnetlink::Error::NetlinkError(m) => (m.code.map(|c| Errno::from_raw(-c.get())), m.to_io().to_string()),
            other => (None, other.to_string()),
        };
        KernelError { op, object: object.into(), errno, context: String::new(), cause }
    }

    /// A worker thread or blocking task that did not come back.
    pub fn worker(e: impl fmt::Display) -> Self {
        KernelError::other("spawn", "", e).context("worker failed")
    }

    /// A namespace thread that panicked.
    pub fn panicked() -> Self {
        KernelError::state("spawn", "", "namespace thread panicked")
    }

    /// Says what was being done: the message becomes `context: cause`.
    pub fn context(mut self, what: impl Into<String>) -> Self {
        self.context = what.into();
        self
    }

    /// Whether the kernel answered this errno.
    pub fn is(&self, errno: Errno) -> bool {
        self.errno == Some(errno)
    }

    /// Whether the kernel answered one of these errnos.
    pub fn is_any(&self, errnos: &[Errno]) -> bool {
        self.errno.is_some_and(|e| errnos.contains(&e))
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.context.is_empty(), self.cause.is_empty()) {
            (true, _) => f.write_str(&self.cause),
            (false, true) => f.write_str(&self.context),
            (false, false) => write!(f, "{}: {}", self.context, self.cause),
        }
    }
}

impl std::error::Error for KernelError {}

/// The ledger of owned objects could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerError {
    /// What was being done (`recording ownership`).
    pub context: String,
    /// SQLite's words (or the worker's).
    pub cause: String,
}

impl LedgerError {
    pub fn new(context: impl Into<String>, cause: impl fmt::Display) -> Self {
        LedgerError { context: context.into(), cause: cause.to_string() }
    }
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.cause)
    }
}

impl std::error::Error for LedgerError {}

/// Errors that stop the realizer as a whole (per-CEN errors go in the
/// [`ApplyReport`](super::ApplyReport)).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RealizeError {
    /// The configuration is refused (validation text).
    #[error("invalid realizer configuration: {0}")]
    Config(String),
    /// The kernel refused what the realizer needs to work at all.
    #[error("{0}")]
    System(KernelError),
    /// No interface in this namespace has the VTEP address given.
    #[error(
        "no interface in this network namespace has the address {0} (give the address of this host's underlay interface)"
    )]
    NoUnderlay(Ipv4Addr),
    /// The underlay's MTU leaves no room for VXLAN.
    #[error("the underlay interface's MTU ({0}) leaves no room for VXLAN's {overhead} bytes", overhead = super::VXLAN_OVERHEAD)]
    UnderlayMtu(u32),
}

impl From<KernelError> for RealizeError {
    fn from(e: KernelError) -> Self {
        RealizeError::System(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_they_always_did() {
        let e = KernelError::nix("umount", "/run/netns/x", Errno::EBUSY).context("cannot unmount /run/netns/x");
        assert_eq!(e.to_string(), "cannot unmount /run/netns/x: EBUSY: Device or resource busy");
        let e = KernelError::io("open", "/x", &std::io::Error::from_raw_os_error(2)).context("opening /x");
        assert_eq!(e.to_string(), "opening /x: No such file or directory (os error 2)");
        assert_eq!(
            KernelError::state("get_link", "lev-fabric", "lev-fabric is not open").to_string(),
            "lev-fabric is not open"
        );
        assert_eq!(KernelError::worker("boom").to_string(), "worker failed: boom");
        assert_eq!(KernelError::panicked().to_string(), "namespace thread panicked");
        assert_eq!(KernelError::other("add_link", "x", "refused").to_string(), "refused");
    }

    #[test]
    fn errnos_are_kept_and_compared_as_errnos() {
        let e = KernelError::io("open", "/x", &std::io::Error::from_raw_os_error(Errno::ENOENT as i32));
        assert!(e.is(Errno::ENOENT) && !e.is(Errno::EEXIST));
        assert!(e.is_any(&[Errno::ENODEV, Errno::ENOENT]));
        let none = KernelError::other("spawn", "", "gone");
        assert!(none.errno.is_none() && !none.is_any(&[Errno::ENOENT]));
        let refused = rtnetlink::Error::NetlinkError({
            let mut m = rtnetlink::packet_core::ErrorMessage::default();
            m.code = std::num::NonZeroI32::new(-(Errno::EEXIST as i32));
            m
        });
        let e = KernelError::netlink("add_addr", "lev-c1", &refused);
        assert!(e.is(Errno::EEXIST), "{e:?}");
        assert_eq!(e.to_string(), std::io::Error::from_raw_os_error(Errno::EEXIST as i32).to_string());
    }

    #[test]
    fn realize_errors_say_what_they_said() {
        let ip: Ipv4Addr = "203.0.113.77".parse().unwrap_or(Ipv4Addr::LOCALHOST);
        assert!(RealizeError::NoUnderlay(ip).to_string().contains("203.0.113.77"));
        assert!(RealizeError::NoUnderlay(ip).to_string().starts_with("no interface"));
        assert_eq!(
            RealizeError::UnderlayMtu(100).to_string(),
            "the underlay interface's MTU (100) leaves no room for VXLAN's 50 bytes"
        );
        let k = KernelError::state("open", "host", "cannot open the host namespace");
        assert_eq!(RealizeError::from(k).to_string(), "cannot open the host namespace");
    }
}
