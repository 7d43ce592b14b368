//! S2 Values: any bytes up to the declared maximum; empty is not missing.

use super::*;

pub(super) const CASES: &[Case] = &[
    case!(
        value_empty_is_not_missing,
        ["S2", "S3"],
        NONE,
        "an empty value reads back as some([]) and exists"
    ),
    case!(
        value_all_byte_values_roundtrip,
        ["S2"],
        NONE,
        "a value holding all 256 byte values round-trips"
    ),
    case!(
        value_invalid_utf8_roundtrip,
        ["S2"],
        NONE,
        "bytes that are not UTF-8 round-trip unchanged"
    ),
    case!(
        value_number_and_json_looking_bytes,
        ["S2"],
        NONE,
        "values that look like numbers or JSON stay bytes"
    ),
    case!(
        value_256_kib_roundtrip,
        ["S2"],
        NONE,
        "a 256 KiB value round-trips"
    ),
    case!(
        value_at_declared_maximum,
        ["S2"],
        NONE,
        "a value of exactly the declared maximum is stored"
    ),
    case!(
        value_over_maximum_rejected,
        ["S2", "S11"],
        NONE,
        "one byte over the maximum is value-too-large and the old value stays"
    ),
    case!(
        value_overwrite_replaces,
        ["S2"],
        NONE,
        "a shorter second write replaces the first completely"
    ),
];

fn roundtrip(ctx: &Ctx, value: Vec<u8>) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "value", &value)?;
    expect_value(&bucket, "value", Some(&value))?;
    let many = get_many(&bucket, &["value".to_string()]).or_fail("get-many")?;
    ensure_eq(many, vec![Some(("value".to_string(), value))], "get-many")
}

fn value_empty_is_not_missing(ctx: &Ctx, _: Phase) -> Outcome {
    roundtrip(ctx, Vec::new())?;
    let bucket = ctx.open()?;
    ensure(bucket.exists("value").or_fail("exists")?, || {
        "an empty value must exist".to_string()
    })?;
    ensure_eq(list_all(&bucket)?, vec!["value".to_string()], "listed keys")
}

fn value_all_byte_values_roundtrip(ctx: &Ctx, _: Phase) -> Outcome {
    let mut value: Vec<u8> = (0..=255).collect();
    value.extend((0..=255).rev());
    roundtrip(ctx, value)
}

fn value_invalid_utf8_roundtrip(ctx: &Ctx, _: Phase) -> Outcome {
    roundtrip(
        ctx,
        vec![0xff, 0xfe, 0xc3, 0x28, 0x00, 0xed, 0xa0, 0x80, 0xf8],
    )
}

fn value_number_and_json_looking_bytes(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let values: [&[u8]; 8] = [
        b"42",
        b"-7",
        b"4.20",
        b"1e3",
        b"null",
        b"[1,2,3]",
        b"{\"a\":1}",
        b"\"s\"",
    ];
    for (i, value) in values.iter().enumerate() {
        set(&bucket, &format!("k{i}"), value)?;
    }
    for (i, value) in values.iter().enumerate() {
        expect_value(&bucket, &format!("k{i}"), Some(value))?;
    }
    Ok(())
}

fn value_256_kib_roundtrip(ctx: &Ctx, _: Phase) -> Outcome {
    roundtrip(ctx, patterned(256 * 1024))
}

fn value_at_declared_maximum(ctx: &Ctx, _: Phase) -> Outcome {
    let max = ctx.profile.max_value_bytes as usize;
    let bucket = ctx.open()?;
    let value = patterned(max);
    set(&bucket, "max", &value)?;
    let read = get(&bucket, "max")?;
    ensure(read.as_deref() == Some(&value[..]), || {
        format!(
            "a {max}-byte value did not round-trip (read {:?} bytes)",
            read.map(|v| v.len())
        )
    })
}

fn value_over_maximum_rejected(ctx: &Ctx, _: Phase) -> Outcome {
    let max = ctx.profile.max_value_bytes as usize;
    let bucket = ctx.open()?;
    set(&bucket, "k", b"previous")?;
    expect_class(
        bucket.set("k", &patterned(max + 1)),
        "value-too-large",
        "set",
    )?;
    expect_class(
        batch::set_many(&bucket, &[("k".to_string(), patterned(max + 1))]),
        "value-too-large",
        "set-many",
    )?;
    expect_value(&bucket, "k", Some(b"previous"))?;
    expect_class(
        bucket.set("fresh", &patterned(max + 1)),
        "value-too-large",
        "set of a new key",
    )?;
    expect_value(&bucket, "fresh", None)
}

fn value_overwrite_replaces(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "k", &patterned(10_000))?;
    set(&bucket, "k", b"short")?;
    expect_value(&bucket, "k", Some(b"short"))
}

// ---------- S3 missing keys ----------
