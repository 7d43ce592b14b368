//! What a check found: a [`Verdict`] of valid / invalid / unknown and the [`Anomaly`]s behind it,
//! each with the smallest sub-history found that still shows it, printable as a table and
//! serialisable as JSON (the sub-history's `ops` load back as a [`History`]).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::history::{Entry, History};

/// The overall answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// Every check passed.
    Valid,
    /// At least one anomaly.
    Invalid,
    /// No anomaly, but some key's search ran out of budget.
    Unknown,
}

/// JSON `true`, `false` or `"unknown"`.
impl Serialize for Validity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::Valid => serializer.serialize_bool(true),
            Validity::Invalid => serializer.serialize_bool(false),
            Validity::Unknown => serializer.serialize_str("unknown"),
        }
    }
}

impl<'de> Deserialize<'de> for Validity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Bool(true) => Ok(Validity::Valid),
            serde_json::Value::Bool(false) => Ok(Validity::Invalid),
            serde_json::Value::String(s) if s == "unknown" => Ok(Validity::Unknown),
            other => Err(serde::de::Error::custom(format!("not a validity: {other}"))),
        }
    }
}

/// Which rule an anomaly breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnomalyKind {
    /// No order of one key's operations within their intervals explains every reply
    /// (docs/semantics.md S4, S6, S7).
    NotLinearizable,
    /// A read returned what only an operation reported as failed wrote.
    FailedOpVisible,
    /// A counter read or increment total outside what the increments allow (S6).
    CounterOutOfBounds,
    /// Two increments returned the same total (S6).
    DuplicateCounterTotal,
    /// A listing missed a key that existed throughout it (S5).
    ListingMissingKey,
    /// An entry whose times or result do not fit its operation; it was left out of the checks.
    Malformed,
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            AnomalyKind::NotLinearizable => "not-linearizable",
            AnomalyKind::FailedOpVisible => "failed-op-visible",
            AnomalyKind::CounterOutOfBounds => "counter-out-of-bounds",
            AnomalyKind::DuplicateCounterTotal => "duplicate-counter-total",
            AnomalyKind::ListingMissingKey => "listing-missing-key",
            AnomalyKind::Malformed => "malformed",
        };
        f.write_str(s)
    }
}

/// A history entry with its position in the checked history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedEntry {
    /// Index in the checked history.
    pub index: usize,
    /// The entry.
    #[serde(flatten)]
    pub entry: Entry,
}

/// One violation and the operations that show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The rule broken.
    pub kind: AnomalyKind,
    /// The key, when the anomaly is about one.
    pub key: Option<String>,
    /// What is wrong, in a sentence.
    pub detail: String,
    /// The smallest failing sub-history found, in invocation order.
    pub ops: Vec<IndexedEntry>,
}

impl Anomaly {
    /// The sub-history as a history of its own, e.g. to check it again.
    pub fn sub_history(&self) -> History {
        History::new(self.ops.iter().map(|e| e.entry.clone()).collect())
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => writeln!(f, "{} on key {key:?}: {}", self.kind, self.detail)?,
            None => writeln!(f, "{}: {}", self.kind, self.detail)?,
        }
        let header = ["#", "process", "invoke", "complete", "outcome", "op"];
        let rows: Vec<[String; 6]> = self
            .ops
            .iter()
            .map(|e| {
                [
                    e.index.to_string(),
                    e.entry.process.to_string(),
                    e.entry.invoke.to_string(),
                    e.entry
                        .complete
                        .map_or_else(|| "-".to_owned(), |c| c.to_string()),
                    e.entry.outcome.to_string(),
                    e.entry.op.to_string(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: [&str; 6]| -> fmt::Result {
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    write!(f, "  {cell}")?;
                } else if (2..=3).contains(&i) {
                    write!(f, "  {cell:>w$}")?;
                } else {
                    write!(f, "  {cell:<w$}")?;
                }
            }
            writeln!(f)
        };
        line(f, header)?;
        for row in &rows {
            line(f, [&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]])?;
        }
        Ok(())
    }
}

/// The result of checking a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Valid, invalid, or unknown.
    pub valid: Validity,
    /// Everything found, by kind then key.
    pub anomalies: Vec<Anomaly>,
    /// Keys whose linearizability search ran out of budget.
    #[serde(default)]
    pub unknown_keys: Vec<String>,
    /// Counter keys whose linearizability search ran out of budget: checked by their bounds
    /// and distinct totals only.
    #[serde(default)]
    pub counters_by_bounds: Vec<String>,
}

impl Verdict {
    /// Pretty JSON, to save beside the history.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The anomalies of one kind.
    pub fn of_kind(&self, kind: AnomalyKind) -> impl Iterator<Item = &Anomaly> {
        self.anomalies.iter().filter(move |a| a.kind == kind)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.valid {
            Validity::Valid => writeln!(f, "valid")?,
            Validity::Invalid => writeln!(f, "invalid: {} anomalies", self.anomalies.len())?,
            Validity::Unknown => writeln!(f, "unknown")?,
        }
        if !self.unknown_keys.is_empty() {
            writeln!(
                f,
                "search budget ran out for keys: {}",
                self.unknown_keys.join(", ")
            )?;
        }
        if !self.counters_by_bounds.is_empty() {
            writeln!(
                f,
                "counters checked by bounds and distinct totals only (search budget ran out): {}",
                self.counters_by_bounds.join(", ")
            )?;
        }
        for anomaly in &self.anomalies {
            writeln!(f)?;
            write!(f, "{anomaly}")?;
        }
        Ok(())
    }
}

/// An anomaly as the checkers find it: entry indices, turned into an [`Anomaly`] with the
/// entries themselves once.
#[derive(Clone, Debug)]
pub(crate) struct Finding {
    pub kind: AnomalyKind,
    pub key: Option<String>,
    pub detail: String,
    pub entries: Vec<usize>,
}

impl Finding {
    pub fn new(kind: AnomalyKind, key: Option<&str>, detail: String, entries: Vec<usize>) -> Self {
        Finding {
            kind,
            key: key.map(str::to_owned),
            detail,
            entries,
        }
    }

    pub fn into_anomaly(self, history: &History) -> Anomaly {
        let mut entries = self.entries;
        entries.sort_unstable();
        entries.dedup();
        let mut ops: Vec<IndexedEntry> = entries
            .into_iter()
            .filter_map(|index| {
                history.entries.get(index).map(|entry| IndexedEntry {
                    index,
                    entry: entry.clone(),
                })
            })
            .collect();
        ops.sort_by_key(|e| (e.entry.invoke, e.index));
        Anomaly {
            kind: self.kind,
            key: self.key,
            detail: self.detail,
            ops,
        }
    }
}
