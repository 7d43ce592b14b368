//! Provider-level tests against Amazon DynamoDB Local, started on a free loopback port with
//! static test credentials. Without DynamoDB Local (or Java) they are ignored, unless
//! `KV_REQUIRE` names `dynamodb`, where that is a failure.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use kv_aws::dynamodb::store::{
    ATTR_EXPIRES, ATTR_JOURNAL, ATTR_KEY, ATTR_NAMESPACE, ATTR_UNTIL, ATTR_VALUE, ATTR_VERSION,
    MAX_ITEM_BYTES, MAX_VALUE_BYTES, item_bytes,
};
use kv_aws::{DynamoConfig, DynamoProvider};
use kv_core::watch::{Change, ChangeFeed, Changes, Logged, Position, WatchSupport};
use kv_core::{Access, ErrorKind, KvStore, Limits, Provider, Stores, SwapOutcome};
use kv_testkit::emulator::DynamoDbLocal;
use kv_testkit::faults::{Fault, FaultProxy, Protocol};
use kv_testkit::provider_tests::{self, TestResult, check};
use libtest_mimic::Failed;

const TABLE: &str = "wasikv-provider-tests";

fn config(local: &DynamoDbLocal) -> DynamoConfig {
    let url = format!(
        "t=dynamodb://{TABLE}?region=us-east-1&endpoint={}&access_key_id=test&secret_access_key=test&max_attempts=1",
        local.endpoint()
    );
    let (_, spec) = kv_core::config::parse_short_form(&url).expect("url parses");
    DynamoConfig::from_spec(&spec).expect("config parses")
}

async fn provider(local: &DynamoDbLocal) -> Result<Arc<DynamoProvider>, Failed> {
    let client = kv_aws::dynamodb::client::build_client(&config(local)).await;
    kv_aws::dynamodb::client::ensure_table(&client, TABLE).await?;
    Ok(Arc::new(DynamoProvider::new(client, TABLE)))
}

fn limits() -> Limits {
    provider_tests::limits(Duration::from_secs(5), 3)
}

async fn store(provider: Arc<DynamoProvider>, namespace: &str) -> Result<KvStore, Failed> {
    let stores = Stores::builder(limits())
        .store("s", provider, namespace, Access::ReadWrite)
        .build();
    Ok(stores.open("s").await?)
}

async fn batches_of_a_thousand(local: DynamoDbLocal) -> TestResult {
    let store = store(provider(&local).await?, "batches").await?;
    let entries: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|i| (format!("k{i:04}"), format!("v{i}").into_bytes()))
        .collect();
    store.set_many(entries).await?;
    // 1000 keys with duplicates and misses: BatchGetItem rejects duplicates, the provider dedupes.
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("k{:04}", (i * 7) % 1100))
        .collect();
    let values = store.get_many(&keys).await?;
    check(values.len() == 1000, "length kept")?;
    for (key, value) in keys.iter().zip(&values) {
        let index: usize = key[1..].parse().unwrap_or(usize::MAX);
        let expected = (index < 1000).then(|| format!("v{index}").into_bytes());
        check(value == &expected, format!("{key}: {value:?}"))?;
    }
    store.delete_many(&keys).await?;
    check(store.get("k0000").await?.is_none(), "deleted")?;
    Ok(())
}

async fn value_at_the_exact_maximum(local: DynamoDbLocal) -> TestResult {
    let provider = provider(&local).await?;
    // The worst case the declared maximum must cover: a 256-byte namespace and a 1024-byte key.
    let namespace = "n".repeat(256);
    let store = store(provider.clone(), &namespace).await?;
    let key = "k".repeat(1024);
    check(
        store.max_value_bytes() == MAX_VALUE_BYTES,
        "declared maximum is the effective one",
    )?;
    store.set(&key, vec![7u8; MAX_VALUE_BYTES]).await?;
    check(
        store.get(&key).await?.map(|v| v.len()) == Some(MAX_VALUE_BYTES),
        "maximum round-trips",
    )?;
    store
        .set_with_ttl(&key, vec![8u8; MAX_VALUE_BYTES], 60_000)
        .await?;
    let err = store
        .set(&key, vec![9u8; MAX_VALUE_BYTES + 1])
        .await
        .expect_err("one byte over");
    check(err.kind() == ErrorKind::ValueTooLarge, err.to_string())?;
    check(
        store.get(&key).await?.map(|v| v[0]) == Some(8),
        "the previous value stays",
    )?;
    // Past the host check, DynamoDB's own 400 KB rejection is also value-too-large.
    let bucket = provider.open(&namespace).await?;
    let err = bucket
        .set(&key, vec![1u8; 409_600].into())
        .await
        .expect_err("DynamoDB rejects it");
    check(err.kind() == ErrorKind::ValueTooLarge, err.to_string())?;
    Ok(())
}

/// Writes `key` of `namespace` as an item expired 10 s ago for every reader (`until`) and
/// removable by DynamoDB's TTL only in an hour (`exp`): DynamoDB Local's sweeper, which removes
/// an item 18-30 s after its `exp`, cannot take it during a test; only the test's own
/// DeleteItem does.
async fn put_expired(
    provider: &DynamoProvider,
    namespace: &str,
    key: &str,
    value: &[u8],
) -> TestResult {
    let past = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        - 10;
    provider
        .client()
        .put_item()
        .table_name(TABLE)
        .item(ATTR_NAMESPACE, AttributeValue::S(namespace.into()))
        .item(ATTR_KEY, AttributeValue::S(key.into()))
        .item(ATTR_VALUE, AttributeValue::B(Blob::new(value.to_vec())))
        .item(ATTR_VERSION, AttributeValue::S("v1".into()))
        .item(ATTR_UNTIL, AttributeValue::N((past * 1000).to_string()))
        .item(ATTR_EXPIRES, AttributeValue::N((past + 3600).to_string()))
        .send()
        .await
        .map_err(|err| Failed::from(format!("{err:?}")))?;
    Ok(())
}

/// The stored item as it is, attributes by name.
async fn raw_item(
    provider: &DynamoProvider,
    namespace: &str,
    key: &str,
) -> Result<HashMap<String, AttributeValue>, Failed> {
    provider
        .client()
        .get_item()
        .table_name(TABLE)
        .key(ATTR_NAMESPACE, AttributeValue::S(namespace.into()))
        .key(ATTR_KEY, AttributeValue::S(key.into()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|err| Failed::from(format!("{err:?}")))?
        .item
        .ok_or_else(|| Failed::from(format!("{key:.16}…: no item")))
}

/// The journal of increments and swaps is stored beside the value, so it must fit beside the
/// largest value on the longest key and namespace: 200 swaps of values at the declared maximum
/// all succeed, and so do 200 increments with 20-character totals (a full journal of the
/// longest entries), followed by swaps of the largest value over that journal.
async fn journal_fits_beside_the_largest_value(local: DynamoDbLocal) -> TestResult {
    let provider = provider(&local).await?;
    let namespace = "j".repeat(256);
    let store = store(provider.clone(), &namespace).await?;
    let largest = store.max_value_bytes();
    check(largest >= 256 * 1024, format!("declared maximum {largest}"))?;
    let value = |round: usize| vec![(round % 251) as u8; largest];

    // Swaps of the largest value, each a new request, each recorded in the journal.
    let key = format!("{:s<1024}", "swapped");
    store.set(&key, value(0)).await?;
    for round in 1..=200 {
        let current = store.read_versioned(&key).await?;
        let outcome = store
            .swap(&key, &current.version, value(round))
            .await
            .map_err(|err| format!("swap {round} of a {largest}-byte value: {err}"))?;
        check(
            outcome == SwapOutcome::Swapped,
            format!("swap {round}: {outcome:?}"),
        )?;
    }
    check(
        store.get(&key).await? == Some(value(200)),
        "the last swap's value is stored",
    )?;
    let item = raw_item(&provider, &namespace, &key).await?;
    check(
        item_bytes(&item) <= MAX_ITEM_BYTES,
        format!("swapped item is {} bytes", item_bytes(&item)),
    )?;

    // A counter whose every total is 20 characters, past a full journal, with an expiry.
    let counter = format!("{:c<1024}", "counter");
    let start: i64 = -9_223_372_036_854_775_000;
    store
        .set_with_ttl(&counter, start.to_string().into_bytes(), 3_600_000)
        .await?;
    for step in 1..=200 {
        let total = store
            .increment(&counter, 1)
            .await
            .map_err(|err| format!("increment {step}: {err}"))?;
        check(total == start + step, format!("increment {step}: {total}"))?;
    }
    // Increments journal nothing: each writer's slot holds its last total.
    let item = raw_item(&provider, &namespace, &counter).await?;
    check(
        !item.contains_key(ATTR_JOURNAL),
        "increments wrote no journal entries",
    )?;
    let last = (start + 200).to_string();
    check(
        matches!(item.get("wt"), Some(AttributeValue::M(slots))
            if slots.values().any(|total| *total == AttributeValue::N(last.clone()))),
        format!(
            "the writer's slot holds the last 20-character total: {:?}",
            item.get("wt")
        ),
    )?;
    check(
        item_bytes(&item) <= MAX_ITEM_BYTES,
        format!("counter item is {} bytes", item_bytes(&item)),
    )?;

    // The largest value over the counter: the swap replaces the slots with its journal.
    for round in 1..=3 {
        let current = store.read_versioned(&counter).await?;
        let outcome = store
            .swap(&counter, &current.version, value(round))
            .await
            .map_err(|err| {
                format!("swap {round} of a {largest}-byte value over a counter's journal: {err}")
            })?;
        check(
            outcome == SwapOutcome::Swapped,
            format!("swap {round}: {outcome:?}"),
        )?;
        let item = raw_item(&provider, &namespace, &counter).await?;
        check(
            item_bytes(&item) <= MAX_ITEM_BYTES,
            format!("item after swap {round} is {} bytes", item_bytes(&item)),
        )?;
    }
    check(
        store.get(&counter).await? == Some(value(3)),
        "the largest value replaced the counter",
    )?;
    Ok(())
}

async fn expired_item_still_present_is_invisible(local: DynamoDbLocal) -> TestResult {
    let provider = provider(&local).await?;
    let store = store(provider.clone(), "expired").await?;
    for key in ["gone", "counter", "swept"] {
        put_expired(&provider, "expired", key, b"41").await?;
    }
    let raw = provider
        .client()
        .get_item()
        .table_name(TABLE)
        .key(ATTR_NAMESPACE, AttributeValue::S("expired".into()))
        .key(ATTR_KEY, AttributeValue::S("gone".into()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|err| Failed::from(format!("{err:?}")))?;
    check(raw.item.is_some(), "the expired item is physically present")?;
    check(store.get("gone").await?.is_none(), "get")?;
    check(!store.exists("gone").await?, "exists")?;
    check(
        store.get_many(&["gone".to_string()]).await? == vec![None],
        "get-many",
    )?;
    check(store.list_keys(None).await?.keys.is_empty(), "list-keys")?;
    let handle = store.read_versioned("gone").await?;
    check(handle.value.is_none(), "cas read")?;
    check(
        store.increment("counter", 1).await? == 1,
        "increment starts at 0",
    )?;
    let swapped = store.swap("gone", &handle.version, b"new".to_vec()).await?;
    check(
        swapped == kv_core::SwapOutcome::Swapped,
        "a handle on the expired item inserts over it",
    )?;
    // DynamoDB's TTL sweeper removes an expired item at a time of its choosing (18–30 s after
    // its expiry on DynamoDB Local): a handle taken before still inserts, as nobody wrote.
    let handle = store.read_versioned("swept").await?;
    check(
        matches!(&handle.version, kv_core::Version::Tag(tag) if tag.starts_with("gone@")),
        format!(
            "a handle on the expired item, not on no item: {:?}",
            handle.version
        ),
    )?;
    provider
        .client()
        .delete_item()
        .table_name(TABLE)
        .key(ATTR_NAMESPACE, AttributeValue::S("expired".into()))
        .key(ATTR_KEY, AttributeValue::S("swept".into()))
        .send()
        .await
        .map_err(|err| Failed::from(format!("{err:?}")))?;
    let swapped = store
        .swap("swept", &handle.version, b"new".to_vec())
        .await?;
    check(
        swapped == kv_core::SwapOutcome::Swapped,
        "a handle on an expired item the sweeper removed since inserts",
    )?;
    Ok(())
}

/// A write whose outcome is unknown (its connection closed before the request reached the
/// server), then the expired item it was conditioned on removed by the TTL sweeper before the
/// lookup that resolves it: no item at all, so soon after a write conditioned on that item's
/// version, proves the write did not apply (it would have left an item that lives for
/// minutes). The swap goes on and inserts; it used to answer `outcome unknown`.
/// `kv_core::rmw`'s `a_removal_after_an_ambiguous_write_resolves_it` tests the same rule
/// in-process; here the write, the removal and the lookup meet DynamoDB Local.
async fn ambiguous_write_then_sweep(local: DynamoDbLocal) -> TestResult {
    /// How long the proxy holds the lookup that resolves the lost write.
    const HELD: Duration = Duration::from_secs(3);
    let proxy = fault_proxy(&local).await?;
    let direct = provider(&local).await?;
    let store = store(proxied(&proxy).await?, "ambiguous").await?;
    let key = |name: &str| {
        HashMap::from([
            (
                ATTR_NAMESPACE.to_string(),
                AttributeValue::S("ambiguous".into()),
            ),
            (ATTR_KEY.to_string(), AttributeValue::S(name.into())),
        ])
    };
    put_expired(&direct, "ambiguous", "k", b"old").await?;
    let handle = store.read_versioned("k").await?;
    check(handle.value.is_none(), "the expired item reads as missing")?;
    // The swap reads the item, then its conditional write never reaches the server (the
    // connection closes: the outcome is unknown to the client), and the lookup that resolves
    // it waits `HELD` in the proxy, while the "sweeper" (the test's own DeleteItem, sent once the
    // lookup has reached the proxy) removes the item.
    let before = proxy.seen();
    proxy.after(1, Fault::ResetBeforeForward);
    proxy.next(Fault::Latency(HELD), 1);
    let sweeper = async {
        for _ in 0..500 {
            if proxy.seen() >= before + 3 {
                let held_since = std::time::Instant::now();
                direct
                    .client()
                    .delete_item()
                    .table_name(TABLE)
                    .set_key(Some(key("k")))
                    .send()
                    .await
                    .map_err(|err| format!("{err:?}"))?;
                return Ok(held_since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err("the swap's lookup never reached the proxy".to_string())
    };
    let (swapped, swept) = tokio::join!(store.swap("k", &handle.version, b"new".to_vec()), sweeper);
    let took = swept.map_err(Failed::from)?;
    // The removal must land while the lookup is held, or the lookup finds the item and the
    // rule is never reached.
    check(
        took < HELD / 2,
        format!("the removal took {took:?}, too close to the lookup's release after {HELD:?}"),
    )?;
    check(proxy.pending() == 0, "both faults were reached")?;
    // The read, the lost write, the held lookup, then the retry's read and its insert.
    check(
        proxy.seen() - before == 5,
        format!(
            "the swap sent {} requests, not the 5 of a resolved retry",
            proxy.seen() - before
        ),
    )?;
    check(
        matches!(swapped, Ok(SwapOutcome::Swapped)),
        format!("the swap resolved and inserted: {swapped:?}"),
    )?;
    check(
        store.get("k").await?.as_deref() == Some(&b"new"[..]),
        "the value written once",
    )?;
    Ok(())
}

/// A fault proxy in front of DynamoDB Local.
async fn fault_proxy(local: &DynamoDbLocal) -> Result<FaultProxy, Failed> {
    let upstream: std::net::SocketAddr = local
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .map_err(|err| Failed::from(format!("{err}")))?;
    Ok(FaultProxy::start(upstream, Protocol::Http).await?)
}

/// A provider (its own writer of counters) reaching DynamoDB Local through `proxy`.
async fn proxied(proxy: &FaultProxy) -> Result<Arc<DynamoProvider>, Failed> {
    let url = format!(
        "t=dynamodb://{TABLE}?region=us-east-1&endpoint=http://{}&access_key_id=test&secret_access_key=test&max_attempts=1",
        proxy.addr()
    );
    let (_, spec) =
        kv_core::config::parse_short_form(&url).map_err(|err| Failed::from(err.to_string()))?;
    let config = DynamoConfig::from_spec(&spec)?;
    Ok(Arc::new(DynamoProvider::new(
        kv_aws::dynamodb::client::build_client(&config).await,
        TABLE,
    )))
}

/// A store on `provider` whose calls get `timeout` and one attempt each.
async fn store_within(
    provider: Arc<DynamoProvider>,
    namespace: &str,
    timeout: Duration,
) -> Result<KvStore, Failed> {
    let stores = Stores::builder(provider_tests::limits(timeout, 1))
        .store("s", provider, namespace, Access::ReadWrite)
        .build();
    Ok(stores.open("s").await?)
}

/// Waits until the proxy has seen `count` requests (bounded: 10 s).
async fn until_seen(proxy: &FaultProxy, count: u64) -> Result<(), Failed> {
    for _ in 0..1000 {
        if proxy.seen() >= count {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("the proxy saw {} requests, not {count}", proxy.seen()).into())
}

/// The reply of an increment's `UpdateItem` is lost after DynamoDB applied it: the store reads
/// its writer's slot, finds the batch's sequence there, and answers the total it left, without
/// sending the increment again.
async fn lost_increment_reply(local: DynamoDbLocal) -> TestResult {
    provider(&local).await?;
    let proxy = fault_proxy(&local).await?;
    let store = store(proxied(&proxy).await?, "lost-increment").await?;
    check(store.increment("k", 5).await? == 5, "the first increment")?;
    let before = proxy.seen();
    proxy.next(Fault::DropReply, 1);
    let total = store.increment("k", 3).await;
    check(
        matches!(total, Ok(8)),
        format!("the lost increment answered from the slot: {total:?}"),
    )?;
    check(
        proxy.seen() - before == 2,
        format!(
            "the increment and the slot's read, not {} requests",
            proxy.seen() - before
        ),
    )?;
    check(
        store.get("k").await?.as_deref() == Some(&b"8"[..]),
        "applied once",
    )?;
    check(store.increment("k", 1).await? == 9, "the next increment")?;
    Ok(())
}

/// A batch's request is still on its way when the caller that sent it gives up; another
/// caller whose increment was in that batch reads the slot (not applied yet) and sends it again
/// in the next batch, and the late copy lands first. The next batch is conditioned on the slot
/// the first one was, so only one of them applies: each increment counts once. (Conditioned
/// on a higher sequence instead, both applied and the counter showed B's 100 twice.)
async fn late_copy_of_a_batch(local: DynamoDbLocal) -> TestResult {
    provider(&local).await?;
    /// How long the batch given up stays on its way.
    const FIRST: Duration = Duration::from_secs(4);
    /// How long its resend stays on its way: it arrives after the late copy.
    const SECOND: Duration = Duration::from_secs(3);
    let proxy = fault_proxy(&local).await?;
    let store = store_within(proxied(&proxy).await?, "late-copy", Duration::from_secs(20)).await?;
    check(store.increment("k", 1000).await? == 1000, "warm-up")?;
    let before = proxy.seen();
    // C's increment holds the key's turn for 1 s, so A and B queue behind it and go in one
    // batch, whose request is held for FIRST; A gives up after 2.5 s, B reads the slot (the
    // read passes) and sends its increment again, held for SECOND.
    proxy.next(Fault::Latency(Duration::from_secs(1)), 1);
    proxy.next(Fault::LateCopy(FIRST), 1);
    proxy.after(1, Fault::Latency(SECOND));
    let c = store.increment("k", 1);
    let a = async {
        until_seen(&proxy, before + 1).await?;
        Ok::<_, Failed>(
            tokio::time::timeout(Duration::from_millis(2500), store.increment("k", 10)).await,
        )
    };
    let b = async {
        until_seen(&proxy, before + 1).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, Failed>(store.increment("k", 100).await)
    };
    let (c, a, b) = tokio::join!(c, a, b);
    let (a, b) = (a?, b?);
    check(matches!(c, Ok(1001)), format!("C: {c:?}"))?;
    check(a.is_err(), format!("A gave up: {a:?}"))?;
    check(
        matches!(b, Ok(1111)),
        format!("B is answered by the batch that applied: {b:?}"),
    )?;
    check(proxy.pending() == 0, "every scripted fault was reached")?;
    let value = store.get("k").await?;
    check(
        value.as_deref() == Some(&b"1111"[..]),
        format!(
            "each increment counted once: {:?}",
            value.map(|v| String::from_utf8_lossy(&v).into_owned())
        ),
    )?;
    Ok(())
}

/// Writers in different processes (here: providers) incrementing one key do not conflict:
/// each has its own slot, so an increment costs one request once each writer knows the item.
async fn hot_increments_cost_one_request(local: DynamoDbLocal) -> TestResult {
    const WRITERS: u64 = 8;
    const EACH: u64 = 25;
    let proxy = fault_proxy(&local).await?;
    let direct = store(provider(&local).await?, "hot-requests").await?;
    direct.set("k", b"0".to_vec()).await?;
    let mut stores = Vec::new();
    for _ in 0..WRITERS {
        stores.push(store(proxied(&proxy).await?, "hot-requests").await?);
    }
    let before = proxy.seen();
    let writers = stores.iter().map(|store| async move {
        for _ in 0..EACH {
            store.increment("k", 1).await?;
        }
        Ok::<_, kv_core::KvError>(())
    });
    for done in futures::future::join_all(writers).await {
        done?;
    }
    let sent = proxy.seen() - before;
    check(
        direct.get("k").await?.as_deref() == Some((WRITERS * EACH).to_string().as_bytes()),
        "exact",
    )?;
    // Per writer: a read and a conversion that may lose to another's (then a read again),
    // and one request per increment.
    check(
        sent <= WRITERS * EACH + 3 * WRITERS,
        format!(
            "{sent} requests for {} increments by {WRITERS} writers",
            WRITERS * EACH
        ),
    )?;
    Ok(())
}

/// A slot unused for 15 minutes belongs to a writer that is gone: the next writer to read the
/// item removes it, and keeps a younger one, without changing the value or its version.
async fn stale_slots_are_removed(local: DynamoDbLocal) -> TestResult {
    let provider = provider(&local).await?;
    let store = store(provider.clone(), "stale-slots").await?;
    check(store.increment("k", 2).await? == 2, "converted")?;
    let key = HashMap::from([
        (
            ATTR_NAMESPACE.to_string(),
            AttributeValue::S("stale-slots".into()),
        ),
        (ATTR_KEY.to_string(), AttributeValue::S("k".into())),
    ]);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|err| Failed::from(err.to_string()))?
        .as_millis() as u64;
    let n = |value: u64| AttributeValue::N(value.to_string());
    // Two writers that were here before: one 16 minutes ago, one 1 minute ago.
    provider
        .client()
        .update_item()
        .table_name(TABLE)
        .set_key(Some(key.clone()))
        .update_expression(
            "SET ws.gone = :s, wt.gone = :t, wa.gone = :old, \
             ws.idle = :s, wt.idle = :t, wa.idle = :young",
        )
        .expression_attribute_values(":s", n(1))
        .expression_attribute_values(":t", n(2))
        .expression_attribute_values(":old", n(now_ms - 16 * 60 * 1000))
        .expression_attribute_values(":young", n(now_ms - 60 * 1000))
        .send()
        .await
        .map_err(|err| Failed::from(format!("{err:?}")))?;
    let slots = |item: &HashMap<String, AttributeValue>| -> Vec<String> {
        let mut writers: Vec<String> = match item.get("wa") {
            Some(AttributeValue::M(used)) => used.keys().cloned().collect(),
            _ => Vec::new(),
        };
        writers.sort();
        writers
    };
    let read = || async {
        provider
            .client()
            .get_item()
            .table_name(TABLE)
            .set_key(Some(key.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| Failed::from(format!("{err:?}")))
            .map(|output| output.item.unwrap_or_default())
    };
    let before = read().await?;
    check(slots(&before).len() == 3, "three slots before")?;
    // A new writer (a new process) reads the item on its first increment.
    let newcomer = self::store(self::provider(&local).await?, "stale-slots").await?;
    check(
        newcomer.increment("k", 1).await? == 3,
        "the newcomer's increment",
    )?;
    let after = read().await?;
    let left = slots(&after);
    check(
        left.len() == 3 && left.iter().any(|w| w == "idle") && !left.iter().any(|w| w == "gone"),
        format!("the stale slot removed, the idle one kept, the newcomer's added: {left:?}"),
    )?;
    for map in ["ws", "wt"] {
        let holds_gone =
            matches!(after.get(map), Some(AttributeValue::M(m)) if m.contains_key("gone"));
        check(!holds_gone, format!("{map} no longer holds the stale slot"))?;
    }
    check(
        store.get("k").await?.as_deref() == Some(&b"3"[..]),
        "the value",
    )?;
    check(
        after.get("wr") == Some(&AttributeValue::N("1".into())),
        format!("one removal counted: {:?}", after.get("wr")),
    )?;
    // The removal keeps the version: a swap on a handle taken before it still applies. Here
    // the third writer's increment is refused after its read (it would overflow), so the
    // removal is the only write in between.
    let handle = store.read_versioned("k").await?;
    provider
        .client()
        .update_item()
        .table_name(TABLE)
        .set_key(Some(key.clone()))
        .update_expression("SET ws.gone2 = :s, wt.gone2 = :t, wa.gone2 = :old")
        .expression_attribute_values(":s", n(1))
        .expression_attribute_values(":t", n(3))
        .expression_attribute_values(":old", n(now_ms - 16 * 60 * 1000))
        .send()
        .await
        .map_err(|err| Failed::from(format!("{err:?}")))?;
    let third = self::store(self::provider(&local).await?, "stale-slots").await?;
    let refused = third.increment("k", i64::MAX).await;
    check(
        refused
            .as_ref()
            .is_err_and(|err| err.kind() == ErrorKind::Overflow),
        format!("the third writer's increment overflows: {refused:?}"),
    )?;
    let removed = read().await?;
    check(
        !slots(&removed).iter().any(|w| w == "gone2")
            && removed.get("wr") == Some(&AttributeValue::N("2".into())),
        format!("the second stale slot removed: {:?}", slots(&removed)),
    )?;
    let swapped = store.swap("k", &handle.version, b"9".to_vec()).await?;
    check(
        swapped == SwapOutcome::Swapped,
        format!("the removal changed no version: {swapped:?}"),
    )?;
    Ok(())
}

/// A counter whose item is full of other writers' slots (about 4,800 processes within 15
/// minutes): a new writer's increment is refused as `value-too-large`, with the reason, and
/// the counter is unchanged.
async fn a_counter_full_of_slots_refuses_clearly(local: DynamoDbLocal) -> TestResult {
    let provider = provider(&local).await?;
    let store = store(provider.clone(), "full-slots").await?;
    check(store.increment("k", 7).await? == 7, "converted")?;
    let item = raw_item(&provider, "full-slots", "k").await?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|err| Failed::from(err.to_string()))?
        .as_millis() as u64;
    // Other writers' slots, as many as fit within 30 bytes of the limit: a newcomer's slot
    // (about 75 bytes) does not.
    let mut full = item.clone();
    for map in ["ws", "wt", "wa"] {
        full.insert(map.into(), AttributeValue::M(HashMap::new()));
    }
    let mut writer = 0u64;
    while item_bytes(&full) + 30 + 75 <= MAX_ITEM_BYTES {
        for (map, value) in [
            ("ws", "12345678901234567".to_string()),
            ("wt", "7".to_string()),
            ("wa", now_ms.to_string()),
        ] {
            if let Some(AttributeValue::M(slots)) = full.get_mut(map) {
                slots.insert(format!("w{writer:016x}"), AttributeValue::N(value));
            }
        }
        writer += 1;
    }
    let put = provider
        .client()
        .put_item()
        .table_name(TABLE)
        .set_item(Some(full))
        .send()
        .await;
    if let Err(err) = put {
        // Too large for DynamoDB Local as built: the test needs an item just under the limit.
        return Err(format!("the full item was refused: {err:?}").into());
    }
    let newcomer = self::store(self::provider(&local).await?, "full-slots").await?;
    let refused = newcomer.increment("k", 1).await;
    check(
        refused.as_ref().is_err_and(|err| {
            err.kind() == ErrorKind::ValueTooLarge && err.to_string().contains("slot")
        }),
        format!("a clear refusal: {refused:?}"),
    )?;
    check(
        store.get("k").await?.as_deref() == Some(&b"7"[..]),
        "unchanged",
    )?;
    Ok(())
}

/// `deltas` incremented on `key` (set to `initial` first) in one batch: a first increment of
/// 0 holds the key's turn for 1 s (its read is held), and the others queue behind it. Returns
/// the 0's answer, the others' answers, and the requests they all sent.
async fn one_batch(
    store: &KvStore,
    proxy: &FaultProxy,
    key: &str,
    initial: i64,
    deltas: &[i64],
) -> Result<(kv_core::Result<i64>, Vec<kv_core::Result<i64>>, u64), Failed> {
    store.set(key, initial.to_string().into_bytes()).await?;
    let before = proxy.seen();
    proxy.next(Fault::Latency(Duration::from_secs(1)), 1);
    let holder = store.increment(key, 0);
    let others = async {
        until_seen(proxy, before + 1).await?;
        let calls = deltas.iter().map(|delta| store.increment(key, *delta));
        Ok::<_, Failed>(futures::future::join_all(calls).await)
    };
    let (held, others) = tokio::join!(holder, others);
    Ok((held, others?, proxy.seen() - before))
}

/// One batch whose sum leaves i64 while every total stays within it (-10 + 2^62 + 2^62), and
/// one whose second increment leaves the range (i64::MAX - 5, +3, +3): the first is applied
/// whole (its sum used to overflow: a panic in a debug build, a wrapped sum in release), the
/// second applies the first increment and refuses the other (it used to send the same batch
/// until its attempts ran out, about 400 requests, and answer both "unavailable").
async fn batch_sums_and_ranges(local: DynamoDbLocal) -> TestResult {
    provider(&local).await?;
    let proxy = fault_proxy(&local).await?;
    let store = store_within(
        proxied(&proxy).await?,
        "batch-edges",
        Duration::from_secs(20),
    )
    .await?;
    let half = 1i64 << 62;
    let (held, totals, _) = one_batch(&store, &proxy, "big", -10, &[half, half]).await?;
    check(matches!(held, Ok(-10)), format!("the holder: {held:?}"))?;
    let mut totals: Vec<i64> = totals.into_iter().collect::<Result<_, _>>()?;
    totals.sort_unstable();
    check(
        totals == vec![half - 10, i64::MAX - 9],
        format!("both applied in order: {totals:?}"),
    )?;
    check(
        store.get("big").await?.as_deref() == Some((i64::MAX - 9).to_string().as_bytes()),
        "the counter",
    )?;
    let (held, answers, requests) =
        one_batch(&store, &proxy, "edge", i64::MAX - 5, &[3, 3]).await?;
    check(held.is_ok(), format!("the holder: {held:?}"))?;
    let applied: Vec<&i64> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    let refused: Vec<&kv_core::KvError> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    check(
        applied == vec![&(i64::MAX - 2)]
            && refused.len() == 1
            && refused[0].kind() == ErrorKind::Overflow,
        format!("one applied, one refused as overflow: {answers:?}"),
    )?;
    check(requests <= 12, format!("{requests} requests"))?;
    check(
        store.get("edge").await?.as_deref() == Some((i64::MAX - 2).to_string().as_bytes()),
        "the counter",
    )?;
    Ok(())
}

/// With the SDK resending (`max_attempts = 2`), the first copy of an increment applies and
/// its reply is lost, and the resend is answered "throttled": the increment is answered with
/// its total, applied once. (The throttled error used to drop the batch: the host retried and
/// applied it again.)
async fn sdk_resend_after_an_applied_copy(local: DynamoDbLocal) -> TestResult {
    use kv_testkit::faults::Injected;
    provider(&local).await?;
    let proxy = fault_proxy(&local).await?;
    let url = format!(
        "t=dynamodb://{TABLE}?region=us-east-1&endpoint=http://{}&access_key_id=test&secret_access_key=test&max_attempts=2",
        proxy.addr()
    );
    let (_, spec) =
        kv_core::config::parse_short_form(&url).map_err(|err| Failed::from(err.to_string()))?;
    let config = DynamoConfig::from_spec(&spec)?;
    let resending = Arc::new(
        DynamoProvider::new(kv_aws::dynamodb::client::build_client(&config).await, TABLE)
            .with_sdk_resends(true),
    );
    let store = store(resending, "resent").await?;
    check(store.increment("k", 5).await? == 5, "the first increment")?;
    proxy.next(Fault::DropReply, 1);
    proxy.next(Fault::Respond(Injected::dynamodb_throughput_exceeded()), 1);
    let total = store.increment("k", 3).await;
    check(proxy.pending() == 0, "both faults reached")?;
    check(
        matches!(total, Ok(8)),
        format!("answered with its total: {total:?}"),
    )?;
    check(
        store.get("k").await?.as_deref() == Some(&b"8"[..]),
        "applied once",
    )?;
    Ok(())
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Result<u64, Failed> {
    match item.get(name) {
        Some(AttributeValue::N(text)) => text.parse().map_err(|_| Failed::from(text.clone())),
        other => Err(Failed::from(format!("{name}: {other:?}"))),
    }
}

/// A delete leaves a tombstone (no value, a new version, expired at the deletion) that
/// DynamoDB may remove only ten minutes later, and so does an expiring value: a CAS handle
/// taken on the missing key sees it was written and deleted since (S7, no ABA). Every read
/// treats the tombstone as missing.
async fn deletes_leave_tombstones(local: DynamoDbLocal) -> TestResult {
    let provider = provider(&local).await?;
    let store = store(provider.clone(), "tombstones").await?;
    let retention = kv_core::rmw::TOMBSTONE_RETENTION.as_secs();
    store.set("a", b"1".to_vec()).await?;
    store.set("b", b"2".to_vec()).await?;
    store.set_with_ttl("t", b"3".to_vec(), 60_000).await?;
    let ttl = raw_item(&provider, "tombstones", "t").await?;
    check(
        number(&ttl, ATTR_EXPIRES)? == number(&ttl, ATTR_UNTIL)? / 1000 + retention,
        format!("DynamoDB removes an expired value only after the retention: {ttl:?}"),
    )?;
    let handle = store.read_versioned("a").await?;
    store.delete("a").await?;
    store
        .delete_many(&["b".to_string(), "b".to_string()])
        .await?;
    store.delete("never").await?;
    let now_ms = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
    )
    .unwrap_or(u64::MAX);
    for key in ["a", "b"] {
        let tombstone = raw_item(&provider, "tombstones", key).await?;
        check(
            !tombstone.contains_key(ATTR_VALUE) && tombstone.contains_key(ATTR_VERSION),
            format!("{key}: a tombstone has a version and no value: {tombstone:?}"),
        )?;
        let remove_at = number(&tombstone, ATTR_EXPIRES)?;
        check(
            number(&tombstone, ATTR_UNTIL)? == kv_core::rmw::TOMBSTONE_EXPIRES_AT_MS
                && remove_at + 2 >= now_ms / 1000 + retention
                && remove_at <= now_ms / 1000 + retention,
            format!("{key}: expired on every clock, removed after the retention: {tombstone:?}"),
        )?;
    }
    check(
        raw_item(&provider, "tombstones", "never").await.is_err(),
        "deleting a key that has no item writes nothing",
    )?;
    provider_tests::deleted_keys_read_as_missing(&store, &handle, false).await?;
    Ok(())
}

/// The stores' changes from the table's stream, as `wasi-kv watch` reads them.
async fn all_changes(
    feed: &dyn ChangeFeed,
    from: &Position,
    count: usize,
    within: Duration,
) -> Result<Vec<Logged>, Failed> {
    let deadline = std::time::Instant::now() + within;
    let mut position = from.clone();
    let mut seen = Vec::new();
    while seen.len() < count && std::time::Instant::now() < deadline {
        // Three at a time: batches end mid-shard and go on from there.
        match feed
            .changes_after(&position, 3, 1 << 20, Duration::from_millis(500))
            .await?
        {
            Changes::Next {
                changes,
                position: next,
            } => {
                // The batch's position may be past its last change (records of other
                // namespaces read after it).
                check(changes.len() <= 3, "at most the batch asked")?;
                seen.extend(changes);
                position = next;
            }
            Changes::Gap { why, .. } => return Err(format!("unexpected gap: {why}").into()),
        }
    }
    Ok(seen)
}

fn described(changes: &[Logged]) -> Vec<String> {
    changes
        .iter()
        .map(|logged| match &logged.change {
            Change::Set { key, value } => format!("set {key} {}", String::from_utf8_lossy(value)),
            Change::Delete { key } => format!("delete {key}"),
        })
        .collect()
}

async fn the_change_feed_follows_the_tables_stream(local: DynamoDbLocal) -> TestResult {
    const WATCHED: &str = "wasikv-watch-tests";
    let (client, streams) = kv_aws::dynamodb::client::build_clients(&config(&local)).await;
    kv_aws::dynamodb::client::ensure_table(&client, WATCHED).await?;
    // A table without a stream, and a provider that may not provision: a clear refusal.
    let refusing = Arc::new(
        DynamoProvider::new(client.clone(), WATCHED).with_change_feed(streams.clone(), false),
    );
    let refused = store(refusing, "data").await?.change_feed()?.head().await;
    check(
        refused
            .as_ref()
            .is_err_and(|err| err.to_string().contains("has no stream")),
        format!("no stream, not allowed to enable one: {refused:?}"),
    )?;
    // One that may enables it (NEW_AND_OLD_IMAGES).
    let provider = Arc::new(
        DynamoProvider::new(client.clone(), WATCHED).with_change_feed(streams.clone(), true),
    );
    check(
        provider.capabilities().watch
            == Some(WatchSupport {
                durable: true,
                reports_expiry: false,
                every_value: true,
            }),
        "declared: durable, every value, expiry not reported when it happens",
    )?;
    let data = store(provider.clone(), "data").await?;
    let other = store(provider.clone(), "other").await?;
    let feed = data.change_feed()?;
    let head = feed.head().await?;
    data.set("a", b"1".to_vec()).await?;
    other.set("a", b"not data".to_vec()).await?;
    data.set("b", b"2".to_vec()).await?;
    data.set("a", b"3".to_vec()).await?;
    data.delete("b").await?;
    // A tombstone over a tombstone, and a delete where there never was an item: no change.
    data.delete("b").await?;
    data.delete("never-there").await?;
    data.increment("c", 5).await?;
    data.set_many(vec![
        ("d".into(), b"4".to_vec()),
        ("e".into(), b"5".to_vec()),
    ])
    .await?;
    // delete-many writes tombstones unconditionally: the one on a missing key is no change.
    data.delete_many(&["d".to_string(), "e".to_string(), "never-either".to_string()])
        .await?;
    data.set_with_ttl("t", b"later".to_vec(), 3_600_000).await?;
    let version = data.read_versioned("a").await?;
    let swapped = data.swap("a", &version.version, b"4".to_vec()).await?;
    check(matches!(swapped, SwapOutcome::Swapped), "swap")?;
    let expected = [
        "set a 1",
        "set b 2",
        "set a 3",
        "delete b",
        "set c 5",
        "set d 4",
        "set e 5",
        "delete d",
        "delete e",
        "set t later",
        "set a 4",
    ];
    let seen = all_changes(
        feed.as_ref(),
        &head,
        expected.len(),
        Duration::from_secs(30),
    )
    .await?;
    check(
        described(&seen) == expected,
        format!("in order, this namespace only: {:?}", described(&seen)),
    )?;
    // Nothing more (the other namespace, the deletes that deleted nothing).
    let rest = all_changes(
        feed.as_ref(),
        &seen[expected.len() - 1].position,
        1,
        Duration::from_secs(2),
    )
    .await?;
    check(
        rest.is_empty(),
        format!("nothing more: {:?}", described(&rest)),
    )?;
    // Durable: another provider (a restarted host) resumes from a position in the middle.
    let restarted = Arc::new(DynamoProvider::new(client, WATCHED).with_change_feed(streams, false));
    let again = store(restarted, "data").await?.change_feed()?;
    let resumed = all_changes(
        again.as_ref(),
        &seen[4].position,
        expected.len() - 5,
        Duration::from_secs(30),
    )
    .await?;
    check(
        described(&resumed) == expected[5..],
        format!("resumed after the fifth: {:?}", described(&resumed)),
    )?;
    // Positions it cannot follow are gaps (a resync), never errors and never silence.
    let fields: Vec<&str> = head.0.split('|').collect();
    check(fields.len() == 5, format!("position layout: {head}"))?;
    let with = |index: usize, text: &str| {
        let mut changed = fields.clone();
        changed[index] = text;
        Position(changed.join("|"))
    };
    let lost_shard = format!(
        "{}{}shardId-00000000000000000000-0000dead=00000000000000000001",
        fields[4],
        if fields[4].is_empty() { "" } else { "," }
    );
    for (case, position) in [
        ("text it never wrote", Position("sqlite:1".into())),
        ("another stream", with(1, "2001-01-01T00:00:00.000")),
        ("older than the stream keeps", with(3, "1")),
        ("a shard the stream no longer holds", with(4, &lost_shard)),
    ] {
        match again
            .changes_after(&position, 10, 1 << 20, Duration::from_millis(100))
            .await?
        {
            Changes::Gap { position, .. } => {
                // The gap's position is a good one: it reads on without another gap.
                let after = again
                    .changes_after(&position, 10, 1 << 20, Duration::from_millis(100))
                    .await?;
                check(
                    matches!(after, Changes::Next { .. }),
                    format!("{case}: the gap's position reads on"),
                )?;
            }
            Changes::Next { changes, .. } => {
                return Err(format!("{case}: no gap, {} changes", changes.len()).into());
            }
        }
    }
    // The stream disabled and enabled again (a new stream, as changing its view type needs):
    // a feed reading the old one notices within a listing's lifetime, and resynchronises.
    let stream = |enabled: bool| {
        let spec = aws_sdk_dynamodb::types::StreamSpecification::builder().stream_enabled(enabled);
        let spec = if enabled {
            spec.stream_view_type(aws_sdk_dynamodb::types::StreamViewType::NewAndOldImages)
        } else {
            spec
        };
        spec.build().expect("a stream specification")
    };
    let (tables, _) = kv_aws::dynamodb::client::build_clients(&config(&local)).await;
    tables
        .update_table()
        .table_name(WATCHED)
        .stream_specification(stream(false))
        .send()
        .await?;
    tables
        .update_table()
        .table_name(WATCHED)
        .stream_specification(stream(true))
        .send()
        .await?;
    data.set("after", b"re-enabled".to_vec()).await?;
    let mut position = seen[expected.len() - 1].position.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let noticed = loop {
        match again
            .changes_after(&position, 10, 1 << 20, Duration::from_millis(200))
            .await?
        {
            Changes::Gap { .. } => break true,
            Changes::Next { position: next, .. } => position = next,
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
    };
    check(noticed, "a re-enabled stream is a gap within 20 s")?;
    Ok(())
}

async fn stores_in_one_table_are_isolated(local: DynamoDbLocal) -> TestResult {
    let provider = provider(&local).await?;
    let a = store(provider.clone(), "tenant-a").await?;
    let b = store(provider.clone(), "tenant-a ").await?;
    a.set("k", b"a".to_vec()).await?;
    a.increment("n", 5).await?;
    check(b.get("k").await?.is_none(), "b sees a's key")?;
    check(b.increment("n", 1).await? == 1, "b's counter is its own")?;
    b.delete_many(&["k".to_string(), "n".to_string()]).await?;
    check(
        a.get("k").await?.as_deref() == Some(&b"a"[..]),
        "a's key survives b's delete",
    )?;
    check(b.list_keys(None).await?.keys.is_empty(), "b lists nothing")?;
    check(
        a.list_keys(None).await?.keys == vec!["k".to_string(), "n".to_string()],
        "a lists its keys",
    )?;
    Ok(())
}

async fn emulator_restart(mut local: DynamoDbLocal) -> TestResult {
    let provider = provider(&local).await?;
    let store = store(provider.clone(), "restart").await?;
    store.set("k", b"before".to_vec()).await?;
    local.stop();
    provider_tests::expect_outage(&store, Duration::from_secs(6)).await?;
    local.restart().map_err(Failed::from)?;
    // In-memory emulator: the table is gone and is recreated; the same provider then serves.
    kv_aws::dynamodb::client::ensure_table(provider.client(), TABLE).await?;
    store.set("k", b"after".to_vec()).await?;
    check(
        store.get("k").await?.as_deref() == Some(&b"after"[..]),
        "read after restart",
    )?;
    Ok(())
}

fn main() -> ExitCode {
    // Never reach a metadata service, whatever the environment says.
    // SAFETY: set before any thread is started.
    unsafe { std::env::set_var("AWS_EC2_METADATA_DISABLED", "true") };
    let installed =
        DynamoDbLocal::jar_dir().is_some() && kv_testkit::emulator::find_program("java").is_some();
    provider_tests::main::<DynamoDbLocal>(
        "dynamodb",
        installed,
        DynamoDbLocal::start,
        vec![
            ("set_many_and_get_many_of_1000_with_duplicates", |l| {
                Box::pin(batches_of_a_thousand(l))
            }),
            ("value_at_exact_maximum_and_one_byte_over", |l| {
                Box::pin(value_at_the_exact_maximum(l))
            }),
            (
                "journal_fits_beside_the_largest_value_on_the_longest_key",
                |l| Box::pin(journal_fits_beside_the_largest_value(l)),
            ),
            (
                "expired_item_still_present_is_invisible_to_every_operation",
                |l| Box::pin(expired_item_still_present_is_invisible(l)),
            ),
            (
                "an_ambiguous_write_then_the_sweeper_resolves_as_not_applied",
                |l| Box::pin(ambiguous_write_then_sweep(l)),
            ),
            (
                "a_lost_increment_reply_is_answered_from_the_writers_slot",
                |l| Box::pin(lost_increment_reply(l)),
            ),
            (
                "a_late_copy_of_a_batch_given_up_and_its_resend_apply_once",
                |l| Box::pin(late_copy_of_a_batch(l)),
            ),
            (
                "hot_increments_by_many_writers_cost_one_request_each",
                |l| Box::pin(hot_increments_cost_one_request(l)),
            ),
            (
                "a_counter_full_of_slots_refuses_a_new_writer_clearly",
                |l| Box::pin(a_counter_full_of_slots_refuses_clearly(l)),
            ),
            (
                "a_batch_beyond_i64_in_sum_applies_and_one_leaving_its_range_is_cut",
                |l| Box::pin(batch_sums_and_ranges(l)),
            ),
            (
                "an_sdk_resend_throttled_after_an_applied_copy_applies_once",
                |l| Box::pin(sdk_resend_after_an_applied_copy(l)),
            ),
            ("stale_counter_slots_are_removed_by_the_next_writer", |l| {
                Box::pin(stale_slots_are_removed(l))
            }),
            ("deletes_leave_tombstones_that_every_read_skips", |l| {
                Box::pin(deletes_leave_tombstones(l))
            }),
            ("the_change_feed_follows_the_tables_stream", |l| {
                Box::pin(the_change_feed_follows_the_tables_stream(l))
            }),
            ("two_stores_in_one_table_are_isolated", |l| {
                Box::pin(stores_in_one_table_are_isolated(l))
            }),
            (
                "emulator_stop_gives_unavailable_and_restart_recovers",
                |l| Box::pin(emulator_restart(l)),
            ),
        ],
    )
}
