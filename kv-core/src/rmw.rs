//! Read-modify-write increment for backends without a native counter (S6).
//!
//! The backend offers a consistent read with a version (an ETag, a generation, a version
//! column) and a write conditioned on that version. [`increment`] reads, parses the counter,
//! adds, and writes under the condition; a lost race backs off with jitter
//! ([`Backoff::CONTENTION`]) and tries again, so N concurrent writers doing M increments end at
//! exactly N*M. An increment keeps the key's expiry, like Redis `INCRBY`; an expired key
//! counts as missing and starts at 0.

use async_trait::async_trait;

use crate::backoff::Backoff;
use crate::clock;
use crate::counter::{add_delta, encode_counter, parse_counter};
use crate::error::{KvError, Result};

/// Attempts before an increment that keeps losing races gives up.
pub const INCREMENT_ATTEMPTS: u32 = 200;

/// One key as a read-modify-write loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot<V> {
    /// The stored value, expired or not.
    pub value: Vec<u8>,
    /// The version the conditional write must match.
    pub version: V,
    /// Expiry in Unix milliseconds, if any.
    pub expires_at_ms: Option<u64>,
}

/// What the write of a read-modify-write step is conditioned on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect<V> {
    /// No item may exist (create-if-absent).
    Absent,
    /// The item is still at this version.
    Version(V),
}

/// A backend's consistent read and conditional write of one key.
#[async_trait]
pub trait ConditionalStore: Send + Sync {
    /// The backend's version tag.
    type Version: Send + Sync + Clone;

    /// The key's stored state; expired items are returned with their expiry.
    async fn read(&self, key: &str) -> Result<Read<Self::Version>>;

    /// Writes `value` (expiring at `expires_at_ms`) only if `expect` holds; `Ok(false)` when
    /// it did not (the race was lost, nothing was written).
    async fn write_if(
        &self,
        key: &str,
        value: Vec<u8>,
        expires_at_ms: Option<u64>,
        expect: Expect<Self::Version>,
    ) -> Result<bool>;
}

/// The outcome of [`ConditionalStore::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<V> {
    /// Nothing is stored under the key.
    Missing,
    /// The key's state.
    Found(Snapshot<V>),
    /// A concurrent writer replaced the key while it was read: a lost race.
    Raced,
}

/// Adds `delta` to the counter at `key` through `store`'s read and conditional write.
pub async fn increment<S: ConditionalStore + ?Sized>(
    store: &S,
    key: &str,
    delta: i64,
) -> Result<i64> {
    for attempt in 0..INCREMENT_ATTEMPTS {
        if attempt > 0 {
            Backoff::CONTENTION.wait(attempt).await;
        }
        let (next, expires_at_ms, expect) = match store.read(key).await? {
            Read::Raced => continue,
            Read::Missing => (add_delta(0, delta)?, None, Expect::Absent),
            Read::Found(snapshot) if !clock::is_live(snapshot.expires_at_ms, clock::now_ms()) => (
                add_delta(0, delta)?,
                None,
                Expect::Version(snapshot.version),
            ),
            Read::Found(snapshot) => (
                add_delta(parse_counter(&snapshot.value)?, delta)?,
                snapshot.expires_at_ms,
                Expect::Version(snapshot.version),
            ),
        };
        if store
            .write_if(key, encode_counter(next), expires_at_ms, expect)
            .await?
        {
            return Ok(next);
        }
    }
    Err(KvError::unavailable("increment lost every race under contention").with_transient(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Value, version and expiry of one key.
    type Entry = (Vec<u8>, u64, Option<u64>);

    /// A versioned map: each write bumps the version.
    #[derive(Default)]
    struct Versioned {
        items: Mutex<HashMap<String, Entry>>,
        next: std::sync::atomic::AtomicU64,
    }

    #[async_trait]
    impl ConditionalStore for Versioned {
        type Version = u64;

        async fn read(&self, key: &str) -> Result<Read<u64>> {
            tokio::task::yield_now().await;
            Ok(match self.items.lock().unwrap().get(key) {
                None => Read::Missing,
                Some((value, version, expires_at_ms)) => Read::Found(Snapshot {
                    value: value.clone(),
                    version: *version,
                    expires_at_ms: *expires_at_ms,
                }),
            })
        }

        async fn write_if(
            &self,
            key: &str,
            value: Vec<u8>,
            expires_at_ms: Option<u64>,
            expect: Expect<u64>,
        ) -> Result<bool> {
            tokio::task::yield_now().await;
            let mut items = self.items.lock().unwrap();
            let current = items.get(key).map(|(_, version, _)| *version);
            let holds = match expect {
                Expect::Absent => current.is_none(),
                Expect::Version(version) => current == Some(version),
            };
            if holds {
                let version = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                items.insert(key.to_string(), (value, version + 1, expires_at_ms));
            }
            Ok(holds)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_increments_are_exact() {
        let store = std::sync::Arc::new(Versioned::default());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..50 {
                        increment(&*store, "n", 1).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(increment(&*store, "n", 0).await.unwrap(), 400);
    }

    #[tokio::test]
    async fn keeps_expiry_and_restarts_expired_counters() {
        let store = Versioned::default();
        let later = clock::now_ms() + 60_000;
        store
            .write_if("live", b"41".to_vec(), Some(later), Expect::Absent)
            .await
            .unwrap();
        assert_eq!(increment(&store, "live", 1).await.unwrap(), 42);
        assert_eq!(store.items.lock().unwrap()["live"].2, Some(later));
        store
            .write_if("gone", b"41".to_vec(), Some(1), Expect::Absent)
            .await
            .unwrap();
        assert_eq!(increment(&store, "gone", 1).await.unwrap(), 1);
        assert_eq!(store.items.lock().unwrap()["gone"].2, None);
        store
            .write_if("text", b"x".to_vec(), None, Expect::Absent)
            .await
            .unwrap();
        let err = increment(&store, "text", 1).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotAnInteger);
        assert_eq!(store.items.lock().unwrap()["text"].0, b"x");
    }
}
