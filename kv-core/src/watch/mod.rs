//! Change feeds: how a store tells a watcher what changed (docs/semantics.md S13,
//! docs/watch.md).
//!
//! A provider that can report changes gives each bucket a [`ChangeFeed`]. The feed is
//! stateless: the watcher passes the [`Position`] it stands at and gets the changes after it
//! with the position after them, so the watcher's checkpoint is just the last position it
//! finished delivering, and a restart resumes from there. A feed that no longer holds what
//! followed a position (its log was trimmed, a watcher fell too far behind, a notification
//! was lost) says so with [`Changes::Gap`], and the watcher resynchronises from a listing.

pub mod polled;

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

impl Position {
    /// Change `number` of the log `log` (an id the log drew at random when it started): a
    /// number alone would be read against another log (a restarted process's, a re-created
    /// file's) and skip changes without a word.
    pub fn numbered(log: &str, number: u64) -> Position {
        Position(format!("{log}:{number}"))
    }

    /// The number this position has in `log`; `None` for a position of another log, or text
    /// no log wrote (the feed answers it with a gap, never an error: a watcher must resync, not
    /// stop).
    pub fn number_in(&self, log: &str) -> Option<u64> {
        let (from, number) = self.0.rsplit_once(':')?;
        (from == log).then_some(())?;
        number.parse().ok()
    }
}

/// A change and the position after it: a watcher that stops within a batch saves the
/// position after the last change it delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The change.
    pub change: Change,
    /// The position after it.
    pub position: Position,
}

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
        changes: Vec<Logged>,
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

/// A random id for a new log (see [`Position::numbered`]).
pub fn new_log_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// What one look at an in-process log found, for [`wait_for_changes`].
pub struct Look {
    /// The changes (or gap) found; `None` when there is nothing after the position yet.
    pub found: Option<Changes>,
    /// Look again within this even without a notification (a source that must poll for
    /// something, such as expiries); `None`: only when notified.
    pub again_within: Option<Duration>,
}

/// [`ChangeFeed::changes_after`] for a feed woken by `notify`: looks with `look` until it finds
/// something, waking when notified or as the look asks, and answers no changes (at `after`)
/// once `wait` has passed. The notification is registered before each look, so a change made
/// after a look wakes the wait.
pub async fn wait_for_changes<F, Fut>(
    notify: &tokio::sync::Notify,
    after: &Position,
    wait: Duration,
    mut look: F,
) -> Result<Changes>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Look>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let looked = look().await?;
        if let Some(found) = looked.found {
            return Ok(found);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Changes::Next {
                changes: Vec::new(),
                position: after.clone(),
            });
        }
        let until = looked
            .again_within
            .map_or(deadline, |again| deadline.min(now + again));
        let _ = tokio::time::timeout_at(until, notified).await;
    }
}

/// A bounded log of changes kept in this process, numbered from 0 under a random id: the
/// in-memory provider's, and that of a source that learns of changes by notification (Redis
/// keyspace events). A watcher too far behind, or holding a position of an earlier log (a
/// restart, or [`ChangeLog::restart`] after missed notifications), gets a gap.
pub struct ChangeLog {
    id: String,
    /// The log before the last [`ChangeLog::restart`], kept so that a watcher still reading it
    /// gets the rest of it before its gap.
    previous: Option<Box<ChangeLog>>,
    changes: std::collections::VecDeque<Change>,
    /// The number of `changes[0]`.
    first: u64,
    bytes: usize,
    max_changes: usize,
    max_bytes: usize,
    notify: std::sync::Arc<tokio::sync::Notify>,
}

impl ChangeLog {
    /// An empty log keeping at most `max_changes` changes and `max_bytes` of keys and values.
    pub fn new(max_changes: usize, max_bytes: usize) -> ChangeLog {
        ChangeLog {
            id: new_log_id(),
            previous: None,
            changes: std::collections::VecDeque::new(),
            first: 0,
            bytes: 0,
            max_changes,
            max_bytes,
            notify: std::sync::Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Wakes the readers waiting for a change ([`tokio::sync::Notify::notified`] taken before
    /// reading, so a change after the read wakes them).
    pub fn notify(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.notify.clone()
    }

    /// The position after the last change.
    pub fn head(&self) -> Position {
        Position::numbered(&self.id, self.next())
    }

    fn next(&self) -> u64 {
        self.first + self.changes.len() as u64
    }

    /// Appends `change`, dropping the oldest past the bounds, and wakes the readers.
    pub fn push(&mut self, change: Change) {
        self.bytes += change.key().len() + change.value_len();
        self.changes.push_back(change);
        while self.changes.len() > self.max_changes || self.bytes > self.max_bytes {
            let Some(oldest) = self.changes.pop_front() else {
                break;
            };
            self.bytes -= oldest.key().len() + oldest.value_len();
            self.first += 1;
        }
        self.notify.notify_waiters();
    }

    /// Starts over, empty, under a new id: changes may have been missed since. A watcher
    /// reading the log until now still gets what it holds, then a gap; one further behind
    /// (before the previous restart) gets the gap at once.
    pub fn restart(&mut self) {
        let mut fresh = ChangeLog::new(self.max_changes, self.max_bytes);
        fresh.notify = self.notify.clone();
        let mut previous = std::mem::replace(self, fresh);
        previous.previous = None;
        self.previous = Some(Box::new(previous));
        self.notify.notify_waiters();
    }

    /// The changes after `after` (at most `max`, and `max_bytes` though one is always given),
    /// a gap, or `None` when there is nothing after it yet.
    pub fn read(&self, after: &Position, max: usize, max_bytes: usize) -> Option<Changes> {
        if let Some(previous) = &self.previous
            && after.number_in(&previous.id).is_some()
        {
            let rest = previous.read(after, max, max_bytes);
            if let Some(Changes::Next { changes, .. }) = &rest
                && !changes.is_empty()
            {
                return rest;
            }
            return Some(Changes::Gap {
                position: Position::numbered(&self.id, self.first),
                why: "the change source started again (changes may have been missed)".to_string(),
            });
        }
        let next = self.next();
        let number = after.number_in(&self.id);
        let Some(after) = number.filter(|number| (self.first..=next).contains(number)) else {
            let why = match number {
                Some(_) => format!(
                    "the watcher fell more than {} changes ({} MiB) behind",
                    self.max_changes,
                    self.max_bytes >> 20
                ),
                None => "the position is of an earlier change log (another process's, or one \
                         started again since)"
                    .to_string(),
            };
            return Some(Changes::Gap {
                position: self.head(),
                why,
            });
        };
        if after == next {
            return None;
        }
        let mut changes = Vec::new();
        let mut bytes = 0;
        let unread = self.changes.range((after - self.first) as usize..);
        for (number, change) in (after + 1..).zip(unread) {
            let size = change.key().len() + change.value_len();
            if changes.len() == max.max(1) || (!changes.is_empty() && bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            changes.push(Logged {
                change: change.clone(),
                position: Position::numbered(&self.id, number),
            });
        }
        let position = Position::numbered(&self.id, after + changes.len() as u64);
        Some(Changes::Next { changes, position })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> Change {
        Change::Set {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A restart (missed notifications) keeps what a watcher had not read yet: it gets the
    /// rest of the earlier log, then the gap, then the new log from its start.
    #[test]
    fn a_restart_gives_the_rest_of_the_earlier_log_then_a_gap() {
        let mut log = ChangeLog::new(10, 1 << 20);
        let start = log.head();
        log.push(set("a", "1"));
        log.push(Change::Delete { key: "a".into() });
        log.restart();
        log.push(set("b", "2"));
        let Some(Changes::Next { changes, position }) = log.read(&start, 10, 1 << 20) else {
            panic!("the earlier log's changes");
        };
        let changes: Vec<Change> = changes.into_iter().map(|logged| logged.change).collect();
        assert_eq!(changes, [set("a", "1"), Change::Delete { key: "a".into() }]);
        let Some(Changes::Gap { position, .. }) = log.read(&position, 10, 1 << 20) else {
            panic!("a gap at the end of the earlier log");
        };
        let Some(Changes::Next { changes, .. }) = log.read(&position, 10, 1 << 20) else {
            panic!("the new log");
        };
        assert_eq!(changes[0].change, set("b", "2"));
        // Two restarts behind: the gap at once.
        log.restart();
        assert!(matches!(
            log.read(&start, 10, 1 << 20),
            Some(Changes::Gap { .. })
        ));
    }

    #[test]
    fn positions_name_their_log() {
        let position = Position::numbered("abc", 7);
        assert_eq!(position.number_in("abc"), Some(7));
        assert_eq!(position.number_in("abd"), None);
        assert_eq!(Position("7".into()).number_in("abc"), None);
        assert_eq!(Position("abc:x".into()).number_in("abc"), None);
    }
}
