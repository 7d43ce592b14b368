//! S10 Stores and access: unknown, denied, read-only, isolated namespaces.

use super::*;

pub(super) const CASES: &[Case] = &[
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
    case!(
        open_empty_identifier_is_the_default_store,
        ["S10"],
        NONE,
        "open(\"\") (wasmtime's only identifier) opens the host's default store"
    ),
];

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
    #[cfg(not(feature = "draft2-only"))]
    match draft::store::open(&ctx.target.unknown) {
        Err(draft::store::Error::NoSuchStore) => {}
        Err(other) => {
            return Err(format!(
                "draft open unknown: expected no-such-store, got {other:?}"
            ));
        }
        Ok(_) => return Err("draft open unknown: succeeded".to_string()),
    }
    Ok(())
}

fn open_denied_store_is_access_denied(ctx: &Ctx, _: Phase) -> Outcome {
    match store::open(ctx.denied()?) {
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
    #[cfg(not(feature = "draft2-only"))]
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
    let got = get_many(&read_only, &["a", "zz"].map(String::from)).or_fail("get-many")?;
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
        get_many(&peer, &["a", "b"].map(String::from)).or_fail("get-many")?,
        vec![None, None],
        "peer get-many",
    )?;
    batch::delete_many(&peer, &["a", "b", "n"].map(String::from)).or_fail("delete-many peer")?;
    expect_value(&main, "a", Some(b"1"))?;
    expect_value(&main, "n", Some(b"10"))?;
    expect_value(&peer, "n", None)
}

// ---------- S11 errors ----------

/// Components written for wasmtime's keyvalue host open `""`, the only identifier it knows.
/// The runner configures `default` as the store under test, so `""` must reach its data.
fn open_empty_identifier_is_the_default_store(ctx: &Ctx, _: Phase) -> Outcome {
    let bucket = ctx.open()?;
    set(&bucket, "written-through-the-store", b"seen")?;
    let default = store::open("").or_fail("open(\"\")")?;
    expect_value(&default, "written-through-the-store", Some(b"seen"))?;
    default
        .set("written-through-empty", b"back")
        .or_fail("set through open(\"\")")?;
    expect_value(&bucket, "written-through-empty", Some(b"back"))
}
