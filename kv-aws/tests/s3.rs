//! Provider-level tests of `s3` against LocalStack's S3 (and, where noted, moto's too), each
//! started on a free loopback port with static test credentials. Without LocalStack they are
//! ignored, unless `KV_REQUIRE` names `s3`, where that is a failure.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use kv_aws::S3Config;
use kv_aws::s3::store::{META_EXPIRES, META_JOURNAL, META_KEY, TOMBSTONE_TAG};
use kv_core::{Access, KvStore, Limits, Provider, Stores};
use kv_testkit::emulator::{S3Kind, S3Server};
use kv_testkit::provider_tests::{self, TestResult, check};
use libtest_mimic::Failed;

const BUCKET: &str = "provider-tests";

fn config(server: &S3Server) -> Result<S3Config, Failed> {
    let (_, spec) =
        kv_core::config::parse_short_form(&format!("t={}", server.store_url(BUCKET, "p")))
            .map_err(|err| Failed::from(err.to_string()))?;
    S3Config::from_spec(&spec).map_err(|err| Failed::from(err.to_string()))
}

async fn provider(server: &S3Server) -> Result<(Arc<dyn Provider>, aws_sdk_s3::Client), Failed> {
    let config = config(server)?;
    let client = kv_aws::s3::client::build_client(&config).await;
    kv_aws::s3::client::ensure_bucket(&client, &config).await?;
    let provider = kv_aws::S3Provider::new(client.clone(), BUCKET, &config.prefix);
    Ok((Arc::new(provider), client))
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

/// The object key of `key` in `namespace` (not hashed).
fn object(namespace: &str, key: &str) -> String {
    format!("p/kv/{}/{namespace}/{key}", namespace.len())
}

/// Metadata and tags of one stored object.
async fn raw(
    client: &aws_sdk_s3::Client,
    name: &str,
) -> Result<(HashMap<String, String>, i64, Vec<(String, String)>), Failed> {
    let head = client
        .head_object()
        .bucket(BUCKET)
        .key(name)
        .send()
        .await
        .map_err(|err| Failed::from(format!("{name}: {err:?}")))?;
    let tags = client
        .get_object_tagging()
        .bucket(BUCKET)
        .key(name)
        .send()
        .await
        .map_err(|err| Failed::from(format!("{name} tags: {err:?}")))?;
    Ok((
        head.metadata().cloned().unwrap_or_default(),
        head.content_length().unwrap_or(-1),
        tags.tag_set()
            .iter()
            .map(|tag| (tag.key().to_string(), tag.value().to_string()))
            .collect(),
    ))
}

/// A delete leaves a tombstone (16 random bytes, expired at the deletion, tagged for the
/// lifecycle rule), single or batched: every read treats it as missing, and a CAS handle taken
/// on the missing key sees it was written and deleted since (S7, no ABA). On LocalStack and
/// moto both.
async fn deletes_leave_tombstones(localstack: S3Server) -> TestResult {
    let moto = S3Server::start(S3Kind::Moto).map_err(Failed::from)?;
    for server in [&localstack, &moto] {
        let (provider, client) = provider(server).await?;
        let store = store(provider, "tombstones").await?;
        store.set("a", b"1".to_vec()).await?;
        store.set("b", b"2".to_vec()).await?;
        store.set_with_ttl("t", b"3".to_vec(), 60_000).await?;
        let handle = store.read_versioned("a").await?;
        store.delete("a").await?;
        store.delete_many(&["b".to_string()]).await?;
        for key in ["a", "b"] {
            let (metadata, length, tags) = raw(&client, &object("tombstones", key)).await?;
            check(
                length == 16
                    && metadata.contains_key(META_EXPIRES)
                    && tags.contains(&(TOMBSTONE_TAG.to_string(), "1".to_string())),
                format!(
                    "{}: {key}: {metadata:?} {length} {tags:?}",
                    server.version()
                ),
            )?;
        }
        provider_tests::deleted_keys_read_as_missing(&store, &handle, false).await?;
    }
    Ok(())
}

/// S3 keeps at most 2 KB of user metadata (names and values): the journal of a key at its
/// longest (20-character totals), beside a 1,024-byte key that travels in metadata, stays
/// within it, and keeps 13 entries (42 for a key under its own name). The emulators do not
/// enforce the limit, so the stored metadata is measured.
async fn the_journal_fits_the_metadata_limit(server: S3Server) -> TestResult {
    let (provider, client) = provider(&server).await?;
    let store = store(provider, "journal").await?;
    let hashed = "%".repeat(1024);
    for (key, entries) in [(hashed.as_str(), 13), ("plain", 42)] {
        store.set(key, b"-9000000000000000000".to_vec()).await?;
        for _ in 0..60 {
            store.increment(key, -1).await?;
        }
        let listed = client
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix("p/kv/7/journal/")
            .send()
            .await
            .map_err(|err| Failed::from(format!("{err:?}")))?;
        let name = listed
            .contents()
            .iter()
            .filter_map(|object| object.key())
            .find(|name| (key == "plain") == name.ends_with("/plain"))
            .ok_or("the object is not listed")?
            .to_string();
        let (metadata, _, _) = raw(&client, &name).await?;
        let bytes: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        let journal = metadata.get(META_JOURNAL).ok_or("no journal")?;
        check(
            bytes <= 2048 && journal.split(';').count() == entries,
            format!(
                "{} bytes of metadata, {} journal entries (key in metadata: {})",
                bytes,
                journal.split(';').count(),
                metadata.contains_key(META_KEY)
            ),
        )?;
    }
    Ok(())
}

/// Keys S3 tools stumble on round-trip through list-keys byte for byte.
async fn awkward_keys_round_trip(server: S3Server) -> TestResult {
    let (provider, _) = provider(&server).await?;
    let store = store(provider, "keys").await?;
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
    check(listed == keys, format!("listed {listed:?}"))
}

/// Stopping the emulator gives `unavailable` within the time limit; after a restart (empty:
/// the bucket is made again) the same client serves.
async fn emulator_restart(mut server: S3Server) -> TestResult {
    let config = config(&server)?;
    let (provider, client) = provider(&server).await?;
    let store = store(provider, "restart").await?;
    store.set("k", b"before".to_vec()).await?;
    server.stop();
    provider_tests::expect_outage(&store, Duration::from_secs(12)).await?;
    server.restart().map_err(Failed::from)?;
    kv_aws::s3::client::ensure_bucket(&client, &config).await?;
    store.set("k", b"after".to_vec()).await?;
    check(
        store.get("k").await?.as_deref() == Some(&b"after"[..]),
        "read after restart",
    )
}

/// Connecting with `create_bucket = true` to a bucket that has lifecycle rules of its own
/// leaves them as they are (us-east-1 answers 200 to re-creating an owned bucket); a new bucket
/// gets the tombstone rule.
async fn an_existing_lifecycle_is_kept(server: S3Server) -> TestResult {
    use aws_sdk_s3::types::{
        BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
        LifecycleRuleFilter,
    };
    let (_, client) = provider(&server).await?;
    let rules = |client: aws_sdk_s3::Client| async move {
        client
            .get_bucket_lifecycle_configuration()
            .bucket(BUCKET)
            .send()
            .await
            .map(|out| {
                out.rules()
                    .iter()
                    .filter_map(|rule| rule.id().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .map_err(|err| Failed::from(format!("{err:?}")))
    };
    check(
        rules(client.clone()).await? == vec!["wasi-kv-tombstones".to_string()],
        "a new bucket gets the tombstone rule",
    )?;
    let own = LifecycleRule::builder()
        .id("owners-rule")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("logs/").build())
        .expiration(LifecycleExpiration::builder().days(30).build())
        .build()
        .map_err(|err| Failed::from(err.to_string()))?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(BUCKET)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(own)
                .build()
                .map_err(|err| Failed::from(err.to_string()))?,
        )
        .send()
        .await
        .map_err(|err| Failed::from(format!("{err:?}")))?;
    let (_, client) = provider(&server).await?;
    check(
        rules(client).await? == vec!["owners-rule".to_string()],
        "the owner's rules were replaced",
    )
}

fn main() -> ExitCode {
    kv_testkit::stay_on_loopback();
    provider_tests::main::<S3Server>(
        "s3",
        S3Kind::LocalStack.program().is_some() && S3Kind::Moto.program().is_some(),
        || S3Server::start(S3Kind::LocalStack),
        vec![
            ("deletes_leave_tombstones_that_every_read_skips", |s| {
                Box::pin(deletes_leave_tombstones(s))
            }),
            ("the_journal_fits_the_2_kb_metadata_limit", |s| {
                Box::pin(the_journal_fits_the_metadata_limit(s))
            }),
            ("awkward_and_1024_byte_keys_round_trip", |s| {
                Box::pin(awkward_keys_round_trip(s))
            }),
            ("an_existing_lifecycle_is_kept", |s| {
                Box::pin(an_existing_lifecycle_is_kept(s))
            }),
            (
                "emulator_stop_gives_unavailable_and_restart_recovers",
                |s| Box::pin(emulator_restart(s)),
            ),
        ],
    )
}
