//! Histories under faults (docs/reliability.md#histories): concurrent clients on one or more
//! hosts run a seeded workload against a store while a nemesis injects faults; every
//! invocation and completion is recorded, and `kv-check` decides whether some execution of the
//! store explains what every client was told.
//!
//! A host here is one `KvStore` over its own provider connection (own pool, own request ids,
//! own cursor secret); `wasi-kv check --processes` adds host processes running the workload
//! component ([`crate::guests::HISTORY_GUEST`]).

pub mod nemesis;
mod report;
pub mod setup;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_check::{Generator, History, Op, Outcome, Process, Recorder, Ret, Value, Verdict, Workload};
use kv_core::{Access, KvError, KvStore, Limits, Provider, Stores, SwapOutcome};
use rand::{Rng as _, SeedableRng as _};

pub use nemesis::{Event, Faults, NemesisKind, Network};
pub use report::{CheckReport, verdict_word};
pub use setup::{Setup, Source, setup};

/// What one run does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The operation mix.
    pub workload: Workload,
    /// The faults.
    pub nemesis: NemesisKind,
    /// Clients per in-process host.
    pub clients: u32,
    /// Longest the clients run (final reads and the nemesis's last heal come after).
    pub time: Duration,
    /// Most operations all clients together invoke.
    pub max_ops: u64,
    /// Keys per workload (few: contention is the point).
    pub keys: u32,
    /// Seeds the workload and the nemesis schedule.
    pub seed: u64,
    /// Most operations per second, all clients together (each client gets its share); the
    /// in-memory store would otherwise finish before the first fault.
    pub rate: u32,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            workload: Workload::Mixed,
            nemesis: NemesisKind::All,
            clients: 8,
            time: Duration::from_secs(60),
            max_ops: 1_000_000,
            keys: 5,
            seed: 0,
            rate: 500,
        }
    }
}

/// Host limits for history runs: a short operation timeout, so an operation stalled by a
/// partition ends (as `info`) within seconds, and the checker can bound when an `info`
/// operation may still take effect ([`info_horizon`]).
pub fn limits() -> Limits {
    Limits {
        operation_timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// The longest after its invocation an operation answered `info` can take effect: the host's
/// operation timeout (docs/semantics.md S4: retries stop there, and a request whose client gave
/// up is not re-sent), plus a margin for a request already on the wire.
pub fn info_horizon(limits: &Limits) -> Duration {
    limits.operation_timeout + Duration::from_secs(2)
}

/// Opens one store per host over `providers` (one connection each), all on `namespace`.
pub async fn open_hosts(
    providers: &[Arc<dyn Provider>],
    namespace: &str,
    limits: &Limits,
) -> Result<Vec<KvStore>, KvError> {
    let mut hosts = Vec::new();
    for provider in providers {
        let stores = Stores::builder(limits.clone())
            .store("history", provider.clone(), namespace, Access::ReadWrite)
            .build();
        hosts.push(stores.open("history").await?);
    }
    Ok(hosts)
}

/// What a run recorded.
pub struct Recorded {
    /// Every operation, final reads included.
    pub history: History,
    /// The nemesis's actions.
    pub events: Vec<Event>,
    /// How long the clients ran.
    pub elapsed: Duration,
}

/// Runs `plan`'s clients on every host with `faults` injected, then heals, reads every key
/// once more and returns the history. `extra` runs beside the clients (host processes); its
/// entries are added by the caller through the returned recorder's timeline.
pub async fn record(
    hosts: &[KvStore],
    plan: &Plan,
    faults: &Faults,
    recorder: &Recorder,
) -> Result<Recorded, String> {
    if let Some(why) = faults.unsupported(plan.nemesis) {
        return Err(why);
    }
    let started = Instant::now();
    let deadline = started + plan.time;
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(plan.max_ops));
    let total_clients = hosts.len() as u32 * plan.clients;
    // Each client's share of the rate, as the time between its invocations.
    let pace = Duration::from_secs_f64(f64::from(total_clients) / f64::from(plan.rate.max(1)));
    let mut clients = tokio::task::JoinSet::new();
    for (host, store) in hosts.iter().enumerate() {
        for client in 0..plan.clients {
            let process = Process::new(host as u32, client);
            let mut generator = Generator::new(plan.workload, plan.keys, plan.seed, process);
            let (store, recorder, budget) = (store.clone(), recorder.clone(), budget.clone());
            // Clients start spread over one pace, not in lockstep.
            let mut next = started + pace.mul_f64(f64::from(client) / f64::from(plan.clients));
            clients.spawn(async move {
                loop {
                    tokio::time::sleep_until(next.into()).await;
                    if Instant::now() >= deadline || !take(&budget) {
                        break;
                    }
                    next = (next + pace).max(Instant::now());
                    let op = generator.next_op();
                    execute(&store, process, op, &recorder).await;
                }
            });
        }
    }
    let events = run_nemesis(plan, faults, recorder, deadline, &mut clients).await;
    while clients.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    final_reads(hosts, plan, recorder).await;
    Ok(Recorded {
        history: recorder.history(),
        events,
        elapsed,
    })
}

fn take(budget: &std::sync::atomic::AtomicU64) -> bool {
    use std::sync::atomic::Ordering;
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// Quiet for a second, a fault for its window, heal; again until the deadline (or until every
/// client stopped early, out of operations). Always ends healed.
async fn run_nemesis(
    plan: &Plan,
    faults: &Faults,
    recorder: &Recorder,
    deadline: Instant,
    clients: &mut tokio::task::JoinSet<()>,
) -> Vec<Event> {
    let mut events = Vec::new();
    let cycle = match plan.nemesis {
        NemesisKind::None => Vec::new(),
        NemesisKind::All => faults.cycle(),
        one => vec![one],
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(plan.seed ^ 0x006e_656d_6573_6973);
    let quiet = Duration::from_millis(1000);
    let mut turn = 0;
    loop {
        // Sleep, but stop as soon as the clients are done.
        let until = (Instant::now() + quiet).min(deadline);
        if wait_or_done(clients, until).await || Instant::now() >= deadline {
            break;
        }
        let Some(&kind) = cycle.get(turn % cycle.len().max(1)) else {
            continue;
        };
        turn += 1;
        let window = Faults::window(kind, rng.random_range(0..1000));
        let injected = faults.inject(kind).await;
        events.push(event(recorder, "inject", kind, injected));
        let until = (Instant::now() + window).min(deadline.max(Instant::now()));
        let done = wait_or_done(clients, until).await;
        let healed = faults.heal(kind).await;
        events.push(event(recorder, "heal", kind, healed));
        if done {
            break;
        }
    }
    events
}

/// Waits until `until` or until every client finished (`true`).
async fn wait_or_done(clients: &mut tokio::task::JoinSet<()>, until: Instant) -> bool {
    let sleep = tokio::time::sleep_until(until.into());
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return clients.is_empty(),
            joined = clients.join_next() => {
                if joined.is_none() {
                    return true;
                }
            }
        }
    }
}

fn event(
    recorder: &Recorder,
    action: &'static str,
    nemesis: NemesisKind,
    result: Result<String, String>,
) -> Event {
    Event {
        at: recorder.elapsed_nanos(),
        action,
        nemesis,
        detail: result.unwrap_or_else(|err| format!("failed: {err}")),
    }
}

/// After the run, with every fault healed: one read of every key (up to ten attempts while the
/// backend recovers), so the checkers see where each key ended.
async fn final_reads(hosts: &[KvStore], plan: &Plan, recorder: &Recorder) {
    let Some(store) = hosts.first() else { return };
    let reader = Process::new(0, plan.clients);
    for key in Generator::keys(plan.workload, plan.keys) {
        for _ in 0..10 {
            if execute(store, reader, Op::Get { key: key.clone() }, recorder).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Deletes every key the workload touched, so a store given by URL is left as it was found.
pub async fn clean_up(hosts: &[KvStore], plan: &Plan) -> Result<(), KvError> {
    if let Some(store) = hosts.first() {
        let keys = Generator::keys(plan.workload, plan.keys);
        for chunk in keys.chunks(100) {
            store.delete_many(chunk).await?;
        }
    }
    Ok(())
}

/// What the client was told, as a checker outcome: an error that may have applied is `info`
/// (docs/semantics.md S4), and so is a batch that stopped part way (S8: its message says which
/// entries were applied); any other error is `fail`.
pub fn outcome_of(err: &KvError) -> Outcome {
    if err.may_have_applied() || err.message().contains("may or may not have been") {
        Outcome::Info(err.to_string())
    } else {
        Outcome::Fail(err.to_string())
    }
}

/// Runs one operation through `store`, recording its invocation and completion; `true` if it
/// completed `ok`.
pub async fn execute(store: &KvStore, process: Process, op: Op, recorder: &Recorder) -> bool {
    let ticket = recorder.invoke(process, op.clone());
    let (op, outcome) = match op {
        Op::Get { key } => {
            let outcome = answer(store.get(&key).await, |v| Ret::Value(v.map(Value::from)));
            (Op::Get { key }, outcome)
        }
        Op::Set { key, value } => {
            let outcome = answer(store.set(&key, value.0.clone()).await, |()| Ret::Done);
            (Op::Set { key, value }, outcome)
        }
        Op::Delete { key } => {
            let outcome = answer(store.delete(&key).await, |()| Ret::Done);
            (Op::Delete { key }, outcome)
        }
        Op::Increment { key, delta } => {
            let outcome = answer(store.increment(&key, delta).await, Ret::Total);
            (Op::Increment { key, delta }, outcome)
        }
        Op::Cas { key, new, .. } => match store.read_versioned(&key).await {
            // The handle never read: nothing was swapped.
            Err(err) => (
                Op::Cas {
                    key,
                    expected: None,
                    new,
                },
                Outcome::Fail(format!("cas handle: {err}")),
            ),
            Ok(read) => {
                let outcome = match store.swap(&key, &read.version, new.0.clone()).await {
                    Ok(SwapOutcome::Swapped) => Outcome::Ok(Ret::Done),
                    Ok(SwapOutcome::Conflict) => Outcome::Fail("cas-failed".to_string()),
                    Err(err) => outcome_of(&err),
                };
                let expected = read.value.map(Value::from);
                (Op::Cas { key, expected, new }, outcome)
            }
        },
        Op::GetMany { keys } => {
            let outcome = answer(store.get_many(&keys).await, |values| {
                Ret::Values(values.into_iter().map(|v| v.map(Value::from)).collect())
            });
            (Op::GetMany { keys }, outcome)
        }
        Op::SetMany { entries } => {
            let batch = entries
                .iter()
                .map(|(key, value)| (key.clone(), value.0.clone()))
                .collect();
            let outcome = answer(store.set_many(batch).await, |()| Ret::Done);
            (Op::SetMany { entries }, outcome)
        }
        Op::ListKeys { prefix } => {
            let outcome = answer(list_all(store).await, Ret::Keys);
            (Op::ListKeys { prefix }, outcome)
        }
    };
    let ok = matches!(outcome, Outcome::Ok(_));
    recorder.complete_as(ticket, op, outcome);
    ok
}

fn answer<T>(result: Result<T, KvError>, ret: impl FnOnce(T) -> Ret) -> Outcome {
    match result {
        Ok(value) => Outcome::Ok(ret(value)),
        Err(err) => outcome_of(&err),
    }
}

/// A whole listing, cursors followed to the end (at most 10,000 pages).
async fn list_all(store: &KvStore) -> Result<Vec<String>, KvError> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let page = store.list_keys(cursor.as_deref()).await?;
        keys.extend(page.keys);
        cursor = page.cursor;
        if cursor.is_none() {
            return Ok(keys);
        }
    }
    Err(KvError::internal("a listing went past 10,000 pages"))
}

/// Checks a recorded run, with `info` operations bounded by [`info_horizon`] and plain writes
/// allowed to take effect twice within their own call: docs/semantics.md S4 declares that a
/// retried `set` or `delete` can land again after its lost reply ([`strict`] does not).
pub fn check(history: &History, limits: &Limits) -> Verdict {
    let repeats = limits.retry.max_attempts.saturating_sub(1);
    kv_check::check_with(history, &options(limits, repeats))
}

/// [`check`] without the S4 allowance: every write takes effect at most once, as a strict
/// register's would. A run with lost replies of plain writes can fail it; that is the declared
/// divergence, and its witness shows it.
pub fn strict(history: &History, limits: &Limits) -> Verdict {
    kv_check::check_with(history, &options(limits, 0))
}

fn options(limits: &Limits, write_repeats: u32) -> kv_check::Options {
    kv_check::Options {
        info_horizon: Some(u64::try_from(info_horizon(limits).as_nanos()).unwrap_or(u64::MAX)),
        write_repeats,
        ..kv_check::Options::default()
    }
}
