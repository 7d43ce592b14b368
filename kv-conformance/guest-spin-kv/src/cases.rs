//! The cases, written once against a `Store` with Spin's calls and an `Error` with Spin's
//! variants: this crate's are `fermyon:spin/key-value@2.0.0`'s, `guest-spin-kv-3` brings
//! blocking ones over Spin 4's async `spin:key-value@3.0.0`. Included by both.

use std::collections::BTreeSet;

use super::{Error, Profile, Store, Target};

pub(crate) type Outcome = Result<(), String>;

pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) rules: &'static [&'static str],
    pub(crate) summary: &'static str,
    pub(crate) run: fn(&Target, &Profile) -> Outcome,
}

pub(crate) const CASES: &[Case] = &[
    Case {
        name: "missing_key_is_none_and_delete_succeeds",
        rules: &["S3"],
        summary: "get of a missing key is none, exists is false, delete succeeds twice",
        run: missing_key,
    },
    Case {
        name: "values_are_bytes",
        rules: &["S2"],
        summary: "empty values, NUL bytes and invalid UTF-8 round-trip; an empty value exists",
        run: values_are_bytes,
    },
    Case {
        name: "overwrite_and_delete",
        rules: &["S4"],
        summary: "set replaces the value, delete removes it, each seen by the next call",
        run: overwrite_and_delete,
    },
    Case {
        name: "keys_are_opaque_up_to_1024_bytes",
        rules: &["S1"],
        summary: "keys of 1 and 1024 bytes, Unicode, spaces and path-like keys round-trip exactly and are listed as written",
        run: keys_are_opaque,
    },
    Case {
        name: "invalid_keys_are_refused",
        rules: &["S1", "S11"],
        summary: "the empty key and a 1025-byte key fail with other(\"invalid-key: …\") and nothing is written",
        run: invalid_keys,
    },
    Case {
        name: "largest_value_and_one_byte_over",
        rules: &["S2", "S11"],
        summary: "a value of the provider's maximum (at most 1 MiB here) round-trips; one byte over the maximum fails with other(\"value-too-large: …\") and the previous value stays",
        run: largest_value,
    },
    Case {
        name: "get_keys_returns_every_key_once",
        rules: &["S5"],
        summary: "get-keys of 1,100 keys returns each exactly once, and no deleted key",
        run: get_keys_every_key,
    },
    Case {
        name: "stores_are_isolated",
        rules: &["S10"],
        summary: "two labels on one backend share no keys: reads, deletes and get-keys see only their own",
        run: stores_are_isolated,
    },
    Case {
        name: "unknown_and_denied_labels",
        rules: &["S10", "S11"],
        summary: "an unknown label is no-such-store; a label configured with access none is access-denied",
        run: unknown_and_denied,
    },
    Case {
        name: "read_only_store_refuses_writes",
        rules: &["S10"],
        summary: "a read-only label reads, and set and delete are access-denied and change nothing",
        run: read_only,
    },
];

fn open(label: &str) -> Result<Store, String> {
    Store::open(label).map_err(|err| format!("open({label:?}): {}", describe(&err)))
}

fn describe(err: &Error) -> String {
    match err {
        Error::StoreTableFull => "store-table-full".into(),
        Error::NoSuchStore => "no-such-store".into(),
        Error::AccessDenied => "access-denied".into(),
        Error::Other(message) => format!("other({message:?})"),
    }
}

/// `result`, or the failed call described.
fn call<T>(result: Result<T, Error>, what: &str) -> Result<T, String> {
    result.map_err(|err| format!("{what}: {}", describe(&err)))
}

fn ensure(condition: bool, what: impl FnOnce() -> String) -> Outcome {
    if condition { Ok(()) } else { Err(what()) }
}

fn ensure_eq<T: PartialEq + std::fmt::Debug>(actual: T, expected: T, what: &str) -> Outcome {
    ensure(actual == expected, || {
        format!("{what}: expected {expected:?}, got {actual:?}")
    })
}

/// An `other` error whose message starts with `class:` (S11).
fn expect_class<T: std::fmt::Debug>(result: Result<T, Error>, class: &str, what: &str) -> Outcome {
    match result {
        Err(Error::Other(message)) if message.starts_with(&format!("{class}:")) => Ok(()),
        other => Err(format!(
            "{what}: expected other(\"{class}: …\"), got {other:?}"
        )),
    }
}

fn missing_key(target: &Target, _: &Profile) -> Outcome {
    let store = open(&target.store)?;
    ensure_eq(call(store.get("never-written"), "get")?, None, "get")?;
    ensure_eq(
        call(store.exists("never-written"), "exists")?,
        false,
        "exists",
    )?;
    call(store.delete("never-written"), "delete")?;
    call(store.delete("never-written"), "delete again")
}

fn values_are_bytes(target: &Target, _: &Profile) -> Outcome {
    let store = open(&target.store)?;
    let values: [(&str, Vec<u8>); 3] = [
        ("empty", Vec::new()),
        ("nul", vec![0, 0, 1, 0]),
        ("not-utf8", vec![0xff, 0xfe, 0x80, 0xc3]),
    ];
    for (key, value) in &values {
        call(store.set(key, value), key)?;
    }
    for (key, value) in &values {
        ensure_eq(call(store.get(key), key)?, Some(value.clone()), key)?;
    }
    ensure(call(store.exists("empty"), "exists")?, || {
        "an empty value is a value: exists is false".into()
    })
}

fn overwrite_and_delete(target: &Target, _: &Profile) -> Outcome {
    let store = open(&target.store)?;
    call(store.set("k", b"first"), "set")?;
    call(store.set("k", b"second"), "overwrite")?;
    ensure_eq(
        call(store.get("k"), "get")?,
        Some(b"second".to_vec()),
        "after overwrite",
    )?;
    call(store.delete("k"), "delete")?;
    ensure_eq(call(store.get("k"), "get")?, None, "after delete")?;
    ensure_eq(
        call(store.exists("k"), "exists")?,
        false,
        "exists after delete",
    )
}

fn keys_are_opaque(target: &Target, _: &Profile) -> Outcome {
    let store = open(&target.store)?;
    let long = "k".repeat(1024);
    let keys = [
        "a",
        " a",
        "a/",
        "/a",
        "a//b",
        "%2F",
        ".",
        "..",
        "é",
        "e\u{301}",
        "日本語 キー",
        long.as_str(),
    ];
    for (index, key) in keys.iter().enumerate() {
        call(store.set(key, index.to_string().as_bytes()), key)?;
    }
    for (index, key) in keys.iter().enumerate() {
        ensure_eq(
            call(store.get(key), key)?,
            Some(index.to_string().into_bytes()),
            key,
        )?;
    }
    let listed: BTreeSet<String> = call(store.get_keys(), "get-keys")?.into_iter().collect();
    let written: BTreeSet<String> = keys.iter().map(|key| key.to_string()).collect();
    ensure_eq(listed, written, "get-keys")
}

fn invalid_keys(target: &Target, _: &Profile) -> Outcome {
    let store = open(&target.store)?;
    let too_long = "k".repeat(1025);
    expect_class(store.set("", b"v"), "invalid-key", "set of the empty key")?;
    expect_class(store.get(""), "invalid-key", "get of the empty key")?;
    expect_class(
        store.set(&too_long, b"v"),
        "invalid-key",
        "set of a 1025-byte key",
    )?;
    ensure(call(store.get_keys(), "get-keys")?.is_empty(), || {
        "a refused key was written".into()
    })
}

fn largest_value(target: &Target, profile: &Profile) -> Outcome {
    let store = open(&target.store)?;
    let max = usize::try_from(profile.max_value_bytes)
        .unwrap_or(usize::MAX)
        .min(1 << 20);
    let largest: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    call(store.set("big", &largest), "set of the largest value")?;
    ensure(
        call(store.get("big"), "get")?.as_deref() == Some(&largest[..]),
        || format!("the {max}-byte value did not round-trip"),
    )?;
    // One byte over the provider's (or the host's) maximum, whatever the round trip above
    // was capped at: refused, and the value before it stays.
    let limit = usize::try_from(profile.max_value_bytes).map_err(|_| {
        format!(
            "max-value-bytes {} is not addressable",
            profile.max_value_bytes
        )
    })?;
    let over = vec![7u8; limit + 1];
    expect_class(
        store.set("big", &over),
        "value-too-large",
        "one byte over the maximum",
    )?;
    ensure(
        call(store.get("big"), "get")?.as_deref() == Some(&largest[..]),
        || "a refused value replaced the previous one".into(),
    )?;
    Ok(())
}

fn get_keys_every_key(target: &Target, _: &Profile) -> Outcome {
    let store = open(&target.store)?;
    for index in 0..1100 {
        call(store.set(&format!("key-{index:04}"), b"v"), "set")?;
    }
    for index in (0..1100).step_by(10) {
        call(store.delete(&format!("key-{index:04}")), "delete")?;
    }
    let listed = call(store.get_keys(), "get-keys")?;
    let unique: BTreeSet<&String> = listed.iter().collect();
    ensure_eq(listed.len(), unique.len(), "keys listed more than once")?;
    let expected: BTreeSet<String> = (0..1100)
        .filter(|index| index % 10 != 0)
        .map(|index| format!("key-{index:04}"))
        .collect();
    ensure_eq(
        listed.into_iter().collect::<BTreeSet<_>>(),
        expected,
        "get-keys",
    )
}

fn stores_are_isolated(target: &Target, _: &Profile) -> Outcome {
    let store = open(&target.store)?;
    let peer = open(&target.peer)?;
    call(store.set("shared-name", b"mine"), "set")?;
    call(peer.set("shared-name", b"theirs"), "peer set")?;
    call(peer.set("only-peer", b"x"), "peer set")?;
    ensure_eq(
        call(store.get("shared-name"), "get")?,
        Some(b"mine".to_vec()),
        "store's own value",
    )?;
    ensure_eq(call(store.get("only-peer"), "get")?, None, "peer's key")?;
    call(store.delete("shared-name"), "delete")?;
    ensure_eq(
        call(peer.get("shared-name"), "peer get")?,
        Some(b"theirs".to_vec()),
        "peer's value after the store's delete",
    )?;
    ensure_eq(
        call(store.get_keys(), "get-keys")?,
        Vec::<String>::new(),
        "store's keys",
    )?;
    let mut peer_keys = call(peer.get_keys(), "peer get-keys")?;
    peer_keys.sort();
    ensure_eq(
        peer_keys,
        vec!["only-peer".to_string(), "shared-name".to_string()],
        "peer's keys",
    )
}

fn unknown_and_denied(target: &Target, _: &Profile) -> Outcome {
    match Store::open(&target.unknown) {
        Err(Error::NoSuchStore) => {}
        other => {
            return Err(format!(
                "open of an unknown label: expected no-such-store, got {:?}",
                other.map(|_| "a store").map_err(|err| describe(&err))
            ));
        }
    }
    match Store::open(&target.denied) {
        Err(Error::AccessDenied) => Ok(()),
        other => Err(format!(
            "open of a denied label: expected access-denied, got {:?}",
            other.map(|_| "a store").map_err(|err| describe(&err))
        )),
    }
}

fn read_only(target: &Target, _: &Profile) -> Outcome {
    let store = open(&target.store)?;
    call(store.set("k", b"v"), "set")?;
    let reader = open(&target.read_only)?;
    ensure_eq(
        call(reader.get("k"), "read-only get")?,
        Some(b"v".to_vec()),
        "read-only get",
    )?;
    ensure(
        matches!(reader.set("k", b"w"), Err(Error::AccessDenied)),
        || "set on a read-only store was not access-denied".into(),
    )?;
    ensure(
        matches!(reader.delete("k"), Err(Error::AccessDenied)),
        || "delete on a read-only store was not access-denied".into(),
    )?;
    ensure_eq(
        call(store.get("k"), "get")?,
        Some(b"v".to_vec()),
        "after refused writes",
    )
}
