//! The change feed of a backend that cannot report its changes (Cloud Storage): every
//! interval the keys' versions are listed, and what differs from the previous listing is a
//! change: a new or different version is a write (its value read back then), a key no longer
//! listed a delete (or an expiry). The feed is in process (a [`ChangeLog`]), so a restarted
//! watcher resynchronises, and several writes of one key between two listings are delivered
//! as its value when read (declared: not durable, not every value).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Change, ChangeFeed, ChangeLog, Changes, Look, Position, wait_for_changes};
use crate::{Bucket, ErrorKind, KvError, Result};

/// Changes the in-process log keeps; a watcher further behind resynchronises.
const CHANGE_LOG_MAX: usize = 100_000;
/// Key and value bytes the log keeps.
const CHANGE_LOG_MAX_BYTES: usize = 64 * 1024 * 1024;
/// How long listings may fail before the feed answers `unavailable` (a watcher must not look
/// healthy while nothing is seen).
const FAILING_LIMIT: Duration = Duration::from_secs(10);
/// Keys read back at once.
const READ_BACK_CHUNK: usize = 100;

/// What a polled backend lists.
#[async_trait]
pub trait VersionListing: Send + Sync {
    /// Every live key of the bucket with a version that changes with each write of it (a
    /// generation, an ETag).
    async fn live_versions(&self) -> Result<HashMap<String, String>>;
}

struct Polled {
    log: Mutex<ChangeLog>,
    notify: Arc<Notify>,
    /// The first listing is done (the feed has a baseline), and since when listings fail.
    state: Mutex<PollState>,
    listed: Notify,
}

#[derive(Default)]
struct PollState {
    baseline: bool,
    failing: Option<(Instant, String)>,
}

impl Polled {
    fn log(&self) -> MutexGuard<'_, ChangeLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn state(&self) -> MutexGuard<'_, PollState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One bucket's changes, found by a task of its own that lists it every interval while the
/// feed lives.
pub struct PolledFeed {
    polled: Arc<Polled>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PolledFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PolledFeed {
    /// Lists `listing` every `every`, reading changed keys back from `bucket`. Must be called
    /// within a Tokio runtime.
    pub fn follow(
        listing: Arc<dyn VersionListing>,
        bucket: Arc<dyn Bucket>,
        every: Duration,
    ) -> PolledFeed {
        let log = ChangeLog::new(CHANGE_LOG_MAX, CHANGE_LOG_MAX_BYTES);
        let polled = Arc::new(Polled {
            notify: log.notify(),
            log: Mutex::new(log),
            state: Mutex::new(PollState::default()),
            listed: Notify::new(),
        });
        let task = tokio::spawn(poll(listing, bucket, every, polled.clone()));
        PolledFeed { polled, task }
    }

    /// Fails with `unavailable` once listings have failed for [`FAILING_LIMIT`], or if the
    /// first listing has not succeeded within it.
    async fn healthy(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + FAILING_LIMIT;
        loop {
            let listed = self.polled.listed.notified();
            {
                let state = self.polled.state();
                match &state.failing {
                    Some((since, why)) if since.elapsed() >= FAILING_LIMIT => {
                        return Err(unavailable(why));
                    }
                    _ if state.baseline => return Ok(()),
                    _ => {}
                }
            }
            if tokio::time::timeout_at(deadline, listed).await.is_err() {
                let why = match &self.polled.state().failing {
                    Some((_, why)) => why.clone(),
                    None => "the first listing did not finish".to_string(),
                };
                return Err(unavailable(&why));
            }
        }
    }
}

fn unavailable(why: &str) -> KvError {
    KvError::new(
        ErrorKind::Unavailable,
        format!(
            "watch: listing the store for changes has failed for {} s: {why}",
            FAILING_LIMIT.as_secs()
        ),
    )
}

/// Lists every `every` until the feed is dropped. A listing (or read-back) that fails changes
/// nothing: the next one is compared with the last that succeeded, so nothing is skipped.
async fn poll(
    listing: Arc<dyn VersionListing>,
    bucket: Arc<dyn Bucket>,
    every: Duration,
    polled: Arc<Polled>,
) {
    let mut known: Option<HashMap<String, String>> = None;
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match changes_since(listing.as_ref(), bucket.as_ref(), known.as_ref()).await {
            Ok((now, changes)) => {
                {
                    let mut log = polled.log();
                    for change in changes {
                        log.push(change);
                    }
                }
                known = Some(now);
                let mut state = polled.state();
                state.baseline = true;
                state.failing = None;
            }
            Err(err) => {
                tracing::warn!(error = %err.chain(), "watch: listing the store for changes failed");
                polled
                    .state()
                    .failing
                    .get_or_insert_with(|| (Instant::now(), String::new()))
                    .1 = err.to_string();
            }
        }
        polled.listed.notify_waiters();
    }
}

/// The versions now, and the changes since `known` (none for the first listing).
async fn changes_since(
    listing: &dyn VersionListing,
    bucket: &dyn Bucket,
    known: Option<&HashMap<String, String>>,
) -> Result<(HashMap<String, String>, Vec<Change>)> {
    let now = listing.live_versions().await?;
    let Some(known) = known else {
        return Ok((now, Vec::new()));
    };
    let mut gone: Vec<&String> = known.keys().filter(|key| !now.contains_key(*key)).collect();
    gone.sort();
    let mut written: Vec<String> = now
        .iter()
        .filter(|(key, version)| known.get(*key) != Some(*version))
        .map(|(key, _)| key.clone())
        .collect();
    written.sort();
    let mut changes: Vec<Change> = gone
        .into_iter()
        .map(|key| Change::Delete { key: key.clone() })
        .collect();
    for chunk in written.chunks(READ_BACK_CHUNK) {
        let values = bucket.get_many(chunk).await?;
        for (key, value) in chunk.iter().zip(values) {
            // Gone since it was listed: the next listing reports the delete.
            if let Some(value) = value {
                changes.push(Change::Set {
                    key: key.clone(),
                    value,
                });
            }
        }
    }
    Ok((now, changes))
}

#[async_trait]
impl ChangeFeed for PolledFeed {
    async fn head(&self) -> Result<Position> {
        self.healthy().await?;
        Ok(self.polled.log().head())
    }

    async fn changes_after(
        &self,
        after: &Position,
        max: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Changes> {
        wait_for_changes(&self.polled.notify, after, wait, || async {
            let found = self.polled.log().read(after, max, max_bytes);
            if found.is_none() {
                self.healthy().await?;
            }
            Ok(Look {
                found,
                again_within: None,
            })
        })
        .await
    }
}
