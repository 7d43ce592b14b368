//! The older `wasi:keyvalue@0.2.0-draft` interface, linked in the same component.

use super::*;

pub(super) const CASES: &[Case] = &[
    case!(
        draft_store_roundtrip,
        ["S2", "S3"],
        NONE,
        "the 0.2.0-draft interface reads and writes the same data"
    ),
    case!(
        draft_list_keys_u64_cursor,
        ["S5"],
        NONE,
        "the 0.2.0-draft u64 cursor pages through 2,500 keys exactly once"
    ),
    case!(
        draft_increment_u64,
        ["S6"],
        NONE,
        "the 0.2.0-draft u64 increment works and reports overflow"
    ),
    case!(
        draft_increment_below_zero_leaves_value_unchanged,
        ["S6", "S11"],
        NONE,
        "a 0.2.0-draft u64 increment whose total would be negative is overflow and writes nothing"
    ),
];

fn draft_open(ctx: &Ctx) -> Result<draft::store::Bucket, String> {
    draft::store::open(&ctx.target.store).or_fail("draft open")
}

fn draft_store_roundtrip(ctx: &Ctx, _: Phase) -> Outcome {
    let old = draft_open(ctx)?;
    let new = ctx.open()?;
    old.set("k", b"from-draft").or_fail("draft set")?;
    expect_value(&new, "k", Some(b"from-draft"))?;
    set(&new, "e", b"")?;
    ensure_eq(
        old.get("e").or_fail("draft get")?,
        Some(vec![]),
        "draft get of an empty value",
    )?;
    ensure_eq(
        old.get("missing").or_fail("draft get")?,
        None,
        "draft get of a missing key",
    )?;
    ensure_eq(
        old.exists("k").or_fail("draft exists")?,
        true,
        "draft exists",
    )?;
    old.delete("k").or_fail("draft delete")?;
    old.delete("k").or_fail("draft delete again")?;
    expect_value(&new, "k", None)?;
    let got =
        draft::batch::get_many(&old, &["e", "x"].map(String::from)).or_fail("draft get-many")?;
    ensure_eq(
        got,
        vec![Some(("e".to_string(), vec![])), None],
        "draft get-many",
    )?;
    match old.set("", b"v") {
        Err(draft::store::Error::Other(message)) if message.starts_with("invalid-key:") => Ok(()),
        other => Err(format!(
            "draft set of an empty key: expected invalid-key, got {other:?}"
        )),
    }
}

fn draft_list_keys_u64_cursor(ctx: &Ctx, _: Phase) -> Outcome {
    let old = draft_open(ctx)?;
    let keys = keys_numbered("key-", 2500);
    for chunk in keys.chunks(500) {
        let entries: Vec<(String, Vec<u8>)> = chunk
            .iter()
            .map(|key| (key.clone(), b"v".to_vec()))
            .collect();
        draft::batch::set_many(&old, &entries).or_fail("draft set-many")?;
    }
    let mut listed = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = old.list_keys(cursor).or_fail("draft list-keys")?;
        ensure(page.keys.len() <= 1000, || {
            format!("page of {}", page.keys.len())
        })?;
        pages += 1;
        listed.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        ensure(pages < 100, || "draft listing does not end".to_string())?;
    }
    ensure(pages >= 3, || format!("{pages} pages"))?;
    let total = listed.len();
    listed.sort();
    listed.dedup();
    if !ctx.profile.list_may_repeat {
        ensure_eq(total, 2500, "keys listed in total")?;
    }
    ensure_eq(listed, keys, "distinct keys listed")?;
    match old.list_keys(Some(987_654)) {
        Err(draft::store::Error::Other(message)) if message.starts_with("invalid-cursor:") => {
            Ok(())
        }
        other => Err(format!(
            "draft list-keys from a forged cursor: expected invalid-cursor, got {}",
            short(&other.map(|p| p.keys.len()))
        )),
    }
}

fn draft_increment_u64(ctx: &Ctx, _: Phase) -> Outcome {
    let old = draft_open(ctx)?;
    ensure_eq(
        draft::atomics::increment(&old, "n", 5).or_fail("draft increment")?,
        5,
        "draft increment of a missing key",
    )?;
    old.set("m", b"41").or_fail("draft set")?;
    ensure_eq(
        draft::atomics::increment(&old, "m", 1).or_fail("draft increment")?,
        42,
        "draft increment after set",
    )?;
    let new = ctx.open()?;
    expect_value(&new, "m", Some(b"42"))?;
    match draft::atomics::increment(&old, "m", u64::MAX) {
        Err(draft::store::Error::Other(message)) if message.starts_with("overflow:") => {}
        other => {
            return Err(format!(
                "draft increment by u64::MAX: expected overflow, got {other:?}"
            ));
        }
    }
    expect_value(&new, "m", Some(b"42"))
}

/// The u64 increment cannot return a negative total, so it must not write one: it used to
/// apply (-5 became -4) and then report overflow, and a guest that retried on the error moved
/// the counter each time.
fn draft_increment_below_zero_leaves_value_unchanged(ctx: &Ctx, _: Phase) -> Outcome {
    let old = draft_open(ctx)?;
    let new = ctx.open()?;
    set(&new, "neg", b"-5")?;
    for attempt in 1..=3 {
        match draft::atomics::increment(&old, "neg", 1) {
            Err(draft::store::Error::Other(message)) if message.starts_with("overflow:") => {}
            other => {
                return Err(format!(
                    "draft increment of -5 by 1 (attempt {attempt}): expected overflow, got \
                     {other:?}"
                ));
            }
        }
        expect_value(&new, "neg", Some(b"-5"))?;
    }
    // At the boundary: -5 + 5 is 0, which the u64 interface can return.
    ensure_eq(
        draft::atomics::increment(&old, "neg", 5).or_fail("draft increment to zero")?,
        0,
        "draft increment of -5 by 5",
    )?;
    expect_value(&new, "neg", Some(b"0"))
}
