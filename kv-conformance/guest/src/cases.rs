//! The cases. Each is small, named for what it checks, and tagged with the rules it covers.

use crate::bindings::exports::wasi_kv::conformance::suite::{Capability, Phase};
use crate::bindings::wasi::keyvalue0_2_0_draft as draft;
use crate::bindings::wasi::keyvalue0_2_0_draft2::atomics::{self, Cas, CasError};
use crate::bindings::wasi::keyvalue0_2_0_draft2::batch;
use crate::bindings::wasi::keyvalue0_2_0_draft2::store::{self, Bucket, Error};
use crate::bindings::wasi_kv::ttl::ttl;
use crate::check::*;

pub struct Case {
    pub name: &'static str,
    pub rules: &'static [&'static str],
    pub summary: &'static str,
    pub needs: &'static [Capability],
    pub workers: u32,
    pub run: fn(&Ctx, Phase) -> Outcome,
}

const NONE: &[Capability] = &[];
const TTL: &[Capability] = &[Capability::Ttl];
const CAS: &[Capability] = &[Capability::Cas];

macro_rules! case {
    ($name:ident, $rules:expr, $needs:expr, $summary:literal) => {
        case!($name, $rules, $needs, 0, $summary)
    };
    ($name:ident, $rules:expr, $needs:expr, $workers:expr, $summary:literal) => {
        Case {
            name: stringify!($name),
            rules: &$rules,
            summary: $summary,
            needs: $needs,
            workers: $workers,
            run: $name,
        }
    };
}

pub const ALL: &[Case] = &[
    // S1 keys
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
    // S2 values
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
    // S3 missing keys
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
    // S4 read your writes
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
    // S5 listing
    case!(
        list_keys_empty_store,
        ["S5"],
        NONE,
        "an empty store lists no keys and no cursor"
    ),
    case!(
        list_keys_pages_cover_all_exactly_once,
        ["S5"],
        NONE,
        "2,500 keys over at least 3 pages of at most 1000, each key once"
    ),
    case!(
        list_keys_excludes_deleted,
        ["S5"],
        NONE,
        "deleted keys are not listed"
    ),
    case!(
        list_keys_with_changes_between_pages,
        ["S5"],
        NONE,
        "writes between pages still end the listing and keep stable keys"
    ),
    case!(
        list_keys_invalid_cursor_rejected,
        ["S5", "S11"],
        NONE,
        "a cursor the host did not issue is invalid-cursor"
    ),
    case!(
        list_keys_cursor_bound_to_store,
        ["S5", "S10"],
        NONE,
        "a cursor from one store is invalid-cursor in another"
    ),
    // S6 increment
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
    // S7 compare-and-swap
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
    // S8 batches
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
    // S9 TTL
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
    // S10 stores and access
    case!(
        open_unknown_store_is_no_such_store,
        ["S10"],
        NONE,
        "open of an unconfigured identifier is no-such-store"
    ),
    case!(
        open_denied_store_is_access_denied,
        ["S10"],
        NONE,
        "open of a store the component may not use is access-denied"
    ),
    case!(
        read_only_store_rejects_writes,
        ["S10"],
        NONE,
        "every write to a read-only store is access-denied and changes nothing"
    ),
    case!(
        read_only_store_reads_see_writes,
        ["S10"],
        NONE,
        "reads through a read-only store see the data written to it"
    ),
    case!(
        isolation_adversarial_keys,
        ["S10"],
        NONE,
        "two stores on one backend never see each other's keys"
    ),
    case!(
        isolation_listing,
        ["S10", "S5"],
        NONE,
        "list-keys of one store never returns another store's keys"
    ),
    case!(
        isolation_counters_and_batches,
        ["S10", "S6", "S8"],
        NONE,
        "increments and batch calls in one store leave the other untouched"
    ),
    // S11 errors
    case!(
        error_classes_are_stable,
        ["S11"],
        NONE,
        "every error a guest can provoke starts with its stable class"
    ),
    // The older draft interface, linked in the same component
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
];

// ---------- helpers ----------

fn set(bucket: &Bucket, key: &str, value: &[u8]) -> Outcome {
    bucket
        .set(key, value)
        .or_fail(&format!("set {}", short(&key)))
}

fn get(bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, String> {
    bucket.get(key).or_fail(&format!("get {}", short(&key)))
}

fn expect_value(bucket: &Bucket, key: &str, expected: Option<&[u8]>) -> Outcome {
    let actual = get(bucket, key)?;
    ensure_eq(
        actual.as_deref(),
        expected,
        &format!("value of {}", short(&key)),
    )
}

fn set_all(bucket: &Bucket, entries: &[(String, Vec<u8>)]) -> Outcome {
    for chunk in entries.chunks(500) {
        batch::set_many(bucket, chunk).or_fail("set-many")?;
    }
    Ok(())
}

fn keys_numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i:05}")).collect()
}

fn edge_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "a",
        " a",
        "a ",
        "a/",
        "/a",
        "a//b",
        "a/b",
        "/",
        "//",
        "%2F",
        "%2f",
        "%41",
        "A",
        ".",
        "..",
        "./a",
        "a/./b",
        "a/../b",
        "'",
        "\"",
        "#",
        "?",
        "\\",
        "+",
        "a+b",
        "a b",
        "*",
        "[a]",
        "a?b",
        "a*",
        "{}",
        "~",
        ";",
        ":",
        "@",
        "&",
        "=",
        "$x",
        "!",
        ",",
        "<>",
        "|",
        "`",
        "^",
        "\t",
        "a\nb",
        "a\rb",
        "\u{0}",
        "a\u{0}b",
        "\u{7f}",
        "é",
        "e\u{301}",
        "日本語",
        "🦀",
        "a\u{200b}b",
        "__",
        "-",
        "_a",
        "key:with:colons",
        "CON",
        "nul",
    ]
    .iter()
    .map(|key| key.to_string())
    .collect();
    keys.push("x".repeat(1024));
    keys.push("🦀".repeat(256));
    keys
}

// ---------- S1 keys ----------

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
            batch::get_many(&bucket, std::slice::from_ref(key)),
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
        batch::get_many(&bucket, &["ok".to_string(), String::new()]),
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

fn roundtrip(ctx: &Ctx, value: Vec<u8>) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "value", &value)?;
    expect_value(&bucket, "value", Some(&value))?;
    let many = batch::get_many(&bucket, &["value".to_string()]).or_fail("get-many")?;
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

fn patterned(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
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
    let got = batch::get_many(&bucket, &keys).or_fail("get-many")?;
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
            let got = batch::get_many(&bucket, &keys).or_fail("get-many")?;
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

fn list_keys_empty_store(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let page = bucket.list_keys(None).or_fail("list-keys")?;
    ensure_eq(page.keys, Vec::<String>::new(), "keys")?;
    ensure_eq(page.cursor, None, "cursor")
}

fn list_keys_pages_cover_all_exactly_once(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let keys = keys_numbered("key-", 2500);
    let entries: Vec<(String, Vec<u8>)> = keys
        .iter()
        .map(|key| (key.clone(), b"v".to_vec()))
        .collect();
    set_all(&bucket, &entries)?;
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    let mut listed = Vec::new();
    loop {
        let page = bucket.list_keys(cursor.as_deref()).or_fail("list-keys")?;
        ensure(page.keys.len() <= 1000, || {
            format!("page of {} keys", page.keys.len())
        })?;
        pages += 1;
        listed.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        ensure(pages < 1000, || "listing does not end".to_string())?;
    }
    ensure(pages >= 3, || {
        format!("2,500 keys came in {pages} pages; pages hold at most 1000")
    })?;
    let total = listed.len();
    listed.sort();
    listed.dedup();
    if !ctx.profile.list_may_repeat {
        ensure_eq(total, 2500, "keys listed in total (no duplicates declared)")?;
    }
    ensure_eq(listed, keys, "distinct keys listed")
}

fn list_keys_excludes_deleted(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    for key in ["a", "b", "c", "d"] {
        set(&bucket, key, b"v")?;
    }
    bucket.delete("b").or_fail("delete")?;
    batch::delete_many(&bucket, &["d".to_string()]).or_fail("delete-many")?;
    ensure_eq(list_set(ctx, &bucket)?, sorted(["a", "c"]), "listed keys")
}

fn list_keys_with_changes_between_pages(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let stable = keys_numbered("stable-", 1500);
    let doomed = keys_numbered("doomed-", 500);
    let mut entries: Vec<(String, Vec<u8>)> = stable
        .iter()
        .map(|key| (key.clone(), b"v".to_vec()))
        .collect();
    entries.extend(doomed.iter().map(|key| (key.clone(), b"v".to_vec())));
    set_all(&bucket, &entries)?;
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    for page_number in 0.. {
        ensure(page_number < 1000, || "listing does not end".to_string())?;
        let page = bucket.list_keys(cursor.as_deref()).or_fail("list-keys")?;
        listed.extend(page.keys);
        if page_number == 0 {
            // Change the store under the listing: delete some keys, add others.
            batch::delete_many(&bucket, &doomed).or_fail("delete-many")?;
            let added: Vec<(String, Vec<u8>)> = keys_numbered("added-", 300)
                .into_iter()
                .map(|key| (key, b"v".to_vec()))
                .collect();
            set_all(&bucket, &added)?;
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    listed.sort();
    listed.dedup();
    let missing: Vec<&String> = stable
        .iter()
        .filter(|key| listed.binary_search(key).is_err())
        .collect();
    ensure(missing.is_empty(), || {
        format!(
            "{} stable keys were not listed, e.g. {:?}",
            missing.len(),
            missing.first()
        )
    })?;
    let foreign: Vec<&String> = listed
        .iter()
        .filter(|key| {
            !(key.starts_with("stable-") || key.starts_with("doomed-") || key.starts_with("added-"))
        })
        .collect();
    ensure(foreign.is_empty(), || {
        format!("unexpected keys listed: {}", short(&foreign))
    })
}

fn list_keys_invalid_cursor_rejected(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let entries: Vec<(String, Vec<u8>)> = keys_numbered("k", 1200)
        .into_iter()
        .map(|key| (key, b"v".to_vec()))
        .collect();
    set_all(&bucket, &entries)?;
    for forged in ["not-a-cursor", "0", "12345", "", "k00010", "a.b"] {
        expect_class(
            bucket.list_keys(Some(forged)),
            "invalid-cursor",
            &format!("list-keys from {forged:?}"),
        )?;
    }
    let page = bucket.list_keys(None).or_fail("list-keys")?;
    let cursor = page
        .cursor
        .ok_or("1,200 keys fit in one page; pages hold at most 1000")?;
    let tampered = format!("{cursor}x");
    expect_class(
        bucket.list_keys(Some(&tampered)),
        "invalid-cursor",
        "list-keys from a tampered cursor",
    )?;
    bucket
        .list_keys(Some(&cursor))
        .or_fail("list-keys from the issued cursor")?;
    Ok(())
}

fn list_keys_cursor_bound_to_store(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    let peer = ctx.open_peer()?;
    let entries: Vec<(String, Vec<u8>)> = keys_numbered("k", 1200)
        .into_iter()
        .map(|key| (key, b"v".to_vec()))
        .collect();
    set_all(&bucket, &entries)?;
    set_all(&peer, &entries)?;
    let page = bucket.list_keys(None).or_fail("list-keys")?;
    let cursor = page.cursor.ok_or("expected a cursor after 1000 keys")?;
    expect_class(
        peer.list_keys(Some(&cursor)),
        "invalid-cursor",
        "another store's cursor",
    )
}

// ---------- S6 increment ----------

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
    atomics::increment(&bucket, "big", i64::MAX).or_fail("increment")?;
    expect_value(&bucket, "big", Some(b"9223372036854775807"))
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

fn get_many_keeps_order_and_duplicates(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "a", b"1")?;
    set(&bucket, "b", b"2")?;
    let keys = ["b", "a", "missing", "b", "a", "b"].map(String::from);
    let got = batch::get_many(&bucket, &keys).or_fail("get-many")?;
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
        batch::get_many(&bucket, &[]).or_fail("get-many")?,
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
    let got = batch::get_many(&bucket, &keys).or_fail("get-many of 1,001 keys")?;
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
    expect_class(
        batch::get_many(&bucket, &keys),
        "batch-too-large",
        "get-many",
    )?;
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
    expect_value(&bucket, "k", Some(b"v"))?;
    sleep_ms(2500);
    expect_value(&bucket, "k", None)?;
    ensure_eq(
        bucket.exists("k").or_fail("exists")?,
        false,
        "exists after expiry",
    )?;
    ensure_eq(
        batch::get_many(&bucket, &["k".to_string()]).or_fail("get-many")?,
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

fn open_unknown_store_is_no_such_store(ctx: &Ctx, _: Phase) -> Outcome {
    match store::open(&ctx.target.unknown) {
        Err(Error::NoSuchStore) => {}
        Err(other) => {
            return Err(format!(
                "open unknown: expected no-such-store, got {other:?}"
            ));
        }
        Ok(_) => return Err("open unknown: succeeded".to_string()),
    }
    match draft::store::open(&ctx.target.unknown) {
        Err(draft::store::Error::NoSuchStore) => Ok(()),
        Err(other) => Err(format!(
            "draft open unknown: expected no-such-store, got {other:?}"
        )),
        Ok(_) => Err("draft open unknown: succeeded".to_string()),
    }
}

fn open_denied_store_is_access_denied(ctx: &Ctx, _: Phase) -> Outcome {
    match store::open(&ctx.target.denied) {
        Err(Error::AccessDenied) => Ok(()),
        Err(other) => Err(format!("expected access-denied, got {other:?}")),
        Ok(_) => Err("open of a denied store succeeded".to_string()),
    }
}

fn read_only_store_rejects_writes(ctx: &Ctx, _: Phase) -> Outcome {
    let writable = ctx.open()?;
    set(&writable, "k", b"original")?;
    let read_only = ctx.open_read_only()?;
    expect_access_denied(read_only.set("k", b"x"), "set")?;
    expect_access_denied(read_only.set("new", b"x"), "set of a new key")?;
    expect_access_denied(read_only.delete("k"), "delete")?;
    expect_access_denied(atomics::increment(&read_only, "n", 1), "increment")?;
    expect_access_denied(
        batch::set_many(&read_only, &[("k".to_string(), b"x".to_vec())]),
        "set-many",
    )?;
    expect_access_denied(
        batch::delete_many(&read_only, &["k".to_string()]),
        "delete-many",
    )?;
    if ctx.profile.ttl {
        expect_access_denied(
            ttl::set_with_ttl(&read_only, "k", b"x", 60_000),
            "set-with-ttl",
        )?;
    }
    if ctx.profile.cas {
        let cas = Cas::new(&read_only, "k").or_fail("cas new on a read-only store")?;
        match atomics::swap(cas, b"x") {
            Err(CasError::StoreError(Error::AccessDenied)) => {}
            other => {
                return Err(format!(
                    "swap: expected store-error(access-denied), got {}",
                    short(&other.map_err(|e| format!("{e:?}")))
                ));
            }
        }
    }
    expect_value(&writable, "k", Some(b"original"))?;
    ensure_eq(
        list_all(&writable)?,
        vec!["k".to_string()],
        "keys after rejected writes",
    )
}

fn read_only_store_reads_see_writes(ctx: &Ctx, _: Phase) -> Outcome {
    let writable = ctx.open()?;
    set(&writable, "a", b"1")?;
    set(&writable, "b", b"")?;
    let read_only = ctx.open_read_only()?;
    expect_value(&read_only, "a", Some(b"1"))?;
    ensure(read_only.exists("b").or_fail("exists")?, || {
        "exists through read-only".to_string()
    })?;
    let got = batch::get_many(&read_only, &["a", "zz"].map(String::from)).or_fail("get-many")?;
    ensure_eq(
        got,
        vec![Some(("a".to_string(), b"1".to_vec())), None],
        "get-many",
    )?;
    ensure_eq(
        list_set(ctx, &read_only)?,
        sorted(["a", "b"]),
        "listing through read-only",
    )
}

fn adversarial_keys() -> Vec<String> {
    let mut keys = edge_keys();
    keys.extend(
        [
            "*", "**", "[", "]", "[a-z]*", "\\*", "?*", "..", "../", "../peer", "peer", "store",
            ":", "::", "{a}", "%", "%%", "%s",
        ]
        .iter()
        .map(|key| key.to_string()),
    );
    keys.sort();
    keys.dedup();
    keys
}

fn isolation_adversarial_keys(ctx: &Ctx, _: Phase) -> Outcome {
    let main = ctx.open()?;
    let peer = ctx.open_peer()?;
    let keys = adversarial_keys();
    for key in &keys {
        set(&main, key, b"main")?;
    }
    for key in &keys {
        expect_value(&peer, key, None)?;
        ensure_eq(
            peer.exists(key).or_fail("exists")?,
            false,
            &format!("exists in peer {}", short(key)),
        )?;
        peer.delete(key).or_fail("delete in peer")?;
    }
    for key in &keys {
        expect_value(&main, key, Some(b"main"))?;
        set(&peer, key, b"peer")?;
    }
    for key in &keys {
        expect_value(&main, key, Some(b"main"))?;
        expect_value(&peer, key, Some(b"peer"))?;
    }
    Ok(())
}

fn isolation_listing(ctx: &Ctx, _: Phase) -> Outcome {
    let main = ctx.open()?;
    let peer = ctx.open_peer()?;
    let keys = adversarial_keys();
    let entries: Vec<(String, Vec<u8>)> = keys
        .iter()
        .map(|key| (key.clone(), b"m".to_vec()))
        .collect();
    set_all(&main, &entries)?;
    ensure_eq(
        list_set(ctx, &peer)?,
        Vec::<String>::new(),
        "peer listing while only main has keys",
    )?;
    set(&peer, "only-in-peer", b"p")?;
    ensure_eq(
        list_set(ctx, &peer)?,
        vec!["only-in-peer".to_string()],
        "peer listing",
    )?;
    ensure_eq(list_set(ctx, &main)?, keys, "main listing")
}

fn isolation_counters_and_batches(ctx: &Ctx, _: Phase) -> Outcome {
    let main = ctx.open()?;
    let peer = ctx.open_peer()?;
    atomics::increment(&main, "n", 10).or_fail("increment main")?;
    ensure_eq(
        atomics::increment(&peer, "n", 1).or_fail("increment peer")?,
        1,
        "peer counter",
    )?;
    expect_value(&main, "n", Some(b"10"))?;
    batch::set_many(
        &main,
        &[
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ],
    )
    .or_fail("set-many")?;
    ensure_eq(
        batch::get_many(&peer, &["a", "b"].map(String::from)).or_fail("get-many")?,
        vec![None, None],
        "peer get-many",
    )?;
    batch::delete_many(&peer, &["a", "b", "n"].map(String::from)).or_fail("delete-many peer")?;
    expect_value(&main, "a", Some(b"1"))?;
    expect_value(&main, "n", Some(b"10"))?;
    expect_value(&peer, "n", None)
}

// ---------- S11 errors ----------

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
        batch::get_many(&bucket, &keys),
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
