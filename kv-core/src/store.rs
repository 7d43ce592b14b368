//! The checked store: what a guest's `bucket` handle calls.
//!
//! [`KvStore`] wraps a provider's [`Bucket`] with everything that must hold whatever the
//! backend. It validates here: key and value limits (S1, S2), access mode (S10), batch bounds;
//! and it composes what lives in modules of its own: opaque cursors bound to their store (S5,
//! [`crate::cursor`]), per-operation timeouts and retries of transient errors (S12,
//! `retry.rs`), and logging of the full cause chain (S11, `logging.rs`). Providers never see
//! invalid input.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::capabilities::Capabilities;
use crate::counter::CounterRange;
pub use crate::cursor::CursorSecret;
use crate::cursor::CursorSigner;
use crate::error::{ErrorKind, KvError, Result};
use crate::limits::{Limits, MAX_KEY_BYTES, MAX_LIST_PAGE, MAX_TTL_MS};
use crate::logging::CallLog;
use crate::observe::Observer;
use crate::provider::{
    Attempt, Bucket, Bytes, ImmediateBucket, KeyPage, RequestId, StoredValue, SwapOutcome, Version,
    Versioned,
};
pub use crate::retry::OUTCOME_UNKNOWN;
use crate::retry::{EachTime, Increment, Parts, Retry, Swap};

/// What a component may do with a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Reads and writes.
    #[default]
    ReadWrite,
    /// Reads only; every write is `access-denied`.
    ReadOnly,
    /// Configured, but `open` is `access-denied`.
    Denied,
}

impl Access {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ReadWrite => "read-write",
            Access::ReadOnly => "read-only",
            Access::Denied => "none",
        }
    }

    /// Parses the configuration spelling.
    pub fn parse(text: &str) -> Option<Access> {
        match text {
            "read-write" => Some(Access::ReadWrite),
            "read-only" => Some(Access::ReadOnly),
            "none" => Some(Access::Denied),
            _ => None,
        }
    }
}

struct Inner {
    name: String,
    namespace: String,
    provider: String,
    bucket: Arc<dyn Bucket>,
    capabilities: Capabilities,
    access: Access,
    limits: Limits,
    cursors: CursorSigner,
    retry: Retry,
}

/// An open, checked handle to one configured store. Cheap to clone.
#[derive(Clone)]
pub struct KvStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("name", &self.inner.name)
            .field("provider", &self.inner.provider)
            .field("namespace", &self.inner.namespace)
            .field("access", &self.inner.access)
            .finish()
    }
}

/// Everything [`KvStore::new`] needs besides the bucket.
pub struct KvStoreParts {
    /// The store identifier the guest opened.
    pub name: String,
    /// The namespace inside the backend.
    pub namespace: String,
    /// The provider name, for logs.
    pub provider: String,
    /// The provider's capabilities.
    pub capabilities: Capabilities,
    /// Read-write or read-only ([`Access::Denied`] stores are never opened).
    pub access: Access,
    /// Host limits.
    pub limits: Limits,
    /// Who watches this store's operations, if anyone.
    pub observer: Option<Arc<dyn Observer>>,
}

impl KvStore {
    /// A checked store over `bucket`, with a fresh cursor secret.
    pub fn new(parts: KvStoreParts, bucket: Arc<dyn Bucket>) -> Self {
        Self::with_signer(parts, bucket, CursorSigner::random())
    }

    pub(crate) fn with_signer(
        parts: KvStoreParts,
        bucket: Arc<dyn Bucket>,
        cursors: CursorSigner,
    ) -> Self {
        let limits = parts.limits.effective();
        let retry = Retry::new(
            limits.retry.clone(),
            limits.operation_timeout,
            CallLog::new(&parts.name, &parts.provider, parts.observer),
        );
        KvStore {
            inner: Arc::new(Inner {
                name: parts.name,
                namespace: parts.namespace,
                provider: parts.provider,
                bucket,
                capabilities: parts.capabilities,
                access: parts.access,
                limits,
                cursors,
                retry,
            }),
        }
    }

    /// The store identifier.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The provider's capabilities.
    pub fn capabilities(&self) -> &Capabilities {
        &self.inner.capabilities
    }

    /// The provider's name.
    pub fn provider(&self) -> &str {
        &self.inner.provider
    }

    /// This store's changes (`wasi-kv watch`), or `None` with the reason: the provider
    /// reports none. Reading changes is reading the store, so any open store may be watched.
    pub fn change_feed(&self) -> std::result::Result<Arc<dyn crate::watch::ChangeFeed>, String> {
        if self.inner.capabilities.watch.is_none() {
            return Err(format!(
                "store {:?}: the {} provider reports no changes",
                self.inner.name, self.inner.provider
            ));
        }
        self.inner.bucket.change_feed().ok_or_else(|| {
            format!(
                "store {:?}: the {} provider could not start following its changes",
                self.inner.name, self.inner.provider
            )
        })
    }

    /// The largest value this store accepts: the smaller of the host and provider limits.
    pub fn max_value_bytes(&self) -> usize {
        self.inner
            .limits
            .max_value_bytes
            .min(self.inner.capabilities.max_value_bytes)
    }

    /// Reads `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.checked("get", || check_key(key))?;
        let read = match self.now("get", key, |bucket, key| bucket.get_now(key)) {
            Ok(done) => done,
            Err(key) => self.call("get", || self.inner.bucket.get(key)).await,
        };
        if let Ok(Some(value)) = &read {
            self.moved("get", 1, value.len(), false);
        }
        read
    }

    /// Writes `key`, clearing any TTL.
    pub async fn set(&self, key: &str, value: impl Into<Bytes>) -> Result<()> {
        let value = value.into();
        self.check_set(key, &value)?;
        let len = value.len();
        let value = match self.now("set", value, |bucket, value| bucket.set_now(key, value)) {
            Ok(done) => return done.inspect(|()| self.moved("set", 1, len, true)),
            Err(value) => value,
        };
        self.write("set", || self.inner.bucket.set(key, value.clone()))
            .await
            .inspect(|()| self.moved("set", 1, len, true))
    }

    /// [`KvStore::set`] with a key the caller gives up (a guest's): a store that keeps keys in
    /// memory takes it without a copy.
    pub async fn set_owned(&self, key: String, value: Vec<u8>) -> Result<()> {
        self.check_set(&key, &value)?;
        let len = value.len();
        let (key, value) = match self.now("set", (key, value), |bucket, (key, value)| {
            bucket.set_owned_now(key, value)
        }) {
            Ok(done) => return done.inspect(|()| self.moved("set", 1, len, true)),
            Err(input) => input,
        };
        let value = Bytes::from(value);
        self.write("set", || self.inner.bucket.set(&key, value.clone()))
            .await
            .inspect(|()| self.moved("set", 1, len, true))
    }

    /// Writes `key` expiring after `ttl_ms` milliseconds.
    pub async fn set_with_ttl(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        ttl_ms: u64,
    ) -> Result<()> {
        let value = value.into();
        self.checked("set-with-ttl", || {
            self.check_write()?;
            check_key(key)?;
            self.check_value(&value)?;
            if !self.inner.capabilities.ttl {
                return Err(KvError::internal(format!(
                    "the {} provider does not support TTL",
                    self.inner.provider
                )));
            }
            if ttl_ms == 0 || ttl_ms > MAX_TTL_MS {
                return Err(KvError::new(
                    ErrorKind::InvalidTtl,
                    format!("ttl-ms must be between 1 and {MAX_TTL_MS}, got {ttl_ms}"),
                ));
            }
            Ok(())
        })?;
        let ttl = Duration::from_millis(ttl_ms);
        self.write("set-with-ttl", || {
            self.inner.bucket.set_with_ttl(key, value.clone(), ttl)
        })
        .await
        .inspect(|()| self.moved("set-with-ttl", 1, value.len(), true))
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.checked("delete", || {
            self.check_write()?;
            check_key(key)
        })?;
        if let Ok(done) = self.now("delete", key, |bucket, key| bucket.delete_now(key)) {
            return done;
        }
        self.write("delete", || self.inner.bucket.delete(key)).await
    }

    /// Reads `key` with the time it has left, for tools that export or copy a store with its
    /// TTLs.
    pub async fn get_with_ttl(&self, key: &str) -> Result<Option<StoredValue>> {
        self.checked("get-with-ttl", || check_key(key))?;
        self.call("get-with-ttl", || self.inner.bucket.get_with_ttl(key))
            .await
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        self.checked("exists", || check_key(key))?;
        if let Ok(done) = self.now("exists", key, |bucket, key| bucket.exists_now(key)) {
            return done;
        }
        self.call("exists", || self.inner.bucket.exists(key)).await
    }

    /// One page of keys; the returned cursor is opaque and only valid for this store.
    pub async fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage> {
        let scope = self.cursor_scope();
        let mut provider_cursor = None;
        self.checked("list-keys", || {
            provider_cursor = cursor
                .map(|sealed| self.inner.cursors.open(&scope, sealed))
                .transpose()?;
            Ok(())
        })?;
        let limit = self.inner.limits.list_page_size.clamp(1, MAX_LIST_PAGE);
        let page = self
            .call("list-keys", || {
                self.inner
                    .bucket
                    .list_keys(provider_cursor.as_deref(), limit)
            })
            .await?;
        if page.keys.len() > MAX_LIST_PAGE {
            return Err(KvError::internal(format!(
                "the provider returned {} keys in one page",
                page.keys.len()
            )));
        }
        Ok(KeyPage {
            keys: page.keys,
            cursor: page
                .cursor
                .map(|cursor| self.inner.cursors.seal(&scope, &cursor)),
        })
    }

    /// Adds `delta` to the counter at `key`.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        self.increment_within(key, delta, CounterRange::Signed)
            .await
    }

    /// Adds `delta` to the counter at `key` for the u64 interface of
    /// `wasi:keyvalue@0.2.0-draft`: a total that is negative (the stored counter was below
    /// `-delta`) or beyond i64 is `overflow`, and the value stays unchanged.
    pub async fn increment_unsigned(&self, key: &str, delta: u64) -> Result<u64> {
        let mut signed = 0;
        self.checked("increment", || {
            self.check_write()?;
            check_key(key)?;
            signed = i64::try_from(delta).map_err(|_| {
                KvError::overflow(format!(
                    "delta {delta} does not fit the signed 64-bit counter"
                ))
            })?;
            Ok(())
        })?;
        let delta = signed;
        let total = self
            .increment_within(key, delta, CounterRange::Unsigned)
            .await?;
        u64::try_from(total)
            .map_err(|_| KvError::internal(format!("an unsigned increment returned {total}")))
    }

    async fn increment_within(&self, key: &str, delta: i64, range: CounterRange) -> Result<i64> {
        self.checked("increment", || {
            self.check_write()?;
            check_key(key)
        })?;
        let immediate = self.now("increment", key, |bucket, key| {
            bucket.increment_now(key, delta, range, RequestId::new())
        });
        if let Ok(done) = immediate {
            return done;
        }
        // One attempt state for every attempt: a retry after a lost reply cannot apply twice.
        let increment = Increment {
            bucket: &*self.inner.bucket,
            key,
            delta,
            range,
            attempt: Attempt::new(),
        };
        self.inner.retry.run("increment", increment).await
    }

    /// Reads `key` with its version, for compare-and-swap.
    pub async fn read_versioned(&self, key: &str) -> Result<Versioned> {
        self.checked("cas-read", || {
            check_key(key)?;
            self.check_cas()
        })?;
        self.call("cas-read", || self.inner.bucket.read_versioned(key))
            .await
    }

    /// Writes `value` if `key` is still at `expected`.
    pub async fn swap(
        &self,
        key: &str,
        expected: &Version,
        value: impl Into<Bytes>,
    ) -> Result<SwapOutcome> {
        let value = value.into();
        self.checked("swap", || {
            self.check_write()?;
            check_key(key)?;
            self.check_value(&value)?;
            self.check_cas()
        })?;
        // One attempt state for every attempt: a retry after a lost reply reports the swap,
        // not a conflict with itself.
        let swap = Swap {
            bucket: &*self.inner.bucket,
            key,
            expected,
            value,
            attempt: Attempt::new(),
        };
        self.inner.retry.run("swap", swap).await
    }

    /// Reads many keys, in order, duplicates included. Each distinct key is read once, in
    /// rounds of [`GET_MANY_ROUND`] keys; the values are charged against
    /// `limits.max_batch_bytes` as each round arrives, and the call stops with
    /// `batch-too-large` at the limit (duplicates are charged each time they are returned).
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let parts = Parts::default();
        self.reported("get-many", &parts, self.get_many_in_rounds(keys, &parts))
            .await
    }

    async fn get_many_in_rounds(
        &self,
        keys: &[String],
        parts: &Parts,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        self.check_batch(keys.len())?;
        keys.iter().try_for_each(|key| check_key(key))?;
        // Each key's index among the distinct keys, and how many times it was asked for.
        let mut index_of: HashMap<&str, usize> = HashMap::with_capacity(keys.len());
        let positions: Vec<usize> = keys
            .iter()
            .map(|key| {
                let next = index_of.len();
                *index_of.entry(key.as_str()).or_insert(next)
            })
            .collect();
        let distinct: std::borrow::Cow<'_, [String]> = if index_of.len() == keys.len() {
            std::borrow::Cow::Borrowed(keys)
        } else {
            let mut distinct = vec![String::new(); index_of.len()];
            for (key, &position) in keys.iter().zip(&positions) {
                if distinct[position].is_empty() {
                    distinct[position] = key.clone();
                }
            }
            std::borrow::Cow::Owned(distinct)
        };
        let mut copies = vec![0usize; distinct.len()];
        for &position in &positions {
            copies[position] += 1;
        }
        // What each distinct key costs when returned: its size times its copies.
        let max_bytes = self.inner.limits.max_batch_bytes;
        let mut charged = 0usize;
        let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(distinct.len());
        for (round, keys) in distinct.chunks(GET_MANY_ROUND).enumerate() {
            let budget = max_bytes.saturating_sub(charged);
            let immediate = self.now_part("get-many", keys, parts, |bucket, keys| {
                bucket.get_many_within_now(keys, budget)
            });
            let part = match immediate {
                Ok(done) => done?,
                Err(keys) => {
                    let read = EachTime::read(|| self.inner.bucket.get_many_within(keys, budget));
                    self.inner.retry.run_part("get-many", read, parts).await?
                }
            };
            if part.len() != keys.len() {
                return Err(KvError::internal(format!(
                    "the provider returned {} values for {} keys",
                    part.len(),
                    keys.len()
                )));
            }
            let first = round * GET_MANY_ROUND;
            for (offset, value) in part.iter().enumerate() {
                let size = value.as_ref().map_or(0, Vec::len);
                charged = charged.saturating_add(size.saturating_mul(copies[first + offset]));
            }
            if charged > max_bytes {
                return Err(crate::provider::batch_bytes_exceeded(max_bytes));
            }
            values.extend(part);
        }
        self.moved("get-many", keys.len(), charged, false);
        if let std::borrow::Cow::Borrowed(_) = distinct {
            return Ok(values);
        }
        // A value asked for more than once is copied for all but its last position.
        Ok(positions
            .into_iter()
            .map(|position| {
                copies[position] -= 1;
                if copies[position] == 0 {
                    values[position].take()
                } else {
                    values[position].clone()
                }
            })
            .collect())
    }

    /// Writes many entries; nothing is written if any key or value is invalid, or if the
    /// values add up to more than `limits.max_batch_bytes`.
    pub async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<()> {
        let parts = Parts::default();
        self.reported("set-many", &parts, self.set_many_in_parts(entries, &parts))
            .await
    }

    async fn set_many_in_parts(
        &self,
        entries: Vec<(String, Vec<u8>)>,
        parts: &Parts,
    ) -> Result<()> {
        let entries: Vec<(String, Bytes)> = entries
            .into_iter()
            .map(|(key, value)| (key, Bytes::from(value)))
            .collect();
        self.check_write()?;
        self.check_batch(entries.len())?;
        for (key, value) in &entries {
            check_key(key)?;
            self.check_value(value)?;
        }
        let total: usize = entries.iter().map(|(_, value)| value.len()).sum();
        let max_bytes = self.inner.limits.max_batch_bytes;
        if total > max_bytes {
            return Err(crate::provider::batch_bytes_exceeded(max_bytes));
        }
        // In order, one call per part: a later part's entry for a key also in an earlier part
        // still lands last, so the last value for a key wins.
        let part_len = self.inner.capabilities.set_many_part;
        let count = entries.len();
        let entries = match self.now_part("set-many", entries, parts, |bucket, entries| {
            bucket.set_many_now(entries)
        }) {
            Ok(done) => return done.inspect(|()| self.moved("set-many", count, total, true)),
            Err(entries) => entries,
        };
        self.in_parts("set-many", &entries, part_len, parts, |part| {
            self.inner.bucket.set_many(part)
        })
        .await
        .inspect(|()| self.moved("set-many", count, total, true))
    }

    /// Deletes many keys; missing keys are fine.
    pub async fn delete_many(&self, keys: &[String]) -> Result<()> {
        let parts = Parts::default();
        self.reported(
            "delete-many",
            &parts,
            self.delete_many_in_parts(keys, &parts),
        )
        .await
    }

    async fn delete_many_in_parts(&self, keys: &[String], parts: &Parts) -> Result<()> {
        self.check_write()?;
        self.check_batch(keys.len())?;
        keys.iter().try_for_each(|key| check_key(key))?;
        let part_len = self.inner.capabilities.delete_many_part;
        self.in_parts("delete-many", keys, part_len, parts, |part| {
            self.inner.bucket.delete_many(part)
        })
        .await
        .inspect(|()| self.moved("delete-many", keys.len(), 0, true))
    }

    /// What a cursor is bound to: the store (its name, as every replica configures it), and
    /// the provider and namespace behind it.
    fn cursor_scope(&self) -> String {
        format!(
            "{}\u{0}{}\u{0}{}",
            self.inner.name, self.inner.provider, self.inner.namespace
        )
    }

    fn check_write(&self) -> Result<()> {
        match self.inner.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly | Access::Denied => Err(KvError::new(
                ErrorKind::AccessDenied,
                format!("store {:?} is read-only", self.inner.name),
            )),
        }
    }

    fn check_cas(&self) -> Result<()> {
        if self.inner.capabilities.cas {
            Ok(())
        } else {
            Err(KvError::internal(format!(
                "the {} provider does not support compare-and-swap",
                self.inner.provider
            )))
        }
    }

    /// The checks a `set` makes before it writes, in its order (write access, then the key,
    /// then the value's size; a refusal is logged like the call's), for a caller that must
    /// refuse before it holds the value: Spin 4's `set` charges the value to the instance's
    /// held bytes while it is written.
    pub fn check_set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.checked("set", || {
            self.check_write()?;
            check_key(key)?;
            self.check_value(value)
        })
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        let max = self.max_value_bytes();
        if value.len() > max {
            return Err(KvError::value_too_large(format!(
                "value of {} bytes exceeds the maximum of {max} bytes",
                value.len()
            )));
        }
        Ok(())
    }

    fn check_batch(&self, entries: usize) -> Result<()> {
        let max = self.inner.limits.max_batch_entries;
        if entries > max {
            return Err(KvError::new(
                ErrorKind::BatchTooLarge,
                format!("{entries} entries exceed the maximum of {max} per batch call"),
            ));
        }
        Ok(())
    }

    /// Runs one provider operation under the time limit, retrying transient errors
    /// ([`crate::retry`]). Not an `async fn`: the retry loop's future is returned as it is,
    /// without a frame of its own around it.
    fn call<'a, T: 'a, F>(
        &'a self,
        op: &'static str,
        each: F,
    ) -> impl Future<Output = Result<T>> + 'a
    where
        F: FnMut() -> BoxFuture<'a, Result<T>> + 'a,
    {
        self.inner.retry.run(op, EachTime::read(each))
    }

    /// [`Self::call`] for a plain write: a final error after an attempt that may have applied
    /// it says the outcome is unknown ([`EachTime::write`]).
    fn write<'a, T: 'a, F>(
        &'a self,
        op: &'static str,
        each: F,
    ) -> impl Future<Output = Result<T>> + 'a
    where
        F: FnMut() -> BoxFuture<'a, Result<T>> + 'a,
    {
        self.inner.retry.run(op, EachTime::write(each))
    }

    /// Reports values moved by a successful operation to the observer, if there is one.
    #[inline]
    fn moved(&self, op: &'static str, entries: usize, bytes: usize, written: bool) {
        let log = self.inner.retry.log();
        if log.observed() {
            log.transfer(op, entries, bytes as u64, written);
        }
    }

    /// The call made through the bucket's [`ImmediateBucket`] face, when it has one: once,
    /// without a future or timer, and final (with nothing to wait for there is nothing to
    /// retry). Without that face, `input` (what the call consumes) comes back for the async
    /// path, so neither path copies it for the other.
    ///
    /// A plain function the caller returns from: a helper returning an `Either` of the two
    /// futures made every fast call 20-30 ns slower (kv bench, boundary rows, side by side).
    #[inline]
    fn now<I, T>(
        &self,
        op: &'static str,
        input: I,
        call: impl FnOnce(&dyn ImmediateBucket, I) -> Result<T>,
    ) -> std::result::Result<Result<T>, I> {
        match self.inner.bucket.immediate() {
            Some(bucket) => {
                let started = self.inner.retry.log().start();
                Ok(self.inner.retry.settled(op, started, call(bucket, input)))
            }
            None => Err(input),
        }
    }

    /// [`Self::now`] for one part of an operation its caller reports once (a batch's
    /// rounds): the call is counted in `parts` rather than observed.
    #[inline]
    fn now_part<I, T>(
        &self,
        op: &'static str,
        input: I,
        parts: &Parts,
        call: impl FnOnce(&dyn ImmediateBucket, I) -> Result<T>,
    ) -> std::result::Result<Result<T>, I> {
        match self.inner.bucket.immediate() {
            Some(bucket) => {
                parts.add(1);
                Ok(self.inner.retry.settled_part(op, call(bucket, input)))
            }
            None => Err(input),
        }
    }

    /// A batch operation made of `parts`, reported to the observer once, with the outcome its
    /// caller gets (`work` starts when awaited, after the clock).
    async fn reported<T>(
        &self,
        op: &'static str,
        parts: &Parts,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let log = self.inner.retry.log();
        let started = log.start();
        let result = work.await;
        log.finish(op, started, parts.counts(), result.as_ref().err());
        result
    }

    /// Checks made before any provider call; a failure is reported to the observer as the
    /// operation's outcome, with no attempt.
    #[inline]
    fn checked(&self, op: &'static str, checks: impl FnOnce() -> Result<()>) -> Result<()> {
        checks().inspect_err(|err| {
            let log = self.inner.retry.log();
            log.finish(op, log.start(), (0, 0), Some(err));
        })
    }

    /// A batch call in parts of `part_len` items, in order, each part with its own deadline
    /// and retries; a failure says which parts were applied ([`partially_applied`]).
    async fn in_parts<'a, E>(
        &'a self,
        op: &'static str,
        items: &'a [E],
        part_len: usize,
        parts: &Parts,
        each: impl Fn(&'a [E]) -> BoxFuture<'a, Result<()>> + 'a,
    ) -> Result<()> {
        let part_len = part_len.max(1);
        let mut applied = 0;
        for part in items.chunks(part_len) {
            self.inner
                .retry
                .run_part(op, EachTime::write(|| each(part)), parts)
                .await
                .map_err(|err| partially_applied(op, err, applied, part_len, items.len()))?;
            applied += part.len();
        }
        Ok(())
    }
}

/// The error of a `set-many` or `delete-many` that failed part way: its class stays the
/// failure's, and the message says which entries were applied (the first `applied`, in call
/// order) and which may or may not have been (the part that failed); the rest were not tried.
fn partially_applied(
    op: &str,
    err: KvError,
    applied: usize,
    part_len: usize,
    total: usize,
) -> KvError {
    if total <= part_len {
        return err;
    }
    let failed_end = (applied + part_len).min(total);
    KvError::new(
        err.kind(),
        format!(
            "{op} stopped: entries 0..{applied} of {total} were applied, entries \
             {applied}..{failed_end} may or may not have been, the rest were not tried: {}",
            err.message()
        ),
    )
    .with_transient(false)
    .with_source(err)
}

/// Distinct keys per provider call of `get-many`: the values of one round are the most the
/// host holds beyond `limits.max_batch_bytes` (DynamoDB's `BatchGetItem` takes 100 too).
pub const GET_MANY_ROUND: usize = 100;

/// S1: every key of 1 to 1024 bytes is valid; nothing else is.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(KvError::invalid_key("the key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::invalid_key(format!(
            "the key is {} bytes, the maximum is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn memory_store(max_batch_bytes: usize) -> KvStore {
        let limits = Limits {
            max_batch_bytes,
            ..Limits::default()
        };
        crate::Stores::builder(limits)
            .store(
                "s",
                Arc::new(crate::MemoryProvider::new()),
                "ns",
                crate::Access::ReadWrite,
            )
            .build()
            .open("s")
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn get_many_reads_each_key_once_and_keeps_duplicates() {
        let store = memory_store(1000).await;
        store.set("a", b"1".to_vec()).await.unwrap();
        store.set("b", b"22".to_vec()).await.unwrap();
        let keys: Vec<String> = ["a", "missing", "b", "a", "a"].map(String::from).to_vec();
        let values = store.get_many(&keys).await.unwrap();
        assert_eq!(
            values,
            [
                Some(b"1".to_vec()),
                None,
                Some(b"22".to_vec()),
                Some(b"1".to_vec()),
                Some(b"1".to_vec())
            ]
        );
    }

    #[tokio::test]
    async fn batches_are_bounded_in_bytes() {
        let store = memory_store(1000).await;
        store.set("big", vec![7; 600]).await.unwrap();
        assert!(store.get_many(&["big".to_string()]).await.is_ok());
        // Two copies of one 600-byte value are 1200 bytes returned: over the limit.
        let err = store
            .get_many(&["big".to_string(), "big".to_string()])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BatchTooLarge, "{err}");
        // 3,000 copies are refused the same way, after one read of the key.
        let copies = vec!["big".to_string(); 3000];
        assert_eq!(
            store.get_many(&copies).await.unwrap_err().kind(),
            ErrorKind::BatchTooLarge
        );
        // Distinct keys: the second round finds the budget spent.
        let keys: Vec<String> = (0..250).map(|i| format!("k{i}")).collect();
        for chunk in keys.chunks(100) {
            let entries = chunk.iter().map(|key| (key.clone(), vec![1; 8])).collect();
            store.set_many(entries).await.unwrap();
        }
        assert_eq!(
            store.get_many(&keys).await.unwrap_err().kind(),
            ErrorKind::BatchTooLarge
        );
        assert!(store.get_many(&keys[..100]).await.is_ok());
        // set-many over the limit writes nothing.
        let err = store
            .set_many(vec![
                ("x".to_string(), vec![1; 600]),
                ("y".to_string(), vec![1; 600]),
            ])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BatchTooLarge);
        assert_eq!(store.get("x").await.unwrap(), None);
    }

    #[test]
    fn key_bounds() {
        assert!(check_key("a").is_ok());
        assert!(check_key(&"x".repeat(1024)).is_ok());
        assert_eq!(check_key("").unwrap_err().kind(), ErrorKind::InvalidKey);
        assert_eq!(
            check_key(&"x".repeat(1025)).unwrap_err().kind(),
            ErrorKind::InvalidKey
        );
    }
}
