//! S4 Read your writes, through any handle and instance.

use super::*;

pub(super) const CASES: &[Case] = &[
    case!(
        read_your_writes_same_handle,
        ["S4"],
        NONE,
        "set, overwrite and delete are visible at once through the same handle"
    ),
    case!(
        read_your_writes_across_handles,
        ["S4"],
        NONE,
        "writes through one handle are visible at once through another"
    ),
    case!(
        writes_visible_across_instances,
        ["S4"],
        NONE,
        8,
        "8 instances write at once and a later instance sees every write"
    ),
];

fn read_your_writes_same_handle(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    for round in 0..20 {
        let value = format!("round-{round}");
        set(&bucket, "k", value.as_bytes())?;
        expect_value(&bucket, "k", Some(value.as_bytes()))?;
    }
    bucket.delete("k").or_fail("delete")?;
    expect_value(&bucket, "k", None)
}

fn read_your_writes_across_handles(ctx: &Ctx, _: Phase) -> Outcome {
    let writer = ctx.open()?;
    let reader = ctx.open()?;
    set(&writer, "k", b"1")?;
    expect_value(&reader, "k", Some(b"1"))?;
    ensure_eq(
        atomics::increment(&writer, "n", 5).or_fail("increment")?,
        5,
        "increment",
    )?;
    expect_value(&reader, "n", Some(b"5"))?;
    writer.delete("k").or_fail("delete")?;
    expect_value(&reader, "k", None)?;
    let read_only = ctx.open_read_only()?;
    expect_value(&read_only, "n", Some(b"5"))
}

fn writes_visible_across_instances(ctx: &Ctx, phase: Phase) -> Outcome {
    let bucket = ctx.open()?;
    match phase {
        Phase::Worker(i) => {
            for j in 0..20 {
                set(&bucket, &format!("w{i}-{j}"), format!("{i}:{j}").as_bytes())?;
            }
            Ok(())
        }
        Phase::Check => {
            let keys: Vec<String> = (0..8)
                .flat_map(|i| (0..20).map(move |j| format!("w{i}-{j}")))
                .collect();
            let got = get_many(&bucket, &keys).or_fail("get-many")?;
            for (key, value) in keys.iter().zip(got) {
                let (i, j) = key[1..].split_once('-').ok_or("bad key")?;
                let expected = format!("{i}:{j}").into_bytes();
                ensure_eq(value, Some((key.clone(), expected)), key)?;
            }
            Ok(())
        }
        Phase::Single => Err("this case runs as workers".to_string()),
    }
}

// ---------- S5 listing ----------
