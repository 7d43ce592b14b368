//! The mapping of the contract onto one DynamoDB table (README.md has the table).
//!
//! Item: `ns` (S, partition key) = namespace, `k` (S, sort key) = key, and either `v` (B) for a
//! value written by `set` or `c` (N) for a counter, `ver` (S) a random version written by every
//! write (CAS), `until` (N) the expiry in epoch milliseconds, filtered on every read, `exp` (N)
//! epoch seconds at which DynamoDB may remove the item (its TTL attribute, ten minutes past
//! `until`; items written before `until` existed expire at `exp`), `jr` (S) the journal of the
//! last increments and swaps. A delete writes a tombstone: no value, expired at the deletion,
//! so a CAS handle taken on the missing key sees it was written and deleted since
//! (`kv_core::rmw::TOMBSTONE_RETENTION`). [`MAX_VALUE_BYTES`] leaves room for all of them at
//! their largest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, PutRequest, WriteRequest};
use futures::future::try_join_all;
use kv_core::provider::last_entry_per_key;
use kv_core::rmw::{self, ConditionalStore, Expect, JOURNAL_LEN, Journal, Read, Snapshot, Write};
use kv_core::{
    Attempt, Backoff, Bucket, Bytes, Capabilities, ErrorKind, KeyPage, KvError, Provider, Result,
    SwapOutcome, Version, Versioned, clock,
};

use super::error::map_sdk_error;

/// Partition key attribute: the namespace.
pub const ATTR_NAMESPACE: &str = "ns";
/// Sort key attribute: the key.
pub const ATTR_KEY: &str = "k";
/// Binary value written by `set`.
pub const ATTR_VALUE: &str = "v";
/// Number written by `increment` before the journaled read-modify-write; still read.
pub const ATTR_COUNTER: &str = "c";
/// The journal of the last increments and swaps (exactly-once retries, `kv_core::rmw`).
pub const ATTR_JOURNAL: &str = "jr";
/// Random version, replaced by every write.
pub const ATTR_VERSION: &str = "ver";
/// When DynamoDB may remove the item, in epoch seconds (registered with UpdateTimeToLive):
/// [`kv_core::rmw::TOMBSTONE_RETENTION`] past [`ATTR_UNTIL`]. Items written before `until`
/// existed also expire at it.
pub const ATTR_EXPIRES: &str = "exp";
/// Expiry in epoch milliseconds, what every read checks: a TTL's end, or a tombstone's
/// deletion.
pub const ATTR_UNTIL: &str = "until";

/// DynamoDB's item limit, attribute names and values included.
pub const MAX_ITEM_BYTES: usize = 409_600;
/// The longest namespace a store is configured with (`kv_core::config`).
pub const MAX_NAMESPACE_BYTES: usize = 256;
/// The longest key (S1). Keys are stored as they are, so this is also its stored size.
pub const MAX_KEY_BYTES: usize = 1024;
/// A version: 128 random bits in hex ([`new_version`]).
const VERSION_BYTES: usize = 32;
/// The largest number DynamoDB stores (38 significant digits), whatever the expiry is.
const MAX_NUMBER_BYTES: usize = 21;
/// The longest journal entry, `base.request.result` and its `;` separator
/// ([`Journal::encode`]): 8 hex digits, `.`, 16 hex digits, `.`, and the longest result, an
/// i64 total in decimal (`-9223372036854775808`, 20 characters; a swap records `s`).
pub const MAX_JOURNAL_ENTRY_BYTES: usize = 8 + 1 + 16 + 1 + "-9223372036854775808".len() + 1;
/// The longest journal: [`JOURNAL_LEN`] of the longest entries, without a trailing `;`.
pub const MAX_JOURNAL_BYTES: usize = JOURNAL_LEN * MAX_JOURNAL_ENTRY_BYTES - 1;
/// Everything an item holds besides the value's bytes, at its worst: each attribute's name,
/// the longest namespace and key, the version, an expiry at DynamoDB's largest number, and a
/// full journal of the longest entries (an increment or swap writes one beside any value).
pub const MAX_ITEM_OVERHEAD_BYTES: usize = ATTR_NAMESPACE.len()
    + MAX_NAMESPACE_BYTES
    + ATTR_KEY.len()
    + MAX_KEY_BYTES
    + ATTR_VALUE.len()
    + ATTR_VERSION.len()
    + VERSION_BYTES
    + ATTR_EXPIRES.len()
    + MAX_NUMBER_BYTES
    + ATTR_UNTIL.len()
    + MAX_NUMBER_BYTES
    + ATTR_JOURNAL.len()
    + MAX_JOURNAL_BYTES;
/// The largest value every key fits with, however it is written (`set`, `set-with-ttl`,
/// `swap`, and every increment and swap after it): the item limit less the worst case of
/// everything else ([`MAX_ITEM_OVERHEAD_BYTES`]). 402,214 bytes.
pub const MAX_VALUE_BYTES: usize = MAX_ITEM_BYTES - MAX_ITEM_OVERHEAD_BYTES;
// S2: every provider stores at least 256 KiB.
const _: () = assert!(MAX_VALUE_BYTES >= 256 * 1024);
/// BatchGetItem keys per call.
const BATCH_READ: usize = 100;
/// BatchWriteItem requests per call.
const BATCH_WRITE: usize = 25;
/// Batch calls in flight at once per operation.
const BATCH_PARALLEL: usize = 8;
/// Rounds of retrying unprocessed batch items before giving up as `throttled`.
const UNPROCESSED_ROUNDS: u32 = 10;
/// A provider over one DynamoDB table.
#[derive(Clone)]
pub struct DynamoProvider {
    client: Client,
    table: Arc<str>,
    sdk_resends: bool,
    streams: Option<StreamsAccess>,
    /// One writer for every bucket of the provider, so a `set` through any of them is seen
    /// by the increments of all.
    writer: Arc<super::counter::Writer>,
}

/// What a bucket needs to follow the table's stream (`wasi-kv watch`).
#[derive(Clone)]
struct StreamsAccess {
    client: aws_sdk_dynamodbstreams::Client,
    /// Enable the stream where the table has none.
    enable: bool,
}

impl DynamoProvider {
    /// A provider over `table` (which must exist, see [`super::client::ensure_table`]).
    pub fn new(client: Client, table: &str) -> Self {
        DynamoProvider {
            client,
            table: table.into(),
            sdk_resends: false,
            streams: None,
            writer: Arc::new(super::counter::Writer::new()),
        }
    }

    /// Lets buckets report their changes from the table's DynamoDB Stream (`wasi-kv watch`),
    /// enabling it first where the table has none if `enable` (the provider provisions).
    pub fn with_change_feed(
        mut self,
        client: aws_sdk_dynamodbstreams::Client,
        enable: bool,
    ) -> Self {
        self.streams = Some(StreamsAccess { client, enable });
        self
    }

    /// Declares that the client's retry mode may resend a request (`max_attempts > 1`), so a
    /// conditional check failure may be a resend meeting its own first write.
    pub fn with_sdk_resends(mut self, resends: bool) -> Self {
        self.sdk_resends = resends;
        self
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

#[async_trait]
impl Provider for DynamoProvider {
    fn name(&self) -> &str {
        "dynamodb"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            cas: true,
            list_may_repeat: false,
            max_value_bytes: MAX_VALUE_BYTES,
            // The stream holds every write's item for 24 hours; a TTL that runs out is seen
            // only when DynamoDB removes the item, ten minutes to days later.
            watch: self.streams.as_ref().map(|_| kv_core::watch::WatchSupport {
                durable: true,
                reports_expiry: false,
                every_value: true,
            }),
            ..Capabilities::default()
        }
    }

    async fn open(&self, namespace: &str) -> Result<Arc<dyn Bucket>> {
        Ok(Arc::new(DynamoBucket {
            client: self.client.clone(),
            table: self.table.clone(),
            namespace: namespace.to_string(),
            sdk_resends: self.sdk_resends,
            streams: self.streams.clone(),
            writer: self.writer.clone(),
        }))
    }
}

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) struct DynamoBucket {
    pub(super) client: Client,
    pub(super) table: Arc<str>,
    namespace: String,
    pub(super) sdk_resends: bool,
    streams: Option<StreamsAccess>,
    pub(super) writer: Arc<super::counter::Writer>,
}

pub(super) fn s(text: impl Into<String>) -> AttributeValue {
    AttributeValue::S(text.into())
}

/// A fresh random version for every write: 128 random bits, so a rewrite of the same value
/// still changes it (ABA is detected).
pub(super) fn new_version() -> AttributeValue {
    s(format!("{:032x}", rand::random::<u128>()))
}

pub(super) fn number(item: &Item, name: &str) -> Option<u64> {
    match item.get(name) {
        Some(AttributeValue::N(text)) => text.parse().ok(),
        _ => None,
    }
}

/// The item's expiry in epoch milliseconds: `until`, or for an item written before it existed,
/// `exp`.
pub(super) fn expires_ms(item: &Item) -> Option<u64> {
    number(item, ATTR_UNTIL).or_else(|| number(item, ATTR_EXPIRES).map(|secs| secs * 1000))
}

pub(super) fn is_live(item: &Item, now_ms: u64) -> bool {
    clock::is_live(expires_ms(item), now_ms)
}

/// The expiry attributes of an item expiring at `until_ms`: `until`, and DynamoDB's TTL
/// attribute a tombstone's retention later, so the item outlives every CAS handle that could
/// miss its removal.
pub(super) fn expiry_attributes(until_ms: u64) -> [(String, AttributeValue); 2] {
    let remove_at = (until_ms / 1000).saturating_add(rmw::TOMBSTONE_RETENTION.as_secs());
    [
        (ATTR_UNTIL.to_string(), n(until_ms)),
        (ATTR_EXPIRES.to_string(), n(remove_at)),
    ]
}

fn n(number: u64) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

fn counter_of(item: &Item) -> Result<Option<i64>> {
    match item.get(ATTR_COUNTER) {
        Some(AttributeValue::N(text)) => text.parse().map(Some).map_err(|_| {
            KvError::internal(format!(
                "dynamodb: counter attribute {text:?} is not an i64"
            ))
        }),
        Some(_) => Err(KvError::internal(
            "dynamodb: counter attribute is not a number",
        )),
        None => Ok(None),
    }
}

/// The value of a live item: the binary value, or the counter as ASCII decimal.
pub(super) fn value_of(item: &Item) -> Result<Vec<u8>> {
    match item.get(ATTR_VALUE) {
        Some(AttributeValue::B(blob)) => Ok(blob.as_ref().to_vec()),
        Some(_) => Err(KvError::internal("dynamodb: value attribute is not binary")),
        None => match counter_of(item)? {
            Some(counter) => Ok(counter.to_string().into_bytes()),
            None => Err(KvError::internal(
                "dynamodb: item has neither a value nor a counter",
            )),
        },
    }
}

pub(super) fn is_conditional_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    err: &SdkError<E, R>,
) -> bool {
    err.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

impl DynamoBucket {
    /// The key as the provider's writer knows it: with its namespace.
    pub(super) fn writer_key(&self, key: &str) -> String {
        format!("{}\0{key}", self.namespace)
    }

    pub(super) fn key(&self, key: &str) -> Item {
        HashMap::from([
            (ATTR_NAMESPACE.to_string(), s(&self.namespace)),
            (ATTR_KEY.to_string(), s(key)),
        ])
    }

    fn value_item(&self, key: &str, value: impl Into<Vec<u8>>, expires_at_ms: Option<u64>) -> Item {
        let mut item = self.key(key);
        item.insert(ATTR_VALUE.into(), AttributeValue::B(Blob::new(value)));
        item.insert(ATTR_VERSION.into(), new_version());
        if let Some(at) = expires_at_ms {
            item.extend(expiry_attributes(at));
        }
        item
    }

    /// What a delete leaves: no value, a new version, expired on every clock, removed by
    /// DynamoDB a tombstone's retention after now.
    fn tombstone(&self, key: &str) -> Item {
        let mut item = self.key(key);
        item.insert(ATTR_VERSION.into(), new_version());
        let remove_at = clock::now_secs().saturating_add(rmw::TOMBSTONE_RETENTION.as_secs());
        item.insert(ATTR_UNTIL.into(), n(rmw::TOMBSTONE_EXPIRES_AT_MS));
        item.insert(ATTR_EXPIRES.into(), n(remove_at));
        item
    }

    /// The item an increment or swap writes: the value item and its journal.
    fn journaled_item(&self, key: &str, write: Write) -> Item {
        let mut item = self.value_item(key, write.value, write.expires_at_ms);
        if !write.journal.is_empty() {
            item.insert(ATTR_JOURNAL.into(), s(write.journal.encode()));
        }
        item
    }

    pub(super) async fn read(&self, key: &str) -> Result<Option<Item>> {
        let output = self
            .client
            .get_item()
            .table_name(self.table.as_ref())
            .set_key(Some(self.key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| map_sdk_error("GetItem", err))?;
        Ok(output.item)
    }

    async fn read_live(&self, key: &str) -> Result<Option<Item>> {
        Ok(self
            .read(key)
            .await?
            .filter(|item| is_live(item, clock::now_ms())))
    }

    async fn put(&self, item: Item) -> Result<()> {
        self.client
            .put_item()
            .table_name(self.table.as_ref())
            .set_item(Some(item))
            .send()
            .await
            .map(drop)
            .map_err(|err| map_sdk_error("PutItem", err))
    }

    async fn batch_get_chunk(&self, keys: &[String]) -> Result<HashMap<String, Vec<u8>>> {
        let mut pending: Vec<Item> = keys.iter().map(|key| self.key(key)).collect();
        let mut found = HashMap::new();
        let now = clock::now_ms();
        for round in 0..UNPROCESSED_ROUNDS {
            if pending.is_empty() {
                return Ok(found);
            }
            if round > 0 {
                Backoff::PRESSURE.wait(round).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(|err| KvError::internal(format!("dynamodb BatchGetItem: {err}")))?;
            let output = self
                .client
                .batch_get_item()
                .request_items(self.table.as_ref(), request)
                .send()
                .await
                .map_err(|err| map_sdk_error("BatchGetItem", err))?;
            if let Some(items) = output
                .responses
                .and_then(|mut r| r.remove(self.table.as_ref()))
            {
                for item in items {
                    if !is_live(&item, now) {
                        continue;
                    }
                    if let Some(AttributeValue::S(key)) = item.get(ATTR_KEY) {
                        found.insert(key.clone(), value_of(&item)?);
                    }
                }
            }
            pending = output
                .unprocessed_keys
                .and_then(|mut u| u.remove(self.table.as_ref()))
                .map(|k| k.keys)
                .unwrap_or_default();
        }
        if pending.is_empty() {
            Ok(found)
        } else {
            Err(KvError::new(
                ErrorKind::Throttled,
                "dynamodb BatchGetItem: keys left unprocessed after retries",
            ))
        }
    }

    async fn batch_write_chunk(&self, mut pending: Vec<WriteRequest>) -> Result<()> {
        for round in 0..UNPROCESSED_ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            if round > 0 {
                Backoff::PRESSURE.wait(round).await;
            }
            let output = self
                .client
                .batch_write_item()
                .request_items(self.table.as_ref(), std::mem::take(&mut pending))
                .send()
                .await
                .map_err(|err| map_sdk_error("BatchWriteItem", err))?;
            pending = output
                .unprocessed_items
                .and_then(|mut u| u.remove(self.table.as_ref()))
                .unwrap_or_default();
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(KvError::new(
                ErrorKind::Throttled,
                "dynamodb BatchWriteItem: items left unprocessed after retries",
            ))
        }
    }

    async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<()> {
        let chunks: Vec<Vec<WriteRequest>> =
            requests.chunks(BATCH_WRITE).map(<[_]>::to_vec).collect();
        for group in chunks.chunks(BATCH_PARALLEL) {
            try_join_all(
                group
                    .iter()
                    .map(|chunk| self.batch_write_chunk(chunk.clone())),
            )
            .await?;
        }
        Ok(())
    }
}

/// The random version attribute makes read-modify-write safe: the put is conditioned on it
/// (or on the item not existing), and the journal is an attribute of the item.
#[async_trait]
impl ConditionalStore for DynamoBucket {
    async fn read(&self, key: &str) -> Result<Read> {
        let Some(item) = DynamoBucket::read(self, key).await? else {
            return Ok(Read::Missing);
        };
        let live = is_live(&item, clock::now_ms());
        let version = match item.get(ATTR_VERSION) {
            Some(AttributeValue::S(version)) => version.clone(),
            _ => String::new(),
        };
        let journal = match item.get(ATTR_JOURNAL) {
            Some(AttributeValue::S(text)) => Journal::parse(text),
            _ => Journal::default(),
        };
        Ok(Read::Found(Snapshot {
            value: if live { value_of(&item)? } else { Vec::new() },
            version,
            expires_at_ms: expires_ms(&item),
            journal,
        }))
    }

    async fn write_if(&self, key: &str, write: Write, expect: Expect) -> Result<bool> {
        // The item is replaced: this store's increments read its incarnation again.
        self.writer.forget(&self.writer_key(key));
        let item = self.journaled_item(key, write);
        let request = self
            .client
            .put_item()
            .table_name(self.table.as_ref())
            .set_item(Some(item));
        let request = match expect {
            Expect::Absent => request
                .condition_expression("attribute_not_exists(#k)")
                .expression_attribute_names("#k", ATTR_KEY),
            Expect::Version(version) if version.is_empty() => request
                .condition_expression("attribute_exists(#k) AND attribute_not_exists(#ver)")
                .expression_attribute_names("#k", ATTR_KEY)
                .expression_attribute_names("#ver", ATTR_VERSION),
            Expect::Version(version) => request
                .condition_expression("#ver = :ver")
                .expression_attribute_names("#ver", ATTR_VERSION)
                .expression_attribute_values(":ver", s(version)),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(err) if is_conditional_failure(&err) => Ok(false),
            Err(err) => Err(map_sdk_error("PutItem conditional", err)),
        }
    }

    fn queue_name(&self, key: &str) -> String {
        format!("dynamodb\0{}\0{}\0{key}", self.table, self.namespace)
    }

    fn resends_conditional_writes(&self) -> bool {
        self.sdk_resends
    }
}

#[async_trait]
impl Bucket for DynamoBucket {
    fn change_feed(&self) -> Option<Arc<dyn kv_core::watch::ChangeFeed>> {
        let streams = self.streams.as_ref()?;
        Some(Arc::new(super::changes::DynamoFeed::new(
            self.client.clone(),
            streams.client.clone(),
            self.table.clone(),
            self.namespace.clone(),
            streams.enable,
        )))
    }

    /// The consistent read every read-modify-write starts from, which carries the expiry.
    async fn get_with_ttl(&self, key: &str) -> Result<Option<kv_core::StoredValue>> {
        rmw::get_with_ttl(self, key).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.read_live(key)
            .await?
            .map(|item| value_of(&item))
            .transpose()
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<()> {
        // The item is replaced: this store's increments read its incarnation again.
        self.writer.forget(&self.writer_key(key));
        self.put(self.value_item(key, value, None)).await
    }

    async fn set_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()> {
        // The item is replaced: this store's increments read its incarnation again.
        self.writer.forget(&self.writer_key(key));
        let expires_at = clock::expires_at_ms(ttl);
        self.put(self.value_item(key, value, Some(expires_at)))
            .await
    }

    /// A tombstone replaces the item, if there is one (a key with no item needs none).
    async fn delete(&self, key: &str) -> Result<()> {
        // The item is replaced: this store's increments read its incarnation again.
        self.writer.forget(&self.writer_key(key));
        let result = self
            .client
            .put_item()
            .table_name(self.table.as_ref())
            .set_item(Some(self.tombstone(key)))
            .condition_expression("attribute_exists(#k)")
            .expression_attribute_names("#k", ATTR_KEY)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_conditional_failure(&err) => Ok(()),
            Err(err) => Err(map_sdk_error("PutItem tombstone", err)),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let output = self
            .client
            .get_item()
            .table_name(self.table.as_ref())
            .set_key(Some(self.key(key)))
            .consistent_read(true)
            .projection_expression("#k, #e, #u")
            .expression_attribute_names("#k", ATTR_KEY)
            .expression_attribute_names("#e", ATTR_EXPIRES)
            .expression_attribute_names("#u", ATTR_UNTIL)
            .send()
            .await
            .map_err(|err| map_sdk_error("GetItem", err))?;
        Ok(output
            .item
            .is_some_and(|item| is_live(&item, clock::now_ms())))
    }

    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage> {
        let start = cursor.map(|after| self.key(after));
        let output = self
            .client
            .query()
            .table_name(self.table.as_ref())
            .key_condition_expression("#ns = :ns")
            // Live as in `is_live`: by `until`, or by `exp` for items written before it.
            .filter_expression(
                "(attribute_exists(#u) AND #u > :now_ms) \
                 OR (attribute_not_exists(#u) AND (attribute_not_exists(#e) OR #e > :now))",
            )
            .projection_expression("#k")
            .expression_attribute_names("#ns", ATTR_NAMESPACE)
            .expression_attribute_names("#k", ATTR_KEY)
            .expression_attribute_names("#e", ATTR_EXPIRES)
            .expression_attribute_names("#u", ATTR_UNTIL)
            .expression_attribute_values(":ns", s(&self.namespace))
            .expression_attribute_values(":now", n(clock::now_secs()))
            .expression_attribute_values(":now_ms", n(clock::now_ms()))
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(1000))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|err| map_sdk_error("Query", err))?;
        let keys = output
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|mut item| match item.remove(ATTR_KEY) {
                Some(AttributeValue::S(key)) => Some(key),
                _ => None,
            })
            .collect();
        let cursor = match output
            .last_evaluated_key
            .and_then(|mut k| k.remove(ATTR_KEY))
        {
            Some(AttributeValue::S(key)) => Some(key),
            _ => None,
        };
        Ok(KeyPage { keys, cursor })
    }

    async fn increment(
        &self,
        key: &str,
        delta: i64,
        range: kv_core::CounterRange,
        attempt: &mut Attempt,
    ) -> Result<i64> {
        let applier = super::counter::SlotIncrements { bucket: self, key };
        // The writes do not race (each writer has its own slot), so the turn is this store's.
        let name = format!("{:p}\0{}", Arc::as_ptr(&self.writer), self.writer_key(key));
        kv_core::combine::increment(self, &name, delta, range, attempt, 32, &applier).await
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
        // BatchGetItem rejects duplicate keys: ask once, fan the answers back out.
        let mut unique: Vec<String> = keys.to_vec();
        unique.sort();
        unique.dedup();
        let chunks: Vec<&[String]> = unique.chunks(BATCH_READ).collect();
        let mut found = HashMap::with_capacity(unique.len());
        for group in chunks.chunks(BATCH_PARALLEL) {
            for part in try_join_all(group.iter().map(|chunk| self.batch_get_chunk(chunk))).await? {
                found.extend(part);
            }
        }
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }

    async fn set_many(&self, entries: &[(String, Bytes)]) -> Result<()> {
        // The item is replaced: this store's increments read its incarnation again.
        for (key, _) in entries {
            self.writer.forget(&self.writer_key(key));
        }
        // BatchWriteItem rejects duplicate keys in one call: the last entry wins.
        let mut requests = Vec::new();
        for (key, value) in last_entry_per_key(entries) {
            let put = PutRequest::builder()
                .set_item(Some(self.value_item(key, value.clone(), None)))
                .build()
                .map_err(|err| KvError::internal(format!("dynamodb PutRequest: {err}")))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        self.batch_write(requests).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        // The item is replaced: this store's increments read its incarnation again.
        for key in keys {
            self.writer.forget(&self.writer_key(key));
        }
        let mut unique: Vec<&String> = keys.iter().collect();
        unique.sort();
        unique.dedup();
        let mut requests = Vec::new();
        // BatchWriteItem takes no conditions: every key gets a tombstone, which DynamoDB
        // removes after the retention.
        for key in unique {
            let put = PutRequest::builder()
                .set_item(Some(self.tombstone(key)))
                .build()
                .map_err(|err| KvError::internal(format!("dynamodb PutRequest: {err}")))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        self.batch_write(requests).await
    }
}

/// An item's size as DynamoDB counts it against [`MAX_ITEM_BYTES`]: each attribute's name plus
/// its value; strings and binaries by their bytes, numbers at one byte per two significant
/// digits plus one. For tests that check the provider's size budget against real items.
pub fn item_bytes(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_bytes(value))
        .sum()
}

/// A value's size as DynamoDB counts it; a map (a counter's slots) is 3 bytes, and 1 byte
/// beside each entry's name and value.
fn value_bytes(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::B(blob) => blob.as_ref().len(),
        AttributeValue::N(number) => {
            let digits = number
                .trim_start_matches('-')
                .replace('.', "")
                .trim_matches('0')
                .len();
            digits.div_ceil(2) + 1
        }
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(name, value)| 1 + name.len() + value_bytes(value))
                .sum::<usize>()
        }
        // Not written by this provider.
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest journal the core can write, in its own format: every entry at the longest
    /// base, request and result.
    fn longest_journal() -> Journal {
        let entry = format!("{:08x}.{:016x}.{}", u32::MAX, u64::MAX, i64::MIN);
        let text = vec![entry; JOURNAL_LEN].join(";");
        let journal = Journal::parse(&text);
        assert_eq!(journal.encode(), text, "the journal's format changed");
        journal
    }

    #[test]
    fn the_budget_is_derived_from_the_journal_format() {
        let journal = longest_journal().encode();
        assert_eq!(journal.len(), MAX_JOURNAL_BYTES);
        let entry = journal.split(';').next().unwrap_or_default();
        assert_eq!(entry.len() + 1, MAX_JOURNAL_ENTRY_BYTES);
        assert_eq!(MAX_JOURNAL_BYTES, 6_015);
        assert_eq!(MAX_ITEM_OVERHEAD_BYTES, 7_386);
        assert_eq!(MAX_VALUE_BYTES, 402_214);
    }

    /// The worst item this provider writes, built by its own code, fits DynamoDB's limit:
    /// the longest namespace and key, a value at the maximum, the latest expiry and the
    /// longest journal.
    #[test]
    fn the_largest_journaled_item_fits() {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .build();
        let bucket = DynamoBucket {
            client: Client::from_conf(config),
            table: "t".into(),
            namespace: "n".repeat(MAX_NAMESPACE_BYTES),
            sdk_resends: false,
            streams: None,
            writer: Arc::new(super::super::counter::Writer::new()),
        };
        let write = Write {
            value: vec![0xff; MAX_VALUE_BYTES],
            expires_at_ms: Some(u64::MAX),
            journal: longest_journal(),
        };
        let item = bucket.journaled_item(&"k".repeat(MAX_KEY_BYTES), write);
        let size = item_bytes(&item);
        assert!(size <= MAX_ITEM_BYTES, "{size}");
        // Only the expiry's two numbers are below their bound (no expiry has 38 digits).
        assert!(MAX_ITEM_BYTES - size < 2 * MAX_NUMBER_BYTES, "{size}");
    }
}
