//! The mapping of the contract onto Cloud Storage objects (README.md has the table).
//!
//! A delete leaves a tombstone: an empty object expired on every clock, so a CAS handle taken
//! on the missing key sees it was written and deleted since (S7, `kv_core::rmw`). Every read
//! treats it like an expired value. Expiring objects and tombstones carry `customTime` = their
//! expiry, and buckets the provider creates remove them a day after it (a lifecycle rule), well
//! past `kv_core::rmw::TOMBSTONE_RETENTION`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gcloud_storage::client::Client;

use gcloud_storage::http::objects::Object;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::upload::{UploadObjectRequest, UploadType};
use kv_core::naming::{KeyCodec, namespace_prefix};
use kv_core::rmw::{self, ConditionalStore, Expect, Journal, Read, Snapshot, Write};
use kv_core::{
    Attempt, Backoff, Bucket, Bytes, Capabilities, KeyPage, KvError, Provider, Result, SwapOutcome,
    Version, Versioned, clock,
};

use crate::batch::BatchClient;
use crate::client::GcsClient;
use crate::error::{map_error, status};

/// Custom metadata: expiry in epoch milliseconds (lower case: the emulator lower-cases names).
pub const META_EXPIRES: &str = "expires-at";
/// Custom metadata: the original key of a hashed object name (base64url).
pub const META_KEY: &str = "kv-key";
/// Custom metadata: the journal of the last increments and swaps (exactly-once retries).
pub const META_JOURNAL: &str = "kv-journal";
/// GCS object names are at most 1024 bytes of UTF-8.
const MAX_NAME_BYTES: usize = 1024;
/// Values are uploaded in one multipart request (the only kind the emulator applies
/// preconditions to), so they are kept to a size that fits comfortably in memory.
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
/// Object names: `%` and control characters percent-encoded (GCS forbids CR and LF); names
/// over 1024 bytes hashed, marked `%h`.
pub const KEY_CODEC: KeyCodec = KeyCodec::PERCENT;
/// Attempts of a consistent read while writers keep replacing the object.
const READ_ATTEMPTS: u32 = 20;
/// The empty object `delete-many` copies onto each name (a batch cannot carry uploads), under
/// the provider's prefix but outside every namespace (`kv/…`).
const TOMBSTONE_TEMPLATE: &str = "kv-tombstone";

/// A provider over one bucket.
#[derive(Clone)]
pub struct GcsProvider {
    client: GcsClient,
    bucket: Arc<str>,
    prefix: Arc<str>,
    /// Whether this process has made sure the tombstone template exists.
    template_ready: Arc<AtomicBool>,
}

impl GcsProvider {
    /// A provider over `bucket`, all object names starting with `prefix`.
    pub fn new(client: GcsClient, bucket: &str, prefix: &str) -> Self {
        GcsProvider {
            client,
            bucket: bucket.into(),
            prefix: prefix.into(),
            template_ready: Arc::default(),
        }
    }

    /// The object name prefix of `namespace`: the bucket prefix, `kv/`, and the prefix-free
    /// [`namespace_prefix`], so no namespace's objects are listed with another's.
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        format!("{}kv/{}", self.prefix, namespace_prefix(namespace))
    }
}

#[async_trait]
impl Provider for GcsProvider {
    fn name(&self) -> &str {
        "gcs"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            cas: true,
            list_may_repeat: false,
            max_value_bytes: MAX_VALUE_BYTES,
            // Uploads go one object per request (16 in flight): two rounds per call, each
            // call with its own deadline, so a slow emulator or bucket slows a large set-many
            // down instead of timing it out. Deletes are batched (kv_gcp::batch).
            set_many_part: 32,
            // Cloud Storage reports no changes here (fake-gcs-server has no Pub/Sub): the
            // store is listed every WATCH_POLL and compared (kv_core::watch::polled).
            watch: Some(kv_core::watch::WatchSupport {
                durable: false,
                reports_expiry: true,
                every_value: false,
            }),
            ..Capabilities::default()
        }
    }

    async fn open(&self, namespace: &str) -> Result<Arc<dyn Bucket>> {
        Ok(Arc::new(GcsBucket {
            client: self.client.storage().clone(),
            batch: self.client.batch().clone(),
            bucket: self.bucket.to_string(),
            prefix: self.namespace_prefix(namespace),
            template: format!("{}{TOMBSTONE_TEMPLATE}", self.prefix),
            template_ready: self.template_ready.clone(),
        }))
    }
}

#[derive(Clone)]
struct GcsBucket {
    client: Client,
    batch: BatchClient,
    bucket: String,
    prefix: String,
    /// The tombstone template's object name.
    template: String,
    template_ready: Arc<AtomicBool>,
}

/// How often a watched store is listed: each listing costs a list request per 1,000 objects.
const WATCH_POLL: Duration = Duration::from_secs(1);

/// The watch feed's listing: every live key with its generation (a new one for each write).
#[async_trait]
impl kv_core::watch::polled::VersionListing for GcsBucket {
    async fn live_versions(&self) -> Result<HashMap<String, String>> {
        let mut versions = HashMap::new();
        let mut page_token = None;
        loop {
            let request = ListObjectsRequest {
                bucket: self.bucket.clone(),
                prefix: Some(self.prefix.clone()),
                max_results: Some(1000),
                page_token: page_token.take(),
                ..Default::default()
            };
            let response = self
                .client
                .list_objects(&request)
                .await
                .map_err(|err| map_error("list (watch)", err))?;
            let now = clock::now_ms();
            for object in response.items.unwrap_or_default() {
                if clock::is_live(expires_at(&object), now)
                    && let Some(key) = self.key_of(&object)
                {
                    versions.insert(key, object.generation.to_string());
                }
            }
            match response.next_page_token.filter(|token| !token.is_empty()) {
                Some(next) => page_token = Some(next),
                None => return Ok(versions),
            }
        }
    }
}

/// The current state of one key's object.
struct Current {
    generation: i64,
    live: bool,
    expires_at: Option<u64>,
    journal: Journal,
}

fn expires_at(object: &Object) -> Option<u64> {
    object.metadata.as_ref()?.get(META_EXPIRES)?.parse().ok()
}

/// An expiry as `customTime`, which the lifecycle rule of `crate::client::ensure_bucket`
/// counts from.
fn custom_time(expires_at_ms: u64) -> Option<time::OffsetDateTime> {
    let nanos = i128::from(expires_at_ms).checked_mul(1_000_000)?;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

impl GcsBucket {
    /// The object name of `key`: percent-encoded, or hashed when too long (the key then
    /// travels in metadata).
    fn name(&self, key: &str) -> (String, bool) {
        let budget = MAX_NAME_BYTES.saturating_sub(self.prefix.len());
        let stored = KEY_CODEC.name(key, budget);
        (format!("{}{}", self.prefix, stored.name), stored.hashed)
    }

    fn key_of(&self, object: &Object) -> Option<String> {
        let rest = object.name.strip_prefix(&self.prefix)?;
        KEY_CODEC.key_of(rest, || {
            let encoded = object.metadata.as_ref()?.get(META_KEY)?;
            String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()
        })
    }

    async fn stat(&self, name: &str) -> Result<Option<Current>> {
        let request = GetObjectRequest {
            bucket: self.bucket.clone(),
            object: name.to_string(),
            ..Default::default()
        };
        match self.client.get_object(&request).await {
            Ok(object) => {
                let expires_at = expires_at(&object);
                let journal = object
                    .metadata
                    .as_ref()
                    .and_then(|metadata| metadata.get(META_JOURNAL))
                    .map(|text| Journal::parse(text))
                    .unwrap_or_default();
                Ok(Some(Current {
                    generation: object.generation,
                    live: clock::is_live(expires_at, clock::now_ms()),
                    expires_at,
                    journal,
                }))
            }
            Err(err) if status(&err) == Some(404) => Ok(None),
            Err(err) => Err(map_error("get object", err)),
        }
    }

    /// The bytes of one generation; `None` if it was replaced or deleted meanwhile.
    async fn download(&self, name: &str, generation: i64) -> Result<Option<Vec<u8>>> {
        let request = GetObjectRequest {
            bucket: self.bucket.clone(),
            object: name.to_string(),
            generation: Some(generation),
            ..Default::default()
        };
        match self
            .client
            .download_object(&request, &Range::default())
            .await
        {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if status(&err) == Some(404) => Ok(None),
            Err(err) => Err(map_error("download", err)),
        }
    }

    /// One consistent read (stat, then that generation); `None` if the object was replaced
    /// between the two requests.
    async fn try_read(&self, name: &str) -> Result<Option<(Option<Current>, Option<Vec<u8>>)>> {
        let Some(current) = self.stat(name).await? else {
            return Ok(Some((None, None)));
        };
        if !current.live {
            return Ok(Some((Some(current), None)));
        }
        Ok(self
            .download(name, current.generation)
            .await?
            .map(|bytes| (Some(current), Some(bytes))))
    }

    /// The live value and its generation, read consistently, retrying (with jitter) while
    /// writers keep replacing the object.
    async fn read(&self, key: &str) -> Result<(Option<Current>, Option<Vec<u8>>)> {
        let (name, _) = self.name(key);
        for attempt in 0..READ_ATTEMPTS {
            if attempt > 0 {
                Backoff::CONTENTION.wait(attempt).await;
            }
            if let Some(read) = self.try_read(&name).await? {
                return Ok(read);
            }
        }
        Err(KvError::unavailable(
            "gcs: the object kept changing while being read",
        ))
    }

    /// A multipart upload (the emulator honours preconditions only there); `Ok(false)` on 412.
    async fn upload(
        &self,
        key: &str,
        value: Bytes,
        expires_at: Option<u64>,
        journal: Option<&Journal>,
        if_generation: Option<i64>,
    ) -> Result<bool> {
        self.upload_object(key, value, expires_at, expires_at, journal, if_generation)
            .await
    }

    /// [`GcsBucket::upload`] with `customTime` (what the lifecycle rule counts from) apart from
    /// the expiry reads check: a tombstone expires on every clock but is kept from its
    /// deletion on.
    async fn upload_object(
        &self,
        key: &str,
        value: Bytes,
        expires_at: Option<u64>,
        removable_from: Option<u64>,
        journal: Option<&Journal>,
        if_generation: Option<i64>,
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
        let object = Object {
            name: name.clone(),
            content_type: Some("application/octet-stream".to_string()),
            metadata: Some(metadata),
            custom_time: removable_from.and_then(custom_time),
            ..Default::default()
        };
        let request = UploadObjectRequest {
            bucket: self.bucket.clone(),
            if_generation_match: if_generation,
            ..Default::default()
        };
        match self
            .client
            .upload_object(&request, value, &UploadType::Multipart(Box::new(object)))
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if status(&err) == Some(412) => Ok(false),
            Err(err) => Err(map_error("upload", err)),
        }
    }
}

impl GcsBucket {
    /// Creates the empty object `delete-many` copies, unless this process already did (an
    /// existing one, 412, is fine).
    async fn ensure_template(&self) -> Result<()> {
        if self.template_ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        let object = Object {
            name: self.template.clone(),
            content_type: Some("application/octet-stream".to_string()),
            ..Default::default()
        };
        let request = UploadObjectRequest {
            bucket: self.bucket.clone(),
            if_generation_match: Some(0),
            ..Default::default()
        };
        match self
            .client
            .upload_object(
                &request,
                Vec::new(),
                &UploadType::Multipart(Box::new(object)),
            )
            .await
        {
            Ok(_) => {}
            Err(err) if status(&err) == Some(412) => {}
            Err(err) => return Err(map_error("create the tombstone template", err)),
        }
        self.template_ready.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// Generations make read-modify-write safe: the upload is conditioned on the generation read
/// (`0` = the object must not exist), and the journal travels in the object's metadata.
#[async_trait]
impl ConditionalStore for GcsBucket {
    async fn read(&self, key: &str) -> Result<Read> {
        // A read that races a writer is a lost race, like a failed upload.
        Ok(match self.try_read(&self.name(key).0).await? {
            None => Read::Raced,
            Some((None, _)) => Read::Missing,
            Some((Some(current), value)) => Read::Found(Snapshot {
                value: value.unwrap_or_default(),
                version: current.generation.to_string(),
                expires_at_ms: current.expires_at,
                journal: current.journal,
            }),
        })
    }

    fn queue_name(&self, key: &str) -> String {
        format!("gcs\0{}\0{}", self.bucket, self.name(key).0)
    }

    async fn write_if(&self, key: &str, write: Write, expect: Expect) -> Result<bool> {
        let generation = match expect {
            Expect::Absent => 0,
            Expect::Version(generation) => generation
                .parse()
                .map_err(|_| KvError::internal("gcs: malformed generation"))?,
        };
        self.upload(
            key,
            write.value.into(),
            write.expires_at_ms,
            Some(&write.journal),
            Some(generation),
        )
        .await
    }
}

#[async_trait]
impl Bucket for GcsBucket {
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
        Ok(self.read(key).await?.1)
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<()> {
        self.upload(key, value, None, None, None).await.map(drop)
    }

    async fn set_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()> {
        let at = clock::expires_at_ms(ttl);
        self.upload(key, value, Some(at), None, None)
            .await
            .map(drop)
    }

    /// Uploads a tombstone: empty, expired on every clock, removable a day after now.
    async fn delete(&self, key: &str) -> Result<()> {
        let expired = Some(rmw::TOMBSTONE_EXPIRES_AT_MS);
        self.upload_object(
            key,
            Bytes::new(),
            expired,
            Some(clock::now_ms()),
            None,
            None,
        )
        .await
        .map(drop)
    }

    /// Batch requests of up to 100 tombstones (`crate::batch`) instead of one upload per key;
    /// the names are the single delete's, hashed long names included.
    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        self.ensure_template().await?;
        let names: Vec<String> = keys.iter().map(|key| self.name(key).0).collect();
        let now = clock::now_ms();
        let mut object = serde_json::json!({
            "contentType": "application/octet-stream",
            "metadata": { META_EXPIRES: rmw::TOMBSTONE_EXPIRES_AT_MS.to_string() },
        });
        if let Some(at) = custom_time(now).and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        }) {
            object["customTime"] = serde_json::Value::String(at);
        }
        let outcome = self
            .batch
            .copy_onto(&self.bucket, &self.template, &names, &object.to_string())
            .await;
        if outcome.template_missing {
            // Someone removed it: make it again before the host's retry.
            self.template_ready.store(false, Ordering::Relaxed);
        }
        outcome.result
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self
            .stat(&self.name(key).0)
            .await?
            .is_some_and(|current| current.live))
    }

    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage> {
        let request = ListObjectsRequest {
            bucket: self.bucket.clone(),
            prefix: Some(self.prefix.clone()),
            max_results: Some(i32::try_from(limit).unwrap_or(1000)),
            page_token: cursor.map(str::to_string),
            ..Default::default()
        };
        let response = self
            .client
            .list_objects(&request)
            .await
            .map_err(|err| map_error("list", err))?;
        let now = clock::now_ms();
        let keys = response
            .items
            .unwrap_or_default()
            .iter()
            .filter(|object| clock::is_live(expires_at(object), now))
            .filter_map(|object| self.key_of(object))
            .collect();
        Ok(KeyPage {
            keys,
            cursor: response.next_page_token.filter(|token| !token.is_empty()),
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
    fn layout_is_stable() {
        // Stored layout: changing it strands existing objects.
        let provider_prefix = format!("{}kv/{}", "apps/", namespace_prefix("team"));
        assert_eq!(provider_prefix, "apps/kv/4/team/");
        assert_eq!(KEY_CODEC.encode("a%b\nc/.."), "a%25b%0Ac/..");
        assert_eq!(KEY_CODEC.hash_marker, "%h");
    }
}
