//! The workload component of a history check across host processes:
//! `kv_history_guest WORKLOAD KEYS SEED HOST OPS MILLIS [PACE_MICROS]` runs client 0 of host
//! `HOST` of a [`kv_check::Workload`] against the store `"default"`
//! (`wasi:keyvalue@0.2.0-draft2`) for at most `OPS` operations and `MILLIS` milliseconds,
//! invoking one at most every `PACE_MICROS` microseconds (default 0: back to back), and prints
//! its history as it goes.
//!
//! Every operation is two [`Entry`] lines of JSON on stdout, each flushed at once: the invocation
//! (`complete` null, outcome `info`) and the completion (same process and invoke instant). That
//! is the progress log [`kv_check::History::from_progress_jsonl`] reads, so a host killed
//! mid-operation leaves that operation `info`. Instants are wall-clock nanoseconds since the
//! Unix epoch, made strictly increasing within the run (invocations must be unique to pair up).
//!
//! Exit codes: 0 at the end of the run, 1 when the store cannot be opened or stdout fails, 2 for
//! bad arguments (`wasi:cli` 0.2's `exit` carries only success or failure, so `wasi-kv run`
//! reports it as 1; the message on stderr tells them apart).

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/keyvalue",
        world: "wasi:keyvalue/imports@0.2.0-draft2",
        generate_all,
    });
}

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bindings::wasi::keyvalue::atomics::{self, Cas, CasError};
use bindings::wasi::keyvalue::batch;
use bindings::wasi::keyvalue::store::{self, Bucket, Error};
use kv_check::history::unix_nanos;
use kv_check::{Entry, Generator, Op, Outcome, Process, Ret, Value, Workload};

const USAGE: &str = "usage: kv_history_guest WORKLOAD KEYS SEED HOST OPS MILLIS [PACE_MICROS]";

/// Pages of one listing before it is given up as endless.
const MAX_LIST_PAGES: usize = 10_000;

/// The command line.
struct Args {
    workload: Workload,
    keys: u32,
    seed: u64,
    host: u32,
    ops: u64,
    millis: u64,
    /// Least time between invocations, so a host process runs for the whole check.
    pace: Duration,
}

impl Args {
    fn parse(args: &[String]) -> Result<Args, String> {
        let (fixed, pace) = match args {
            [fixed @ .., pace] if args.len() == 7 => (fixed, Some(pace)),
            fixed => (fixed, None),
        };
        let [workload, keys, seed, host, ops, millis] = fixed else {
            return Err(format!("expected 6 or 7 arguments, got {}", args.len()));
        };
        fn number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String> {
            text.parse()
                .map_err(|_| format!("{name}: not a non-negative integer in range: {text:?}"))
        }
        let keys: u32 = number("KEYS", keys)?;
        if keys == 0 {
            return Err("KEYS: must be at least 1".into());
        }
        Ok(Args {
            workload: workload.parse().map_err(|err| format!("WORKLOAD: {err}"))?,
            keys,
            seed: number("SEED", seed)?,
            host: number("HOST", host)?,
            ops: number("OPS", ops)?,
            millis: number("MILLIS", millis)?,
            pace: Duration::from_micros(match pace {
                Some(pace) => number("PACE_MICROS", pace)?,
                None => 0,
            }),
        })
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match Args::parse(&args) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("kv_history_guest: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let bucket = match store::open("default") {
        Ok(bucket) => bucket,
        Err(err) => {
            eprintln!(
                "kv_history_guest: opening store \"default\": {}",
                describe(&err)
            );
            return ExitCode::from(1);
        }
    };
    match run(&args, &bucket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kv_history_guest: writing the history: {err}");
            ExitCode::from(1)
        }
    }
}

/// The loop: one operation at a time until `ops` ran or `millis` passed.
fn run(args: &Args, bucket: &Bucket) -> std::io::Result<()> {
    let process = Process::new(args.host, 0);
    let mut generator = Generator::new(args.workload, args.keys, args.seed, process);
    let started = Instant::now();
    let budget = Duration::from_millis(args.millis);
    let mut clock = Clock::default();
    let mut out = std::io::stdout().lock();
    let mut done: u64 = 0;
    let mut next = Instant::now();
    while done < args.ops && started.elapsed() < budget {
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        next = (next + args.pace).max(Instant::now());
        if started.elapsed() >= budget {
            break;
        }
        let op = generator.next_op();
        let invoke = clock.now();
        let pending = Outcome::Info("never completed".into());
        emit(
            &mut out,
            &Entry::new(process, op.clone(), invoke, None, pending),
        )?;
        let (op, outcome) = execute(bucket, op);
        let complete = clock.now();
        emit(
            &mut out,
            &Entry::new(process, op, invoke, Some(complete), outcome),
        )?;
        done += 1;
    }
    Ok(())
}

/// Wall-clock nanoseconds since the Unix epoch, strictly increasing: a clock stepped back (or
/// too coarse) must not give two invocations the same instant, nor a completion one before its
/// invocation.
#[derive(Default)]
struct Clock {
    last: Option<u64>,
}

impl Clock {
    fn now(&mut self) -> u64 {
        let now = match self.last {
            Some(last) => unix_nanos().max(last.saturating_add(1)),
            None => unix_nanos(),
        };
        self.last = Some(now);
        now
    }
}

/// One entry, one line, flushed: whatever was written survives the host being killed.
fn emit(out: &mut impl Write, entry: &Entry) -> std::io::Result<()> {
    let line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
    writeln!(out, "{line}")?;
    out.flush()
}

/// Runs `op` and returns it as it finally ran (a swap's `expected` is what its handle read)
/// with what the client was told.
fn execute(bucket: &Bucket, op: Op) -> (Op, Outcome) {
    match op {
        Op::Get { key } => {
            let outcome = answer(bucket.get(&key), |value| Ret::Value(value.map(Value)));
            (Op::Get { key }, outcome)
        }
        Op::Set { key, value } => {
            let outcome = answer(bucket.set(&key, value.as_bytes()), |()| Ret::Done);
            (Op::Set { key, value }, outcome)
        }
        Op::Delete { key } => {
            let outcome = answer(bucket.delete(&key), |()| Ret::Done);
            (Op::Delete { key }, outcome)
        }
        Op::Increment { key, delta } => {
            let outcome = answer(atomics::increment(bucket, &key, delta), Ret::Total);
            (Op::Increment { key, delta }, outcome)
        }
        Op::Cas { key, new, .. } => swap(bucket, key, new),
        Op::GetMany { keys } => {
            let outcome = match batch::get_many(bucket, &keys) {
                Ok(found) => match values_in_order(&keys, found) {
                    Ok(values) => Outcome::Ok(Ret::Values(values)),
                    Err(why) => {
                        eprintln!("kv_history_guest: {why}");
                        Outcome::Fail(why)
                    }
                },
                Err(err) => failed(&err),
            };
            (Op::GetMany { keys }, outcome)
        }
        Op::SetMany { entries } => {
            let pairs: Vec<(String, Vec<u8>)> = entries
                .iter()
                .map(|(key, value)| (key.clone(), value.0.clone()))
                .collect();
            let outcome = answer(batch::set_many(bucket, &pairs), |()| Ret::Done);
            (Op::SetMany { entries }, outcome)
        }
        Op::ListKeys { prefix } => {
            let outcome = match list_all(bucket) {
                Ok(mut keys) => {
                    if let Some(prefix) = &prefix {
                        keys.retain(|key| key.starts_with(prefix.as_str()));
                    }
                    Outcome::Ok(Ret::Keys(keys))
                }
                Err(outcome) => outcome,
            };
            (Op::ListKeys { prefix }, outcome)
        }
    }
}

/// `cas::new`, `current`, then `swap`. The handle's read is the `expected` of the op recorded;
/// when it fails nothing was written (`fail`, and `expected` stays `None`).
fn swap(bucket: &Bucket, key: String, new: Value) -> (Op, Outcome) {
    let read = Cas::new(bucket, &key).and_then(|cas| cas.current().map(|current| (cas, current)));
    let (cas, expected) = match read {
        Ok(read) => read,
        Err(err) => {
            let outcome = Outcome::Fail(describe(&err));
            let op = Op::Cas {
                key,
                expected: None,
                new,
            };
            return (op, outcome);
        }
    };
    let outcome = match atomics::swap(cas, new.as_bytes()) {
        Ok(()) => Outcome::Ok(Ret::Done),
        Err(CasError::CasFailed(_handle)) => Outcome::Fail("cas-failed".into()),
        Err(CasError::StoreError(err)) => failed(&err),
    };
    let op = Op::Cas {
        key,
        expected: expected.map(Value),
        new,
    };
    (op, outcome)
}

/// Every page of `list-keys`, cursors followed to the end.
fn list_all(bucket: &Bucket) -> Result<Vec<String>, Outcome> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_LIST_PAGES {
        let page = bucket
            .list_keys(cursor.as_deref())
            .map_err(|err| failed(&err))?;
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
    Err(Outcome::Fail(format!(
        "list-keys: still a cursor after {MAX_LIST_PAGES} pages"
    )))
}

/// `get-many`'s answer as one optional value per requested key, in order. draft2 answers
/// `option<tuple<key, value>>` per key, `none` for a missing one; any other shape is reported.
fn values_in_order(
    keys: &[String],
    found: Vec<Option<(String, Vec<u8>)>>,
) -> Result<Vec<Option<Value>>, String> {
    if found.len() != keys.len() {
        return Err(format!(
            "get-many answered {} entries for {} keys",
            found.len(),
            keys.len()
        ));
    }
    keys.iter()
        .zip(found)
        .map(|(key, entry)| match entry {
            None => Ok(None),
            Some((answered, value)) if answered == *key => Ok(Some(Value(value))),
            Some((answered, _)) => Err(format!(
                "get-many answered key {answered:?} in the place of {key:?}"
            )),
        })
        .collect()
}

/// `ok` with the result, or the error's outcome.
fn answer<T>(result: Result<T, Error>, ret: impl FnOnce(T) -> Ret) -> Outcome {
    match result {
        Ok(value) => Outcome::Ok(ret(value)),
        Err(err) => failed(&err),
    }
}

/// What an error means for the history. The host starts `other` messages with the error's
/// class (kv-core `KvError`'s `Display`): `unavailable` (which includes `unavailable: outcome
/// unknown …` of a retried write) and `timeout` may have applied, so they are `info`, as is a
/// batch the host stopped part way ("… entries i..j may or may not have been …",
/// docs/semantics.md S8) whatever its class. Anything else was certainly not applied: `fail`.
/// Reads apply nothing either way; an `info` read only tells the checker to ignore it.
fn failed(err: &Error) -> Outcome {
    let message = describe(err);
    let may_have_applied = message.starts_with("unavailable")
        || message.starts_with("timeout")
        || message.contains("may or may not have been");
    if may_have_applied {
        Outcome::Info(message)
    } else {
        Outcome::Fail(message)
    }
}

/// The error as text: the variant's name, or `other`'s message as the host wrote it.
fn describe(err: &Error) -> String {
    match err {
        Error::NoSuchStore => "no-such-store".into(),
        Error::AccessDenied => "access-denied".into(),
        Error::Other(message) => message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn arguments_parse_and_bad_ones_are_refused() {
        let args = Args::parse(&strings(&["mixed", "3", "1", "0", "200", "2000"]));
        assert!(args.is_ok_and(|a| a.workload == Workload::Mixed && a.ops == 200));
        assert!(Args::parse(&strings(&["nope", "3", "1", "0", "200", "2000"])).is_err());
        assert!(Args::parse(&strings(&["mixed", "0", "1", "0", "200", "2000"])).is_err());
        assert!(Args::parse(&strings(&["mixed", "3", "-1", "0", "200", "2000"])).is_err());
        assert!(Args::parse(&strings(&["mixed", "3", "1", "0", "200"])).is_err());
        let paced = Args::parse(&strings(&["mixed", "3", "1", "0", "200", "2000", "1500"]));
        assert_eq!(paced.map(|a| a.pace), Ok(Duration::from_micros(1500)));
        assert!(Args::parse(&strings(&["mixed", "3", "1", "0", "200", "2000", "x"])).is_err());
    }

    #[test]
    fn errors_map_to_info_only_when_they_may_have_applied() {
        let other = |message: &str| Error::Other(message.into());
        assert!(matches!(
            failed(&other("unavailable: outcome unknown: lost")),
            Outcome::Info(_)
        ));
        assert!(matches!(failed(&other("timeout: slow")), Outcome::Info(_)));
        assert!(matches!(
            failed(&other(
                "throttled: set-many stopped: entries 0..200 of 300 were applied, entries \
                 200..300 may or may not have been, the rest were not tried: 429"
            )),
            Outcome::Info(_)
        ));
        assert!(matches!(
            failed(&other("invalid-key: empty")),
            Outcome::Fail(_)
        ));
        assert!(matches!(failed(&Error::AccessDenied), Outcome::Fail(_)));
    }

    #[test]
    fn get_many_answers_are_values_in_order() {
        let keys = strings(&["a", "b", "a"]);
        let found = vec![
            Some(("a".into(), b"1".to_vec())),
            None,
            Some(("a".into(), b"1".to_vec())),
        ];
        assert_eq!(
            values_in_order(&keys, found),
            Ok(vec![Some(Value::from("1")), None, Some(Value::from("1"))])
        );
        assert!(values_in_order(&keys, vec![None]).is_err());
        let swapped = vec![Some(("b".into(), b"1".to_vec())), None, None];
        assert!(values_in_order(&keys, swapped).is_err());
    }

    #[test]
    fn the_clock_never_repeats() {
        let mut clock = Clock::default();
        let a = clock.now();
        let b = clock.now();
        assert!(b > a);
    }
}
