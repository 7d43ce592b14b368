//! The checked store: what a guest's `bucket` handle calls.
//!
//! [`KvStore`] wraps a provider's [`Bucket`] with everything that must hold whatever the
//! backend: key and value limits (S1, S2), access mode (S10), batch bounds, opaque cursors bound
//! to their store (S5), per-operation timeouts and retries of transient errors (S12), and
//! logging of the full cause chain (S11). Providers never see invalid input.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::capabilities::Capabilities;
use crate::counter::CounterRange;
use crate::error::{ErrorKind, KvError, Result};
use crate::limits::{Limits, MAX_KEY_BYTES, MAX_LIST_PAGE, MAX_TTL_MS};
use crate::provider::{Bucket, Bytes, KeyPage, RequestId, SwapOutcome, Version, Versioned};

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

/// The configured cursor-signing secret (`[cursors] secret`); never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct CursorSecret(String);

impl CursorSecret {
    /// Shortest accepted secret, in bytes.
    pub const MIN_BYTES: usize = 16;

    /// `secret`, if it is at least [`CursorSecret::MIN_BYTES`] long.
    pub fn new(secret: impl Into<String>) -> Option<CursorSecret> {
        let secret = secret.into();
        (secret.len() >= Self::MIN_BYTES).then_some(CursorSecret(secret))
    }
}

impl std::fmt::Debug for CursorSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorSecret(<redacted>)")
    }
}

/// Signs cursors so a guest can only hand back cursors this host issued for the same store:
/// HMAC-SHA-256 over the store's scope and the provider's cursor, truncated to
/// [`CURSOR_TAG_BYTES`], checked in constant time.
#[derive(Clone)]
pub(crate) struct CursorSigner {
    /// The MAC keyed once; each cursor clones it.
    keyed: CursorMac,
}

/// Bytes of the HMAC kept in a cursor: 128 bits, beyond guessing.
const CURSOR_TAG_BYTES: usize = 16;

type CursorMac = Hmac<Sha256>;

impl CursorSigner {
    fn with_key(key: [u8; 32]) -> Self {
        CursorSigner {
            // HMAC accepts keys of any length: this cannot fail.
            keyed: <CursorMac as Mac>::new_from_slice(&key).expect("HMAC takes any key length"),
        }
    }

    pub(crate) fn random() -> Self {
        Self::with_key(rand::random())
    }

    /// A signer every host configured with the same secret shares, so a cursor issued by one
    /// replica is accepted by another.
    pub(crate) fn from_secret(secret: &CursorSecret) -> Self {
        Self::with_key(Sha256::digest(secret.0.as_bytes()).into())
    }

    fn mac(&self, scope: &str, payload: &[u8]) -> CursorMac {
        let mut mac = self.keyed.clone();
        // The scope's length first, so no (scope, payload) pair reads as another.
        mac.update(&(scope.len() as u64).to_le_bytes());
        mac.update(scope.as_bytes());
        mac.update(payload);
        mac
    }

    fn seal(&self, scope: &str, cursor: &str) -> String {
        let tag = self.mac(scope, cursor.as_bytes()).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(cursor),
            URL_SAFE_NO_PAD.encode(&tag[..CURSOR_TAG_BYTES])
        )
    }

    fn open(&self, scope: &str, sealed: &str) -> Result<String> {
        let invalid = || KvError::invalid_cursor("the cursor was not issued for this store");
        let (payload, tag) = sealed.rsplit_once('.').ok_or_else(invalid)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        if tag.len() != CURSOR_TAG_BYTES {
            return Err(invalid());
        }
        self.mac(scope, &payload)
            .verify_truncated_left(&tag)
            .map_err(|_| invalid())?;
        String::from_utf8(payload).map_err(|_| invalid())
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
        KvStore {
            inner: Arc::new(Inner {
                name: parts.name,
                namespace: parts.namespace,
                provider: parts.provider,
                bucket,
                capabilities: parts.capabilities,
                access: parts.access,
                limits: parts.limits.effective(),
                cursors,
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

    /// The largest value this store accepts: the smaller of the host and provider limits.
    pub fn max_value_bytes(&self) -> usize {
        self.inner
            .limits
            .max_value_bytes
            .min(self.inner.capabilities.max_value_bytes)
    }

    /// Reads `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        if let Some(bucket) = self.inner.bucket.immediate() {
            return self.settled("get", bucket.get_now(key));
        }
        self.call("get", || self.inner.bucket.get(key)).await
    }

    /// Writes `key`, clearing any TTL.
    pub async fn set(&self, key: &str, value: impl Into<Bytes>) -> Result<()> {
        let value = value.into();
        self.check_write()?;
        check_key(key)?;
        self.check_value(&value)?;
        if let Some(bucket) = self.inner.bucket.immediate() {
            return self.settled("set", bucket.set_now(key, value));
        }
        self.call("set", || self.inner.bucket.set(key, value.clone()))
            .await
    }

    /// Writes `key` expiring after `ttl_ms` milliseconds.
    pub async fn set_with_ttl(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        ttl_ms: u64,
    ) -> Result<()> {
        let value = value.into();
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
        let ttl = Duration::from_millis(ttl_ms);
        self.call("set-with-ttl", || {
            self.inner.bucket.set_with_ttl(key, value.clone(), ttl)
        })
        .await
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.check_write()?;
        check_key(key)?;
        if let Some(bucket) = self.inner.bucket.immediate() {
            return self.settled("delete", bucket.delete_now(key));
        }
        self.call("delete", || self.inner.bucket.delete(key)).await
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        if let Some(bucket) = self.inner.bucket.immediate() {
            return self.settled("exists", bucket.exists_now(key));
        }
        self.call("exists", || self.inner.bucket.exists(key)).await
    }

    /// One page of keys; the returned cursor is opaque and only valid for this store.
    pub async fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage> {
        let scope = self.cursor_scope();
        let provider_cursor = cursor
            .map(|sealed| self.inner.cursors.open(&scope, sealed))
            .transpose()?;
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
        self.check_write()?;
        check_key(key)?;
        let Ok(delta) = i64::try_from(delta) else {
            return Err(KvError::overflow(format!(
                "delta {delta} does not fit the signed 64-bit counter"
            )));
        };
        let total = self
            .increment_within(key, delta, CounterRange::Unsigned)
            .await?;
        u64::try_from(total)
            .map_err(|_| KvError::internal(format!("an unsigned increment returned {total}")))
    }

    async fn increment_within(&self, key: &str, delta: i64, range: CounterRange) -> Result<i64> {
        self.check_write()?;
        check_key(key)?;
        // One request id for every attempt: a retry after a lost reply cannot apply twice.
        let request = RequestId::new();
        if let Some(bucket) = self.inner.bucket.immediate() {
            return self.settled(
                "increment",
                bucket.increment_now(key, delta, range, &request),
            );
        }
        self.call_applied_once("increment", &request, || {
            self.inner.bucket.increment(key, delta, range, &request)
        })
        .await
    }

    /// Reads `key` with its version, for compare-and-swap.
    pub async fn read_versioned(&self, key: &str) -> Result<Versioned> {
        check_key(key)?;
        self.check_cas()?;
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
        self.check_write()?;
        check_key(key)?;
        self.check_value(&value)?;
        self.check_cas()?;
        // One request id for every attempt: a retry after a lost reply reports the swap, not
        // a conflict with itself.
        let request = RequestId::new();
        self.call_applied_once("swap", &request, || {
            self.inner
                .bucket
                .swap(key, expected, value.clone(), &request)
        })
        .await
    }

    /// Reads many keys, in order, duplicates included. Each distinct key is read once, in
    /// rounds of [`GET_MANY_ROUND`] keys; the values are charged against
    /// `limits.max_batch_bytes` as each round arrives, and the call stops with
    /// `batch-too-large` at the limit (duplicates are charged each time they are returned).
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
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
            let part = match self.inner.bucket.immediate() {
                Some(bucket) => {
                    self.settled("get-many", bucket.get_many_within_now(keys, budget))?
                }
                None => {
                    self.call("get-many", || {
                        self.inner.bucket.get_many_within(keys, budget)
                    })
                    .await?
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
        if let Some(bucket) = self.inner.bucket.immediate() {
            return self.settled("set-many", bucket.set_many_now(entries));
        }
        // In order, one call per part: a later part's entry for a key also in an earlier part
        // still lands last, so the last value for a key wins.
        let part_len = self.inner.capabilities.set_many_part.max(1);
        let mut applied = 0;
        for part in entries.chunks(part_len) {
            self.call("set-many", || self.inner.bucket.set_many(part))
                .await
                .map_err(|err| {
                    partially_applied("set-many", err, applied, part_len, entries.len())
                })?;
            applied += part.len();
        }
        Ok(())
    }

    /// Deletes many keys; missing keys are fine.
    pub async fn delete_many(&self, keys: &[String]) -> Result<()> {
        self.check_write()?;
        self.check_batch(keys.len())?;
        keys.iter().try_for_each(|key| check_key(key))?;
        let part_len = self.inner.capabilities.delete_many_part.max(1);
        let mut applied = 0;
        for part in keys.chunks(part_len) {
            self.call("delete-many", || self.inner.bucket.delete_many(part))
                .await
                .map_err(|err| {
                    partially_applied("delete-many", err, applied, part_len, keys.len())
                })?;
            applied += part.len();
        }
        Ok(())
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

    /// Runs one provider operation under the time limit, retrying transient errors with
    /// capped exponential backoff (at least as long as the backend's `Retry-After`). This is
    /// the only layer that retries. Increment and swap are retried too: their request id makes
    /// a retry after a lost reply return the first result instead of applying again. A retry
    /// that would end past the time limit is not started, so throttling that outlasts the
    /// retries surfaces as `throttled`, not `timeout`; the final error is marked permanent.
    ///
    /// The first attempt is polled once before any clock is read or timer armed: a provider
    /// that answers without waiting (the in-memory one) costs neither. Waiting and retrying
    /// live in a boxed future of their own, so the happy path's future stays small.
    async fn call<'a, T, F, Fut>(&'a self, op: &'static str, f: F) -> Result<T>
    where
        F: Fn() -> Fut + 'a,
        Fut: Future<Output = Result<T>> + 'a,
    {
        let mut first = std::pin::pin!(f());
        match futures::poll!(first.as_mut()) {
            Poll::Ready(Ok(value)) => Ok(value),
            Poll::Ready(Err(err)) if !err.is_transient() => self.settled(op, Err(err)),
            polled => Box::pin(self.wait_and_retry(op, &f, first, polled)).await,
        }
    }

    /// [`KvStore::call`] for an increment or swap: remembers whether any attempt failed in a
    /// way that may have applied it, so an ambiguous attempt is never forgotten when a later
    /// attempt fails differently (see [`final_error_of_write`]).
    async fn call_applied_once<'a, T, F, Fut>(
        &'a self,
        op: &'static str,
        request: &RequestId,
        f: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut + 'a,
        Fut: Future<Output = Result<T>> + 'a,
    {
        let ambiguous = AtomicBool::new(false);
        let attempt = || {
            let attempt = f();
            let ambiguous = &ambiguous;
            async move {
                let result = attempt.await;
                if let Err(err) = &result
                    && err.may_have_applied()
                {
                    ambiguous.store(true, Ordering::Relaxed);
                }
                result
            }
        };
        // A provider that left an attempt unresolved (a read-modify-write whose conditional
        // write may have applied) says so through the request, whatever error came last.
        self.call(op, attempt).await.map_err(|err| {
            let unresolved = request.attempted_base().is_some();
            final_error_of_write(err, ambiguous.load(Ordering::Relaxed) || unresolved)
        })
    }

    /// [`KvStore::call`] once the first attempt has to wait or failed transiently.
    async fn wait_and_retry<T, F, Fut>(
        &self,
        op: &'static str,
        f: &F,
        first: Pin<&mut Fut>,
        polled: Poll<Result<T>>,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let policy = &self.inner.limits.retry;
        let attempts = policy.max_attempts.max(1);
        let timeout = self.inner.limits.operation_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || {
            KvError::new(
                ErrorKind::Timeout,
                format!("{op} did not finish within {} ms", timeout.as_millis()),
            )
        };
        let mut attempt = 1;
        let mut outcome = match polled {
            Poll::Ready(outcome) => Some(outcome),
            Poll::Pending => tokio::time::timeout_at(deadline, first).await.ok(),
        };
        let result = loop {
            let Some(result) = outcome else {
                break Err(timed_out());
            };
            match result {
                Err(err) if err.is_transient() && attempt < attempts => {
                    let delay = policy
                        .backoff()
                        .delay(attempt)
                        .max(err.retry_after().unwrap_or_default());
                    if tokio::time::Instant::now() + delay >= deadline {
                        break Err(err.with_transient(false));
                    }
                    tracing::debug!(store = %self.inner.name, op, attempt, error = %err.chain(), "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                    outcome = tokio::time::timeout_at(deadline, f()).await.ok();
                }
                Err(err) => break Err(err.with_transient(false)),
                Ok(value) => break Ok(value),
            }
        };
        if let Err(err) = &result {
            self.log_failure(op, attempt, err);
        }
        result
    }

    /// The outcome of an operation an [`ImmediateBucket`](crate::ImmediateBucket) completed:
    /// final, and logged like any failure.
    fn settled<T>(&self, op: &'static str, result: Result<T>) -> Result<T> {
        result.map_err(|err| {
            let err = err.with_transient(false);
            self.log_failure(op, 1, &err);
            err
        })
    }

    fn log_failure(&self, op: &'static str, attempts: u32, err: &KvError) {
        match err.kind() {
            ErrorKind::Unavailable
            | ErrorKind::Throttled
            | ErrorKind::Timeout
            | ErrorKind::Internal => {
                tracing::warn!(store = %self.inner.name, provider = %self.inner.provider, op, attempts, error = %err.chain(), "operation failed")
            }
            _ => {
                tracing::debug!(store = %self.inner.name, op, error = %err, "operation rejected")
            }
        }
    }
}

/// The final error of an increment or swap. If the last attempt, or any earlier one, failed
/// in a way that may have applied it ([`KvError::may_have_applied`]), the guest is told the
/// outcome is unknown rather than the last attempt's class: a `throttled` after a lost reply
/// would invite a retry that applies the call twice. The guest must read before retrying.
fn final_error_of_write(err: KvError, earlier_ambiguous: bool) -> KvError {
    if err.message().starts_with(OUTCOME_UNKNOWN) {
        return err;
    }
    if err.may_have_applied() {
        return KvError::new(
            ErrorKind::Unavailable,
            format!("{OUTCOME_UNKNOWN} (it may have been applied): {err}"),
        )
        .with_transient(false)
        .with_source(err);
    }
    if earlier_ambiguous {
        return KvError::new(
            ErrorKind::Unavailable,
            format!(
                "{OUTCOME_UNKNOWN} (an earlier attempt may have been applied; the last one \
                 failed with {err})"
            ),
        )
        .with_transient(false)
        .with_source(err);
    }
    err
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

/// How the message of an ambiguous write's error starts.
pub const OUTCOME_UNKNOWN: &str = "outcome unknown";

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

    #[test]
    fn cursors_are_bound_to_their_scope() {
        let signer = CursorSigner::random();
        let sealed = signer.seal("memory\u{0}a", "k/1");
        assert_eq!(signer.open("memory\u{0}a", &sealed).unwrap(), "k/1");
        assert_eq!(
            signer.open("memory\u{0}b", &sealed).unwrap_err().kind(),
            ErrorKind::InvalidCursor
        );
        for forged in ["", ".", "abc", "a.b", "12345", &sealed[1..]] {
            assert_eq!(
                signer.open("memory\u{0}a", forged).unwrap_err().kind(),
                ErrorKind::InvalidCursor,
                "{forged:?}"
            );
        }
        let other = CursorSigner::random();
        assert!(other.open("memory\u{0}a", &sealed).is_err());
        // A shorter (truncated) tag, even a true prefix of the real one, is refused.
        let (payload, tag) = sealed.rsplit_once('.').unwrap();
        let tag = URL_SAFE_NO_PAD.decode(tag).unwrap();
        let short = format!("{payload}.{}", URL_SAFE_NO_PAD.encode(&tag[..8]));
        assert!(signer.open("memory\u{0}a", &short).is_err());
        // The tag is the standard HMAC-SHA-256 (RFC 2104) of the length-prefixed scope and
        // the payload, not a hash of the key and the message.
        let key = [7u8; 32];
        let signer = CursorSigner::with_key(key);
        let sealed = signer.seal("memory\u{0}a", "k/1");
        let tag = URL_SAFE_NO_PAD
            .decode(sealed.rsplit_once('.').unwrap().1)
            .unwrap();
        let mut mac = <CursorMac as Mac>::new_from_slice(&key).unwrap();
        mac.update(&8u64.to_le_bytes());
        mac.update(b"memory\0a");
        mac.update(b"k/1");
        let expected = mac.finalize().into_bytes();
        assert_eq!(&tag[..], &expected[..CURSOR_TAG_BYTES]);
        // Replicas configured with one secret accept each other's cursors; others do not.
        let secret = CursorSecret::new("0123456789abcdef").unwrap();
        let replica = CursorSigner::from_secret(&secret);
        let sealed = replica.seal("memory\u{0}a", "k/1");
        let peer = CursorSigner::from_secret(&secret);
        assert_eq!(peer.open("memory\u{0}a", &sealed).unwrap(), "k/1");
        let stranger = CursorSigner::from_secret(&CursorSecret::new("fedcba9876543210").unwrap());
        assert!(stranger.open("memory\u{0}a", &sealed).is_err());
        assert!(CursorSecret::new("short").is_none());
        assert!(!format!("{secret:?}").contains("0123"));
    }

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
