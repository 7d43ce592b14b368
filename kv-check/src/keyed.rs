//! A history split by key (P-compositionality: a history of independent registers is
//! linearizable iff each key's sub-history is). Batches become one operation per key: `set-many`
//! is not atomic across keys (docs/semantics.md S8) and `get-many` is a read of each key.

use std::collections::BTreeMap;

use crate::history::{Entry, History, Op, Outcome, Ret, Value};

/// One operation on one key, as the register model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyOp {
    /// Index of the history entry it came from.
    pub entry: usize,
    pub invoke: u64,
    /// When it was acknowledged; `None` for `info`: it may take effect at any time after
    /// `invoke`, or never.
    pub complete: Option<u64>,
    /// When its reply arrived, whatever it said (`None`: it never did).
    pub returned: Option<u64>,
    pub kind: KeyOpKind,
    /// A further application of a plain write by its own retry ([`crate::Options`]'s
    /// `write_repeats`): optional, and over by the time the write's call returned, `ok` or
    /// not (an `info` write's own late application is the write itself, up to the horizon).
    pub repeat: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyOpKind {
    /// A read that returned this.
    Read(Option<Value>),
    /// `set` (`Some`) or `delete` (`None`).
    Write(Option<Value>),
    /// A swap that happened (or, as `info`, may have).
    Cas { expected: Option<Value>, new: Value },
    /// `total` is the reply; `None` for `info`.
    Increment { delta: i64, total: Option<i64> },
}

impl KeyOpKind {
    /// The bytes this operation would leave, when it writes literal bytes.
    pub fn written(&self) -> Option<&Value> {
        match self {
            KeyOpKind::Write(Some(v)) | KeyOpKind::Cas { new: v, .. } => Some(v),
            _ => None,
        }
    }
}

/// Everything about one key.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyHistory {
    /// `ok` and `info` operations: what the checkers must explain.
    pub ops: Vec<KeyOp>,
    /// `fail` operations that would have written: dropped from the checks, kept to say so when
    /// their effect shows.
    pub failed: Vec<KeyOp>,
}

/// An entry the checkers cannot use, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Malformed {
    pub entry: usize,
    pub reason: String,
}

/// Splits `history` by key. Listings are not register operations and are left to
/// [`crate::listing`]; malformed entries are reported and left out.
pub(crate) fn split(
    history: &History,
    write_repeats: u32,
) -> (BTreeMap<String, KeyHistory>, Vec<Malformed>) {
    let mut keys: BTreeMap<String, KeyHistory> = BTreeMap::new();
    let mut malformed = Vec::new();
    for (index, entry) in history.entries.iter().enumerate() {
        if let Err(reason) = shape(entry) {
            malformed.push(Malformed {
                entry: index,
                reason,
            });
            continue;
        }
        let info = entry.is_info();
        let failed = matches!(entry.outcome, Outcome::Fail(_)) && !info;
        let ret = match &entry.outcome {
            Outcome::Ok(ret) if !info => Some(ret),
            _ => None,
        };
        let mut push = |key: &str, kind: KeyOpKind| {
            let op = KeyOp {
                entry: index,
                invoke: entry.invoke,
                complete: if info { None } else { entry.complete },
                returned: entry.complete,
                kind,
                repeat: false,
            };
            let slot = keys.entry(key.to_owned()).or_default();
            if failed {
                if !matches!(op.kind, KeyOpKind::Read(_)) {
                    slot.failed.push(op);
                }
            } else {
                if matches!(op.kind, KeyOpKind::Write(_)) {
                    for _ in 0..write_repeats {
                        slot.ops.push(KeyOp {
                            repeat: true,
                            ..op.clone()
                        });
                    }
                }
                slot.ops.push(op);
            }
        };
        match &entry.op {
            Op::Get { key } => {
                // An unanswered read constrains nothing.
                if let Some(Ret::Value(v)) = ret {
                    push(key, KeyOpKind::Read(v.clone()));
                }
            }
            Op::GetMany { keys: requested } => {
                if let Some(Ret::Values(values)) = ret {
                    for (key, v) in requested.iter().zip(values) {
                        push(key, KeyOpKind::Read(v.clone()));
                    }
                }
            }
            Op::Set { key, value } => push(key, KeyOpKind::Write(Some(value.clone()))),
            Op::Delete { key } => push(key, KeyOpKind::Write(None)),
            Op::SetMany { entries } => {
                // The last value for a repeated key wins (S8).
                let mut last: BTreeMap<&str, &Value> = BTreeMap::new();
                for (key, value) in entries {
                    last.insert(key, value);
                }
                for (key, value) in last {
                    push(key, KeyOpKind::Write(Some(value.clone())));
                }
            }
            Op::Increment { key, delta } => {
                let total = match ret {
                    Some(Ret::Total(t)) => Some(*t),
                    _ => None,
                };
                push(
                    key,
                    KeyOpKind::Increment {
                        delta: *delta,
                        total,
                    },
                );
            }
            Op::Cas { key, expected, new } => push(
                key,
                KeyOpKind::Cas {
                    expected: expected.clone(),
                    new: new.clone(),
                },
            ),
            Op::ListKeys { .. } => {}
        }
    }
    (keys, malformed)
}

/// Checks that an entry's times and result fit its operation.
pub(crate) fn shape(entry: &Entry) -> Result<(), String> {
    if let Some(complete) = entry.complete
        && complete < entry.invoke
    {
        return Err(format!(
            "completed at {complete}, before its invocation at {}",
            entry.invoke
        ));
    }
    let ret = match &entry.outcome {
        Outcome::Ok(ret) => ret,
        Outcome::Fail(_) | Outcome::Info(_) => return Ok(()),
    };
    if entry.complete.is_none() {
        return Err("an ok outcome without a completion time".into());
    }
    let fits = match (&entry.op, ret) {
        (Op::Get { .. }, Ret::Value(_))
        | (Op::Increment { .. }, Ret::Total(_))
        | (Op::ListKeys { .. }, Ret::Keys(_))
        | (Op::Set { .. } | Op::Delete { .. } | Op::Cas { .. } | Op::SetMany { .. }, Ret::Done) => {
            true
        }
        (Op::GetMany { keys }, Ret::Values(values)) => {
            if keys.len() != values.len() {
                return Err(format!(
                    "{} keys requested, {} values returned",
                    keys.len(),
                    values.len()
                ));
            }
            true
        }
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(format!("result {ret:?} does not fit the operation"))
    }
}
