//! The event model: what a client did to a store, when, and what it was told.
//!
//! One [`Entry`] per operation: the [`Process`] that ran it, the [`Op`] with its arguments, the
//! invoke and complete instants (monotonic nanoseconds from the recorder's start) and the
//! [`Outcome`]. Histories are JSON (an array) or JSONL (one entry a line); values are hex
//! strings so any bytes round-trip.
//!
//! The outcome is what the client was told, mapped onto the three answers a checker can use:
//! `ok` (applied, with its result), `fail` (certainly not applied) and `info` (may or may not
//! have been applied, at any time after the invocation). Map errors with
//! `KvError::may_have_applied()`: `unavailable: outcome unknown …` is `info`, and so is a failed
//! `set-many` whose error says entries "may or may not have been" applied (docs/semantics.md S8:
//! batches are not atomic). A `swap` answered `cas-failed` is `fail`: a conflict says nothing
//! about the value (S7 counts an identical rewrite as a change), only that nothing was written.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value's bytes. JSON spells it as a lowercase hex string; [`fmt::Display`] shows printable
/// ASCII quoted and anything else as `0x…`, so tables stay readable.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Value(pub Vec<u8>);

impl Value {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value(s.as_bytes().to_vec())
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        Value(b.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value(b)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self
            .0
            .iter()
            .all(|b| (0x20..0x7f).contains(b) && *b != b'"')
        {
            // Checked above: printable ASCII is UTF-8.
            write!(f, "\"{}\"", String::from_utf8_lossy(&self.0))
        } else {
            write!(f, "0x{}", hex(&self.0))
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        unhex(&s)
            .map(Value)
            .ok_or_else(|| serde::de::Error::custom(format!("not a hex string: {s:?}")))
    }
}

/// Who ran an operation: a host (one `wasi-kv` process or machine) and a client within it.
/// Each client runs one operation at a time; the checkers do not rely on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Process {
    /// The host's number.
    pub host: u32,
    /// The client's number within the host.
    pub client: u32,
}

impl Process {
    /// Client `client` of host `host`.
    pub fn new(host: u32, client: u32) -> Self {
        Process { host, client }
    }
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "h{}/c{}", self.host, self.client)
    }
}

/// An operation and its arguments, as the guest called it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// `get(key)`; result [`Ret::Value`].
    Get {
        /// The key.
        key: String,
    },
    /// `set(key, value)`; result [`Ret::Done`].
    Set {
        /// The key.
        key: String,
        /// The value written.
        value: Value,
    },
    /// `delete(key)`; result [`Ret::Done`].
    Delete {
        /// The key.
        key: String,
    },
    /// `increment(key, delta)`; result [`Ret::Total`], the new total.
    Increment {
        /// The key.
        key: String,
        /// Added to the counter.
        delta: i64,
    },
    /// `swap` through a handle from `cas::new(key)`; result [`Ret::Done`]. The invoke instant
    /// is the handle's creation (when it read `expected`), the complete instant the swap's reply.
    Cas {
        /// The key.
        key: String,
        /// What the handle read (`current()`); `None` for a missing key.
        expected: Option<Value>,
        /// The value swapped in.
        new: Value,
    },
    /// `get-many(keys)`; result [`Ret::Values`], one per key in order.
    GetMany {
        /// The keys, duplicates allowed.
        keys: Vec<String>,
    },
    /// `set-many(entries)`; result [`Ret::Done`]. Not atomic (S8): checked as one `set` per key.
    SetMany {
        /// Key and value pairs; for a repeated key the last value wins (S8).
        entries: Vec<(String, Value)>,
    },
    /// A whole listing (all pages, cursors followed to the end); result [`Ret::Keys`].
    ListKeys {
        /// Only keys starting with this are expected, when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
    },
}

impl Op {
    /// `get(key)`.
    pub fn get(key: &str) -> Op {
        Op::Get { key: key.into() }
    }
    /// `set(key, value)`.
    pub fn set(key: &str, value: impl Into<Value>) -> Op {
        Op::Set {
            key: key.into(),
            value: value.into(),
        }
    }
    /// `delete(key)`.
    pub fn delete(key: &str) -> Op {
        Op::Delete { key: key.into() }
    }
    /// `increment(key, delta)`.
    pub fn increment(key: &str, delta: i64) -> Op {
        Op::Increment {
            key: key.into(),
            delta,
        }
    }
    /// A swap from `expected` (`None`: the key was missing) to `new`.
    pub fn cas(key: &str, expected: Option<&str>, new: impl Into<Value>) -> Op {
        Op::Cas {
            key: key.into(),
            expected: expected.map(Value::from),
            new: new.into(),
        }
    }
    /// `get-many(keys)`.
    pub fn get_many(keys: &[&str]) -> Op {
        Op::GetMany {
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        }
    }
    /// `set-many(entries)`.
    pub fn set_many(entries: &[(&str, &str)]) -> Op {
        Op::SetMany {
            entries: entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                .collect(),
        }
    }
    /// A whole listing, optionally of a prefix.
    pub fn list_keys(prefix: Option<&str>) -> Op {
        Op::ListKeys {
            prefix: prefix.map(str::to_owned),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn opt(v: &Option<Value>) -> String {
            v.as_ref()
                .map_or_else(|| "none".to_owned(), Value::to_string)
        }
        match self {
            Op::Get { key } => write!(f, "get {key}"),
            Op::Set { key, value } => write!(f, "set {key} = {value}"),
            Op::Delete { key } => write!(f, "delete {key}"),
            Op::Increment { key, delta } => write!(f, "increment {key} by {delta}"),
            Op::Cas { key, expected, new } => write!(f, "cas {key} {} -> {new}", opt(expected)),
            Op::GetMany { keys } => write!(f, "get-many {}", keys.join(",")),
            Op::SetMany { entries } => {
                let parts: Vec<String> = entries.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "set-many {}", parts.join(","))
            }
            Op::ListKeys { prefix: Some(p) } => write!(f, "list-keys {p}*"),
            Op::ListKeys { prefix: None } => write!(f, "list-keys"),
        }
    }
}

/// What an operation returned when it succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ret {
    /// `set`, `delete`, `cas` (the swap happened), `set-many`.
    Done,
    /// `get`: the value, `None` for a missing key.
    Value(Option<Value>),
    /// `get-many`: one per requested key, in order.
    Values(Vec<Option<Value>>),
    /// `increment`: the new total.
    Total(i64),
    /// `list-keys`: every key of the listing.
    Keys(Vec<String>),
}

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn opt(v: &Option<Value>) -> String {
            v.as_ref()
                .map_or_else(|| "none".to_owned(), Value::to_string)
        }
        match self {
            Ret::Done => Ok(()),
            Ret::Value(v) => write!(f, "{}", opt(v)),
            Ret::Values(vs) => {
                let parts: Vec<String> = vs.iter().map(opt).collect();
                write!(f, "[{}]", parts.join(", "))
            }
            Ret::Total(t) => write!(f, "{t}"),
            Ret::Keys(keys) => write!(f, "[{}]", keys.join(", ")),
        }
    }
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Applied, with this result.
    Ok(Ret),
    /// Certainly not applied (an error for which `may_have_applied()` is false, or `cas-failed`).
    Fail(String),
    /// May or may not have been applied, at any time after the invocation.
    Info(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(Ret::Done) => write!(f, "ok"),
            Outcome::Ok(ret) => write!(f, "ok {ret}"),
            Outcome::Fail(reason) => write!(f, "fail: {reason}"),
            Outcome::Info(reason) => write!(f, "info: {reason}"),
        }
    }
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Who ran it.
    pub process: Process,
    /// What was called.
    pub op: Op,
    /// When it was invoked, in nanoseconds on the recorder's monotonic clock.
    pub invoke: u64,
    /// When its reply arrived; `None` if it never did (then the outcome is `info`).
    #[serde(default)]
    pub complete: Option<u64>,
    /// What the client was told.
    pub outcome: Outcome,
}

impl Entry {
    /// An entry; `complete` is `None` for an operation that never returned.
    pub fn new(
        process: Process,
        op: Op,
        invoke: u64,
        complete: Option<u64>,
        outcome: Outcome,
    ) -> Self {
        Entry {
            process,
            op,
            invoke,
            complete,
            outcome,
        }
    }

    /// Whether the outcome is unknown: `info`, or never completed.
    pub fn is_info(&self) -> bool {
        matches!(self.outcome, Outcome::Info(_)) || self.complete.is_none()
    }
}

/// A history: the entries in the order they were invoked (not required: checkers sort by time).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct History {
    /// The operations.
    pub entries: Vec<Entry>,
}

/// A history that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A JSONL line is not an entry.
    #[error("line {line}: {source}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What was wrong with it.
        source: serde_json::Error,
    },
    /// The JSON document is not a history.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl History {
    /// A history of these entries.
    pub fn new(entries: Vec<Entry>) -> Self {
        History { entries }
    }

    /// One JSON entry a line.
    pub fn to_jsonl(&self) -> Result<String, HistoryError> {
        let mut out = String::new();
        for entry in &self.entries {
            out.push_str(&serde_json::to_string(entry)?);
            out.push('\n');
        }
        Ok(out)
    }

    /// Reads JSONL; blank lines are skipped.
    pub fn from_jsonl(text: &str) -> Result<Self, HistoryError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry = serde_json::from_str(line).map_err(|source| HistoryError::Line {
                line: i + 1,
                source,
            })?;
            entries.push(entry);
        }
        Ok(History { entries })
    }

    /// A JSON array.
    pub fn to_json(&self) -> Result<String, HistoryError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Reads a JSON array.
    pub fn from_json(text: &str) -> Result<Self, HistoryError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Reads the progress log of a client that writes each operation twice, as JSONL: when it
    /// invokes it (`complete` null) and when it completes. A completion replaces the invocation
    /// of the same process and invoke instant; an invocation never completed (the client was
    /// killed) stays, as `info`. This is how a workload component in another host process
    /// reports what it did: whatever it managed to write before it died is the history.
    pub fn from_progress_jsonl(text: &str) -> Result<Self, HistoryError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut pending: std::collections::HashMap<(Process, u64), usize> =
            std::collections::HashMap::new();
        for entry in Self::from_jsonl(text)?.entries {
            let at = (entry.process, entry.invoke);
            match (entry.complete, pending.remove(&at)) {
                (Some(_), Some(index)) => entries[index] = entry,
                (None, _) => {
                    pending.insert(at, entries.len());
                    entries.push(entry);
                }
                (Some(_), None) => entries.push(entry),
            }
        }
        Ok(History { entries })
    }

    /// Shifts every instant back by `origin` (saturating), to put histories recorded on one
    /// clock (nanoseconds since the Unix epoch, say) onto a recorder's timeline.
    pub fn rebase(&mut self, origin: u64) {
        for entry in &mut self.entries {
            entry.invoke = entry.invoke.saturating_sub(origin);
            entry.complete = entry.complete.map(|at| at.saturating_sub(origin));
        }
    }
}

/// Records a history while clients run. Cloning shares the record; each call holds the lock
/// only to push or update one entry, and reads the clock inside it so entries are in invoke
/// order.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    origin_unix_nanos: u64,
    entries: Arc<Mutex<Vec<Entry>>>,
}

/// An invoked operation waiting for its outcome; pass it back to [`Recorder::complete`].
/// Dropping it leaves the operation `info` (never completed).
#[derive(Debug)]
#[must_use = "an operation never completed is recorded as info"]
pub struct Ticket(usize);

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty record whose clock starts now.
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            origin_unix_nanos: unix_nanos(),
            entries: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        // A panicking client must not hide the history recorded so far.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Nanoseconds since this record's clock started: where on its timeline events outside
    /// the history (a nemesis's faults) happened.
    pub fn elapsed_nanos(&self) -> u64 {
        self.now()
    }

    /// The wall-clock instant (nanoseconds since the Unix epoch) this record's clock started:
    /// what [`History::rebase`] subtracts from histories other processes recorded in wall-clock
    /// time, so one machine's hosts share one timeline.
    pub fn origin_unix_nanos(&self) -> u64 {
        self.origin_unix_nanos
    }

    /// Adds entries recorded elsewhere, already on this record's timeline.
    pub fn extend(&self, history: History) {
        self.lock().extend(history.entries);
    }

    /// Records that `process` invoked `op` now.
    pub fn invoke(&self, process: Process, op: Op) -> Ticket {
        let mut entries = self.lock();
        let invoke = self.now();
        entries.push(Entry {
            process,
            op,
            invoke,
            complete: None,
            outcome: Outcome::Info("never completed".into()),
        });
        Ticket(entries.len() - 1)
    }

    /// Records the operation, as it finally ran, and its outcome now: a swap's `expected` is
    /// known only once its handle has read the key, after the invocation.
    pub fn complete_as(&self, ticket: Ticket, op: Op, outcome: Outcome) {
        let mut entries = self.lock();
        let complete = self.now();
        if let Some(entry) = entries.get_mut(ticket.0) {
            entry.op = op;
            entry.complete = Some(complete);
            entry.outcome = outcome;
        }
    }

    /// Records the operation's outcome now.
    pub fn complete(&self, ticket: Ticket, outcome: Outcome) {
        let mut entries = self.lock();
        let complete = self.now();
        if let Some(entry) = entries.get_mut(ticket.0) {
            entry.complete = Some(complete);
            entry.outcome = outcome;
        }
    }

    /// The history so far; operations still running are `info`.
    pub fn history(&self) -> History {
        History {
            entries: self.lock().clone(),
        }
    }
}

/// Now, in nanoseconds since the Unix epoch (0 before it).
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_round_trips_every_op_and_outcome() {
        let p = Process::new(1, 2);
        let h = History::new(vec![
            Entry::new(p, Op::set("k", "v"), 1, Some(2), Outcome::Ok(Ret::Done)),
            Entry::new(
                p,
                Op::get("k"),
                3,
                Some(4),
                Outcome::Ok(Ret::Value(Some("v".into()))),
            ),
            Entry::new(
                p,
                Op::cas("k", None, &b"\x00\xff"[..]),
                5,
                None,
                Outcome::Info("x".into()),
            ),
            Entry::new(
                p,
                Op::increment("c", -3),
                6,
                Some(7),
                Outcome::Ok(Ret::Total(-3)),
            ),
            Entry::new(
                p,
                Op::get_many(&["a", "b"]),
                8,
                Some(9),
                Outcome::Ok(Ret::Values(vec![None, Some("1".into())])),
            ),
            Entry::new(
                p,
                Op::set_many(&[("a", "1")]),
                10,
                Some(11),
                Outcome::Fail("denied".into()),
            ),
            Entry::new(
                p,
                Op::list_keys(Some("a")),
                12,
                Some(13),
                Outcome::Ok(Ret::Keys(vec!["a".into()])),
            ),
            Entry::new(
                p,
                Op::list_keys(None),
                14,
                Some(15),
                Outcome::Ok(Ret::Keys(vec![])),
            ),
            Entry::new(p, Op::delete("k"), 16, Some(17), Outcome::Ok(Ret::Done)),
        ]);
        let text = h.to_jsonl().expect("serialises");
        assert_eq!(History::from_jsonl(&text).expect("parses"), h);
        assert_eq!(
            History::from_json(&h.to_json().expect("serialises")).expect("parses"),
            h
        );
        assert!(text.contains("\"value\":\"76\""), "values are hex: {text}");
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let err = History::from_jsonl("\n{\"nope\":1}\n").expect_err("not an entry");
        assert!(err.to_string().starts_with("line 2:"), "{err}");
        let bad_hex = r#"{"process":{"host":0,"client":0},"op":{"set":{"key":"k","value":"zz"}},"invoke":0,"complete":1,"outcome":{"ok":"done"}}"#;
        assert!(History::from_jsonl(bad_hex).is_err());
    }

    #[test]
    fn recorder_keeps_unfinished_operations_as_info() {
        let r = Recorder::new();
        let a = r.invoke(Process::new(0, 0), Op::set("k", "v"));
        let _never = r.invoke(Process::new(0, 1), Op::delete("k"));
        r.complete(a, Outcome::Ok(Ret::Done));
        let h = r.history();
        assert_eq!(h.entries.len(), 2);
        assert!(!h.entries[0].is_info());
        assert!(h.entries[0].complete >= Some(h.entries[0].invoke));
        assert!(h.entries[1].is_info());
    }

    #[test]
    fn values_display_readably() {
        assert_eq!(Value::from("ab").to_string(), "\"ab\"");
        assert_eq!(Value::from(&b"\x01\""[..]).to_string(), "0x0122");
    }
}
