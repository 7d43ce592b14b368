//! The suite must be able to fail: providers with one deliberate, realistic bug each, run
//! through the whole suite, must fail exactly the cases written to catch that bug, and pass
//! every other case.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kv_conformance::{Outcome, Profile, Suite, Target};
use kv_core::layer::LayeredBucket;
use kv_core::{
    Attempt, Bucket, Bytes, Capabilities, KeyPage, MemoryProvider, Provider, Result, SwapOutcome,
    Version, Versioned,
};

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Ignores the store's namespace suffix: two stores of one case share a keyspace
    /// (Spin's Redis and DynamoDB providers ignore the store name).
    SharedKeyspace,
    /// Acknowledges every third single-key `set` without writing it.
    LosesEveryThirdWrite,
    /// Increments by read, pause, write: not atomic.
    RacyIncrement,
    /// `swap` writes without checking the version.
    CasIgnoresVersion,
    /// `swap` compares values instead of versions (ABA; Spin's SQLite CAS).
    CasComparesValues,
    /// `set-with-ttl` stores the value without an expiry.
    TtlIgnored,
    /// Listing ends after the first page.
    ListStopsAfterFirstPage,
}

struct FaultyProvider {
    inner: MemoryProvider,
    fault: Fault,
}

#[async_trait]
impl Provider for FaultyProvider {
    fn name(&self) -> &str {
        "faulty"
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn open(&self, namespace: &str) -> Result<Arc<dyn Bucket>> {
        let namespace = match self.fault {
            // The runner names a case's stores `<case namespace>-a` and `-b`.
            Fault::SharedKeyspace => namespace
                .rsplit_once('-')
                .map_or(namespace, |(shared, _)| shared),
            _ => namespace,
        };
        Ok(Arc::new(FaultyBucket {
            inner: self.inner.open(namespace).await?,
            fault: self.fault,
            sets: AtomicUsize::new(0),
            swap_lock: tokio::sync::Mutex::new(()),
        }))
    }
}

struct FaultyBucket {
    inner: Arc<dyn Bucket>,
    fault: Fault,
    sets: AtomicUsize,
    swap_lock: tokio::sync::Mutex<()>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A layer over the in-memory bucket: every call it does not break is forwarded.
#[async_trait]
impl LayeredBucket for FaultyBucket {
    fn inner(&self) -> &dyn Bucket {
        &*self.inner
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<()> {
        if matches!(self.fault, Fault::LosesEveryThirdWrite)
            && self.sets.fetch_add(1, Ordering::SeqCst) % 3 == 2
        {
            return Ok(());
        }
        self.inner.set(key, value).await
    }

    async fn set_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()> {
        match self.fault {
            Fault::TtlIgnored => self.inner.set(key, value).await,
            _ => self.inner.set_with_ttl(key, value, ttl).await,
        }
    }

    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage> {
        let page = self.inner.list_keys(cursor, limit).await?;
        match self.fault {
            Fault::ListStopsAfterFirstPage => Ok(KeyPage {
                keys: page.keys,
                cursor: None,
            }),
            _ => Ok(page),
        }
    }

    async fn increment(
        &self,
        key: &str,
        delta: i64,
        range: kv_core::CounterRange,
        attempt: &mut Attempt,
    ) -> Result<i64> {
        match self.fault {
            Fault::RacyIncrement => {
                let current = match self.inner.get(key).await? {
                    Some(bytes) => kv_core::counter::parse_counter(&bytes)?,
                    None => 0,
                };
                tokio::time::sleep(Duration::from_millis(1)).await;
                let next = kv_core::counter::add_delta(current, delta)?;
                self.inner
                    .set(key, kv_core::counter::encode_counter(next).into())
                    .await?;
                Ok(next)
            }
            _ => self.inner.increment(key, delta, range, attempt).await,
        }
    }

    async fn read_versioned(&self, key: &str) -> Result<Versioned> {
        match self.fault {
            Fault::CasComparesValues => {
                let value = self.inner.get(key).await?;
                let version = value
                    .as_deref()
                    .map_or(Version::Absent, |v| Version::Tag(hex(v)));
                Ok(Versioned { value, version })
            }
            _ => self.inner.read_versioned(key).await,
        }
    }

    async fn swap(
        &self,
        key: &str,
        expected: &Version,
        value: Bytes,
        attempt: &mut Attempt,
    ) -> Result<SwapOutcome> {
        match self.fault {
            Fault::CasIgnoresVersion => {
                // A network round trip's worth of latency, as a real backend has.
                tokio::time::sleep(Duration::from_millis(1)).await;
                self.inner.set(key, value).await?;
                Ok(SwapOutcome::Swapped)
            }
            Fault::CasComparesValues => {
                // Compare and write under one lock, so the only bug is comparing values.
                let _guard = self.swap_lock.lock().await;
                let current = self.inner.get(key).await?;
                let unchanged = match expected {
                    Version::Absent => current.is_none(),
                    Version::Tag(tag) => {
                        current.as_deref().map(hex).as_deref() == Some(tag.as_str())
                    }
                };
                if !unchanged {
                    return Ok(SwapOutcome::Conflict);
                }
                self.inner.set(key, value).await?;
                Ok(SwapOutcome::Swapped)
            }
            _ => self.inner.swap(key, expected, value, attempt).await,
        }
    }
}

async fn failing_cases(fault: Fault) -> BTreeSet<String> {
    let suite = Suite::new().await.expect("the conformance component loads");
    let provider = Arc::new(FaultyProvider {
        inner: MemoryProvider::new(),
        fault,
    });
    let target = Target::new("faulty", provider, Profile::plain("faulty"));
    let results = suite.run_all(&target, 4, &|_, _, _| {}).await;
    assert!(
        results.iter().all(|r| r.outcome != Outcome::Ignored),
        "{fault:?}: nothing may be skipped"
    );
    results
        .into_iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .map(|r| r.case)
        .collect()
}

fn names(cases: &[&str]) -> BTreeSet<String> {
    cases.iter().map(|c| c.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_keyspace_fails_exactly_the_isolation_cases() {
    assert_eq!(
        failing_cases(Fault::SharedKeyspace).await,
        names(&[
            "isolation_adversarial_keys",
            "isolation_counters_and_batches",
            "isolation_listing"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racy_increment_fails_exactly_the_concurrent_increment_case() {
    assert_eq!(
        failing_cases(Fault::RacyIncrement).await,
        // The racy increment also writes a total the u64 draft interface cannot return.
        names(&[
            "draft_increment_below_zero_leaves_value_unchanged",
            "increment_concurrent_exact"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cas_without_version_check_fails_every_conflict_case() {
    assert_eq!(
        failing_cases(Fault::CasIgnoresVersion).await,
        names(&[
            "cas_concurrent_loops_exact",
            "cas_deleted_meanwhile_fails",
            "cas_detects_rewrite_of_same_value",
            "cas_missing_key_created_meanwhile_fails",
            "cas_missing_key_set_and_deleted_meanwhile_fails",
            "cas_stale_fails_with_fresh_handle",
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn value_comparing_cas_fails_exactly_the_aba_case() {
    assert_eq!(
        failing_cases(Fault::CasComparesValues).await,
        names(&[
            "cas_detects_rewrite_of_same_value",
            "cas_missing_key_set_and_deleted_meanwhile_fails"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ignored_ttl_fails_exactly_the_expiry_case() {
    assert_eq!(
        failing_cases(Fault::TtlIgnored).await,
        names(&["ttl_expired_is_missing_everywhere"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncated_listing_fails_exactly_the_multi_page_cases() {
    assert_eq!(
        failing_cases(Fault::ListStopsAfterFirstPage).await,
        names(&[
            "draft_list_keys_u64_cursor",
            "list_keys_cursor_bound_to_store",
            "list_keys_invalid_cursor_rejected",
            "list_keys_pages_cover_all_exactly_once",
            "list_keys_with_changes_between_pages",
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_writes_fail_the_cases_that_read_back_single_writes() {
    // Every case that makes at least three single-key writes to one store and reads them back;
    // batch writes are not affected by this fault.
    assert_eq!(
        failing_cases(Fault::LosesEveryThirdWrite).await,
        names(&[
            "cas_detects_rewrite_of_same_value",
            "delete_many_with_missing_keys",
            "increment_concurrent_exact",
            "increment_not_an_integer_rejected",
            "isolation_adversarial_keys",
            "key_max_length_1024_bytes",
            "key_path_like_keys_distinct",
            "key_special_characters_roundtrip",
            "key_unicode_forms_distinct",
            "list_keys_excludes_deleted",
            "read_your_writes_same_handle",
            "value_number_and_json_looking_bytes",
            "writes_visible_across_instances",
        ])
    );
}
