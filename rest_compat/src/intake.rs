//! Request intake: how a body gets in before anything is built from it,
//! shared by the legacy routes and the server's `/graphql`.
//!
//! - A body must arrive whole within the body timeout (else 408 and the
//!   connection is closed: a slow sender cannot hold a request open).
//! - Its list items (every element of every JSON array, at any depth) are
//!   counted on the raw bytes by a streaming pass that builds nothing; over
//!   the limit it is refused before a JSON value, GraphQL variables or a
//!   command is made from it, naming the limit and the count.
//! - Large bodies (64 KiB or more) are processed under a budget of body
//!   bytes: each holds a share as big as its body while it is counted,
//!   parsed, run and answered, so many large requests queue instead of all
//!   inflating at once; small requests never wait. When a large one is done
//!   (answered or refused), the allocator is asked to give freed memory back
//!   to the system (glibc keeps it otherwise: measured, 16 parallel hostile
//!   imports left +84 MiB resident for good without it).
//!
//! Invariant: no byte of a body is parsed into a structure before it was
//! read whole, within the size limit and the timeout, and counted.

use axum::body::{Body, Bytes};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bodies from this size on are processed under the budget.
pub const LARGE_BODY: usize = 64 * 1024;

/// Default most list items in one request body.
pub const DEFAULT_MAX_INPUT_ITEMS: usize = 50_000;

/// Default time a body has to arrive whole.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Default budget of large bodies processed at once, in bytes.
pub const DEFAULT_BUDGET: usize = 8 * 1024 * 1024;

/// Why a body was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over the size limit (413).
    TooLarge { limit: usize },
    /// Not arrived whole within the timeout (408; close the connection).
    TooSlow { timeout: Duration },
}

impl Refusal {
    /// The message of the answer.
    pub fn message(&self) -> String {
        match self {
            Refusal::TooLarge { limit } => format!("request body over the limit of {limit} bytes (--max-body)"),
            Refusal::TooSlow { timeout } => format!(
                "the request body did not arrive within {} s (--body-timeout); the connection is closed",
                timeout.as_secs_f64()
            ),
        }
    }
}

/// The intake settings and the budget they share (cheap to clone).
#[derive(Clone)]
pub struct Intake {
    /// Most list items in one body.
    pub max_input_items: usize,
    /// Time a body has to arrive whole.
    pub body_timeout: Duration,
    budget: Arc<Semaphore>,
    /// The budget in KiB (its permits).
    budget_kib: u32,
}

impl fmt::Debug for Intake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Intake")
            .field("max_input_items", &self.max_input_items)
            .field("body_timeout", &self.body_timeout)
            .field("budget_kib", &self.budget_kib)
            .finish()
    }
}

impl Default for Intake {
    fn default() -> Self {
        Intake::new(DEFAULT_MAX_INPUT_ITEMS, DEFAULT_BODY_TIMEOUT, DEFAULT_BUDGET)
    }
}

/// A body read whole, with its share of the budget when it is large. It
/// is held until the answer is made; dropping it frees the body, returns
/// the share, and gives the freed memory back to the system.
#[must_use]
pub struct Admitted {
    body: Bytes,
    permit: Option<OwnedSemaphorePermit>,
    large: bool,
}

impl Admitted {
    /// The body's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        // The body first, so that its memory is free when it is trimmed.
        self.body = Bytes::new();
        drop(self.permit.take());
        if self.large {
            give_back_memory();
        }
    }
}

/// Asks the allocator to return the free memory it holds to the system.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it
    // takes no pointer and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Intake {
    /// An intake with these limits; `budget` bytes of large bodies are
    /// processed at once (at least one body of any size is always let in).
    pub fn new(max_input_items: usize, body_timeout: Duration, budget: usize) -> Intake {
        let budget_kib = u32::try_from(budget.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        Intake { max_input_items, body_timeout, budget: Arc::new(Semaphore::new(budget_kib as usize)), budget_kib }
    }

    /// Reads a whole body, under `limit` bytes and within the body timeout.
    pub async fn read(&self, body: Body, limit: usize) -> Result<Bytes, Refusal> {
        match tokio::time::timeout(self.body_timeout, axum::body::to_bytes(body, limit)).await {
            Err(_) => Err(Refusal::TooSlow { timeout: self.body_timeout }),
            Ok(Ok(b)) => Ok(b),
            // Over the limit (or cut off, which the client cannot see anyway).
            Ok(Err(_)) => Err(Refusal::TooLarge { limit }),
        }
    }

    /// Refuses a body with more list items than the limit (a message naming
    /// both); a body that is not JSON passes (its parser says why).
    pub fn check_items(&self, bytes: &[u8]) -> Result<(), String> {
        let n = count_items(bytes);
        if n > self.max_input_items as u64 {
            return Err(format!(
                "the request holds {n} list items, over the limit of {} (--max-input-items); send it in parts",
                self.max_input_items
            ));
        }
        Ok(())
    }

    /// Waits for a share of the budget for a body (at once for a small
    /// one). Hold what it gives until the answer is made.
    pub async fn admit(&self, body: Bytes) -> Admitted {
        let len = body.len();
        if len < LARGE_BODY {
            return Admitted { body, permit: None, large: false };
        }
        let kib = u32::try_from(len.div_ceil(1024)).unwrap_or(u32::MAX).min(self.budget_kib);
        let permit = Arc::clone(&self.budget).acquire_many_owned(kib).await.ok();
        Admitted { body, permit, large: true }
    }

    /// Large bodies being processed now, in KiB of body (for `/metrics`).
    pub fn budget_in_use_kib(&self) -> usize {
        (self.budget_kib as usize).saturating_sub(self.budget.available_permits())
    }
}

/// The list items in a JSON text (every element of every array, at any
/// depth), counted without building anything; what was counted before a
/// syntax error if it is not JSON.
pub fn count_items(bytes: &[u8]) -> u64 {
    let mut n = 0u64;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let _ = Count(&mut n).deserialize(&mut de);
    n
}

/// Counts the array elements of one JSON value into the counter.
struct Count<'a>(&'a mut u64);

impl<'de> DeserializeSeed<'de> for Count<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Count<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Count(&mut *self.0))?.is_some() {
            *self.0 += 1;
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Count(&mut *self.0))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_counted_at_every_depth() {
        assert_eq!(count_items(br#"{"query": "[1,2]", "variables": {"i": {"pools": [{"a": [1, 2]}, {"a": []}]}}}"#), 4);
        assert_eq!(count_items(b"[[], [[1]], 2]"), 5);
        assert_eq!(count_items(b"{}"), 0);
        assert_eq!(count_items(b"not json"), 0);
    }

    #[test]
    fn over_the_limit_is_refused_naming_both() {
        let intake = Intake::new(3, DEFAULT_BODY_TIMEOUT, DEFAULT_BUDGET);
        assert!(intake.check_items(b"[1,2,3]").is_ok());
        let m = intake.check_items(b"[1,2,3,4]").unwrap_err();
        assert!(m.contains("4 list items") && m.contains("limit of 3") && m.contains("--max-input-items"), "{m}");
    }

    #[tokio::test]
    async fn large_bodies_queue_under_the_budget() {
        let intake = Intake::new(10, DEFAULT_BODY_TIMEOUT, 1024 * 1024);
        let first = intake.admit(Bytes::from(vec![b' '; 800 * 1024])).await;
        // A small body never waits.
        let _small = intake.admit(Bytes::from_static(b"{}")).await;
        assert_eq!(_small.bytes(), b"{}");
        assert_eq!(intake.budget_in_use_kib(), 800);
        let second = intake.admit(Bytes::from(vec![b' '; 800 * 1024]));
        tokio::pin!(second);
        assert!(tokio::time::timeout(Duration::from_millis(50), second.as_mut()).await.is_err());
        drop(first);
        let _second = tokio::time::timeout(Duration::from_secs(10), second).await.expect("admitted once freed");
        // A body over the whole budget is still let in alone.
        drop(_second);
        let _huge =
            tokio::time::timeout(Duration::from_secs(10), intake.admit(Bytes::from(vec![b' '; 4 * 1024 * 1024])))
                .await
                .unwrap();
    }

    #[tokio::test]
    async fn a_slow_body_is_refused_after_the_timeout() {
        let intake = Intake::new(10, Duration::from_millis(100), DEFAULT_BUDGET);
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let body = Body::from_stream(tokio_stream_of(rx));
        let r = intake.read(body, 1000).await;
        assert_eq!(r.unwrap_err(), Refusal::TooSlow { timeout: Duration::from_millis(100) });
        let r = intake.read(Body::from(vec![0u8; 2000]), 1000).await;
        assert_eq!(r.unwrap_err(), Refusal::TooLarge { limit: 1000 });
    }

    fn tokio_stream_of(
        rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
    }
}
