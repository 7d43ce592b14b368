//! Linearizability of one key's register: the Wing–Gong search with Lowe's memoisation
//! ("Testing for linearizability", 2017), the algorithm of todc-utils, Porcupine and Knossos'
//! `wgl`, written here because no crate takes `info` operations (kv-check/README.md).
//!
//! The register holds bytes or nothing. `set`/`delete` write; a read must return the current
//! value; a swap needs the current value to equal what its handle read; an increment reads the
//! value as a canonical decimal i64 (absent = 0, docs/semantics.md S6) and its reply must be the
//! new total. Comparing values, not versions, is weaker than S7 (an identical rewrite between the
//! handle's read and the swap is invisible here), so everything this flags is a real violation.
//!
//! `info` operations are optional: they may be linearized at any point after their invocation,
//! or never, and the search succeeds once every `ok` operation is placed. By default they have
//! no return event (Knossos' "completion at infinity"); with a horizon `h` (S4 bounds a retried
//! write by the operation timeout) an `info` operation gets a deadline, `invoke + h` (or its
//! reply, if later), where it is dropped as never applied if it was not placed by then. The
//! deadline keeps pending `info` operations from multiplying the search space for the rest of
//! the history. The search is bounded by a budget of steps; past it the answer is
//! [`Search::Unknown`].

use std::collections::{HashMap, HashSet};

use crate::history::Value;
use crate::keyed::{KeyOp, KeyOpKind};

/// The answer of one search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// Some order of the operations, within their intervals, explains every reply.
    Linearizable,
    /// No order does.
    NotLinearizable,
    /// The budget ran out first.
    Unknown,
}

/// A register state; canonical decimals are kept as integers so `b"5"` written by `set` and the
/// 5 an increment leaves compare equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum State {
    Absent,
    Int(i64),
    Bytes(u32),
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Read(State),
    Write(State),
    Cas { expected: State, new: State },
    Increment { delta: i64, total: Option<i64> },
}

impl Step {
    /// The state after this operation, or `None` if it cannot happen in `state`.
    fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Read(seen) => (seen == state).then_some(state),
            Step::Write(next) => Some(next),
            Step::Cas { expected, new } => (expected == state).then_some(new),
            Step::Increment { delta, total } => {
                let current = match state {
                    State::Absent => 0,
                    State::Int(n) => n,
                    // Not an integer: the increment fails and writes nothing (S6).
                    State::Bytes(_) => return None,
                };
                let next = current.checked_add(delta)?;
                match total {
                    Some(t) if t != next => None,
                    _ => Some(State::Int(next)),
                }
            }
        }
    }
}

/// The canonical decimal form of an i64 (S6), or `None`.
pub(crate) fn canonical_int(bytes: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(bytes).ok()?;
    let n: i64 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

#[derive(Default)]
struct Interner(HashMap<Vec<u8>, u32>);

impl Interner {
    fn state(&mut self, value: Option<&Value>) -> State {
        let Some(value) = value else {
            return State::Absent;
        };
        if let Some(n) = canonical_int(value.as_bytes()) {
            return State::Int(n);
        }
        let next = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        State::Bytes(*self.0.entry(value.0.clone()).or_insert(next))
    }
}

struct ModelOp {
    invoke: u64,
    /// The return event: the completion of an `ok` operation, the deadline of an `info` one;
    /// `None`: never.
    complete: Option<u64>,
    /// `info`: may never take effect.
    optional: bool,
    step: Step,
    /// For a repeat of a write: the repeat before it, which must be placed first. Repeats are
    /// interchangeable; ordering them keeps the search from trying each of their orders.
    after: Option<usize>,
}

/// How far a search may go.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Steps before giving up with [`Search::Unknown`].
    pub budget: u64,
    /// Longest an operation can take effect after its invocation (`None`: any time).
    pub info_horizon: Option<u64>,
}

fn model(ops: &[&KeyOp], horizon: Option<u64>) -> Vec<ModelOp> {
    let mut interner = Interner::default();
    ops.iter()
        .enumerate()
        .map(|(index, op)| {
            let after = index
                .checked_sub(1)
                .filter(|&before| op.repeat && ops[before].repeat && ops[before].entry == op.entry);
            let step = match &op.kind {
                KeyOpKind::Read(v) => Step::Read(interner.state(v.as_ref())),
                KeyOpKind::Write(v) => Step::Write(interner.state(v.as_ref())),
                KeyOpKind::Cas { expected, new } => Step::Cas {
                    expected: interner.state(expected.as_ref()),
                    new: interner.state(Some(new)),
                },
                KeyOpKind::Increment { delta, total } => Step::Increment {
                    delta: *delta,
                    total: *total,
                },
            };
            let optional = op.complete.is_none() || op.repeat;
            let complete = match (op.complete, horizon) {
                (Some(c), _) => Some(c),
                // A repeat is a retry's, and retries end when the call returns, whatever it
                // was told (S4); only the call's own late request may land after that.
                (None, _) if op.repeat && op.returned.is_some() => op.returned,
                (None, Some(h)) => {
                    let deadline = op.invoke.saturating_add(h);
                    Some(op.returned.map_or(deadline, |r| r.max(deadline)))
                }
                (None, None) => None,
            };
            ModelOp {
                invoke: op.invoke,
                complete,
                optional,
                step,
                after,
            }
        })
        .collect()
}

/// Searches for a linearization of `ops` (one key's `ok` and `info` operations) within
/// `limits`.
pub(crate) fn search(ops: &[&KeyOp], limits: Limits) -> Search {
    counted_search(ops, limits).0
}

/// [`search`], and the steps it took.
fn counted_search(ops: &[&KeyOp], limits: Limits) -> (Search, u64) {
    let ops = model(ops, limits.info_horizon);
    let n = ops.len();
    // Nodes 0..n are calls, n..2n returns (unused for info), 2n the head, 2n+1 the tail.
    let head = 2 * n;
    let tail = 2 * n + 1;
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoke, 0, i));
        if let Some(complete) = op.complete {
            // At equal instants calls sort first: touching intervals count as concurrent.
            events.push((complete, 1, n + i));
        }
    }
    events.sort_unstable();
    let mut next = vec![tail; 2 * n + 2];
    let mut prev = vec![head; 2 * n + 2];
    let mut last = head;
    for &(_, _, node) in &events {
        next[last] = node;
        prev[node] = last;
        last = node;
    }
    next[last] = tail;
    prev[tail] = last;

    let unlink = |next: &mut [usize], prev: &mut [usize], node: usize| {
        next[prev[node]] = next[node];
        prev[next[node]] = prev[node];
    };
    let relink = |next: &mut [usize], prev: &mut [usize], node: usize| {
        next[prev[node]] = node;
        prev[next[node]] = node;
    };

    let mut required = ops.iter().filter(|op| !op.optional).count();
    let mut linearized = vec![0u64; n.div_ceil(64)];
    let mut cache: HashSet<(Box<[u64]>, State)> = HashSet::new();
    // (operation, state before, whether it was dropped rather than applied)
    let mut stack: Vec<(usize, State, bool)> = Vec::new();
    let mut state = State::Absent;
    let mut entry = next[head];
    let mut steps = 0u64;
    loop {
        if required == 0 {
            return (Search::Linearizable, steps);
        }
        steps += 1;
        if steps > limits.budget {
            return (Search::Unknown, steps);
        }
        // A call tries to apply its operation; the deadline of an optional one not applied
        // drops it (it never took effect).
        let placed = |op: usize| linearized[op / 64] & (1 << (op % 64)) != 0;
        let choice = if entry < n {
            if ops[entry].after.is_some_and(|before| !placed(before)) {
                None
            } else {
                ops[entry]
                    .step
                    .apply(state)
                    .map(|after| (entry, after, false))
            }
        } else if entry < 2 * n && ops[entry - n].optional {
            Some((entry - n, state, true))
        } else {
            None
        };
        if let Some((op, after, dropped)) = choice {
            linearized[op / 64] |= 1 << (op % 64);
            if cache.insert((linearized.clone().into_boxed_slice(), after)) {
                stack.push((op, state, dropped));
                state = after;
                unlink(&mut next, &mut prev, op);
                if ops[op].complete.is_some() {
                    unlink(&mut next, &mut prev, n + op);
                }
                if !ops[op].optional {
                    required -= 1;
                }
                entry = next[head];
                continue;
            }
            linearized[op / 64] &= !(1 << (op % 64));
        }
        if entry < n {
            entry = next[entry];
            continue;
        }
        // A return (or the end) reached with its call not placed: undo the last choice.
        let Some((op, before, dropped)) = stack.pop() else {
            return (Search::NotLinearizable, steps);
        };
        linearized[op / 64] &= !(1 << (op % 64));
        state = before;
        if ops[op].complete.is_some() {
            relink(&mut next, &mut prev, n + op);
        }
        relink(&mut next, &mut prev, op);
        if !ops[op].optional {
            required += 1;
        }
        // After a drop, the deadline comes back and is already cached: it backtracks again.
        entry = if dropped { n + op } else { next[op] };
    }
}

/// The operations in `ops` that observe a value no operation in `ops` could have left: no order
/// explains them, so a key with one needs no search.
pub(crate) fn from_nowhere<'a>(ops: &[&'a KeyOp]) -> Vec<&'a KeyOp> {
    let unseen = unexplained(ops);
    ops.iter()
        .copied()
        .filter(|op| unseen.contains(&std::ptr::from_ref(*op)))
        .collect()
}

/// The operations in `ops` that observe a value no operation in `ops` could have left (absent
/// always can be): a read's value, a swap's expected value, the prior total of an increment.
/// By address: one `get-many` gives several reads. Shrinking never adds to these, so it does not
/// cut the write a stale read or a swap saw and leave an observation "from nowhere" as a
/// misleading minimal history.
fn unexplained(ops: &[&KeyOp]) -> HashSet<*const KeyOp> {
    let increments = ops
        .iter()
        .filter(|op| matches!(op.kind, KeyOpKind::Increment { .. }))
        .count();
    let written: HashSet<&Value> = ops.iter().filter_map(|op| op.kind.written()).collect();
    let explained = |v: &Value| {
        written.contains(v) || (increments > 0 && canonical_int(v.as_bytes()).is_some())
    };
    ops.iter()
        .filter(|op| match &op.kind {
            KeyOpKind::Read(Some(v))
            | KeyOpKind::Cas {
                expected: Some(v), ..
            } => !explained(v),
            KeyOpKind::Increment {
                delta,
                total: Some(t),
            } => {
                // The value it found: absent (0), a decimal written, or another increment's.
                let prior = t.checked_sub(*delta);
                prior != Some(0)
                    && increments < 2
                    && !prior
                        .is_some_and(|p| written.contains(&Value::from(p.to_string().as_str())))
            }
            _ => false,
        })
        .map(|op| std::ptr::from_ref::<KeyOp>(op))
        .collect()
}

/// Bounds for [`shrink`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShrinkBudget {
    /// Searches tried at most.
    pub searches: u32,
    /// Steps of all searches together.
    pub steps: u64,
    /// The limits of each.
    pub limits: Limits,
}

/// A smaller non-linearizable subset of `ops` (which must be non-linearizable) that still
/// proves `ops` non-linearizable: only removals that cannot make a linearizable history fail
/// are made, so the anomaly shown is the one in the history, not one the shrinking created.
///
/// - Everything after a cut where every kept `ok` operation completed before any removed one
///   was invoked: a linearization of the whole orders the kept operations first. The shortest
///   failing such prefix is found by bisection.
/// - Reads: a read changes nothing, so a linearization of the whole is one of the rest.
///
/// Removing a write is not sound (the rest could fail only because the write is gone: a delete
/// between a write and an increment, say), so writes before the violation stay. Bounded by
/// `budget`; the result is minimal in this sense when the budget did not run out.
pub(crate) fn shrink<'a>(ops: &[&'a KeyOp], budget: ShrinkBudget) -> Vec<&'a KeyOp> {
    let mut current: Vec<&KeyOp> = ops.to_vec();
    current.sort_by_key(|op| (op.invoke, op.entry));
    let searches = std::cell::Cell::new(0u32);
    let steps = std::cell::Cell::new(0u64);
    let left = || searches.get() < budget.searches && steps.get() < budget.steps;
    let fails = |candidate: &[&KeyOp]| -> bool {
        searches.set(searches.get() + 1);
        let (found, took) = counted_search(candidate, budget.limits);
        steps.set(steps.get().saturating_add(took));
        found == Search::NotLinearizable
    };
    // Cuts: keep current[..i] when the kept ok operations all completed before current[i].
    let mut cuts = Vec::new();
    let mut completed_by = 0u64;
    for i in 1..current.len() {
        if let Some(c) = current[i - 1].complete {
            completed_by = completed_by.max(c);
        }
        if completed_by < current[i].invoke {
            cuts.push(i);
        }
    }
    cuts.push(current.len());
    let (mut lo, mut hi) = (0, cuts.len() - 1);
    while lo < hi && left() {
        let mid = lo + (hi - lo) / 2;
        if fails(&current[..cuts[mid]]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    current.truncate(cuts[hi]);
    // Reads, in halving chunks, then one at a time until none can go.
    let mut chunk = current.len().div_ceil(2).max(1);
    loop {
        let mut removed_any = false;
        let mut start = 0;
        while start < current.len() && left() {
            let reads: Vec<usize> = (start..current.len())
                .filter(|&i| matches!(current[i].kind, KeyOpKind::Read(_)))
                .take(chunk)
                .collect();
            let Some(&last) = reads.last() else { break };
            let candidate: Vec<&KeyOp> = current
                .iter()
                .enumerate()
                .filter(|(i, _)| !reads.contains(i))
                .map(|(_, op)| *op)
                .collect();
            if fails(&candidate) {
                current = candidate;
                removed_any = true;
            } else {
                start = last + 1;
            }
        }
        if !left() || (chunk == 1 && !removed_any) {
            break;
        }
        chunk = (chunk / 2).max(1);
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(entry: usize, invoke: u64, complete: Option<u64>, kind: KeyOpKind) -> KeyOp {
        KeyOp {
            entry,
            invoke,
            complete,
            returned: complete,
            kind,
            repeat: false,
        }
    }
    fn limits(budget: u64) -> Limits {
        Limits {
            budget,
            info_horizon: None,
        }
    }
    fn v(s: &str) -> Option<Value> {
        Some(Value::from(s))
    }

    #[test]
    fn canonical_decimals_only() {
        assert_eq!(canonical_int(b"42"), Some(42));
        assert_eq!(canonical_int(b"-7"), Some(-7));
        assert_eq!(canonical_int(b"0"), Some(0));
        for bad in [
            &b"007"[..],
            b"+5",
            b"-0",
            b" 4",
            b"4.2",
            b"abc",
            b"99999999999999999999",
        ] {
            assert_eq!(canonical_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn budget_gives_unknown() {
        // Many concurrent writes and a read nobody wrote: the search must try many orders.
        let mut ops: Vec<KeyOp> = (0..12)
            .map(|i| op(i, 0, Some(100), KeyOpKind::Write(v(&i.to_string()))))
            .collect();
        ops.push(op(12, 0, Some(100), KeyOpKind::Read(v("nobody"))));
        let refs: Vec<&KeyOp> = ops.iter().collect();
        assert_eq!(search(&refs, limits(50)), Search::Unknown);
        assert_eq!(search(&refs, limits(u64::MAX)), Search::NotLinearizable);
    }

    #[test]
    fn shrink_keeps_the_write_a_stale_read_saw() {
        let ops = [
            op(0, 0, Some(1), KeyOpKind::Write(v("a"))),
            op(1, 2, Some(3), KeyOpKind::Read(v("a"))),
            op(2, 4, Some(5), KeyOpKind::Write(v("b"))),
            op(3, 6, Some(7), KeyOpKind::Read(v("b"))),
            op(4, 8, Some(9), KeyOpKind::Read(v("a"))),
        ];
        let refs: Vec<&KeyOp> = ops.iter().collect();
        assert_eq!(search(&refs, limits(u64::MAX)), Search::NotLinearizable);
        let small = shrink(
            &refs,
            ShrinkBudget {
                searches: 1000,
                steps: u64::MAX,
                limits: limits(10_000),
            },
        );
        let entries: Vec<usize> = small.iter().map(|o| o.entry).collect();
        assert_eq!(entries, vec![0, 2, 4]);
    }

    #[test]
    fn shrink_never_removes_a_write_and_cuts_only_after_the_violation() {
        // Without the delete, set b then increment -1 (which found nothing) would fail on its
        // own: a violation the history does not have. The real one is the last read.
        let ops = [
            op(0, 0, Some(10), KeyOpKind::Write(v("b"))),
            op(1, 20, Some(30), KeyOpKind::Read(v("b"))),
            op(2, 40, Some(50), KeyOpKind::Write(None)),
            op(
                3,
                60,
                Some(70),
                KeyOpKind::Increment {
                    delta: -1,
                    total: Some(-1),
                },
            ),
            op(4, 80, Some(90), KeyOpKind::Read(v("b"))),
            op(5, 100, Some(110), KeyOpKind::Write(v("c"))),
            op(6, 120, Some(130), KeyOpKind::Read(v("c"))),
        ];
        let refs: Vec<&KeyOp> = ops.iter().collect();
        let small = shrink(
            &refs,
            ShrinkBudget {
                searches: 1000,
                steps: u64::MAX,
                limits: limits(10_000),
            },
        );
        let entries: Vec<usize> = small.iter().map(|o| o.entry).collect();
        assert_eq!(entries, vec![0, 2, 3, 4]);
    }
}
