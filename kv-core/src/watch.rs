//! Change feeds: how a store tells a watcher what changed (docs/semantics.md S13,
//! docs/watch.md).
//!
//! A provider that can report changes gives each bucket a [`ChangeFeed`]. The feed is
//! stateless: the watcher passes the [`Position`] it stands at and gets the changes after it
//! with the position after them, so the watcher's checkpoint is just the last position it
//! finished delivering, and a restart resumes from there. A feed that no longer holds what
//! followed a position (its log was trimmed, a watcher fell too far behind, a notification
//! was lost) says so with [`Changes::Gap`], and the watcher resynchronises from a listing.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

/// One change of one key, in the order the store applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key now holds `value` (a `set`, an increment, a swap, a batch entry).
    Set {
        /// The key.
        key: String,
        /// The value this change wrote.
        value: Vec<u8>,
    },
    /// The key was deleted, or its TTL expired.
    Delete {
        /// The key.
        key: String,
    },
}

impl Change {
    /// The key changed.
    pub fn key(&self) -> &str {
        match self {
            Change::Set { key, .. } | Change::Delete { key } => key,
        }
    }

    /// The value bytes this change carries (none for a delete).
    pub fn value_len(&self) -> usize {
        match self {
            Change::Set { value, .. } => value.len(),
            Change::Delete { .. } => 0,
        }
    }
}

/// Where a feed stands: opaque text only the provider that issued it reads back. It is what a
/// watcher stores as its checkpoint, so it must survive a restart of the host (for a durable
/// feed) and never contain credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position(pub String);

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The answer to [`ChangeFeed::changes_after`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// The changes after the position asked, oldest first (empty when nothing changed within
    /// the wait), and the position after the last of them.
    Next {
        /// The changes.
        changes: Vec<Change>,
        /// Where to ask next.
        position: Position,
    },
    /// The feed no longer holds everything after the position asked: resynchronise from the
    /// store's contents, then go on from `position` (taken before the resync may start, so a
    /// change during it is delivered again rather than lost).
    Gap {
        /// Where to go on after the resync.
        position: Position,
        /// Why, for the log.
        why: String,
    },
}

/// The changes of one bucket.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// The position now: a watcher without a checkpoint starts here, with the changes made
    /// after this call.
    async fn head(&self) -> Result<Position>;

    /// At most `max` changes after `after` (a position this feed issued), waiting up to `wait`
    /// for the first one; at most `max_bytes` of values, though one change is always returned
    /// whatever its size.
    async fn changes_after(
        &self,
        after: &Position,
        max: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Changes>;
}

/// What a provider's change feed guarantees, declared so that `wasi-kv watch` can refuse a
/// store without one and the watch suite can skip, with the reason, what a backend cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchSupport {
    /// Positions outlive the host process: a restarted watcher resumes from its checkpoint
    /// and misses nothing written while it was down (within the feed's retention).
    pub durable: bool,
    /// A TTL that runs out is reported as a delete.
    pub reports_expiry: bool,
    /// Every change is reported with the value it wrote (not only the latest value).
    pub every_value: bool,
}

/// The position text of a feed numbered by a sequence (the memory and SQLite feeds).
pub fn sequence_position(sequence: u64) -> Position {
    Position(sequence.to_string())
}

/// Reads back a [`sequence_position`], or `invalid-cursor` for text no feed of this kind issued.
pub fn parse_sequence_position(position: &Position) -> Result<u64> {
    position.0.parse().map_err(|_| {
        crate::KvError::new(
            crate::ErrorKind::InvalidCursor,
            format!(
                "{:?} is not a position of this change feed (a checkpoint of another store?)",
                position.0
            ),
        )
    })
}
