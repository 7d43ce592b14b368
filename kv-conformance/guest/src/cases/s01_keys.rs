//! S1 Keys: any UTF-8 string of 1 to 1024 bytes, opaque, byte-exact.

use super::*;

pub(super) const CASES: &[Case] = &[
    case!(
        key_path_like_keys_distinct,
        ["S1"],
        NONE,
        "keys differing only in slashes, dots, spaces or percent-encoding are distinct"
    ),
    case!(
        key_unicode_forms_distinct,
        ["S1"],
        NONE,
        "NFC and NFD spellings and case variants are distinct keys"
    ),
    case!(
        key_special_characters_roundtrip,
        ["S1"],
        NONE,
        "quotes, #, ?, \\, +, glob characters and control characters round-trip"
    ),
    case!(
        key_max_length_1024_bytes,
        ["S1"],
        NONE,
        "1024-byte ASCII and multi-byte keys are stored and listed byte for byte"
    ),
    case!(
        key_too_long_rejected,
        ["S1", "S11"],
        NONE,
        "a 1025-byte key is invalid-key on every operation and nothing is written"
    ),
    case!(
        key_empty_rejected,
        ["S1", "S11"],
        NONE,
        "the empty key is invalid-key on every operation"
    ),
    case!(
        key_listing_byte_exact,
        ["S1", "S5"],
        NONE,
        "list-keys returns every edge key exactly as written"
    ),
];

fn write_distinct(keys: &[&str]) -> impl Fn(&Ctx, Phase) -> Outcome {
    let keys: Vec<String> = keys.iter().map(|key| key.to_string()).collect();
    move |ctx, _| {
        let bucket = ctx.open()?;
        for (i, key) in keys.iter().enumerate() {
            set(&bucket, key, format!("v{i}").as_bytes())?;
        }
        for (i, key) in keys.iter().enumerate() {
            expect_value(&bucket, key, Some(format!("v{i}").as_bytes()))?;
        }
        Ok(())
    }
}

fn key_path_like_keys_distinct(ctx: &Ctx, phase: Phase) -> Outcome {
    write_distinct(&[
        "a", " a", "a ", "a/", "/a", "a//b", "a/b", "/", "//", "%2F", "%2f", ".", "..", "./a",
        "a/./b", "a/../b",
    ])(ctx, phase)
}

fn key_unicode_forms_distinct(ctx: &Ctx, phase: Phase) -> Outcome {
    write_distinct(&[
        "\u{e9}",
        "e\u{301}",
        "A",
        "a",
        "%41",
        "\u{c5}",
        "A\u{30a}",
        "\u{212b}",
        "\u{fb01}",
        "fi",
        "a\u{200b}b",
        "ab",
    ])(ctx, phase)
}

fn key_special_characters_roundtrip(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let keys = edge_keys();
    for (i, key) in keys.iter().enumerate() {
        set(&bucket, key, format!("v{i}").as_bytes())?;
    }
    for (i, key) in keys.iter().enumerate() {
        expect_value(&bucket, key, Some(format!("v{i}").as_bytes()))?;
        ensure(bucket.exists(key).or_fail("exists")?, || {
            format!("exists {}", short(key))
        })?;
    }
    Ok(())
}

fn key_max_length_1024_bytes(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let ascii = "k".repeat(1024);
    let multibyte = "é".repeat(512);
    let crab = "🦀".repeat(256);
    let near = format!("{}/", "k".repeat(1023));
    for key in [&ascii, &multibyte, &crab, &near] {
        ensure_eq(key.len(), 1024, "test key length")?;
        set(&bucket, key, key.as_bytes())?;
    }
    for key in [&ascii, &multibyte, &crab, &near] {
        expect_value(&bucket, key, Some(key.as_bytes()))?;
    }
    let listed = list_set(ctx, &bucket)?;
    ensure_eq(
        listed,
        sorted([&ascii, &multibyte, &crab, &near].map(|k| k.as_str())),
        "listed keys",
    )
}

fn key_too_long_rejected(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let key = "k".repeat(1025);
    let long2 = format!("{}é", "k".repeat(1023)); // 1025 bytes, 1024 chars
    for key in [&key, &long2] {
        expect_class(bucket.set(key, b"v"), "invalid-key", "set")?;
        expect_class(bucket.get(key), "invalid-key", "get")?;
        expect_class(bucket.exists(key), "invalid-key", "exists")?;
        expect_class(bucket.delete(key), "invalid-key", "delete")?;
        expect_class(
            atomics::increment(&bucket, key, 1),
            "invalid-key",
            "increment",
        )?;
        expect_class(
            get_many(&bucket, std::slice::from_ref(key)),
            "invalid-key",
            "get-many",
        )?;
        expect_class(
            batch::set_many(&bucket, &[(key.clone(), b"v".to_vec())]),
            "invalid-key",
            "set-many",
        )?;
        expect_class(
            batch::delete_many(&bucket, std::slice::from_ref(key)),
            "invalid-key",
            "delete-many",
        )?;
    }
    ensure_eq(
        list_all(&bucket)?,
        Vec::<String>::new(),
        "keys after rejected writes",
    )
}

fn key_empty_rejected(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    expect_class(bucket.set("", b"v"), "invalid-key", "set")?;
    expect_class(bucket.get(""), "invalid-key", "get")?;
    expect_class(bucket.exists(""), "invalid-key", "exists")?;
    expect_class(bucket.delete(""), "invalid-key", "delete")?;
    expect_class(
        atomics::increment(&bucket, "", 1),
        "invalid-key",
        "increment",
    )?;
    expect_class(
        get_many(&bucket, &["ok".to_string(), String::new()]),
        "invalid-key",
        "get-many",
    )?;
    expect_class(
        batch::set_many(
            &bucket,
            &[
                ("ok".to_string(), b"v".to_vec()),
                (String::new(), b"v".to_vec()),
            ],
        ),
        "invalid-key",
        "set-many",
    )?;
    expect_class(
        batch::delete_many(&bucket, &[String::new()]),
        "invalid-key",
        "delete-many",
    )?;
    ensure_eq(
        list_all(&bucket)?,
        Vec::<String>::new(),
        "keys after rejected writes",
    )
}

fn key_listing_byte_exact(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let keys = edge_keys();
    let entries: Vec<(String, Vec<u8>)> = keys
        .iter()
        .map(|key| (key.clone(), b"v".to_vec()))
        .collect();
    set_all(&bucket, &entries)?;
    let listed = list_set(ctx, &bucket)?;
    ensure_eq(listed, sorted(keys), "listed keys")
}

// ---------- S2 values ----------
