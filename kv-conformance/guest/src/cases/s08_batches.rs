//! S8 Batches: order, duplicates, native limits, host limits.

use super::*;

pub(super) const CASES: &[Case] = &[
    case!(
        get_many_keeps_order_and_duplicates,
        ["S8"],
        NONE,
        "get-many keeps order, length and duplicates"
    ),
    case!(
        get_many_empty_list,
        ["S8"],
        NONE,
        "get-many of no keys is an empty list"
    ),
    case!(
        set_many_above_native_limits,
        ["S8"],
        NONE,
        "set-many and get-many of 1,001 entries work"
    ),
    case!(
        set_many_duplicate_keys_last_wins,
        ["S8"],
        NONE,
        "for a key given twice in set-many, the last value wins"
    ),
    case!(
        delete_many_with_missing_keys,
        ["S8"],
        NONE,
        "delete-many removes existing keys and skips missing ones"
    ),
    case!(
        batch_over_host_limit_rejected,
        ["S8", "S12", "S11"],
        NONE,
        "a batch above the host limit is batch-too-large and writes nothing"
    ),
    case!(
        batch_invalid_entry_writes_nothing,
        ["S8", "S11"],
        NONE,
        "a set-many with one invalid key or oversized value writes nothing"
    ),
];

fn get_many_keeps_order_and_duplicates(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "a", b"1")?;
    set(&bucket, "b", b"2")?;
    let keys = ["b", "a", "missing", "b", "a", "b"].map(String::from);
    let got = get_many(&bucket, &keys).or_fail("get-many")?;
    let expected: Vec<Option<(String, Vec<u8>)>> = keys
        .iter()
        .map(|key| match key.as_str() {
            "a" => Some((key.clone(), b"1".to_vec())),
            "b" => Some((key.clone(), b"2".to_vec())),
            _ => None,
        })
        .collect();
    ensure_eq(got, expected, "get-many")
}

fn get_many_empty_list(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    ensure_eq(
        get_many(&bucket, &[]).or_fail("get-many")?,
        vec![],
        "get-many of nothing",
    )?;
    batch::set_many(&bucket, &[]).or_fail("set-many of nothing")?;
    batch::delete_many(&bucket, &[]).or_fail("delete-many of nothing")
}

fn set_many_above_native_limits(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let keys = keys_numbered("k", 1001);
    let entries: Vec<(String, Vec<u8>)> = keys
        .iter()
        .map(|key| (key.clone(), format!("v-{key}").into_bytes()))
        .collect();
    batch::set_many(&bucket, &entries).or_fail("set-many of 1,001 entries")?;
    let got = get_many(&bucket, &keys).or_fail("get-many of 1,001 keys")?;
    ensure_eq(got.len(), 1001, "values returned")?;
    for ((key, value), got) in entries.into_iter().zip(got) {
        ensure_eq(got, Some((key.clone(), value)), &key)?;
    }
    batch::delete_many(&bucket, &keys).or_fail("delete-many of 1,001 keys")?;
    ensure_eq(
        list_all(&bucket)?,
        Vec::<String>::new(),
        "keys after delete-many",
    )
}

fn set_many_duplicate_keys_last_wins(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let mut entries = Vec::new();
    for round in 0..30 {
        entries.push(("dup".to_string(), format!("v{round}").into_bytes()));
        entries.push((format!("other{round}"), b"x".to_vec()));
    }
    batch::set_many(&bucket, &entries).or_fail("set-many")?;
    expect_value(&bucket, "dup", Some(b"v29"))
}

fn delete_many_with_missing_keys(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "a", b"1")?;
    set(&bucket, "c", b"3")?;
    set(&bucket, "keep", b"k")?;
    batch::delete_many(&bucket, &["a", "b", "c", "a"].map(String::from)).or_fail("delete-many")?;
    ensure_eq(
        list_set(ctx, &bucket)?,
        vec!["keep".to_string()],
        "keys left",
    )
}

fn batch_over_host_limit_rejected(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let count = ctx.profile.max_batch_entries as usize + 1;
    let keys = keys_numbered("k", count);
    let entries: Vec<(String, Vec<u8>)> = keys
        .iter()
        .map(|key| (key.clone(), b"v".to_vec()))
        .collect();
    expect_class(
        batch::set_many(&bucket, &entries),
        "batch-too-large",
        "set-many",
    )?;
    expect_class(get_many(&bucket, &keys), "batch-too-large", "get-many")?;
    expect_class(
        batch::delete_many(&bucket, &keys),
        "batch-too-large",
        "delete-many",
    )?;
    ensure_eq(
        list_all(&bucket)?,
        Vec::<String>::new(),
        "keys after a rejected set-many",
    )
}

fn batch_invalid_entry_writes_nothing(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let max = ctx.profile.max_value_bytes as usize;
    let bad_key = vec![
        ("good".to_string(), b"v".to_vec()),
        ("k".repeat(1025), b"v".to_vec()),
    ];
    expect_class(
        batch::set_many(&bucket, &bad_key),
        "invalid-key",
        "set-many with a long key",
    )?;
    let bad_value = vec![
        ("good".to_string(), b"v".to_vec()),
        ("big".to_string(), patterned(max + 1)),
    ];
    expect_class(
        batch::set_many(&bucket, &bad_value),
        "value-too-large",
        "set-many with a large value",
    )?;
    ensure_eq(
        list_all(&bucket)?,
        Vec::<String>::new(),
        "keys after rejected batches",
    )
}

// ---------- S9 TTL ----------
