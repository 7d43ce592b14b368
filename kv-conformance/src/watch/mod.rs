//! The watch cases (docs/semantics.md S13): the runner writes to a store through the host, a
//! `watch-service` component (the recorder, `guest-watch/`) receives the changes through the
//! same delivery `wasi-kv watch` runs (`kv_watch::component`) and records each one into a
//! store of its own, and [`check`] judges what it recorded against what was written.
//!
//! Each case gets a fresh namespace of the target's provider to watch; the recorder's `audit`
//! store and the watcher's checkpoint and dead letters live in an in-memory store beside it,
//! so the watched keys hold only what the runner wrote. A provider without a change source,
//! or without a guarantee a case needs, is reported as ignored with the reason its
//! capabilities give.

pub mod check;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kv_core::watch::WatchSupport;
use kv_core::{Access, Backoff, KvStore, MemoryProvider, Stores, SwapOutcome};
use kv_watch::component::{CallLimits, WatchPlan, WatcherComponent, Watching};
use kv_watch::{Delivered, WatchOptions};
use tokio::task::JoinHandle;

use crate::report::CaseResult;
use crate::runner::{CaseInfo, Target, run_cases, timed_case};
use check::{Event, Verdict, WatchHistory, Write};

/// Result names of the watch cases start with this.
pub const WATCH_LABEL: &str = "watch/";

/// The watched store, the recorder's log, and the watcher's own records.
const DATA: &str = "data";
const AUDIT: &str = "audit";
const STATE: &str = "watch-state";

/// Deliveries of a change before it is dead-lettered in the trap case (the others keep the
/// default, 5, and fail at once on any dead letter).
const TRAP_ATTEMPTS: u32 = 3;

/// Writes of the burst case, over [`BURST_KEYS`] keys by [`BURST_WRITERS`] writers.
pub const BURST_WRITES: usize = 10_000;
const BURST_KEYS: usize = 100;
const BURST_WRITERS: usize = 8;

/// Wall-clock limit of one watch case: longer than a guest case's, since a case waits for a
/// change source that polls a backend other cases load too.
pub const WATCH_CASE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a case may wait, in all, for what it wrote to arrive: within
/// [`WATCH_CASE_TIMEOUT`], with time left to stop its watchers and report why.
const CASE_BUDGET: Duration = Duration::from_secs(250);

/// How long a watcher runs on once everything expected arrived, before it is stopped and the
/// history judged again: what a wrong extra event (a delete of a key that stays, a value
/// after the last one) needs to show up, two feed polls.
const SETTLE: Duration = Duration::from_millis(1200);

/// A change read and checkpointed at once in the restart case: small, so the checkpoint
/// moves while the first watcher runs and the repeats after the restart are bounded.
const RESTART_BATCH: usize = 16;

/// The cases: (name, what a pass means, needs TTL).
const CASES: &[(&str, &str, bool)] = &[
    (
        "every_change_is_delivered_in_order",
        "sets, overwrites, deletes, batches, an increment and a swap each arrive, in order per \
         key, with the value written (or, where declared, the latest); deleting a missing key \
         delivers nothing",
        false,
    ),
    (
        "the_draft_watch_world_gets_every_change",
        "the same writes reach a watcher built against wasi:keyvalue@0.2.0-draft",
        false,
    ),
    (
        "a_failed_delivery_is_retried_then_dead_lettered",
        "a change whose delivery traps once arrives on the next attempt; one that always traps \
         is written to the dead-letter store with its value after 3 attempts, and delivery goes \
         on",
        false,
    ),
    (
        "a_watcher_stopped_abruptly_resumes_from_its_checkpoint",
        "a watcher aborted mid-stream and started again resumes from its checkpoint: nothing \
         written before, during or after the stop is lost (every value where the feed is \
         durable, repeating at most two batches; the final state after a resync where it is \
         not), and after a clean stop a durable feed repeats nothing",
        false,
    ),
    (
        "two_watchers_each_get_every_change",
        "two watchers of one store, each with its own checkpoint, both receive every change",
        false,
    ),
    (
        "a_burst_of_writes_arrives_whole",
        "10,000 writes (fewer where the backend's profile says why) by 8 concurrent writers \
         over 100 keys all arrive, in order per key",
        false,
    ),
    (
        "an_expired_key_is_delivered_as_a_delete",
        "a key whose 3 s TTL runs out is delivered as on-delete; a key without one is not",
        true,
    ),
];

/// The watch cases, with the recorder compiled in both WIT versions; cheap to share.
pub struct WatchSuite {
    recorder: Arc<WatcherComponent>,
    recorder_draft: Arc<WatcherComponent>,
    cases: Vec<CaseInfo>,
    run_id: String,
    one_at_a_time: tokio::sync::Semaphore,
}

impl std::fmt::Debug for WatchSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchSuite")
            .field("cases", &self.cases.len())
            .finish()
    }
}

impl WatchSuite {
    /// Compiles the recorder components.
    pub fn new() -> anyhow::Result<WatchSuite> {
        let limits = CallLimits {
            // As `wasi-kv watch`'s default: a stalled emulator is a retry, not a dead letter.
            time_limit: Duration::from_secs(30),
            memory_limit: 64 * 1024 * 1024,
            envs: Vec::new(),
        };
        let recorder = WatcherComponent::from_bytes(
            crate::guests::WATCH_RECORDER,
            "the recorder component",
            limits.clone(),
        )?;
        let recorder_draft = WatcherComponent::from_bytes(
            crate::guests::WATCH_RECORDER_DRAFT,
            "the draft recorder component",
            limits,
        )?;
        let cases = CASES
            .iter()
            .map(|&(name, summary, needs_ttl)| CaseInfo {
                name: name.to_string(),
                rules: vec!["S13".to_string()],
                summary: summary.to_string(),
                needs_ttl,
                needs_cas: false,
                workers: 0,
            })
            .collect();
        Ok(WatchSuite {
            recorder: Arc::new(recorder),
            recorder_draft: Arc::new(recorder_draft),
            cases,
            run_id: format!("{:08x}", rand::random::<u32>()),
            one_at_a_time: tokio::sync::Semaphore::new(1),
        })
    }

    /// The cases, in report order.
    pub fn cases(&self) -> &[CaseInfo] {
        &self.cases
    }

    /// Keeps only the cases whose name (with its `watch/` label) contains one of `patterns`
    /// (all of them when `patterns` is empty); how many are left.
    pub fn select(&mut self, patterns: &[String]) -> usize {
        if !patterns.is_empty() {
            self.cases.retain(|case| {
                let label = format!("{WATCH_LABEL}{}", case.name);
                patterns.iter().any(|pattern| label.contains(pattern))
            });
        }
        self.cases.len()
    }

    /// Why `case` is not run against `target`, if it is not.
    pub fn skip_reason(&self, target: &Target, case: &CaseInfo) -> Option<String> {
        let Some(support) = target.watched_provider().capabilities().watch else {
            return Some(format!(
                "the {} provider reports no changes (no change source: docs/watch.md)",
                target.name
            ));
        };
        if let Some(reason) = target.skip_reason(case) {
            return Some(reason);
        }
        if case.needs_ttl && !support.reports_expiry {
            return Some(format!(
                "the {} provider does not report expiry promptly (reports_expiry: false)",
                target.name
            ));
        }
        None
    }

    /// Runs one case (or reports why it is ignored), once no other watch case of this suite
    /// runs: each keeps watchers polling their backend, and two at once beside the guest
    /// cases starved the emulators of a 2-core CI machine.
    pub async fn run_case(&self, target: &Target, case: &CaseInfo) -> CaseResult {
        let skip = self.skip_reason(target, case);
        let _turn = match skip {
            Some(_) => None,
            None => self.one_at_a_time.acquire().await.ok(),
        };
        timed_case(
            target,
            WATCH_LABEL,
            case,
            skip,
            WATCH_CASE_TIMEOUT,
            self.execute(target, case),
        )
        .await
    }

    /// Runs every case, `jobs` at a time, calling `progress` after each.
    pub async fn run_all(
        &self,
        target: &Target,
        jobs: usize,
        progress: &(dyn Fn(&CaseResult, usize, usize) + Sync),
    ) -> Vec<CaseResult> {
        run_cases(&self.cases, WATCH_LABEL, jobs, progress, |case| {
            self.run_case(target, case)
        })
        .await
    }

    async fn execute(&self, target: &Target, case: &CaseInfo) -> Result<(), String> {
        let support = target
            .watched_provider()
            .capabilities()
            .watch
            .ok_or("the provider reports no changes")?;
        let namespace = format!(
            "{}-{}-watch-{}-{:08x}",
            target.namespace_prefix,
            self.run_id,
            self.cases
                .iter()
                .position(|c| c.name == case.name)
                .unwrap_or(usize::MAX),
            rand::random::<u32>()
        );
        let bench = Bench {
            target,
            namespace,
            support,
            deadline: Instant::now() + CASE_BUDGET,
        };
        match case.name.as_str() {
            "every_change_is_delivered_in_order" => bench.every_change(&self.recorder).await,
            "the_draft_watch_world_gets_every_change" => {
                bench.every_change(&self.recorder_draft).await
            }
            "a_failed_delivery_is_retried_then_dead_lettered" => {
                bench.retried_then_dead_lettered(&self.recorder).await
            }
            "a_watcher_stopped_abruptly_resumes_from_its_checkpoint" => {
                bench.resumes_after_abort(&self.recorder).await
            }
            "two_watchers_each_get_every_change" => bench.two_watchers(&self.recorder).await,
            "a_burst_of_writes_arrives_whole" => bench.burst(&self.recorder).await,
            "an_expired_key_is_delivered_as_a_delete" => bench.expiry(&self.recorder).await,
            other => Err(format!("no watch case is named {other:?}")),
        }
    }
}

/// One case's target and namespace.
struct Bench<'a> {
    target: &'a Target,
    namespace: String,
    support: WatchSupport,
    /// When the case stops waiting ([`CASE_BUDGET`]).
    deadline: Instant,
}

/// One watcher's stores: the watched namespace, and its own log and records in memory.
struct Side {
    stores: Arc<Stores>,
    data: KvStore,
    audit: KvStore,
    state: KvStore,
    /// Dead letters are what the case checks (the trap case); anywhere else the first one
    /// fails the case at once, with its error.
    letters_expected: bool,
    /// Attempts the host retried of writes to the data store: each may have applied twice
    /// (a lost reply), which is a second change of the backend, delivered as one.
    retried_writes: Arc<RetriedWrites>,
}

/// Counts retried attempts of the data store's writes (`--faults lossy` loses replies).
#[derive(Default)]
struct RetriedWrites(std::sync::atomic::AtomicUsize);

impl RetriedWrites {
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl kv_core::observe::Observer for RetriedWrites {
    fn call(&self, call: &kv_core::observe::StoreCall<'_>) {
        let write = !matches!(call.op, "get" | "get-many" | "exists" | "list-keys");
        if call.store == DATA && write {
            let retries = call.attempts.saturating_sub(call.calls) as usize;
            self.0
                .fetch_add(retries, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A watcher running on its own task; dropped (a case that failed early), it is aborted, so
/// no watcher outlives its case.
struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<Vec<(String, Delivered)>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Running {
    /// Fails if the delivery has stopped by itself (an error: it never stops otherwise).
    fn check_alive(&mut self) -> Result<(), String> {
        if self.task.is_finished() {
            return Err("the watcher stopped by itself before every change arrived".into());
        }
        Ok(())
    }

    /// A clean stop: checkpoints saved. What was delivered.
    async fn stop(mut self) -> Result<Delivered, String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let stopped = tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .map_err(|_| "the watcher did not stop within 20 s".to_string())?
            .map_err(|err| format!("the watcher task failed: {err}"))?
            .map_err(|err| format!("the watcher stopped with an error: {err:#}"))?;
        Ok(stopped
            .into_iter()
            .map(|(_, delivered)| delivered)
            .next()
            .unwrap_or_default())
    }

    /// An abrupt stop, as a kill: the delivery is dropped wherever it is, no checkpoint saved
    /// beyond the last batch's, and has ended when this returns (so nothing it records can
    /// be taken for the next run's).
    async fn abort(mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }
}

/// The writes of one writer, per key, as [`check`] wants them.
#[derive(Default, Clone)]
struct Written {
    writes: BTreeMap<String, Vec<Write>>,
}

impl Written {
    fn live(&self, key: &str) -> bool {
        matches!(
            self.writes.get(key).and_then(|writes| writes.last()),
            Some(Write::Set(_))
        )
    }

    async fn set(&mut self, data: &KvStore, key: &str, value: &[u8]) -> Result<(), String> {
        data.set(key, value.to_vec())
            .await
            .map_err(|err| format!("set {key}: {err}"))?;
        self.record(key, Write::Set(value.to_vec()));
        Ok(())
    }

    /// Deletes `key`; a delete of a missing key is no change, and not recorded.
    async fn delete(&mut self, data: &KvStore, key: &str) -> Result<(), String> {
        data.delete(key)
            .await
            .map_err(|err| format!("delete {key}: {err}"))?;
        if self.live(key) {
            self.record(key, Write::Delete);
        }
        Ok(())
    }

    fn record(&mut self, key: &str, write: Write) {
        self.writes.entry(key.to_string()).or_default().push(write);
    }

    fn merge(&mut self, other: Written) {
        for (key, writes) in other.writes {
            self.writes.entry(key).or_default().extend(writes);
        }
    }
}

fn lossy(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

impl Bench<'_> {
    /// Stores for one watcher: the case's namespace of the target's provider, and a fresh
    /// in-memory store for its log and records.
    async fn side(&self) -> Result<Side, String> {
        let own = Arc::new(MemoryProvider::new());
        let retried_writes = Arc::new(RetriedWrites::default());
        let stores = Arc::new(
            Stores::builder(self.target.limits.clone())
                .observer(retried_writes.clone())
                .store(
                    DATA,
                    self.target.watched_provider().clone(),
                    &self.namespace,
                    Access::ReadWrite,
                )
                .store(AUDIT, own.clone(), "audit", Access::ReadWrite)
                .store(STATE, own, "state", Access::ReadWrite)
                .build(),
        );
        let open = |name: &'static str| {
            let stores = stores.clone();
            async move {
                stores
                    .open(name)
                    .await
                    .map_err(|err| format!("opening {name}: {err}"))
            }
        };
        Ok(Side {
            data: open(DATA).await?,
            audit: open(AUDIT).await?,
            state: open(STATE).await?,
            stores,
            letters_expected: false,
            retried_writes,
        })
    }

    /// Starts `component` watching `side`'s data store as `name`, with `delivery`'s reads and
    /// retries; every change made after this returns is delivered.
    async fn start_with(
        &self,
        component: &Arc<WatcherComponent>,
        side: &Side,
        name: &str,
        delivery: WatchOptions,
    ) -> Result<Running, String> {
        let plan = WatchPlan {
            name: name.to_string(),
            watched: vec![DATA.to_string()],
            state: STATE.to_string(),
            dead_letters: None,
            delivery,
        };
        let watching = Watching::start(component.clone(), &plan, side.stores.clone())
            .await
            .map_err(|err| format!("starting the watcher: {err:#}"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(watching.run_or_kill(
            async move {
                let _ = stopped.await;
            },
            async move {
                let _ = killed.await;
            },
        ));
        Ok(Running {
            stop: Some(stop),
            kill: Some(kill),
            task,
        })
    }

    /// [`Bench::start_with`] the default delivery options.
    async fn start(
        &self,
        component: &Arc<WatcherComponent>,
        side: &Side,
        name: &str,
    ) -> Result<Running, String> {
        self.start_with(component, side, name, WatchOptions::default())
            .await
    }

    /// Waits until nothing `history` expects is missing (its events read from `log` as they
    /// arrive), a rule is broken, or the case's budget is spent; the last verdict.
    async fn arrival(
        &self,
        side: &Side,
        log: &mut AuditLog,
        history: &mut WatchHistory,
        every_value: bool,
        watcher: &mut Running,
    ) -> Result<Verdict, String> {
        loop {
            if !side.letters_expected {
                no_dead_letters(side).await?;
            }
            log.read(&mut history.events).await?;
            let verdict = history.check(every_value);
            let settled = verdict.missing.is_empty() || !verdict.violations.is_empty();
            if settled || Instant::now() >= self.deadline {
                return Ok(verdict);
            }
            watcher.check_alive()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Lets `watcher` run on for [`SETTLE`], stops it, reads what arrived meanwhile and
    /// judges the whole history, knowing now where the run resynchronised (`first_event`:
    /// the index of the run's first event).
    async fn conclude(
        &self,
        log: &mut AuditLog,
        history: &mut WatchHistory,
        every_value: bool,
        watcher: Running,
        first_event: usize,
    ) -> Result<Delivered, String> {
        tokio::time::sleep(SETTLE).await;
        let delivered = watcher.stop().await?;
        log.read(&mut history.events).await?;
        for &(began, ended) in &delivered.resync_bounds {
            let (began, ended) = (first_event + began as usize, first_event + ended as usize);
            history.new_runs.extend([began, ended]);
            history.resyncs.push(began);
        }
        let mut verdict = history.check(every_value);
        // A call that failed after its event was recorded (a time limit reached at its end)
        // is delivered again, as at-least-once allows.
        if verdict.repeated_deletes.len() as u64 <= delivered.failures {
            verdict.repeated_deletes.clear();
        }
        if verdict.passed() {
            return Ok(delivered);
        }
        Err(format!(
            "{} ({} events, {} resyncs)",
            verdict.summary(),
            history.events.len(),
            delivered.resyncs
        ))
    }

    /// Waits for `written` to arrive at `side`'s watcher, then stops it and judges; a dead
    /// letter fails it with the letter's error.
    async fn judge(
        &self,
        side: &Side,
        mut watcher: Running,
        written: Written,
    ) -> Result<(), String> {
        let mut history = WatchHistory {
            writes: written.writes,
            ..WatchHistory::default()
        };
        let every_value = self.support.every_value;
        let mut log = AuditLog::new(&side.audit);
        self.arrival(side, &mut log, &mut history, every_value, &mut watcher)
            .await?;
        let judged = self
            .conclude(&mut log, &mut history, every_value, watcher, 0)
            .await;
        // A dead letter is the reason for what is missing: report it first.
        no_dead_letters(side).await?;
        judged.map(drop)
    }

    /// Sets, overwrites, deletes (of present and missing keys), batches, an increment and a
    /// swap, each recorded as the write it is.
    async fn every_change(&self, component: &Arc<WatcherComponent>) -> Result<(), String> {
        let side = self.side().await?;
        let watcher = self.start(component, &side, "recorder").await?;
        let data = &side.data;
        let mut written = Written::default();
        written.set(data, "plain", b"p1").await?;
        for value in ["o1", "o2", "o3"] {
            written.set(data, "overwritten", value.as_bytes()).await?;
        }
        written.set(data, "deleted", b"d1").await?;
        written.delete(data, "deleted").await?;
        // Deleting what is gone, or was never there, changes nothing.
        written.delete(data, "deleted").await?;
        written.delete(data, "never-written").await?;
        written.set(data, "reborn", b"r1").await?;
        written.delete(data, "reborn").await?;
        written.set(data, "reborn", b"r2").await?;
        written.set(data, "empty", b"").await?;
        // Invalid UTF-8, compared as bytes: two such values print alike.
        written
            .set(data, "binary", &[0, 0x9f, 0x92, 0x96, 0xff, b'\n'])
            .await?;
        written
            .set(data, "binary", &[0, 0x9f, 0x92, 0x96, 0xfe, b'\n'])
            .await?;
        let batch: Vec<(String, Vec<u8>)> = (0..3)
            .map(|i| (format!("batch-{i}"), format!("m{i}").into_bytes()))
            .collect();
        data.set_many(batch.clone())
            .await
            .map_err(|err| format!("set-many: {err}"))?;
        for (key, value) in batch {
            written.record(&key, Write::Set(value));
        }
        data.delete_many(&["batch-1".to_string(), "never-written-2".to_string()])
            .await
            .map_err(|err| format!("delete-many: {err}"))?;
        written.record("batch-1", Write::Delete);
        for delta in [5, 2] {
            data.increment("counter", delta)
                .await
                .map_err(|err| format!("increment: {err}"))?;
            // What an increment leaves is the provider's encoding of the number: read it.
            let value = data
                .get("counter")
                .await
                .map_err(|err| format!("get counter: {err}"))?
                .ok_or("the counter is missing after an increment")?;
            written.record("counter", Write::Set(value));
        }
        if data.capabilities().cas {
            for value in ["s1", "s2"] {
                let read = data
                    .read_versioned("swapped")
                    .await
                    .map_err(|err| format!("cas read: {err}"))?;
                match data
                    .swap("swapped", &read.version, value.as_bytes().to_vec())
                    .await
                {
                    Ok(SwapOutcome::Swapped) => {
                        written.record("swapped", Write::Set(value.as_bytes().to_vec()))
                    }
                    Ok(SwapOutcome::Conflict) => {
                        return Err("a swap nothing raced with conflicted".into());
                    }
                    Err(err) => return Err(format!("swap: {err}")),
                }
            }
        }
        self.judge(&side, watcher, written).await
    }

    /// A value the recorder traps on once, one it always traps on, then a plain one.
    async fn retried_then_dead_lettered(
        &self,
        component: &Arc<WatcherComponent>,
    ) -> Result<(), String> {
        let mut side = self.side().await?;
        side.letters_expected = true;
        let delivery = WatchOptions {
            max_attempts: TRAP_ATTEMPTS,
            backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(500),
            },
            ..WatchOptions::default()
        };
        let mut watcher = self
            .start_with(component, &side, "recorder", delivery)
            .await?;
        let data = &side.data;
        let mut written = Written::default();
        written.set(data, "flaky", b"trap-once 1").await?;
        let poison = b"trap-always 1";
        data.set("poison", poison.to_vec())
            .await
            .map_err(|err| format!("set poison: {err}"))?;
        written.set(data, "after", b"a1").await?;
        // Delivery goes on after the poison, and only one key's changes are ordered: a
        // listing may deliver `after` first. Wait for the letter too.
        let dead = "watch/recorder/data/dead/";
        while list_all(&side.state, dead).await?.is_empty() {
            if Instant::now() >= self.deadline {
                return Err("no dead letter within the case's time".into());
            }
            watcher.check_alive()?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The poison never reaches the log (the recorder traps before writing).
        let mut history = WatchHistory {
            writes: written.writes,
            ..WatchHistory::default()
        };
        let mut log = AuditLog::new(&side.audit);
        self.arrival(
            &side,
            &mut log,
            &mut history,
            self.support.every_value,
            &mut watcher,
        )
        .await?;
        self.conclude(&mut log, &mut history, self.support.every_value, watcher, 0)
            .await?;
        let attempts = side
            .audit
            .get("attempts/flaky")
            .await
            .map_err(|err| format!("get attempts/flaky: {err}"))?;
        if attempts
            .as_deref()
            .map(lossy)
            .and_then(|n| n.parse::<u64>().ok())
            < Some(2)
        {
            return Err(format!(
                "the change that trapped once was not delivered again (attempts/flaky = {:?})",
                attempts.as_deref().map(lossy)
            ));
        }
        // One letter, or more where the poison was delivered again (a resync, a retried set):
        // each names it, with its value, after the attempts allowed.
        let expected_value = base64::engine::general_purpose::STANDARD.encode(poison);
        for letter in list_all(&side.state, dead).await? {
            let letter = read_letter(&side.state, &letter).await?;
            let fields = (
                letter["op"].as_str(),
                letter["key"].as_str(),
                letter["value_base64"].as_str(),
                letter["attempts"].as_u64(),
            );
            if fields
                != (
                    Some("set"),
                    Some("poison"),
                    Some(expected_value.as_str()),
                    Some(u64::from(TRAP_ATTEMPTS)),
                )
            {
                return Err(format!(
                    "a dead letter does not name the change that always trapped: {letter}"
                ));
            }
        }
        Ok(())
    }

    /// A watcher aborted mid-stream (after 64 events where the feed is durable, 20 where it
    /// lists) while writes go on, more writes while
    /// none runs, and a new watcher of the same name resuming from the checkpoint, then
    /// following what comes next; then, where the feed is durable, a clean stop and a third
    /// watcher that repeats nothing. [`PHASES`] says how far each phase writes (see
    /// [`write_keys`] for what each number writes).
    async fn resumes_after_abort(&self, component: &Arc<WatcherComponent>) -> Result<(), String> {
        let side = self.side().await?;
        let delivery = WatchOptions {
            batch: RESTART_BATCH,
            ..WatchOptions::default()
        };
        let mut first = self
            .start_with(component, &side, "recorder", delivery.clone())
            .await?;
        let data = side.data.clone();
        let writer = tokio::spawn(async move {
            let mut written = Written::default();
            // Ends with every slot's key live: a feed that lists sees them.
            write_keys(&data, &mut written, "k", 0..PHASES[0]).await?;
            Ok::<_, String>(written)
        });
        let mut log = AuditLog::new(&side.audit);
        let mut events = Vec::new();
        // Several batches in on a durable feed, so its checkpoint has had to move; a feed that
        // lists may see only the 20 live keys.
        let abort_after = if self.support.durable {
            4 * RESTART_BATCH
        } else {
            20
        };
        while events.len() < abort_after {
            log.read(&mut events).await?;
            first.check_alive()?;
            if Instant::now() >= self.deadline {
                return Err(format!("only {} events arrived", events.len()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first.abort().await;
        log.read(&mut events).await?;
        let restart_at = events.len();
        let mut written = writer
            .await
            .map_err(|err| format!("the writer failed: {err}"))??;
        // And while no watcher runs.
        write_keys(&side.data, &mut written, "k", PHASES[0]..PHASES[1]).await?;
        let durable = self.support.durable;
        let mut history = WatchHistory {
            writes: written.writes.clone(),
            events,
            new_runs: vec![restart_at],
            ..WatchHistory::default()
        };
        if !durable {
            // A feed that does not outlive its watcher resynchronises from a listing: the
            // writes made while none ran arrive as their keys' final values.
            history.resyncs.push(restart_at);
            history.coalesced = written.writes.keys().cloned().collect();
        }
        let every_value = self.support.every_value;
        let mut second = self
            .start_with(component, &side, "recorder", delivery.clone())
            .await?;
        let verdict = self
            .arrival(&side, &mut log, &mut history, every_value, &mut second)
            .await?;
        // Out-of-order reports are judged at the end, with the run's resyncs known.
        if !verdict.violations.is_empty() || !verdict.missing.is_empty() {
            return Err(format!(
                "after the restart: {} ({} events, restart at event {restart_at})",
                verdict.summary(),
                history.events.len()
            ));
        }
        if durable {
            // Delivered in both runs: the stretch after the last checkpoint saved, at most the
            // batch under way when the watcher was killed (a checkpoint that never moved
            // repeats everything before it). Counted by event, not as events beyond writes:
            // a write whose reply was lost and that was applied again is two changes of the
            // backend (under `--faults lossy`), and each write here is a distinct event.
            let first_run: std::collections::HashSet<&Event> =
                history.events[..restart_at].iter().collect();
            let repeated = history.events[restart_at..]
                .iter()
                .filter(|event| first_run.contains(event))
                .count();
            // Beyond those, an event more than the writes is a change delivered twice within
            // a run, which only a write the host retried (applied twice) explains.
            let writes: usize = written.writes.values().map(Vec::len).sum();
            let within_runs = history
                .events
                .len()
                .saturating_sub(writes)
                .saturating_sub(repeated);
            let retried = side.retried_writes.count();
            if within_runs > retried {
                return Err(format!(
                    "{within_runs} changes delivered twice within a run, beyond the {retried} \
                     write attempts the host retried"
                ));
            }
            if repeated > RESTART_BATCH {
                return Err(format!(
                    "{repeated} changes delivered twice around the restart: the checkpoint \
                     did not follow the deliveries (batches of {RESTART_BATCH})"
                ));
            }
        }
        // The restarted watcher follows what comes next as it came.
        let mut after = Written {
            writes: std::mem::take(&mut history.writes),
        };
        write_keys(&side.data, &mut after, "after", 0..PHASES[2]).await?;
        history.writes = after.writes;
        self.arrival(&side, &mut log, &mut history, every_value, &mut second)
            .await?;
        let concluded = self
            .conclude(&mut log, &mut history, every_value, second, restart_at)
            .await;
        no_dead_letters(&side).await?;
        concluded.map_err(|err| format!("restart at event {restart_at}: {err}"))?;
        if !durable {
            return Ok(());
        }
        // After a clean stop, a durable feed resumes exactly where it stopped.
        let before = history.events.len();
        let mut third = self
            .start_with(component, &side, "recorder", delivery)
            .await?;
        let mut last = Written::default();
        last.set(&side.data, "last", b"z").await?;
        let mut tail = WatchHistory {
            writes: last.writes,
            ..WatchHistory::default()
        };
        self.arrival(&side, &mut log, &mut tail, every_value, &mut third)
            .await?;
        self.conclude(&mut log, &mut tail, every_value, third, 0)
            .await
            .map_err(|err| format!("after a clean stop (events from {before} on): {err}"))?;
        Ok(())
    }

    /// Two watchers, each with its own stores for its log and checkpoint.
    async fn two_watchers(&self, component: &Arc<WatcherComponent>) -> Result<(), String> {
        let (one, two) = (self.side().await?, self.side().await?);
        let first = self.start(component, &one, "first").await?;
        let second = self.start(component, &two, "second").await?;
        let mut written = Written::default();
        for n in 0..200 {
            let key = format!("k{}", n % 10);
            if n % 9 == 8 {
                written.delete(&one.data, &key).await?;
            } else {
                written
                    .set(&one.data, &key, format!("v{n}").as_bytes())
                    .await?;
            }
        }
        let copy = written.clone();
        let (a, b) = tokio::join!(
            self.judge(&one, first, written),
            self.judge(&two, second, copy)
        );
        a.map_err(|err| format!("the first watcher: {err}"))?;
        b.map_err(|err| format!("the second watcher: {err}"))
    }

    /// [`BURST_WRITES`] writes, as fast as [`BURST_WRITERS`] writers can, each owning its keys
    /// so each key's order is known.
    async fn burst(&self, component: &Arc<WatcherComponent>) -> Result<(), String> {
        let side = self.side().await?;
        let watcher = self.start(component, &side, "recorder").await?;
        let per_key = BURST_WRITES / BURST_KEYS;
        let writers: Vec<_> = (0..BURST_WRITERS)
            .map(|writer| {
                let data = side.data.clone();
                tokio::spawn(async move {
                    let keys: Vec<String> = (writer..BURST_KEYS)
                        .step_by(BURST_WRITERS)
                        .map(|key| format!("b{key:03}"))
                        .collect();
                    let mut written = Written::default();
                    for n in 0..per_key {
                        for key in &keys {
                            if n % 10 == 9 {
                                written.delete(&data, key).await?;
                            } else {
                                written.set(&data, key, format!("v{n}").as_bytes()).await?;
                            }
                        }
                    }
                    Ok::<_, String>(written)
                })
            })
            .collect();
        let mut written = Written::default();
        for writer in writers {
            written.merge(
                writer
                    .await
                    .map_err(|err| format!("a writer failed: {err}"))??,
            );
        }
        let total: usize = written.writes.values().map(Vec::len).sum();
        if total != per_key * BURST_KEYS {
            return Err(format!(
                "wrote {total} changes, not {}",
                per_key * BURST_KEYS
            ));
        }
        self.judge(&side, watcher, written).await
    }

    /// A key written without a TTL and delivered, then written again with a 3 s TTL, and a
    /// key without one: the first must arrive as a delete once the TTL runs out (a feed that
    /// lists already knows the key, so its vanishing is seen however slow the listing), the
    /// second must not.
    async fn expiry(&self, component: &Arc<WatcherComponent>) -> Result<(), String> {
        let side = self.side().await?;
        let mut watcher = self.start(component, &side, "recorder").await?;
        let mut written = Written::default();
        written.set(&side.data, "ephemeral", b"e0").await?;
        written.set(&side.data, "stays", b"s1").await?;
        let mut known = WatchHistory {
            writes: written.writes.clone(),
            ..WatchHistory::default()
        };
        let verdict = self
            .arrival(
                &side,
                &mut AuditLog::new(&side.audit),
                &mut known,
                false,
                &mut watcher,
            )
            .await?;
        if !verdict.missing.is_empty() {
            return Err(format!("before the TTL: {}", verdict.summary()));
        }
        side.data
            .set_with_ttl("ephemeral", b"e1".to_vec(), 3_000)
            .await
            .map_err(|err| format!("set-with-ttl: {err}"))?;
        written.record("ephemeral", Write::Set(b"e1".to_vec()));
        written.record("ephemeral", Write::Expire);
        self.judge(&side, watcher, written).await
    }
}

/// Fails with the first dead letter's error, if there is one: outside the trap case, a
/// change that could not be delivered is a failure of its own, not a missing event.
async fn no_dead_letters(side: &Side) -> Result<(), String> {
    let letters = list_all(&side.state, "watch/").await?;
    let Some(first) = letters.iter().find(|key| key.contains("/dead/")) else {
        return Ok(());
    };
    let letter = read_letter(&side.state, first).await?;
    Err(format!(
        "a change was dead-lettered: {} {} after {} attempts: {}",
        letter["op"], letter["key"], letter["attempts"], letter["error"]
    ))
}

async fn read_letter(state: &KvStore, key: &str) -> Result<serde_json::Value, String> {
    let body = state
        .get(key)
        .await
        .map_err(|err| format!("get {key}: {err}"))?
        .ok_or("the dead letter vanished")?;
    serde_json::from_slice(&body).map_err(|err| format!("the dead letter is not JSON: {err}"))
}

/// How far the restart case writes: while the first watcher runs (to a number leaving each
/// slot's key live: a feed that lists sees them), then while none runs (to one leaving half
/// the slots' keys live and the others deleted: a restarted watcher that skipped what it
/// missed would never see those values), then, on keys of their own, after the restart.
const PHASES: [usize; 3] = [380, 590, 80];

/// Writes `numbers` over 20 slots of keys starting with `prefix`. A slot's key lives for 5
/// writes, 4 sets of `v{n}` and a delete, then the slot moves to a new key: every delete is
/// its key's last write, so a redelivered delete after a restart names one write, not one of
/// several.
async fn write_keys(
    data: &KvStore,
    written: &mut Written,
    prefix: &str,
    numbers: std::ops::Range<usize>,
) -> Result<(), String> {
    const SLOTS: usize = 20;
    for n in numbers {
        let (slot, round) = (n % SLOTS, n / SLOTS);
        let key = format!("{prefix}{slot:02}.{}", round / 5);
        if round % 5 == 4 {
            written.delete(data, &key).await?;
        } else {
            written.set(data, &key, format!("v{n}").as_bytes()).await?;
        }
    }
    Ok(())
}

/// The recorder's log as read so far: `event/{seq:08}` (with a set's bytes in
/// `value/{seq:08}`), numbered from 1.
struct AuditLog {
    audit: KvStore,
    next: usize,
}

impl AuditLog {
    fn new(audit: &KvStore) -> AuditLog {
        AuditLog {
            audit: audit.clone(),
            next: 1,
        }
    }

    /// Appends the events recorded since the last read to `events`. A number counted but
    /// never written (a delivery cut off between the two, by an abort) is passed over once
    /// a later number is counted: deliveries to one recorder happen one at a time.
    async fn read(&mut self, events: &mut Vec<Event>) -> Result<(), String> {
        let get = |key: String| {
            let audit = self.audit.clone();
            async move {
                audit
                    .get(&key)
                    .await
                    .map_err(|err| format!("get {key}: {err}"))
            }
        };
        let seq = get("seq".to_string())
            .await?
            .map(|value| lossy(&value).parse::<usize>().unwrap_or(0))
            .unwrap_or(0);
        while self.next <= seq {
            let key = format!("event/{:08}", self.next);
            match get(key.clone()).await? {
                Some(line) => {
                    let line = lossy(&line);
                    let value = match line.starts_with("set ") {
                        true => get(format!("value/{:08}", self.next)).await?,
                        false => None,
                    };
                    events.push(
                        Event::parse(&line, value)
                            .ok_or_else(|| format!("{key} holds {line:?}"))?,
                    );
                }
                None if self.next < seq => {}
                None => break,
            }
            self.next += 1;
        }
        Ok(())
    }
}

/// Every key of `store` starting with `prefix`.
async fn list_all(store: &KvStore, prefix: &str) -> Result<Vec<String>, String> {
    let keys = kv_testkit::provider_tests::list_all(store)
        .await
        .map_err(|err| format!("list-keys: {}", err.message().unwrap_or("failed")))?;
    Ok(keys
        .into_iter()
        .filter(|key| key.starts_with(prefix))
        .collect())
}
