//! The host trait every backing store implements (docs/architecture.md).
//!
//! A [`Provider`] is one connection to a backend; it opens namespaces as [`Bucket`]s. Keys
//! reaching a bucket are already validated (1..=1024 bytes), values are within the declared
//! limit, and cursors are ones this bucket issued: the host's [`crate::KvStore`] checks all of
//! that, enforces access, timeouts and retries, so providers only map operations.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
pub use bytes::Bytes;
use futures::future::try_join_all;

use crate::capabilities::Capabilities;
pub use crate::counter::CounterRange;
use crate::error::{ErrorKind, KvError, Result};

/// How many single-key calls the default batch implementations run at once.
pub const DEFAULT_BATCH_CONCURRENCY: usize = 16;

/// A connection to one backend.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Short provider name (`memory`, `redis`, ...), used in logs and reports.
    fn name(&self) -> &str;

    /// What this provider supports.
    fn capabilities(&self) -> Capabilities;

    /// A bucket over `namespace`. Buckets of different namespaces never see each other's keys.
    async fn open(&self, namespace: &str) -> Result<Arc<dyn Bucket>>;
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys of this page, byte for byte as they were written.
    pub keys: Vec<String>,
    /// Where the next page starts; `None` ends the listing.
    pub cursor: Option<String>,
}

/// The version a CAS handle captured; opaque to everyone but the provider that issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    /// The key did not exist (or had expired).
    Absent,
    /// A provider-specific version tag (a counter, an ETag, a generation).
    Tag(String),
}

/// A value read together with its version, the first half of compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The current value, `None` when the key is missing.
    pub value: Option<Vec<u8>>,
    /// The version to pass to [`Bucket::swap`].
    pub version: Version,
}

/// One guest call of `increment` or `swap`, the same across every attempt the host makes.
///
/// Providers record it atomically with the write (a Redis request key, a journal beside the
/// value), so a retry after a lost reply finds the write applied and returns its result
/// instead of applying it again (S6: exactly once).
///
/// An id is this process's random 64-bit nonce (high half) and a per-process sequence number
/// (low half): unique across host replicas sharing a backend, and issued in order within one
/// process, which lets the in-memory provider keep its log as a ring indexed by sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(u128);

impl RequestId {
    /// A fresh id, never issued before by this process.
    pub fn new() -> RequestId {
        static NONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nonce = *NONCE.get_or_init(rand::random);
        let sequence = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        RequestId((u128::from(nonce) << 64) | u128::from(sequence))
    }

    /// An id with a chosen sequence, for tests that must not share the process's sequence
    /// with tests running beside them.
    #[cfg(test)]
    pub(crate) fn with_sequence(sequence: u64) -> RequestId {
        RequestId((u128::from(0x5eed_u64) << 64) | u128::from(sequence))
    }

    /// The id.
    pub fn value(self) -> u128 {
        self.0
    }

    /// The order in which this process issued the id.
    pub fn sequence(self) -> u64 {
        self.0 as u64
    }

    /// 64 bits of the id that differ between any two ids of one process and are random
    /// across processes.
    pub fn short(self) -> u64 {
        (self.0 >> 64) as u64 ^ self.0 as u64
    }

    /// The id as 32 hex digits.
    pub fn hex(self) -> String {
        format!("{:032x}", self.0)
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

/// One guest call of `increment` or `swap` as its attempts share it: the [`RequestId`] (the
/// same on every attempt) and what an earlier attempt left unresolved.
///
/// The host's retry loop owns it and lends it to each attempt (`&mut`): no other call sees it,
/// and nothing needs a lock. Providers with a native atomic write only read
/// [`Attempt::request`]; a read-modify-write ([`crate::rmw`]) also records the version its
/// conditional write was based on, so that the next attempt, or the host's final error
/// (`outcome unknown`, docs/semantics.md S6, S7), knows an earlier write may have applied.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    request: RequestId,
    /// Fingerprint of the version the last attempt's write was conditioned on, while it is
    /// unknown whether that write applied.
    attempted_base: Option<u32>,
    /// When that write was sent: if it applies, it applies after this.
    attempted_at: Option<crate::clock::Stamp>,
}

impl Attempt {
    /// The first attempt of a new call, with a fresh request id.
    pub fn new() -> Attempt {
        Attempt::of(RequestId::new())
    }

    /// The first attempt of the call `request`.
    pub fn of(request: RequestId) -> Attempt {
        Attempt {
            request,
            attempted_base: None,
            attempted_at: None,
        }
    }

    /// The call's request id.
    pub fn request(&self) -> RequestId {
        self.request
    }

    /// The version fingerprint an earlier attempt's write was conditioned on, if an earlier
    /// attempt may have written.
    pub fn attempted_base(&self) -> Option<u32> {
        self.attempted_base
    }

    /// Records (or clears) the version fingerprint the current attempt writes against, before
    /// the write is sent. An attempt that already has one keeps the time of its first write,
    /// the oldest that may still be unresolved. (To put back a base that resolving cleared,
    /// restore a clone of the attempt instead: its time is the first send's.)
    pub fn set_attempted_base(&mut self, base: Option<u32>) {
        self.attempted_at = match (base, self.attempted_base) {
            (None, _) => None,
            (Some(_), None) => Some(crate::clock::Stamp::now()),
            (Some(_), Some(_)) => self.attempted_at,
        };
        self.attempted_base = base;
    }

    /// How long ago the unresolved write was sent, in ms (on both clocks: [`crate::clock::Stamp`]).
    pub fn attempted_ms_ago(&self) -> Option<u64> {
        self.attempted_at.map(crate::clock::Stamp::age_ms)
    }
}

/// The second half of compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapOutcome {
    /// The key was unchanged and now holds the new value.
    Swapped,
    /// The key changed since the version was read; nothing was written.
    Conflict,
}

/// A live value and the time it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    /// The value.
    pub value: Vec<u8>,
    /// Time left before the key expires (never zero: an expired key is missing); `None` when
    /// it has no TTL.
    pub ttl: Option<Duration>,
}

impl StoredValue {
    /// A value that expires at `expires_at_ms` (Unix milliseconds, if any), as seen at
    /// `now_ms`; `None` once expired.
    pub fn at(value: Vec<u8>, expires_at_ms: Option<u64>, now_ms: u64) -> Option<StoredValue> {
        match expires_at_ms {
            None => Some(StoredValue { value, ttl: None }),
            Some(at) if at > now_ms => Some(StoredValue {
                value,
                ttl: Some(Duration::from_millis(at - now_ms)),
            }),
            Some(_) => None,
        }
    }
}

/// The keys of one namespace of a backend.
#[async_trait]
pub trait Bucket: Send + Sync + 'static {
    /// This bucket's synchronous face, if every operation completes without waiting
    /// (in-process storage). The host then calls it directly: no future, timer or retry.
    fn immediate(&self) -> Option<&dyn ImmediateBucket> {
        None
    }

    /// This bucket's changes, if the provider reports them (`capabilities().watch`).
    fn change_feed(&self) -> Option<Arc<dyn crate::watch::ChangeFeed>> {
        None
    }

    /// The value of `key`, `None` if missing or expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Write `value`, clearing any TTL.
    async fn set(&self, key: &str, value: Bytes) -> Result<()>;

    /// Write `value` that expires after `ttl` (only called if `capabilities().ttl`).
    async fn set_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()>;

    /// Remove `key`; succeeds if it is missing.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Whether `key` exists and has not expired.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// At most `limit` keys after `cursor` (a cursor this bucket returned earlier).
    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage>;

    /// The value of `key` and the time it has left, `None` if missing or expired: what tools
    /// that export or copy a store need to carry TTLs over.
    async fn get_with_ttl(&self, key: &str) -> Result<Option<StoredValue>>;

    /// Atomically add `delta` to the ASCII decimal i64 stored at `key` (missing = 0) and
    /// return the new value, which is stored as ASCII decimal. A total outside `range` (or
    /// the i64 range) is `overflow`, and nothing is written. Exactly once per call: called
    /// again with the same [`Attempt`] after a lost reply, it returns the first result.
    async fn increment(
        &self,
        key: &str,
        delta: i64,
        range: CounterRange,
        attempt: &mut Attempt,
    ) -> Result<i64>;

    /// The current value and its version (only called if `capabilities().cas`).
    async fn read_versioned(&self, key: &str) -> Result<Versioned>;

    /// Write `value` only if `key` is still at `expected` (only called if `capabilities().cas`).
    /// Exactly once per call: called again with the same [`Attempt`] after a lost reply, it
    /// reports `Swapped`, not a conflict with its own write.
    async fn swap(
        &self,
        key: &str,
        expected: &Version,
        value: Bytes,
        attempt: &mut Attempt,
    ) -> Result<SwapOutcome>;

    /// Values of `keys` in order, duplicates included.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(DEFAULT_BATCH_CONCURRENCY) {
            let reads: Vec<_> = chunk.iter().map(|key| self.get(key)).collect();
            values.extend(try_join_all(reads).await?);
        }
        Ok(values)
    }

    /// Values of `keys` in order, failing with `batch-too-large` when they add up to more than
    /// `max_bytes`. The default reads them with [`Bucket::get_many`] and then counts, so it
    /// holds one call's values beyond the limit at most; a provider that can see sizes before
    /// copying values (the memory provider) stops before.
    async fn get_many_within(
        &self,
        keys: &[String],
        max_bytes: usize,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        values_within(self.get_many(keys).await?, max_bytes)
    }

    /// Write every entry; for duplicate keys the last entry wins.
    async fn set_many(&self, entries: &[(String, Bytes)]) -> Result<()> {
        // Keep only the last entry per key so concurrent writes cannot reorder duplicates.
        let entries = last_entry_per_key(entries);
        for chunk in entries.chunks(DEFAULT_BATCH_CONCURRENCY) {
            let writes: Vec<_> = chunk
                .iter()
                .map(|(key, value)| self.set(key, value.clone()))
                .collect();
            try_join_all(writes).await?;
        }
        Ok(())
    }

    /// Delete every key; missing keys are fine.
    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        for chunk in keys.chunks(DEFAULT_BATCH_CONCURRENCY) {
            let deletes: Vec<_> = chunk.iter().map(|key| self.delete(key)).collect();
            try_join_all(deletes).await?;
        }
        Ok(())
    }
}

/// The hot operations of a bucket that never waits, called without a future. They mean what
/// the [`Bucket`] methods of the same name mean, and their errors are final: with nothing to
/// wait for, there is nothing to retry.
pub trait ImmediateBucket: Send + Sync {
    /// [`Bucket::get`].
    fn get_now(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// [`Bucket::exists`].
    fn exists_now(&self, key: &str) -> Result<bool>;

    /// [`Bucket::set`].
    fn set_now(&self, key: &str, value: Bytes) -> Result<()>;

    /// [`ImmediateBucket::set_now`] with a key and value its caller no longer needs (the
    /// guest's), so a store that keeps them takes them instead of copying them.
    fn set_owned_now(&self, key: String, value: Vec<u8>) -> Result<()> {
        self.set_now(&key, Bytes::from(value))
    }

    /// [`Bucket::delete`].
    fn delete_now(&self, key: &str) -> Result<()>;

    /// [`Bucket::increment`], for the call `request` (made once: there is no retry).
    fn increment_now(
        &self,
        key: &str,
        delta: i64,
        range: CounterRange,
        request: RequestId,
    ) -> Result<i64>;

    /// [`Bucket::get_many_within`].
    fn get_many_within_now(
        &self,
        keys: &[String],
        max_bytes: usize,
    ) -> Result<Vec<Option<Vec<u8>>>>;

    /// [`Bucket::set_many`], taking the entries (the last entry of a key wins).
    fn set_many_now(&self, entries: Vec<(String, Bytes)>) -> Result<()>;
}

/// The error of a batch whose values pass the byte limit.
pub fn batch_bytes_exceeded(max_bytes: usize) -> KvError {
    KvError::new(
        ErrorKind::BatchTooLarge,
        format!("the values exceed the limit of {max_bytes} bytes per batch call"),
    )
}

/// `values`, or `batch-too-large` if they add up to more than `max_bytes`.
pub(crate) fn values_within(
    values: Vec<Option<Vec<u8>>>,
    max_bytes: usize,
) -> Result<Vec<Option<Vec<u8>>>> {
    let total: usize = values.iter().flatten().map(Vec::len).sum();
    if total > max_bytes {
        return Err(batch_bytes_exceeded(max_bytes));
    }
    Ok(values)
}

/// The last entry of each key, in the order of the survivors.
pub fn last_entry_per_key(entries: &[(String, Bytes)]) -> Vec<&(String, Bytes)> {
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    let mut kept: Vec<&(String, Bytes)> = entries
        .iter()
        .rev()
        .filter(|(key, _)| seen.insert(key.as_str()))
        .collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_entry_wins() {
        let entries = vec![
            ("a".to_string(), Bytes::from_static(b"1")),
            ("b".to_string(), Bytes::from_static(b"2")),
            ("a".to_string(), Bytes::from_static(b"3")),
        ];
        assert_eq!(last_entry_per_key(&entries), vec![&entries[1], &entries[2]]);
    }
}
