//! S3 Missing keys: none, false, idempotent delete.

use super::*;

pub(super) const CASES: &[Case] = &[
    case!(
        get_missing_is_none,
        ["S3"],
        NONE,
        "get of a missing key is none"
    ),
    case!(
        exists_missing_is_false,
        ["S3"],
        NONE,
        "exists of a missing key is false"
    ),
    case!(
        delete_missing_succeeds,
        ["S3"],
        NONE,
        "deleting a missing key succeeds, twice"
    ),
    case!(
        get_many_missing_positions_none,
        ["S3", "S8"],
        NONE,
        "get-many gives none in the positions of missing keys"
    ),
    case!(
        delete_then_set_again,
        ["S3"],
        NONE,
        "a deleted key reads as missing and can be written again"
    ),
];

fn get_missing_is_none(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    expect_value(&bucket, "missing", None)
}

fn exists_missing_is_false(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    ensure_eq(bucket.exists("missing").or_fail("exists")?, false, "exists")
}

fn delete_missing_succeeds(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    bucket.delete("missing").or_fail("first delete")?;
    bucket.delete("missing").or_fail("second delete")?;
    expect_value(&bucket, "missing", None)
}

fn get_many_missing_positions_none(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "b", b"2")?;
    let keys = ["a", "b", "c"].map(String::from);
    let got = get_many(&bucket, &keys).or_fail("get-many")?;
    ensure_eq(
        got,
        vec![None, Some(("b".to_string(), b"2".to_vec())), None],
        "get-many",
    )
}

fn delete_then_set_again(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "k", b"1")?;
    bucket.delete("k").or_fail("delete")?;
    expect_value(&bucket, "k", None)?;
    ensure_eq(
        bucket.exists("k").or_fail("exists")?,
        false,
        "exists after delete",
    )?;
    set(&bucket, "k", b"2")?;
    expect_value(&bucket, "k", Some(b"2"))
}

// ---------- S4 read your writes ----------
