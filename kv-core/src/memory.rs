//! The in-memory provider: the reference implementation of the contract.
//!
//! One [`MemoryProvider`] holds one map shared by every bucket, handle and instance that uses
//! it (wasmtime's own in-memory host copies its map per `open`, so writes are lost between
//! instances). Namespaces are separate maps, so no key can cross between stores.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::capabilities::Capabilities;
use crate::counter::{add_delta, encode_counter, parse_counter};
use crate::error::{KvError, Result};
use crate::provider::{Bucket, KeyPage, Provider, RequestId, SwapOutcome, Version, Versioned};

/// The largest value the in-memory provider stores.
pub const MEMORY_MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    version: u64,
    expires_at: Option<Instant>,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

type Namespace = BTreeMap<String, Entry>;

#[derive(Default)]
struct Shared {
    namespaces: Mutex<HashMap<String, Arc<Mutex<Namespace>>>>,
    versions: AtomicU64,
    requests: Mutex<RequestLog>,
}

/// What an applied increment or swap returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Incremented(i64),
    Swapped,
}

/// The results of the last [`REQUEST_LOG_LEN`] increments and swaps, by request id, so a
/// retry of an applied call returns its result instead of applying it again.
#[derive(Default)]
struct RequestLog {
    applied: HashMap<u128, Applied>,
    order: std::collections::VecDeque<u128>,
}

/// Requests remembered by the in-memory provider.
const REQUEST_LOG_LEN: usize = 65_536;

impl RequestLog {
    fn record(&mut self, request: u128, applied: Applied) {
        if self.applied.insert(request, applied).is_none() {
            self.order.push_back(request);
        }
        while self.order.len() > REQUEST_LOG_LEN {
            if let Some(oldest) = self.order.pop_front() {
                self.applied.remove(&oldest);
            }
        }
    }
}

/// A provider keeping everything in process memory.
#[derive(Clone, Default)]
pub struct MemoryProvider {
    shared: Arc<Shared>,
}

impl MemoryProvider {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for MemoryProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryProvider").finish_non_exhaustive()
    }
}

#[async_trait]
impl Provider for MemoryProvider {
    fn name(&self) -> &str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            cas: true,
            list_may_repeat: false,
            max_value_bytes: MEMORY_MAX_VALUE_BYTES,
        }
    }

    async fn open(&self, namespace: &str) -> Result<Arc<dyn Bucket>> {
        let map = lock(&self.shared.namespaces)?
            .entry(namespace.to_string())
            .or_default()
            .clone();
        Ok(Arc::new(MemoryBucket {
            map,
            shared: self.shared.clone(),
        }))
    }
}

struct MemoryBucket {
    map: Arc<Mutex<Namespace>>,
    shared: Arc<Shared>,
}

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    mutex
        .lock()
        .map_err(|_| KvError::internal("in-memory store lock poisoned"))
}

impl MemoryBucket {
    fn next_version(&self) -> u64 {
        self.shared.versions.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn live<'a>(map: &'a Namespace, key: &str, now: Instant) -> Option<&'a Entry> {
        map.get(key).filter(|entry| entry.is_live(now))
    }

    fn write(&self, key: &str, value: Vec<u8>, expires_at: Option<Instant>) -> Result<()> {
        let version = self.next_version();
        lock(&self.map)?.insert(
            key.to_string(),
            Entry {
                value,
                version,
                expires_at,
            },
        );
        Ok(())
    }
}

#[async_trait]
impl Bucket for MemoryBucket {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let map = lock(&self.map)?;
        Ok(Self::live(&map, key, Instant::now()).map(|entry| entry.value.clone()))
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.write(key, value, None)
    }

    async fn set_with_ttl(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<()> {
        let expires_at = Instant::now().checked_add(ttl);
        self.write(key, value, expires_at)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        lock(&self.map)?.remove(key);
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let map = lock(&self.map)?;
        Ok(Self::live(&map, key, Instant::now()).is_some())
    }

    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage> {
        let now = Instant::now();
        let map = lock(&self.map)?;
        let start = match cursor {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let mut live = map
            .range::<str, _>((start, Bound::Unbounded))
            .filter(|(_, entry)| entry.is_live(now))
            .map(|(key, _)| key);
        let keys: Vec<String> = live.by_ref().take(limit).cloned().collect();
        let more = live.next().is_some();
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }

    async fn increment(&self, key: &str, delta: i64, request: &RequestId) -> Result<i64> {
        let version = self.next_version();
        let now = Instant::now();
        let mut map = lock(&self.map)?;
        let mut requests = lock(&self.shared.requests)?;
        match requests.applied.get(&request.value()) {
            Some(Applied::Incremented(total)) => return Ok(*total),
            Some(Applied::Swapped) => {
                return Err(KvError::internal("a swap's request id was reused"));
            }
            None => {}
        }
        let (current, expires_at) = match Self::live(&map, key, now) {
            Some(entry) => (parse_counter(&entry.value)?, entry.expires_at),
            None => (0, None),
        };
        let next = add_delta(current, delta)?;
        map.insert(
            key.to_string(),
            Entry {
                value: encode_counter(next),
                version,
                expires_at,
            },
        );
        requests.record(request.value(), Applied::Incremented(next));
        Ok(next)
    }

    async fn read_versioned(&self, key: &str) -> Result<Versioned> {
        let map = lock(&self.map)?;
        Ok(match Self::live(&map, key, Instant::now()) {
            Some(entry) => Versioned {
                value: Some(entry.value.clone()),
                version: Version::Tag(entry.version.to_string()),
            },
            None => Versioned {
                value: None,
                version: Version::Absent,
            },
        })
    }

    async fn swap(
        &self,
        key: &str,
        expected: &Version,
        value: Vec<u8>,
        request: &RequestId,
    ) -> Result<SwapOutcome> {
        let version = self.next_version();
        let mut map = lock(&self.map)?;
        let mut requests = lock(&self.shared.requests)?;
        match requests.applied.get(&request.value()) {
            Some(Applied::Swapped) => return Ok(SwapOutcome::Swapped),
            Some(Applied::Incremented(_)) => {
                return Err(KvError::internal("an increment's request id was reused"));
            }
            None => {}
        }
        let current = Self::live(&map, key, Instant::now()).map(|entry| entry.version.to_string());
        let unchanged = match (expected, current) {
            (Version::Absent, None) => true,
            (Version::Tag(tag), Some(current)) => *tag == current,
            _ => false,
        };
        if !unchanged {
            return Ok(SwapOutcome::Conflict);
        }
        map.insert(
            key.to_string(),
            Entry {
                value,
                version,
                expires_at: None,
            },
        );
        requests.record(request.value(), Applied::Swapped);
        Ok(SwapOutcome::Swapped)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let now = Instant::now();
        let map = lock(&self.map)?;
        Ok(keys
            .iter()
            .map(|key| Self::live(&map, key, now).map(|entry| entry.value.clone()))
            .collect())
    }

    async fn get_many_within(
        &self,
        keys: &[String],
        max_bytes: usize,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let now = Instant::now();
        let map = lock(&self.map)?;
        // Sizes first: nothing is copied for a batch over the limit.
        let total: usize = keys
            .iter()
            .filter_map(|key| Self::live(&map, key, now))
            .map(|entry| entry.value.len())
            .sum();
        if total > max_bytes {
            return Err(crate::provider::batch_bytes_exceeded(max_bytes));
        }
        Ok(keys
            .iter()
            .map(|key| Self::live(&map, key, now).map(|entry| entry.value.clone()))
            .collect())
    }

    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<()> {
        let mut map = lock(&self.map)?;
        for (key, value) in entries {
            let version = self.next_version();
            map.insert(
                key,
                Entry {
                    value,
                    version,
                    expires_at: None,
                },
            );
        }
        Ok(())
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        let mut map = lock(&self.map)?;
        for key in keys {
            map.remove(key);
        }
        Ok(())
    }
}
