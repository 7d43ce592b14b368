//! The observer hook sees every store operation once, with its final outcome: on the
//! immediate path of the memory provider, through retries of transient errors, and when a lost
//! reply leaves a write's outcome unknown.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kv_core::layer::{Layer, LayeredBucket, LayeredProvider, Op};
use kv_core::observe::{Observer, StoreCall, Transfer};
use kv_core::{
    Access, Bucket, ErrorKind, KvError, Limits, MemoryProvider, Result, RetryPolicy, Stores,
};

/// Store, operation, error class, outcome unknown, provider calls, attempts.
type Seen = (String, &'static str, Option<ErrorKind>, bool, u32, u32);

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Seen>>,
    transfers: Mutex<Vec<(&'static str, usize, u64, bool)>>,
}

impl Observer for Recorder {
    fn call(&self, call: &StoreCall<'_>) {
        self.calls.lock().unwrap().push((
            call.store.to_string(),
            call.op,
            call.error,
            call.outcome_unknown,
            call.calls,
            call.attempts,
        ));
    }
    fn transfer(&self, transfer: &Transfer<'_>) {
        self.transfers.lock().unwrap().push((
            transfer.op,
            transfer.entries,
            transfer.bytes,
            transfer.written,
        ));
    }
}

/// Fails the next `refuse` calls before they reach the provider, then loses the reply of the
/// next `lose` calls after they applied.
struct Faults {
    refuse: Arc<AtomicU32>,
    lose: Arc<AtomicU32>,
}

struct FaultyBucket {
    inner: Arc<dyn Bucket>,
    refuse: Arc<AtomicU32>,
    lose: Arc<AtomicU32>,
}

impl Layer for Faults {
    fn layer(&self, inner: Arc<dyn Bucket>) -> Arc<dyn Bucket> {
        Arc::new(FaultyBucket {
            inner,
            refuse: self.refuse.clone(),
            lose: self.lose.clone(),
        })
    }
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl LayeredBucket for FaultyBucket {
    fn inner(&self) -> &dyn Bucket {
        &*self.inner
    }
    async fn before(&self, _: Op) -> Result<()> {
        if take(&self.refuse) {
            return Err(KvError::unavailable("refused (injected)"));
        }
        Ok(())
    }
    fn after<T: Send>(&self, _: Op, result: Result<T>) -> Result<T> {
        match result {
            Ok(_) if take(&self.lose) => Err(KvError::unavailable("reply lost (injected)")),
            other => other,
        }
    }
}

fn limits() -> Limits {
    Limits {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: std::time::Duration::from_millis(1),
            max_backoff: std::time::Duration::from_millis(2),
        },
        ..Limits::default()
    }
}

#[tokio::test]
async fn every_operation_is_observed_once_with_its_final_outcome() {
    let recorder = Arc::new(Recorder::default());
    let refuse = Arc::new(AtomicU32::new(0));
    let lose = Arc::new(AtomicU32::new(0));
    let faulty = LayeredProvider::new(
        Arc::new(MemoryProvider::new()),
        Faults {
            refuse: refuse.clone(),
            lose: lose.clone(),
        },
    );
    let stores = Stores::builder(limits())
        .store(
            "fast",
            Arc::new(MemoryProvider::new()),
            "a",
            Access::ReadWrite,
        )
        .store("faulty", Arc::new(faulty), "b", Access::ReadWrite)
        .observer(recorder.clone())
        .build();

    // The immediate path: one call per operation, bytes moved.
    let fast = stores.open("fast").await.unwrap();
    fast.set("k", b"four".to_vec()).await.unwrap();
    assert_eq!(fast.get("k").await.unwrap(), Some(b"four".to_vec()));
    let err = fast.increment("k", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAnInteger);
    fast.set_many(vec![
        ("a".into(), b"1".to_vec()),
        ("b".into(), b"22".to_vec()),
    ])
    .await
    .unwrap();

    // Retried: two refusals, then success on the third attempt.
    let faulty = stores.open("faulty").await.unwrap();
    refuse.store(2, Ordering::Relaxed);
    faulty.set("k", b"v".to_vec()).await.unwrap();
    // Every attempt applied, and every reply was lost: the outcome is unknown.
    lose.store(3, Ordering::Relaxed);
    let err = faulty.set("k", b"w".to_vec()).await.unwrap_err();
    assert!(err.may_have_applied(), "{err}");
    // One operation in three parts of 200, one of them retried: one call, four attempts.
    let entries: Vec<(String, Vec<u8>)> =
        (0..450).map(|n| (format!("k{n}"), b"v".to_vec())).collect();
    refuse.store(1, Ordering::Relaxed);
    faulty.set_many(entries).await.unwrap();
    // One get-many of 250 keys in three rounds; its outcome is the caller's.
    let keys: Vec<String> = (0..250).map(|n| format!("k{n}")).collect();
    faulty.get_many(&keys).await.unwrap();
    // Refused before any provider call: the caller's class, no attempt.
    assert_eq!(
        faulty.get("").await.unwrap_err().kind(),
        ErrorKind::InvalidKey
    );
    let err = fast
        .get_many(&vec!["k".to_string(); 20_000])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BatchTooLarge);

    let calls = recorder.calls.lock().unwrap().clone();
    let fast = |op, error, calls, attempts| ("fast".to_string(), op, error, false, calls, attempts);
    let faulty = |op, error, unknown, calls, attempts| {
        ("faulty".to_string(), op, error, unknown, calls, attempts)
    };
    assert_eq!(
        calls,
        [
            fast("set", None, 1, 1),
            fast("get", None, 1, 1),
            fast("increment", Some(ErrorKind::NotAnInteger), 1, 1),
            fast("set-many", None, 1, 1),
            faulty("set", None, false, 1, 3),
            faulty("set", Some(ErrorKind::Unavailable), true, 1, 3),
            // Three parts, one retried: three calls, four attempts (one retry).
            faulty("set-many", None, false, 3, 4),
            faulty("get-many", None, false, 3, 3),
            faulty("get", Some(ErrorKind::InvalidKey), false, 0, 0),
            fast("get-many", Some(ErrorKind::BatchTooLarge), 0, 0),
        ]
    );
    let transfers = recorder.transfers.lock().unwrap().clone();
    assert_eq!(
        transfers,
        [
            ("set", 1, 4, true),
            ("get", 1, 4, false),
            ("set-many", 2, 3, true),
            ("set", 1, 1, true),
            ("set-many", 450, 450, true),
            ("get-many", 250, 250, false),
        ]
    );
}
