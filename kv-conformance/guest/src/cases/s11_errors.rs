//! S11 Errors: stable classes, messages in words.

use super::*;

pub(super) const CASES: &[Case] = &[case!(
    error_classes_are_stable,
    ["S11"],
    NONE,
    "every error a guest can provoke starts with its stable class"
)];

fn error_classes_are_stable(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let max = ctx.profile.max_value_bytes as usize;
    expect_class(bucket.get(""), "invalid-key", "empty key")?;
    expect_class(
        bucket.set("k", &patterned(max + 1)),
        "value-too-large",
        "oversized value",
    )?;
    set(&bucket, "text", b"abc")?;
    expect_class(
        atomics::increment(&bucket, "text", 1),
        "not-an-integer",
        "increment of text",
    )?;
    set(&bucket, "max", i64::MAX.to_string().as_bytes())?;
    expect_class(
        atomics::increment(&bucket, "max", 1),
        "overflow",
        "overflow",
    )?;
    expect_class(
        bucket.list_keys(Some("bogus")),
        "invalid-cursor",
        "bogus cursor",
    )?;
    let keys = keys_numbered("k", ctx.profile.max_batch_entries as usize + 1);
    expect_class(
        get_many(&bucket, &keys),
        "batch-too-large",
        "oversized batch",
    )?;
    // Messages say what went wrong in words, not just the class.
    match bucket.get("") {
        Err(Error::Other(message)) => ensure(message.len() > "invalid-key: ".len(), || {
            format!("terse message {message:?}")
        }),
        other => Err(format!("expected invalid-key, got {other:?}")),
    }
}

// ---------- the older draft interface ----------
