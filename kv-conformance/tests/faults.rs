//! The fault matrix (docs/reliability.md): every provider behind a loopback fault proxy (the
//! in-memory one behind in-process fault hooks), every fault x operation, and the checks that
//! matter under faults:
//! - every fault at every request position of an operation (the first request, the second, …
//!   until the operation sends no more), so a read-modify-write's conditional write is hit too;
//! - acknowledged writes lost: must be 0;
//! - increments or swaps applied twice, or applied while the guest was told (without "outcome
//!   unknown") that they failed: must be 0;
//! - time to the answer: bounded by the operation timeout;
//! - 8 x 50 concurrent increments and 8 x 25 CAS-loop increments while 10% of replies are
//!   dropped: totals exact.
//! - a batch of increments formed on purpose, its write's reply dropped, with and without
//!   another client deleting the key before the batch's outcome is looked up: each increment
//!   applied at most once, every acknowledged one applied.
//!
//! One trial per provider and check. Providers in `KV_REQUIRE` must run; others are ignored
//! when their emulator is missing. With `KV_REPORT_DIR` set, each provider's matrix is also
//! written to `DIR/faults/<provider>.md`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_core::store::OUTCOME_UNKNOWN;
use kv_core::{
    Access, ErrorKind, KvError, KvStore, Limits, MemoryProvider, Provider, RetryPolicy, Stores,
    SwapOutcome,
};
use kv_testkit::emulator::{Emulator, Started};
use kv_testkit::faults::{Fault, FaultProxy, Injected, Lossy, LossyState};
use kv_testkit::runtime;
use libtest_mimic::{Arguments, Failed, Trial};

mod common;

/// The operation timeout of every store here: the bound on time to an answer.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

fn limits() -> Limits {
    Limits {
        operation_timeout: OPERATION_TIMEOUT,
        // Under 8-way contention one increment is several round trips, each losing its reply
        // one time in ten: enough attempts that a run of losses is vanishingly rare.
        retry: RetryPolicy {
            max_attempts: 20,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
        },
        ..Limits::default()
    }
}

/// How faults reach one provider.
enum Injector {
    Proxy(FaultProxy),
    InProcess(Arc<LossyState>),
}

/// Requests into an operation a fault is injected at most: an increment on a journaled
/// provider is a read, a conditional write and, after a lost reply, resolving reads.
const MAX_POSITION: usize = 4;

impl Injector {
    /// Injects `fault` into the request at `position` (0: the operation's first request).
    /// In-process hooks have one position: the provider call.
    fn inject_at(&self, fault: &Fault, position: usize) {
        match self {
            Injector::Proxy(proxy) => proxy.after(position, fault.clone()),
            Injector::InProcess(state) => state.lose_next(1),
        }
    }

    /// Whether the injected fault was reached by the operation.
    fn reached(&self) -> bool {
        match self {
            Injector::Proxy(proxy) => proxy.pending() == 0,
            Injector::InProcess(_) => true,
        }
    }

    fn positions(&self) -> usize {
        match self {
            Injector::Proxy(_) => MAX_POSITION,
            Injector::InProcess(_) => 1,
        }
    }

    fn lossy(&self, every: u64) {
        match self {
            Injector::Proxy(proxy) => proxy.every(every, Fault::DropReply),
            Injector::InProcess(state) => state.lose_every(every),
        }
    }

    fn clear(&self) {
        match self {
            Injector::Proxy(proxy) => proxy.clear(),
            Injector::InProcess(state) => {
                state.lose_every(0);
            }
        }
    }
}

/// A provider under test with its fault injector (and what keeps its emulator alive).
struct Subject {
    provider: Arc<dyn Provider>,
    /// The same backend without the proxy: another client's writes, never faulted.
    direct: Option<Arc<dyn Provider>>,
    injector: Injector,
    faults: Vec<(&'static str, Fault)>,
    _emulator: Option<Started>,
    _dir: Option<tempfile::TempDir>,
}

impl Subject {
    fn store(&self, namespace: &str) -> KvStore {
        open_store(&self.provider, namespace)
    }
}

fn open_store(provider: &Arc<dyn Provider>, namespace: &str) -> KvStore {
    let stores = Stores::builder(limits())
        .store("s", provider.clone(), namespace, Access::ReadWrite)
        .build();
    runtime()
        .block_on(stores.open("s"))
        .expect("a configured store opens")
}

/// The faults every transport gets.
fn tcp_faults() -> Vec<(&'static str, Fault)> {
    vec![
        ("reset before the request", Fault::ResetBeforeForward),
        ("reply dropped after execution", Fault::DropReply),
        ("300 ms latency", Fault::Latency(Duration::from_millis(300))),
    ]
}

/// The HTTP providers also get injected answers.
fn http_faults(provider: &str) -> Vec<(&'static str, Fault)> {
    let mut faults = tcp_faults();
    faults.push(("503", Fault::Respond(Injected::status(503))));
    faults.push(("500", Fault::Respond(Injected::status(500))));
    faults.push((
        "429 without Retry-After",
        Fault::Respond(Injected::too_many_requests(None)),
    ));
    faults.push((
        "429 with Retry-After: 1",
        Fault::Respond(Injected::too_many_requests(Some(1))),
    ));
    if provider == "dynamodb" {
        faults.push((
            "ProvisionedThroughputExceeded",
            Fault::Respond(Injected::dynamodb_throughput_exceeded()),
        ));
        faults.push((
            "UnprocessedItems / UnprocessedKeys",
            Fault::DynamoUnprocessed,
        ));
    }
    faults
}

async fn subject(name: &str) -> Result<Subject, String> {
    if name == "memory" {
        let (provider, state) = Lossy::provider(Arc::new(MemoryProvider::new()));
        return Ok(Subject {
            injector: Injector::InProcess(state),
            provider,
            direct: None,
            faults: vec![("reply lost after execution", Fault::DropReply)],
            _emulator: None,
            _dir: None,
        });
    }
    if name == "sqlite" {
        // No network between the host and the file: in-process hooks lose the replies.
        let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
        let url = format!("sqlite:{}", dir.path().join("faults.db").display());
        let (provider, state) = Lossy::provider(common::connect("sqlite", &url).await?);
        return Ok(Subject {
            injector: Injector::InProcess(state),
            provider,
            direct: None,
            faults: vec![("reply lost after execution", Fault::DropReply)],
            _emulator: None,
            _dir: Some(dir),
        });
    }
    let emulator =
        Emulator::for_provider(name).ok_or_else(|| format!("no emulator for {name:?}"))?;
    let protocol = emulator
        .fault_protocol()
        .ok_or_else(|| format!("no fault proxy fits in front of {name}"))?;
    let started = emulator.start_async().await?;
    let proxy = FaultProxy::start(started.addr(), protocol)
        .await
        .map_err(|err| format!("fault proxy: {err}"))?;
    let provider = common::connect(name, &started.store_url_via(proxy.addr())).await?;
    let direct = common::connect(name, &started.store_url).await?;
    Ok(Subject {
        provider,
        direct: Some(direct),
        injector: Injector::Proxy(proxy),
        faults: if name == "redis" {
            tcp_faults()
        } else {
            http_faults(name)
        },
        _emulator: Some(started),
        _dir: None,
    })
}

const OPERATIONS: &[&str] = &[
    "set",
    "get",
    "delete",
    "increment",
    "swap",
    "set-many",
    "get-many",
    "list-keys",
];

/// Judges the stored value after an operation (and whether it reported success): whether an
/// acknowledged write was lost, and whether it was applied twice.
type Check = Box<dyn Fn(&Option<Vec<u8>>, bool) -> (bool, bool) + Send>;

/// One cell of the matrix: one operation with one fault at one request position.
struct Cell {
    outcome: String,
    elapsed: Duration,
    lost_acknowledged: bool,
    applied_twice: bool,
    /// An increment or swap that applied although the guest was told, without "outcome
    /// unknown", that it failed: a guest that retries applies it twice.
    applied_but_reported_failed: bool,
    /// Whether the operation sent the request the fault was scripted for.
    reached: bool,
}

fn describe(result: &Result<(), KvError>) -> String {
    match result {
        Ok(()) => "ok".to_string(),
        Err(err) if err.message().starts_with(OUTCOME_UNKNOWN) => {
            "unavailable: outcome unknown".to_string()
        }
        Err(err) => err.kind().class().to_string(),
    }
}

/// Runs `op` on a fresh key with `fault` injected into its request at `position` (the ones
/// before it pass), then checks the stored state without faults.
async fn cell(
    store: &KvStore,
    injector: &Injector,
    fault: &Fault,
    position: usize,
    op: &str,
    id: usize,
) -> Cell {
    let key = format!("k{id}");
    let other = format!("k{id}-b");
    // Known starting state, written without faults.
    injector.clear();
    let setup = async {
        store.set(&key, b"41".to_vec()).await?;
        store.set(&other, b"x".to_vec()).await
    };
    setup
        .await
        .expect("the setup writes succeed without faults");
    let versioned = store
        .read_versioned(&key)
        .await
        .expect("the CAS read succeeds");
    injector.inject_at(fault, position);
    let started = Instant::now();
    let (result, check): (Result<(), KvError>, Check) = match op {
        "set" => (
            store.set(&key, b"new".to_vec()).await,
            Box::new(|stored, ok| (ok && stored.as_deref() != Some(b"new"), false)),
        ),
        "get" => (
            store.get(&key).await.map(drop),
            Box::new(|_, _| (false, false)),
        ),
        "delete" => (
            store.delete(&key).await,
            Box::new(|stored, ok| (ok && stored.is_some(), false)),
        ),
        "increment" => {
            let result = store.increment(&key, 1).await;
            let reported = result.as_ref().ok().copied();
            (
                result.map(drop),
                Box::new(move |stored, ok| {
                    let stored = stored.as_deref();
                    let lost = ok && (stored != Some(b"42") || reported != Some(42));
                    (lost, stored == Some(b"43"))
                }),
            )
        }
        "swap" => {
            let result = store
                .swap(&key, &versioned.version, b"swapped".to_vec())
                .await
                .and_then(|outcome| match outcome {
                    SwapOutcome::Swapped => Ok(()),
                    SwapOutcome::Conflict => Err(KvError::internal(
                        "cas-failed against an unchanged key (a retry met its own write)",
                    )),
                });
            (
                result,
                Box::new(|stored, ok| (ok && stored.as_deref() != Some(b"swapped"), false)),
            )
        }
        "set-many" => (
            store
                .set_many(vec![
                    (key.clone(), b"many".to_vec()),
                    (other.clone(), b"many".to_vec()),
                ])
                .await,
            Box::new(|stored, ok| (ok && stored.as_deref() != Some(b"many"), false)),
        ),
        "get-many" => (
            store
                .get_many(&[key.clone(), other.clone()])
                .await
                .map(drop),
            Box::new(|_, _| (false, false)),
        ),
        "list-keys" => (
            store.list_keys(None).await.map(drop),
            Box::new(|_, _| (false, false)),
        ),
        other => panic!("unknown operation {other}"),
    };
    let elapsed = started.elapsed();
    let reached = injector.reached();
    injector.clear();
    let stored = store.get(&key).await.expect("the check read succeeds");
    let (lost_acknowledged, applied_twice) = check(&stored, result.is_ok());
    // cas-failed against a key nobody else touched: the swap met its own write, or a store
    // failure was reported as a conflict (S7).
    let swap_conflict = op == "swap"
        && result
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::Internal);
    let applied = match op {
        "increment" => stored.as_deref() == Some(b"42"),
        "swap" => stored.as_deref() == Some(b"swapped"),
        _ => false,
    };
    let applied_but_reported_failed = applied
        && result
            .as_ref()
            .is_err_and(|err| !err.message().starts_with(OUTCOME_UNKNOWN));
    Cell {
        outcome: describe(&result),
        elapsed,
        lost_acknowledged,
        applied_twice: applied_twice || swap_conflict,
        applied_but_reported_failed,
        reached,
    }
}

fn matrix(name: &str, subject: &Subject) -> Result<(), Failed> {
    let store = subject.store(&format!("faults-{:08x}", rand::random::<u32>()));
    let mut table = format!(
        "| fault | {} |\n|---|{}\n",
        OPERATIONS.join(" | "),
        "---|".repeat(OPERATIONS.len())
    );
    let mut problems = Vec::new();
    let mut id = 0;
    for (label, fault) in &subject.faults {
        let mut row = format!("| {label} |");
        for op in OPERATIONS {
            // The fault at each request of the operation in turn, until it sends no more.
            let mut outcomes = Vec::new();
            for position in 0..subject.injector.positions() {
                id += 1;
                let cell =
                    runtime().block_on(cell(&store, &subject.injector, fault, position, op, id));
                if !cell.reached {
                    break;
                }
                let at = format!("{label} x {op} at request {}", position + 1);
                outcomes.push(format!(
                    "{} ({} ms)",
                    cell.outcome,
                    cell.elapsed.as_millis()
                ));
                if cell.lost_acknowledged {
                    problems.push(format!("{at}: an acknowledged write was lost"));
                }
                if cell.applied_twice {
                    problems.push(format!("{at}: applied twice"));
                }
                if cell.applied_but_reported_failed {
                    problems.push(format!(
                        "{at}: applied, but reported failed without 'outcome unknown' ({})",
                        cell.outcome
                    ));
                }
                if cell.elapsed > OPERATION_TIMEOUT + Duration::from_secs(1) {
                    problems.push(format!(
                        "{at}: answered after {} ms",
                        cell.elapsed.as_millis()
                    ));
                }
                // One fault per call is within the retry budget: the guest must not see it.
                if cell.outcome != "ok" {
                    problems.push(format!("{at}: {}", cell.outcome));
                }
            }
            row.push_str(&format!(" {} |", outcomes.join(" · ")));
        }
        table.push_str(&row);
        table.push('\n');
    }
    println!("\n{name}\n{table}");
    if let Some(dir) = std::env::var_os("KV_REPORT_DIR") {
        let dir = std::path::Path::new(&dir).join("faults");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{name}.md")), &table);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failed::from(problems.join("\n")))
    }
}

/// Throttling that outlasts every retry ends as `throttled` within the operation timeout (not
/// `timeout`), and on Cosmos DB the service's `x-ms-retry-after-ms` is waited out.
fn throttling(name: &str, subject: &Subject) -> Result<(), Failed> {
    let Injector::Proxy(proxy) = &subject.injector else {
        return Ok(());
    };
    let store = subject.store(&format!("throttled-{:08x}", rand::random::<u32>()));
    proxy.every(1, Fault::Respond(Injected::too_many_requests(None)));
    let started = Instant::now();
    let result = runtime().block_on(store.set("k", b"v".to_vec()));
    let elapsed = started.elapsed();
    proxy.clear();
    match result {
        Err(err) if err.kind() == ErrorKind::Throttled && elapsed < OPERATION_TIMEOUT => {}
        other => {
            return Err(format!(
                "sustained 429: expected throttled within {OPERATION_TIMEOUT:?}, got {other:?} \
                 after {elapsed:?}"
            )
            .into());
        }
    }
    if name == "cosmos" {
        let mut throttled = Injected::too_many_requests(None);
        throttled
            .headers
            .push(("x-ms-retry-after-ms".to_string(), "1000".to_string()));
        proxy.next(Fault::Respond(throttled), 1);
        let started = Instant::now();
        runtime()
            .block_on(store.set("k", b"v".to_vec()))
            .map_err(|err| err.to_string())?;
        let elapsed = started.elapsed();
        if elapsed < Duration::from_millis(1000) {
            return Err(
                format!("x-ms-retry-after-ms: 1000 was not waited out ({elapsed:?})").into(),
            );
        }
    }
    Ok(())
}

/// Runs `calls` on each of 8 concurrent workers while every 10th request loses its reply,
/// then checks that every call succeeded and that counter `key` reads `expected`.
fn under_loss<F, Fut>(subject: &Subject, key: &str, expected: i64, calls: F) -> Result<(), Failed>
where
    F: Fn(KvStore) -> Fut,
    Fut: std::future::Future<Output = Vec<String>> + Send + 'static,
{
    let store = subject.store(&format!("lossy-{:08x}", rand::random::<u32>()));
    subject.injector.lossy(10);
    let failures = runtime().block_on(async {
        let workers: Vec<_> = (0..8).map(|_| tokio::spawn(calls(store.clone()))).collect();
        let mut failures = Vec::new();
        for worker in workers {
            failures.extend(worker.await.unwrap_or_else(|err| vec![err.to_string()]));
        }
        failures
    });
    subject.injector.clear();
    let total = runtime()
        .block_on(store.get(key))
        .map_err(|err| err.to_string())?;
    if !failures.is_empty() {
        return Err(format!("{} calls failed: {:?}", failures.len(), failures).into());
    }
    let total = total.map(|t| String::from_utf8_lossy(&t).into_owned());
    if total != Some(expected.to_string()) {
        return Err(format!("{expected} acknowledged calls, counter is {total:?}").into());
    }
    Ok(())
}

/// 8 workers x 50 increments while every 10th request loses its reply: exactly 400.
fn lossy_increments(subject: &Subject) -> Result<(), Failed> {
    under_loss(subject, "n", 400, |store| async move {
        let mut failures = Vec::new();
        for _ in 0..50 {
            if let Err(err) = store.increment("n", 1).await {
                failures.push(err.to_string());
            }
        }
        failures
    })
}

/// 8 workers x 25 CAS-loop increments while every 10th request loses its reply: exactly 200.
fn lossy_cas(subject: &Subject) -> Result<(), Failed> {
    under_loss(subject, "c", 200, |store| async move {
        let mut failures = Vec::new();
        let mut done = 0;
        for _ in 0..5_000 {
            if done == 25 {
                break;
            }
            let Ok(read) = store.read_versioned("c").await else {
                continue;
            };
            let current: i64 = match read.value.as_deref() {
                Some(value) => String::from_utf8_lossy(value).parse().unwrap_or(i64::MIN),
                None => 0,
            };
            let next = current.saturating_add(1).to_string().into_bytes();
            match store.swap("c", &read.version, next).await {
                Ok(SwapOutcome::Swapped) => done += 1,
                Ok(SwapOutcome::Conflict) => {}
                Err(err) => failures.push(err.to_string()),
            }
        }
        failures
    })
}

/// What happens to the batch's write in [`queued_increments`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum BatchFault {
    /// Nothing: shows the batch forms.
    None,
    /// Its reply is lost.
    ReplyLost,
    /// Its reply is lost, and another client deletes the key before the next request.
    ReplyLostThenDeleted,
}

/// Increments of one key from one host: the first holds the key's turn while its first
/// request is delayed 300 ms, so the other seven queue behind it and are applied together by
/// the next write (as many as one write takes: S3's short journal takes five). The first
/// write is `first_write` requests (DynamoDB: a read and the conversion of the value `set`
/// left), each later one `requests_per_write` (Redis: one script; DynamoDB: one `UpdateItem`;
/// Cloud Storage reads in two); the fault is on the last. Returns each increment's answer,
/// the requests sent, and the counter just before the delete, if any.
async fn queued_increments(
    store: &KvStore,
    other: &KvStore,
    proxy: &FaultProxy,
    (first_write, requests_per_write): (usize, usize),
    fault: BatchFault,
) -> Result<(Vec<Result<i64, KvError>>, u64, Option<i64>), KvError> {
    proxy.clear();
    store.set("n", b"0".to_vec()).await?;
    proxy.next(Fault::Latency(Duration::from_millis(300)), 1);
    if fault != BatchFault::None {
        // The last request of the second write: the batch's write.
        proxy.after(first_write + requests_per_write - 2, Fault::DropReply);
    }
    if fault == BatchFault::ReplyLostThenDeleted {
        proxy.next(Fault::Latency(DELETE_SLOT), 1);
    }
    let scripted = proxy.pending();
    let seen = proxy.seen();
    let first = {
        let store = store.clone();
        tokio::spawn(async move { store.increment("n", 1).await })
    };
    // The seven others start once the first holds the turn (its request arrived).
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.pending() == scripted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut calls = vec![first];
    for _ in 1..WRITERS {
        let store = store.clone();
        calls.push(tokio::spawn(async move { store.increment("n", 1).await }));
    }
    let mut before_delete = None;
    if fault == BatchFault::ReplyLostThenDeleted {
        // The delayed request after the lost reply has arrived: delete meanwhile (the key's
        // turn is held, so nothing else writes in between).
        let deadline = Instant::now() + Duration::from_secs(10);
        while proxy.pending() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let held = Instant::now();
        before_delete = Some(counter(other.get("n").await?));
        other.delete("n").await?;
        // Done well inside the slot, or this run did not test what it says.
        let took = held.elapsed();
        if took + Duration::from_millis(500) > DELETE_SLOT {
            return Err(KvError::internal(format!(
                "reading and deleting the key took {took:?}: it may have missed its slot"
            )));
        }
    }
    let mut results = Vec::new();
    for call in calls {
        results.push(
            call.await
                .unwrap_or_else(|err| Err(KvError::internal(err.to_string()))),
        );
    }
    let requests = proxy.seen() - seen;
    let pending = proxy.pending();
    proxy.clear();
    if pending > 0 {
        return Err(KvError::internal(format!(
            "{pending} scripted faults were not reached in {requests} requests ({results:?})"
        )));
    }
    Ok((results, requests, before_delete))
}

/// A stored counter's value (0 when missing, -1 when not a number).
fn counter(stored: Option<Vec<u8>>) -> i64 {
    stored.map_or(0, |bytes| {
        String::from_utf8_lossy(&bytes).parse().unwrap_or(-1)
    })
}

/// Increments queued behind another from one host.
const WRITERS: i64 = 8;

/// How long the request after a lost batch reply is held while another client deletes the key.
const DELETE_SLOT: Duration = Duration::from_secs(2);

/// A batch of increments (up to seven applied by one write) whose write's reply is lost, once
/// with nothing else happening and once with another client deleting the key before the
/// batch's outcome is looked up: each increment must be applied exactly once, or reported
/// "outcome unknown", and never applied again. A fault-free run first shows the batch forms.
fn batch_faults(name: &str, subject: &Subject) -> Result<(), Failed> {
    let (Injector::Proxy(proxy), Some(direct)) = (&subject.injector, &subject.direct) else {
        return Ok(());
    };
    // Requests per increment, counted on a warm store (connections open, scripts loaded): the
    // fewest of three, so one retried request does not shift every position below. The first
    // increment after a `set` may cost more (DynamoDB turns the value into a counter).
    let store = subject.store(&format!("batch-{:08x}", rand::random::<u32>()));
    let (first_write, requests_per_write) = runtime().block_on(async {
        proxy.clear();
        store.increment("warm", 1).await?;
        let (mut first, mut fewest) = (u64::MAX, u64::MAX);
        for _ in 0..3 {
            store.set("first", b"0".to_vec()).await?;
            let seen = proxy.seen();
            store.increment("first", 1).await?;
            first = first.min(proxy.seen() - seen);
            let seen = proxy.seen();
            store.increment("warm", 1).await?;
            fewest = fewest.min(proxy.seen() - seen);
        }
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok::<_, KvError>((count(first), count(fewest)))
    })?;
    if !(1..=4).contains(&requests_per_write) || !(1..=4).contains(&first_write) {
        return Err(format!(
            "{requests_per_write} requests for one increment, {first_write} after a set"
        )
        .into());
    }
    let mut problems = Vec::new();
    for fault in [
        BatchFault::None,
        BatchFault::ReplyLost,
        BatchFault::ReplyLostThenDeleted,
    ] {
        let namespace = format!("batch-{:08x}", rand::random::<u32>());
        let (store, other) = (subject.store(&namespace), open_store(direct, &namespace));
        let case = match fault {
            BatchFault::None => "no fault",
            BatchFault::ReplyLost => "batch reply lost",
            BatchFault::ReplyLostThenDeleted => "batch reply lost, key deleted before the lookup",
        };
        let (results, requests, before_delete, stored) = runtime().block_on(async {
            let (results, requests, before_delete) = queued_increments(
                &store,
                &other,
                proxy,
                (first_write, requests_per_write),
                fault,
            )
            .await?;
            let stored = other.get("n").await?;
            Ok::<_, KvError>((results, requests, before_delete, stored))
        })?;
        let stored = counter(stored);
        let mut totals: Vec<i64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .copied()
            .collect();
        totals.sort_unstable();
        let failed: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(ToString::to_string)
            .collect();
        println!(
            "{name}: {case}: {requests} requests for {WRITERS} increments, totals {totals:?}, \
             counter {}{stored}, {} reported failed",
            before_delete.map_or(String::new(), |n| format!("{n} before the delete, then ")),
            failed.len()
        );
        let mut distinct = totals.clone();
        distinct.dedup();
        if before_delete.is_none()
            && (distinct.len() != totals.len() || totals.iter().any(|t| !(1..=WRITERS).contains(t)))
        {
            problems.push(format!(
                "{case}: totals {totals:?} are not distinct in 1..={WRITERS}"
            ));
        }
        if let Some(err) = failed.iter().find(|err| !err.contains(OUTCOME_UNKNOWN)) {
            problems.push(format!(
                "{case}: an increment was reported failed without 'outcome unknown': {err}"
            ));
        }
        let acknowledged = i64::try_from(totals.len()).unwrap_or(i64::MAX);
        // The first increment wrote alone, before the faults.
        if !matches!(results.first(), Some(Ok(1))) {
            problems.push(format!(
                "{case}: the first increment answered {:?}, not 1",
                results.first()
            ));
        }
        match (fault, before_delete) {
            // The first increment's write and the batches after it: at most three writes (S3
            // takes five increments a write), where every increment on its own makes eight.
            (BatchFault::None, _) if requests > (first_write + 2 * requests_per_write) as u64 => {
                problems.push(format!(
                    "{case}: {requests} requests for {WRITERS} increments, at \
                     {requests_per_write} a write: no batch formed"
                ));
            }
            // The fault must have hit the batch's write: it landed before the delete.
            (BatchFault::ReplyLostThenDeleted, Some(before)) if before < 2 => {
                problems.push(format!(
                    "{case}: the counter was {before} before the delete: the lost reply was not \
                     the batch's write's"
                ));
            }
            // One lost reply is within the retry budget: every increment is told its total.
            (BatchFault::None | BatchFault::ReplyLost, _)
                if !failed.is_empty() || stored != WRITERS =>
            {
                problems.push(format!(
                    "{case}: counter {stored}, failed {failed:?}; expected {WRITERS}, all \
                     acknowledged"
                ));
            }
            // What was applied before the delete and after it: each increment at most once,
            // and every acknowledged one.
            (_, Some(before)) if before + stored > WRITERS => problems.push(format!(
                "{case}: {before} applied before the delete and {stored} after: more than \
                 {WRITERS}, applied again"
            )),
            (_, Some(before)) if before + stored < acknowledged => problems.push(format!(
                "{case}: {before} applied before the delete and {stored} after: fewer than the \
                 {acknowledged} acknowledged"
            )),
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failed::from(problems.join("\n")))
    }
}

fn main() -> ExitCode {
    kv_testkit::stay_on_loopback();
    let args = Arguments::from_args();
    let required = kv_testkit::required_targets();
    let mut trials = Vec::new();
    // A fault proxy in front of one cluster node cannot hold a cluster client, which talks to
    // every node at the address the cluster announces: Redis Cluster's fault test is the
    // primary killed mid-run in kv-redis/tests/cluster.rs.
    let names = ["memory", "sqlite"].into_iter().chain(
        Emulator::ALL
            .into_iter()
            .filter(|emulator| emulator.fault_protocol().is_some())
            .map(Emulator::provider),
    );
    for name in names {
        let is_required = required.iter().any(|r| r == name);
        let wanted = [
            "matrix",
            "lossy_increments",
            "lossy_cas",
            "batch_faults",
            "throttling",
        ]
        .iter()
        .any(|check| {
            args.filter
                .as_deref()
                .is_none_or(|f| format!("{name}::{check}").contains(f))
        });
        if !wanted {
            continue;
        }
        let local = matches!(name, "memory" | "sqlite");
        if !local && !is_required && !kv_testkit::emulator::installed(name) {
            for check in ["matrix", "lossy_increments", "lossy_cas", "batch_faults"] {
                trials.push(
                    Trial::test(format!("{name}::{check}"), || Ok(()))
                        .with_ignored_flag(true)
                        .with_kind("unreachable"),
                );
            }
            continue;
        }
        let subject = match runtime().block_on(subject(name)) {
            Ok(subject) => Arc::new(subject),
            Err(reason) => {
                let message = format!("{name}: {reason}");
                trials.push(Trial::test(format!("{name}::setup"), move || {
                    Err(Failed::from(message))
                }));
                continue;
            }
        };
        let provider = name.to_string();
        let s = subject.clone();
        trials.push(Trial::test(format!("{name}::matrix"), move || {
            matrix(&provider, &s)
        }));
        let s = subject.clone();
        trials.push(Trial::test(
            format!("{name}::lossy_increments"),
            move || lossy_increments(&s),
        ));
        let s = subject.clone();
        trials.push(Trial::test(format!("{name}::lossy_cas"), move || {
            lossy_cas(&s)
        }));
        if subject.direct.is_some() {
            let (s, provider) = (subject.clone(), name.to_string());
            trials.push(Trial::test(format!("{name}::batch_faults"), move || {
                batch_faults(&provider, &s)
            }));
        }
        // Every HTTP backend answers a sustained 429 with `throttled` (Azure Blob Storage's own
        // 503 ServerBusy is mapped in kv-azure's error.rs).
        let http = Emulator::for_provider(name).and_then(Emulator::fault_protocol)
            == Some(kv_testkit::faults::Protocol::Http);
        if http {
            let (s, provider) = (subject.clone(), name.to_string());
            trials.push(Trial::test(format!("{name}::throttling"), move || {
                throttling(&provider, &s)
            }));
        }
    }
    // The checks of one provider share its proxy: run them one at a time.
    let mut args = args;
    args.test_threads = Some(1);
    let conclusion = libtest_mimic::run(&args, trials);
    if conclusion.has_failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
