//! Provider-level tests against fake-gcs-server, started on a free loopback port with anonymous
//! credentials. Without fake-gcs-server they are ignored, unless `KV_REQUIRE` names `gcs`, where
//! that is a failure.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use kv_core::{Access, Bucket, ErrorKind, KvStore, Limits, Provider, ProviderFactory, Stores};
use kv_testkit::emulator::FakeGcsServer;
use kv_testkit::faults::{Fault, FaultProxy, Injected, Protocol};
use kv_testkit::provider_tests::{self, TestResult, check};
use libtest_mimic::Failed;

async fn provider(server: &FakeGcsServer) -> Result<Arc<dyn Provider>, Failed> {
    provider_at(&server.endpoint()).await
}

/// A provider whose requests go to `endpoint` (the emulator, or a proxy in front of it).
async fn provider_at(endpoint: &str) -> Result<Arc<dyn Provider>, Failed> {
    let url = format!("g=gcs://provider-tests/p?endpoint={endpoint}&create_bucket=true");
    let (_, spec) =
        kv_core::config::parse_short_form(&url).map_err(|err| Failed::from(err.to_string()))?;
    kv_gcp::GcsFactory
        .connect(&spec)
        .await
        .map_err(|err| Failed::from(err.to_string()))
}

fn limits() -> Limits {
    provider_tests::limits(Duration::from_secs(20), 3)
}

async fn store(provider: Arc<dyn Provider>, namespace: &str) -> Result<KvStore, Failed> {
    let stores = Stores::builder(limits())
        .store("s", provider, namespace, Access::ReadWrite)
        .build();
    Ok(stores.open("s").await?)
}

async fn awkward_keys_round_trip(server: FakeGcsServer) -> TestResult {
    let store = store(provider(&server).await?, "keys").await?;
    let mut keys = provider_tests::awkward_keys();
    for (i, key) in keys.iter().enumerate() {
        store.set(key, format!("v{i}").into_bytes()).await?;
    }
    for (i, key) in keys.iter().enumerate() {
        let value = store.get(key).await?;
        check(
            value == Some(format!("v{i}").into_bytes()),
            format!("{key:?}: {value:?}"),
        )?;
    }
    let mut listed = provider_tests::list_all(&store).await?;
    listed.sort();
    keys.sort();
    check(listed == keys, format!("listed {listed:?}"))?;
    store.delete(&"%".repeat(1024)).await?;
    check(
        store.get(&"%".repeat(1024)).await?.is_none(),
        "hashed key deleted",
    )?;
    Ok(())
}

async fn empty_and_five_megabyte_values(server: FakeGcsServer) -> TestResult {
    let store = store(provider(&server).await?, "values").await?;
    store.set("empty", Vec::new()).await?;
    check(store.get("empty").await? == Some(Vec::new()), "empty value")?;
    check(store.exists("empty").await?, "empty value exists")?;
    let big: Vec<u8> = (0..5 * 1024 * 1024)
        .map(|i: usize| (i % 251) as u8)
        .collect();
    store.set("big", big.clone()).await?;
    check(store.get("big").await? == Some(big), "5 MB value")?;
    Ok(())
}

async fn concurrent_increments_exact(server: FakeGcsServer) -> TestResult {
    let store = store(provider(&server).await?, "counters").await?;
    provider_tests::concurrent_increments_exact(&store).await
}

async fn emulator_restart(mut server: FakeGcsServer) -> TestResult {
    let url = format!(
        "g=gcs://restart/p?endpoint={}&create_bucket=true",
        server.endpoint()
    );
    let (_, spec) =
        kv_core::config::parse_short_form(&url).map_err(|err| Failed::from(err.to_string()))?;
    let config =
        kv_gcp::GcsConfig::from_spec(&spec).map_err(|err| Failed::from(err.to_string()))?;
    let client = kv_gcp::client::build_client(&config)
        .await
        .map_err(|err| Failed::from(err.to_string()))?;
    kv_gcp::client::ensure_bucket(&client, &config).await?;
    let provider: Arc<dyn Provider> =
        Arc::new(kv_gcp::GcsProvider::new(client.clone(), "restart", "p/"));
    let store = store(provider, "restart").await?;
    store.set("k", b"before".to_vec()).await?;
    server.stop();
    provider_tests::expect_outage(&store, Duration::from_secs(20)).await?;
    server.restart().map_err(Failed::from)?;
    // In-memory emulator: the bucket is gone and is recreated; the same client then serves.
    kv_gcp::client::ensure_bucket(&client, &config).await?;
    store.set("k", b"after".to_vec()).await?;
    check(
        store.get("k").await?.as_deref() == Some(&b"after"[..]),
        "read after restart",
    )?;
    Ok(())
}

/// A fault proxy in front of the emulator: it counts the requests (each scripted pass-through
/// is one request) and can answer one in the emulator's place.
async fn proxy(server: &FakeGcsServer) -> Result<FaultProxy, Failed> {
    let upstream: SocketAddr = server
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .map_err(|err| Failed::from(format!("emulator address: {err}")))?;
    FaultProxy::start(upstream, Protocol::Http)
        .await
        .map_err(|err| Failed::from(format!("fault proxy: {err}")))
}

/// Requests sent while `run` runs, counted by the proxy.
async fn count_requests<T>(
    proxy: &FaultProxy,
    run: impl std::future::Future<Output = T>,
) -> (T, usize) {
    const BUDGET: usize = 100_000;
    proxy.next(Fault::Latency(Duration::ZERO), BUDGET);
    let result = run.await;
    let sent = BUDGET - proxy.pending();
    proxy.clear();
    (result, sent)
}

/// 1,001 keys, some never written: long ones stored under hashed names, and ones whose names
/// need escaping in a request path.
fn many_keys() -> Vec<String> {
    let awkward = [
        "a/b", "?q=1&r", "#frag", "sp ace", "%2F", "a\nb", "..", "é", "🦀", "+",
    ];
    (0..1001)
        .map(|i| match i % 10 {
            0 => format!("{i}{}", "%".repeat(1000)), // 3,000+ bytes once encoded: hashed
            1 => format!("{i}{}", "🦀".repeat(250)), // 1,000+ bytes: hashed with the prefix
            n => format!("{i}/{}", awkward[n as usize]),
        })
        .collect()
}

async fn delete_many_uses_batch_requests(server: FakeGcsServer) -> TestResult {
    let proxy = proxy(&server).await?;
    let store = store(
        provider_at(&format!("http://{}", proxy.addr())).await?,
        "delete-many",
    )
    .await?;
    let keys = many_keys();
    // Every 7th key is never written: deleting a missing key is fine.
    let written: Vec<(String, Vec<u8>)> = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 7 != 3)
        .map(|(i, key)| (key.clone(), format!("v{i}").into_bytes()))
        .collect();
    store.set_many(written.clone()).await?;
    check(
        provider_tests::list_all(&store).await?.len() == written.len(),
        "all written keys listed before the delete",
    )?;
    let (result, requests) = count_requests(&proxy, store.delete_many(&keys)).await;
    result?;
    let left = provider_tests::list_all(&store).await?;
    check(
        left.is_empty(),
        format!("{} keys left: {:?}", left.len(), &left[..left.len().min(5)]),
    )?;
    for key in [&keys[0], &keys[1], &keys[2], &keys[1000]] {
        check(
            store.get(key).await?.is_none(),
            format!("{key:?} still readable"),
        )?;
    }
    // The host sends parts of 200 entries; each is spread over 16 batch requests of at most
    // 13 deletes (kv_gcp::batch): 5 × 16 + 1 requests instead of one per key, and one upload
    // of the tombstone template.
    check(
        requests <= 82,
        format!("delete-many of 1001 keys sent {requests} requests, expected at most 82"),
    )?;
    // Deleting them again (all missing now) is fine and as cheap.
    let (result, requests) = count_requests(&proxy, store.delete_many(&keys)).await;
    result?;
    check(
        requests <= 81,
        format!("second delete-many: {requests} requests"),
    )?;
    Ok(())
}

/// Every key of `bucket`, straight from the provider.
async fn listed(bucket: &dyn Bucket) -> Result<Vec<String>, Failed> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = bucket.list_keys(cursor.as_deref(), 1000).await?;
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
}

/// A batch answer of the emulator's shape: `parts` are (Content-ID, status line), in any order.
fn batch_answer(parts: &[(&str, &str)]) -> Injected {
    let mut body = String::new();
    for (content_id, status_line) in parts {
        body.push_str(&format!(
            "--answer\r\nContent-Type: application/http\r\nContent-Id: {content_id}\r\n\r\n\
             {status_line}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
        ));
    }
    body.push_str("--answer--\r\n");
    Injected {
        status: 200,
        headers: vec![(
            "content-type".to_string(),
            "multipart/mixed; boundary=\"answer\"".to_string(),
        )],
        body,
    }
}

async fn delete_many_failures_are_errors(server: FakeGcsServer) -> TestResult {
    let proxy = proxy(&server).await?;
    let provider = provider_at(&format!("http://{}", proxy.addr())).await?;
    // The provider itself, without the host's retries: what one call reports.
    let bucket = provider.open("delete-many-failures").await?;
    let keys: Vec<String> = many_keys().into_iter().take(150).collect();
    let entries: Vec<_> = keys
        .iter()
        .map(|key| (key.clone(), kv_core::Bytes::from_static(b"v")))
        .collect();
    bucket.set_many(&entries).await?;
    // The first delete-many makes the tombstone template; then every request is a batch.
    bucket.delete_many(&["warm-up".to_string()]).await?;

    // 150 keys are 15 batches of 10; one is answered 503 as a whole: never a success.
    let per_batch = kv_gcp::batch::batch_size(keys.len());
    proxy.next(Fault::Respond(Injected::status(503)), 1);
    let err = bucket
        .delete_many(&keys)
        .await
        .err()
        .ok_or("delete-many reported success with a batch answered 503")?;
    check(proxy.pending() == 0, "the 503 was not reached")?;
    check(
        err.kind() == ErrorKind::Unavailable && err.is_transient(),
        format!("expected a transient unavailable, got {err}"),
    )?;
    let left = listed(bucket.as_ref()).await?;
    check(
        err.message()
            .contains(&format!("{per_batch} of 150 entries failed"))
            && left.len() == per_batch,
        format!("{} keys left after: {err}", left.len()),
    )?;
    bucket.delete_many(&keys).await?;
    check(
        listed(bucket.as_ref()).await?.is_empty(),
        "keys left after the retry",
    )?;

    // Sub-responses are matched by Content-ID, not position; a failed or missing one fails the
    // call, and says how many. 48 keys are 16 batches of 3; the first to reach the proxy gets
    // the scripted answer, the others reach the emulator.
    let some = &keys[..48];
    check(
        kv_gcp::batch::batch_size(some.len()) == 3,
        "48 keys: batches of 3",
    )?;
    bucket.set_many(&entries[..48]).await?;
    proxy.next(
        Fault::Respond(batch_answer(&[
            ("<response-kv-delete-2>", "HTTP/1.1 204 No Content"),
            ("<response-kv-delete-0>", "HTTP/1.1 503 Service Unavailable"),
        ])),
        1,
    );
    let err = bucket
        .delete_many(some)
        .await
        .err()
        .ok_or("delete-many reported success with a part answered 503 and one unanswered")?;
    check(
        err.kind() == ErrorKind::Unavailable
            && err.is_transient()
            && err.message().contains("2 of 48 entries failed"),
        format!("{err}"),
    )?;
    // The scripted batch never reached the emulator; every other one was applied.
    let left = listed(bucket.as_ref()).await?;
    check(
        left.len() == 3,
        format!("{} keys left, expected 3", left.len()),
    )?;
    proxy.next(
        Fault::Respond(batch_answer(&[
            ("<response-kv-delete-1>", "HTTP/1.1 200 OK"),
            ("<response-kv-delete-0>", "HTTP/1.1 204 No Content"),
            ("<response-kv-delete-2>", "HTTP/1.1 403 Forbidden"),
        ])),
        1,
    );
    let err = bucket
        .delete_many(some)
        .await
        .err()
        .ok_or("delete-many reported success with a part answered 403")?;
    check(
        err.kind() == ErrorKind::Internal
            && !err.is_transient()
            && err.message().contains("1 of 48 entries failed"),
        format!("{err}"),
    )?;
    proxy.next(
        Fault::Respond(batch_answer(&[
            ("<response-kv-delete-1>", "HTTP/1.1 200 OK"),
            ("<response-kv-delete-2>", "HTTP/1.1 200 OK"),
            ("<response-kv-delete-0>", "HTTP/1.1 204 No Content"),
        ])),
        1,
    );
    bucket.delete_many(some).await?;

    // Through the host: a passing 503 is retried; one that outlasts the retries is reported.
    let store = store(provider.clone(), "delete-many-failures").await?;
    proxy.next(Fault::Respond(Injected::status(503)), 1);
    store.delete_many(&keys).await?;
    check(
        listed(bucket.as_ref()).await?.is_empty(),
        "keys left after a retried 503",
    )?;
    store.set("k", b"v".to_vec()).await?;
    proxy.next(Fault::Respond(Injected::status(503)), 100);
    let err = store
        .delete_many(&["k".to_string()])
        .await
        .err()
        .ok_or("delete-many reported success while every batch was answered 503")?;
    proxy.clear();
    check(err.kind() == ErrorKind::Unavailable, format!("{err}"))?;
    check(
        store.get("k").await?.is_some(),
        "the key was deleted after all",
    )?;
    Ok(())
}

/// A delete leaves a tombstone (an empty object expired at the deletion), single or batched:
/// every read treats it as missing, and a CAS handle taken on the missing key sees it was
/// written and deleted since (S7, no ABA). A tombstone template removed by someone else is
/// made again on the host's retry.
async fn deletes_leave_tombstones(server: FakeGcsServer) -> TestResult {
    let store = store(provider(&server).await?, "tombstones").await?;
    store.set("a", b"1".to_vec()).await?;
    store.set("b", b"2".to_vec()).await?;
    store.set_with_ttl("t", b"3".to_vec(), 60_000).await?;
    let handle = store.read_versioned("a").await?;
    store.delete("a").await?;
    store.delete_many(&["b".to_string()]).await?;
    let http = reqwest::Client::new();
    for key in ["a", "b"] {
        let url = format!(
            "{}/storage/v1/b/provider-tests/o/p%2Fkv%2F10%2Ftombstones%2F{key}",
            server.endpoint()
        );
        let object: String = http
            .get(&url)
            .send()
            .await
            .map_err(|err| Failed::from(err.to_string()))?
            .text()
            .await
            .map_err(|err| Failed::from(err.to_string()))?;
        check(
            object.contains(r#""size":"0""#) && object.contains(r#""expires-at""#),
            format!("{key}: an empty object with an expiry: {object}"),
        )?;
    }
    // The template is never listed either.
    provider_tests::deleted_keys_read_as_missing(&store, &handle, true).await?;
    // Someone removes the template: the batch's copies fail, the retry makes it again.
    let template = format!(
        "{}/storage/v1/b/provider-tests/o/p%2Fkv-tombstone",
        server.endpoint()
    );
    let removed = http
        .delete(&template)
        .send()
        .await
        .map_err(|err| Failed::from(err.to_string()))?;
    check(
        removed.status().is_success(),
        format!("remove: {removed:?}"),
    )?;
    store
        .delete_many(&["a".to_string(), "b".to_string()])
        .await?;
    check(
        provider_tests::list_all(&store).await? == vec!["t".to_string()],
        "deleted after the template was made again",
    )?;
    Ok(())
}

fn main() -> ExitCode {
    let installed = FakeGcsServer::binary().is_some();
    provider_tests::main::<FakeGcsServer>(
        "gcs",
        installed,
        FakeGcsServer::start,
        vec![
            (
                "awkward_and_1024_byte_keys_round_trip_through_list_keys",
                |s| Box::pin(awkward_keys_round_trip(s)),
            ),
            ("empty_and_5_mb_values", |s| {
                Box::pin(empty_and_five_megabyte_values(s))
            }),
            ("concurrent_increments_8x50_exact", |s| {
                Box::pin(concurrent_increments_exact(s))
            }),
            ("delete_many_1001_keys_in_at_most_82_requests", |s| {
                Box::pin(delete_many_uses_batch_requests(s))
            }),
            ("deletes_leave_tombstones_that_every_read_skips", |s| {
                Box::pin(deletes_leave_tombstones(s))
            }),
            ("delete_many_failed_batches_and_parts_are_errors", |s| {
                Box::pin(delete_many_failures_are_errors(s))
            }),
            (
                "emulator_stop_gives_unavailable_and_restart_recovers",
                |s| Box::pin(emulator_restart(s)),
            ),
        ],
    )
}
