//! The mapping of the contract onto S3 objects (README.md has the table).
//!
//! One object per key: `<prefix>kv/<namespace length>/<namespace>/<encoded key>`, the value as
//! its body. User metadata carries the expiry (`expires-at`, Unix ms, filtered on every read),
//! the journal of the last increments and swaps (`kv-journal`, `kv_core::rmw`) and, for a key
//! whose name would exceed S3's 1,024 bytes, the key itself (`kv-key`, base64url). Versions
//! are ETags; conditional writes are `If-Match` and `If-None-Match: *`.
//!
//! A delete leaves a tombstone: an object of 16 random bytes (so its ETag is its own) expired
//! at the deletion and tagged [`TOMBSTONE_TAG`], so a CAS handle taken on the missing key sees
//! it was written and deleted since (S7). A listing does not return metadata, so every object
//! it finds is asked for its own (`HeadObject`) before its key is returned.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{StreamExt as _, TryStreamExt as _};
use kv_core::naming::{KeyCodec, namespace_prefix};
use kv_core::provider::DEFAULT_BATCH_CONCURRENCY;
use kv_core::rmw::{self, ConditionalStore, Expect, Journal, Read, Snapshot, Write};
use kv_core::{
    Attempt, Bucket, Bytes, Capabilities, KeyPage, KvError, Provider, Result, SwapOutcome, Version,
    Versioned, clock,
};

use super::error::{is_not_found, lost_the_race, map_sdk_error};

/// User metadata: expiry in Unix milliseconds.
pub const META_EXPIRES: &str = "expires-at";
/// User metadata: the original key of a hashed object name (base64url).
pub const META_KEY: &str = "kv-key";
/// User metadata: the journal of the last increments and swaps (exactly-once retries).
pub const META_JOURNAL: &str = "kv-journal";
/// User metadata: a random id every write of this provider stores, so a version (`ETag|id`)
/// names one write even when the bytes, and so the ETag, come back.
pub const META_WRITE: &str = "kv-write";
/// The id's length: 64 random bits in hex.
const WRITE_ID_BYTES: usize = 16;
/// The tag of a tombstone, which the lifecycle rule of `ensure_bucket` removes after a day.
pub const TOMBSTONE_TAG: &str = "kv-tombstone";
/// The tag's value.
pub const TOMBSTONE_TAG_VALUE: &str = "1";
/// S3 object keys are at most 1,024 bytes of UTF-8.
const MAX_NAME_BYTES: usize = 1024;
/// Values go in one `PutObject` and are read whole, so they are kept to a size that fits
/// comfortably in memory (S3 itself takes 5 GB in one request).
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
/// Object names: `%` and control characters percent-encoded; names over 1,024 bytes hashed,
/// marked `%h`.
pub const KEY_CODEC: KeyCodec = KeyCodec::PERCENT;
/// S3 keeps at most 2 KB of user metadata per object, names and values counted.
const MAX_METADATA_BYTES: usize = 2048;
/// One journal entry and its separator at the longest (`kv_core::rmw::Journal::encode`).
const MAX_JOURNAL_ENTRY_BYTES: usize = 8 + 1 + 16 + 1 + "-9223372036854775808".len() + 1;
/// The longest expiry in Unix milliseconds.
const MAX_EXPIRY_DIGITS: usize = 20;
/// The longest `kv-key`: the base64url of a 1,024-byte key.
const MAX_KEY_METADATA_BYTES: usize = 1366;
/// Journal entries that fit in S3's user metadata beside everything else an object carries:
/// 42 for a key stored under its own name, 13 for a hashed one (its key in `kv-key`).
const fn journal_len(hashed: bool) -> usize {
    let mut left = MAX_METADATA_BYTES
        - META_EXPIRES.len()
        - MAX_EXPIRY_DIGITS
        - META_WRITE.len()
        - WRITE_ID_BYTES
        - META_JOURNAL.len();
    if hashed {
        left -= META_KEY.len() + MAX_KEY_METADATA_BYTES;
    }
    (left + 1) / MAX_JOURNAL_ENTRY_BYTES
}
/// A tombstone's body: random bytes, so every tombstone has an ETag of its own.
const TOMBSTONE_BYTES: usize = 16;

/// A provider over one bucket.
#[derive(Clone)]
pub struct S3Provider {
    client: Client,
    bucket: Arc<str>,
    prefix: Arc<str>,
    sdk_resends: bool,
}

impl S3Provider {
    /// A provider over `bucket`, every object key starting with `prefix` ("" or ending in `/`).
    pub fn new(client: Client, bucket: &str, prefix: &str) -> Self {
        S3Provider {
            client,
            bucket: bucket.into(),
            prefix: prefix.into(),
            sdk_resends: false,
        }
    }

    /// Declares that the client's retry mode may resend a request (`max_attempts > 1`), so a
    /// failed precondition may be a resend meeting its own first write.
    pub fn with_sdk_resends(mut self, resends: bool) -> Self {
        self.sdk_resends = resends;
        self
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The object key prefix of `namespace`: the bucket prefix, `kv/`, and the prefix-free
    /// [`namespace_prefix`], so no namespace's objects are listed with another's.
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        format!("{}kv/{}", self.prefix, namespace_prefix(namespace))
    }
}

#[async_trait]
impl Provider for S3Provider {
    fn name(&self) -> &str {
        "s3"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            cas: true,
            list_may_repeat: false,
            max_value_bytes: MAX_VALUE_BYTES,
            ..Capabilities::default()
        }
    }

    async fn open(&self, namespace: &str) -> Result<Arc<dyn Bucket>> {
        Ok(Arc::new(S3Bucket {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            prefix: self.namespace_prefix(namespace),
            sdk_resends: self.sdk_resends,
        }))
    }
}

struct S3Bucket {
    client: Client,
    bucket: Arc<str>,
    prefix: String,
    sdk_resends: bool,
}

/// An object's metadata as this provider reads it.
#[derive(Debug)]
struct Head {
    etag: String,
    expires_at: Option<u64>,
    journal: Journal,
    /// The key of a hashed name.
    key: Option<String>,
}

impl Head {
    fn of(etag: Option<&str>, metadata: Option<&HashMap<String, String>>) -> Result<Head> {
        let etag = etag
            .ok_or_else(|| KvError::internal("s3: an object answer has no ETag"))?
            .to_string();
        let field = |name: &str| metadata.and_then(|metadata| metadata.get(name));
        // `ETag|write id`: the write, not just its bytes (an object written by another tool has
        // its ETag alone).
        let etag = match field(META_WRITE) {
            Some(id) => format!("{etag}|{id}"),
            None => etag,
        };
        Ok(Head {
            etag,
            expires_at: field(META_EXPIRES).and_then(|at| at.parse().ok()),
            journal: field(META_JOURNAL)
                .map(|text| Journal::parse(text))
                .unwrap_or_default(),
            key: field(META_KEY)
                .and_then(|encoded| URL_SAFE_NO_PAD.decode(encoded).ok())
                .and_then(|bytes| String::from_utf8(bytes).ok()),
        })
    }

    fn live(&self) -> bool {
        clock::is_live(self.expires_at, clock::now_ms())
    }
}

/// What a write is conditioned on.
enum Condition {
    None,
    /// `If-None-Match: *`.
    Absent,
    /// `If-Match: <etag>`.
    Matches(String),
}

impl S3Bucket {
    /// The object key of `key`: percent-encoded, or hashed when too long (the key then travels
    /// in metadata).
    fn name(&self, key: &str) -> (String, bool) {
        let budget = MAX_NAME_BYTES.saturating_sub(self.prefix.len());
        let stored = KEY_CODEC.name(key, budget);
        (format!("{}{}", self.prefix, stored.name), stored.hashed)
    }

    /// The object's metadata and bytes, in one consistent answer; `None` when there is none.
    async fn fetch(&self, key: &str) -> Result<Option<(Head, Vec<u8>)>> {
        let (name, _) = self.name(key);
        let output = match self
            .client
            .get_object()
            .bucket(self.bucket.as_ref())
            .key(&name)
            .send()
            .await
        {
            Ok(output) => output,
            Err(err) if is_not_found(&err) => return Ok(None),
            Err(err) => return Err(map_sdk_error("GetObject", err)),
        };
        let head = Head::of(output.e_tag(), output.metadata())?;
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|err| KvError::unavailable(format!("s3 GetObject: reading the body: {err}")))?
            .into_bytes()
            .to_vec();
        Ok(Some((head, bytes)))
    }

    /// The metadata of the object `name`; `None` when there is none.
    async fn head(&self, name: &str) -> Result<Option<Head>> {
        match self
            .client
            .head_object()
            .bucket(self.bucket.as_ref())
            .key(name)
            .send()
            .await
        {
            Ok(output) => Head::of(output.e_tag(), output.metadata()).map(Some),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(map_sdk_error("HeadObject", err)),
        }
    }

    /// Writes `value` with its metadata; `Ok(false)` when `condition` did not hold (or another
    /// conditional write to the key was in flight).
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        expires_at: Option<u64>,
        journal: Option<&Journal>,
        condition: Condition,
        tombstone: bool,
    ) -> Result<bool> {
        let (name, hashed) = self.name(key);
        let mut metadata = HashMap::new();
        metadata.insert(
            META_WRITE.to_string(),
            format!("{:016x}", rand::random::<u64>()),
        );
        if let Some(at) = expires_at {
            metadata.insert(META_EXPIRES.to_string(), at.to_string());
        }
        if let Some(journal) = journal.filter(|journal| !journal.is_empty()) {
            metadata.insert(META_JOURNAL.to_string(), journal.encode());
        }
        if hashed {
            metadata.insert(META_KEY.to_string(), URL_SAFE_NO_PAD.encode(key));
        }
        let mut request = self
            .client
            .put_object()
            .bucket(self.bucket.as_ref())
            .key(&name)
            .content_type("application/octet-stream")
            .set_metadata(Some(metadata))
            .body(ByteStream::from(value));
        if tombstone {
            request = request.tagging(format!("{TOMBSTONE_TAG}={TOMBSTONE_TAG_VALUE}"));
        }
        let conditioned = !matches!(condition, Condition::None);
        request = match condition {
            Condition::None => request,
            Condition::Absent => request.if_none_match("*"),
            // The ETag of an `ETag|write id` version: S3 conditions on the bytes' digest alone.
            Condition::Matches(version) => {
                request.if_match(version.split('|').next().unwrap_or_default())
            }
        };
        match request.send().await {
            Ok(_) => Ok(true),
            // `If-Match` on an object deleted meanwhile is 404: lost too.
            Err(err) if conditioned && (lost_the_race(&err) || is_not_found(&err)) => Ok(false),
            Err(err) => Err(map_sdk_error("PutObject", err)),
        }
    }

    /// The key of a listed object, if it is live: asked for its metadata, since a listing
    /// carries none (expiry, tombstone, the key of a hashed name).
    async fn listed_key(&self, name: String) -> Result<Option<String>> {
        let Some(rest) = name.strip_prefix(&self.prefix) else {
            return Ok(None);
        };
        let Some(head) = self.head(&name).await? else {
            // Deleted meanwhile: not listed.
            return Ok(None);
        };
        if !head.live() {
            return Ok(None);
        }
        Ok(KEY_CODEC.key_of(rest, || head.key.clone()))
    }
}

/// ETags make read-modify-write safe: the write is conditioned on the ETag read (or on no
/// object), and the journal travels in the object's metadata. ETags are digests of the bytes,
/// so a write of the same bytes keeps the ETag (docs/providers/s3.md declares what follows).
#[async_trait]
impl ConditionalStore for S3Bucket {
    async fn read(&self, key: &str) -> Result<Read> {
        Ok(match self.fetch(key).await? {
            None => Read::Missing,
            Some((head, bytes)) => Read::Found(Snapshot {
                value: if head.live() { bytes } else { Vec::new() },
                version: head.etag,
                expires_at_ms: head.expires_at,
                journal: head.journal,
            }),
        })
    }

    async fn write_if(&self, key: &str, write: Write, expect: Expect) -> Result<bool> {
        let condition = match expect {
            Expect::Absent => Condition::Absent,
            Expect::Version(etag) => Condition::Matches(etag),
        };
        self.put(
            key,
            write.value,
            write.expires_at_ms,
            Some(&write.journal),
            condition,
            false,
        )
        .await
    }

    fn queue_name(&self, key: &str) -> String {
        format!("s3\0{}\0{}", self.bucket, self.name(key).0)
    }

    fn resends_conditional_writes(&self) -> bool {
        self.sdk_resends
    }

    fn journal_len(&self, key: &str) -> usize {
        journal_len(self.name(key).1)
    }

    fn version_names_one_write(&self, version: &str) -> bool {
        version.contains('|')
    }
}

#[async_trait]
impl Bucket for S3Bucket {
    /// The consistent read every read-modify-write starts from, which carries the expiry.
    async fn get_with_ttl(&self, key: &str) -> Result<Option<kv_core::StoredValue>> {
        rmw::get_with_ttl(self, key).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .fetch(key)
            .await?
            .filter(|(head, _)| head.live())
            .map(|(_, bytes)| bytes))
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<()> {
        self.put(key, value.to_vec(), None, None, Condition::None, false)
            .await
            .map(drop)
    }

    async fn set_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()> {
        let at = clock::expires_at_ms(ttl);
        self.put(key, value.to_vec(), Some(at), None, Condition::None, false)
            .await
            .map(drop)
    }

    /// Writes a tombstone: random bytes, expired on every clock, tagged for the lifecycle rule.
    async fn delete(&self, key: &str) -> Result<()> {
        let body: [u8; TOMBSTONE_BYTES] = rand::random();
        self.put(
            key,
            body.to_vec(),
            Some(rmw::TOMBSTONE_EXPIRES_AT_MS),
            None,
            Condition::None,
            true,
        )
        .await
        .map(drop)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self
            .head(&self.name(key).0)
            .await?
            .is_some_and(|head| head.live()))
    }

    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage> {
        let output = self
            .client
            .list_objects_v2()
            .bucket(self.bucket.as_ref())
            .prefix(&self.prefix)
            .max_keys(i32::try_from(limit).unwrap_or(1000))
            .set_continuation_token(cursor.map(str::to_string))
            .send()
            .await
            .map_err(|err| map_sdk_error("ListObjectsV2", err))?;
        let names: Vec<String> = output
            .contents()
            .iter()
            .filter_map(|object| object.key().map(str::to_string))
            .collect();
        let keys: Vec<Option<String>> = futures::stream::iter(names)
            .map(|name| self.listed_key(name))
            .buffered(DEFAULT_BATCH_CONCURRENCY)
            .try_collect()
            .await?;
        let cursor = output
            .next_continuation_token()
            .filter(|token| !token.is_empty() && output.is_truncated() == Some(true))
            .map(str::to_string);
        Ok(KeyPage {
            keys: keys.into_iter().flatten().collect(),
            cursor,
        })
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_fits_in_the_metadata_limit() {
        assert_eq!((journal_len(false), journal_len(true)), (42, 13));
        for hashed in [false, true] {
            let entries = journal_len(hashed);
            let journal = entries * MAX_JOURNAL_ENTRY_BYTES - 1;
            let mut used = META_EXPIRES.len()
                + MAX_EXPIRY_DIGITS
                + META_WRITE.len()
                + WRITE_ID_BYTES
                + META_JOURNAL.len()
                + journal;
            if hashed {
                used += META_KEY.len() + MAX_KEY_METADATA_BYTES;
            }
            assert!(used <= MAX_METADATA_BYTES, "{hashed}: {used}");
        }
        assert_eq!(
            URL_SAFE_NO_PAD.encode([0u8; 1024]).len(),
            MAX_KEY_METADATA_BYTES
        );
    }
}
