//! The host trait every backing store implements (docs/architecture.md).
//!
//! A [`Provider`] is one connection to a backend; it opens namespaces as [`Bucket`]s. Keys
//! reaching a bucket are already validated (1..=1024 bytes), values are within the declared
//! limit, and cursors are ones this bucket issued: the host's [`crate::KvStore`] checks all of
//! that, enforces access, timeouts and retries, so providers only map operations.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;

use crate::capabilities::Capabilities;
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
#[derive(Debug)]
pub struct RequestId {
    value: u128,
    /// Fingerprint of the version the last attempt's write was conditioned on.
    attempted_base: std::sync::Mutex<Option<u32>>,
}

impl RequestId {
    /// A fresh random id.
    pub fn new() -> RequestId {
        RequestId {
            value: rand::random(),
            attempted_base: std::sync::Mutex::new(None),
        }
    }

    /// The id.
    pub fn value(&self) -> u128 {
        self.value
    }

    /// The id as 32 hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.value)
    }

    /// The version fingerprint an earlier attempt's write was conditioned on, if an earlier
    /// attempt may have written.
    pub fn attempted_base(&self) -> Option<u32> {
        *self
            .attempted_base
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records (or clears) the version fingerprint the current attempt writes against.
    pub fn set_attempted_base(&self, base: Option<u32>) {
        *self
            .attempted_base
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = base;
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
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

/// The keys of one namespace of a backend.
#[async_trait]
pub trait Bucket: Send + Sync + 'static {
    /// The value of `key`, `None` if missing or expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Write `value`, clearing any TTL.
    async fn set(&self, key: &str, value: Vec<u8>) -> Result<()>;

    /// Write `value` that expires after `ttl` (only called if `capabilities().ttl`).
    async fn set_with_ttl(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<()>;

    /// Remove `key`; succeeds if it is missing.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Whether `key` exists and has not expired.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// At most `limit` keys after `cursor` (a cursor this bucket returned earlier).
    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage>;

    /// Atomically add `delta` to the ASCII decimal i64 stored at `key` (missing = 0) and
    /// return the new value, which is stored as ASCII decimal. Exactly once per `request`:
    /// called again with the same request after a lost reply, it returns the first result.
    async fn increment(&self, key: &str, delta: i64, request: &RequestId) -> Result<i64>;

    /// The current value and its version (only called if `capabilities().cas`).
    async fn read_versioned(&self, key: &str) -> Result<Versioned>;

    /// Write `value` only if `key` is still at `expected` (only called if `capabilities().cas`).
    /// Exactly once per `request`: called again with the same request after a lost reply, it
    /// reports `Swapped`, not a conflict with its own write.
    async fn swap(
        &self,
        key: &str,
        expected: &Version,
        value: Vec<u8>,
        request: &RequestId,
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
        let values = self.get_many(keys).await?;
        let total: usize = values.iter().flatten().map(Vec::len).sum();
        if total > max_bytes {
            return Err(batch_bytes_exceeded(max_bytes));
        }
        Ok(values)
    }

    /// Write every entry; for duplicate keys the last entry wins.
    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<()> {
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

/// The error of a batch whose values pass the byte limit.
pub fn batch_bytes_exceeded(max_bytes: usize) -> KvError {
    KvError::new(
        ErrorKind::BatchTooLarge,
        format!("the values exceed the limit of {max_bytes} bytes per batch call"),
    )
}

/// Removes all but the last entry of each key, keeping the order of the survivors.
pub fn last_entry_per_key(entries: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    let mut kept: Vec<(String, Vec<u8>)> = entries
        .into_iter()
        .rev()
        .filter(|(key, _)| seen.insert(key.clone()))
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
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
            ("a".to_string(), b"3".to_vec()),
        ];
        assert_eq!(
            last_entry_per_key(entries),
            vec![
                ("b".to_string(), b"2".to_vec()),
                ("a".to_string(), b"3".to_vec())
            ]
        );
    }
}
