//! Checks a recorded history of key-value operations against the contract of
//! docs/semantics.md, Jepsen style: clients record what they invoked and what they were told
//! ([`history`]), and the checkers decide whether some execution of the store explains it.
//!
//! - [`linearizable`]: each key is a register (get / set / delete / swap / increment) and must be
//!   linearizable; keys are checked independently (P-compositionality).
//! - counters: totals and reads of increment-only keys stay within what the increments allow
//!   and never repeat (S6).
//! - listings: a listing returns every key that existed throughout it (S5).
//!
//! ```
//! use kv_check::history::{Entry, History, Op, Outcome, Process, Ret};
//!
//! let p = Process::new(0, 0);
//! let q = Process::new(0, 1);
//! let history = History::new(vec![
//!     Entry::new(p, Op::set("k", "a"), 0, Some(10), Outcome::Ok(Ret::Done)),
//!     // Read after the write returned: must see it.
//!     Entry::new(q, Op::get("k"), 20, Some(30), Outcome::Ok(Ret::Value(None))),
//! ]);
//! let verdict = kv_check::check(&history);
//! assert_eq!(verdict.valid, kv_check::Validity::Invalid);
//! println!("{verdict}");
//! ```

#![deny(missing_docs)]

pub mod history;
pub mod linearizable;
pub mod report;
pub mod workload;

mod counter;
mod keyed;
mod listing;

use std::collections::HashSet;

pub use history::{Entry, History, Op, Outcome, Process, Recorder, Ret, Ticket, Value};
pub use report::{Anomaly, AnomalyKind, IndexedEntry, Validity, Verdict};
pub use workload::{Generator, Workload};

use keyed::{KeyOp, KeyOpKind};
use linearizable::{Limits, Search, ShrinkBudget};
use report::Finding;

/// How a check runs: bounds on its work, and what it may assume about `info` operations.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Steps of the linearizability search per key; past it the key is unknown.
    pub steps_per_key: u64,
    /// Longest, in nanoseconds, an `info` operation can take effect after its invocation (or
    /// after its reply, if that came later). `None`, the default, assumes nothing: any time
    /// later, or never. docs/semantics.md S4 bounds a retried write by the operation timeout;
    /// setting this to that timeout plus a margin keeps keys with many `info` operations
    /// checkable (kv-check/README.md).
    pub info_horizon: Option<u64>,
    /// Searches the shrinking of one non-linearizable key may run.
    pub shrink_searches: u32,
    /// Steps of each of those searches.
    pub shrink_steps: u64,
    /// Steps of all of them together; past it the sub-history found so far is reported.
    pub shrink_total_steps: u64,
    /// How many more times a plain `set` or `delete` may take effect within its own call: a
    /// host that retries plain writes (docs/semantics.md S4) applies one again with each retry
    /// after a lost reply, up to its attempts less one. 0 by default: a strict register, where
    /// a repeat that undid another client's write is an anomaly.
    pub write_repeats: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            steps_per_key: 5_000_000,
            info_horizon: None,
            shrink_searches: 500,
            shrink_steps: 100_000,
            shrink_total_steps: 5_000_000,
            write_repeats: 0,
        }
    }
}

/// Checks `history` with the default [`Options`].
pub fn check(history: &History) -> Verdict {
    check_with(history, &Options::default())
}

/// Checks `history`: every key's linearizability, counters and listings.
pub fn check_with(history: &History, options: &Options) -> Verdict {
    let (keys, malformed) = keyed::split(history, options.write_repeats);
    let mut findings: Vec<Finding> = malformed
        .into_iter()
        .map(|m| Finding::new(AnomalyKind::Malformed, None, m.reason, vec![m.entry]))
        .collect();
    let mut unknown_keys = Vec::new();
    let mut counters_by_bounds = Vec::new();
    let limits = Limits {
        budget: options.steps_per_key,
        info_horizon: options.info_horizon,
    };
    let shrink = ShrinkBudget {
        searches: options.shrink_searches,
        steps: options.shrink_total_steps,
        limits: Limits {
            budget: options.shrink_steps,
            ..limits
        },
    };
    for (key, key_history) in &keys {
        let all: Vec<&KeyOp> = key_history.ops.iter().collect();
        // Seeing what nothing wrote needs no search, and is its own smallest history.
        let nowhere = linearizable::from_nowhere(&all);
        if !nowhere.is_empty() {
            findings.push(explain(key, &nowhere, key_history));
            continue;
        }
        let ops = without_unseen_optional_writes(&all);
        match linearizable::search(&ops, limits) {
            Search::Linearizable => {}
            // A counter with many `info` increments (each may land anywhere up to its horizon)
            // can exhaust the search; its bounds and distinct totals are still checked, in
            // O(n log n), which is what a counter promises (S6).
            Search::Unknown if counter::is_counter(key_history) => {
                counters_by_bounds.push(key.clone());
            }
            Search::Unknown => unknown_keys.push(key.clone()),
            Search::NotLinearizable => {
                let small = linearizable::shrink(&ops, shrink);
                findings.push(explain(key, &small, key_history));
            }
        }
    }
    findings.extend(counter::check(&keys));
    findings.extend(listing::check(history, &keys));
    let mut anomalies: Vec<Anomaly> = findings
        .into_iter()
        .map(|f| f.into_anomaly(history))
        .collect();
    anomalies.sort_by(|a, b| {
        (a.kind as u8, &a.key, a.ops.first().map(|e| e.index)).cmp(&(
            b.kind as u8,
            &b.key,
            b.ops.first().map(|e| e.index),
        ))
    });
    let valid = if !anomalies.is_empty() {
        Validity::Invalid
    } else if !unknown_keys.is_empty() {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    Verdict {
        valid,
        anomalies,
        unknown_keys,
        counters_by_bounds,
    }
}

/// `ops` without the optional writes (`info` ones, and repeats) of a value no operation
/// observed: if such a write took effect, the value it left was only ever overwritten by a
/// blind write (a read would have returned it, a swap expected it, an increment counted it), so
/// a linearization with it is one without it. Each one left in would double the orders the
/// search tries; a backend crash leaves dozens.
fn without_unseen_optional_writes<'a>(ops: &[&'a KeyOp]) -> Vec<&'a KeyOp> {
    let counted = ops
        .iter()
        .any(|op| matches!(op.kind, KeyOpKind::Increment { .. }));
    let mut seen: HashSet<&Value> = HashSet::new();
    for op in ops {
        match &op.kind {
            KeyOpKind::Read(Some(v)) => {
                seen.insert(v);
            }
            KeyOpKind::Cas {
                expected: Some(v), ..
            } => {
                seen.insert(v);
            }
            _ => {}
        }
    }
    let observed = |v: &Value| {
        seen.contains(v) || (counted && linearizable::canonical_int(v.as_bytes()).is_some())
    };
    ops.iter()
        .copied()
        .filter(|op| {
            let optional = op.complete.is_none() || op.repeat;
            let written = match &op.kind {
                KeyOpKind::Write(Some(v)) | KeyOpKind::Cas { new: v, .. } => Some(v),
                _ => None,
            };
            !(optional && written.is_some_and(|v| !observed(v)))
        })
        .collect()
}

/// Names a non-linearizable key's anomaly, given its shrunk sub-history `small`: reads of what
/// only failed operations of the key wrote are [`AnomalyKind::FailedOpVisible`] (with those
/// operations added), reads of what nothing wrote are said so.
fn explain(key: &str, small: &[&KeyOp], all: &keyed::KeyHistory) -> Finding {
    let failed = &all.failed;
    let written: HashSet<&Value> = all.ops.iter().filter_map(|op| op.kind.written()).collect();
    let mut entries: Vec<usize> = small.iter().map(|op| op.entry).collect();
    let mut from_failed = Vec::new();
    let mut from_nowhere = Vec::new();
    for op in small {
        let KeyOpKind::Read(Some(v)) = &op.kind else {
            continue;
        };
        if written.contains(v) {
            continue;
        }
        let writers: Vec<usize> = failed
            .iter()
            .filter(|f| f.kind.written() == Some(v))
            .map(|f| f.entry)
            .collect();
        if writers.is_empty() {
            from_nowhere.push(v.to_string());
        } else {
            entries.extend(&writers);
            from_failed.push(v.to_string());
        }
    }
    if !from_failed.is_empty() {
        let detail = format!(
            "a read of {key} returned {}, written only by an operation reported as failed",
            from_failed.join(", ")
        );
        return Finding::new(AnomalyKind::FailedOpVisible, Some(key), detail, entries);
    }
    let mut detail = format!(
        "no order of these operations on {key}, each at one instant between its invocation and \
         completion, explains every reply"
    );
    if !from_nowhere.is_empty() {
        detail.push_str(&format!(
            "; {} was read but never written",
            from_nowhere.join(", ")
        ));
    }
    Finding::new(AnomalyKind::NotLinearizable, Some(key), detail, entries)
}
