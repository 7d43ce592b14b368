//! The mapping of the contract onto block blobs (docs/providers/azblob.md has the table).
//!
//! One blob per key: `<prefix>kv/n<namespace>/<key>`, namespace and key in unpadded base64url
//! (blob names that end in `.` or `/`, or hold `\`, are not kept as given by every Azure
//! front end), the value as its body. Metadata carries the expiry (`expires_at`, Unix ms,
//! filtered on every read), the journal of the last increments and swaps (`kv_journal`,
//! `kv_core::rmw`) and, for a key whose name would exceed 1,024 characters, the key itself
//! (`kv_key`, base64url). Versions are ETags, which change on every write; conditional writes
//! are `If-Match` and `If-None-Match: *`.
//!
//! A delete leaves a tombstone: an empty blob expired on every clock, with the index tag
//! [`TOMBSTONE_TAG`] `= 1` for a lifecycle management rule to remove (every other write sets it
//! to `0`, so a value written over a tombstone never keeps the mark, whatever the service does
//! with an overwritten blob's tags), so a CAS handle taken on the
//! missing key sees it was written and deleted since (S7). A listing carries every blob's
//! metadata, so expired blobs and tombstones are skipped without asking for more.

use std::collections::HashMap;
use std::num::NonZero;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::{Etag, NoFormat, RequestContent};
use azure_storage_blob::BlobContainerClient;
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders as _, BlobClientUploadOptions,
    BlobContainerClientListBlobsOptions, ListBlobsIncludeItem,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt as _;
use kv_core::naming::KeyCodec;
use kv_core::rmw::{self, ConditionalStore, Expect, Journal, Read, Snapshot, Write};
use kv_core::{
    Attempt, Bucket, Bytes, Capabilities, KeyPage, KvError, Provider, Result, SwapOutcome, Version,
    Versioned, clock,
};

use super::error::{Outcome, map_error, outcome};

/// Metadata: expiry in Unix milliseconds. Metadata names are C# identifiers: no hyphens.
pub const META_EXPIRES: &str = "expires_at";
/// Metadata: the original key of a hashed blob name (base64url).
pub const META_KEY: &str = "kv_key";
/// Metadata: the journal of the last increments and swaps (exactly-once retries).
pub const META_JOURNAL: &str = "kv_journal";
/// The blob index tag of a tombstone, for a lifecycle management rule (`blobIndexMatch`).
pub const TOMBSTONE_TAG: &str = "kv_tombstone";
/// The tag's value on a tombstone.
pub const TOMBSTONE_TAG_VALUE: &str = "1";
/// The tag's value on every other write.
pub const LIVE_TAG_VALUE: &str = "0";
/// Blob names are at most 1,024 characters.
const MAX_NAME_CHARS: usize = 1024;
/// Values go in one `Put Blob` and are read whole, so they are kept to a size that fits
/// comfortably in memory (the service takes 5,000 MiB in one request).
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
/// Blob names: base64url; names over 1,024 characters hashed, marked `~`.
pub const KEY_CODEC: KeyCodec = KeyCodec::BASE64URL;
/// The service keeps at most 8 KiB of metadata per blob, names and values counted.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Keep a value in one request each way: no block lists, no ranged reads.
const ONE_PART: usize = MAX_VALUE_BYTES + 1;

/// A provider over one container.
#[derive(Clone)]
pub struct AzblobProvider {
    container: Arc<BlobContainerClient>,
    prefix: Arc<str>,
}

impl AzblobProvider {
    /// A provider over `container`, every blob name starting with `prefix` ("" or ending in
    /// `/`).
    pub fn new(container: Arc<BlobContainerClient>, prefix: &str) -> Self {
        AzblobProvider {
            container,
            prefix: prefix.into(),
        }
    }

    /// The SDK client of the container.
    pub fn container(&self) -> &BlobContainerClient {
        &self.container
    }

    /// The blob name prefix of `namespace`: the container prefix, `kv/n`, the namespace in
    /// base64url and `/` (which base64url never holds, so no namespace's blobs are listed with
    /// another's).
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        format!("{}kv/n{}/", self.prefix, URL_SAFE_NO_PAD.encode(namespace))
    }
}

#[async_trait]
impl Provider for AzblobProvider {
    fn name(&self) -> &str {
        "azblob"
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
        Ok(Arc::new(AzblobBucket {
            container: self.container.clone(),
            prefix: self.namespace_prefix(namespace),
        }))
    }
}

struct AzblobBucket {
    container: Arc<BlobContainerClient>,
    prefix: String,
}

/// A blob's metadata as this provider reads it.
#[derive(Debug)]
struct Head {
    etag: String,
    expires_at: Option<u64>,
    journal: Journal,
    /// The key of a hashed name.
    key: Option<String>,
}

impl Head {
    fn of(etag: Option<&Etag>, metadata: Option<&HashMap<String, String>>) -> Result<Head> {
        let etag = etag
            .ok_or_else(|| KvError::internal("azblob: a blob answer has no ETag"))?
            .to_string();
        let field = |name: &str| metadata.and_then(|metadata| metadata.get(name));
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

impl AzblobBucket {
    /// The blob name of `key`: encoded, or hashed when too long (the key then travels in
    /// metadata).
    fn name(&self, key: &str) -> (String, bool) {
        let budget = MAX_NAME_CHARS.saturating_sub(self.prefix.len());
        let stored = KEY_CODEC.name(key, budget);
        (format!("{}{}", self.prefix, stored.name), stored.hashed)
    }

    /// The blob's metadata and bytes, in one consistent answer; `None` when there is none.
    async fn fetch(&self, key: &str) -> Result<Option<(Head, Vec<u8>)>> {
        let blob = self.container.blob_client(&self.name(key).0);
        let options = BlobClientDownloadOptions {
            partition_size: NonZero::new(ONE_PART),
            ..Default::default()
        };
        let download = match blob.download(Some(options)).await {
            Ok(download) => download,
            Err(err) if outcome(&err) == Outcome::NotFound => return Ok(None),
            Err(err) => return Err(map_error("get blob", err)),
        };
        let head = Head::of(
            download.properties.etag.as_ref(),
            Some(&download.properties.metadata),
        )?;
        let bytes = download
            .body
            .collect()
            .await
            .map_err(|err| map_error("get blob: reading the body", err))?;
        Ok(Some((head, bytes.to_vec())))
    }

    /// The blob's metadata; `None` when there is none.
    async fn head(&self, key: &str) -> Result<Option<Head>> {
        let blob = self.container.blob_client(&self.name(key).0);
        match blob.get_properties(None).await {
            Ok(properties) => {
                let etag = properties
                    .etag()
                    .map_err(|err| map_error("get properties", err))?;
                let metadata = properties
                    .metadata()
                    .map_err(|err| map_error("get properties", err))?;
                Head::of(etag.as_ref(), Some(&metadata)).map(Some)
            }
            Err(err) if outcome(&err) == Outcome::NotFound => Ok(None),
            Err(err) => Err(map_error("get properties", err)),
        }
    }

    /// Writes `value` with its metadata; `Ok(false)` when `condition` did not hold.
    async fn put(
        &self,
        key: &str,
        value: Bytes,
        expires_at: Option<u64>,
        journal: Option<&Journal>,
        condition: Condition,
        tombstone: bool,
    ) -> Result<bool> {
        let (name, hashed) = self.name(key);
        let mut metadata = HashMap::new();
        if let Some(at) = expires_at {
            metadata.insert(META_EXPIRES.to_string(), at.to_string());
        }
        if let Some(journal) = journal.filter(|journal| !journal.is_empty()) {
            metadata.insert(META_JOURNAL.to_string(), journal.encode());
        }
        if hashed {
            metadata.insert(META_KEY.to_string(), URL_SAFE_NO_PAD.encode(key));
        }
        let conditioned = !matches!(condition, Condition::None);
        let (if_match, if_none_match) = match condition {
            Condition::None => (None, None),
            Condition::Absent => (None, Some(Etag::from("*"))),
            Condition::Matches(etag) => (Some(Etag::from(etag)), None),
        };
        let options = BlobClientUploadOptions {
            blob_content_type: Some("application/octet-stream".to_string()),
            blob_tags_string: Some(format!(
                "{TOMBSTONE_TAG}={}",
                if tombstone {
                    TOMBSTONE_TAG_VALUE
                } else {
                    LIVE_TAG_VALUE
                }
            )),
            metadata: Some(metadata),
            if_match,
            if_none_match,
            partition_size: NonZero::new(ONE_PART as u64),
            ..Default::default()
        };
        let blob = self.container.blob_client(&name);
        // `RequestContent::from` is an inherent function taking a `Vec<u8>`: the trait's
        // conversion keeps the bytes without a copy.
        let content: RequestContent<Bytes, NoFormat> = value.into();
        match blob.upload(content, Some(options)).await {
            Ok(_) => Ok(true),
            // `If-None-Match: *` on an existing blob is 409; `If-Match` on a changed blob is
            // 412, and on a deleted one 404 (Azure) or 412 (Azurite): lost, all of them.
            Err(err)
                if conditioned
                    && matches!(
                        outcome(&err),
                        Outcome::Exists | Outcome::Changed | Outcome::NotFound
                    ) =>
            {
                Ok(false)
            }
            Err(err) => Err(map_error("put blob", err)),
        }
    }
}

/// ETags make read-modify-write safe: the write is conditioned on the ETag read (or on no
/// blob), and the journal travels in the blob's metadata.
#[async_trait]
impl ConditionalStore for AzblobBucket {
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
            Bytes::from(write.value),
            write.expires_at_ms,
            Some(&write.journal),
            condition,
            false,
        )
        .await
    }

    fn queue_name(&self, key: &str) -> String {
        format!("azblob\0{}\0{}", self.container.url(), self.name(key).0)
    }
}

#[async_trait]
impl Bucket for AzblobBucket {
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
        self.put(key, value, None, None, Condition::None, false)
            .await
            .map(drop)
    }

    async fn set_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()> {
        let at = clock::expires_at_ms(ttl);
        self.put(key, value, Some(at), None, Condition::None, false)
            .await
            .map(drop)
    }

    /// Writes a tombstone: empty, expired on every clock, tagged for a lifecycle rule.
    async fn delete(&self, key: &str) -> Result<()> {
        self.put(
            key,
            Bytes::new(),
            Some(rmw::TOMBSTONE_EXPIRES_AT_MS),
            None,
            Condition::None,
            true,
        )
        .await
        .map(drop)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.head(key).await?.is_some_and(|head| head.live()))
    }

    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage> {
        let options = BlobContainerClientListBlobsOptions {
            include: Some(vec![ListBlobsIncludeItem::Metadata]),
            marker: cursor.map(str::to_string),
            maxresults: Some(i32::try_from(limit.clamp(1, 5000)).unwrap_or(5000)),
            prefix: Some(self.prefix.clone()),
            ..Default::default()
        };
        let page = self
            .container
            .list_blobs(Some(options))
            .map_err(|err| map_error("list blobs", err))?
            .into_pages()
            .next()
            .await
            .ok_or_else(|| KvError::internal("azblob list blobs: no page in the answer"))?
            .map_err(|err| map_error("list blobs", err))?
            .into_model()
            .map_err(|err| map_error("list blobs: reading the answer", err))?;
        let mut keys = Vec::with_capacity(page.blob_items.len());
        for item in &page.blob_items {
            let Some(rest) = item
                .name
                .as_deref()
                .and_then(|name| name.strip_prefix(&self.prefix))
            else {
                continue;
            };
            let etag = item.properties.as_ref().and_then(|p| p.etag.as_ref());
            let metadata = item.metadata.as_ref().and_then(|m| m.values.as_ref());
            // An item without an ETag is not one this provider wrote: skipped, not fatal.
            let Ok(head) = Head::of(etag, metadata) else {
                continue;
            };
            if !head.live() {
                continue;
            }
            if let Some(key) = KEY_CODEC.key_of(rest, || head.key.clone()) {
                keys.push(key);
            }
        }
        let cursor = page.next_marker.filter(|marker| !marker.is_empty());
        Ok(KeyPage { keys, cursor })
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

    /// The whole journal, the longest expiry and the key of a hashed name fit the service's
    /// 8 KiB of metadata together.
    #[test]
    fn the_journal_fits_in_the_metadata_limit() {
        let longest = format!("ffffffff.ffffffffffffffff.{}", i64::MIN);
        let journal = Journal::parse(&vec![longest; rmw::JOURNAL_LEN].join(";"));
        assert!(!journal.is_empty());
        let used = META_EXPIRES.len()
            + u64::MAX.to_string().len()
            + META_JOURNAL.len()
            + journal.encode().len()
            + META_KEY.len()
            + URL_SAFE_NO_PAD
                .encode([0u8; kv_core::limits::MAX_KEY_BYTES])
                .len();
        assert!(used <= MAX_METADATA_BYTES, "{used}");
    }

    #[test]
    fn namespaces_are_prefix_free() {
        let provider_prefix =
            |namespace: &str| format!("kv/n{}/", URL_SAFE_NO_PAD.encode(namespace));
        let (a, b) = (provider_prefix("a"), provider_prefix("a/"));
        assert!(!b.starts_with(&a) && !a.starts_with(&b));
        assert!(!provider_prefix("").starts_with(&provider_prefix("x")));
    }
}
