//! Every request the store sends to etcd, built and sent in one place.
//!
//! Invariants: a request carries at most [`MAX_OPS`] operations (compares
//! and operations of a transaction counted apart, as etcd counts them) and
//! at most [`MAX_REQUEST_BYTES`] of keys and values, so that it stays within
//! etcd's default limits (`--max-txn-ops 128`, `--max-request-bytes`
//! 1.5 MiB) with room for the framing; a larger request is refused here,
//! before anything is sent ([`Request::txn`]). The largest request sent so
//! far (bytes and operations) is kept for `/metrics` and the bench
//! ([`largest_request`]). Each request runs within the request timeout;
//! a failure says whether etcd is unavailable (the outcome of a write is
//! then unknown) or refused the request.

use super::super::StoreError;
use etcd_client::{Compare, Txn, TxnOp};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// etcd's default `--max-txn-ops`.
pub const MAX_OPS: usize = 128;
/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const ETCD_MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// What the store lets one request carry in keys and values: etcd's limit
/// less room for the protobuf framing of up to [`MAX_OPS`] operations.
pub const MAX_REQUEST_BYTES: usize = ETCD_MAX_REQUEST_BYTES - 64 * 1024;
/// Bytes counted per operation for its framing.
const OP_OVERHEAD: usize = 16;

static LARGEST_BYTES: AtomicU64 = AtomicU64::new(0);
static LARGEST_OPS: AtomicU64 = AtomicU64::new(0);

/// The largest request this process sent to etcd: (bytes, operations).
pub fn largest_request() -> (u64, u64) {
    (LARGEST_BYTES.load(Ordering::Relaxed), LARGEST_OPS.load(Ordering::Relaxed))
}

/// The largest request as `/metrics` gauges (0 without etcd).
pub fn write_metrics(out: &mut String) {
    use std::fmt::Write;
    let (bytes, ops) = largest_request();
    let _ = writeln!(
        out,
        "# HELP leviathan_etcd_request_max_bytes Largest request sent to etcd, in bytes of keys and values."
    );
    let _ = writeln!(out, "# TYPE leviathan_etcd_request_max_bytes gauge\nleviathan_etcd_request_max_bytes {bytes}");
    let _ = writeln!(out, "# HELP leviathan_etcd_request_max_ops Largest request sent to etcd, in operations.");
    let _ = writeln!(out, "# TYPE leviathan_etcd_request_max_ops gauge\nleviathan_etcd_request_max_ops {ops}");
}

/// Counts a request about to be sent.
pub(super) fn record(bytes: usize, ops: usize) {
    LARGEST_BYTES.fetch_max(bytes as u64, Ordering::Relaxed);
    LARGEST_OPS.fetch_max(ops as u64, Ordering::Relaxed);
}

/// A transaction under construction, with its size counted.
pub(super) struct Request {
    what: &'static str,
    compares: Vec<Compare>,
    then: Vec<TxnOp>,
    otherwise: Vec<TxnOp>,
    bytes: usize,
}

impl Request {
    pub fn new(what: &'static str) -> Request {
        Request { what, compares: Vec::new(), then: Vec::new(), otherwise: Vec::new(), bytes: 0 }
    }

    /// A compare on `key` (and the end of its range, if any).
    pub fn when(mut self, c: Compare, key_bytes: usize) -> Request {
        self.bytes += key_bytes + OP_OVERHEAD;
        self.compares.push(c);
        self
    }

    /// An operation done if every compare holds; `bytes` is its keys and
    /// value.
    pub fn then(mut self, op: TxnOp, bytes: usize) -> Request {
        self.bytes += bytes + OP_OVERHEAD;
        self.then.push(op);
        self
    }

    /// An operation done if a compare fails.
    pub fn otherwise(mut self, op: TxnOp, bytes: usize) -> Request {
        self.bytes += bytes + OP_OVERHEAD;
        self.otherwise.push(op);
        self
    }

    /// Operations as etcd counts them against `--max-txn-ops`.
    pub fn ops(&self) -> usize {
        self.compares.len().max(self.then.len()).max(self.otherwise.len())
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The transaction, if it fits etcd's default limits (counted as the
    /// largest request when it does); refused otherwise.
    pub fn txn(self) -> Result<Txn, StoreError> {
        let ops = self.ops();
        if ops > MAX_OPS || self.bytes > MAX_REQUEST_BYTES {
            return Err(StoreError::Other(anyhow::anyhow!(
                "{}: a request of {} operations and {} bytes exceeds the limits kept ({MAX_OPS} operations, {MAX_REQUEST_BYTES} bytes)",
                self.what,
                ops,
                self.bytes
            )));
        }
        record(self.bytes, ops);
        Ok(Txn::new().when(self.compares).and_then(self.then).or_else(self.otherwise))
    }
}

/// Runs one etcd request with the request timeout, classifying failures.
pub(super) async fn within_once<T>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => {
            Err(StoreError::Unavailable(format!("{what}: etcd did not answer within {}s", timeout.as_secs_f64())))
        }
        Ok(Err(e)) => Err(classify(what, e)),
        Ok(Ok(v)) => Ok(v),
    }
}

/// Runs an etcd request with the request timeout; a request that never
/// left (the member it went to refused the connection: it is down) is
/// sent again, so that another member answers it.
pub(super) async fn within<T, F, Fut>(timeout: Duration, what: &str, mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, call()).await {
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "{what}: etcd did not answer within {}s",
                    timeout.as_secs_f64()
                )))
            }
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if never_sent(&e) && tokio::time::Instant::now() + RESEND_PAUSE < deadline => {
                tracing::debug!(error = %e, "{what}: an etcd member refused the connection; sending again");
                tokio::time::sleep(RESEND_PAUSE).await;
            }
            Ok(Err(e)) => return Err(classify(what, e)),
        }
    }
}

/// Pause before a request that never left is sent again.
const RESEND_PAUSE: Duration = Duration::from_millis(50);

/// Whether a request failed before it reached etcd (so sending it again
/// cannot apply it twice).
pub(super) fn never_sent(e: &etcd_client::Error) -> bool {
    let s = format!("{e:?}");
    s.contains("ConnectError") || s.contains("tcp connect error")
}

/// A request etcd refused (too large, too many operations, permissions) is
/// an error of its own; anything else (connection refused, no leader,
/// timeouts) means etcd is unavailable.
pub(super) fn classify(what: &str, e: etcd_client::Error) -> StoreError {
    if let etcd_client::Error::GRpcStatus(s) = &e {
        // InvalidArgument, PermissionDenied, ResourceExhausted,
        // FailedPrecondition, OutOfRange, Unauthenticated.
        if matches!(i32::from(s.code()), 3 | 7 | 8 | 9 | 11 | 16) {
            return StoreError::Other(anyhow::anyhow!("{what}: etcd refused the request: {}", s.message()));
        }
    }
    StoreError::Unavailable(format!("{what}: {}", with_causes(&e)))
}

/// Whether etcd refused a read because the revision it was made at is
/// compacted (the read is then made again at a newer revision).
pub(super) fn compacted(e: &StoreError) -> bool {
    matches!(e, StoreError::Other(e) if e.to_string().contains("compacted"))
}

/// An error with its causes (`a: b: c`), each said once; for a gRPC
/// status, its message and causes (not its debug dump).
pub(super) fn with_causes(e: &etcd_client::Error) -> String {
    let (mut out, mut source) = match e {
        etcd_client::Error::GRpcStatus(s) => (s.message().to_string(), std::error::Error::source(s)),
        e => (e.to_string(), std::error::Error::source(e)),
    };
    while let Some(s) = source {
        let part = s.to_string();
        if !out.contains(&part) {
            out = format!("{out}: {part}");
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::CompareOp;

    fn put(n: usize) -> (TxnOp, usize) {
        (TxnOp::put("k", vec![0u8; n], None), n + 1)
    }

    #[test]
    fn a_request_within_the_limits_is_built_and_counted() {
        let mut r = Request::new("t").when(Compare::value("h", CompareOp::Equal, "1"), 1);
        for _ in 0..MAX_OPS {
            let (op, b) = put(100);
            r = r.then(op, b);
        }
        assert_eq!(r.ops(), MAX_OPS);
        let bytes = r.bytes();
        assert!(r.txn().is_ok());
        let (largest, ops) = largest_request();
        assert!(largest >= bytes as u64 && ops >= MAX_OPS as u64, "{largest} {ops}");
    }

    #[test]
    fn too_many_operations_are_refused_before_sending() {
        let mut r = Request::new("t");
        for _ in 0..=MAX_OPS {
            let (op, b) = put(1);
            r = r.then(op, b);
        }
        let e = r.txn().expect_err("refused");
        assert!(e.to_string().contains("129 operations"), "{e}");
    }

    #[test]
    fn too_many_bytes_are_refused_before_sending() {
        let (op, b) = put(MAX_REQUEST_BYTES);
        let e = Request::new("t").then(op, b).txn().expect_err("refused");
        assert!(e.to_string().contains("exceeds the limits kept"), "{e}");
        // A chunk as the store writes it fits.
        let (op, b) = put(super::super::log::CHUNK);
        assert!(Request::new("t").then(op, b).txn().is_ok());
        const { assert!(super::super::log::CHUNK + 4096 < MAX_REQUEST_BYTES) };
    }

    #[test]
    fn compares_and_operations_are_counted_apart() {
        let mut r = Request::new("t");
        for _ in 0..3 {
            r = r.when(Compare::version("a", CompareOp::Equal, 0), 1);
        }
        let (op, b) = put(1);
        r = r.then(op, b).otherwise(TxnOp::get("a", None), 1);
        assert_eq!(r.ops(), 3);
    }
}
