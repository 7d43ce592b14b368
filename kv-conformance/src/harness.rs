//! `cargo test` integration: one libtest-mimic trial per target x case (docs/architecture.md).
//!
//! A target whose backend cannot be reached is reported as ignored, unless its name is in
//! `KV_REQUIRE` (comma-separated; CI sets it), where that is a failure. A run in which nothing
//! passed fails, so a CI job that silently skipped everything cannot go green. With
//! `KV_REPORT_DIR` set, each target's results are also written there as the evidence reports
//! (`DIR/<target>/report.{json,xml,md}`), the same files `wasi-kv conformance --report-dir`
//! writes, so CI runs the suite once per provider and keeps the evidence.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kv_testkit::{required_targets, runtime};
use libtest_mimic::{Arguments, Failed, Trial};

use crate::report::{CaseResult, Outcome, Report};
use crate::runner::{CaseInfo, Suite, Target};
use crate::watch::{WATCH_LABEL, WatchSuite};

/// Connects to a target's backend; `Err` says why it is unreachable.
pub type Connect =
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<Target, String>> + Send>> + Send>;

/// A target the harness may run, by name.
pub struct TargetSource {
    /// The name used in trial names and in `KV_REQUIRE`.
    pub name: String,
    /// How to reach it.
    pub connect: Connect,
}

impl TargetSource {
    /// A source from an async connect function.
    pub fn new<F, Fut>(name: &str, connect: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Target, String>> + Send + 'static,
    {
        TargetSource {
            name: name.to_string(),
            connect: Box::new(move || Box::pin(connect())),
        }
    }
}

/// Builds the trials for `sources` and runs them; the `main` of a `harness = false` test.
pub fn main(sources: Vec<TargetSource>) -> ExitCode {
    let args = Arguments::from_args();
    // The suite, its batch cases built against Spin's draft2 WIT (the other `get-many` shape
    // under the same version string), and the cases run through Spin's own interface (Spin 2's
    // and Spin 4's).
    let suites = match runtime().block_on(async {
        anyhow::Ok(vec![
            Arc::new(Suite::new().await?),
            Arc::new(Suite::spin_shape().await?),
            Arc::new(Suite::spin_kv().await?),
            Arc::new(Suite::spin_kv_3().await?),
        ])
    }) {
        Ok(suites) => suites,
        Err(err) => {
            eprintln!("error: cannot load the conformance component: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    // The watch cases (S13): the runner writes, a watch-service component records.
    let watch = match WatchSuite::new() {
        Ok(watch) => Arc::new(watch),
        Err(err) => {
            eprintln!("error: cannot load the watch cases' recorder component: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    // Every case, labelled as its results are named, with the family that runs it.
    let all_cases = || {
        suites
            .iter()
            .flat_map(|suite| {
                suite
                    .cases()
                    .iter()
                    .map(move |case| (Family::Guest(suite.clone()), suite.label(), case))
            })
            .chain(
                watch
                    .cases()
                    .iter()
                    .map(|case| (Family::Watch(watch.clone()), WATCH_LABEL, case)),
            )
    };
    let required = required_targets();
    let started = SystemTime::now();
    let mut recorded: Vec<Recorded> = Vec::new();
    let mut trials = Vec::new();
    // The watch cases run after every guest case: each keeps a watcher polling its backend
    // (a listing every second on Cloud Storage and Cosmos DB), which, beside the guest cases'
    // load on a 2-core machine, starved the emulators in CI.
    let mut watch_trials = Vec::new();
    for name in &required {
        if !sources.iter().any(|source| &source.name == name) {
            let message =
                format!("KV_REQUIRE names {name:?}, which this test binary does not know");
            trials.push(Trial::test(format!("{name}::required"), move || {
                Err(Failed::from(message))
            }));
        }
    }
    for source in sources {
        let name = source.name.clone();
        let is_required = required.contains(&name);
        let connected = runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(120), (source.connect)())
                .await
                .unwrap_or_else(|_| Err("connecting took longer than 120 s".to_string()))
        });
        match connected {
            Ok(target) => {
                let target = Arc::new(target);
                let results = Arc::new(Mutex::new(Vec::new()));
                recorded.push(Recorded {
                    target: name.clone(),
                    backend: target.profile.backend.clone(),
                    results: results.clone(),
                });
                for (family, prefix, case) in all_cases() {
                    let skip = family.skip_reason(&target, case);
                    let label = format!("{prefix}{}", case.name);
                    if let Some(reason) = &skip {
                        // Skipped trials never run: record them as the report's skips.
                        lock(&results).push(CaseResult {
                            provider: name.clone(),
                            case: label.clone(),
                            rules: case.rules.clone(),
                            outcome: Outcome::Ignored,
                            reason: Some(reason.clone()),
                            duration_ms: 0,
                        });
                    }
                    let (target, case) = (target.clone(), case.clone());
                    let results = results.clone();
                    let is_watch = matches!(family, Family::Watch(_));
                    let trial = Trial::test(format!("{name}::{label}"), move || {
                        let _running = match family {
                            Family::Guest(_) => Some(GuestRunning::start()),
                            Family::Watch(_) => {
                                GuestRunning::wait_for_none();
                                None
                            }
                        };
                        let result = runtime().block_on(family.run_case(&target, &case));
                        lock(&results).push(result.clone());
                        match result.outcome {
                            Outcome::Failed => Err(Failed::from(result.reason.unwrap_or_default())),
                            _ => Ok(()),
                        }
                    });
                    let trial = match skip {
                        Some(reason) => {
                            trial.with_ignored_flag(true).with_kind(short_kind(&reason))
                        }
                        None => trial,
                    };
                    if is_watch {
                        watch_trials.push(trial);
                    } else {
                        trials.push(trial);
                    }
                }
            }
            Err(reason) => {
                for (_, prefix, case) in all_cases() {
                    let trial_name = format!("{name}::{prefix}{}", case.name);
                    if is_required {
                        let message = format!("{name} is in KV_REQUIRE but unreachable: {reason}");
                        trials.push(Trial::test(trial_name, move || Err(Failed::from(message))));
                    } else {
                        trials.push(
                            Trial::test(trial_name, || Ok(()))
                                .with_ignored_flag(true)
                                .with_kind("unreachable"),
                        );
                    }
                }
                if !is_required {
                    eprintln!("note: {name} is unreachable, its cases are ignored: {reason}");
                }
            }
        }
    }
    trials.append(&mut watch_trials);
    let listing = args.list;
    let conclusion = libtest_mimic::run(&args, trials);
    if let (false, Some(dir)) = (listing, std::env::var_os("KV_REPORT_DIR")) {
        let order: Vec<String> = all_cases()
            .map(|(_, prefix, case)| format!("{prefix}{}", case.name))
            .collect();
        for Recorded {
            target: name,
            backend,
            results,
        } in recorded
        {
            let mut results = std::mem::take(&mut *lock(&results));
            if results
                .iter()
                .all(|result| result.outcome == Outcome::Ignored)
            {
                continue; // filtered out: no evidence to write
            }
            results.sort_by_key(|result| order.iter().position(|case| *case == result.case));
            let report = Report::new(&name, &backend, started, results);
            let target_dir = std::path::Path::new(&dir).join(&name);
            match report.write_dir(&target_dir) {
                Ok(()) => eprintln!(
                    "{name}: {} (reports in {})",
                    report.summary_line(),
                    target_dir.display()
                ),
                Err(err) => {
                    eprintln!(
                        "error: writing the reports into {}: {err}",
                        target_dir.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if conclusion.has_failed() {
        return ExitCode::FAILURE;
    }
    if !listing && conclusion.num_passed == 0 {
        eprintln!("error: no conformance case ran (every target unreachable or filtered out)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Guest trials running now. Trials are handed to the test threads in list order and the
/// watch trials come last, so once one starts every guest trial has started: it waits for
/// those still running, and the watch cases run on backends nothing else loads (beside the
/// guest cases, in CI, the listing feeds of Cloud Storage and Cosmos DB starved).
static GUEST_TRIALS_RUNNING: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// One guest trial counted in [`GUEST_TRIALS_RUNNING`] while it lives.
struct GuestRunning;

impl GuestRunning {
    fn start() -> GuestRunning {
        GUEST_TRIALS_RUNNING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        GuestRunning
    }

    /// Until no guest trial runs (each is bounded by its case timeout).
    fn wait_for_none() {
        while GUEST_TRIALS_RUNNING.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for GuestRunning {
    fn drop(&mut self) {
        GUEST_TRIALS_RUNNING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What runs a case: a guest suite, or the watch cases.
enum Family {
    Guest(Arc<Suite>),
    Watch(Arc<WatchSuite>),
}

impl Family {
    fn skip_reason(&self, target: &Target, case: &CaseInfo) -> Option<String> {
        match self {
            Family::Guest(_) => target.skip_reason(case),
            Family::Watch(watch) => watch.skip_reason(target, case),
        }
    }

    async fn run_case(&self, target: &Target, case: &CaseInfo) -> CaseResult {
        match self {
            Family::Guest(suite) => suite.run_case(target, case).await,
            Family::Watch(watch) => watch.run_case(target, case).await,
        }
    }
}

/// The results one target's trials record, for its report.
struct Recorded {
    target: String,
    backend: String,
    results: Arc<Mutex<Vec<CaseResult>>>,
}

/// The results recorded so far; a trial that panicked while holding the lock loses nothing.
fn lock(results: &Mutex<Vec<CaseResult>>) -> std::sync::MutexGuard<'_, Vec<CaseResult>> {
    results
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn short_kind(reason: &str) -> String {
    if reason.contains("reports no changes") {
        "no changes".to_string()
    } else if reason.contains("expiry") {
        "no expiry".to_string()
    } else if reason.contains("TTL") {
        "no ttl".to_string()
    } else if reason.contains("compare-and-swap") {
        "no cas".to_string()
    } else {
        "divergence".to_string()
    }
}
