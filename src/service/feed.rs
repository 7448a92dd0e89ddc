//! The change stream as its readers see it: a live feed that says so when
//! it falls behind, and a resumable stream that replays the change log
//! first (after `since`, or after a lag) and then follows the live feed with
//! no gap and no duplicate.

use super::Service;
use crate::model::Change;
use crate::model::ModelError;
use futures_util::Stream;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};

/// How many changes one read of the change log returns.
pub const REPLAY_PAGE: usize = 256;

/// What a [`ChangeFeed`] yields.
#[derive(Debug, Clone)]
pub enum FeedItem {
    /// The next committed change.
    Change(Arc<Change>),
    /// The reader fell behind the bounded stream and `missed` changes were
    /// dropped for it. Every change after `last_revision` (the last one it
    /// received) is in the store's change log
    /// ([`crate::store::Store::changes_after`]); after reading them, call
    /// [`ChangeFeed::caught_up`] so that the feed drops what was re-read.
    Lagged { last_revision: u64, missed: u64 },
}

/// A live reader of the change stream (see [`Service::feed`]).
#[derive(Debug)]
pub struct ChangeFeed {
    rx: broadcast::Receiver<Arc<Change>>,
    last: u64,
    /// The first change received after a gap, held back until the reader
    /// has caught up.
    held: Option<Arc<Change>>,
}

impl ChangeFeed {
    pub(crate) fn new(rx: broadcast::Receiver<Arc<Change>>, last: u64) -> Self {
        ChangeFeed { rx, last, held: None }
    }

    /// The revision of the last change delivered (or that the feed started
    /// at, or was told it caught up to).
    pub fn last_revision(&self) -> u64 {
        self.last
    }

    /// Tells the feed that the reader has every change up to `revision`
    /// (from a snapshot or the change log): later deliveries at or below it
    /// are dropped.
    pub fn caught_up(&mut self, revision: u64) {
        self.last = self.last.max(revision);
    }

    /// The next change above the last revision, or a lag signal. `None`
    /// once the service is gone.
    pub async fn recv(&mut self) -> Option<FeedItem> {
        let mut after_lag = false;
        loop {
            let next = match self.held.take() {
                Some(c) => Ok(c),
                None => self.rx.recv().await,
            };
            match next {
                Ok(c) if c.revision <= self.last => after_lag = false,
                // After a lag the receiver restarts at the oldest change the
                // stream still holds (at once: the ring is full). Only a
                // change beyond the next revision means some were missed;
                // a reader that caught up from the log meanwhile missed
                // nothing.
                Ok(c) if after_lag && c.revision > self.last + 1 => {
                    let missed = c.revision - self.last - 1;
                    self.held = Some(c);
                    return Some(FeedItem::Lagged { last_revision: self.last, missed });
                }
                Ok(c) => {
                    self.last = c.revision;
                    return Some(FeedItem::Change(c));
                }
                Err(RecvError::Lagged(_)) => after_lag = true,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

struct Resume {
    service: Arc<Service>,
    feed: ChangeFeed,
    pending: VecDeque<Arc<Change>>,
    /// Read the change log after this revision before going live again.
    replay_from: Option<u64>,
    failed: bool,
}

impl Service {
    /// Every change after `since` (or from now, without it), in revision
    /// order, each exactly once: first what the change log holds, then the
    /// live changes. A reader that falls behind the live stream re-reads
    /// the log from its last revision, so it never misses a change. Works
    /// across restarts: revisions and the log are durable.
    ///
    /// `since` above the current revision is refused: those changes do not
    /// exist (yet); a client holding it is talking to another state file.
    pub fn change_stream(
        self: &Arc<Self>,
        since: Option<u64>,
    ) -> Result<impl Stream<Item = Result<Arc<Change>, ModelError>> + Send + 'static, ModelError> {
        // Subscribe before reading the log: a change committed after the
        // last read of the log is then certainly delivered live.
        let feed = self.feed();
        if let Some(since) = since {
            if since > feed.last_revision() {
                return Err(ModelError::bad_request(format!(
                    "since {since} is ahead of the current revision {}",
                    feed.last_revision()
                )));
            }
            self.store().check_since(since).map_err(|e| gone(e, feed.last_revision()))?;
        }
        let state = Resume {
            service: Arc::clone(self),
            replay_from: since.filter(|s| *s < feed.last_revision()),
            feed,
            pending: VecDeque::new(),
            failed: false,
        };
        Ok(futures_util::stream::unfold(state, |mut st| async move {
            loop {
                if st.failed {
                    return None;
                }
                if let Some(c) = st.pending.pop_front() {
                    return Some((Ok(c), st));
                }
                if let Some(from) = st.replay_from {
                    match st.service.read_log(from).await {
                        Ok(page) => {
                            let full = page.len() >= REPLAY_PAGE;
                            match page.last() {
                                Some(last) => {
                                    let last = last.revision;
                                    st.feed.caught_up(last);
                                    st.replay_from = full.then_some(last);
                                }
                                None => st.replay_from = None,
                            }
                            st.pending.extend(page.into_iter().map(Arc::new));
                        }
                        Err(e) => {
                            st.failed = true;
                            return Some((Err(e), st));
                        }
                    }
                    continue;
                }
                match st.feed.recv().await {
                    Some(FeedItem::Change(c)) => return Some((Ok(c), st)),
                    Some(FeedItem::Lagged { last_revision, missed }) => {
                        tracing::debug!(last_revision, missed, "change stream reader lagged; replaying the change log");
                        st.replay_from = Some(last_revision);
                    }
                    None => return None,
                }
            }
        }))
    }

    /// One page of the change log after `revision`.
    async fn read_log(&self, revision: u64) -> Result<Vec<Change>, ModelError> {
        self.change_log(revision, REPLAY_PAGE).await
    }

    /// At most `limit` changes of the change log after `revision`, in
    /// revision order, as the log stores them.
    pub async fn change_log(&self, revision: u64, limit: usize) -> Result<Vec<Change>, ModelError> {
        match self.store().changes_after(revision, limit).await {
            Ok(page) => Ok(page),
            Err(crate::store::StoreError::Gone(g)) => Err(gone(g, self.revision())),
            Err(crate::store::StoreError::Unavailable(m)) => {
                Err(ModelError::unavailable(format!("could not read the change log: {m}")))
            }
            Err(e) => Err(ModelError::internal(format!("could not read the change log: {e}"))),
        }
    }
}

/// The error for a `since` the log no longer covers, naming the revision
/// to re-read at.
fn gone(g: crate::store::Gone, revision: u64) -> ModelError {
    ModelError::gone(format!("{g} (the current revision is {revision})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Command;
    use futures_util::StreamExt;

    fn open(dir: &tempfile::TempDir, capacity: usize) -> Arc<Service> {
        Service::open_with_capacity(&dir.path().join("x.db"), "host1", capacity).unwrap()
    }

    async fn create(s: &Arc<Service>, id: &str) -> u64 {
        s.execute(Command::CenCreate { id: id.into() }).await.unwrap()
    }

    #[tokio::test]
    async fn feed_names_the_last_revision_when_it_lags() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, 4);
        let mut feed = s.feed();
        assert_eq!(create(&s, "a").await, 1);
        match feed.recv().await {
            Some(FeedItem::Change(c)) => assert_eq!(c.revision, 1),
            other => panic!("expected revision 1, got {other:?}"),
        }
        for i in 0..10 {
            create(&s, &format!("b{i}")).await;
        }
        match feed.recv().await {
            Some(FeedItem::Lagged { last_revision, missed }) => {
                assert_eq!(last_revision, 1);
                assert_eq!(missed, 6);
            }
            other => panic!("expected a lag signal, got {other:?}"),
        }
        // Resume from the log, then the feed drops what was re-read.
        let log = s.store().changes_after(1, 100).await.unwrap();
        assert_eq!(log.iter().map(|c| c.revision).collect::<Vec<_>>(), (2..=11).collect::<Vec<_>>());
        feed.caught_up(11);
        create(&s, "c").await;
        match feed.recv().await {
            Some(FeedItem::Change(c)) => assert_eq!(c.revision, 12),
            other => panic!("expected revision 12, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn change_stream_replays_then_follows_without_gap_or_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, 4);
        for i in 0..5 {
            create(&s, &format!("a{i}")).await;
        }
        let stream = s.change_stream(Some(2)).unwrap();
        futures_util::pin_mut!(stream);
        // More changes than the stream holds, before the reader reads.
        for i in 0..20 {
            create(&s, &format!("b{i}")).await;
        }
        let mut seen = Vec::new();
        while seen.len() < 23 {
            let c = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
                .await
                .expect("stream stalled")
                .expect("stream ended")
                .unwrap();
            seen.push(c.revision);
        }
        assert_eq!(seen, (3..=25).collect::<Vec<_>>());
        create(&s, "c").await;
        let c = stream.next().await.unwrap().unwrap();
        assert_eq!(c.revision, 26);
    }

    #[tokio::test]
    async fn change_stream_refuses_a_revision_from_the_future() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, 4);
        create(&s, "a").await;
        let e = s.change_stream(Some(7)).err().expect("must be refused");
        assert!(e.message.contains("since 7 is ahead of the current revision 1"), "{}", e.message);
        assert!(s.change_stream(Some(1)).is_ok());
    }
}
