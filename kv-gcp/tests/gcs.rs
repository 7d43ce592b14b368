//! Provider-level tests against fake-gcs-server, started on a free loopback port with anonymous
//! credentials. Without fake-gcs-server they are ignored, unless `KV_REQUIRE` names `gcs`, where
//! that is a failure.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use kv_conformance::emulator::FakeGcsServer;
use kv_conformance::provider_tests::{self, TestResult, check};
use kv_core::{Access, KvStore, Limits, Provider, ProviderFactory, Stores};
use libtest_mimic::Failed;

async fn provider(server: &FakeGcsServer) -> Result<Arc<dyn Provider>, Failed> {
    let url = format!(
        "g=gcs://provider-tests/p?endpoint={}&create_bucket=true",
        server.endpoint()
    );
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
    let mut keys: Vec<String> = [
        "/",
        "//",
        "a//b",
        "/a",
        "a/",
        "#",
        "?",
        "a?b#c",
        "%2F",
        "%",
        "%h00",
        ".",
        "..",
        " ",
        " a ",
        "a\nb",
        "a\rb",
        "\t",
        "é",
        "e\u{301}",
        "日本語",
        "🦀",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    keys.push("k".repeat(1024));
    keys.push("%".repeat(1024)); // 3072 bytes once encoded: stored under a hashed name
    keys.push("🦀".repeat(256));
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
            (
                "emulator_stop_gives_unavailable_and_restart_recovers",
                |s| Box::pin(emulator_restart(s)),
            ),
        ],
    )
}
