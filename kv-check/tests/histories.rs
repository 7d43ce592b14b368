//! Hand-written histories: linearizable ones must pass, each known-bad one must fail with its
//! anomaly, and that anomaly's sub-history alone must fail the same way.

mod support;

use kv_check::{AnomalyKind, Op, Ret, Validity};
use support::{H, assert_anomaly, assert_valid};

// ---- histories that must pass ----

#[test]
fn sequential_set_get_delete() {
    let h = H::new()
        .read(0, "k", 0, 1, None)
        .done(0, Op::set("k", "a"), 2, 3)
        .read(1, "k", 4, 5, Some("a"))
        .done(1, Op::delete("k"), 6, 7)
        .read(0, "k", 8, 9, None)
        .build();
    assert_valid(&h);
}

#[test]
fn concurrent_writes_read_in_reverse_order() {
    // Three writes overlap three reads that see them last-to-first: one order explains it.
    let h = H::new()
        .done(0, Op::set("k", "1"), 0, 100)
        .done(1, Op::set("k", "2"), 0, 100)
        .done(2, Op::set("k", "3"), 0, 100)
        .read(3, "k", 10, 20, Some("3"))
        .read(3, "k", 30, 40, Some("2"))
        .read(3, "k", 50, 60, Some("1"))
        .read(3, "k", 110, 120, Some("1"))
        .build();
    assert_valid(&h);
}

#[test]
fn a_read_overlapping_a_write_may_see_either_value() {
    let h = H::new()
        .done(0, Op::set("k", "a"), 0, 10)
        .done(0, Op::set("k", "b"), 20, 60)
        .read(1, "k", 25, 30, Some("b"))
        .read(2, "k", 25, 35, Some("a"))
        .build();
    // The second read overlaps the first and the write: it can be placed before both.
    assert_valid(&h);
}

#[test]
fn an_info_write_that_applied() {
    let h = H::new()
        .done(0, Op::set("k", "a"), 0, 10)
        .info(1, Op::set("k", "b"), 20, 30)
        .read(2, "k", 40, 50, Some("b"))
        .read(2, "k", 60, 70, Some("b"))
        .build();
    assert_valid(&h);
}

#[test]
fn an_info_write_that_did_not_apply() {
    let h = H::new()
        .done(0, Op::set("k", "a"), 0, 10)
        .info(1, Op::set("k", "b"), 20, 30)
        .read(2, "k", 40, 50, Some("a"))
        .read(2, "k", 60, 70, Some("a"))
        .build();
    assert_valid(&h);
}

#[test]
fn an_info_write_may_apply_long_after_it_was_reported() {
    // A retry landing after the reply (docs/semantics.md S4): reads see the old value, then
    // the new one.
    let h = H::new()
        .done(0, Op::set("k", "a"), 0, 10)
        .info(1, Op::set("k", "b"), 20, 30)
        .read(2, "k", 40, 50, Some("a"))
        .read(2, "k", 60, 70, Some("b"))
        .pending(3, Op::delete("k"), 80)
        .read(2, "k", 90, 100, Some("b"))
        .build();
    assert_valid(&h);
}

#[test]
fn a_failed_write_that_stayed_invisible() {
    let h = H::new()
        .done(0, Op::set("k", "a"), 0, 10)
        .fail(1, Op::set("k", "b"), 20, 30)
        .read(2, "k", 40, 50, Some("a"))
        .build();
    assert_valid(&h);
}

#[test]
fn a_cas_chain_with_a_conflict() {
    let h = H::new()
        .done(0, Op::set("k", "0"), 0, 10)
        .done(1, Op::cas("k", Some("0"), "1"), 20, 30)
        .done(2, Op::cas("k", Some("1"), "2"), 40, 50)
        // Two handles read "2"; one swap wins, the other gets cas-failed (a fail).
        .done(1, Op::cas("k", Some("2"), "3"), 60, 80)
        .fail(2, Op::cas("k", Some("2"), "x"), 61, 81)
        .info(3, Op::cas("k", Some("0"), "y"), 62, 82)
        .read(0, "k", 90, 100, Some("3"))
        .done(0, Op::cas("k", None, "z"), 110, 120)
        .build();
    // The last swap expects a missing key but "3" is there: not linearizable.
    assert_eq!(kv_check::check(&h).valid, Validity::Invalid);
    let mut h = h;
    h.entries.pop();
    assert_valid(&h);
}

#[test]
fn a_cas_insert_on_a_missing_key() {
    let h = H::new()
        .done(0, Op::cas("k", None, "a"), 0, 10)
        .fail(1, Op::cas("k", None, "b"), 5, 15)
        .read(0, "k", 20, 30, Some("a"))
        .build();
    assert_valid(&h);
}

#[test]
fn concurrent_increments_with_an_info_one() {
    let h = H::new()
        .inc(0, "c", 1, 0, 100, 3)
        .inc(1, "c", 1, 0, 50, 1)
        .inc(2, "c", 1, 10, 60, 2)
        .info(3, Op::increment("c", 10), 20, 30)
        .read(4, "c", 110, 120, Some("3"))
        .read(4, "c", 130, 140, Some("13"))
        .build();
    assert_valid(&h);
}

#[test]
fn an_increment_continues_a_decimal_written_by_set() {
    let h = H::new()
        .done(0, Op::set("c", "41"), 0, 10)
        .inc(0, "c", 1, 20, 30, 42)
        .inc(0, "c", -50, 40, 50, -8)
        .read(1, "c", 60, 70, Some("-8"))
        .build();
    assert_valid(&h);
}

#[test]
fn batches_listings_and_prefixes() {
    let h = H::new()
        .done(
            0,
            Op::set_many(&[("a1", "x"), ("a2", "y"), ("a1", "z")]),
            0,
            10,
        )
        .done(1, Op::set("b", "w"), 0, 10)
        .ok(
            0,
            Op::get_many(&["a1", "a2", "a3", "a1"]),
            20,
            30,
            Ret::Values(vec![
                Some("z".into()),
                Some("y".into()),
                None,
                Some("z".into()),
            ]),
        )
        .ok(
            1,
            Op::list_keys(Some("a")),
            20,
            30,
            Ret::Keys(vec!["a1".into(), "a2".into()]),
        )
        // a2 deleted while this listing runs, b's delete outcome unknown: both may be missing.
        .done(2, Op::delete("a2"), 45, 55)
        .info(3, Op::delete("b"), 35, 38)
        .ok(1, Op::list_keys(None), 40, 60, Ret::Keys(vec!["a1".into()]))
        .build();
    assert_valid(&h);
}

// ---- histories that must fail ----

#[test]
fn stale_read_after_an_acknowledged_write() {
    let h = H::new()
        .done(0, Op::set("k", "a"), 0, 10)
        .read(1, "k", 12, 18, Some("a"))
        .done(0, Op::set("k", "b"), 20, 30)
        .read(1, "k", 40, 50, Some("a"))
        .build();
    let verdict = assert_anomaly(&h, AnomalyKind::NotLinearizable, "k");
    // Minimal: both writes and the stale read; the earlier good read is cut.
    let ops: Vec<usize> = verdict.anomalies[0].ops.iter().map(|e| e.index).collect();
    assert_eq!(ops, vec![0, 2, 3]);
}

#[test]
fn a_lost_acknowledged_write() {
    let h = H::new()
        .done(0, Op::set("k", "a"), 0, 10)
        .done(1, Op::set("other", "a"), 0, 10)
        .read(1, "k", 20, 30, Some("a"))
        .read(2, "k", 40, 50, None)
        .build();
    let verdict = assert_anomaly(&h, AnomalyKind::NotLinearizable, "k");
    assert_eq!(verdict.anomalies.len(), 1, "only k is wrong:\n{verdict}");
}

#[test]
fn an_info_write_cannot_apply_twice() {
    let h = H::new()
        .done(0, Op::set("k", "a"), 0, 10)
        .info(1, Op::set("k", "b"), 20, 30)
        .read(2, "k", 40, 50, Some("b"))
        .done(0, Op::set("k", "c"), 60, 70)
        .read(2, "k", 80, 90, Some("b"))
        .build();
    assert_anomaly(&h, AnomalyKind::NotLinearizable, "k");
}

#[test]
fn an_increment_applied_twice() {
    // One ok increment of 5, no info: a later read of 10 counts it twice.
    let h = H::new()
        .inc(0, "c", 5, 0, 10, 5)
        .read(1, "c", 20, 30, Some("10"))
        .build();
    assert_anomaly(&h, AnomalyKind::CounterOutOfBounds, "c");
    assert_anomaly(&h, AnomalyKind::NotLinearizable, "c");
}

#[test]
fn a_final_counter_read_outside_ok_plus_info() {
    let h = H::new()
        .inc(0, "c", 2, 0, 10, 2)
        .info(1, Op::increment("c", 3), 0, 10)
        .fail(2, Op::increment("c", 100), 0, 10)
        .read(1, "c", 20, 30, Some("5"))
        .read(1, "c", 40, 50, Some("1"))
        .build();
    // 5 is 2 + the info 3; 1 is below the acknowledged 2, and below the 5 read before it.
    let verdict = assert_anomaly(&h, AnomalyKind::CounterOutOfBounds, "c");
    let bounds: Vec<_> = verdict
        .of_kind(AnomalyKind::CounterOutOfBounds)
        .filter(|a| a.detail.contains("outside"))
        .collect();
    assert_eq!(bounds.len(), 1, "{verdict}");
    assert!(bounds[0].detail.contains("[2, 5]"), "{}", bounds[0]);
    assert!(
        verdict
            .of_kind(AnomalyKind::CounterOutOfBounds)
            .any(|a| a.detail.contains("went back: 1 was observed after 5")),
        "{verdict}"
    );
}

#[test]
fn two_increments_returning_the_same_total() {
    let h = H::new()
        .inc(0, "c", 1, 0, 10, 1)
        .inc(1, "c", 1, 5, 15, 1)
        .build();
    assert_anomaly(&h, AnomalyKind::DuplicateCounterTotal, "c");
}

#[test]
fn a_cas_that_succeeded_against_an_overwritten_value() {
    // The handle read "a"; "b" overwrote it before the swap; the swap still reported success
    // and its value shows after "b" completed.
    let h = H::new()
        .done(0, Op::set("k", "a"), 0, 10)
        .done(1, Op::cas("k", Some("a"), "c"), 15, 60)
        .done(2, Op::set("k", "b"), 20, 30)
        .read(2, "k", 40, 50, Some("b"))
        .read(0, "k", 70, 80, Some("c"))
        .build();
    assert_anomaly(&h, AnomalyKind::NotLinearizable, "k");
}

#[test]
fn an_identical_rewrite_between_read_and_swap_is_not_seen() {
    // True ABA (a, b, a again, then a swap expecting a succeeds) breaks S7, which counts the
    // rewrite as a change. The register compares values, not versions, so it cannot tell:
    // this documents the limit (kv-check/README.md) rather than hide it.
    let h = H::new()
        .done(0, Op::set("k", "a"), 0, 10)
        .done(2, Op::set("k", "b"), 20, 30)
        .done(2, Op::set("k", "a"), 40, 50)
        .done(1, Op::cas("k", Some("a"), "c"), 15, 60)
        .read(0, "k", 70, 80, Some("c"))
        .build();
    assert_valid(&h);
}

#[test]
fn a_listing_missing_a_stable_key() {
    let h = H::new()
        .done(0, Op::set("k1", "a"), 0, 10)
        .done(1, Op::set("k2", "a"), 0, 10)
        .done(1, Op::delete("k2"), 40, 50)
        .ok(2, Op::list_keys(None), 20, 30, Ret::Keys(vec!["k1".into()]))
        .build();
    let verdict = assert_anomaly(&h, AnomalyKind::ListingMissingKey, "k2");
    assert_eq!(verdict.anomalies.len(), 1, "{verdict}");
}

#[test]
fn a_failed_write_whose_effect_is_visible() {
    let h = H::new()
        .done(0, Op::set("k", "a"), 0, 10)
        .fail(1, Op::set("k", "b"), 20, 30)
        .read(2, "k", 40, 50, Some("b"))
        .build();
    let verdict = assert_anomaly(&h, AnomalyKind::FailedOpVisible, "k");
    let anomaly = &verdict.anomalies[0];
    assert!(
        anomaly.ops.iter().any(|e| e.index == 1),
        "the failed write is shown:\n{anomaly}"
    );
}

#[test]
fn one_get_many_reading_a_key_twice_keeps_both_reads_explained() {
    // Found by the property test: the shrinking tracked reads by entry, so with one read of a
    // get-many already unexplained it cut the write the other read saw, and the anomaly was
    // misnamed failed-op-visible because a failed swap had also tried to write "c".
    let h = H::new()
        .done(0, Op::set("k", "c"), 0, 10)
        .ok(
            1,
            Op::get_many(&["k", "k"]),
            20,
            30,
            Ret::Values(vec![Some("never".into()), Some("c".into())]),
        )
        .fail(2, Op::cas("k", None, "c"), 40, 50)
        .build();
    let verdict = assert_anomaly(&h, AnomalyKind::NotLinearizable, "k");
    let anomaly = &verdict.anomalies[0];
    assert!(
        anomaly
            .detail
            .contains("\"never\" was read but never written"),
        "{anomaly}"
    );
    assert_eq!(
        verdict.of_kind(AnomalyKind::FailedOpVisible).count(),
        0,
        "{verdict}"
    );
}

#[test]
fn malformed_entries_are_reported_not_trusted() {
    let h = H::new()
        .done(0, Op::set("k", "a"), 10, 5)
        .ok(
            0,
            Op::get_many(&["a", "b"]),
            20,
            30,
            Ret::Values(vec![None]),
        )
        .ok(0, Op::get("k"), 40, 50, Ret::Done)
        .build();
    let verdict = kv_check::check(&h);
    assert_eq!(
        verdict.of_kind(AnomalyKind::Malformed).count(),
        3,
        "{verdict}"
    );
}

#[test]
fn an_anomaly_prints_as_a_table() {
    let h = H::new()
        .done(0, Op::set("k", "a"), 0, 10)
        .read(1, "k", 20, 30, None)
        .build();
    let verdict = kv_check::check(&h);
    let text = verdict.to_string();
    assert!(text.starts_with("invalid: 1 anomalies"), "{text}");
    assert!(text.contains("not-linearizable on key \"k\""), "{text}");
    assert!(
        text.contains("#  process  invoke  complete  outcome  op"),
        "{text}"
    );
    assert!(text.contains("set k = \"a\""), "{text}");
    assert!(text.contains("ok none"), "{text}");
}

#[test]
fn an_info_horizon_bounds_when_an_unknown_write_can_land() {
    // The unknown write of "b" (invoked at 10) is not seen at 70..80, then seen at 100..110.
    // Without a horizon it may have landed at 90: valid. With a horizon of 50 it had to land by
    // 60, and the read at 70 says it had not: invalid.
    let h = H::new()
        .done(0, Op::set("k", "a"), 0, 5)
        .info(1, Op::set("k", "b"), 10, 20)
        .read(2, "k", 70, 80, Some("a"))
        .read(2, "k", 100, 110, Some("b"))
        .build();
    assert_valid(&h);
    let bounded = kv_check::Options {
        info_horizon: Some(50),
        ..kv_check::Options::default()
    };
    let verdict = kv_check::check_with(&h, &bounded);
    assert_eq!(verdict.valid, Validity::Invalid, "{verdict}");
    // A never-answered write is bounded the same way, from its invocation.
    let mut h = h;
    h.entries[1].complete = None;
    assert_valid(&h);
    assert_eq!(kv_check::check_with(&h, &bounded).valid, Validity::Invalid);
    // And one that could land inside the horizon is fine.
    let wide = kv_check::Options {
        info_horizon: Some(85),
        ..kv_check::Options::default()
    };
    assert_eq!(kv_check::check_with(&h, &wide).valid, Validity::Valid);
}
