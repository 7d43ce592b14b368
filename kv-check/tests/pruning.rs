//! What keeps a crash's worth of `info` operations checkable: optional writes of a value no one
//! observed are left out of the search (a linearization with one is one without it), and a
//! counter whose search runs out is checked by its bounds and distinct totals.

use kv_check::{Entry, History, Op, Options, Outcome, Process, Ret, Validity};

fn small_budget() -> Options {
    Options {
        steps_per_key: 20_000,
        info_horizon: Some(1_000_000),
        ..Options::default()
    }
}

/// Forty `info` sets during an outage, none of their values ever read, around acknowledged
/// writes and reads: valid, within a budget the unpruned search exhausts.
fn outage(stale_read: bool) -> History {
    let mut entries = Vec::new();
    for i in 0..40u32 {
        let p = Process::new(0, i);
        let at = 1_000 + u64::from(i);
        let value = format!("lost{i}");
        entries.push(Entry::new(
            p,
            Op::set("k", value.as_str()),
            at,
            Some(at + 500),
            Outcome::Info("unavailable (outage)".into()),
        ));
    }
    let q = Process::new(1, 0);
    entries.push(Entry::new(
        q,
        Op::set("k", "a"),
        0,
        Some(10),
        Outcome::Ok(Ret::Done),
    ));
    entries.push(Entry::new(
        q,
        Op::set("k", "b"),
        3_000_000,
        Some(3_000_010),
        Outcome::Ok(Ret::Done),
    ));
    let read = if stale_read { "a" } else { "b" };
    entries.push(Entry::new(
        q,
        Op::get("k"),
        3_000_020,
        Some(3_000_030),
        Outcome::Ok(Ret::Value(Some(read.into()))),
    ));
    History::new(entries)
}

#[test]
fn unobserved_info_writes_do_not_blow_up_the_search() {
    let verdict = kv_check::check_with(&outage(false), &small_budget());
    assert_eq!(verdict.valid, Validity::Valid, "{verdict}");
}

#[test]
fn a_stale_read_among_them_is_still_found() {
    let verdict = kv_check::check_with(&outage(true), &small_budget());
    assert_eq!(verdict.valid, Validity::Invalid, "{verdict}");
}

#[test]
fn an_observed_info_write_is_kept() {
    let (p, q) = (Process::new(0, 0), Process::new(0, 1));
    let history = History::new(vec![
        Entry::new(
            p,
            Op::set("k", "x"),
            0,
            None,
            Outcome::Info("timeout".into()),
        ),
        Entry::new(
            q,
            Op::get("k"),
            100,
            Some(110),
            Outcome::Ok(Ret::Value(Some("x".into()))),
        ),
    ]);
    let verdict = kv_check::check_with(&history, &small_budget());
    assert_eq!(verdict.valid, Validity::Valid, "{verdict}");
}

/// Sixty `info` increments (each may land anywhere up to its horizon) exhaust a small search;
/// the counter is then checked by bounds, and a read outside them is still found.
#[test]
fn a_counter_past_the_search_budget_is_checked_by_bounds() {
    let history = |last_read: i64| {
        let mut entries = Vec::new();
        for i in 0..60u32 {
            let at = u64::from(i) * 10;
            entries.push(Entry::new(
                Process::new(0, i),
                Op::increment("c", 1),
                at,
                Some(at + 5),
                Outcome::Info("outcome unknown".into()),
            ));
        }
        entries.push(Entry::new(
            Process::new(1, 0),
            Op::get("c"),
            10_000_000,
            Some(10_000_010),
            Outcome::Ok(Ret::Value(Some(last_read.to_string().as_str().into()))),
        ));
        History::new(entries)
    };
    let options = Options {
        steps_per_key: 2_000,
        ..small_budget()
    };
    let verdict = kv_check::check_with(&history(30), &options);
    assert_eq!(verdict.valid, Validity::Valid, "{verdict}");
    assert_eq!(verdict.counters_by_bounds, ["c"], "{verdict}");
    let verdict = kv_check::check_with(&history(61), &options);
    assert_eq!(verdict.valid, Validity::Invalid, "{verdict}");
}

/// A counter that goes back passes each observation's bounds; compared with each other, the
/// observations show it (the check that stands when the search runs out).
#[test]
fn a_counter_going_back_is_found_without_the_search() {
    let (p, q, r) = (Process::new(0, 0), Process::new(0, 1), Process::new(0, 2));
    let history = History::new(vec![
        Entry::new(
            p,
            Op::increment("c", 1),
            0,
            Some(10),
            Outcome::Ok(Ret::Total(1)),
        ),
        Entry::new(
            q,
            Op::increment("c", 1),
            0,
            None,
            Outcome::Info("timeout".into()),
        ),
        Entry::new(
            r,
            Op::get("c"),
            20,
            Some(30),
            Outcome::Ok(Ret::Value(Some("2".into()))),
        ),
        Entry::new(
            r,
            Op::get("c"),
            40,
            Some(50),
            Outcome::Ok(Ret::Value(Some("1".into()))),
        ),
    ]);
    // No search at all: only the counter checks decide.
    let options = Options {
        steps_per_key: 1,
        ..Options::default()
    };
    let verdict = kv_check::check_with(&history, &options);
    assert_eq!(verdict.valid, Validity::Invalid, "{verdict}");
    assert!(
        verdict
            .anomalies
            .iter()
            .any(|a| a.detail.contains("went back")),
        "{verdict}"
    );
}
