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

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};

use super::{Change, ChangeFeed, ChangeLog, Changes, Look, Position, wait_for_changes};
use crate::limits::RetryPolicy;
use crate::logging::CallLog;
use crate::provider::DEFAULT_BATCH_CONCURRENCY;
use crate::retry::{EachTime, Retry};
use crate::{Bucket, ErrorKind, KvError, Result};

/// Changes the in-process log keeps; a watcher further behind resynchronises.
const CHANGE_LOG_MAX: usize = 100_000;
/// Key and value bytes the log keeps.
const CHANGE_LOG_MAX_BYTES: usize = 64 * 1024 * 1024;
/// How long listings may fail before the feed answers `unavailable` (a watcher must not look
/// healthy while nothing is seen; `wasi-kv watch` retries that for a minute, then stops).
const FAILING_LIMIT: Duration = Duration::from_secs(10);
/// Keys read back at once (their changes are logged chunk by chunk, so a burst is never held
/// whole in memory). Each key is read by itself, with its own retries: one lost reply among a
/// chunk's reads must not fail the chunk (and with it every listing, once a store has changed
/// enough keys: under one reply lost in ten, measured with `wasi-kv conformance --faults lossy`
/// on Cloud Storage, no listing succeeded and the watcher stopped).
const READ_BACK_CHUNK: usize = 100;
/// How long one listing, or one chunk's read-back, may take before it counts as failed: the
/// feed's calls pass no operation timeout of the store, and a listing that hangs must not
/// look healthy. A store whose listing takes longer cannot be watched this way.
const LISTING_TIMEOUT: Duration = Duration::from_secs(45);

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
    /// Since when listings fail, the last failure, and whether it was transient (a failure
    /// that is not, such as a refused permission, stops a watcher at once rather than after
    /// its minute of retries).
    failing: Option<(Instant, String, bool)>,
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

    /// Waits for the first listing (the baseline every change is found against; a listing is
    /// bounded by [`LISTING_TIMEOUT`]), and fails with `unavailable` once listings have failed
    /// for [`FAILING_LIMIT`] or the listing task has ended.
    async fn healthy(&self) -> Result<()> {
        loop {
            let listed = self.polled.listed.notified();
            if self.task.is_finished() {
                return Err(unavailable("the listing task ended"));
            }
            {
                let state = self.polled.state();
                match &state.failing {
                    Some((since, why, transient)) if since.elapsed() >= FAILING_LIMIT => {
                        return Err(unavailable(why).with_transient(*transient));
                    }
                    _ if state.baseline => return Ok(()),
                    _ => {}
                }
            }
            // Woken after each listing (or failure); looked at again every second.
            let _ = tokio::time::timeout(Duration::from_secs(1), listed).await;
        }
    }
}

fn unavailable(why: &str) -> KvError {
    KvError::new(
        ErrorKind::Unavailable,
        format!("watch: listing the store for changes failed: {why}"),
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
        match log_changes(listing.as_ref(), bucket.as_ref(), known.as_ref(), &polled).await {
            Ok(now) => {
                known = Some(now);
                let mut state = polled.state();
                state.baseline = true;
                state.failing = None;
            }
            Err(err) => {
                tracing::warn!(error = %err.chain(), "watch: listing the store for changes failed");
                let mut state = polled.state();
                let failing = state
                    .failing
                    .get_or_insert_with(|| (Instant::now(), String::new(), true));
                failing.1 = err.to_string();
                // By its class: the retry marks every final error permanent, and a listing
                // that was unreachable, throttled or slow may well succeed next time.
                failing.2 =
                    err.kind().is_transient_by_default() || err.kind() == ErrorKind::Timeout;
            }
        }
        polled.listed.notify_waiters();
    }
}

/// Lists the versions now and logs the changes since `known` (none for the first listing),
/// chunk by chunk as they are read back; the versions listed. A failure after some chunks
/// were logged leaves `known` as it was, so those changes are logged again next time (at
/// least once), and nothing is skipped.
async fn log_changes(
    listing: &dyn VersionListing,
    bucket: &dyn Bucket,
    known: Option<&HashMap<String, String>>,
    polled: &Polled,
) -> Result<HashMap<String, String>> {
    let timed_out = |what: &str| {
        KvError::new(
            ErrorKind::Timeout,
            format!("{what} took over {} s", LISTING_TIMEOUT.as_secs()),
        )
    };
    // Reads are safe to repeat: transient failures are retried as a store's reads are.
    let retry = Retry::new(
        RetryPolicy::default(),
        LISTING_TIMEOUT,
        CallLog::new("watch", "polled", None),
    );
    let now = tokio::time::timeout(
        LISTING_TIMEOUT,
        retry.run("list", EachTime::read(|| listing.live_versions())),
    )
    .await
    .map_err(|_| timed_out("listing the store"))??;
    let Some(known) = known else {
        return Ok(now);
    };
    let mut gone: Vec<&String> = known.keys().filter(|key| !now.contains_key(*key)).collect();
    gone.sort();
    {
        let mut log = polled.log();
        for key in gone {
            log.push(Change::Delete { key: key.clone() });
        }
    }
    let mut written: Vec<String> = now
        .iter()
        .filter(|(key, version)| known.get(*key) != Some(*version))
        .map(|(key, _)| key.clone())
        .collect();
    written.sort();
    for chunk in written.chunks(READ_BACK_CHUNK) {
        // Boxed one by one: a stream of closures over borrowed keys is not provably `Send`
        // in the spawned listing task.
        let reads: Vec<BoxFuture<'_, Result<Option<Vec<u8>>>>> = chunk
            .iter()
            .map(|key| {
                retry
                    .run("get", EachTime::read(move || bucket.get(key)))
                    .boxed()
            })
            .collect();
        let read_back = futures::stream::iter(reads)
            .buffered(DEFAULT_BATCH_CONCURRENCY)
            .try_collect::<Vec<_>>();
        let values = tokio::time::timeout(LISTING_TIMEOUT, read_back)
            .await
            .map_err(|_| timed_out("reading changed keys back"))??;
        let mut log = polled.log();
        for (key, value) in chunk.iter().zip(values) {
            // Gone since it was listed: the next listing reports the delete.
            if let Some(value) = value {
                log.push(Change::Set {
                    key: key.clone(),
                    value,
                });
            }
        }
    }
    Ok(now)
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
        // The baseline first: a gap answered before it (a restarted watcher's checkpoint)
        // would resync while the baseline listing is under way, and a write between the
        // resync's read and the baseline's would be in neither.
        self.healthy().await?;
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
