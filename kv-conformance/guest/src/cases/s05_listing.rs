//! S5 Listing: bounded pages, opaque cursors, every key exactly once.

use super::*;

pub(super) const CASES: &[Case] = &[
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
];

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
