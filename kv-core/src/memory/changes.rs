//! The in-memory provider's change feed: a bounded log of a namespace's changes, kept only
//! while a watcher follows it (a store nobody watches pays one branch per write).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Namespace, Shared, lock};
use crate::error::Result;
use crate::watch::{Change, ChangeFeed, Changes, Logged, Position, new_log_id};

/// Changes a namespace's log keeps at most; a watcher further behind resynchronises.
pub(super) const CHANGE_LOG_MAX: usize = 100_000;

/// Key and value bytes the log keeps at most.
pub(super) const CHANGE_LOG_MAX_BYTES: usize = 64 * 1024 * 1024;

/// How often a waiting feed looks for expired keys while some key has a TTL: expiry is
/// reported within this (the memory store reclaims expired keys lazily otherwise).
const EXPIRY_POLL: Duration = Duration::from_millis(100);

/// Expired keys one look reclaims at most (each becomes a delete in the log).
const RECLAIMED_PER_LOOK: usize = 10_000;

/// The changes of one namespace, numbered from 0 since the log was started.
pub(super) struct ChangeLog {
    /// Drawn when the log starts: a position of an earlier log (another process's, or one
    /// from before every watcher left) is a gap here, never read as a number of this one.
    id: String,
    changes: VecDeque<Change>,
    /// The number of `changes[0]`.
    first: u64,
    bytes: usize,
    /// Feeds following this log; it is dropped with the last.
    followers: usize,
    notify: Arc<Notify>,
}

impl ChangeLog {
    fn new() -> ChangeLog {
        ChangeLog {
            id: new_log_id(),
            changes: VecDeque::new(),
            first: 0,
            bytes: 0,
            followers: 0,
            notify: Arc::new(Notify::new()),
        }
    }

    /// The number the next change gets.
    fn next(&self) -> u64 {
        self.first + self.changes.len() as u64
    }

    fn position(&self, number: u64) -> Position {
        Position::numbered(&self.id, number)
    }

    pub(super) fn push(&mut self, change: Change) {
        self.bytes += change.key().len() + change.value_len();
        self.changes.push_back(change);
        while self.changes.len() > CHANGE_LOG_MAX || self.bytes > CHANGE_LOG_MAX_BYTES {
            let Some(oldest) = self.changes.pop_front() else {
                break;
            };
            self.bytes -= oldest.key().len() + oldest.value_len();
            self.first += 1;
        }
        self.notify.notify_waiters();
    }
}

/// A watcher's view of one namespace's log.
pub(super) struct MemoryFeed {
    map: Arc<Mutex<Namespace>>,
    shared: Arc<Shared>,
    notify: Arc<Notify>,
}

impl MemoryFeed {
    /// Follows `map`'s changes from now on, starting its log if nobody follows it yet.
    pub(super) fn follow(map: Arc<Mutex<Namespace>>, shared: Arc<Shared>) -> Result<MemoryFeed> {
        let notify = {
            let mut namespace = lock(&map)?;
            let log = namespace.changes.get_or_insert_with(ChangeLog::new);
            log.followers += 1;
            log.notify.clone()
        };
        Ok(MemoryFeed {
            map,
            shared,
            notify,
        })
    }

    /// Changes after `after`, or `None` when there are none yet; reclaims expired keys first,
    /// so their deletes are in the log. Also says whether some key may still expire.
    fn look(
        &self,
        after: &Position,
        max: usize,
        max_bytes: usize,
    ) -> Result<(Option<Changes>, bool)> {
        let mut namespace = lock(&self.map)?;
        namespace.reclaim_expired_up_to(&self.shared.versions, RECLAIMED_PER_LOOK);
        let expiring = !namespace.expiries.is_empty();
        let Some(log) = namespace.changes.as_ref() else {
            return Err(crate::KvError::internal(
                "the change log of a followed store is gone",
            ));
        };
        let next = log.next();
        let number = after.number_in(&log.id);
        let Some(after) = number.filter(|number| (log.first..=next).contains(number)) else {
            let why = match number {
                Some(_) => format!(
                    "the watcher fell more than {} changes ({} MiB) behind",
                    CHANGE_LOG_MAX,
                    CHANGE_LOG_MAX_BYTES >> 20
                ),
                None => "the position is of an earlier change log (another process's, or one \
                         started again after every watcher left)"
                    .to_string(),
            };
            let gap = Changes::Gap {
                position: log.position(next),
                why,
            };
            return Ok((Some(gap), expiring));
        };
        if after == next {
            return Ok((None, expiring));
        }
        let mut changes = Vec::new();
        let mut bytes = 0;
        let unread = log.changes.range((after - log.first) as usize..);
        for (number, change) in (after + 1..).zip(unread) {
            let size = change.key().len() + change.value_len();
            if changes.len() == max || (!changes.is_empty() && bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            changes.push(Logged {
                change: change.clone(),
                position: log.position(number),
            });
        }
        let position = log.position(after + changes.len() as u64);
        Ok((Some(Changes::Next { changes, position }), expiring))
    }
}

impl Drop for MemoryFeed {
    fn drop(&mut self) {
        if let Ok(mut namespace) = lock(&self.map) {
            let last = namespace.changes.as_mut().is_some_and(|log| {
                log.followers = log.followers.saturating_sub(1);
                log.followers == 0
            });
            if last {
                namespace.changes = None;
            }
        }
    }
}

#[async_trait]
impl ChangeFeed for MemoryFeed {
    async fn head(&self) -> Result<Position> {
        let namespace = lock(&self.map)?;
        let log = namespace.changes.as_ref().ok_or_else(|| {
            crate::KvError::internal("the change log of a followed store is gone")
        })?;
        Ok(log.position(log.next()))
    }

    async fn changes_after(
        &self,
        after: &Position,
        max: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Changes> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so a change made after the look wakes this wait.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (found, expiring) = self.look(after, max.max(1), max_bytes)?;
            if let Some(found) = found {
                return Ok(found);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Changes::Next {
                    changes: Vec::new(),
                    position: after.clone(),
                });
            }
            let until = if expiring {
                deadline.min(now + EXPIRY_POLL)
            } else {
                deadline
            };
            let _ = tokio::time::timeout_at(until, notified).await;
        }
    }
}
