//! S12: the host protects itself from slow and failing backends. These rules cannot be provoked
//! from a guest against a healthy backend, so they are tested here with providers that misbehave
//! on purpose.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kv_core::{
    Access, Attempt, Bucket, Bytes, Capabilities, ErrorKind, KeyPage, KvError, LayeredBucket,
    Limits, Provider, Result, RetryPolicy, Stores, SwapOutcome, Version, Versioned,
};

/// A bucket whose every operation first waits `delay`, then fails `failures` times with
/// `error`, then succeeds.
struct Misbehaving {
    delay: Duration,
    failures: usize,
    error: fn() -> KvError,
    /// The error of the first failing call, when it differs from `error`.
    first_error: Option<fn() -> KvError>,
    /// Calls from this one on fail with `error` (after the first `failures` succeeded).
    fail_from_call: Option<usize>,
    /// Increments and swaps leave their attempt unresolved in the request, as a
    /// read-modify-write whose conditional write may have applied does.
    leave_unresolved: bool,
    calls: AtomicUsize,
    oversized_page: bool,
    /// The request id of every increment and swap attempt.
    requests: std::sync::Mutex<Vec<u128>>,
}

impl Misbehaving {
    async fn step(&self) -> Result<()> {
        tokio::time::sleep(self.delay).await;
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call == 0
            && self.failures > 0
            && let Some(first) = self.first_error
        {
            Err(first())
        } else if call < self.failures || self.fail_from_call.is_some_and(|from| call >= from) {
            Err((self.error)())
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Bucket for Misbehaving {
    async fn get(&self, _: &str) -> Result<Option<Vec<u8>>> {
        self.step().await.map(|_| Some(b"v".to_vec()))
    }
    async fn set(&self, _: &str, _: Bytes) -> Result<()> {
        self.step().await
    }
    async fn set_with_ttl(&self, _: &str, _: Bytes, _: Duration) -> Result<()> {
        self.step().await
    }
    async fn delete(&self, _: &str) -> Result<()> {
        self.step().await
    }
    async fn exists(&self, _: &str) -> Result<bool> {
        self.step().await.map(|_| true)
    }
    async fn list_keys(&self, _: Option<&str>, _: usize) -> Result<KeyPage> {
        self.step().await?;
        let count = if self.oversized_page { 1001 } else { 1 };
        Ok(KeyPage {
            keys: (0..count).map(|i| i.to_string()).collect(),
            cursor: None,
        })
    }
    async fn get_with_ttl(&self, _: &str) -> Result<Option<kv_core::StoredValue>> {
        self.step().await.map(|_| None)
    }
    async fn increment(
        &self,
        _: &str,
        delta: i64,
        _: kv_core::CounterRange,
        attempt: &mut Attempt,
    ) -> Result<i64> {
        self.requests
            .lock()
            .unwrap()
            .push(attempt.request().value());
        if self.leave_unresolved {
            attempt.set_attempted_base(Some(7));
        }
        self.step().await.map(|_| delta)
    }
    async fn read_versioned(&self, _: &str) -> Result<Versioned> {
        self.step().await.map(|_| Versioned {
            value: None,
            version: Version::Absent,
        })
    }
    async fn swap(
        &self,
        _: &str,
        _: &Version,
        _: Bytes,
        attempt: &mut Attempt,
    ) -> Result<SwapOutcome> {
        self.requests
            .lock()
            .unwrap()
            .push(attempt.request().value());
        self.step().await.map(|_| SwapOutcome::Swapped)
    }
}

struct OneBucket(Arc<Misbehaving>);

#[async_trait]
impl Provider for OneBucket {
    fn name(&self) -> &str {
        "misbehaving"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            cas: true,
            ..Capabilities::default()
        }
    }
    async fn open(&self, _: &str) -> Result<Arc<dyn Bucket>> {
        Ok(self.0.clone())
    }
}

fn limits(timeout_ms: u64, attempts: u32) -> Limits {
    Limits {
        operation_timeout: Duration::from_millis(timeout_ms),
        retry: RetryPolicy {
            max_attempts: attempts,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
        },
        ..Limits::default()
    }
}

async fn store_over(
    bucket: Misbehaving,
    limits: Limits,
    access: Access,
) -> (kv_core::KvStore, Arc<Misbehaving>) {
    let bucket = Arc::new(bucket);
    let stores = Stores::builder(limits)
        .store("s", Arc::new(OneBucket(bucket.clone())), "ns", access)
        .build();
    (stores.open("s").await.unwrap(), bucket)
}

fn bucket(delay_ms: u64, failures: usize, error: fn() -> KvError) -> Misbehaving {
    Misbehaving {
        delay: Duration::from_millis(delay_ms),
        failures,
        error,
        first_error: None,
        fail_from_call: None,
        leave_unresolved: false,
        calls: AtomicUsize::new(0),
        oversized_page: false,
        requests: std::sync::Mutex::new(Vec::new()),
    }
}

#[tokio::test]
async fn a_hanging_backend_times_out() {
    let (store, _) = store_over(
        bucket(60_000, 0, || KvError::internal("x")),
        limits(200, 4),
        Access::ReadWrite,
    )
    .await;
    let started = Instant::now();
    let err = store.get("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().starts_with("timeout: "), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn transient_errors_of_idempotent_operations_are_retried() {
    let (store, calls) = store_over(
        bucket(0, 2, || KvError::unavailable("reset")),
        limits(5_000, 4),
        Access::ReadWrite,
    )
    .await;
    assert_eq!(store.get("k").await.unwrap(), Some(b"v".to_vec()));
    assert_eq!(calls.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retries_run_out_with_the_backend_class() {
    let throttled = || KvError::new(ErrorKind::Throttled, "slow down");
    let (store, calls) = store_over(
        bucket(0, usize::MAX, throttled),
        limits(5_000, 3),
        Access::ReadWrite,
    )
    .await;
    let err = store.set("k", b"v".to_vec()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled);
    assert_eq!(calls.calls.load(Ordering::SeqCst), 3);
}

/// Increments and swaps are retried like every other operation, with one request id for
/// all attempts of a guest call (providers use it to apply the call exactly once), and a new
/// id for the next call.
#[tokio::test]
async fn increments_and_swaps_are_retried_under_one_request_id() {
    let (store, calls) = store_over(
        bucket(0, 2, || KvError::unavailable("reset")),
        limits(5_000, 4),
        Access::ReadWrite,
    )
    .await;
    assert_eq!(store.increment("k", 7).await.unwrap(), 7);
    assert_eq!(calls.calls.load(Ordering::SeqCst), 3);
    let requests = calls.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|id| *id == requests[0]), "{requests:?}");
    store
        .swap("k", &Version::Absent, b"v".to_vec())
        .await
        .unwrap();
    let requests = calls.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 4);
    assert_ne!(requests[3], requests[0], "a new call has a new request id");
}

/// An attempt that may have been applied (its reply lost) is not forgotten when the later
/// attempts fail differently: after `unavailable` then `throttled` until the retries run out,
/// the guest is told the outcome is unknown, not `throttled` (which says "not applied" and
/// invites a retry that would apply the increment twice).
#[tokio::test]
async fn an_ambiguous_attempt_makes_the_outcome_unknown_whatever_follows() {
    // Plain writes too: a `set` told `throttled` after a lost reply may have applied, and a
    // history checker would see its value as written by a failed operation.
    for op in ["increment", "swap", "set", "delete"] {
        let (store, calls) = store_over(
            Misbehaving {
                first_error: Some(|| KvError::unavailable("connection reset mid-request")),
                ..bucket(0, usize::MAX, || {
                    KvError::new(ErrorKind::Throttled, "slow down")
                })
            },
            limits(5_000, 3),
            Access::ReadWrite,
        )
        .await;
        let err = match op {
            "increment" => store.increment("k", 1).await.unwrap_err(),
            "set" => store.set("k", b"v".to_vec()).await.unwrap_err(),
            "delete" => store.delete("k").await.unwrap_err(),
            _ => store
                .swap("k", &Version::Absent, b"v".to_vec())
                .await
                .unwrap_err(),
        };
        assert_eq!(calls.calls.load(Ordering::SeqCst), 3, "{op}");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{op}: {err}");
        assert!(
            err.message().starts_with(kv_core::store::OUTCOME_UNKNOWN),
            "{op}: {err}"
        );
        assert!(!err.is_transient(), "{op}");
    }
    // Throttling alone is certain not to have applied: it stays `throttled`.
    let (store, _) = store_over(
        bucket(0, usize::MAX, || {
            KvError::new(ErrorKind::Throttled, "slow down")
        }),
        limits(5_000, 3),
        Access::ReadWrite,
    )
    .await;
    let err = store.increment("k", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err}");
}

/// A batch's deadline grows with the backend requests it needs: a healthy but slow backend
/// without native batches (20 ms per request, 16 in flight) takes about 1.3 s for 1,000
/// deletes, far past a 600 ms operation timeout, and each part of the batch still finishes
/// well within it.
#[tokio::test]
async fn a_large_batch_on_a_slow_backend_is_not_a_timeout() {
    let (store, calls) = store_over(
        bucket(20, 0, || KvError::internal("x")),
        limits(600, 1),
        Access::ReadWrite,
    )
    .await;
    let keys: Vec<String> = (0..1_000).map(|i| format!("k{i}")).collect();
    store.delete_many(&keys).await.unwrap();
    assert_eq!(calls.calls.load(Ordering::SeqCst), 1_000);
    let entries = keys
        .iter()
        .map(|key| (key.clone(), b"v".to_vec()))
        .collect();
    store.set_many(entries).await.unwrap();
    assert_eq!(calls.calls.load(Ordering::SeqCst), 2_000);
}

/// A batch that fails part way says what was applied, what may have been, and what was not
/// tried, under the failure's own class.
#[tokio::test]
async fn a_batch_that_fails_part_way_says_what_was_applied() {
    let (store, _) = store_over(
        Misbehaving {
            fail_from_call: Some(300),
            ..bucket(0, 0, || KvError::new(ErrorKind::Throttled, "slow down"))
        },
        limits(5_000, 1),
        Access::ReadWrite,
    )
    .await;
    let keys: Vec<String> = (0..1_000).map(|i| format!("k{i}")).collect();
    let err = store.delete_many(&keys).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err}");
    assert!(
        err.message()
            .contains("entries 0..200 of 1000 were applied")
            && err
                .message()
                .contains("entries 200..400 may or may not have been"),
        "{err}"
    );
}

/// A provider that left an attempt unresolved (its conditional write may have applied) makes
/// the outcome unknown, whatever the last error's class.
#[tokio::test]
async fn an_attempt_left_unresolved_makes_the_outcome_unknown() {
    let (store, _) = store_over(
        Misbehaving {
            leave_unresolved: true,
            ..bucket(0, usize::MAX, || {
                KvError::new(ErrorKind::Throttled, "slow down")
            })
        },
        limits(5_000, 2),
        Access::ReadWrite,
    )
    .await;
    let err = store.increment("k", 1).await.unwrap_err();
    assert!(
        err.message().starts_with(kv_core::store::OUTCOME_UNKNOWN),
        "{err}"
    );
}

/// A backend's `Retry-After` is a floor for the wait before the next attempt.
#[tokio::test]
async fn retry_after_is_honoured() {
    let (store, calls) = store_over(
        bucket(0, 1, || {
            KvError::new(ErrorKind::Throttled, "slow down")
                .with_retry_after(Duration::from_millis(300))
        }),
        limits(5_000, 4),
        Access::ReadWrite,
    )
    .await;
    let started = Instant::now();
    store.get("k").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(calls.calls.load(Ordering::SeqCst), 2);
}

/// Throttling that outlasts the operation timeout is reported as `throttled` (the backend's
/// class), not as `timeout`: a retry that would end past the deadline is not started.
#[tokio::test]
async fn sustained_throttling_is_throttled_not_timeout() {
    let (store, calls) = store_over(
        bucket(0, usize::MAX, || {
            KvError::new(ErrorKind::Throttled, "slow down")
                .with_retry_after(Duration::from_millis(400))
        }),
        limits(1_000, 10),
        Access::ReadWrite,
    )
    .await;
    let started = Instant::now();
    let err = store.increment("k", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err}");
    assert!(!err.is_transient(), "the final error is permanent");
    assert!(started.elapsed() < Duration::from_millis(1_000));
    assert!(calls.calls.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let (store, calls) = store_over(
        bucket(0, 1, || KvError::internal("bad answer")),
        limits(5_000, 4),
        Access::ReadWrite,
    )
    .await;
    assert_eq!(
        store.get("k").await.unwrap_err().kind(),
        ErrorKind::Internal
    );
    assert_eq!(calls.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_provider_page_over_the_bound_is_an_error_not_a_huge_reply() {
    let mut misbehaving = bucket(0, 0, || KvError::internal("x"));
    misbehaving.oversized_page = true;
    let (store, _) = store_over(misbehaving, limits(5_000, 1), Access::ReadWrite).await;
    assert_eq!(
        store.list_keys(None).await.unwrap_err().kind(),
        ErrorKind::Internal
    );
}

#[tokio::test]
async fn read_only_writes_never_reach_the_provider() {
    let (store, calls) = store_over(
        bucket(0, 0, || KvError::internal("x")),
        limits(5_000, 1),
        Access::ReadOnly,
    )
    .await;
    assert_eq!(
        store.set("k", vec![]).await.unwrap_err().kind(),
        ErrorKind::AccessDenied
    );
    assert_eq!(
        store.delete("k").await.unwrap_err().kind(),
        ErrorKind::AccessDenied
    );
    assert_eq!(
        store.increment("k", 1).await.unwrap_err().kind(),
        ErrorKind::AccessDenied
    );
    assert_eq!(
        store.set_many(vec![]).await.unwrap_err().kind(),
        ErrorKind::AccessDenied
    );
    assert_eq!(calls.calls.load(Ordering::SeqCst), 0);
    assert!(store.get("k").await.is_ok());
}

#[tokio::test]
async fn unknown_and_denied_stores_are_classified() {
    let stores = Stores::builder(Limits::default())
        .store(
            "denied",
            Arc::new(kv_core::MemoryProvider::new()),
            "ns",
            Access::Denied,
        )
        .build();
    assert_eq!(
        stores.open("nope").await.unwrap_err().kind(),
        ErrorKind::NoSuchStore
    );
    assert_eq!(
        stores.open("denied").await.unwrap_err().kind(),
        ErrorKind::AccessDenied
    );
}

/// Hosts configured with one cursor secret (replicas behind a load balancer) accept each
/// other's list cursors, so a listing can move between them; a host with another secret
/// refuses them as `invalid-cursor`.
#[tokio::test]
async fn replicas_with_one_cursor_secret_share_cursors() {
    let shared: Arc<dyn Provider> = Arc::new(kv_core::MemoryProvider::new());
    let limits = Limits {
        list_page_size: 2,
        ..Limits::default()
    };
    let host = |secret: &str| {
        Stores::builder(limits.clone())
            .store("s", shared.clone(), "ns", Access::ReadWrite)
            .cursor_secret(kv_core::CursorSecret::new(secret))
            .build()
    };
    let (a, b) = (host("one shared secret!"), host("one shared secret!"));
    let stranger = host("a different secret");
    let (a, b, stranger) = (
        a.open("s").await.unwrap(),
        b.open("s").await.unwrap(),
        stranger.open("s").await.unwrap(),
    );
    for key in ["a", "b", "c", "d", "e"] {
        a.set(key, b"v".to_vec()).await.unwrap();
    }
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    for turn in 0.. {
        let host = if turn % 2 == 0 { &a } else { &b };
        let page = host.list_keys(cursor.as_deref()).await.unwrap();
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    keys.sort();
    assert_eq!(keys, ["a", "b", "c", "d", "e"]);
    let first = a.list_keys(None).await.unwrap();
    let err = stranger
        .list_keys(first.cursor.as_deref())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidCursor);
}

/// A bucket over a real (in-memory) one whose first `set` applies, lets another client write
/// the same key (acknowledged), and then reports a lost reply.
struct LostSetReply {
    inner: Arc<dyn Bucket>,
    first: std::sync::atomic::AtomicBool,
    other_acknowledged: std::sync::Mutex<Option<Instant>>,
}

/// A layer: only `set` differs from the bucket underneath (batches go to the inner bucket
/// unchanged; the test writes single keys).
#[async_trait]
impl LayeredBucket for LostSetReply {
    fn inner(&self) -> &dyn Bucket {
        &*self.inner
    }
    async fn set(&self, key: &str, value: Bytes) -> Result<()> {
        self.inner.set(key, value).await?;
        if self.first.swap(false, Ordering::SeqCst) {
            self.inner.set(key, Bytes::from_static(b"other")).await?;
            *self.other_acknowledged.lock().unwrap() = Some(Instant::now());
            return Err(KvError::unavailable("the reply was lost"));
        }
        Ok(())
    }
}

struct OneLostSetReply(Arc<LostSetReply>);

#[async_trait]
impl Provider for OneLostSetReply {
    fn name(&self) -> &str {
        "lost-set-reply"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn open(&self, _: &str) -> Result<Arc<dyn Bucket>> {
        Ok(self.0.clone())
    }
}

/// The declared divergence of plain writes (docs/semantics.md, S4): a `set` whose reply was
/// lost is retried, and the retry lands after another client's acknowledged write of the same
/// key, undoing it. The window is bounded: the retry starts within the operation timeout of
/// the first attempt (here, after one backoff of at most 20 ms). If plain writes ever become
/// safe to retry, this test fails and the declaration goes.
#[tokio::test]
async fn a_retried_set_can_undo_a_later_write_within_the_operation_timeout() {
    let inner = kv_core::MemoryProvider::new().open("ns").await.unwrap();
    let bucket = Arc::new(LostSetReply {
        inner,
        first: std::sync::atomic::AtomicBool::new(true),
        other_acknowledged: std::sync::Mutex::new(None),
    });
    let stores = Stores::builder(limits(5_000, 4))
        .store(
            "s",
            Arc::new(OneLostSetReply(bucket.clone())),
            "ns",
            Access::ReadWrite,
        )
        .build();
    let store = stores.open("s").await.unwrap();
    store.set("k", b"mine".to_vec()).await.unwrap();
    let landed = Instant::now();
    let acknowledged = bucket.other_acknowledged.lock().unwrap().unwrap();
    assert_eq!(
        store.get("k").await.unwrap(),
        Some(b"mine".to_vec()),
        "the retry undid the other client's acknowledged write"
    );
    let window = landed - acknowledged;
    assert!(window < Duration::from_millis(5_000), "{window:?}");
}
