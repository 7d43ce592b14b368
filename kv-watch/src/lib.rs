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

use std::time::Duration;

use async_trait::async_trait;
pub use kv_core::watch::Position;
use kv_core::watch::{Change, ChangeFeed, Changes};
use kv_core::{Backoff, KvStore};
use serde::Serialize;
use tracing::{info, warn};

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
}

/// A dead letter: what could not be delivered, and why.
#[derive(Debug, Serialize)]
struct DeadLetter<'a> {
    watcher: &'a str,
    store: &'a str,
    op: &'static str,
    key: &'a str,
    /// The value, base64 (sets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
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
                let position = self.feed.head().await?;
                self.save(&position).await?;
                info!(store = self.store.name(), %position, "no checkpoint: following changes from now");
                Ok(position)
            }
        }
    }

    async fn save(&self, position: &Position) -> kv_core::Result<()> {
        self.state
            .set(&self.checkpoint_key(), position.0.as_bytes().to_vec())
            .await
    }

    /// Delivers the changes after `from` (what [`Delivery::start`] returned) until `stop`
    /// turns true (then after the batch being delivered, with the checkpoint saved), or until
    /// a store fails for longer than its retries.
    pub async fn run(
        &self,
        watcher: &mut dyn Watcher,
        from: Position,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> kv_core::Result<Delivered> {
        let mut delivered = Delivered::default();
        let mut position = from;
        while !*stop.borrow() {
            let read = tokio::select! {
                read = self.feed.changes_after(
                    &position,
                    self.options.batch,
                    self.options.batch_bytes,
                    self.options.wait,
                ) => read?,
                _ = stop.changed() => break,
            };
            match read {
                Changes::Next {
                    changes,
                    position: next,
                } => {
                    for change in &changes {
                        self.deliver(watcher, change, &mut delivered).await?;
                    }
                    if next != position {
                        self.save(&next).await?;
                        position = next;
                    }
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
                    self.resync(watcher, &mut delivered).await?;
                    self.save(&next).await?;
                    position = next;
                }
            }
        }
        self.save(&position).await?;
        Ok(delivered)
    }

    /// Every live key, as a set.
    async fn resync(
        &self,
        watcher: &mut dyn Watcher,
        delivered: &mut Delivered,
    ) -> kv_core::Result<()> {
        delivered.resyncs += 1;
        let mut cursor = None;
        let mut keys = 0u64;
        loop {
            let page = self.store.list_keys(cursor.as_deref()).await?;
            for key in page.keys {
                if let Some(value) = self.store.get(&key).await? {
                    keys += 1;
                    self.deliver(watcher, &Change::Set { key, value }, delivered)
                        .await?;
                }
            }
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        info!(store = self.store.name(), keys, "resynchronised");
        Ok(())
    }

    /// One change, retried with backoff, then dead-lettered.
    async fn deliver(
        &self,
        watcher: &mut dyn Watcher,
        change: &Change,
        delivered: &mut Delivered,
    ) -> kv_core::Result<()> {
        let mut attempt = 1;
        loop {
            let result = match change {
                Change::Set { key, value } => watcher.on_set(&self.store, key, value).await,
                Change::Delete { key } => watcher.on_delete(&self.store, key).await,
            };
            let Err(error) = result else {
                delivered.changes += 1;
                return Ok(());
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
                return Ok(());
            }
            self.options.backoff.wait(attempt).await;
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
        let (op, value_base64) = match change {
            Change::Set { value, .. } => (
                "set",
                Some(base64::engine::general_purpose::STANDARD.encode(value)),
            ),
            Change::Delete { .. } => ("delete", None),
        };
        let letter = DeadLetter {
            watcher: &self.watcher,
            store: self.store.name(),
            op,
            key: change.key(),
            value_base64,
            attempts,
            error,
            at_ms: kv_core::clock::now_ms(),
        };
        let body = serde_json::to_vec(&letter)
            .map_err(|err| kv_core::KvError::internal(format!("a dead letter: {err}")))?;
        // Ordered by time, unique by a random suffix: letters of one key never overwrite.
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
