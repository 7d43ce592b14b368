//! The conformance cases a `wasi:keyvalue@0.2.0-draft` host can run, as a `wasi:cli` command
//! that imports nothing else: for hosts that link only that version, such as wasmtime's
//! `wasmtime run -S keyvalue`.
//!
//! ```text
//! kv-conformance-portable-draft.wasm [--store NAME] [--case TEXT]...
//! ```
//!
//! The store defaults to `""`, the only identifier wasmtime knows. Every key in it is deleted
//! before each case. One line per case, then `N passed, N failed, N skipped`; exit 1 if any
//! case failed. The rules are those of the draft2 suite (docs/semantics.md) that the draft
//! interface can express: it has no CAS, and its cursor and increment are `u64`.

mod bindings {
    wit_bindgen::generate!({
        path: [
            "../../wit/keyvalue-spin",
            "../../wit/keyvalue-draft",
            "../../wit/ttl",
            "../../wit/http-handler",
            "../../wit/interop",
        ],
        world: "wasi-kv:interop/draft-command@0.1.0",
        generate_all,
    });
}

use bindings::wasi::keyvalue0_2_0_draft::{atomics, batch, store};
use store::Bucket;

type Outcome = Result<(), String>;

struct Case {
    name: &'static str,
    rules: &'static str,
    run: fn(&Bucket) -> Outcome,
}

macro_rules! cases {
    ($($name:ident: $rules:literal),* $(,)?) => {
        const CASES: &[Case] = &[$(Case { name: stringify!($name), rules: $rules, run: $name }),*];
    };
}

cases! {
    get_missing_is_none: "S3",
    exists_missing_is_false: "S3",
    delete_missing_succeeds: "S3",
    set_then_get_roundtrip: "S2",
    value_empty_is_not_missing: "S2 S3",
    value_all_byte_values_roundtrip: "S2",
    value_256_kib_roundtrip: "S2",
    value_overwrite_replaces: "S2",
    keys_are_opaque_and_distinct: "S1",
    key_max_length_1024_bytes: "S1",
    get_many_keeps_order_duplicates_and_missing: "S3 S8",
    set_many_and_delete_many: "S8",
    set_many_duplicate_keys_last_wins: "S8",
    list_keys_empty_store: "S5",
    list_keys_pages_cover_all_exactly_once: "S5",
    list_keys_excludes_deleted: "S5",
    increment_missing_starts_at_delta: "S6",
    increment_accumulates: "S6",
    increment_stored_as_ascii_decimal: "S6",
    increment_after_set_decimal: "S6",
    increment_not_an_integer_rejected: "S6 S11",
    increment_below_zero_is_rejected_unchanged: "S6 S11",
}

fn fail<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |err| format!("{what}: unexpected error {err:?}")
}

fn ensure(condition: bool, what: impl FnOnce() -> String) -> Outcome {
    if condition { Ok(()) } else { Err(what()) }
}

fn expect(bucket: &Bucket, key: &str, expected: Option<&[u8]>) -> Outcome {
    let got = bucket.get(key).map_err(fail("get"))?;
    ensure(got.as_deref() == expected, || {
        format!("get {key:?}: expected {expected:?}, got {got:?}")
    })
}

fn get_missing_is_none(bucket: &Bucket) -> Outcome {
    expect(bucket, "missing", None)
}

fn exists_missing_is_false(bucket: &Bucket) -> Outcome {
    let exists = bucket.exists("missing").map_err(fail("exists"))?;
    ensure(!exists, || "exists of a missing key is true".to_string())
}

fn delete_missing_succeeds(bucket: &Bucket) -> Outcome {
    bucket.delete("missing").map_err(fail("delete"))?;
    bucket.delete("missing").map_err(fail("delete again"))
}

fn set_then_get_roundtrip(bucket: &Bucket) -> Outcome {
    bucket.set("k", b"value").map_err(fail("set"))?;
    expect(bucket, "k", Some(b"value"))?;
    let exists = bucket.exists("k").map_err(fail("exists"))?;
    ensure(exists, || "exists after set is false".to_string())
}

fn value_empty_is_not_missing(bucket: &Bucket) -> Outcome {
    bucket.set("empty", b"").map_err(fail("set"))?;
    expect(bucket, "empty", Some(b""))
}

fn value_all_byte_values_roundtrip(bucket: &Bucket) -> Outcome {
    let value: Vec<u8> = (0..=255).collect();
    bucket.set("bytes", &value).map_err(fail("set"))?;
    expect(bucket, "bytes", Some(&value))
}

fn value_256_kib_roundtrip(bucket: &Bucket) -> Outcome {
    let value: Vec<u8> = (0..256 * 1024)
        .map(|i: usize| (i * 31 % 251) as u8)
        .collect();
    bucket.set("big", &value).map_err(fail("set"))?;
    expect(bucket, "big", Some(&value))
}

fn value_overwrite_replaces(bucket: &Bucket) -> Outcome {
    bucket
        .set("k", b"a longer first value")
        .map_err(fail("set"))?;
    bucket.set("k", b"short").map_err(fail("set again"))?;
    expect(bucket, "k", Some(b"short"))
}

fn keys_are_opaque_and_distinct(bucket: &Bucket) -> Outcome {
    let keys = [
        "a",
        " a",
        "a/",
        "/a",
        "a//b",
        "a/b",
        "%2F",
        ".",
        "..",
        "é",
        "e\u{301}",
        "'\"#?\\+*",
    ];
    for (i, key) in keys.iter().enumerate() {
        bucket
            .set(key, i.to_string().as_bytes())
            .map_err(fail("set"))?;
    }
    for (i, key) in keys.iter().enumerate() {
        expect(bucket, key, Some(i.to_string().as_bytes()))?;
    }
    Ok(())
}

fn key_max_length_1024_bytes(bucket: &Bucket) -> Outcome {
    let key = "k".repeat(1024);
    bucket.set(&key, b"long").map_err(fail("set"))?;
    expect(bucket, &key, Some(b"long"))
}

fn get_many_keeps_order_duplicates_and_missing(bucket: &Bucket) -> Outcome {
    bucket.set("a", b"1").map_err(fail("set"))?;
    bucket.set("b", b"2").map_err(fail("set"))?;
    let keys: Vec<String> = ["b", "missing", "a", "b"].map(String::from).to_vec();
    let got = batch::get_many(bucket, &keys).map_err(fail("get-many"))?;
    let expected = vec![
        Some(("b".to_string(), b"2".to_vec())),
        None,
        Some(("a".to_string(), b"1".to_vec())),
        Some(("b".to_string(), b"2".to_vec())),
    ];
    ensure(got == expected, || {
        format!("get-many: expected {expected:?}, got {got:?}")
    })
}

fn set_many_and_delete_many(bucket: &Bucket) -> Outcome {
    let entries: Vec<(String, Vec<u8>)> = (0..50)
        .map(|i| (format!("k{i}"), i.to_string().into_bytes()))
        .collect();
    batch::set_many(bucket, &entries).map_err(fail("set-many"))?;
    for (key, value) in &entries {
        expect(bucket, key, Some(value))?;
    }
    let keys: Vec<String> = entries.iter().map(|(key, _)| key.clone()).collect();
    batch::delete_many(bucket, &keys).map_err(fail("delete-many"))?;
    for key in &keys {
        expect(bucket, key, None)?;
    }
    Ok(())
}

fn set_many_duplicate_keys_last_wins(bucket: &Bucket) -> Outcome {
    let entries = vec![
        ("k".to_string(), b"first".to_vec()),
        ("k".to_string(), b"last".to_vec()),
    ];
    batch::set_many(bucket, &entries).map_err(fail("set-many"))?;
    expect(bucket, "k", Some(b"last"))
}

fn list_all(bucket: &Bucket) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let page = bucket.list_keys(cursor).map_err(fail("list-keys"))?;
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
    Err("list-keys did not end after 10,000 pages".to_string())
}

fn list_keys_empty_store(bucket: &Bucket) -> Outcome {
    let keys = list_all(bucket)?;
    ensure(keys.is_empty(), || {
        format!("an empty store listed {keys:?}")
    })
}

fn list_keys_pages_cover_all_exactly_once(bucket: &Bucket) -> Outcome {
    let entries: Vec<(String, Vec<u8>)> = (0..2500)
        .map(|i| (format!("key-{i:05}"), Vec::new()))
        .collect();
    for chunk in entries.chunks(500) {
        batch::set_many(bucket, chunk).map_err(fail("set-many"))?;
    }
    let mut keys = list_all(bucket)?;
    let listed = keys.len();
    keys.sort();
    keys.dedup();
    ensure(listed == 2500 && keys.len() == 2500, || {
        format!("2,500 keys listed as {listed} ({} distinct)", keys.len())
    })
}

fn list_keys_excludes_deleted(bucket: &Bucket) -> Outcome {
    bucket.set("kept", b"").map_err(fail("set"))?;
    bucket.set("gone", b"").map_err(fail("set"))?;
    bucket.delete("gone").map_err(fail("delete"))?;
    let keys = list_all(bucket)?;
    ensure(keys == ["kept"], || format!("listed {keys:?}"))
}

fn increment_missing_starts_at_delta(bucket: &Bucket) -> Outcome {
    let total = atomics::increment(bucket, "n", 5).map_err(fail("increment"))?;
    ensure(total == 5, || {
        format!("increment of a missing key returned {total}")
    })
}

fn increment_accumulates(bucket: &Bucket) -> Outcome {
    for _ in 0..10 {
        atomics::increment(bucket, "n", 3).map_err(fail("increment"))?;
    }
    let total = atomics::increment(bucket, "n", 0).map_err(fail("increment"))?;
    ensure(total == 30, || format!("10 increments of 3 gave {total}"))
}

fn increment_stored_as_ascii_decimal(bucket: &Bucket) -> Outcome {
    atomics::increment(bucket, "n", 42).map_err(fail("increment"))?;
    expect(bucket, "n", Some(b"42"))
}

fn increment_after_set_decimal(bucket: &Bucket) -> Outcome {
    bucket.set("n", b"41").map_err(fail("set"))?;
    let total = atomics::increment(bucket, "n", 1).map_err(fail("increment"))?;
    ensure(total == 42, || {
        format!("set 41 then increment 1 gave {total}")
    })
}

fn increment_not_an_integer_rejected(bucket: &Bucket) -> Outcome {
    bucket.set("text", b"abc").map_err(fail("set"))?;
    match atomics::increment(bucket, "text", 1) {
        Err(store::Error::Other(message)) if message.starts_with("not-an-integer:") => {
            expect(bucket, "text", Some(b"abc"))
        }
        other => Err(format!(
            "increment of \"abc\": expected not-an-integer, got {other:?}"
        )),
    }
}

/// The u64 increment cannot return a negative total, so it must not write one either: a
/// guest that retries on error would move the counter each time.
fn increment_below_zero_is_rejected_unchanged(bucket: &Bucket) -> Outcome {
    bucket.set("neg", b"-5").map_err(fail("set"))?;
    match atomics::increment(bucket, "neg", 1) {
        Err(store::Error::Other(message))
            if message.starts_with("overflow:") || message.starts_with("not-an-integer:") =>
        {
            expect(bucket, "neg", Some(b"-5"))
        }
        other => Err(format!(
            "u64 increment of \"-5\" by 1: expected overflow, got {other:?}"
        )),
    }
}

fn clear(bucket: &Bucket) -> Outcome {
    let keys = list_all(bucket)?;
    for chunk in keys.chunks(1000) {
        batch::delete_many(bucket, chunk).map_err(fail("clear"))?;
    }
    Ok(())
}

fn main() {
    let mut store_name = String::new();
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--store", Some(name)) => store_name = name,
            ("--case", Some(text)) => filters.push(text),
            _ => {
                eprintln!("usage: kv-conformance-portable-draft [--store NAME] [--case TEXT]...");
                std::process::exit(2);
            }
        }
    }
    let bucket = match store::open(&store_name) {
        Ok(bucket) => bucket,
        Err(err) => {
            println!("FAIL open {store_name:?}: {err:?}");
            println!("0 passed, 1 failed, 0 skipped");
            std::process::exit(1);
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for case in CASES {
        if !filters.is_empty() && !filters.iter().any(|text| case.name.contains(text.as_str())) {
            continue;
        }
        match clear(&bucket).and_then(|()| (case.run)(&bucket)) {
            Ok(()) => {
                println!("ok   {} [{}]", case.name, case.rules);
                passed += 1;
            }
            Err(reason) => {
                println!("FAIL {} [{}]: {reason}", case.name, case.rules);
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed, 0 skipped");
    std::process::exit(if failed > 0 || passed == 0 { 1 } else { 0 });
}
