//! S7 Compare-and-swap: versions, conflicts with fresh handles, exact loops.

use super::*;

pub(super) const CASES: &[Case] = &[
    case!(
        cas_missing_key_inserts,
        ["S7"],
        CAS,
        "swap of a handle on a missing key inserts it"
    ),
    case!(
        cas_current_is_value_at_new,
        ["S7"],
        CAS,
        "current() is the value when the handle was made"
    ),
    case!(
        cas_stale_fails_with_fresh_handle,
        ["S7"],
        CAS,
        "a stale swap is cas-failed with a handle holding the latest value, which then succeeds"
    ),
    case!(
        cas_missing_key_created_meanwhile_fails,
        ["S7"],
        CAS,
        "a swap expecting a missing key fails once someone created it"
    ),
    case!(
        cas_missing_key_set_and_deleted_meanwhile_fails,
        ["S7"],
        CAS,
        "a swap expecting a missing key fails if it was written and deleted since, though it is missing again (no ABA from absence)"
    ),
    case!(
        cas_deleted_meanwhile_fails,
        ["S7"],
        CAS,
        "a swap fails if the key was deleted since the handle was made"
    ),
    case!(
        cas_detects_rewrite_of_same_value,
        ["S7"],
        CAS,
        "a rewrite with the same bytes still counts as a change (no ABA)"
    ),
    case!(
        cas_concurrent_loops_exact,
        ["S7"],
        CAS,
        8,
        "8 instances x 25 CAS increments end at exactly 200"
    ),
];

fn swap_ok(cas: Cas, value: &[u8], what: &str) -> Outcome {
    match atomics::swap(cas, value) {
        Ok(()) => Ok(()),
        Err(CasError::CasFailed(_)) => Err(format!("{what}: unexpected cas-failed")),
        Err(CasError::StoreError(err)) => Err(format!("{what}: store error {err:?}")),
    }
}

fn swap_conflict(cas: Cas, value: &[u8], what: &str) -> Result<Cas, String> {
    match atomics::swap(cas, value) {
        Ok(()) => Err(format!("{what}: swap succeeded although the key changed")),
        Err(CasError::CasFailed(fresh)) => Ok(fresh),
        Err(CasError::StoreError(err)) => Err(format!(
            "{what}: expected cas-failed, got store error {err:?}"
        )),
    }
}

fn cas_missing_key_inserts(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let cas = Cas::new(&bucket, "k").or_fail("cas new")?;
    ensure_eq(
        cas.current().or_fail("current")?,
        None,
        "current of a missing key",
    )?;
    swap_ok(cas, b"inserted", "swap")?;
    expect_value(&bucket, "k", Some(b"inserted"))
}

fn cas_current_is_value_at_new(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "k", b"one")?;
    let cas = Cas::new(&bucket, "k").or_fail("cas new")?;
    set(&bucket, "k", b"two")?;
    ensure_eq(
        cas.current().or_fail("current")?,
        Some(b"one".to_vec()),
        "current",
    )?;
    let unchanged = Cas::new(&bucket, "k").or_fail("cas new")?;
    ensure_eq(
        unchanged.current().or_fail("current")?,
        Some(b"two".to_vec()),
        "current of a fresh handle",
    )?;
    swap_ok(unchanged, b"three", "swap")?;
    expect_value(&bucket, "k", Some(b"three"))
}

fn cas_stale_fails_with_fresh_handle(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "k", b"old")?;
    let cas = Cas::new(&bucket, "k").or_fail("cas new")?;
    set(&bucket, "k", b"newer")?;
    let fresh = swap_conflict(cas, b"lost", "stale swap")?;
    expect_value(&bucket, "k", Some(b"newer"))?;
    ensure_eq(
        fresh.current().or_fail("current")?,
        Some(b"newer".to_vec()),
        "current of the returned handle",
    )?;
    swap_ok(fresh, b"won", "swap with the returned handle")?;
    expect_value(&bucket, "k", Some(b"won"))
}

fn cas_missing_key_created_meanwhile_fails(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let cas = Cas::new(&bucket, "k").or_fail("cas new")?;
    set(&bucket, "k", b"first")?;
    let fresh = swap_conflict(cas, b"second", "swap expecting a missing key")?;
    expect_value(&bucket, "k", Some(b"first"))?;
    ensure_eq(
        fresh.current().or_fail("current")?,
        Some(b"first".to_vec()),
        "current",
    )
}

fn cas_missing_key_set_and_deleted_meanwhile_fails(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let cas = Cas::new(&bucket, "k").or_fail("cas new")?;
    set(&bucket, "k", b"meanwhile")?;
    bucket.delete("k").or_fail("delete")?;
    let fresh = swap_conflict(
        cas,
        b"late",
        "swap expecting a missing key after set + delete",
    )?;
    expect_value(&bucket, "k", None)?;
    ensure_eq(fresh.current().or_fail("current")?, None, "current")?;
    swap_ok(fresh, b"now", "swap with the returned handle")?;
    expect_value(&bucket, "k", Some(b"now"))
}

fn cas_deleted_meanwhile_fails(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "k", b"v")?;
    let cas = Cas::new(&bucket, "k").or_fail("cas new")?;
    bucket.delete("k").or_fail("delete")?;
    let fresh = swap_conflict(cas, b"w", "swap after delete")?;
    expect_value(&bucket, "k", None)?;
    ensure_eq(
        fresh.current().or_fail("current")?,
        None,
        "current after delete",
    )?;
    swap_ok(fresh, b"again", "swap inserting after delete")?;
    expect_value(&bucket, "k", Some(b"again"))
}

fn cas_detects_rewrite_of_same_value(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "k", b"A")?;
    let cas = Cas::new(&bucket, "k").or_fail("cas new")?;
    set(&bucket, "k", b"B")?;
    set(&bucket, "k", b"A")?;
    swap_conflict(cas, b"C", "swap after A -> B -> A")?;
    expect_value(&bucket, "k", Some(b"A"))
}

const CAS_PER_WORKER: usize = 25;

fn cas_concurrent_loops_exact(ctx: &Ctx, phase: Phase) -> Outcome {
    let bucket = ctx.open()?;
    match phase {
        Phase::Worker(_) => {
            for _ in 0..CAS_PER_WORKER {
                let mut cas = Cas::new(&bucket, "counter").or_fail("cas new")?;
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    ensure(attempts < 10_000, || {
                        "a CAS loop made no progress in 10,000 attempts".to_string()
                    })?;
                    let current = cas.current().or_fail("current")?;
                    let n: u64 = match current {
                        None => 0,
                        Some(bytes) => String::from_utf8_lossy(&bytes)
                            .parse()
                            .map_err(|_| "counter corrupted")?,
                    };
                    match atomics::swap(cas, (n + 1).to_string().as_bytes()) {
                        Ok(()) => break,
                        Err(CasError::CasFailed(fresh)) => cas = fresh,
                        Err(CasError::StoreError(err)) => return Err(format!("swap: {err:?}")),
                    }
                }
            }
            Ok(())
        }
        Phase::Check => expect_value(
            &bucket,
            "counter",
            Some((8 * CAS_PER_WORKER).to_string().as_bytes()),
        ),
        Phase::Single => Err("this case runs as workers".to_string()),
    }
}

// ---------- S8 batches ----------
