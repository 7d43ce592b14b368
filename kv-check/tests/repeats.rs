//! docs/semantics.md S4: a plain write retried after its lost reply may take effect again
//! within its own call. A strict register rejects that; `write_repeats` admits exactly that.

use kv_check::{Entry, History, Op, Options, Outcome, Process, Ret, Validity};

fn read(p: Process, at: u64, value: &str) -> Entry {
    Entry::new(
        p,
        Op::get("k"),
        at,
        Some(at + 2),
        Outcome::Ok(Ret::Value(Some(value.into()))),
    )
}

/// `a` is read, then `b`, then `a` again: `set a`, still running, applied twice around `b`.
fn a_write_applied_twice() -> History {
    let (p, q, r) = (Process::new(0, 0), Process::new(0, 1), Process::new(0, 2));
    History::new(vec![
        Entry::new(p, Op::set("k", "a"), 0, Some(100), Outcome::Ok(Ret::Done)),
        read(r, 6, "a"),
        Entry::new(q, Op::set("k", "b"), 10, Some(20), Outcome::Ok(Ret::Done)),
        read(r, 30, "b"),
        read(r, 70, "a"),
    ])
}

#[test]
fn a_strict_register_rejects_a_repeated_write() {
    let verdict = kv_check::check(&a_write_applied_twice());
    assert_eq!(verdict.valid, Validity::Invalid, "{verdict}");
}

#[test]
fn declared_repeats_admit_it_within_the_call_only() {
    let options = Options {
        write_repeats: 1,
        ..Options::default()
    };
    let verdict = kv_check::check_with(&a_write_applied_twice(), &options);
    assert_eq!(verdict.valid, Validity::Valid, "{verdict}");
    // After the call returned, no repeat: `a` read again at 170 after `b` at 130 is invalid.
    let (p, q, r) = (Process::new(0, 0), Process::new(0, 1), Process::new(0, 2));
    let late = History::new(vec![
        Entry::new(p, Op::set("k", "a"), 0, Some(100), Outcome::Ok(Ret::Done)),
        Entry::new(q, Op::set("k", "b"), 110, Some(120), Outcome::Ok(Ret::Done)),
        read(r, 130, "b"),
        read(r, 170, "a"),
    ]);
    let verdict = kv_check::check_with(&late, &options);
    assert_eq!(verdict.valid, Validity::Invalid, "{verdict}");
}

/// Interchangeable repeats are placed in order, not in every order: a recorded key (DynamoDB
/// Local under lost replies, lost requests, a partition and a crash; 208 operations, 11 `info`)
/// with three repeats per write was `unknown` after 50M steps before, and is checked in well
/// under the default budget now.
#[test]
fn repeats_do_not_multiply_the_search() {
    let history = History::from_jsonl(include_str!("fixtures/retried-writes.jsonl"))
        .expect("the fixture parses");
    let options = Options {
        write_repeats: 3,
        info_horizon: Some(7_000_000_000),
        steps_per_key: 2_000_000,
        ..Options::default()
    };
    let verdict = kv_check::check_with(&history, &options);
    assert_eq!(verdict.valid, Validity::Valid, "{verdict}");
}
