//! The mapping (docs/providers/cosmos.md): one item per key in one container partitioned on `/pk`.
//!
//! - `pk` = the prefix-free namespace prefix (`<length>/<namespace>/`) and one of [`SHARDS`]
//!   shards chosen by a hash of the key, so a store spreads over several logical partitions
//!   (each is capped at 20 GB).
//! - `id` = the key in unpadded base64url (Cosmos ids forbid `/ \ ? #`); when that is over
//!   1023 bytes, `~` and the SHA-256 of the key. `k` keeps the key itself, which is what
//!   listing returns.
//! - `v` = the value in base64; counters are decimal values like any other.
//! - `exp` = expiry in Unix ms, filtered on every read; `ttl` = seconds, so the service deletes
//!   expired items eventually (the local server never does), ten minutes after `exp`; -1 on a
//!   value without expiry, so a container's default TTL cannot remove it.
//! - delete: a tombstone, an item with an empty `v` expired on every clock, so a CAS handle
//!   taken on the missing key sees it was written and deleted since (`kv_core::rmw`).
//! - CAS and increment: ETag `If-Match`; create-if-absent: create (409 = exists); `j` = the
//!   journal that makes a retried increment or swap apply once (`kv_core::rmw`).
//! - list-keys: a parameterised query per shard, the SDK's continuation token in the cursor.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::Etag;
use azure_data_cosmos::ContainerClient;
use azure_data_cosmos::Query;
use azure_data_cosmos::feed::FeedScope;
use azure_data_cosmos::options::{ItemWriteOptions, MaxItemCountHint, Precondition, QueryOptions};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::{StreamExt as _, TryStreamExt as _};
use kv_core::naming::{KeyCodec, namespace_prefix};
use kv_core::provider::{DEFAULT_BATCH_CONCURRENCY as BATCH_CONCURRENCY, last_entry_per_key};
use kv_core::rmw::{self, ConditionalStore, Expect, Journal, Read, Snapshot, Write};
use kv_core::{
    Attempt, Bucket, Bytes, Capabilities, KeyPage, KvError, Provider, Result, SwapOutcome, Version,
    Versioned, clock,
};
use serde::{Deserialize, Serialize};

use super::error::{Outcome, map_error, outcome};

/// An item's `ttl` that the service never expires, even in a container with a default TTL.
const NEVER_EXPIRES: i64 = -1;

/// Largest value: its base64 plus the largest key, id and metadata stays under the 2 MB item
/// limit (the local server does not enforce that limit, so the host's check is what holds).
pub const MAX_VALUE_BYTES: usize = 1_500_000;
/// Logical partitions per store.
pub const SHARDS: u8 = 16;
/// Cosmos ids are at most 1023 bytes.
const MAX_ID_BYTES: usize = 1023;
/// Ids: unpadded base64url of the key (ids forbid `/ \\ ? #`); over 1023 bytes, `~` and the
/// key's SHA-256 (`~` is not in the base64url alphabet).
pub const KEY_CODEC: KeyCodec = KeyCodec::BASE64URL;

/// The item id of `key`.
pub fn item_id(key: &str) -> String {
    KEY_CODEC.name(key, MAX_ID_BYTES).name
}

fn shard(key: &str) -> u8 {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes())[0] % SHARDS
}

/// The partition key value of a shard of a namespace.
fn partition(namespace: &str, shard: u8) -> String {
    format!("{}{shard:x}", namespace_prefix(namespace))
}

/// Where `key` of `namespace` is stored: its partition key value and item id.
pub fn item_location(namespace: &str, key: &str) -> (String, String) {
    (partition(namespace, shard(key)), item_id(key))
}

/// The stored item.
#[derive(Debug, Serialize, Deserialize)]
struct Item {
    id: String,
    pk: String,
    k: String,
    v: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    /// Seconds until the service removes the item, or -1: never, whatever default TTL the
    /// container was given by someone else (a value without expiry must not vanish, and a
    /// tombstone must stay its retention, `rmw::TOMBSTONE_RETENTION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<i64>,
    /// The journal of the last increments and swaps (exactly-once retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    j: Option<String>,
}

impl Item {
    fn live(&self, now: u64) -> bool {
        clock::is_live(self.exp, now)
    }

    fn value(&self) -> Result<Vec<u8>> {
        STANDARD.decode(self.v.as_bytes()).map_err(|err| {
            KvError::internal(format!("cosmos: a stored value is not base64: {err}"))
        })
    }
}

/// One row of a listing query.
#[derive(Debug, Deserialize)]
struct KeyRow {
    k: String,
    #[serde(default)]
    exp: Option<u64>,
}

/// One row of the watch listing: the key, its expiry and the item's ETag (new for every
/// write).
#[derive(Debug, Deserialize)]
struct VersionRow {
    k: String,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(rename = "_etag")]
    etag: String,
}

/// How often a watched store is listed: a query per shard ([`SHARDS`]) each time.
const WATCH_POLL: Duration = Duration::from_secs(1);

/// The watch feed's listing: every live key with its item's ETag.
#[async_trait]
impl kv_core::watch::polled::VersionListing for CosmosBucket {
    async fn live_versions(&self) -> Result<std::collections::HashMap<String, String>> {
        let mut versions = std::collections::HashMap::new();
        for shard in 0..SHARDS {
            let pk = partition(&self.namespace, shard);
            let query = Query::from("SELECT c.k, c.exp, c._etag FROM c WHERE c.pk = @pk")
                .with_parameter("@pk", &pk)
                .map_err(|err| map_error("watch query", err))?;
            let options = QueryOptions::default().with_max_item_count(MaxItemCountHint::Limit(
                NonZeroU32::new(1000).unwrap_or(NonZeroU32::MIN),
            ));
            let mut pages = self
                .container
                .query_items::<VersionRow>(query, FeedScope::partition(pk), Some(options))
                .await
                .map_err(|err| map_error("watch listing", err))?
                .into_pages();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|err| map_error("watch listing", err))?;
                let now = clock::now_ms();
                for row in page.into_items() {
                    if clock::is_live(row.exp, now) {
                        versions.insert(row.k, row.etag);
                    }
                }
            }
        }
        Ok(versions)
    }
}

/// A Cosmos DB container.
pub struct CosmosProvider {
    container: ContainerClient,
}

impl CosmosProvider {
    /// A provider over `container`.
    pub fn new(container: ContainerClient) -> CosmosProvider {
        CosmosProvider { container }
    }
}

#[async_trait]
impl Provider for CosmosProvider {
    fn name(&self) -> &str {
        "cosmos"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            cas: true,
            list_may_repeat: false,
            max_value_bytes: MAX_VALUE_BYTES,
            // The local server's change feed answers with the whole listing and a fixed ETag,
            // so the store is listed every WATCH_POLL and compared (kv_core::watch::polled).
            watch: Some(kv_core::watch::WatchSupport {
                durable: false,
                reports_expiry: true,
                every_value: false,
            }),
            ..Capabilities::default()
        }
    }

    async fn open(&self, namespace: &str) -> Result<Arc<dyn Bucket>> {
        Ok(Arc::new(CosmosBucket {
            container: self.container.clone(),
            namespace: namespace.to_string(),
        }))
    }
}

/// How a write is conditioned.
enum Condition {
    /// Whatever is there (upsert).
    None,
    /// Only if no item exists (create; 409 = lost).
    Absent,
    /// Only if the item still has this ETag (replace; 412 or 404 = lost).
    Matches(Etag),
    /// Only if an item exists, whatever its ETag (replace; 404 = nothing to replace).
    Exists,
}

#[derive(Clone)]
struct CosmosBucket {
    container: ContainerClient,
    namespace: String,
}

impl CosmosBucket {
    fn locate(&self, key: &str) -> (String, String) {
        item_location(&self.namespace, key)
    }

    /// The stored item (expired or not) and its ETag.
    async fn read(&self, key: &str) -> Result<Option<(Item, Etag)>> {
        let (pk, id) = self.locate(key);
        match self.container.read_item(pk, &id, None).await {
            Ok(response) => {
                let etag = response
                    .headers()
                    .etag()
                    .cloned()
                    .ok_or_else(|| KvError::internal("cosmos read: the answer has no ETag"))?;
                let item: Item = response
                    .into_model()
                    .map_err(|err| map_error("decode item", err))?;
                Ok(Some((item, etag)))
            }
            Err(err) if outcome(&err) == Outcome::NotFound => Ok(None),
            Err(err) => Err(map_error("read", err)),
        }
    }

    /// The live value and its ETag.
    async fn read_live(&self, key: &str) -> Result<Option<(Vec<u8>, Etag)>> {
        match self.read(key).await? {
            Some((item, etag)) if item.live(clock::now_ms()) => Ok(Some((item.value()?, etag))),
            _ => Ok(None),
        }
    }

    /// Writes `value`; `Ok(false)` when `condition` did not hold.
    async fn write(
        &self,
        key: &str,
        value: &[u8],
        expires_at_ms: Option<u64>,
        journal: Option<&Journal>,
        condition: Condition,
    ) -> Result<bool> {
        let (pk, id) = self.locate(key);
        // The service's `ttl` counts from this write; `exp` is what reads check. The service
        // removes an expired item only a tombstone's retention after `exp` (rmw::TOMBSTONE_RETENTION).
        let now = clock::now_ms();
        let ttl_secs = match expires_at_ms {
            Some(at) => {
                let secs = at.saturating_sub(now).div_ceil(1000).max(1)
                    + rmw::TOMBSTONE_RETENTION.as_secs();
                i64::try_from(secs).unwrap_or(i64::MAX)
            }
            None => NEVER_EXPIRES,
        };
        let item = Item {
            id: id.clone(),
            pk: pk.clone(),
            k: key.to_string(),
            v: STANDARD.encode(value),
            exp: expires_at_ms,
            ttl: Some(ttl_secs),
            j: journal
                .filter(|journal| !journal.is_empty())
                .map(Journal::encode),
        };
        let result = match condition {
            Condition::None => self.container.upsert_item(pk, &id, &item, None).await,
            Condition::Absent => self.container.create_item(pk, &id, &item, None).await,
            Condition::Matches(etag) => {
                let options =
                    ItemWriteOptions::default().with_precondition(Precondition::IfMatch(etag));
                self.container
                    .replace_item(pk, &id, &item, Some(options))
                    .await
            }
            Condition::Exists => self.container.replace_item(pk, &id, &item, None).await,
        };
        match result {
            Ok(_) => Ok(true),
            Err(err) => match outcome(&err) {
                Outcome::Exists | Outcome::Changed | Outcome::NotFound => Ok(false),
                Outcome::Failure => Err(map_error("write", err)),
            },
        }
    }

    /// One page of one shard: live keys, and the SDK's token when the shard has more.
    async fn query_shard(
        &self,
        shard: u8,
        token: Option<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>)> {
        let pk = partition(&self.namespace, shard);
        // Parameterised: the namespace never becomes SQL text.
        let query = Query::from("SELECT c.k, c.exp FROM c WHERE c.pk = @pk")
            .with_parameter("@pk", &pk)
            .map_err(|err| map_error("list query", err))?;
        let page_size = NonZeroU32::new(u32::try_from(limit.max(1)).unwrap_or(u32::MAX))
            .unwrap_or(NonZeroU32::MIN);
        let mut options =
            QueryOptions::default().with_max_item_count(MaxItemCountHint::Limit(page_size));
        if let Some(token) = token {
            options = options.with_continuation_token(
                azure_data_cosmos::feed::ContinuationToken::from_string(token),
            );
        }
        let mut pages = self
            .container
            .query_items::<KeyRow>(query, FeedScope::partition(pk), Some(options))
            .await
            .map_err(|err| map_error("list", err))?
            .into_pages();
        let Some(page) = pages.next().await else {
            return Ok((Vec::new(), None));
        };
        let page = page.map_err(|err| map_error("list", err))?;
        let more = page.headers().continuation().is_some_and(|c| !c.is_empty());
        let now = clock::now_ms();
        let keys = page
            .into_items()
            .into_iter()
            .filter(|row| clock::is_live(row.exp, now))
            .map(|row| row.k)
            .collect();
        let next = if more {
            Some(
                pages
                    .to_continuation_token()
                    .map_err(|err| map_error("list continuation", err))?
                    .as_str()
                    .to_string(),
            )
        } else {
            None
        };
        Ok((keys, next))
    }
}

fn parse_cursor(cursor: &str) -> Result<(u8, Option<String>)> {
    let invalid = || KvError::invalid_cursor("cosmos: malformed cursor");
    let (shard, token) = cursor.split_once('.').ok_or_else(invalid)?;
    let shard = u8::from_str_radix(shard, 16)
        .ok()
        .filter(|shard| *shard < SHARDS)
        .ok_or_else(invalid)?;
    Ok((shard, (!token.is_empty()).then(|| token.to_string())))
}

fn cursor(shard: u8, token: Option<&str>) -> String {
    format!("{shard:x}.{}", token.unwrap_or(""))
}

/// ETags make read-modify-write safe: replace under `If-Match`, or create when the item must
/// not exist; the journal is a field of the item.
#[async_trait]
impl ConditionalStore for CosmosBucket {
    async fn read(&self, key: &str) -> Result<Read> {
        Ok(match CosmosBucket::read(self, key).await? {
            None => Read::Missing,
            Some((item, etag)) => {
                let live = item.live(clock::now_ms());
                Read::Found(Snapshot {
                    value: if live { item.value()? } else { Vec::new() },
                    version: etag.to_string(),
                    expires_at_ms: item.exp,
                    journal: item.j.as_deref().map(Journal::parse).unwrap_or_default(),
                })
            }
        })
    }

    async fn write_if(&self, key: &str, write: Write, expect: Expect) -> Result<bool> {
        let condition = match expect {
            Expect::Absent => Condition::Absent,
            Expect::Version(etag) => Condition::Matches(Etag::from(etag.as_str())),
        };
        self.write(
            key,
            &write.value,
            write.expires_at_ms,
            Some(&write.journal),
            condition,
        )
        .await
    }

    fn queue_name(&self, key: &str) -> String {
        let (partition, id) = self.locate(key);
        format!("cosmos\0{partition}\0{id}")
    }

    /// The driver resends writes after transport failures, 408 and 503, so a conflict can be
    /// the resend failing against the first send's own write.
    fn resends_conditional_writes(&self) -> bool {
        true
    }
}

#[async_trait]
impl Bucket for CosmosBucket {
    fn change_feed(&self) -> Option<Arc<dyn kv_core::watch::ChangeFeed>> {
        // The listing runs on a task of the runtime the feed is created in.
        tokio::runtime::Handle::try_current().ok()?;
        let bucket = Arc::new(self.clone());
        Some(Arc::new(kv_core::watch::polled::PolledFeed::follow(
            bucket.clone(),
            bucket,
            WATCH_POLL,
        )))
    }

    /// The consistent read every read-modify-write starts from, which carries the expiry.
    async fn get_with_ttl(&self, key: &str) -> Result<Option<kv_core::StoredValue>> {
        rmw::get_with_ttl(self, key).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.read_live(key).await?.map(|(value, _)| value))
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<()> {
        self.write(key, &value, None, None, Condition::None).await?;
        Ok(())
    }

    async fn set_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()> {
        self.write(
            key,
            &value,
            Some(clock::expires_at_ms(ttl)),
            None,
            Condition::None,
        )
        .await?;
        Ok(())
    }

    /// Replaces the item with a tombstone (no value, expired on every clock), which the service removes
    /// after rmw::TOMBSTONE_RETENTION: a CAS handle taken before can tell the key was deleted
    /// (S7). A key with no item needs none.
    async fn delete(&self, key: &str) -> Result<()> {
        self.write(
            key,
            b"",
            Some(rmw::TOMBSTONE_EXPIRES_AT_MS),
            None,
            Condition::Exists,
        )
        .await
        .map(drop)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.read_live(key).await?.is_some())
    }

    async fn list_keys(&self, cursor_in: Option<&str>, limit: usize) -> Result<KeyPage> {
        let (mut shard, mut token) = match cursor_in {
            Some(cursor) => parse_cursor(cursor)?,
            None => (0, None),
        };
        let mut keys = Vec::new();
        loop {
            let remaining = limit.saturating_sub(keys.len());
            let (page, next) = self.query_shard(shard, token.take(), remaining).await?;
            keys.extend(page);
            if let Some(next) = next {
                return Ok(KeyPage {
                    keys,
                    cursor: Some(cursor(shard, Some(&next))),
                });
            }
            shard += 1;
            if shard == SHARDS {
                return Ok(KeyPage { keys, cursor: None });
            }
            if keys.len() >= limit {
                return Ok(KeyPage {
                    keys,
                    cursor: Some(cursor(shard, None)),
                });
            }
        }
    }

    async fn increment(
        &self,
        key: &str,
        delta: i64,
        range: kv_core::CounterRange,
        attempt: &mut Attempt,
    ) -> Result<i64> {
        rmw::increment_within(self, key, delta, range, attempt).await
    }

    async fn read_versioned(&self, key: &str) -> Result<Versioned> {
        rmw::read_versioned(self, key).await
    }

    async fn swap(
        &self,
        key: &str,
        expected: &Version,
        value: Bytes,
        attempt: &mut Attempt,
    ) -> Result<SwapOutcome> {
        rmw::swap(self, key, expected, &value, attempt).await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        futures::stream::iter(keys.iter().cloned())
            .map(|key| async move { self.get(&key).await })
            .buffered(BATCH_CONCURRENCY)
            .try_collect()
            .await
    }

    async fn set_many(&self, entries: &[(String, Bytes)]) -> Result<()> {
        let writes: Vec<_> = last_entry_per_key(entries)
            .into_iter()
            .map(|(key, value)| self.set(key, value.clone()))
            .collect();
        futures::stream::iter(writes)
            .buffer_unordered(BATCH_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        futures::stream::iter(keys.iter().cloned())
            .map(|key| async move { self.delete(&key).await })
            .buffer_unordered(BATCH_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_safe_and_bounded() {
        for key in [
            "a",
            "a/b",
            "a\\b",
            "?#",
            "é",
            &"x".repeat(767),
            &"x".repeat(1024),
        ] {
            let id = item_id(key);
            assert!(id.len() <= MAX_ID_BYTES, "{key}");
            assert!(!id.contains(['/', '\\', '?', '#']), "{id}");
        }
        assert_ne!(item_id("a"), item_id("b"));
        assert!(item_id(&"x".repeat(1024)).starts_with('~'));
        assert!(!item_id(&"x".repeat(767)).starts_with('~'));
    }

    #[test]
    fn partitions_are_prefix_free() {
        assert_eq!(partition("ns", 10), "2/ns/a");
        assert_ne!(partition("a", 1), partition("a/1", 0));
        assert!(!partition("x:1", 0).starts_with(&namespace_prefix("x")));
    }

    #[test]
    fn cursors_round_trip() {
        assert_eq!(
            parse_cursor(&cursor(3, Some("tok.en"))).unwrap(),
            (3, Some("tok.en".into()))
        );
        assert_eq!(parse_cursor(&cursor(15, None)).unwrap(), (15, None));
        assert!(parse_cursor("10.x").is_err());
        assert!(parse_cursor("zz").is_err());
    }
}
