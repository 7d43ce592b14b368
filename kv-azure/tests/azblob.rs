//! Provider-level tests of `azblob` against Azurite's blob service, started on a free loopback
//! port with its well-known account key. Without Azurite they are ignored, unless
//! `KV_REQUIRE` names `azblob`, where that is a failure.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use azure_storage_blob::BlobContainerClient;
use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kv_azure::blob::client::{container_client, ensure_container, sign_account_sas};
use kv_azure::blob::store::{
    MAX_METADATA_BYTES, META_EXPIRES, META_JOURNAL, META_KEY, TOMBSTONE_TAG,
};
use kv_azure::{AzblobConfig, AzblobProvider};
use kv_core::{Access, ErrorKind, KvStore, Limits, Provider, Stores};
use kv_testkit::emulator::{AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer};
use kv_testkit::provider_tests::{self, TestResult, check};
use libtest_mimic::Failed;

const CONTAINER: &str = "provider-tests";

fn config_of(url: &str) -> Result<AzblobConfig, Failed> {
    let (_, spec) = kv_core::config::parse_short_form(&format!("t={url}"))
        .map_err(|err| Failed::from(err.to_string()))?;
    AzblobConfig::from_spec(&spec).map_err(|err| Failed::from(err.to_string()))
}

fn config(server: &AzuriteServer) -> Result<AzblobConfig, Failed> {
    config_of(&server.store_url(CONTAINER, "p"))
}

async fn provider(
    server: &AzuriteServer,
) -> Result<(Arc<dyn Provider>, Arc<BlobContainerClient>), Failed> {
    let config = config(server)?;
    let container = Arc::new(container_client(&config)?);
    ensure_container(&container).await?;
    let provider = AzblobProvider::new(container.clone(), &config.prefix);
    Ok((Arc::new(provider), container))
}

fn limits() -> Limits {
    provider_tests::limits(Duration::from_secs(10), 3)
}

async fn store(provider: Arc<dyn Provider>, namespace: &str) -> Result<KvStore, Failed> {
    let stores = Stores::builder(limits())
        .store("s", provider, namespace, Access::ReadWrite)
        .build();
    Ok(stores.open("s").await?)
}

/// The blob name of `key` in `namespace` (not hashed).
fn blob(namespace: &str, key: &str) -> String {
    format!(
        "p/kv/n{}/{}",
        URL_SAFE_NO_PAD.encode(namespace),
        URL_SAFE_NO_PAD.encode(key)
    )
}

/// Metadata, length and index tags of one stored blob.
async fn raw(
    container: &BlobContainerClient,
    name: &str,
) -> Result<(HashMap<String, String>, u64, HashMap<String, String>), Failed> {
    let blob = container.blob_client(name);
    let properties = blob
        .get_properties(None)
        .await
        .map_err(|err| Failed::from(format!("{name}: {err:?}")))?;
    let tags = blob
        .get_tags(None)
        .await
        .map_err(|err| Failed::from(format!("{name} tags: {err:?}")))?
        .into_model()
        .map_err(|err| Failed::from(format!("{name} tags: {err:?}")))?;
    Ok((
        properties.metadata()?,
        properties.content_length()?.unwrap_or(u64::MAX),
        tags.into(),
    ))
}

/// A delete leaves a tombstone (empty, expired at the deletion, index-tagged for a lifecycle
/// rule), single or batched: every read treats it as missing, and a CAS handle taken on the
/// missing key sees it was written and deleted since (S7, no ABA).
async fn deletes_leave_tombstones(server: AzuriteServer) -> TestResult {
    let (provider, container) = provider(&server).await?;
    let store = store(provider, "tombstones").await?;
    store.set("a", b"1".to_vec()).await?;
    store.set("b", b"2".to_vec()).await?;
    store.set_with_ttl("t", b"3".to_vec(), 60_000).await?;
    let handle = store.read_versioned("a").await?;
    store.delete("a").await?;
    store.delete_many(&["b".to_string()]).await?;
    for key in ["a", "b"] {
        let (metadata, length, tags) = raw(&container, &blob("tombstones", key)).await?;
        check(
            length == 0
                && metadata.get(META_EXPIRES).map(String::as_str) == Some("1")
                && tags.get(TOMBSTONE_TAG).map(String::as_str) == Some("1"),
            format!("{key}: {metadata:?} {length} {tags:?}"),
        )?;
    }
    provider_tests::deleted_keys_read_as_missing(&store, &handle, false).await?;
    // Every write over a tombstone clears the mark, whatever the service does with an
    // overwritten blob's tags, or a lifecycle rule would delete a live value.
    store.delete("c").await?;
    store.set("c", b"again".to_vec()).await?;
    store.delete("n").await?;
    store.increment("n", 1).await?;
    let (_, _, set_tags) = raw(&container, &blob("tombstones", "c")).await?;
    let (_, _, counter_tags) = raw(&container, &blob("tombstones", "n")).await?;
    for tags in [&set_tags, &counter_tags] {
        check(
            tags.get(TOMBSTONE_TAG).map(String::as_str) == Some("0"),
            format!("a live value after a delete: {tags:?}"),
        )?;
    }
    Ok(())
}

/// The service keeps at most 8 KiB of metadata (names and values): the whole journal at its
/// longest (20-character totals), beside a 1,024-byte key that travels in metadata, stays within
/// it. Azurite does not enforce the limit, so the stored metadata is measured.
async fn the_journal_fits_the_metadata_limit(server: AzuriteServer) -> TestResult {
    let (provider, container) = provider(&server).await?;
    let store = store(provider, "journal").await?;
    let key = "%".repeat(1024);
    store.set(&key, b"-9000000000000000000".to_vec()).await?;
    for _ in 0..(kv_core::rmw::JOURNAL_LEN + 5) {
        store.increment(&key, -1).await?;
    }
    let name = format!("p/kv/n{}/~{}", URL_SAFE_NO_PAD.encode("journal"), {
        use sha2::Digest as _;
        sha2::Sha256::digest(key.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    });
    let (metadata, _, _) = raw(&container, &name).await?;
    let bytes: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    let journal = metadata.get(META_JOURNAL).ok_or("no journal")?;
    check(
        bytes <= MAX_METADATA_BYTES
            && journal.split(';').count() == kv_core::rmw::JOURNAL_LEN
            && metadata.contains_key(META_KEY),
        format!(
            "{bytes} bytes of metadata, {} journal entries, key in metadata: {}",
            journal.split(';').count(),
            metadata.contains_key(META_KEY)
        ),
    )
}

/// Keys that blob names and URLs stumble on (`.`, `..`, trailing `/`, `\`, `?`, `#`, `%`)
/// round-trip through get and list-keys byte for byte.
async fn awkward_keys_round_trip(server: AzuriteServer) -> TestResult {
    let (provider, _) = provider(&server).await?;
    let store = store(provider, "keys").await?;
    let mut keys = provider_tests::awkward_keys();
    keys.push("a\\b".to_string());
    keys.push("a.".to_string());
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
    check(listed == keys, format!("listed {listed:?}"))
}

/// A SAS token given in the configuration works as the key does; a wrong key and an expired
/// token are refused with a classified error whose text, and whose whole source chain, never
/// holds a signature.
async fn sas_tokens_and_refused_credentials(server: AzuriteServer) -> TestResult {
    let key = base64::engine::general_purpose::STANDARD.decode(AZURITE_KEY)?;
    let now = time::OffsetDateTime::now_utc();
    let token =
        |start, expiry| sign_account_sas(AZURITE_ACCOUNT, &key, "https,http", start, expiry);
    let url = |auth: String| {
        format!(
            "azblob://{AZURITE_ACCOUNT}/{CONTAINER}/sas?endpoint={}&{auth}",
            server.endpoint()
        )
    };
    let encode =
        |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let valid = token(
        now - time::Duration::minutes(5),
        now + time::Duration::hours(1),
    )?;
    let config = config_of(&url(format!(
        "sas_token={}&create_container=true",
        encode(&valid)
    )))?;
    let container = Arc::new(container_client(&config)?);
    ensure_container(&container).await?;
    let sas_store = store(
        Arc::new(AzblobProvider::new(container, &config.prefix)),
        "sas",
    )
    .await?;
    sas_store.set("k", b"v".to_vec()).await?;
    check(
        sas_store.get("k").await?.as_deref() == Some(&b"v"[..]),
        "read back through a given SAS token",
    )?;
    let expired = token(
        now - time::Duration::hours(2),
        now - time::Duration::hours(1),
    )?;
    let wrong_key = base64::engine::general_purpose::STANDARD.encode(b"not the account key");
    for auth in [
        format!("sas_token={}", encode(&expired)),
        format!("key={}", encode(&wrong_key)),
    ] {
        let config = config_of(&url(auth.clone()))?;
        let store = store(
            Arc::new(AzblobProvider::new(
                Arc::new(container_client(&config)?),
                &config.prefix,
            )),
            "sas",
        )
        .await?;
        let err = match store.get("k").await {
            Ok(value) => return Err(format!("{auth}: read {value:?}").into()),
            Err(err) => err,
        };
        let mut chain = format!("{err} {err:?}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            chain.push_str(&format!(" {cause} {cause:?}"));
            source = cause.source();
        }
        check(
            err.kind() == ErrorKind::Internal
                && !err.is_transient()
                && err.to_string().contains("not authorized"),
            format!("{auth}: {chain}"),
        )?;
        check(
            chain
                .split("sig=")
                .skip(1)
                .all(|rest| rest.starts_with("<redacted>")),
            format!("an unredacted signature: {chain}"),
        )?;
        for secret in [&expired, &wrong_key] {
            let signature = secret.rsplit("sig=").next().unwrap_or_default();
            check(
                !chain.contains(signature) && !chain.contains(&encode(signature)),
                format!("a secret is printed: {chain}"),
            )?;
        }
    }
    Ok(())
}

/// Stopping the emulator gives `unavailable` within the time limit; after a restart (empty:
/// the container is made again) the same client serves.
async fn emulator_restart(mut server: AzuriteServer) -> TestResult {
    let (provider, container) = provider(&server).await?;
    let store = store(provider, "restart").await?;
    store.set("k", b"before".to_vec()).await?;
    server.stop();
    provider_tests::expect_outage(&store, Duration::from_secs(12)).await?;
    server.restart().map_err(Failed::from)?;
    ensure_container(&container).await?;
    store.set("k", b"after".to_vec()).await?;
    check(
        store.get("k").await?.as_deref() == Some(&b"after"[..]),
        "read after restart",
    )
}

fn main() -> ExitCode {
    kv_testkit::stay_on_loopback();
    provider_tests::main::<AzuriteServer>(
        "azblob",
        AzuriteServer::main_js().is_some(),
        AzuriteServer::start,
        vec![
            ("deletes_leave_tombstones_that_every_read_skips", |s| {
                Box::pin(deletes_leave_tombstones(s))
            }),
            ("the_journal_fits_the_8_kib_metadata_limit", |s| {
                Box::pin(the_journal_fits_the_metadata_limit(s))
            }),
            ("awkward_and_1024_byte_keys_round_trip", |s| {
                Box::pin(awkward_keys_round_trip(s))
            }),
            ("sas_tokens_and_refused_credentials", |s| {
                Box::pin(sas_tokens_and_refused_credentials(s))
            }),
            (
                "emulator_stop_gives_unavailable_and_restart_recovers",
                |s| Box::pin(emulator_restart(s)),
            ),
        ],
    )
}
