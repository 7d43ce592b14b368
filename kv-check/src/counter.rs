//! Counter checks for keys written only by `increment` (docs/semantics.md S6: exactly once,
//! distinct totals). They need no search, so they stay decisive where the linearizability search
//! gives up, and they name the broken rule.
//!
//! Every observation of the counter (a read, or the total an `ok` increment returned) is bounded
//! by the increments that could precede it: those that completed `ok` before it was invoked
//! certainly did; those invoked before it completed (`ok` ones overlapping it, and `info` ones,
//! which may apply at any time after invocation) may have. With all deltas positive, a read after
//! everything lies in [sum of oks, sum of oks + sum of infos]; negative deltas widen the range
//! downwards. When every delta has the same sign, totals strictly move one way, so two `ok`
//! increments must not return the same total.

use std::collections::HashMap;

use crate::keyed::{KeyHistory, KeyOp, KeyOpKind};
use crate::linearizable::canonical_int;
use crate::report::{AnomalyKind, Finding};

/// One increment as the bounds see it.
struct Inc {
    entry: usize,
    invoke: u64,
    /// `Some` for `ok`; `info` ones never certainly precede anything.
    complete: Option<u64>,
    delta: i128,
}

/// Sums over the increments sorted one way, so a bound costs two binary searches.
struct Prefix {
    keys: Vec<u64>,
    /// Running sums of (all deltas, negative deltas, positive deltas).
    sums: Vec<(i128, i128, i128)>,
}

impl Prefix {
    fn new(mut items: Vec<(u64, i128)>) -> Self {
        items.sort_unstable_by_key(|(k, _)| *k);
        let mut sums = vec![(0, 0, 0)];
        let mut acc = (0i128, 0i128, 0i128);
        for (_, d) in &items {
            acc = (acc.0 + d, acc.1 + d.min(&0), acc.2 + d.max(&0));
            sums.push(acc);
        }
        Prefix {
            keys: items.into_iter().map(|(k, _)| k).collect(),
            sums,
        }
    }

    /// Sums over the items whose key is `< bound` (or `<= bound`).
    fn below(&self, bound: u64, inclusive: bool) -> (i128, i128, i128) {
        let count = self
            .keys
            .partition_point(|k| if inclusive { *k <= bound } else { *k < bound });
        self.sums[count]
    }
}

/// Whether `history` is a counter's: only increments and reads, at least one increment.
pub(crate) fn is_counter(history: &KeyHistory) -> bool {
    history
        .ops
        .iter()
        .all(|op| matches!(op.kind, KeyOpKind::Increment { .. } | KeyOpKind::Read(_)))
        && history
            .ops
            .iter()
            .any(|op| matches!(op.kind, KeyOpKind::Increment { .. }))
}

/// Checks every counter key of `keys`.
pub(crate) fn check<'a>(
    keys: impl IntoIterator<Item = (&'a String, &'a KeyHistory)>,
) -> Vec<Finding> {
    let mut anomalies = Vec::new();
    for (key, history) in keys {
        let counter_only = history
            .ops
            .iter()
            .all(|op| matches!(op.kind, KeyOpKind::Increment { .. } | KeyOpKind::Read(_)));
        let incs: Vec<Inc> = history
            .ops
            .iter()
            .filter_map(|op| match op.kind {
                KeyOpKind::Increment { delta, .. } => Some(Inc {
                    entry: op.entry,
                    invoke: op.invoke,
                    complete: op.complete,
                    delta: i128::from(delta),
                }),
                _ => None,
            })
            .collect();
        if !counter_only || incs.is_empty() {
            continue;
        }
        check_bounds(key, &history.ops, &incs, &mut anomalies);
        check_distinct(key, &history.ops, &incs, &mut anomalies);
        check_monotonic(key, &history.ops, &incs, &mut anomalies);
    }
    anomalies
}

fn check_bounds(key: &str, ops: &[KeyOp], incs: &[Inc], anomalies: &mut Vec<Finding>) {
    let by_complete = Prefix::new(
        incs.iter()
            .filter_map(|i| i.complete.map(|c| (c, i.delta)))
            .collect(),
    );
    let by_invoke = Prefix::new(incs.iter().map(|i| (i.invoke, i.delta)).collect());
    for op in ops {
        let Some(complete) = op.complete else {
            continue;
        };
        let (observed, own) = match &op.kind {
            KeyOpKind::Read(None) => (0, 0),
            KeyOpKind::Read(Some(v)) => match canonical_int(v.as_bytes()) {
                Some(n) => (i128::from(n), 0),
                None => {
                    anomalies.push(Finding::new(
                        AnomalyKind::CounterOutOfBounds,
                        Some(key),
                        format!("a read of counter {key} returned {v}, not an integer"),
                        vec![op.entry],
                    ));
                    continue;
                }
            },
            KeyOpKind::Increment {
                delta,
                total: Some(t),
            } => (i128::from(*t), i128::from(*delta)),
            _ => continue,
        };
        // Certainly before: ok and completed before this was invoked.
        let (certain, certain_neg, certain_pos) = by_complete.below(op.invoke, false);
        // Maybe before: invoked by the time this completed, minus the certain ones and itself.
        let (_, all_neg, all_pos) = by_invoke.below(complete, true);
        let mut maybe_neg = all_neg - certain_neg;
        let mut maybe_pos = all_pos - certain_pos;
        if own != 0 {
            maybe_neg -= own.min(0);
            maybe_pos -= own.max(0);
        }
        let low = certain + maybe_neg + own;
        let high = certain + maybe_pos + own;
        if (low..=high).contains(&observed) {
            continue;
        }
        let too_high = observed > high;
        // The evidence: the increments that fix the violated bound.
        let mut evidence: Vec<usize> = incs
            .iter()
            .filter(|i| i.entry != op.entry)
            .filter(|i| {
                let certainly = i.complete.is_some_and(|c| c < op.invoke);
                let maybe = !certainly && i.invoke <= complete;
                certainly || (maybe && ((too_high && i.delta > 0) || (!too_high && i.delta < 0)))
            })
            .map(|i| i.entry)
            .collect();
        evidence.push(op.entry);
        let what = if own != 0 {
            "an increment returned"
        } else {
            "a read returned"
        };
        anomalies.push(Finding::new(
            AnomalyKind::CounterOutOfBounds,
            Some(key),
            format!(
                "{what} {observed} for counter {key}, outside [{low}, {high}]: the increments \
                 that completed before it and those that may have applied by its completion \
                 allow no other total"
            ),
            evidence,
        ));
    }
}

/// Most backwards steps reported per counter: one shows the bug, the rest repeat it.
const MAX_BACKWARDS: usize = 10;

/// With every delta of one sign a counter only moves one way: an observation (a read, or an
/// increment's total) that completed before another was invoked must not be passed by it in
/// the wrong direction. The bounds check looks at each observation alone; this compares them
/// with each other, in O(n log n), so it holds when the linearizability search ran out.
fn check_monotonic(key: &str, ops: &[KeyOp], incs: &[Inc], anomalies: &mut Vec<Finding>) {
    let up = incs.iter().all(|i| i.delta > 0);
    let down = incs.iter().all(|i| i.delta < 0);
    if !up && !down {
        return;
    }
    // (invoke, complete, value oriented so that it must not decrease, entry)
    let mut observations: Vec<(u64, u64, i128, usize)> = ops
        .iter()
        .filter_map(|op| {
            let complete = op.complete?;
            let value = match &op.kind {
                KeyOpKind::Read(None) => 0,
                KeyOpKind::Read(Some(v)) => i128::from(canonical_int(v.as_bytes())?),
                KeyOpKind::Increment { total: Some(t), .. } => i128::from(*t),
                _ => return None,
            };
            Some((
                op.invoke,
                complete,
                if up { value } else { -value },
                op.entry,
            ))
        })
        .collect();
    let mut by_complete = observations.clone();
    by_complete.sort_unstable_by_key(|o| o.1);
    observations.sort_unstable_by_key(|o| o.0);
    let mut earlier = by_complete.iter().peekable();
    let mut highest: Option<(i128, usize)> = None;
    let mut reported = 0;
    for &(invoke, _, value, entry) in &observations {
        while let Some(&&(_, complete, seen, seen_entry)) = earlier.peek() {
            if complete >= invoke {
                break;
            }
            if highest.is_none_or(|(h, _)| seen > h) {
                highest = Some((seen, seen_entry));
            }
            earlier.next();
        }
        if let Some((high, high_entry)) = highest
            && value < high
        {
            let shown = |v: i128| if up { v } else { -v };
            anomalies.push(Finding::new(
                AnomalyKind::CounterOutOfBounds,
                Some(key),
                format!(
                    "counter {key} went back: {} was observed after {} had been, and every \
                     increment moves it the other way",
                    shown(value),
                    shown(high)
                ),
                vec![high_entry, entry],
            ));
            reported += 1;
            if reported == MAX_BACKWARDS {
                return;
            }
        }
    }
}

fn check_distinct(key: &str, ops: &[KeyOp], incs: &[Inc], anomalies: &mut Vec<Finding>) {
    let one_way = incs.iter().all(|i| i.delta > 0) || incs.iter().all(|i| i.delta < 0);
    if !one_way {
        return;
    }
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for op in ops {
        if let KeyOpKind::Increment { total: Some(t), .. } = op.kind
            && let Some(first) = seen.insert(t, op.entry)
        {
            anomalies.push(Finding::new(
                AnomalyKind::DuplicateCounterTotal,
                Some(key),
                format!("two increments of counter {key} both returned {t}"),
                vec![first, op.entry],
            ));
        }
    }
}
