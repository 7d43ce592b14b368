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
//! `info` operations have no return event: they may be linearized at any point after their
//! invocation, and the search succeeds once every `ok` operation is placed, leaving the `info`
//! ones that were never applied. The search is bounded by a budget of steps; past it the answer
//! is [`Search::Unknown`].

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
    complete: Option<u64>,
    step: Step,
}

fn model(ops: &[&KeyOp]) -> Vec<ModelOp> {
    let mut interner = Interner::default();
    ops.iter()
        .map(|op| {
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
            ModelOp {
                invoke: op.invoke,
                complete: op.complete,
                step,
            }
        })
        .collect()
}

/// Searches for a linearization of `ops` (one key's `ok` and `info` operations) within `budget`
/// steps.
pub(crate) fn search(ops: &[&KeyOp], budget: u64) -> Search {
    let ops = model(ops);
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

    let mut required = ops.iter().filter(|op| op.complete.is_some()).count();
    let mut linearized = vec![0u64; n.div_ceil(64)];
    let mut cache: HashSet<(Box<[u64]>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state = State::Absent;
    let mut entry = next[head];
    let mut steps = 0u64;
    loop {
        if required == 0 {
            return Search::Linearizable;
        }
        steps += 1;
        if steps > budget {
            return Search::Unknown;
        }
        if entry < n {
            let op = &ops[entry];
            if let Some(after) = op.step.apply(state) {
                linearized[entry / 64] |= 1 << (entry % 64);
                if cache.insert((linearized.clone().into_boxed_slice(), after)) {
                    stack.push((entry, state));
                    state = after;
                    unlink(&mut next, &mut prev, entry);
                    if op.complete.is_some() {
                        unlink(&mut next, &mut prev, n + entry);
                        required -= 1;
                    }
                    entry = next[head];
                    continue;
                }
                linearized[entry / 64] &= !(1 << (entry % 64));
            }
            entry = next[entry];
        } else {
            // A return (or the end): its call was not placed before it; undo the last choice.
            let Some((call, before)) = stack.pop() else {
                return Search::NotLinearizable;
            };
            linearized[call / 64] &= !(1 << (call % 64));
            state = before;
            if ops[call].complete.is_some() {
                relink(&mut next, &mut prev, n + call);
                required += 1;
            }
            relink(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
}

/// The reads in `ops` whose value no operation in `ops` could have written (absent always can
/// be read), by address: one `get-many` gives several reads. Shrinking never adds to these, so
/// it does not cut the write a stale read saw and leave a read "from nowhere" as a misleading
/// minimal history.
fn unexplained_reads(ops: &[&KeyOp]) -> HashSet<*const KeyOp> {
    let counts = ops
        .iter()
        .any(|op| matches!(op.kind, KeyOpKind::Increment { .. }));
    let written: HashSet<&Value> = ops.iter().filter_map(|op| op.kind.written()).collect();
    ops.iter()
        .filter(|op| match &op.kind {
            KeyOpKind::Read(Some(v)) => {
                let counted = counts && canonical_int(v.as_bytes()).is_some();
                !written.contains(v) && !counted
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
    /// Steps per search.
    pub steps: u64,
}

/// A smaller non-linearizable subset of `ops` (which must be non-linearizable): chunks, then
/// single operations, are removed while the rest stays non-linearizable (delta debugging, one
/// sided). Bounded by `budget`; the result is minimal when the budget did not run out.
pub(crate) fn shrink<'a>(ops: &[&'a KeyOp], budget: ShrinkBudget) -> Vec<&'a KeyOp> {
    let mut current: Vec<&KeyOp> = ops.to_vec();
    let mut searches = 0u32;
    let accept = |candidate: &[&KeyOp], current: &[&KeyOp], searches: &mut u32| -> bool {
        let before = unexplained_reads(current);
        if !unexplained_reads(candidate).is_subset(&before) {
            return false;
        }
        *searches += 1;
        search(candidate, budget.steps) == Search::NotLinearizable
    };
    let mut chunk = current.len() / 2;
    while chunk >= 1 && searches < budget.searches {
        let mut start = 0;
        let mut removed_any = false;
        while start < current.len() && searches < budget.searches {
            let end = (start + chunk).min(current.len());
            let candidate: Vec<&KeyOp> = current[..start]
                .iter()
                .chain(&current[end..])
                .copied()
                .collect();
            if accept(&candidate, &current, &mut searches) {
                current = candidate;
                removed_any = true;
            } else {
                start = end;
            }
        }
        // Single removals repeat until nothing more can go.
        if chunk == 1 && !removed_any {
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
            kind,
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
        assert_eq!(search(&refs, 50), Search::Unknown);
        assert_eq!(search(&refs, u64::MAX), Search::NotLinearizable);
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
        assert_eq!(search(&refs, u64::MAX), Search::NotLinearizable);
        let small = shrink(
            &refs,
            ShrinkBudget {
                searches: 1000,
                steps: 10_000,
            },
        );
        let entries: Vec<usize> = small.iter().map(|o| o.entry).collect();
        assert_eq!(entries, vec![0, 2, 4]);
    }
}
