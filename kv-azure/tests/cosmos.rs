//! Provider-level tests against the local Cosmos DB server (`@vercel/cosmosdb-server` through
//! our wrapper), started on a free loopback port with the emulator's well-known key. Without
//! it they are ignored, unless `KV_REQUIRE` names `cosmos`, where that is a failure.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::Secret;
use azure_core::http::headers::Headers;
use azure_core::http::{
    AsyncRawResponse, Body, ClientOptions, HttpClient, Request, StatusCode, Transport,
};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use kv_azure::cosmos::store::MAX_VALUE_BYTES;
use kv_azure::{CosmosConfig, CosmosProvider};
use kv_core::{Access, ErrorKind, KvStore, Limits, Stores};
use kv_testkit::emulator::{COSMOS_EMULATOR_KEY, CosmosServer};
use kv_testkit::provider_tests::{self, TestResult, check};
use libtest_mimic::Failed;

fn config(server: &CosmosServer) -> CosmosConfig {
    let key = COSMOS_EMULATOR_KEY
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let url = format!(
        "t=cosmos:///wasikv/provider-tests?endpoint={}&key={key}&create_container=true\
         &consistency=session&timeout_ms=10000",
        server.endpoint()
    );
    let (_, spec) = kv_core::config::parse_short_form(&url).expect("url parses");
    CosmosConfig::from_spec(&spec).expect("config parses")
}

async fn provider(server: &CosmosServer) -> Result<Arc<CosmosProvider>, Failed> {
    let container = kv_azure::cosmos::client::connect(&config(server)).await?;
    Ok(Arc::new(CosmosProvider::new(container)))
}

fn limits() -> Limits {
    provider_tests::limits(Duration::from_secs(5), 3)
}

async fn store(provider: Arc<CosmosProvider>, namespace: &str) -> Result<KvStore, Failed> {
    let stores = Stores::builder(limits())
        .store("s", provider, namespace, Access::ReadWrite)
        .build();
    Ok(stores.open("s").await?)
}

async fn list_all(store: &KvStore) -> Result<Vec<String>, Failed> {
    let mut keys = provider_tests::list_all(store).await?;
    keys.sort();
    Ok(keys)
}

/// Keys Cosmos ids forbid (`/ \ ? #`), 1024-byte keys (ASCII and multi-byte) and unicode
/// round-trip through get and list-keys, byte for byte.
async fn awkward_keys_round_trip(server: CosmosServer) -> TestResult {
    let store = store(provider(&server).await?, "keys").await?;
    let mut keys: Vec<String> = [
        "/",
        "\\",
        "?",
        "#",
        "a/b\\c?d#e",
        "%2F",
        " ",
        "..",
        "é",
        "e\u{301}",
        "日本語",
        "🔑",
        "line\nbreak",
        "tab\t",
        "\u{1}",
    ]
    .iter()
    .map(|key| key.to_string())
    .collect();
    keys.push("k".repeat(1024));
    keys.push("é".repeat(512));
    keys.push(format!("{}/", "/".repeat(1023)));
    for (i, key) in keys.iter().enumerate() {
        check(key.len() <= 1024, format!("test key {i} is too long"))?;
        store.set(key, format!("value {i}").into_bytes()).await?;
    }
    for (i, key) in keys.iter().enumerate() {
        let value = store.get(key).await?;
        check(
            value.as_deref() == Some(format!("value {i}").as_bytes()),
            format!("get of key {i} ({} bytes)", key.len()),
        )?;
    }
    keys.sort();
    check(
        list_all(&store).await? == keys,
        "list-keys returns every key as written",
    )?;
    for key in &keys {
        store.delete(key).await?;
    }
    check(list_all(&store).await?.is_empty(), "all deleted")
}

/// Keys and namespaces with quotes and SQL fragments are data, never query text.
async fn quotes_cannot_change_a_query(server: CosmosServer) -> TestResult {
    let provider = provider(&server).await?;
    let victim = store(provider.clone(), "victim").await?;
    victim.set("secret", b"v".to_vec()).await?;
    let injected = [
        "x\" OR c.pk != \"x",
        "x' OR 1=1 --",
        "\") OR (true",
        "victim",
    ];
    for namespace in injected {
        let attacker = store(provider.clone(), namespace).await?;
        attacker.set("\"k' OR 1=1 --", b"a".to_vec()).await?;
        let listed = list_all(&attacker).await?;
        if namespace == "victim" {
            check(listed.len() == 2, format!("victim lists {listed:?}"))?;
        } else {
            check(
                listed == vec!["\"k' OR 1=1 --".to_string()],
                format!("namespace {namespace:?} lists {listed:?}"),
            )?;
        }
    }
    Ok(())
}

/// The declared maximum is stored and read back; one byte more is `value-too-large` (the
/// local server would accept it: this is the host's own check) and the old value stays.
async fn value_at_the_exact_maximum(server: CosmosServer) -> TestResult {
    let store = store(provider(&server).await?, "sizes").await?;
    let key = "k".repeat(1024);
    let largest: Vec<u8> = (0..MAX_VALUE_BYTES).map(|i| (i % 251) as u8).collect();
    store.set(&key, largest.clone()).await?;
    check(
        store.get(&key).await?.as_deref() == Some(&largest[..]),
        "the largest value round-trips",
    )?;
    let err = store
        .set(&key, vec![0u8; MAX_VALUE_BYTES + 1])
        .await
        .err()
        .ok_or("one byte over was accepted")?;
    check(
        err.kind() == ErrorKind::ValueTooLarge,
        format!("one byte over: {err}"),
    )?;
    check(
        store.get(&key).await?.as_deref() == Some(&largest[..]),
        "the previous value is intact",
    )
}

/// 8 tasks x 50 increments of one key end at exactly 400, each total seen once.
async fn concurrent_increments_exact(server: CosmosServer) -> TestResult {
    let store = store(provider(&server).await?, "counters").await?;
    store.set("n", b"0".to_vec()).await?;
    provider_tests::concurrent_increments_exact(&store).await
}

/// With the server stopped every operation fails `unavailable` within the bound; after a
/// restart (empty: the container is recreated) the same provider serves again.
async fn emulator_restart(mut server: CosmosServer) -> TestResult {
    let provider = provider(&server).await?;
    let store = store(provider.clone(), "restart").await?;
    store.set("k", b"before".to_vec()).await?;
    server.stop();
    provider_tests::expect_outage(&store, Duration::from_secs(6)).await?;
    server.restart().map_err(Failed::from)?;
    kv_azure::cosmos::client::connect(&config(&server)).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match store.set("k", b"after".to_vec()).await {
            Ok(()) => break,
            Err(err) if std::time::Instant::now() < deadline => {
                eprintln!("not yet recovered: {err}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => return Err(Failed::from(format!("no recovery: {err}"))),
        }
    }
    check(
        store.get("k").await?.as_deref() == Some(&b"after"[..]),
        "read after restart",
    )
}

/// The token endpoint of a fake Entra ID authority, served in-process through the
/// credential's HTTP transport: nothing leaves the machine, and the test sees every request.
#[derive(Debug, Default)]
struct FakeAuthority {
    requests: Mutex<Vec<(String, String)>>,
}

#[async_trait::async_trait]
impl HttpClient for FakeAuthority {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let body = match request.body() {
            Body::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => String::new(),
        };
        if let Ok(mut requests) = self.requests.lock() {
            requests.push((request.url().to_string(), body));
        }
        let mut headers = Headers::new();
        headers.insert("content-type", "application/json");
        let token = r#"{"token_type":"Bearer","expires_in":3600,"ext_expires_in":3600,"access_token":"wasi-kv-test-token"}"#;
        Ok(AsyncRawResponse::from_bytes(StatusCode::Ok, headers, token))
    }
}

/// With Entra ID auth the provider gets a token for the Cosmos DB scope from the authority and
/// serves with it (the local server does not check tokens; the real service does).
async fn entra_id_token_auth(server: CosmosServer) -> TestResult {
    let authority = Arc::new(FakeAuthority::default());
    let options = ClientSecretCredentialOptions {
        client_options: ClientOptions {
            transport: Some(Transport::new(authority.clone())),
            ..Default::default()
        },
    };
    let credential = ClientSecretCredential::new(
        "wasi-kv-tenant",
        "wasi-kv-client".to_string(),
        Secret::from("not-a-real-secret"),
        Some(options),
    )?;
    let container =
        kv_azure::cosmos::client::connect_with_credential(&config(&server), credential).await?;
    let store = store(Arc::new(CosmosProvider::new(container)), "entra").await?;
    store.set("k", b"v".to_vec()).await?;
    check(
        store.get("k").await?.as_deref() == Some(&b"v"[..]),
        "read with a token",
    )?;
    let requests = authority
        .requests
        .lock()
        .map_err(|_| Failed::from("lock"))?
        .clone();
    check(!requests.is_empty(), "no token was requested")?;
    check(
        requests.iter().all(|(url, body)| {
            url.ends_with("/wasi-kv-tenant/oauth2/v2.0/token")
                && body.contains("scope=https%3A%2F%2Fcosmos.azure.com%2F.default")
                && body.contains("client_id=wasi-kv-client")
        }),
        format!("token requests: {requests:?}"),
    )
}

/// The stored item of `key`, as JSON.
async fn raw_item(
    server: &CosmosServer,
    namespace: &str,
    key: &str,
) -> Result<Option<serde_json::Value>, Failed> {
    let container = kv_azure::cosmos::client::connect(&config(server)).await?;
    let (pk, id) = kv_azure::cosmos::store::item_location(namespace, key);
    match container.read_item(pk, &id, None).await {
        Ok(response) => Ok(Some(
            response
                .into_model()
                .map_err(|err| Failed::from(err.to_string()))?,
        )),
        Err(err) if err.status().is_not_found() => Ok(None),
        Err(err) => Err(Failed::from(err.to_string())),
    }
}

/// A delete leaves a tombstone (an empty value expired at the deletion) that the service
/// removes only ten minutes later, and an expiring value stays as long past its expiry: every
/// read treats the tombstone as missing, and a CAS handle taken on the missing key sees it
/// was written and deleted since (S7, no ABA).
async fn deletes_leave_tombstones(server: CosmosServer) -> TestResult {
    let store = store(provider(&server).await?, "tombstones").await?;
    let retention = kv_core::rmw::TOMBSTONE_RETENTION.as_secs();
    store.set("a", b"1".to_vec()).await?;
    store.set("b", b"2".to_vec()).await?;
    store.set_with_ttl("t", b"3".to_vec(), 60_000).await?;
    // A value without expiry says so to the service: a container someone gave a default TTL
    // must not remove it (nor a tombstone before its retention).
    let kept = raw_item(&server, "tombstones", "a")
        .await?
        .ok_or("no item a")?;
    check(
        kept["ttl"].as_i64() == Some(-1),
        format!("a value without expiry has ttl -1: {kept}"),
    )?;
    let ttl = raw_item(&server, "tombstones", "t")
        .await?
        .ok_or("no item t")?;
    check(
        ttl["ttl"].as_u64() == Some(60 + retention),
        format!("removed ten minutes after it expires: {ttl}"),
    )?;
    let handle = store.read_versioned("a").await?;
    store.delete("a").await?;
    store
        .delete_many(&["b".to_string(), "never".to_string()])
        .await?;
    for key in ["a", "b"] {
        let item = raw_item(&server, "tombstones", key)
            .await?
            .ok_or(format!("no tombstone for {key}"))?;
        check(
            item["v"] == "" && item["exp"].is_u64() && item["ttl"].as_u64() == Some(retention + 1),
            format!("{key}: a tombstone: {item}"),
        )?;
    }
    check(
        raw_item(&server, "tombstones", "never").await?.is_none(),
        "deleting a key that has no item writes nothing",
    )?;
    provider_tests::deleted_keys_read_as_missing(&store, &handle, false).await?;
    Ok(())
}

/// The `k` of each row `sql` (with `@pk` bound to `pk`) returns when sent to the partition of
/// `key` in `namespace` (a partition key header).
async fn partition_rows(
    server: &CosmosServer,
    namespace: &str,
    key: &str,
    sql: &str,
    pk: &str,
) -> Result<Vec<String>, Failed> {
    use azure_data_cosmos::Query;
    use azure_data_cosmos::feed::FeedScope;
    use futures::StreamExt as _;
    let container = kv_azure::cosmos::client::connect(&config(server)).await?;
    let (partition, _) = kv_azure::cosmos::store::item_location(namespace, key);
    let query = Query::from(sql)
        .with_parameter("@pk", pk)
        .map_err(|err| Failed::from(err.to_string()))?;
    let mut pages = container
        .query_items::<serde_json::Value>(query, FeedScope::partition(partition), None)
        .await
        .map_err(|err| Failed::from(err.to_string()))?
        .into_pages();
    let mut keys = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| Failed::from(err.to_string()))?;
        keys.extend(
            page.into_items()
                .iter()
                .filter_map(|row| row["k"].as_str().map(str::to_string)),
        );
    }
    keys.sort();
    Ok(keys)
}

/// A query sent to one partition reads that partition's items only, as the service does: one
/// whose filter names another partition returns nothing (our wrapper's fix 5; the stock
/// server ran every query over the whole container and returned the other partition's
/// items, and every listing of the watch feed slowed as a run filled the container). Kept
/// right as items are created, replaced, turned into tombstones and removed: an index entry
/// left behind by a removal fails the query.
async fn a_partition_query_reads_that_partition_only(server: CosmosServer) -> TestResult {
    let provider = provider(&server).await?;
    let one = store(provider.clone(), "partition-one").await?;
    let two = store(provider, "partition-two").await?;
    one.set("a", b"1".to_vec()).await?;
    two.set("a", b"2".to_vec()).await?;
    let (own, _) = kv_azure::cosmos::store::item_location("partition-one", "a");
    let (other, _) = kv_azure::cosmos::store::item_location("partition-two", "a");
    let by_pk = "SELECT c.k FROM c WHERE c.pk = @pk";
    let rows = partition_rows(&server, "partition-one", "a", by_pk, &other).await?;
    check(
        rows.is_empty(),
        format!("a query sent to one partition that names another returns nothing, got {rows:?}"),
    )?;
    let rows = partition_rows(&server, "partition-one", "a", by_pk, &own).await?;
    check(rows == ["a"], format!("its own partition: {rows:?}"))?;
    // Replaced (a new ETag), then deleted (a tombstone replaces it), then removed outright.
    one.set("a", b"3".to_vec()).await?;
    let rows = partition_rows(&server, "partition-one", "a", by_pk, &own).await?;
    check(rows == ["a"], format!("after a replace: {rows:?}"))?;
    one.delete("a").await?;
    let rows = partition_rows(&server, "partition-one", "a", by_pk, &own).await?;
    check(rows == ["a"], format!("the tombstone is listed: {rows:?}"))?;
    let container = kv_azure::cosmos::client::connect(&config(&server)).await?;
    let (pk, id) = kv_azure::cosmos::store::item_location("partition-one", "a");
    container
        .delete_item(pk, &id, None)
        .await
        .map_err(|err| Failed::from(err.to_string()))?;
    let rows = partition_rows(&server, "partition-one", "a", by_pk, &own).await?;
    check(
        rows.is_empty(),
        format!("after the item is removed: {rows:?}"),
    )?;
    let rows = partition_rows(&server, "partition-two", "a", by_pk, &other).await?;
    check(
        rows == ["a"],
        format!("the other namespace's item is still there: {rows:?}"),
    )?;
    Ok(())
}

fn main() -> ExitCode {
    kv_testkit::stay_on_loopback();
    provider_tests::main::<CosmosServer>(
        "cosmos",
        CosmosServer::modules_dir().is_some(),
        CosmosServer::start,
        vec![
            ("reserved_long_and_unicode_keys_round_trip", |s| {
                Box::pin(awkward_keys_round_trip(s))
            }),
            ("quotes_in_keys_and_namespaces_cannot_change_a_query", |s| {
                Box::pin(quotes_cannot_change_a_query(s))
            }),
            ("value_at_exact_maximum_and_one_byte_over", |s| {
                Box::pin(value_at_the_exact_maximum(s))
            }),
            ("concurrent_increments_8x50_exact", |s| {
                Box::pin(concurrent_increments_exact(s))
            }),
            ("deletes_leave_tombstones_that_every_read_skips", |s| {
                Box::pin(deletes_leave_tombstones(s))
            }),
            (
                "emulator_stop_gives_unavailable_and_restart_recovers",
                |s| Box::pin(emulator_restart(s)),
            ),
            ("entra_id_token_for_the_cosmos_scope_is_used", |s| {
                Box::pin(entra_id_token_auth(s))
            }),
            ("a_partition_query_reads_that_partition_only", |s| {
                Box::pin(a_partition_query_reads_that_partition_only(s))
            }),
        ],
    )
}
