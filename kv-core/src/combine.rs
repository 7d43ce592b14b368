//! Concurrent increments of one key from one process, applied together (flat combining).
//!
//! A hot key's increments take turns: the backend applies one write per key at a time, and a
//! read-modify-write step is two round trips. Instead of each waiting for its own turn, the
//! caller that gets the key's turn takes every increment queued behind it (up to a bound) and
//! applies them in one backend step. Each increment keeps its own request id, result and
//! error: a batch is one write, not one outcome. The increments of a batch are applied in the
//! order they arrived, each within its own call's interval, so the history is the one a single
//! writer would have made.
//!
//! A caller that gives up while it applies a batch (its future dropped) hands the unanswered
//! increments back to the queue ([`Batch`]), and the next caller resolves and applies them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;

use crate::counter::CounterRange;
use crate::error::{KvError, Result};
use crate::provider::Attempt;
use crate::retry::OUTCOME_UNKNOWN;

/// One increment waiting in a batch.
#[derive(Debug)]
pub struct Pending {
    /// The amount to add.
    pub delta: i64,
    /// The results the caller's interface can return.
    pub range: CounterRange,
    /// The call's attempt: its request id, and what an earlier attempt left unresolved. The
    /// batch keeps it up to date as the write's outcome becomes known; the caller gets it
    /// back with its answer, and a batch that is given up passes it on with the increment.
    pub attempt: Attempt,
    /// The total this increment gets if the batch's write applies.
    pub(crate) planned: Option<i64>,
    /// The range error this increment gets if the batch's write applies (judged against the
    /// totals before it, which exist only once the write has applied).
    pub(crate) refused: Option<KvError>,
    /// An earlier write of this increment, on the base the batch now writes on, may still
    /// land (its reply lost, or sent by a batch handed back by a caller that gave up): no
    /// answer may say "not applied" until the version has moved on.
    pub(crate) in_doubt: bool,
    reply: tokio::sync::oneshot::Sender<(Result<i64>, Attempt)>,
}

impl Pending {
    fn finish(self, result: Result<i64>) {
        // A caller that went away does not need its answer.
        let _ = self.reply.send((result, self.attempt));
    }

    /// Whether the caller went away before the batch started: then it is not applied.
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// The increments one caller applies for everyone. Those still unanswered when it is dropped
/// (the caller that applies them was cancelled) go back to the front of the queue, with their
/// attempts as they stand, for the next caller to resolve and apply: none is lost, and none
/// is applied twice (a write that may have applied is resolved before it is tried again).
pub struct Batch {
    pending: Vec<Pending>,
    queue: Arc<Queue>,
}

impl Batch {
    /// The increments still waiting for their answers, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.pending.iter()
    }

    /// Whether every increment has its answer.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Answers the increments `decide` has an answer for, in order; keeps the others.
    pub fn answer(&mut self, mut decide: impl FnMut(&mut Pending) -> Option<Result<i64>>) {
        let mut kept = Vec::with_capacity(self.pending.len());
        for mut pending in self.pending.drain(..) {
            match decide(&mut pending) {
                Some(result) => pending.finish(result),
                None => kept.push(pending),
            }
        }
        self.pending = kept;
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut waiting = lock(&self.queue.waiting);
        // Each keeps its attempt as it stands: a write it may have sent keeps its base there,
        // which the next batch resolves before trying again.
        for pending in self.pending.drain(..).rev() {
            waiting.push_front(pending);
        }
    }
}

/// Applies a batch of increments of one key: every increment answered before it returns.
#[async_trait]
pub trait ApplyBatch: Send + Sync {
    /// Applies `batch` (oldest first), answering each increment.
    async fn apply(&self, batch: &mut Batch);
}

/// A key's turn, and the increments waiting for it through one store instance.
pub(crate) struct Queue {
    turn: Arc<tokio::sync::Mutex<()>>,
    waiting: Mutex<VecDeque<Pending>>,
}

/// The turn of one step on one backend item: while it is held, no other step of this process
/// on that item runs.
pub(crate) type Turn = tokio::sync::OwnedMutexGuard<()>;

/// Values shared by name while someone holds them; the idle ones are forgotten once the map
/// has doubled since the last time (amortised O(1) per name, however many are busy).
struct Registry<V> {
    by_name: HashMap<String, Weak<V>>,
    prune_at: usize,
}

/// Registry entries kept before the idle ones are dropped.
const KEPT: usize = 1024;

impl<V> Registry<V> {
    fn new() -> Self {
        Registry {
            by_name: HashMap::new(),
            prune_at: KEPT,
        }
    }

    fn get_or_insert(&mut self, name: String, make: impl FnOnce() -> V) -> Arc<V> {
        if let Some(value) = self.by_name.get(&name).and_then(Weak::upgrade) {
            return value;
        }
        if self.by_name.len() >= self.prune_at {
            self.by_name.retain(|_, value| value.strong_count() > 0);
            self.prune_at = (self.by_name.len() * 2).max(KEPT);
        }
        let value = Arc::new(make());
        self.by_name.insert(name, Arc::downgrade(&value));
        value
    }
}

/// The turn of the item `name`: one per name in the process, whichever store instance asks
/// (two stores of one item take turns; two items whose names coincide only wait).
fn turn_of(name: &str) -> Arc<tokio::sync::Mutex<()>> {
    type Turns = Registry<tokio::sync::Mutex<()>>;
    static TURNS: std::sync::OnceLock<Mutex<Turns>> = std::sync::OnceLock::new();
    lock(TURNS.get_or_init(|| Mutex::new(Registry::new())))
        .get_or_insert(name.to_string(), || tokio::sync::Mutex::new(()))
}

/// The queue of the item `name` through `owner` (a store instance): keyed by the name and the
/// owner's address, which no other live store has. Two stores whose names coincide (one table
/// name on two endpoints) then never apply each other's increments; they share the turn.
fn queue<T: ?Sized>(owner: &T, name: &str) -> Arc<Queue> {
    static QUEUES: std::sync::OnceLock<Mutex<Registry<Queue>>> = std::sync::OnceLock::new();
    let key = format!("{name}\0{:p}", owner as *const T as *const ());
    lock(QUEUES.get_or_init(|| Mutex::new(Registry::new()))).get_or_insert(key, || Queue {
        turn: turn_of(name),
        waiting: Mutex::default(),
    })
}

/// Waits for the turn of the item `name` ([`turn_of`]). The turn is FIFO (tokio's mutex), so
/// every step of this process gets it in order.
pub(crate) async fn turn(name: &str) -> Turn {
    turn_of(name).lock_owned().await
}

/// Adds `delta` to the item `name` of the store `owner` (the backend item, as
/// [`crate::rmw::ConditionalStore::queue_name`] names it) together with the increments of the
/// same item through the same store instance waiting beside it. Whichever caller gets the
/// key's turn applies a batch of at most `max_batch` waiting increments, oldest first, with
/// `applier`. The caller's `attempt` is updated with what was learnt about its write.
pub async fn increment<T: ?Sized>(
    owner: &T,
    name: &str,
    delta: i64,
    range: CounterRange,
    attempt: &mut Attempt,
    max_batch: usize,
    applier: &dyn ApplyBatch,
) -> Result<i64> {
    let queue = queue(owner, name);
    let (reply, mut answer) = tokio::sync::oneshot::channel();
    lock(&queue.waiting).push_back(Pending {
        delta,
        range,
        attempt: attempt.clone(),
        planned: None,
        refused: None,
        in_doubt: false,
        reply,
    });
    loop {
        tokio::select! {
            biased;
            answered = &mut answer => {
                let (result, returned) = answered
                    .unwrap_or_else(|_| (Err(lost_batch()), attempt.clone()));
                *attempt = returned;
                return result;
            }
            turn = queue.turn.clone().lock_owned() => {
                let mut batch = Batch {
                    pending: {
                        let mut waiting = lock(&queue.waiting);
                        waiting.retain(|pending| !pending.abandoned());
                        let take = waiting.len().min(max_batch.max(1));
                        waiting.drain(..take).collect()
                    },
                    queue: queue.clone(),
                };
                // Ours may be in a batch that has answered, or in this one.
                if !batch.is_empty() {
                    applier.apply(&mut batch).await;
                }
                drop(batch);
                drop(turn);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The answer of an increment whose batch ended without one: it may have written.
fn lost_batch() -> KvError {
    KvError::unavailable(format!(
        "{OUTCOME_UNKNOWN}: the batch applying this increment ended without an answer"
    ))
    .with_transient(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Answers every increment with the next total after a pause, counting batch sizes.
    #[derive(Default)]
    struct Counting {
        total: Mutex<i64>,
        batches: Mutex<Vec<usize>>,
        pause: Duration,
    }

    #[async_trait]
    impl ApplyBatch for Counting {
        async fn apply(&self, batch: &mut Batch) {
            tokio::time::sleep(self.pause).await;
            lock(&self.batches).push(batch.pending.len());
            batch.answer(|pending| {
                let mut total = lock(&self.total);
                *total += pending.delta;
                Some(Ok(*total))
            });
        }
    }

    /// Increments queued while a batch runs go into the next one, together, and each gets its
    /// own total.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_increments_are_applied_together() {
        let applier = Arc::new(Counting {
            pause: Duration::from_millis(20),
            ..Counting::default()
        });
        let calls: Vec<_> = (0..40)
            .map(|_| {
                let applier = applier.clone();
                tokio::spawn(async move {
                    let mut attempt = Attempt::new();
                    increment(
                        &*applier,
                        "combine-test",
                        1,
                        CounterRange::Signed,
                        &mut attempt,
                        16,
                        &*applier,
                    )
                    .await
                })
            })
            .collect();
        let mut totals = Vec::new();
        for call in calls {
            totals.push(call.await.expect("joined").expect("incremented"));
        }
        totals.sort_unstable();
        assert_eq!(totals, (1..=40).collect::<Vec<i64>>(), "every total once");
        let batches = lock(&applier.batches).clone();
        assert_eq!(batches.iter().sum::<usize>(), 40);
        assert!(batches.iter().all(|&size| size <= 16), "{batches:?}");
        assert!(batches.len() < 40, "nothing was combined: {batches:?}");
    }

    /// A caller cancelled while it applies a batch hands the others' increments back: the
    /// next caller applies them, and every live caller gets an answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_caller_hands_its_batch_on() {
        let applier = Arc::new(Counting {
            pause: Duration::from_millis(100),
            ..Counting::default()
        });
        let call = |applier: Arc<Counting>| async move {
            let mut attempt = Attempt::new();
            increment(
                &*applier,
                "cancel-test",
                1,
                CounterRange::Signed,
                &mut attempt,
                8,
                &*applier,
            )
            .await
        };
        // The first call takes the turn alone; the next two wait and go into one batch,
        // applied by whichever of them gets the turn. That one is cancelled mid-batch.
        let first = tokio::spawn(call(applier.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = tokio::spawn(call(applier.clone()));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let third = tokio::spawn(call(applier.clone()));
        assert_eq!(first.await.expect("joined").expect("incremented"), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        second.abort();
        let answered = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the third call is answered")
            .expect("joined");
        assert_eq!(
            answered.expect("incremented"),
            2,
            "applied once, after the handover"
        );
        assert_eq!(
            *lock(&applier.total),
            2,
            "the cancelled call was not applied"
        );
    }
}
