//! The in-memory provider's change feed: a bounded [`ChangeLog`] of a namespace's changes,
//! kept only while a watcher follows it (a store nobody watches pays one branch per write).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Namespace, Shared, lock};
use crate::error::Result;
use crate::watch::{ChangeFeed, ChangeLog, Changes, Look, Position, wait_for_changes};

/// Changes a namespace's log keeps at most; a watcher further behind resynchronises.
pub(super) const CHANGE_LOG_MAX: usize = 100_000;

/// Key and value bytes the log keeps at most.
pub(super) const CHANGE_LOG_MAX_BYTES: usize = 64 * 1024 * 1024;

/// How often a waiting feed looks for expired keys while some key has a TTL: expiry is
/// reported within this (the memory store reclaims expired keys lazily otherwise).
const EXPIRY_POLL: Duration = Duration::from_millis(100);

/// Expired keys one look reclaims at most (each becomes a delete in the log).
const RECLAIMED_PER_LOOK: usize = 10_000;

/// A namespace's log and how many feeds follow it (it is dropped with the last).
pub(super) struct Followed {
    pub(super) log: ChangeLog,
    followers: usize,
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
            let followed = namespace.changes.get_or_insert_with(|| Followed {
                log: ChangeLog::new(CHANGE_LOG_MAX, CHANGE_LOG_MAX_BYTES),
                followers: 0,
            });
            followed.followers += 1;
            followed.log.notify()
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
        let followed = namespace.changes.as_ref().ok_or_else(gone)?;
        Ok((followed.log.read(after, max, max_bytes), expiring))
    }
}

fn gone() -> crate::KvError {
    crate::KvError::internal("the change log of a followed store is gone")
}

impl Drop for MemoryFeed {
    fn drop(&mut self) {
        if let Ok(mut namespace) = lock(&self.map) {
            let last = namespace.changes.as_mut().is_some_and(|followed| {
                followed.followers = followed.followers.saturating_sub(1);
                followed.followers == 0
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
        Ok(namespace.changes.as_ref().ok_or_else(gone)?.log.head())
    }

    async fn changes_after(
        &self,
        after: &Position,
        max: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Changes> {
        wait_for_changes(&self.notify, after, wait, || async {
            let (found, expiring) = self.look(after, max, max_bytes)?;
            Ok(Look {
                found,
                again_within: expiring.then_some(EXPIRY_POLL),
            })
        })
        .await
    }
}
