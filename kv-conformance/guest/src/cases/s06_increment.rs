//! S6 Increment: ASCII decimal i64 counters, exact under concurrency.

use super::*;

pub(super) const CASES: &[Case] = &[
    case!(
        increment_missing_starts_at_zero,
        ["S6"],
        NONE,
        "increment of a missing key returns the delta"
    ),
    case!(
        increment_stored_as_ascii_decimal,
        ["S6"],
        NONE,
        "get of a counter returns ASCII decimal, negatives included"
    ),
    case!(
        increment_after_set_decimal,
        ["S6"],
        NONE,
        "set(k, \"41\") then increment(k, 1) gives 42"
    ),
    case!(
        increment_zero_and_negative_delta,
        ["S6"],
        NONE,
        "delta 0 returns the value, negative deltas subtract"
    ),
    case!(
        increment_not_an_integer_rejected,
        ["S6", "S11"],
        NONE,
        "non-decimal values are not-an-integer and stay unchanged"
    ),
    case!(
        increment_overflow_rejected,
        ["S6", "S11"],
        NONE,
        "leaving the i64 range is overflow and the value stays"
    ),
    case!(
        increment_concurrent_exact,
        ["S6"],
        NONE,
        8,
        "8 instances x 50 increments end at 400 with unique results"
    ),
];

fn increment_missing_starts_at_zero(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    ensure_eq(
        atomics::increment(&bucket, "n", 5).or_fail("increment")?,
        5,
        "first increment",
    )?;
    ensure_eq(
        atomics::increment(&bucket, "m", -3).or_fail("increment")?,
        -3,
        "first negative increment",
    )?;
    expect_value(&bucket, "n", Some(b"5"))
}

fn increment_stored_as_ascii_decimal(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    atomics::increment(&bucket, "n", 42).or_fail("increment")?;
    expect_value(&bucket, "n", Some(b"42"))?;
    atomics::increment(&bucket, "n", -49).or_fail("increment")?;
    expect_value(&bucket, "n", Some(b"-7"))?;
    atomics::increment(&bucket, "n", 7).or_fail("increment")?;
    expect_value(&bucket, "n", Some(b"0"))?;
    ensure_eq(
        atomics::increment(&bucket, "big", i64::MAX).or_fail("increment")?,
        i64::MAX,
        "a total beyond 2^53 is answered exactly",
    )?;
    expect_value(&bucket, "big", Some(b"9223372036854775807"))?;
    // Around 2^53, where a double (a Lua number, a JSON number) stops holding every integer.
    set(&bucket, "edge", b"9007199254740991")?;
    ensure_eq(
        atomics::increment(&bucket, "edge", 1).or_fail("increment")?,
        9_007_199_254_740_992,
        "2^53",
    )?;
    ensure_eq(
        atomics::increment(&bucket, "edge", 1).or_fail("increment")?,
        9_007_199_254_740_993,
        "2^53 + 1",
    )?;
    set(&bucket, "below", b"-9007199254740991")?;
    ensure_eq(
        atomics::increment(&bucket, "below", -2).or_fail("increment")?,
        -9_007_199_254_740_993,
        "-(2^53 + 1)",
    )?;
    expect_value(&bucket, "below", Some(b"-9007199254740993"))
}

fn increment_after_set_decimal(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "n", b"41")?;
    ensure_eq(
        atomics::increment(&bucket, "n", 1).or_fail("increment")?,
        42,
        "increment",
    )?;
    expect_value(&bucket, "n", Some(b"42"))?;
    set(&bucket, "neg", b"-10")?;
    ensure_eq(
        atomics::increment(&bucket, "neg", 3).or_fail("increment")?,
        -7,
        "increment",
    )?;
    batch::set_many(&bucket, &[("batch".to_string(), b"100".to_vec())]).or_fail("set-many")?;
    ensure_eq(
        atomics::increment(&bucket, "batch", 1).or_fail("increment")?,
        101,
        "increment after set-many",
    )
}

fn increment_zero_and_negative_delta(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    atomics::increment(&bucket, "n", 10).or_fail("increment")?;
    ensure_eq(
        atomics::increment(&bucket, "n", 0).or_fail("increment 0")?,
        10,
        "delta 0",
    )?;
    ensure_eq(
        atomics::increment(&bucket, "n", -25).or_fail("increment -25")?,
        -15,
        "negative delta",
    )?;
    ensure_eq(
        atomics::increment(&bucket, "zero", 0).or_fail("increment 0 of missing")?,
        0,
        "delta 0 of a missing key",
    )?;
    expect_value(&bucket, "zero", Some(b"0"))
}

fn increment_not_an_integer_rejected(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let bad: [&[u8]; 11] = [
        b"abc",
        b"",
        b" 42",
        b"42 ",
        b"4.2",
        b"1e3",
        b"0x10",
        b"+5",
        b"9223372036854775808",
        b"\xff\xfe",
        b"12a",
    ];
    for (i, value) in bad.iter().enumerate() {
        let key = format!("k{i}");
        set(&bucket, &key, value)?;
        expect_class(
            atomics::increment(&bucket, &key, 1),
            "not-an-integer",
            &format!("increment of {:?}", String::from_utf8_lossy(value)),
        )?;
        expect_value(&bucket, &key, Some(value))?;
    }
    Ok(())
}

fn increment_overflow_rejected(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "max", b"9223372036854775807")?;
    expect_class(
        atomics::increment(&bucket, "max", 1),
        "overflow",
        "increment past i64::MAX",
    )?;
    expect_value(&bucket, "max", Some(b"9223372036854775807"))?;
    set(&bucket, "min", b"-9223372036854775808")?;
    expect_class(
        atomics::increment(&bucket, "min", -1),
        "overflow",
        "increment below i64::MIN",
    )?;
    expect_value(&bucket, "min", Some(b"-9223372036854775808"))?;
    atomics::increment(&bucket, "n", i64::MAX).or_fail("increment")?;
    expect_class(
        atomics::increment(&bucket, "n", i64::MAX),
        "overflow",
        "second i64::MAX increment",
    )?;
    expect_value(&bucket, "n", Some(b"9223372036854775807"))
}

const INCREMENTS_PER_WORKER: usize = 50;

fn increment_concurrent_exact(ctx: &Ctx, phase: Phase) -> Outcome {
    let bucket = ctx.open()?;
    match phase {
        Phase::Worker(i) => {
            let mut returned = Vec::with_capacity(INCREMENTS_PER_WORKER);
            for _ in 0..INCREMENTS_PER_WORKER {
                returned.push(
                    atomics::increment(&bucket, "counter", 1)
                        .or_fail("increment")?
                        .to_string(),
                );
            }
            set(
                &bucket,
                &format!("returned-{i}"),
                returned.join(",").as_bytes(),
            )
        }
        Phase::Check => {
            let workers = 8;
            let total = workers * INCREMENTS_PER_WORKER;
            expect_value(&bucket, "counter", Some(total.to_string().as_bytes()))?;
            let mut all = Vec::new();
            for i in 0..workers {
                let text = get(&bucket, &format!("returned-{i}"))?
                    .ok_or(format!("worker {i} left no results"))?;
                let text = String::from_utf8(text).map_err(|_| "results not UTF-8")?;
                all.extend(text.split(',').map(|n| n.parse::<usize>().unwrap_or(0)));
            }
            all.sort_unstable();
            ensure_eq(
                all,
                (1..=total).collect::<Vec<_>>(),
                "values returned by all increments (each exactly once)",
            )
        }
        Phase::Single => Err("this case runs as workers".to_string()),
    }
}

// ---------- S7 compare-and-swap ----------
