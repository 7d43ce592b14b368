//! Histories for the tests: a builder for hand-written ones, and a generator that runs random
//! operations against a sequential model and stretches each into a random window around its
//! instant, so every generated history is linearizable by construction.

#![allow(dead_code, reason = "each test file uses part of it")]

use std::collections::BTreeMap;

use kv_check::{AnomalyKind, Entry, History, Op, Outcome, Process, Ret, Validity, Verdict};

/// Hand-written histories, one entry per call; times are arbitrary units.
#[derive(Default)]
pub struct H(Vec<Entry>);

fn p(n: u32) -> Process {
    Process::new(0, n)
}

impl H {
    pub fn new() -> Self {
        H(Vec::new())
    }
    /// An `ok` operation with this result.
    pub fn ok(mut self, proc: u32, op: Op, invoke: u64, complete: u64, ret: Ret) -> Self {
        self.0.push(Entry::new(
            p(proc),
            op,
            invoke,
            Some(complete),
            Outcome::Ok(ret),
        ));
        self
    }
    /// An `ok` write (`Ret::Done`).
    pub fn done(self, proc: u32, op: Op, invoke: u64, complete: u64) -> Self {
        self.ok(proc, op, invoke, complete, Ret::Done)
    }
    /// An `ok` get.
    pub fn read(self, proc: u32, key: &str, invoke: u64, complete: u64, v: Option<&str>) -> Self {
        self.ok(
            proc,
            Op::get(key),
            invoke,
            complete,
            Ret::Value(v.map(Into::into)),
        )
    }
    /// An `ok` increment.
    pub fn inc(
        self,
        proc: u32,
        key: &str,
        delta: i64,
        invoke: u64,
        complete: u64,
        total: i64,
    ) -> Self {
        self.ok(
            proc,
            Op::increment(key, delta),
            invoke,
            complete,
            Ret::Total(total),
        )
    }
    /// An operation whose outcome is unknown (it returned `outcome unknown` at `complete`).
    pub fn info(mut self, proc: u32, op: Op, invoke: u64, complete: u64) -> Self {
        let outcome = Outcome::Info("unavailable: outcome unknown".into());
        self.0
            .push(Entry::new(p(proc), op, invoke, Some(complete), outcome));
        self
    }
    /// An operation that never returned.
    pub fn pending(mut self, proc: u32, op: Op, invoke: u64) -> Self {
        self.0.push(Entry::new(
            p(proc),
            op,
            invoke,
            None,
            Outcome::Info("never completed".into()),
        ));
        self
    }
    /// An operation certainly not applied.
    pub fn fail(mut self, proc: u32, op: Op, invoke: u64, complete: u64) -> Self {
        self.0.push(Entry::new(
            p(proc),
            op,
            invoke,
            Some(complete),
            Outcome::Fail("injected".into()),
        ));
        self
    }
    pub fn build(self) -> History {
        History::new(self.0)
    }
}

/// Checks `history` and insists it is valid, printing the verdict otherwise.
pub fn assert_valid(history: &History) {
    let verdict = kv_check::check(history);
    assert_eq!(verdict.valid, Validity::Valid, "expected valid:\n{verdict}");
}

/// Checks `history`, insists on an anomaly of `kind` on `key`, prints it, and checks that its
/// sub-history alone shows the same anomaly and that the anomaly survives JSON.
pub fn assert_anomaly(history: &History, kind: AnomalyKind, key: &str) -> Verdict {
    let verdict = kv_check::check(history);
    println!("{verdict}");
    assert_eq!(
        verdict.valid,
        Validity::Invalid,
        "expected {kind}:\n{verdict}"
    );
    let anomaly = verdict
        .of_kind(kind)
        .find(|a| a.key.as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no {kind} on {key}:\n{verdict}"));
    let again = kv_check::check(&anomaly.sub_history());
    assert!(
        again.of_kind(kind).next().is_some(),
        "the sub-history alone does not show {kind}:\n{anomaly}\n{again}"
    );
    let json = verdict.to_json().expect("serialises");
    let back: Verdict = serde_json::from_str(&json).expect("parses");
    assert_eq!(back, verdict);
    verdict
}

/// A small xorshift generator: deterministic from a seed, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Shape of a generated history.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub ops: usize,
    /// Register keys `k0…`, which get every operation.
    pub keys: usize,
    /// Counter keys `c0…`, which get only increments and reads.
    pub counters: usize,
    pub processes: u32,
    /// Half-width of an operation's window, in units of the spacing between instants.
    pub window: u64,
    /// Percent of writes whose outcome is unknown, and of writes reported failed.
    pub info_percent: u64,
    pub fail_percent: u64,
}

/// What an operation writes: keys and their new values (`None`: deleted).
type Writes = Vec<(String, Option<Vec<u8>>)>;

const VALUES: [&str; 4] = ["a", "b", "c", "7"];
const SPACING: u64 = 10;

/// Runs random operations against a sequential model, one at instant `1000 + 10 i`, each
/// stretched to a random window around its instant. Unknown outcomes are applied or not at
/// random; failed ones never are.
pub fn generate(seed: u64, shape: Shape) -> History {
    let mut rng = Rng::new(seed);
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut entries = Vec::with_capacity(shape.ops);
    let base = 1000 + shape.window * SPACING;
    for i in 0..shape.ops {
        let at = base + i as u64 * SPACING;
        let counter = shape.counters > 0 && (shape.keys == 0 || rng.chance(30));
        let key = if counter {
            format!("c{}", rng.below(shape.counters as u64))
        } else {
            format!("k{}", rng.below(shape.keys as u64))
        };
        let get =
            |model: &BTreeMap<String, Vec<u8>>, k: &str| model.get(k).map(|v| v.clone().into());
        let pick = |rng: &mut Rng| VALUES[rng.below(VALUES.len() as u64) as usize];
        // (op, result if applied, whether it writes, the write itself)
        let (op, ret, write): (Op, Result<Ret, String>, Option<Writes>) =
            match (counter, rng.below(9)) {
                (true, 0..=4) | (false, 0) => {
                    let delta = [1, 2, 5, -1][rng.below(4) as usize];
                    let current = model.get(&key).map_or(Some(0), |v| {
                        std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse::<i64>().ok())
                            .filter(|n| n.to_string().as_bytes() == v.as_slice())
                    });
                    match current.and_then(|c| c.checked_add(delta)) {
                        Some(total) => (
                            Op::increment(&key, delta),
                            Ok(Ret::Total(total)),
                            Some(vec![(key.clone(), Some(total.to_string().into_bytes()))]),
                        ),
                        None => (
                            Op::increment(&key, delta),
                            Err("not-an-integer".into()),
                            None,
                        ),
                    }
                }
                (true, 5..=6) | (false, 1..=2) => {
                    (Op::get(&key), Ok(Ret::Value(get(&model, &key))), None)
                }
                (true, _) | (false, 3) => {
                    let mut keys = vec![key.clone()];
                    let prefix = if counter { "c" } else { "k" };
                    let n = if counter { shape.counters } else { shape.keys };
                    for _ in 0..rng.below(3) {
                        keys.push(format!("{prefix}{}", rng.below(n as u64)));
                    }
                    let values = keys.iter().map(|k| get(&model, k)).collect();
                    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    (Op::get_many(&refs), Ok(Ret::Values(values)), None)
                }
                (false, 4) => {
                    let v = pick(&mut rng);
                    (
                        Op::set(&key, v),
                        Ok(Ret::Done),
                        Some(vec![(key.clone(), Some(v.as_bytes().to_vec()))]),
                    )
                }
                (false, 5) => (
                    Op::delete(&key),
                    Ok(Ret::Done),
                    Some(vec![(key.clone(), None)]),
                ),
                (false, 6) => {
                    let current = model.get(&key).cloned();
                    let expected: Option<Vec<u8>> = if rng.chance(70) {
                        current.clone()
                    } else if rng.chance(50) {
                        None
                    } else {
                        Some(pick(&mut rng).as_bytes().to_vec())
                    };
                    let new = pick(&mut rng);
                    let op = Op::Cas {
                        key: key.clone(),
                        expected: expected.clone().map(Into::into),
                        new: new.into(),
                    };
                    if expected == current {
                        (
                            op,
                            Ok(Ret::Done),
                            Some(vec![(key.clone(), Some(new.as_bytes().to_vec()))]),
                        )
                    } else {
                        (op, Err("cas-failed".into()), None)
                    }
                }
                (false, 7) => {
                    let mut pairs = vec![(key.clone(), pick(&mut rng))];
                    for _ in 0..rng.below(3) {
                        pairs.push((format!("k{}", rng.below(shape.keys as u64)), pick(&mut rng)));
                    }
                    let refs: Vec<(&str, &str)> =
                        pairs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                    let write = pairs
                        .iter()
                        .map(|(k, v)| (k.clone(), Some(v.as_bytes().to_vec())))
                        .collect();
                    (Op::set_many(&refs), Ok(Ret::Done), Some(write))
                }
                (false, _) => {
                    let prefix = if rng.chance(50) { Some("k1") } else { None };
                    let keys = model
                        .keys()
                        .filter(|k| prefix.is_none_or(|p| k.starts_with(p)))
                        .cloned()
                        .collect();
                    (Op::list_keys(prefix), Ok(Ret::Keys(keys)), None)
                }
            };
        let invoke = at - rng.below(shape.window * SPACING + 1);
        let complete = at + rng.below(shape.window * SPACING + 1);
        let process = Process::new(0, i as u32 % shape.processes.max(1));
        let apply = |model: &mut BTreeMap<String, Vec<u8>>, write: &Option<Writes>| {
            for (k, v) in write.iter().flatten() {
                match v {
                    Some(v) => model.insert(k.clone(), v.clone()),
                    None => model.remove(k),
                };
            }
        };
        let outcome = match ret {
            Err(reason) => Outcome::Fail(reason),
            Ok(_) if write.is_some() && rng.chance(shape.info_percent) => {
                if rng.chance(50) {
                    apply(&mut model, &write);
                }
                Outcome::Info("unavailable: outcome unknown".into())
            }
            Ok(_) if write.is_some() && rng.chance(shape.fail_percent) => {
                Outcome::Fail("injected".into())
            }
            Ok(ret) => {
                apply(&mut model, &write);
                Outcome::Ok(ret)
            }
        };
        let complete = match outcome {
            Outcome::Info(_) if rng.chance(50) => None,
            _ => Some(complete),
        };
        entries.push(Entry::new(process, op, invoke, complete, outcome));
    }
    History::new(entries)
}
