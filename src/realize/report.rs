//! What one apply says: per desired CEN and per CIN, Ok or the first error
//! met, errors of teardown, and members left out. Errors stay typed
//! ([`ApplyError`], carrying the [`KernelError`]) until the driver writes a
//! status message; their `Display` is that message.

use std::collections::BTreeMap;
use std::fmt;

use super::error::{KernelError, LedgerError};

/// Why a CEN or CIN (or a teardown step) did not come out as wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// A step of the plan failed in the kernel: the step, and the kernel's
    /// answer.
    Step { step: String, error: KernelError },
    /// The planner would not wire the CEN (the reason, as it said it).
    Refused(String),
    /// A CIN address or route left out because its CEN failed.
    CenNotWired(String),
    /// What would be made could not be recorded first, so nothing was.
    NotRecorded(LedgerError),
}

impl ApplyError {
    /// The kernel's answer, when a kernel call failed.
    pub fn kernel(&self) -> Option<&KernelError> {
        match self {
            ApplyError::Step { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Step { step, error } => write!(f, "{step}: {error}"),
            ApplyError::Refused(why) => f.write_str(why),
            ApplyError::CenNotWired(cen) => write!(f, "CEN {cen} is not wired"),
            ApplyError::NotRecorded(e) => write!(f, "could not record what would be made: {e}"),
        }
    }
}

impl std::error::Error for ApplyError {}

/// Outcome of one [`Realizer::apply`](super::Realizer::apply).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyReport {
    /// Every desired CEN: Ok, or the first error met for it.
    pub cens: BTreeMap<String, Result<(), ApplyError>>,
    /// Every CIN mentioned by the desired state: Ok, or the first error.
    pub cins: BTreeMap<String, Result<(), ApplyError>>,
    /// Errors while removing objects no CEN wants any more.
    pub teardown_errors: Vec<ApplyError>,
    /// Number of kernel operations planned.
    pub steps: usize,
    /// Members of the CENs applied that were left out because their bound
    /// namespace is unavailable (the workload is gone): container key ->
    /// why. Their CENs are wired without them.
    pub unavailable: BTreeMap<String, String>,
}

impl ApplyReport {
    pub fn is_ok(&self) -> bool {
        self.cens.values().all(Result::is_ok)
            && self.cins.values().all(Result::is_ok)
            && self.teardown_errors.is_empty()
    }

    /// All errors, one line each.
    pub fn errors(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.cens.iter().filter_map(|(k, r)| r.as_ref().err().map(|e| format!("CEN {k}: {e}"))).collect();
        v.extend(self.cins.iter().filter_map(|(k, r)| r.as_ref().err().map(|e| format!("CIN {k}: {e}"))));
        v.extend(self.teardown_errors.iter().map(ToString::to_string));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    fn refused_by_kernel() -> ApplyError {
        let error = KernelError::nix("add_addr", "lev-c1", Errno::EPERM);
        ApplyError::Step { step: "adding 10.0.0.1/24 to c1 in lev-c1".into(), error }
    }

    #[test]
    fn errors_read_as_status_messages() {
        let mut r = ApplyReport::default();
        r.cens.insert("a".into(), Ok(()));
        r.cens.insert("b".into(), Err(refused_by_kernel()));
        r.cins.insert("n".into(), Err(ApplyError::CenNotWired("b".into())));
        r.teardown_errors.push(ApplyError::NotRecorded(LedgerError::new("recording ownership", "disk full")));
        assert!(!r.is_ok());
        assert_eq!(
            r.errors(),
            vec![
                "CEN b: adding 10.0.0.1/24 to c1 in lev-c1: EPERM: Operation not permitted".to_string(),
                "CIN n: CEN b is not wired".to_string(),
                "could not record what would be made: recording ownership: disk full".to_string(),
            ]
        );
    }

    #[test]
    fn the_kernel_answer_stays_typed() {
        assert_eq!(refused_by_kernel().kernel().and_then(|k| k.errno), Some(Errno::EPERM));
        assert!(ApplyError::Refused("no".into()).kernel().is_none());
        assert!(ApplyReport::default().is_ok());
    }
}
