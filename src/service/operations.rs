//! Long operations (make, destroy): an in-memory registry with a watch
//! channel per operation, so that any number of subscribers can follow one
//! operation's progress (steps done out of total, then the outcome). The
//! realizer starts, advances and finishes them; clients follow them through
//! the `operation(id)` subscription.
//!
//! Memory is bounded: running operations are those the server is working
//! on, and at most [`MAX_FINISHED_OPERATIONS`] finished ones are kept (the
//! oldest finished is forgotten first). A watch channel holds only the
//! latest status, however slow its readers.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use tokio::sync::watch;

/// How many finished operations stay visible.
pub const MAX_FINISHED_OPERATIONS: usize = 256;

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationState {
    Running,
    Succeeded,
    Failed,
}

/// A snapshot of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationStatus {
    pub id: String,
    /// The mutation that started it (`cenMake`, `cinDestroy`, ...).
    pub kind: String,
    /// The ids it works on.
    pub targets: Vec<String>,
    pub steps_done: u32,
    pub steps_total: u32,
    pub state: OperationState,
    /// Why it failed.
    pub message: Option<String>,
}

impl OperationStatus {
    pub fn is_finished(&self) -> bool {
        self.state != OperationState::Running
    }
}

#[derive(Default)]
struct Inner {
    next: u64,
    ops: HashMap<String, watch::Sender<OperationStatus>>,
    finished: VecDeque<String>,
}

/// The registry (see [`crate::service::Service::operations`]).
pub struct Operations {
    /// Distinguishes this run's ids from those of an earlier run.
    epoch: String,
    inner: Mutex<Inner>,
}

impl Default for Operations {
    fn default() -> Self {
        Self::new()
    }
}

impl Operations {
    pub fn new() -> Self {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Operations { epoch: format!("{epoch:x}"), inner: Mutex::new(Inner::default()) }
    }

    /// Registers a running operation and returns its id.
    pub fn start(&self, kind: &str, targets: Vec<String>, steps_total: u32) -> String {
        let mut inner = self.inner.lock();
        inner.next += 1;
        let id = format!("op-{}-{}", self.epoch, inner.next);
        let status = OperationStatus {
            id: id.clone(),
            kind: kind.to_string(),
            targets,
            steps_done: 0,
            steps_total,
            state: OperationState::Running,
            message: None,
        };
        let (tx, _) = watch::channel(status);
        inner.ops.insert(id.clone(), tx);
        id
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut OperationStatus)) -> bool {
        let inner = self.inner.lock();
        let Some(tx) = inner.ops.get(id) else { return false };
        tx.send_if_modified(|s| {
            if s.is_finished() {
                return false;
            }
            let before = s.clone();
            f(s);
            *s != before
        });
        true
    }

    /// Records progress: `steps_done` of `steps_total` (the total may grow
    /// as the plan is refined). Ignored once the operation has finished.
    /// Returns false for an unknown id.
    pub fn progress(&self, id: &str, steps_done: u32, steps_total: u32) -> bool {
        self.update(id, |s| {
            s.steps_total = steps_total.max(steps_done);
            s.steps_done = steps_done;
        })
    }

    /// Records the outcome: `Ok` succeeds (every step done), `Err` fails
    /// with the reason. A finished operation stays as it is. Returns false
    /// for an unknown id.
    pub fn finish(&self, id: &str, outcome: Result<(), String>) -> bool {
        let known = self.update(id, |s| match outcome {
            Ok(()) => {
                s.state = OperationState::Succeeded;
                s.steps_done = s.steps_total;
            }
            Err(message) => {
                s.state = OperationState::Failed;
                s.message = Some(message);
            }
        });
        if known {
            let mut inner = self.inner.lock();
            if !inner.finished.iter().any(|f| f == id) {
                inner.finished.push_back(id.to_string());
            }
            while inner.finished.len() > MAX_FINISHED_OPERATIONS {
                if let Some(old) = inner.finished.pop_front() {
                    inner.ops.remove(&old);
                }
            }
        }
        known
    }

    /// The current status of an operation.
    pub fn get(&self, id: &str) -> Option<OperationStatus> {
        self.inner.lock().ops.get(id).map(|tx| tx.borrow().clone())
    }

    /// A receiver of an operation's status: it holds the latest status and
    /// is told of each change. `None` for an unknown (or forgotten) id.
    pub fn watch(&self, id: &str) -> Option<watch::Receiver<OperationStatus>> {
        self.inner.lock().ops.get(id).map(|tx| tx.subscribe())
    }

    /// Number of operations known (running and kept finished).
    /// Operations not finished yet.
    pub fn running(&self) -> usize {
        self.inner.lock().ops.values().filter(|tx| !tx.borrow().is_finished()).count()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_then_outcome_then_nothing() {
        let ops = Operations::new();
        let id = ops.start("cenMake", vec!["cen1".into()], 3);
        let mut rx = ops.watch(&id).unwrap();
        assert_eq!(rx.borrow_and_update().steps_done, 0);
        assert!(ops.progress(&id, 2, 3));
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().steps_done, 2);
        assert!(ops.finish(&id, Err("netlink: permission denied".into())));
        let s = rx.borrow_and_update().clone();
        assert_eq!(s.state, OperationState::Failed);
        assert_eq!(s.message.as_deref(), Some("netlink: permission denied"));
        // Finished is final.
        ops.progress(&id, 3, 3);
        ops.finish(&id, Ok(()));
        assert!(!rx.has_changed().unwrap());
        assert_eq!(ops.get(&id).unwrap().state, OperationState::Failed);
        assert!(!ops.progress("op-nope", 1, 1));
        assert!(ops.watch("op-nope").is_none());
    }

    #[test]
    fn finished_operations_are_bounded() {
        let ops = Operations::new();
        let first = ops.start("cenMake", vec![], 1);
        ops.finish(&first, Ok(()));
        let running = ops.start("cenMake", vec![], 1);
        for _ in 0..MAX_FINISHED_OPERATIONS + 10 {
            let id = ops.start("cinMake", vec![], 1);
            ops.finish(&id, Ok(()));
        }
        assert_eq!(ops.len(), MAX_FINISHED_OPERATIONS + 1);
        assert!(ops.get(&first).is_none(), "oldest finished is forgotten");
        assert!(ops.get(&running).is_some(), "running ones are kept");
    }
}
