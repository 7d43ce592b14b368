//! Histories under faults (docs/reliability.md#histories), the CI run of `wasi-kv check`:
//!
//! - `<provider>::all_nemeses`: every provider, two hosts of clients running every workload at
//!   once (registers, counters, swaps, listings) while the nemesis cycles through every fault
//!   the provider can take (lost replies, lost requests, a partition, a backend killed with
//!   `SIGKILL` and restarted on its data); the history must be valid.
//! - `checker::*`: the same runs over providers with one deliberate bug each (the bugs the
//!   exactly-once rules exist to prevent): the checker must find each one.
//!
//! Providers in `KV_REQUIRE` must run; others are ignored when their emulator is missing. With
//! `KV_REPORT_DIR` set, each provider's report is written to `DIR/histories/<provider>/`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kv_check::{AnomalyKind, Recorder, Validity, Workload};
use kv_conformance::histories::{
    self, CheckReport, Faults, NemesisKind, Network, Plan, Source, setup,
};
use kv_core::layer::{Layer, LayeredBucket, LayeredProvider};
use kv_core::{
    Attempt, Bucket, Bytes, CounterRange, ErrorKind, KvError, MemoryProvider, Provider, Result,
    SwapOutcome, Version,
};
use kv_testkit::emulator::Emulator;
use kv_testkit::faults::{Lossy, LossyState};
use kv_testkit::runtime;
use libtest_mimic::{Arguments, Failed, Trial};

mod common;

/// A short run that still visits every fault: 1 s quiet and 1–2 s of each fault (1–5 s of
/// partition), plus a restart.
fn ci_plan(seed: u64) -> Plan {
    Plan {
        workload: Workload::Mixed,
        nemesis: NemesisKind::All,
        clients: 4,
        time: Duration::from_secs(18),
        max_ops: 20_000,
        keys: 5,
        seed,
        rate: 300,
    }
}

async fn all_nemeses(provider: &str) -> std::result::Result<(), Failed> {
    let source = if matches!(provider, "memory" | "sqlite") {
        Source::InProcess
    } else {
        Source::Emulator {
            durable: Emulator::for_provider(provider)
                .is_some_and(|emulator| emulator.not_durable().is_none()),
        }
    };
    let setup = setup(&common::registry(), provider, source, 2).await?;
    let plan = ci_plan(0x5eed ^ provider.len() as u64);
    let limits = histories::limits();
    let hosts = histories::open_hosts(&setup.providers, &setup.namespace, &limits).await?;
    let recorder = Recorder::new();
    let recorded = histories::record(&hosts, &plan, &setup.faults, &recorder).await?;
    let verdict = histories::check(&recorded.history, &limits);
    let cycle = setup.faults.cycle();
    let report = CheckReport::new(
        provider,
        &setup.backend,
        &plan,
        2,
        0,
        recorded.elapsed,
        &recorded.history,
        recorded.events,
        verdict,
    );
    if let Some(dir) = std::env::var_os("KV_REPORT_DIR") {
        let dir = std::path::Path::new(&dir).join("histories").join(provider);
        report.write_dir(&dir, &recorded.history)?;
    }
    eprintln!("{}", report.summary_line());
    for kind in cycle {
        let injected = report
            .events
            .iter()
            .any(|e| e.nemesis == kind && e.action == "inject" && !e.detail.starts_with("failed"));
        if !injected {
            return Err(format!("{kind} was never injected: {:?}", report.events).into());
        }
    }
    if let Some(failed) = report
        .events
        .iter()
        .find(|e| e.detail.starts_with("failed"))
    {
        return Err(format!("the nemesis failed: {failed:?}").into());
    }
    if report.ok < 200 {
        return Err(format!("too few operations completed: {}", report.summary_line()).into());
    }
    if !report.is_valid() {
        return Err(format!("{}\n{}", report.summary_line(), report.verdict).into());
    }
    Ok(())
}

/// One deliberate bug of a provider, each one a rule the host keeps (docs/semantics.md).
#[derive(Clone, Copy, Debug)]
enum Bug {
    /// Each increment attempt is a new request (no request id): a retry after a lost reply
    /// applies it again (S6).
    IncrementWithoutRequestId,
    /// Each swap attempt is a new request: a retry after a lost reply sees its own write and
    /// reports a conflict for a swap that happened (S7).
    SwapWithoutRequestId,
    /// A write the backend applied is reported as throttled (a certain failure): what the
    /// host told guests before it said "outcome unknown" after an ambiguous attempt.
    AppliedWriteReportedThrottled,
    /// Every fifth acknowledged `set` is not written.
    LosesAcknowledgedWrites,
    /// Reads are served from a cache that is never invalidated for ten reads.
    StaleReads,
    /// Every listing page leaves out its first key (S5).
    ListingDropsAKey,
}

struct Buggy {
    bug: Bug,
    calls: Arc<AtomicU64>,
}

impl Layer for Buggy {
    fn layer(&self, inner: Arc<dyn Bucket>) -> Arc<dyn Bucket> {
        Arc::new(BuggyBucket {
            inner,
            bug: self.bug,
            calls: self.calls.clone(),
            cache: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }
}

/// Per key: reads served since the cached value was fetched, and that value.
type StaleCache = std::sync::Mutex<std::collections::HashMap<String, (u32, Option<Vec<u8>>)>>;

struct BuggyBucket {
    inner: Arc<dyn Bucket>,
    bug: Bug,
    calls: Arc<AtomicU64>,
    cache: StaleCache,
}

impl BuggyBucket {
    fn nth(&self, n: u64) -> bool {
        self.calls.fetch_add(1, Ordering::Relaxed) % n == n - 1
    }
}

#[async_trait]
impl LayeredBucket for BuggyBucket {
    fn inner(&self) -> &dyn Bucket {
        &*self.inner
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if !matches!(self.bug, Bug::StaleReads) {
            return self.inner.get(key).await;
        }
        if let Ok(mut cache) = self.cache.lock()
            && let Some((uses, value)) = cache.get_mut(key)
            && *uses < 10
        {
            *uses += 1;
            return Ok(value.clone());
        }
        let value = self.inner.get(key).await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key.to_string(), (0, value.clone()));
        }
        Ok(value)
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<()> {
        match self.bug {
            Bug::LosesAcknowledgedWrites if self.nth(5) => Ok(()),
            Bug::AppliedWriteReportedThrottled if self.nth(4) => {
                self.inner.set(key, value).await?;
                Err(KvError::new(ErrorKind::Throttled, "slow down (injected)")
                    .with_transient(false))
            }
            _ => self.inner.set(key, value).await,
        }
    }

    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<kv_core::KeyPage> {
        let mut page = self.inner.list_keys(cursor, limit).await?;
        if matches!(self.bug, Bug::ListingDropsAKey) && !page.keys.is_empty() {
            page.keys.remove(0);
        }
        Ok(page)
    }

    async fn increment(
        &self,
        key: &str,
        delta: i64,
        range: CounterRange,
        attempt: &mut Attempt,
    ) -> Result<i64> {
        match self.bug {
            Bug::IncrementWithoutRequestId => {
                self.inner
                    .increment(key, delta, range, &mut Attempt::new())
                    .await
            }
            _ => self.inner.increment(key, delta, range, attempt).await,
        }
    }

    async fn swap(
        &self,
        key: &str,
        expected: &Version,
        value: Bytes,
        attempt: &mut Attempt,
    ) -> Result<SwapOutcome> {
        match self.bug {
            Bug::SwapWithoutRequestId => {
                self.inner
                    .swap(key, expected, value, &mut Attempt::new())
                    .await
            }
            _ => self.inner.swap(key, expected, value, attempt).await,
        }
    }
}

/// Runs the workload on the in-memory store with `bug` under it and every third reply lost
/// (the bug sits below the lost replies, as a backend's would), and returns the verdict.
async fn buggy_run(bug: Bug, workload: Workload) -> std::result::Result<kv_check::Verdict, Failed> {
    let state = Arc::new(LossyState::default());
    let buggy: Arc<dyn Provider> = Arc::new(LayeredProvider::new(
        Arc::new(MemoryProvider::new()),
        Buggy {
            bug,
            calls: Arc::new(AtomicU64::new(0)),
        },
    ));
    let provider = Lossy::provider_with(buggy, &state);
    let faults = Faults {
        network: Network::InProcess(state),
        crash: None,
        kill_host: None,
    };
    let plan = Plan {
        workload,
        nemesis: NemesisKind::DropReply,
        clients: 4,
        time: Duration::from_secs(4),
        max_ops: 5_000,
        keys: 2,
        seed: 11,
        rate: 800,
    };
    let limits = histories::limits();
    let hosts = histories::open_hosts(&[provider.clone(), provider], "buggy", &limits).await?;
    let recorded = histories::record(&hosts, &plan, &faults, &Recorder::new()).await?;
    Ok(histories::check(&recorded.history, &limits))
}

async fn catches(
    bug: Bug,
    workload: Workload,
    kinds: &[AnomalyKind],
) -> std::result::Result<(), Failed> {
    let verdict = buggy_run(bug, workload).await?;
    if verdict.valid != Validity::Invalid {
        return Err(format!("{bug:?} went unnoticed: {verdict}").into());
    }
    let found: Vec<AnomalyKind> = verdict.anomalies.iter().map(|a| a.kind).collect();
    if !found.iter().any(|kind| kinds.contains(kind)) {
        return Err(
            format!("{bug:?}: expected one of {kinds:?}, found {found:?}\n{verdict}").into(),
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    kv_testkit::stay_on_loopback();
    let args = Arguments::from_args();
    let required = kv_testkit::required_targets();
    let mut trials = Vec::new();
    let names = ["memory", "sqlite"]
        .into_iter()
        .chain(Emulator::ALL.into_iter().map(Emulator::provider));
    for name in names {
        let local = matches!(name, "memory" | "sqlite");
        let is_required = required.iter().any(|r| r == name);
        let trial_name = format!("{name}::all_nemeses");
        if !local && !is_required && !kv_testkit::emulator::installed(name) {
            trials.push(
                Trial::test(trial_name, || Ok(()))
                    .with_ignored_flag(true)
                    .with_kind("unreachable"),
            );
            continue;
        }
        trials.push(Trial::test(trial_name, move || {
            runtime().block_on(all_nemeses(name))
        }));
    }
    use AnomalyKind::{
        CounterOutOfBounds, DuplicateCounterTotal, FailedOpVisible, ListingMissingKey,
        NotLinearizable,
    };
    let validation: [(&str, Bug, Workload, &[AnomalyKind]); 6] = [
        (
            "checker::finds_increments_applied_twice",
            Bug::IncrementWithoutRequestId,
            Workload::Counter,
            &[CounterOutOfBounds, DuplicateCounterTotal, NotLinearizable],
        ),
        (
            "checker::finds_swaps_reported_failed_that_happened",
            Bug::SwapWithoutRequestId,
            Workload::Cas,
            &[FailedOpVisible, NotLinearizable],
        ),
        (
            "checker::finds_applied_writes_reported_as_certain_failures",
            Bug::AppliedWriteReportedThrottled,
            Workload::Register,
            &[FailedOpVisible],
        ),
        (
            "checker::finds_lost_acknowledged_writes",
            Bug::LosesAcknowledgedWrites,
            Workload::Register,
            &[NotLinearizable],
        ),
        (
            "checker::finds_stale_reads",
            Bug::StaleReads,
            Workload::Register,
            &[NotLinearizable],
        ),
        (
            "checker::finds_listings_missing_a_key",
            Bug::ListingDropsAKey,
            Workload::List,
            &[ListingMissingKey],
        ),
    ];
    for (name, bug, workload, kinds) in validation {
        trials.push(Trial::test(name, move || {
            runtime().block_on(catches(bug, workload, kinds))
        }));
    }
    // Runs share the machine's two cores with emulators: one at a time keeps rates honest.
    let mut args = args;
    args.test_threads = Some(1);
    let conclusion = libtest_mimic::run(&args, trials);
    if conclusion.has_failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
