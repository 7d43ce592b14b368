//! S9 TTL: expired keys behave as missing everywhere.

use super::*;

pub(super) const CASES: &[Case] = &[
    case!(
        ttl_visible_before_expiry,
        ["S9"],
        TTL,
        "a key with a TTL reads normally before it expires"
    ),
    case!(
        ttl_expired_is_missing_everywhere,
        ["S9"],
        TTL,
        "after expiry: get none, exists false, get-many none, not listed, increment starts at 0"
    ),
    case!(
        ttl_cleared_by_plain_set,
        ["S9"],
        TTL,
        "a plain set after set-with-ttl removes the expiry"
    ),
    case!(
        ttl_invalid_rejected,
        ["S9", "S11"],
        TTL,
        "a TTL of 0 or beyond 100 years is invalid-ttl"
    ),
];

fn sleep_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

fn ttl_visible_before_expiry(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    ttl::set_with_ttl(&bucket, "k", b"v", 60_000).or_fail("set-with-ttl")?;
    expect_value(&bucket, "k", Some(b"v"))?;
    ensure(bucket.exists("k").or_fail("exists")?, || {
        "exists before expiry".to_string()
    })?;
    ensure_eq(
        list_all(&bucket)?,
        vec!["k".to_string()],
        "listed before expiry",
    )
}

fn ttl_expired_is_missing_everywhere(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    ttl::set_with_ttl(&bucket, "k", b"v", 1000).or_fail("set-with-ttl")?;
    ttl::set_with_ttl(&bucket, "n", b"41", 1000).or_fail("set-with-ttl")?;
    set(&bucket, "stays", b"v")?;
    // No check that "k" is still there: on a loaded machine the writes above can take longer
    // than its TTL (ttl_visible_before_expiry checks visibility with a TTL of a minute).
    sleep_ms(2500);
    expect_value(&bucket, "k", None)?;
    ensure_eq(
        bucket.exists("k").or_fail("exists")?,
        false,
        "exists after expiry",
    )?;
    ensure_eq(
        get_many(&bucket, &["k".to_string()]).or_fail("get-many")?,
        vec![None],
        "get-many after expiry",
    )?;
    ensure_eq(
        list_set(ctx, &bucket)?,
        vec!["stays".to_string()],
        "listed after expiry",
    )?;
    ensure_eq(
        atomics::increment(&bucket, "n", 1).or_fail("increment")?,
        1,
        "increment of an expired counter",
    )
}

fn ttl_cleared_by_plain_set(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    ttl::set_with_ttl(&bucket, "k", b"v", 1000).or_fail("set-with-ttl")?;
    set(&bucket, "k", b"kept")?;
    batch::set_many(&bucket, &[("m".to_string(), b"kept".to_vec())]).or_fail("set-many")?;
    ttl::set_with_ttl(&bucket, "m", b"v", 1000).or_fail("set-with-ttl")?;
    batch::set_many(&bucket, &[("m".to_string(), b"kept".to_vec())]).or_fail("set-many")?;
    sleep_ms(2500);
    expect_value(&bucket, "k", Some(b"kept"))?;
    expect_value(&bucket, "m", Some(b"kept"))
}

fn ttl_invalid_rejected(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    expect_class(
        ttl::set_with_ttl(&bucket, "k", b"v", 0),
        "invalid-ttl",
        "ttl 0",
    )?;
    expect_class(
        ttl::set_with_ttl(&bucket, "k", b"v", u64::MAX),
        "invalid-ttl",
        "ttl u64::MAX",
    )?;
    expect_value(&bucket, "k", None)
}

// ---------- S10 stores and access ----------
