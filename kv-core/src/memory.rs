//! The in-memory provider: the reference implementation of the contract.
//!
//! One [`MemoryProvider`] holds one map shared by every bucket, handle and instance that uses
//! it (wasmtime's own in-memory host copies its map per `open`, so writes are lost between
//! instances). Namespaces are separate maps, so no key can cross between stores.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

use compact_str::CompactString;
use std::hash::BuildHasher as _;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use hashbrown::hash_map::RawEntryMut;

use async_trait::async_trait;

use crate::capabilities::Capabilities;
use crate::counter::{CounterRange, add_delta_within, encode_counter, parse_counter};
use crate::error::{KvError, Result};
use crate::provider::{
    Attempt, Bucket, Bytes, ImmediateBucket, KeyPage, Provider, RequestId, StoredValue,
    SwapOutcome, Version, Versioned,
};
use crate::store::OUTCOME_UNKNOWN;
use crate::watch::{Change, ChangeFeed, WatchSupport};

mod changes;

/// How the version of a missing key starts (`a<S>`, absence seen at version `S`).
const ABSENT_SINCE: &str = "a";

/// The largest value the in-memory provider stores.
pub const MEMORY_MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// When an entry expires: nanoseconds after [`epoch`], plus one; [`NEVER`] for no expiry. Eight
/// bytes where an `Option<Instant>` takes sixteen: the entry is as small as wasmtime's.
type Deadline = u64;

/// The deadline of an entry without a TTL.
const NEVER: Deadline = 0;

/// The instant deadlines count from: the first use of the in-memory store in this process.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The deadline `ttl` from now (a TTL too long to represent never expires).
fn deadline_after(ttl: Duration) -> Deadline {
    Instant::now()
        .saturating_duration_since(epoch())
        .checked_add(ttl)
        .and_then(|at| u64::try_from(at.as_nanos()).ok())
        .map_or(NEVER, |nanos| nanos.saturating_add(1))
}

/// A stored value: 32 bytes beside its key (wasmtime's `Vec<u8>` takes 24, and keeps no
/// version or expiry).
#[derive(Debug, Clone)]
struct Entry {
    value: Box<[u8]>,
    version: u64,
    expires: Deadline,
}

impl Entry {
    /// An entry holding `value`, without copying it when the host hands over bytes it owns.
    fn new(value: Bytes, version: u64, expires: Deadline) -> Entry {
        Entry {
            value: Vec::from(value).into_boxed_slice(),
            version,
            expires,
        }
    }

    fn is_live(&self, now: &Now) -> bool {
        self.expires == NEVER || self.expires > now.get()
    }
}

/// The time of one operation as a [`Deadline`], read on first use: only entries with a TTL
/// need it, so an operation on keys without one reads no clock.
#[derive(Default)]
struct Now(std::cell::OnceCell<Deadline>);

impl Now {
    fn get(&self) -> Deadline {
        *self.0.get_or_init(|| {
            let since = Instant::now().saturating_duration_since(epoch());
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX - 1) + 1
        })
    }
}

/// One namespace: entries hashed by key for point operations (one hash per operation, the
/// key moved in without a copy), and, only while the namespace is being listed, the same keys
/// in order.
#[derive(Default)]
struct Namespace {
    /// SipHash with a random key per map, as std's `HashMap`: guests choose the keys, so the
    /// hash must not let one make them collide.
    entries: HashMap<Box<str>, Entry, std::hash::RandomState>,
    /// The keys in order, built by the first listing and kept up to date while listings go on.
    /// Dropped once the namespace saw as many writes as it holds keys (at least
    /// [`LISTING_IDLE_MIN`]) with no listing in between, so a store that is never listed, or no
    /// longer, pays nothing for it, in time or memory: a rebuild costs what keeping it would
    /// have cost over those writes.
    ///
    /// Keys of up to 24 bytes are held inline (`CompactString`), with no allocation of their
    /// own: 1,000,000 keys of 12 bytes take 38 MiB instead of 64 as boxed copies. A longer
    /// key costs 8 bytes more than a boxed copy would.
    order: Option<BTreeSet<CompactString>>,
    /// Writes (inserts, overwrites, removals) since the last listing.
    changes_since_listing: usize,
    deleted: Tombstones,
    /// Every write with a TTL, soonest expiry first, so expired entries are removed
    /// ([`Namespace::reclaim_expired`]) instead of staying in memory for good. Entries
    /// written again since are skipped by their version.
    expiries: BinaryHeap<Reverse<(Deadline, u64, Box<str>)>>,
    /// The changes since a watcher started following, while one does.
    changes: Option<changes::Followed>,
}

/// The fewest writes without a listing after which the ordered index is dropped.
const LISTING_IDLE_MIN: usize = 4096;

/// Expired entries removed per write at most: more than one, so removal outpaces the writes
/// that add expiring entries, and few, so no write waits long.
const RECLAIMED_PER_WRITE: usize = 4;

/// Tombstones deleted keys live in this many per namespace; older deletions are summarised
/// by [`Tombstones::forgotten_through`]. A swap on a missing key scans at most this many (a
/// few microseconds under the namespace's lock), so a handle older than the namespace's last
/// 4,096 deletions conflicts rather than costing more.
const TOMBSTONES_PER_NAMESPACE: usize = 4_096;

/// Recently deleted keys with the version of their deletion. Absence has a version too: a
/// compare-and-swap that captured a missing key at version `S` must fail if the key was
/// written and deleted since, though it is missing again (S7: no ABA). Bounded: the oldest
/// tombstones are dropped, and a capture older than the newest dropped one conflicts.
///
/// A tombstone is the deletion's version and the key's 64-bit hash, in deletion order: a
/// delete appends one (no allocation, no second map), and a check looks only at the deletions
/// newer than the capture, found by binary search. Two keys sharing a hash can only make a
/// swap conflict, never succeed wrongly.
#[derive(Default)]
struct Tombstones {
    in_order: VecDeque<(u64, u64)>,
    /// The newest deletion no longer remembered.
    forgotten_through: u64,
}

impl Tombstones {
    fn record(&mut self, key_hash: u64, version: u64) {
        if self.in_order.len() == TOMBSTONES_PER_NAMESPACE
            && let Some((oldest, _)) = self.in_order.pop_front()
        {
            self.forgotten_through = self.forgotten_through.max(oldest);
        }
        self.in_order.push_back((version, key_hash));
    }

    /// Whether the key hashing to `key_hash` may have been deleted after version `since`.
    fn deleted_since(&self, key_hash: u64, since: u64) -> bool {
        if self.forgotten_through > since {
            return true;
        }
        let first_newer = self
            .in_order
            .partition_point(|(version, _)| *version <= since);
        self.in_order
            .range(first_newer..)
            .any(|(_, hash)| *hash == key_hash)
    }
}

impl Namespace {
    fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.get_mut(key)
    }

    fn key_hash(&self, key: &str) -> u64 {
        self.entries.hasher().hash_one(key)
    }

    /// Notes a write, for the ordered index: kept only while listings go on, whatever the
    /// writes are (an index nobody lists is memory for nothing).
    fn key_changed(&mut self) {
        if self.order.is_some() {
            self.changes_since_listing += 1;
            if self.changes_since_listing > self.entries.len().max(LISTING_IDLE_MIN) {
                self.order = None;
            }
        }
    }

    /// Stores `entry` at `key`: an existing key is overwritten in place, a new one copied once.
    /// One hash either way.
    fn store(&mut self, key: &str, entry: Entry) {
        let expiry = (entry.expires != NEVER).then_some((entry.expires, entry.version));
        self.log_write(key, &entry.value);
        let hash = self.key_hash(key);
        match self
            .entries
            .raw_entry_mut()
            .from_key_hashed_nocheck(hash, key)
        {
            RawEntryMut::Occupied(mut existing) => {
                *existing.get_mut() = entry;
                self.key_changed();
                self.queue_expiry(expiry, || Box::from(key));
            }
            RawEntryMut::Vacant(vacant) => {
                vacant.insert_hashed_nocheck(hash, Box::from(key), entry);
                self.key_added(key, expiry);
            }
        }
    }

    /// Stores `entry` at `key`, taking the key's allocation for a new one.
    fn store_owned(&mut self, key: String, entry: Entry) {
        let expiry = (entry.expires != NEVER).then_some((entry.expires, entry.version));
        self.log_write(&key, &entry.value);
        let hash = self.key_hash(&key);
        match self
            .entries
            .raw_entry_mut()
            .from_key_hashed_nocheck(hash, key.as_str())
        {
            RawEntryMut::Occupied(mut existing) => {
                *existing.get_mut() = entry;
                self.key_changed();
                self.queue_expiry(expiry, || key.into_boxed_str());
            }
            RawEntryMut::Vacant(vacant) => {
                let key = key.into_boxed_str();
                // A copy only for the ordered index or the expiry queue, when there is one.
                let copy = (self.order.is_some() || expiry.is_some()).then(|| key.clone());
                vacant.insert_hashed_nocheck(hash, key, entry);
                match copy {
                    Some(key) => self.key_added(&key, expiry),
                    None => self.key_changed(),
                }
            }
        }
    }

    /// Logs a write for the watchers, if any follow this namespace: first the expiry of the
    /// entry it replaces, if that entry expired before being reclaimed (its expiry is a change
    /// of its own).
    fn log_write(&mut self, key: &str, value: &[u8]) {
        if let Some(changes::Followed { log, .. }) = &mut self.changes {
            let replaces_expired = self
                .entries
                .get(key)
                .is_some_and(|entry| !entry.is_live(&Now::default()));
            if replaces_expired {
                log.push(Change::Delete {
                    key: key.to_string(),
                });
            }
            log.push(Change::Set {
                key: key.to_string(),
                value: value.to_vec(),
            });
        }
    }

    /// A new key stored: the ordered index and the expiry queue.
    fn key_added(&mut self, key: &str, expiry: Option<(Deadline, u64)>) {
        if let Some(order) = &mut self.order {
            order.insert(CompactString::from(key));
        }
        self.key_changed();
        self.queue_expiry(expiry, || Box::from(key));
    }

    /// Only a write with a TTL pays for the queue (and a copy of its key).
    fn queue_expiry(&mut self, expiry: Option<(Deadline, u64)>, key: impl FnOnce() -> Box<str>) {
        if let Some((at, version)) = expiry {
            self.expiries.push(Reverse((at, version, key())));
        }
    }

    /// Removes up to [`RECLAIMED_PER_WRITE`] entries that have expired, each leaving a
    /// tombstone like a delete (an expired key is missing, and a CAS handle taken before it was
    /// written must see the change). Reads no clock while nothing expires.
    fn reclaim_expired(&mut self, versions: &AtomicU64) {
        self.reclaim_expired_up_to(versions, RECLAIMED_PER_WRITE);
    }

    /// [`Namespace::reclaim_expired`], up to `most` entries.
    fn reclaim_expired_up_to(&mut self, versions: &AtomicU64, most: usize) {
        if self.expiries.is_empty() {
            return;
        }
        // Entries of keys written again stay queued until their own expiry: a key refreshed
        // often with a long TTL would grow the queue without bound. Rebuilt from the entries
        // once it holds twice as many as there are, so it stays proportional to the keys.
        if self.expiries.len() > 2 * self.entries.len() + 1024 {
            self.expiries = self
                .entries
                .iter()
                .filter(|(_, entry)| entry.expires != NEVER)
                .map(|(key, entry)| Reverse((entry.expires, entry.version, key.clone())))
                .collect();
        }
        let now = Now::default();
        for _ in 0..most {
            if self
                .expiries
                .peek()
                .is_none_or(|Reverse((at, _, _))| *at > now.get())
            {
                return;
            }
            let Some(Reverse((at, version, key))) = self.expiries.pop() else {
                return;
            };
            let unchanged = self
                .entries
                .get(&key)
                .is_some_and(|entry| entry.version == version && entry.expires == at);
            if unchanged {
                self.remove(&key, versions);
            }
        }
    }

    /// Removes `key`, leaving a tombstone at a version taken from `versions` under the
    /// namespace's lock, so it is newer than every absence captured before.
    fn remove(&mut self, key: &str, versions: &AtomicU64) {
        let hash = self.key_hash(key);
        if let RawEntryMut::Occupied(entry) = self
            .entries
            .raw_entry_mut()
            .from_key_hashed_nocheck(hash, key)
        {
            entry.remove();
            if let Some(order) = &mut self.order {
                order.remove(key);
            }
            if let Some(changes::Followed { log, .. }) = &mut self.changes {
                log.push(Change::Delete {
                    key: key.to_string(),
                });
            }
            self.key_changed();
            let version = versions.fetch_add(1, Ordering::Relaxed) + 1;
            self.deleted.record(hash, version);
        }
    }

    /// Whether `key` may have been deleted after version `since`.
    fn deleted_since(&self, key: &str, since: u64) -> bool {
        self.deleted.deleted_since(self.key_hash(key), since)
    }

    /// The entries in key order, from `start`; builds the ordered index if there is none.
    fn range<'a>(
        &'a mut self,
        start: Bound<&'a str>,
    ) -> impl Iterator<Item = (&'a Box<str>, &'a Entry)> {
        self.changes_since_listing = 0;
        let entries = &self.entries;
        // Inserted one by one: collecting would first gather every key in a vector to sort,
        // a second copy of the index at the peak.
        let order = self.order.get_or_insert_with(|| {
            let mut order = BTreeSet::new();
            for key in entries.keys() {
                order.insert(CompactString::from(&**key));
            }
            order
        });
        order
            .range::<str, _>((start, Bound::Unbounded))
            .filter_map(|key| entries.get_key_value(key.as_str()))
    }
}

#[derive(Default)]
struct Shared {
    namespaces: Mutex<std::collections::HashMap<String, Arc<Mutex<Namespace>>>>,
    versions: AtomicU64,
    requests: Mutex<RequestLog>,
}

/// What an applied increment or swap returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Incremented(i64),
    Swapped,
}

/// The results of applied increments and swaps, so a retry of an applied call returns its
/// result instead of applying it again: a ring of [`REQUEST_LOG_LEN`] slots indexed by the
/// request's sequence number, so recording and finding are one slot each, with no hashing and
/// no eviction work.
#[derive(Default)]
struct RequestLog {
    /// Empty until the first record.
    slots: Vec<Option<(u128, Applied)>>,
}

/// What an increment or swap leaves in its [`Attempt`] once applied, so that a retry (after a
/// fault layer lost the answer) looks for its record.
const APPLIED: u32 = 0;

/// Slots of the in-memory provider's request log: a retry is recognised until this many
/// more increments and swaps have been issued in the process.
const REQUEST_LOG_LEN: usize = 65_536;

impl RequestLog {
    fn slot(request: RequestId) -> usize {
        request.sequence() as usize % REQUEST_LOG_LEN
    }

    fn record(&mut self, request: RequestId, applied: Applied) {
        if self.slots.is_empty() {
            self.slots.resize(REQUEST_LOG_LEN, None);
        }
        self.slots[Self::slot(request)] = Some((request.value(), applied));
    }

    /// `Some` with the first result if `request` was applied, `None` if it may be applied now,
    /// and, for a retry (`retried`), `outcome unknown` if its slot was taken by a request
    /// issued [`REQUEST_LOG_LEN`] or more later, so whether it applied is no longer known. A
    /// first attempt has applied nothing, however many requests were issued since its id was:
    /// under load, a call preempted between taking its id and running used to fail.
    fn check(&self, request: RequestId, retried: bool) -> Result<Option<Applied>> {
        match self.slots.get(Self::slot(request)) {
            Some(Some((id, applied))) if *id == request.value() => Ok(Some(*applied)),
            Some(Some((id, _))) if retried && (*id as u64) > request.sequence() => {
                Err(KvError::new(
                    crate::ErrorKind::Unavailable,
                    format!(
                        "{OUTCOME_UNKNOWN}: more than {REQUEST_LOG_LEN} increments and swaps were \
                     issued while this one was retried"
                    ),
                ))
            }
            _ => Ok(None),
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
            // In-process: a restarted host starts a new store, so nothing to resume.
            watch: Some(WatchSupport {
                durable: false,
                reports_expiry: true,
                every_value: true,
            }),
            ..Capabilities::default()
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

    fn live<'a>(map: &'a Namespace, key: &str, now: &Now) -> Option<&'a Entry> {
        map.get(key).filter(|entry| entry.is_live(now))
    }

    /// An increment; `retried` when an earlier attempt of the call may have applied it.
    fn increment_once(
        &self,
        key: &str,
        delta: i64,
        range: CounterRange,
        request: RequestId,
        retried: bool,
    ) -> Result<i64> {
        let version = self.next_version();
        let now = Now::default();
        let mut map = lock(&self.map)?;
        // Increments re-queue a key with a TTL: the queue is kept bounded here as on writes.
        map.reclaim_expired(&self.shared.versions);
        let mut requests = lock(&self.shared.requests)?;
        match requests.check(request, retried)? {
            Some(Applied::Incremented(total)) => return Ok(total),
            Some(Applied::Swapped) => {
                return Err(KvError::internal("a swap's request id was reused"));
            }
            None => {}
        }
        // One lookup: a live counter is updated in place (its TTL kept).
        let next = match map.get_mut(key).filter(|entry| entry.is_live(&now)) {
            Some(entry) => {
                let next = add_delta_within(parse_counter(&entry.value)?, delta, range)?;
                entry.value = encode_counter(next).into();
                entry.version = version;
                let expires = entry.expires;
                if expires != NEVER {
                    // Queued again under its new version, or it would never be reclaimed.
                    map.expiries
                        .push(Reverse((expires, version, Box::from(key))));
                }
                map.log_write(key, &encode_counter(next));
                next
            }
            None => {
                let next = add_delta_within(0, delta, range)?;
                let entry = Entry::new(encode_counter(next).into(), version, NEVER);
                map.store(key, entry);
                next
            }
        };
        requests.record(request, Applied::Incremented(next));
        Ok(next)
    }

    fn write(&self, key: &str, value: Bytes, expires: Deadline) -> Result<()> {
        let entry = Entry::new(value, self.next_version(), expires);
        let mut map = lock(&self.map)?;
        map.reclaim_expired(&self.shared.versions);
        map.store(key, entry);
        Ok(())
    }
}

/// Every operation of the in-memory provider completes at once: the host calls these directly.
impl ImmediateBucket for MemoryBucket {
    fn get_now(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let map = lock(&self.map)?;
        Ok(Self::live(&map, key, &Now::default()).map(|entry| entry.value.to_vec()))
    }

    fn exists_now(&self, key: &str) -> Result<bool> {
        let map = lock(&self.map)?;
        Ok(Self::live(&map, key, &Now::default()).is_some())
    }

    fn set_now(&self, key: &str, value: Bytes) -> Result<()> {
        self.write(key, value, NEVER)
    }

    fn set_owned_now(&self, key: String, value: Vec<u8>) -> Result<()> {
        let entry = Entry {
            value: value.into_boxed_slice(),
            version: self.next_version(),
            expires: NEVER,
        };
        let mut map = lock(&self.map)?;
        map.reclaim_expired(&self.shared.versions);
        map.store_owned(key, entry);
        Ok(())
    }

    fn delete_now(&self, key: &str) -> Result<()> {
        lock(&self.map)?.remove(key, &self.shared.versions);
        Ok(())
    }

    fn increment_now(
        &self,
        key: &str,
        delta: i64,
        range: CounterRange,
        request: RequestId,
    ) -> Result<i64> {
        self.increment_once(key, delta, range, request, false)
    }

    fn get_many_within_now(
        &self,
        keys: &[String],
        max_bytes: usize,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let now = Now::default();
        let map = lock(&self.map)?;
        let found: Vec<Option<&Entry>> =
            keys.iter().map(|key| Self::live(&map, key, &now)).collect();
        // Sizes first: nothing is copied for a batch over the limit.
        let total: usize = found.iter().flatten().map(|entry| entry.value.len()).sum();
        if total > max_bytes {
            return Err(crate::provider::batch_bytes_exceeded(max_bytes));
        }
        Ok(found
            .into_iter()
            .map(|entry| entry.map(|entry| entry.value.to_vec()))
            .collect())
    }

    fn set_many_now(&self, entries: Vec<(String, Bytes)>) -> Result<()> {
        let mut map = lock(&self.map)?;
        map.reclaim_expired(&self.shared.versions);
        for (key, value) in entries {
            let entry = Entry::new(value, self.next_version(), NEVER);
            map.store_owned(key, entry);
        }
        Ok(())
    }
}

#[async_trait]
impl Bucket for MemoryBucket {
    fn immediate(&self) -> Option<&dyn ImmediateBucket> {
        Some(self)
    }

    fn change_feed(&self) -> Option<Arc<dyn ChangeFeed>> {
        let feed = changes::MemoryFeed::follow(self.map.clone(), self.shared.clone()).ok()?;
        Some(Arc::new(feed))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.get_now(key)
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<()> {
        self.set_now(key, value)
    }

    async fn set_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()> {
        self.write(key, value, deadline_after(ttl))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.delete_now(key)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.exists_now(key)
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<StoredValue>> {
        let now = Now::default();
        let map = lock(&self.map)?;
        Ok(Self::live(&map, key, &now).map(|entry| StoredValue {
            value: entry.value.to_vec(),
            ttl: (entry.expires != NEVER)
                .then(|| Duration::from_nanos(entry.expires.saturating_sub(now.get()))),
        }))
    }

    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage> {
        let now = Now::default();
        let mut map = lock(&self.map)?;
        let start = match cursor {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let mut live = map
            .range(start)
            .filter(|(_, entry)| entry.is_live(&now))
            .map(|(key, _)| key);
        let keys: Vec<String> = live
            .by_ref()
            .take(limit)
            .map(|key| key.to_string())
            .collect();
        let more = live.next().is_some();
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }

    async fn increment(
        &self,
        key: &str,
        delta: i64,
        range: CounterRange,
        attempt: &mut Attempt,
    ) -> Result<i64> {
        let retried = attempt.attempted_base().is_some();
        let total = self.increment_once(key, delta, range, attempt.request(), retried)?;
        // Applied: should the answer be lost on its way (a fault layer), the retry must find it.
        attempt.set_attempted_base(Some(APPLIED));
        Ok(total)
    }

    /// A stored entry's version is its own, expired or not (an expired entry is missing to
    /// the guest, but replacing it is a change like any other). A missing key's version is
    /// `a<S>`: the store's version counter when absence was seen, read under the namespace's
    /// lock, so every later deletion of the key has a newer tombstone.
    async fn read_versioned(&self, key: &str) -> Result<Versioned> {
        let map = lock(&self.map)?;
        let now = Now::default();
        Ok(match map.get(key) {
            Some(entry) => Versioned {
                value: entry.is_live(&now).then(|| entry.value.to_vec()),
                version: Version::Tag(entry.version.to_string()),
            },
            None => Versioned {
                value: None,
                version: Version::Tag(format!(
                    "{ABSENT_SINCE}{}",
                    self.shared.versions.load(Ordering::Relaxed)
                )),
            },
        })
    }

    async fn swap(
        &self,
        key: &str,
        expected: &Version,
        value: Bytes,
        attempt: &mut Attempt,
    ) -> Result<SwapOutcome> {
        let request = attempt.request();
        let version = self.next_version();
        let mut map = lock(&self.map)?;
        let mut requests = lock(&self.shared.requests)?;
        match requests.check(request, attempt.attempted_base().is_some())? {
            Some(Applied::Swapped) => return Ok(SwapOutcome::Swapped),
            Some(Applied::Incremented(_)) => {
                return Err(KvError::internal("an increment's request id was reused"));
            }
            None => {}
        }
        let unchanged = match (expected, map.get(key)) {
            // Absence seen at version `since`: still no entry, and none deleted since.
            (Version::Tag(tag), None) => match tag.strip_prefix(ABSENT_SINCE) {
                Some(since) => since
                    .parse()
                    .is_ok_and(|since| !map.deleted_since(key, since)),
                None => false,
            },
            (Version::Tag(tag), Some(entry)) => *tag == entry.version.to_string(),
            // A version from no read (an embedder's "insert if missing"): no live entry.
            (Version::Absent, entry) => entry.is_none_or(|entry| !entry.is_live(&Now::default())),
        };
        if !unchanged {
            return Ok(SwapOutcome::Conflict);
        }
        map.store(key, Entry::new(value, version, NEVER));
        requests.record(request, Applied::Swapped);
        attempt.set_attempted_base(Some(APPLIED));
        Ok(SwapOutcome::Swapped)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let now = Now::default();
        let map = lock(&self.map)?;
        Ok(keys
            .iter()
            .map(|key| Self::live(&map, key, &now).map(|entry| entry.value.to_vec()))
            .collect())
    }

    async fn get_many_within(
        &self,
        keys: &[String],
        max_bytes: usize,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        self.get_many_within_now(keys, max_bytes)
    }

    async fn set_many(&self, entries: &[(String, Bytes)]) -> Result<()> {
        self.set_many_now(entries.to_vec())
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        let mut map = lock(&self.map)?;
        for key in keys {
            map.remove(key, &self.shared.versions);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call whose id was issued before more than [`REQUEST_LOG_LEN`] others (preempted
    /// between taking its id and running, as 16 writers on 2 cores did in the hot-key bench)
    /// has applied nothing on its first attempt: it applies. Before, it failed with
    /// `outcome unknown`. A retry of an applied call that was forgotten still does. The ids
    /// are chosen: tests running beside this one take ids of the process's sequence too, and
    /// one taking the forgotten call's slot number left it remembered.
    #[tokio::test]
    async fn a_first_attempt_applies_however_late_it_runs() {
        let bucket = MemoryProvider::default().open("ns").await.unwrap();
        let mut late = Attempt::of(RequestId::with_sequence(5));
        let mut forgotten = Attempt::of(RequestId::with_sequence(1_000));
        bucket
            .increment("k", 1, CounterRange::Signed, &mut forgotten)
            .await
            .unwrap();
        for sequence in 1_001..=1_000 + REQUEST_LOG_LEN as u64 {
            bucket
                .increment(
                    "other",
                    1,
                    CounterRange::Signed,
                    &mut Attempt::of(RequestId::with_sequence(sequence)),
                )
                .await
                .unwrap();
        }
        let total = bucket
            .increment("k", 1, CounterRange::Signed, &mut late)
            .await;
        assert_eq!(total.unwrap(), 2);
        let err = bucket
            .increment("k", 1, CounterRange::Signed, &mut forgotten)
            .await
            .unwrap_err();
        assert!(err.message().starts_with(OUTCOME_UNKNOWN), "{err}");
    }

    #[test]
    fn request_log_finds_applied_requests_and_admits_forgetting() {
        let mut log = RequestLog::default();
        let first = RequestId::new();
        assert!(
            matches!(log.check(first, true), Ok(None)),
            "nothing recorded yet"
        );
        log.record(first, Applied::Incremented(7));
        assert!(matches!(
            log.check(first, true),
            Ok(Some(Applied::Incremented(7)))
        ));
        // Requests issued after it (other tests issue some in between) do not disturb it
        // until one lands in its slot, REQUEST_LOG_LEN sequence numbers later.
        let collider = loop {
            let request = RequestId::new();
            if RequestLog::slot(request) == RequestLog::slot(first) {
                break request;
            }
            assert!(matches!(log.check(request, true), Ok(None)));
            log.record(request, Applied::Swapped);
        };
        assert!(matches!(
            log.check(first, true),
            Ok(Some(Applied::Incremented(7)))
        ));
        log.record(collider, Applied::Swapped);
        let err = log.check(first, true).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unavailable);
        assert!(err.message().starts_with("outcome unknown"), "{err}");
        // A request that never applied, older than its slot's occupant, is just as unknown;
        // one newer than the occupant may apply.
        let newer = (0..REQUEST_LOG_LEN)
            .map(|_| RequestId::new())
            .find(|request| RequestLog::slot(*request) == RequestLog::slot(first))
            .unwrap();
        assert!(matches!(log.check(newer, true), Ok(None)));
    }

    async fn swap_v(bucket: &Arc<dyn Bucket>, key: &str, version: &Version) -> SwapOutcome {
        let value = Bytes::from_static(b"v");
        bucket
            .swap(key, version, value, &mut Attempt::new())
            .await
            .unwrap()
    }

    /// What `export` and `copy` read: the value with the time it has left, none without a
    /// TTL, and an expired key missing.
    #[tokio::test]
    async fn get_with_ttl_reports_the_time_left() {
        let bucket = MemoryProvider::new().open("ns").await.unwrap();
        bucket.set("plain", Bytes::from_static(b"p")).await.unwrap();
        let hour = Duration::from_secs(3600);
        bucket
            .set_with_ttl("timed", Bytes::from_static(b"t"), hour)
            .await
            .unwrap();
        bucket
            .set_with_ttl("gone", Bytes::from_static(b"g"), Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let plain = bucket.get_with_ttl("plain").await.unwrap().unwrap();
        assert_eq!((plain.value.as_slice(), plain.ttl), (&b"p"[..], None));
        let timed = bucket.get_with_ttl("timed").await.unwrap().unwrap();
        let left = timed.ttl.unwrap();
        assert!(
            left <= hour && left > hour - Duration::from_secs(5),
            "{left:?}"
        );
        assert_eq!(bucket.get_with_ttl("gone").await.unwrap(), None);
        assert_eq!(bucket.get_with_ttl("never").await.unwrap(), None);
    }

    /// S7 without ABA from absence: a handle captured on a missing key fails to swap once
    /// the key was written and deleted, though it is missing again; without that, it swaps.
    #[tokio::test]
    async fn absence_has_a_version() {
        let bucket = MemoryProvider::new().open("ns").await.unwrap();
        let missing = bucket.read_versioned("k").await.unwrap();
        bucket.set("k", Bytes::from_static(b"x")).await.unwrap();
        bucket.delete("k").await.unwrap();
        let outcome = swap_v(&bucket, "k", &missing.version).await;
        assert_eq!(outcome, SwapOutcome::Conflict);
        assert_eq!(bucket.get("k").await.unwrap(), None);
        // Deleting other keys, or deleting a missing key, changes nothing for it.
        let missing = bucket.read_versioned("k").await.unwrap();
        bucket.set("other", Bytes::from_static(b"x")).await.unwrap();
        bucket.delete("other").await.unwrap();
        bucket.delete("k").await.unwrap();
        let outcome = swap_v(&bucket, "k", &missing.version).await;
        assert_eq!(outcome, SwapOutcome::Swapped);
        // An expired entry is missing to the guest but replaced under its own version: a
        // write in between is a change.
        bucket
            .set_with_ttl("t", Bytes::from_static(b"x"), Duration::from_millis(1))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let expired = bucket.read_versioned("t").await.unwrap();
        assert_eq!(expired.value, None);
        bucket
            .set_with_ttl("t", Bytes::from_static(b"y"), Duration::from_millis(1))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let outcome = swap_v(&bucket, "t", &expired.version).await;
        assert_eq!(outcome, SwapOutcome::Conflict);
        // A capture older than the forgotten tombstones conflicts rather than guess.
        let missing = bucket.read_versioned("old").await.unwrap();
        for i in 0..=TOMBSTONES_PER_NAMESPACE {
            let key = format!("churn{i}");
            bucket.set(&key, Bytes::from_static(b"x")).await.unwrap();
            bucket.delete(&key).await.unwrap();
        }
        let outcome = swap_v(&bucket, "old", &missing.version).await;
        assert_eq!(outcome, SwapOutcome::Conflict);
    }

    /// The ordered index for listing exists only while a namespace is being listed: inserts
    /// alone build none, a listing builds it and keeps it exact between pages, and writes
    /// with no listing drop it.
    #[tokio::test]
    async fn the_ordered_index_lives_only_while_listings_go_on() {
        let provider = MemoryProvider::new();
        let bucket = provider.open("ns").await.unwrap();
        let map = provider.shared.namespaces.lock().unwrap()["ns"].clone();
        let indexed = || map.lock().unwrap().order.as_ref().map(BTreeSet::len);
        for i in 0..100 {
            bucket
                .set(&format!("k{i:03}"), Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
        assert_eq!(indexed(), None, "inserts alone build no index");
        let page = bucket.list_keys(None, 10).await.unwrap();
        assert_eq!(page.keys.first().map(String::as_str), Some("k000"));
        assert_eq!(indexed(), Some(100));
        // Kept up to date between pages: a key added after the cursor is listed, a removed one
        // is not, and every key present throughout comes exactly once.
        bucket.set("k0995", Bytes::from_static(b"x")).await.unwrap();
        bucket.delete("k050").await.unwrap();
        let mut listed = page.keys;
        let mut cursor = page.cursor;
        while let Some(after) = cursor {
            let page = bucket.list_keys(Some(&after), 10).await.unwrap();
            listed.extend(page.keys);
            cursor = page.cursor;
        }
        let mut expected: Vec<String> = (0..100)
            .filter(|i| *i != 50)
            .map(|i| format!("k{i:03}"))
            .chain(["k0995".to_string()])
            .collect();
        expected.sort();
        assert_eq!(listed, expected);
        // Dropped after more writes than the namespace holds keys (at least LISTING_IDLE_MIN)
        // with no listing, and rebuilt whole by the next one.
        for i in 0..=LISTING_IDLE_MIN {
            let key = format!("churn{i}");
            bucket.set(&key, Bytes::from_static(b"x")).await.unwrap();
            bucket.delete(&key).await.unwrap();
        }
        assert_eq!(indexed(), None);
        let page = bucket.list_keys(None, 1000).await.unwrap();
        assert_eq!(page.keys, expected);
        assert_eq!(indexed(), Some(100));
    }

    /// Expired entries leave memory: 10,000 keys written with a 1 ms TTL are gone after as
    /// many later writes, each expiry leaving a tombstone (a handle taken before the key was
    /// written still conflicts). Before, they stayed for good.
    #[tokio::test]
    async fn expired_entries_are_reclaimed_by_later_writes() {
        let provider = MemoryProvider::new();
        let bucket = provider.open("ns").await.unwrap();
        let before = bucket.read_versioned("k0").await.unwrap();
        for i in 0..10_000 {
            let key = format!("k{i}");
            bucket
                .set_with_ttl(&key, Bytes::from_static(b"x"), Duration::from_millis(1))
                .await
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
        for i in 0..2_500 {
            bucket
                .set(&format!("other{}", i % 10), Bytes::from_static(b"y"))
                .await
                .unwrap();
        }
        let map = provider.shared.namespaces.lock().unwrap()["ns"].clone();
        let (entries, order, queued) = {
            let map = map.lock().unwrap();
            let order = map.order.as_ref().map(BTreeSet::len);
            (map.entries.len(), order, map.expiries.len())
        };
        // Never listed: no ordered index.
        assert_eq!((entries, order, queued), (10, None, 0));
        let outcome = swap_v(&bucket, "k0", &before.version).await;
        assert_eq!(outcome, SwapOutcome::Conflict);
        // An entry written again keeps its new expiry, not the first one's.
        bucket
            .set_with_ttl("kept", Bytes::from_static(b"1"), Duration::from_millis(1))
            .await
            .unwrap();
        bucket
            .set_with_ttl("kept", Bytes::from_static(b"2"), Duration::from_secs(60))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        bucket.set("x", Bytes::from_static(b"z")).await.unwrap();
        assert_eq!(
            bucket.get("kept").await.unwrap().as_deref(),
            Some(&b"2"[..])
        );
    }

    /// The expiry queue stays proportional to the keys when one key is refreshed again and
    /// again with a long TTL, and a counter that keeps its TTL through increments is reclaimed
    /// once it expires.
    #[tokio::test]
    async fn the_expiry_queue_stays_bounded_and_counters_expire() {
        let provider = MemoryProvider::new();
        let bucket = provider.open("ns").await.unwrap();
        for _ in 0..20_000 {
            bucket
                .set_with_ttl(
                    "session",
                    Bytes::from_static(b"s"),
                    Duration::from_secs(3600),
                )
                .await
                .unwrap();
        }
        bucket
            .set_with_ttl("hits", Bytes::from_static(b"0"), Duration::from_millis(2))
            .await
            .unwrap();
        for _ in 0..3 {
            bucket
                .increment("hits", 1, CounterRange::Signed, &mut Attempt::new())
                .await
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
        for _ in 0..10 {
            bucket.set("other", Bytes::from_static(b"y")).await.unwrap();
        }
        let map = provider.shared.namespaces.lock().unwrap()["ns"].clone();
        {
            let map = map.lock().unwrap();
            assert!(
                map.expiries.len() <= 2 * map.entries.len() + 1024 + 1,
                "{}",
                map.expiries.len()
            );
            assert!(
                !map.entries.contains_key("hits"),
                "an expired counter stayed in memory"
            );
        }
        // Increments alone, with no other write, keep the queue bounded too.
        bucket
            .set_with_ttl("ticks", Bytes::from_static(b"0"), Duration::from_secs(3600))
            .await
            .unwrap();
        for _ in 0..10_000 {
            bucket
                .increment("ticks", 1, CounterRange::Signed, &mut Attempt::new())
                .await
                .unwrap();
        }
        let queued = map.lock().unwrap().expiries.len();
        assert!(
            queued <= 2 * 3 + 1024 + 1,
            "{queued} queued after increments"
        );
    }

    #[tokio::test]
    async fn increment_retried_with_its_request_applies_once() {
        let bucket = MemoryProvider::new().open("ns").await.unwrap();
        let mut request = Attempt::new();
        assert_eq!(
            bucket
                .increment("n", 5, CounterRange::Signed, &mut request)
                .await
                .unwrap(),
            5
        );
        assert_eq!(
            bucket
                .increment("n", 5, CounterRange::Signed, &mut request)
                .await
                .unwrap(),
            5
        );
        assert_eq!(
            bucket
                .increment("n", 1, CounterRange::Signed, &mut Attempt::new())
                .await
                .unwrap(),
            6
        );
        assert_eq!(bucket.get("n").await.unwrap(), Some(b"6".to_vec()));
    }
}
