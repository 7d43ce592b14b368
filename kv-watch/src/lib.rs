//! Delivering a store's changes to a watcher (docs/semantics.md S13, docs/watch.md).
//!
//! A [`Delivery`] follows one store's [`ChangeFeed`] and hands every change to a [`Watcher`]
//! (in `wasi-kv watch`, a `watch-service` component) one at a time, in the order the store
//! applied them, so changes of one key arrive in order. What it promises:
//!
//! - **At least once.** The position after the last change delivered is the checkpoint, kept
//!   in a state store after each batch; a restart resumes from it, so a change is delivered
//!   again if the host stopped between delivering it and saving the checkpoint, never skipped.
//! - **No silent loss.** A change the watcher fails (a trap, a time limit) is retried with
//!   capped backoff up to [`WatchOptions::max_attempts`], then written to the dead-letter
//!   store with its error; if even that write fails, the delivery stops with an error instead
//!   of moving past the change.
//! - **Resync on a gap.** When the feed no longer holds what followed the checkpoint, every
//!   live key is delivered as a set (a snapshot listing), and the feed is followed again from
//!   a position taken before the listing.

#![deny(missing_docs)]

pub mod component;

use std::time::Duration;

use async_trait::async_trait;
pub use kv_core::watch::Position;
use kv_core::watch::{Change, ChangeFeed, Changes};
use kv_core::{Backoff, KvStore};
use serde::Serialize;
use tokio::sync::watch::Receiver;
use tracing::{info, warn};

/// How long a feed read may take beyond the wait it was given.
const FEED_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What receives the changes.
#[async_trait]
pub trait Watcher: Send {
    /// `key` of `store` now holds `value`. An error means not delivered: it is retried.
    async fn on_set(&mut self, store: &KvStore, key: &str, value: &[u8]) -> Result<(), String>;

    /// `key` of `store` was deleted or expired. An error means not delivered: it is retried.
    async fn on_delete(&mut self, store: &KvStore, key: &str) -> Result<(), String>;
}

/// How changes are read and retried.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Changes read at once (a checkpoint is saved after each such batch).
    pub batch: usize,
    /// Value bytes read at once (one change is read whatever its size).
    pub batch_bytes: usize,
    /// How long one read waits for a change.
    pub wait: Duration,
    /// Deliveries of one change before it goes to the dead-letter store.
    pub max_attempts: u32,
    /// Between deliveries of a change that failed.
    pub backoff: Backoff,
    /// How long the feed may fail with transient errors (the backend unreachable, throttled)
    /// before the delivery stops with the error; reads are retried with backoff until then.
    pub feed_outage: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            batch: 256,
            batch_bytes: 8 * 1024 * 1024,
            wait: Duration::from_secs(1),
            max_attempts: 5,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
            feed_outage: Duration::from_secs(60),
        }
    }
}

/// One store followed for one watcher.
pub struct Delivery {
    /// Names the watcher in checkpoint and dead-letter keys.
    watcher: String,
    store: KvStore,
    feed: std::sync::Arc<dyn ChangeFeed>,
    /// Where the checkpoint is kept.
    state: KvStore,
    /// Where changes that could not be delivered go.
    dead_letters: KvStore,
    options: WatchOptions,
}

/// What a delivery did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Changes delivered (redeliveries after a failure counted once).
    pub changes: u64,
    /// Failed deliveries (each retried or dead-lettered).
    pub failures: u64,
    /// Changes written to the dead-letter store.
    pub dead_letters: u64,
    /// Resyncs after a gap in the feed.
    pub resyncs: u64,
    /// Where each resync's listing began and ended, counted in changes delivered: a key's
    /// changes may go back to an older value after either point (the listing is newer than
    /// the changes read after it), so a checker of order starts again there.
    pub resync_bounds: Vec<(u64, u64)>,
}

/// A dead letter: what could not be delivered, and why.
#[derive(Debug, Serialize)]
struct DeadLetter<'a> {
    watcher: &'a str,
    store: &'a str,
    op: &'static str,
    key: &'a str,
    /// The value, base64 (sets only, and only if the letter fits the dead-letter store).
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    /// The value's length (sets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    value_bytes: Option<usize>,
    /// The value's SHA-256, hex (sets only): what identifies a value too large to keep here.
    #[serde(skip_serializing_if = "Option::is_none")]
    value_sha256: Option<String>,
    attempts: u32,
    error: &'a str,
    at_ms: u64,
}

impl Delivery {
    /// Follows `store` for `watcher`, keeping the checkpoint in `state` and dead letters in
    /// `dead_letters`; fails if the store's provider reports no changes.
    pub fn new(
        watcher: &str,
        store: KvStore,
        state: KvStore,
        dead_letters: KvStore,
        options: WatchOptions,
    ) -> Result<Delivery, String> {
        let feed = store.change_feed()?;
        Ok(Delivery {
            watcher: watcher.to_string(),
            store,
            feed,
            state,
            dead_letters,
            options,
        })
    }

    /// The state-store key holding this delivery's checkpoint.
    pub fn checkpoint_key(&self) -> String {
        format!("watch/{}/{}/checkpoint", self.watcher, self.store.name())
    }

    /// The key prefix of this delivery's dead letters.
    pub fn dead_letter_prefix(&self) -> String {
        format!("watch/{}/{}/dead/", self.watcher, self.store.name())
    }

    /// Where [`Delivery::run`] starts: the checkpoint, or, for a watcher that never ran, the
    /// feed's head now (saved as its first checkpoint). Changes made after this returns are
    /// delivered.
    pub async fn start(&self) -> kv_core::Result<Position> {
        match self.state.get(&self.checkpoint_key()).await? {
            Some(saved) => {
                let position = Position(String::from_utf8_lossy(&saved).into_owned());
                info!(store = self.store.name(), %position, "resuming from the checkpoint");
                Ok(position)
            }
            None => {
                let position = self.head().await?;
                self.save(&position).await?;
                info!(store = self.store.name(), %position, "no checkpoint: following changes from now");
                Ok(position)
            }
        }
    }

    /// The feed's head now. A transient failure (one lost reply) is retried with backoff, as a
    /// read of the feed is, for up to [`WatchOptions::feed_outage`]: a watcher must not fail
    /// to start on what it would ride out once running.
    async fn head(&self) -> kv_core::Result<Position> {
        let since = std::time::Instant::now();
        let mut failures = 0;
        loop {
            let head = tokio::time::timeout(FEED_READ_TIMEOUT, self.feed.head())
                .await
                .unwrap_or_else(|_| {
                    Err(kv_core::KvError::new(
                        kv_core::ErrorKind::Timeout,
                        format!("the change feed did not answer within {FEED_READ_TIMEOUT:?}"),
                    )
                    .with_transient(true))
                });
            match head {
                Err(err) if err.is_transient() && since.elapsed() < self.options.feed_outage => {
                    failures += 1;
                    warn!(store = self.store.name(), error = %err, failures, "asking the change feed for its head failed: retrying");
                    Backoff::PRESSURE.wait(failures).await;
                }
                head => return head,
            }
        }
    }

    async fn save(&self, position: &Position) -> kv_core::Result<()> {
        self.state
            .set(&self.checkpoint_key(), position.0.as_bytes().to_vec())
            .await
    }

    /// Delivers the changes after `from` (what [`Delivery::start`] returned) until `stop`
    /// turns true, or until a store fails for longer than its retries. A stop is seen between
    /// changes and between the deliveries of a failing one: the checkpoint saved is the
    /// position after the last change delivered (or dead-lettered), and the change under way
    /// is delivered again by the next run.
    pub async fn run(
        &self,
        watcher: &mut dyn Watcher,
        from: Position,
        mut stop: Receiver<bool>,
    ) -> kv_core::Result<Delivered> {
        let mut delivered = Delivered::default();
        let mut position = from;
        let mut saved = position.clone();
        // Since when, and how many times, the feed has failed in a row.
        let mut failing: Option<(std::time::Instant, u32)> = None;
        'reading: while !*stop.borrow() {
            let asked = std::time::Instant::now();
            // A read that hangs (a backend that stopped answering) is a transient failure,
            // not a silent stall: the feed's calls pass no operation timeout of the store.
            let read_limit = self.options.wait + FEED_READ_TIMEOUT;
            let read = tokio::select! {
                read = tokio::time::timeout(read_limit, self.feed.changes_after(
                    &position,
                    self.options.batch,
                    self.options.batch_bytes,
                    self.options.wait,
                )) => read.unwrap_or_else(|_| Err(kv_core::KvError::new(
                    kv_core::ErrorKind::Timeout,
                    format!("the change feed did not answer within {read_limit:?}"),
                ).with_transient(true))),
                _ = stop.changed() => break,
            };
            let read = match read {
                Ok(read) => {
                    if let Some((since, _)) = failing.take() {
                        info!(store = self.store.name(), after = ?since.elapsed(), "the change feed answers again");
                    }
                    read
                }
                Err(err) if err.is_transient() => {
                    // The outage began when the first failing read was asked.
                    let (since, failures) = failing.get_or_insert((asked, 0));
                    *failures += 1;
                    if since.elapsed() >= self.options.feed_outage {
                        return Err(err);
                    }
                    warn!(store = self.store.name(), error = %err, failures = *failures, "reading the change feed failed: retrying");
                    let retry = *failures;
                    tokio::select! {
                        () = Backoff::PRESSURE.wait(retry) => {}
                        _ = stop.changed() => break,
                    }
                    continue;
                }
                Err(err) => return Err(err),
            };
            match read {
                Changes::Next {
                    changes,
                    position: next,
                } => {
                    for logged in &changes {
                        self.refuse_own_records(&logged.change)?;
                        if !self
                            .deliver(watcher, &logged.change, &mut delivered, &stop)
                            .await?
                        {
                            break 'reading;
                        }
                        position = logged.position.clone();
                    }
                    position = next;
                }
                Changes::Gap {
                    position: next,
                    why,
                } => {
                    warn!(
                        store = self.store.name(),
                        from = %position,
                        %why,
                        "the change feed has a gap: resynchronising from a listing (a delete \
                         inside the gap is not delivered)"
                    );
                    if !self.resync(watcher, &mut delivered, &stop).await? {
                        // Cut short: the gap is met again, and resynchronised, next time.
                        break;
                    }
                    position = next;
                }
            }
            if position != saved {
                self.save(&position).await?;
                saved = position.clone();
            }
        }
        if position != saved {
            self.save(&position).await?;
        }
        Ok(delivered)
    }

    /// A change to this watcher's own checkpoint or dead letters means they are kept in the
    /// watched keys (two names, one store): every save would be a change to deliver, without
    /// end. Stops delivery with the reason.
    fn refuse_own_records(&self, change: &Change) -> kv_core::Result<()> {
        let key = change.key();
        if key == self.checkpoint_key() || key.starts_with(&self.dead_letter_prefix()) {
            return Err(kv_core::KvError::new(
                kv_core::ErrorKind::Internal,
                format!(
                    "store {:?} holds this watcher's own records ({key:?}): the state and \
                     dead-letter stores must not be the watched keys",
                    self.store.name()
                ),
            ));
        }
        Ok(())
    }

    /// Every live key, as a set; `false` if stopped before the end.
    async fn resync(
        &self,
        watcher: &mut dyn Watcher,
        delivered: &mut Delivered,
        stop: &Receiver<bool>,
    ) -> kv_core::Result<bool> {
        delivered.resyncs += 1;
        let began = delivered.changes;
        let mut cursor = None;
        let mut keys = 0u64;
        loop {
            let page = self.store.list_keys(cursor.as_deref()).await?;
            for key in page.keys {
                if let Some(value) = self.store.get(&key).await? {
                    keys += 1;
                    let change = Change::Set { key, value };
                    if !self.deliver(watcher, &change, delivered, stop).await? {
                        return Ok(false);
                    }
                }
            }
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        delivered.resync_bounds.push((began, delivered.changes));
        info!(store = self.store.name(), keys, "resynchronised");
        Ok(true)
    }

    /// One change, retried with backoff, then dead-lettered: `true` once it is done with,
    /// `false` if `stop` came first (it was not delivered, nor dead-lettered).
    async fn deliver(
        &self,
        watcher: &mut dyn Watcher,
        change: &Change,
        delivered: &mut Delivered,
        stop: &Receiver<bool>,
    ) -> kv_core::Result<bool> {
        let mut attempt = 1;
        loop {
            if *stop.borrow() {
                return Ok(false);
            }
            let result = match change {
                Change::Set { key, value } => watcher.on_set(&self.store, key, value).await,
                Change::Delete { key } => watcher.on_delete(&self.store, key).await,
            };
            let Err(error) = result else {
                delivered.changes += 1;
                return Ok(true);
            };
            delivered.failures += 1;
            warn!(
                store = self.store.name(),
                key = change.key(),
                attempt,
                of = self.options.max_attempts,
                %error,
                "delivery failed"
            );
            if attempt >= self.options.max_attempts {
                self.dead_letter(change, attempt, &error).await?;
                delivered.dead_letters += 1;
                return Ok(true);
            }
            let mut stopping = stop.clone();
            tokio::select! {
                () = self.options.backoff.wait(attempt) => {}
                _ = stopping.changed() => return Ok(false),
            }
            attempt += 1;
        }
    }

    async fn dead_letter(
        &self,
        change: &Change,
        attempts: u32,
        error: &str,
    ) -> kv_core::Result<()> {
        use base64::Engine as _;
        use sha2::Digest as _;
        let value = match change {
            Change::Set { value, .. } => Some(value.as_slice()),
            Change::Delete { .. } => None,
        };
        let mut letter = DeadLetter {
            watcher: &self.watcher,
            store: self.store.name(),
            op: if value.is_some() { "set" } else { "delete" },
            key: change.key(),
            value_base64: value
                .map(|value| base64::engine::general_purpose::STANDARD.encode(value)),
            value_bytes: value.map(<[u8]>::len),
            value_sha256: value.map(|value| {
                sha2::Sha256::digest(value)
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect()
            }),
            attempts,
            error,
            at_ms: kv_core::clock::now_ms(),
        };
        let encode = |letter: &DeadLetter| {
            serde_json::to_vec(letter)
                .map_err(|err| kv_core::KvError::internal(format!("a dead letter: {err}")))
        };
        let mut body = encode(&letter)?;
        if body.len() > self.dead_letters.max_value_bytes() {
            // Too large to keep whole: the letter names the value by length and hash instead,
            // rather than stop every later delivery behind it.
            letter.value_base64 = None;
            body = encode(&letter)?;
        }
        // Ordered by time, unique by a random suffix.
        let key = format!(
            "{}{:016}-{:08x}",
            self.dead_letter_prefix(),
            letter.at_ms,
            rand::random::<u32>()
        );
        self.dead_letters.set(&key, body).await?;
        warn!(
            store = self.store.name(),
            key = change.key(),
            attempts,
            dead_letter = %key,
            "gave up delivering a change: it is in the dead-letter store"
        );
        Ok(())
    }
}
