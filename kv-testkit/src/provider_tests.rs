//! Shared pieces of the provider-level test binaries (`kv-*/tests/*.rs`): one trial per test,
//! each with its own freshly started backend, ignored when the backend is not installed unless
//! `KV_REQUIRE` names the provider; and the outage check every provider must pass.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kv_core::{ErrorKind, KvStore, Limits, RetryPolicy};
use libtest_mimic::{Arguments, Failed, Trial};

use crate::{required_targets, runtime};

/// What a provider-level test returns.
pub type TestResult = Result<(), Failed>;

/// Fails with `message` unless `condition` holds.
pub fn check(condition: bool, message: impl Into<String>) -> TestResult {
    if condition {
        Ok(())
    } else {
        Err(Failed::from(message.into()))
    }
}

/// Host limits for provider tests: a per-operation `timeout` and quick retries, so outages
/// are reported within a bound the tests can assert.
pub fn limits(timeout: Duration, attempts: u32) -> Limits {
    Limits {
        operation_timeout: timeout,
        retry: RetryPolicy {
            max_attempts: attempts,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        },
        ..Limits::default()
    }
}

/// A provider-level test: gets a started backend, returns a failure reason.
pub type ProviderTest<B> = fn(B) -> Pin<Box<dyn Future<Output = Result<(), Failed>> + Send>>;

/// Runs `tests` as libtest trials against backends from `start`.
pub fn main<B: 'static>(
    provider: &str,
    installed: bool,
    start: fn() -> Result<B, String>,
    tests: Vec<(&'static str, ProviderTest<B>)>,
) -> ExitCode {
    let args = Arguments::from_args();
    let required = required_targets().iter().any(|name| name == provider);
    let kind = format!("no {provider} backend installed");
    let trials = tests
        .into_iter()
        .map(|(name, test)| {
            let trial = Trial::test(name, move || {
                let backend = start().map_err(Failed::from)?;
                runtime().block_on(test(backend))
            });
            if installed || required {
                trial
            } else {
                trial.with_ignored_flag(true).with_kind(kind.clone())
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// With the backend stopped, every kind of operation fails with `unavailable` (or `timeout`)
/// within `bound`: no hang, no panic, no other class.
pub async fn expect_outage(store: &KvStore, bound: Duration) -> Result<(), Failed> {
    for op in ["get", "set", "increment", "list-keys", "get-many"] {
        let started = Instant::now();
        let result = match op {
            "get" => store.get("k").await.map(drop),
            "set" => store.set("k", b"x".to_vec()).await,
            "increment" => store.increment("n", 1).await.map(drop),
            "list-keys" => store.list_keys(None).await.map(drop),
            _ => store.get_many(&["k".to_string()]).await.map(drop),
        };
        let elapsed = started.elapsed();
        let err = result
            .err()
            .ok_or_else(|| Failed::from(format!("{op} succeeded with the backend down")))?;
        if !matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout) {
            return Err(Failed::from(format!(
                "{op}: expected unavailable, got {err}"
            )));
        }
        if elapsed > bound {
            return Err(Failed::from(format!(
                "{op} took {elapsed:?}, more than {bound:?}"
            )));
        }
    }
    Ok(())
}

/// Every key of `store`, page by page, in listing order.
pub async fn list_all(store: &KvStore) -> Result<Vec<String>, Failed> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list_keys(cursor.as_deref()).await?;
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
}

/// Keys object stores stumble on (separators, URL syntax, percent signs, the hash marker,
/// dot segments, blanks, control characters, multi-byte text) and 1,024-byte keys, some of
/// whose names must be hashed: what a provider's awkward-keys test writes and lists.
pub fn awkward_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "/",
        "//",
        "a//b",
        "/a",
        "a/",
        "#",
        "?",
        "a?b#c",
        "%2F",
        "%",
        "%h00",
        ".",
        "..",
        " ",
        " a ",
        "a\nb",
        "a\rb",
        "\t",
        "+",
        "a+b=c&d",
        "é",
        "e\u{301}",
        "日本語",
        "🦀",
    ]
    .iter()
    .map(|key| key.to_string())
    .collect();
    keys.push("k".repeat(1024));
    keys.push("%".repeat(1024)); // 3,072 bytes once percent-encoded: a hashed name
    keys.push("🦀".repeat(256));
    keys
}

/// The reads a provider with tombstones must get right (S7), once `a` and `b` were set and
/// deleted and `t` kept, `handle` taken on `a` before its delete: every read treats a deleted
/// key as missing, and a CAS handle on a missing key sees a write and a delete in between. The
/// second delete of `a` is a `delete-many` when `batch` is set (a provider whose batch deletes
/// write tombstones another way). Ends with `a` swapped in and `b` a counter at 5.
pub async fn deleted_keys_read_as_missing(
    store: &KvStore,
    handle: &kv_core::Versioned,
    batch: bool,
) -> TestResult {
    use kv_core::SwapOutcome;
    for key in ["a", "b"] {
        check(store.get(key).await?.is_none(), format!("get {key}"))?;
        check(!store.exists(key).await?, format!("exists {key}"))?;
    }
    check(
        store.get_many(&["a".to_string(), "b".to_string()]).await? == vec![None, None],
        "get-many",
    )?;
    check(
        list_all(store).await? == vec!["t".to_string()],
        "list-keys skips tombstones",
    )?;
    check(
        store.swap("a", &handle.version, b"x".to_vec()).await? == SwapOutcome::Conflict,
        "a deleted value's handle",
    )?;
    let on_tombstone = store.read_versioned("a").await?;
    store.set("a", b"again".to_vec()).await?;
    if batch {
        store.delete_many(&["a".to_string()]).await?;
    } else {
        store.delete("a").await?;
    }
    check(
        store
            .swap("a", &on_tombstone.version, b"x".to_vec())
            .await?
            == SwapOutcome::Conflict,
        "missing -> written -> deleted is a change",
    )?;
    let fresh = store.read_versioned("a").await?;
    check(
        store.swap("a", &fresh.version, b"x".to_vec()).await? == SwapOutcome::Swapped,
        "an unchanged tombstone's handle inserts",
    )?;
    check(
        store.increment("b", 5).await? == 5,
        "a counter restarts over a tombstone",
    )
}

/// 8 tasks × 50 increments of one key: every total 1..=400 is returned exactly once and the
/// stored value ends at 400.
pub async fn concurrent_increments_exact(store: &KvStore) -> TestResult {
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut totals = Vec::new();
                for _ in 0..50 {
                    totals.push(store.increment("n", 1).await?);
                }
                Ok::<_, kv_core::KvError>(totals)
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(
            worker
                .await
                .map_err(|err| Failed::from(err.to_string()))??,
        );
    }
    all.sort_unstable();
    check(
        all == (1..=400).collect::<Vec<i64>>(),
        "each total 1..=400 returned once",
    )?;
    check(
        store.get("n").await?.as_deref() == Some(&b"400"[..]),
        "final value 400",
    )
}
