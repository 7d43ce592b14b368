//! What clients do: a seeded generator of operations per workload, shared by every driver (the
//! in-process clients of `wasi-kv check` and the workload component its host processes run), so
//! a history can be replayed from its seed and both drivers exercise the same mix.
//!
//! Keys are few (contention is the point) and prefixed per workload, so one store can run every
//! workload at once. Every value written is unique (`h{host}.c{client}.{n}`): a read then names
//! the one write it saw, which is what makes a register history checkable.

use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::history::{Op, Process, Value};

/// A mix of operations over a small set of keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Registers: get, set, delete, swap, increment, get-many and set-many on keys `r0…`: an
    /// increment meets a deleted key (it starts from 0), another increment's total, or a value
    /// that is no counter (it fails, writing nothing).
    Register,
    /// Counters: increments (deltas 1–3) and reads on keys `c0…`, written only by increments.
    Counter,
    /// Compare-and-swap contention: swaps and reads (a few sets and deletes) on keys `x0…`.
    Cas,
    /// Listings: keys `l0…` created and deleted, whole listings of the store in between.
    List,
    /// Every workload at once: client `n` runs workload `n mod 4` (in the order above).
    Mixed,
}

impl Workload {
    /// The workloads a `Mixed` run spreads its clients over, and every name `FromStr` knows.
    pub const ALL: [Workload; 5] = [
        Workload::Register,
        Workload::Counter,
        Workload::Cas,
        Workload::List,
        Workload::Mixed,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Counter => "counter",
            Workload::Cas => "cas",
            Workload::List => "list",
            Workload::Mixed => "mixed",
        }
    }

    /// The workload client `process` runs.
    fn for_process(self, process: Process) -> Workload {
        match self {
            Workload::Mixed => Workload::ALL[(process.client as usize + process.host as usize) % 4],
            single => single,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!("unknown workload {s:?} (one of: {})", names.join(", "))
            })
    }
}

/// The operations of one client, from a seed.
#[derive(Debug)]
pub struct Generator {
    workload: Workload,
    process: Process,
    keys: u32,
    written: u64,
    rng: StdRng,
}

impl Generator {
    /// The generator of client `process` in a run of `workload` over `keys` keys per workload
    /// (at least 1), seeded by `seed` and the process, so clients differ and a run repeats.
    pub fn new(workload: Workload, keys: u32, seed: u64, process: Process) -> Self {
        let stream = (u64::from(process.host) << 32) | u64::from(process.client);
        Generator {
            workload: workload.for_process(process),
            process,
            keys: keys.max(1),
            written: 0,
            rng: StdRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        }
    }

    /// The workload this client runs (a `Mixed` run's share).
    pub fn workload(&self) -> Workload {
        self.workload
    }

    /// The next operation. For [`Op::Cas`] the `expected` value is `None` here: the client
    /// fills it with what its handle read.
    pub fn next_op(&mut self) -> Op {
        let roll = self.rng.random_range(0..100u32);
        match self.workload {
            Workload::Register | Workload::Mixed => {
                let key = self.key("r");
                match roll {
                    0..30 => Op::Get { key },
                    30..48 => Op::Set {
                        key,
                        value: self.value(),
                    },
                    48..58 => Op::Delete { key },
                    58..72 => Op::Cas {
                        key,
                        expected: None,
                        new: self.value(),
                    },
                    72..80 => Op::Increment {
                        key,
                        delta: self.rng.random_range(1..=3),
                    },
                    80..90 => Op::GetMany {
                        keys: vec![key, self.key("r")],
                    },
                    _ => {
                        let other = self.key("r");
                        let first = self.value();
                        let second = self.value();
                        Op::SetMany {
                            entries: vec![(key, first), (other, second)],
                        }
                    }
                }
            }
            Workload::Counter => {
                let key = self.key("c");
                match roll {
                    0..75 => Op::Increment {
                        key,
                        delta: self.rng.random_range(1..=3),
                    },
                    _ => Op::Get { key },
                }
            }
            Workload::Cas => {
                let key = self.key("x");
                match roll {
                    0..60 => Op::Cas {
                        key,
                        expected: None,
                        new: self.value(),
                    },
                    60..90 => Op::Get { key },
                    90..95 => Op::Set {
                        key,
                        value: self.value(),
                    },
                    _ => Op::Delete { key },
                }
            }
            Workload::List => {
                // More keys than the other workloads, so listings span pages of small stores.
                let key = format!("l{}", self.rng.random_range(0..self.keys * 4));
                match roll {
                    0..40 => Op::Set {
                        key,
                        value: self.value(),
                    },
                    40..65 => Op::Delete { key },
                    65..85 => Op::ListKeys { prefix: None },
                    _ => Op::Get { key },
                }
            }
        }
    }

    /// Every key this workload touches, for the final reads after the run.
    pub fn keys(workload: Workload, keys: u32) -> Vec<String> {
        let keys = keys.max(1);
        let mut out = Vec::new();
        let mut add = |prefix: &str, n: u32| out.extend((0..n).map(|i| format!("{prefix}{i}")));
        match workload {
            Workload::Register => add("r", keys),
            Workload::Counter => add("c", keys),
            Workload::Cas => add("x", keys),
            Workload::List => add("l", keys * 4),
            Workload::Mixed => {
                add("r", keys);
                add("c", keys);
                add("x", keys);
                add("l", keys * 4);
            }
        }
        out
    }

    fn key(&mut self, prefix: &str) -> String {
        format!("{prefix}{}", self.rng.random_range(0..self.keys))
    }

    fn value(&mut self) -> Value {
        self.written += 1;
        Value::from(
            format!(
                "h{}.c{}.{}",
                self.process.host, self.process.client, self.written
            )
            .into_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_and_clients_differ() {
        let p = Process::new(0, 1);
        let run = |seed, p| {
            let mut g = Generator::new(Workload::Register, 4, seed, p);
            (0..50).map(|_| g.next_op()).collect::<Vec<_>>()
        };
        assert_eq!(run(7, p), run(7, p));
        assert_ne!(run(7, p), run(7, Process::new(0, 2)));
        assert_ne!(run(7, p), run(8, p));
    }

    #[test]
    fn written_values_are_unique_across_clients() {
        let mut seen = std::collections::HashSet::new();
        for client in 0..4 {
            let mut g = Generator::new(Workload::Register, 2, 1, Process::new(1, client));
            for _ in 0..500 {
                match g.next_op() {
                    Op::Set { value, .. } | Op::Cas { new: value, .. } => {
                        assert!(seen.insert(value));
                    }
                    Op::SetMany { entries } => {
                        for (_, value) in entries {
                            assert!(seen.insert(value));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn mixed_spreads_clients_and_keys_cover_every_op() {
        let workloads: Vec<Workload> = (0..4)
            .map(|c| Generator::new(Workload::Mixed, 3, 0, Process::new(0, c)).workload())
            .collect();
        assert_eq!(
            workloads,
            [
                Workload::Register,
                Workload::Counter,
                Workload::Cas,
                Workload::List
            ]
        );
        let keys = Generator::keys(Workload::Mixed, 3);
        for c in 0..4 {
            let mut g = Generator::new(Workload::Mixed, 3, 9, Process::new(0, c));
            for _ in 0..200 {
                let op = g.next_op();
                let touched: Vec<&String> = match &op {
                    Op::Get { key }
                    | Op::Set { key, .. }
                    | Op::Delete { key }
                    | Op::Increment { key, .. }
                    | Op::Cas { key, .. } => vec![key],
                    Op::GetMany { keys } => keys.iter().collect(),
                    Op::SetMany { entries } => entries.iter().map(|(k, _)| k).collect(),
                    Op::ListKeys { .. } => vec![],
                };
                assert!(touched.iter().all(|k| keys.contains(k)), "{op}");
            }
        }
        assert_eq!("counter".parse::<Workload>(), Ok(Workload::Counter));
        assert!("nope".parse::<Workload>().is_err());
    }
}
