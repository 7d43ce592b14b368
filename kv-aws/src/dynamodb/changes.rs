//! The change feed of a DynamoDB store (`wasi-kv watch`): the table's DynamoDB Stream, which
//! holds every write of the last 24 hours in shards. A key's writes are in one shard lineage in
//! the order they were applied, and a shard's records come before its children's, so reading
//! each shard after its parent keeps per-key order. The stream covers the whole table; a feed
//! keeps its namespace's records and steps over the others'.
//!
//! A position names the stream (its label: a stream disabled and enabled again is another
//! stream) and where each shard was read to. Records carry the item after the write (and
//! before, with `NEW_AND_OLD_IMAGES`), so each change is delivered with the value it wrote. A
//! TTL that runs out is reported only when DynamoDB removes the item (ten minutes after the
//! expiry, and up to days later): expiry is declared late ([`kv_core::watch::WatchSupport`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{StreamSpecification, StreamViewType};
use aws_sdk_dynamodbstreams::Client as StreamsClient;
use aws_sdk_dynamodbstreams::types::{
    AttributeValue as StreamValue, OperationType, Record, ShardIteratorType, StreamStatus,
};
use kv_core::watch::{Change, ChangeFeed, Changes, Logged, Position};
use kv_core::{KvError, Result, clock, rmw};
use tracing::{debug, info};

use super::error::map_sdk_error;
use super::store::{ATTR_COUNTER, ATTR_KEY, ATTR_NAMESPACE, ATTR_UNTIL, ATTR_VALUE, ATTR_VERSION};

/// How long the stream keeps a record; a position not read for nearly this long may have lost
/// records of a shard it had not started, so it is a gap.
const STREAM_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How old a position may be before it is treated as a gap (the retention, less a margin).
const POSITION_MAX_AGE: Duration = Duration::from_secs(22 * 60 * 60);
/// How often an idle position is renewed (so a live watcher's checkpoint never looks stale).
const POSITION_RENEWAL: Duration = Duration::from_secs(60 * 60);
/// Records created this long before a watcher's start are not skipped as earlier than it:
/// creation times are approximate (DynamoDB Local rounds them down to the minute) and the
/// host's clock may differ from DynamoDB's.
const START_MARGIN: Duration = Duration::from_secs(2 * 60);
/// How often a waiting feed reads its shards again. DynamoDB Streams allows about five
/// `GetRecords` a second per shard, shared by every reader of the table.
const POLL: Duration = Duration::from_millis(500);
/// Records asked of one `GetRecords` (its maximum): stepping over other namespaces' records
/// goes at this many a call.
const GET_RECORDS_MAX: i32 = 1000;
/// How long a shard listing is used before it is read again (sooner when a shard closes).
const LISTING_TTL: Duration = Duration::from_secs(5);
/// A shard iterator expires after 15 minutes; one older than this is not reused.
const ITERATOR_TTL: Duration = Duration::from_secs(10 * 60);
/// How long [`DynamoFeed`] waits for a stream it enabled to become readable.
const ENABLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a shard was read to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mark {
    /// Not read yet: from its oldest record (records created before the watcher started are
    /// stepped over).
    Unread,
    /// Read up to and including this sequence number.
    After(String),
    /// A child of a shard read to its end: read from its first sequence number, so that
    /// records trimmed before they were read are a gap, not a silent later start.
    From(String),
    /// Closed and read to its end.
    Done,
}

/// What a [`Position`] of this feed holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StreamPosition {
    /// The stream's label.
    label: String,
    /// When the watcher started, in epoch milliseconds, less [`START_MARGIN`]: earlier records
    /// are not delivered.
    since_ms: u64,
    /// When the position was last renewed, in epoch milliseconds.
    at_ms: u64,
    /// Each known shard's mark; a shard not named is [`Mark::Unread`].
    shards: BTreeMap<String, Mark>,
}

const POSITION_PREFIX: &str = "dynamodb-stream";

impl StreamPosition {
    /// `dynamodb-stream|LABEL|SINCE|AT|SHARD=SEQ,SHARD=@SEQ,SHARD=*,SHARD=` (labels, shard ids
    /// and sequence numbers hold none of `|`, `,`, `=`, `@`).
    fn encode(&self) -> Position {
        let shards: Vec<String> = self
            .shards
            .iter()
            .map(|(shard, mark)| match mark {
                Mark::Unread => format!("{shard}="),
                Mark::After(sequence) => format!("{shard}={sequence}"),
                Mark::From(sequence) => format!("{shard}=@{sequence}"),
                Mark::Done => format!("{shard}=*"),
            })
            .collect();
        Position(format!(
            "{POSITION_PREFIX}|{}|{}|{}|{}",
            self.label,
            self.since_ms,
            self.at_ms,
            shards.join(",")
        ))
    }

    fn decode(position: &Position) -> Option<StreamPosition> {
        let mut parts = position.0.split('|');
        if parts.next()? != POSITION_PREFIX {
            return None;
        }
        let label = parts.next()?.to_string();
        let since_ms = parts.next()?.parse().ok()?;
        let at_ms = parts.next()?.parse().ok()?;
        let shards_text = parts.next()?;
        if parts.next().is_some() || label.is_empty() {
            return None;
        }
        let mut shards = BTreeMap::new();
        for entry in shards_text.split(',').filter(|entry| !entry.is_empty()) {
            let (shard, mark) = entry.split_once('=')?;
            let mark = match mark {
                "" => Mark::Unread,
                "*" => Mark::Done,
                from if from.starts_with('@')
                    && from.len() > 1
                    && from[1..].bytes().all(|b| b.is_ascii_digit()) =>
                {
                    Mark::From(from[1..].to_string())
                }
                sequence if sequence.bytes().all(|b| b.is_ascii_digit()) => {
                    Mark::After(sequence.to_string())
                }
                _ => return None,
            };
            shards.insert(shard.to_string(), mark);
        }
        Some(StreamPosition {
            label,
            since_ms,
            at_ms,
            shards,
        })
    }

    fn mark(&self, shard: &str) -> Mark {
        self.shards.get(shard).cloned().unwrap_or(Mark::Unread)
    }
}

/// The table's stream.
#[derive(Clone, Debug)]
struct Stream {
    arn: String,
    label: String,
}

/// One shard of the stream.
#[derive(Clone, Debug)]
struct Shard {
    id: String,
    parent: Option<String>,
    /// Its first sequence number.
    start: Option<String>,
    /// No records are added to it any more.
    closed: bool,
}

/// What a feed keeps between reads: the stream, its shards, and the iterator where each
/// shard's last read ended (so a poll costs one `GetRecords` per shard).
#[derive(Default)]
struct Reader {
    stream: Option<Stream>,
    shards: Vec<Shard>,
    listed_at: Option<Instant>,
    /// Shard → (the mark the iterator continues from, the iterator, when it was issued).
    iterators: HashMap<String, (Mark, String, Instant)>,
    /// Reads so far: which ready shard is read first turns with it.
    turn: usize,
}

/// One namespace's changes, from the table's stream.
pub(crate) struct DynamoFeed {
    tables: Client,
    streams: StreamsClient,
    table: Arc<str>,
    namespace: String,
    /// Enable the stream if the table has none (`create_table`: the provider provisions).
    enable: bool,
    reader: tokio::sync::Mutex<Reader>,
}

/// How reading a shard ended.
enum ShardRead {
    /// Its records up to here are in the batch; `records` were read (of any namespace).
    Read { records: usize },
    /// The records after the mark are no longer in the stream.
    Trimmed(String),
}

impl DynamoFeed {
    pub(crate) fn new(
        tables: Client,
        streams: StreamsClient,
        table: Arc<str>,
        namespace: String,
        enable: bool,
    ) -> DynamoFeed {
        DynamoFeed {
            tables,
            streams,
            table,
            namespace,
            enable,
            reader: tokio::sync::Mutex::new(Reader::default()),
        }
    }

    /// The table's stream, enabled first if it has none and this feed may.
    async fn stream(&self, reader: &mut Reader) -> Result<Stream> {
        if let Some(stream) = &reader.stream {
            return Ok(stream.clone());
        }
        let stream = match self.enabled_stream().await? {
            Some(stream) => stream,
            None if self.enable => self.enable_stream().await?,
            None => {
                return Err(KvError::internal(format!(
                    "dynamodb table {} has no stream, so its changes cannot be watched: enable \
                     one with StreamViewType NEW_AND_OLD_IMAGES, or set create_table = true to let \
                     wasi-kv enable it",
                    self.table
                )));
            }
        };
        reader.stream = Some(stream.clone());
        Ok(stream)
    }

    /// The table's stream if it has one whose records carry the written item.
    async fn enabled_stream(&self) -> Result<Option<Stream>> {
        let described = self
            .tables
            .describe_table()
            .table_name(self.table.as_ref())
            .send()
            .await
            .map_err(|err| map_sdk_error("DescribeTable", err))?;
        let Some(table) = described.table() else {
            return Ok(None);
        };
        let Some(spec) = table
            .stream_specification()
            .filter(|spec| spec.stream_enabled())
        else {
            return Ok(None);
        };
        match spec.stream_view_type() {
            Some(StreamViewType::NewImage | StreamViewType::NewAndOldImages) => {}
            other => {
                return Err(KvError::internal(format!(
                    "dynamodb table {}: its stream records {}, not the written item: watching \
                     needs StreamViewType NEW_AND_OLD_IMAGES (or NEW_IMAGE)",
                    self.table,
                    other.map_or("nothing", |view| view.as_str())
                )));
            }
        }
        match (table.latest_stream_arn(), table.latest_stream_label()) {
            (Some(arn), Some(label)) => Ok(Some(Stream {
                arn: arn.to_string(),
                label: label.to_string(),
            })),
            _ => Ok(None),
        }
    }

    async fn enable_stream(&self) -> Result<Stream> {
        let spec = StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(StreamViewType::NewAndOldImages)
            .build()
            .map_err(|err| KvError::internal(format!("stream specification: {err}")))?;
        let updated = self
            .tables
            .update_table()
            .table_name(self.table.as_ref())
            .stream_specification(spec)
            .send()
            .await;
        if let Err(err) = updated {
            // Another host may have enabled it meanwhile; any other refusal (not authorized,
            // a table being updated) is the answer.
            debug!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&err), "UpdateTable");
            if let Some(stream) = self.enabled_stream().await? {
                return Ok(stream);
            }
            return Err(map_sdk_error("UpdateTable (enabling the stream)", err));
        }
        let deadline = Instant::now() + ENABLE_TIMEOUT;
        loop {
            if let Some(stream) = self.enabled_stream().await? {
                let status = self
                    .streams
                    .describe_stream()
                    .stream_arn(&stream.arn)
                    .limit(1)
                    .send()
                    .await
                    .map_err(|err| map_sdk_error("DescribeStream", err))?;
                let enabled = status.stream_description().and_then(|d| d.stream_status())
                    == Some(&aws_sdk_dynamodbstreams::types::StreamStatus::Enabled);
                if enabled {
                    info!(table = %self.table, label = %stream.label, "enabled the table's stream");
                    return Ok(stream);
                }
            }
            if Instant::now() > deadline {
                return Err(KvError::unavailable(format!(
                    "dynamodb table {}: its stream was not enabled within {} s",
                    self.table,
                    ENABLE_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The stream's shards, read again when the listing is older than [`LISTING_TTL`];
    /// `None` when the stream is being disabled or is gone (the table may have another).
    async fn shards(&self, reader: &mut Reader, stream: &Stream) -> Result<Option<Vec<Shard>>> {
        if reader
            .listed_at
            .is_some_and(|listed| listed.elapsed() < LISTING_TTL)
        {
            return Ok(Some(reader.shards.clone()));
        }
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let described = match self
                .streams
                .describe_stream()
                .stream_arn(&stream.arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
            {
                Ok(described) => described,
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    reader.stream = None;
                    reader.listed_at = None;
                    return Ok(None);
                }
                Err(err) => return Err(map_sdk_error("DescribeStream", err)),
            };
            let Some(description) = described.stream_description() else {
                break;
            };
            if matches!(
                description.stream_status(),
                Some(StreamStatus::Disabling | StreamStatus::Disabled)
            ) {
                // Its shards are closing: the table's stream, if any, is another one now.
                reader.stream = None;
                reader.listed_at = None;
                return Ok(None);
            }
            for shard in description.shards() {
                let Some(id) = shard.shard_id() else { continue };
                shards.push(Shard {
                    id: id.to_string(),
                    parent: shard.parent_shard_id().map(str::to_string),
                    start: shard
                        .sequence_number_range()
                        .and_then(|range| range.starting_sequence_number())
                        .map(str::to_string),
                    closed: shard
                        .sequence_number_range()
                        .and_then(|range| range.ending_sequence_number())
                        .is_some(),
                });
            }
            match description.last_evaluated_shard_id() {
                Some(last) => start = Some(last.to_string()),
                None => break,
            }
        }
        reader.shards = shards.clone();
        reader.listed_at = Some(Instant::now());
        Ok(Some(shards))
    }

    /// The records of `shard` after its mark, as changes of this namespace until the batch
    /// holds `max` changes or `max_bytes` of values (one is always taken), each with the
    /// position after it.
    #[allow(clippy::too_many_arguments)]
    async fn read_shard(
        &self,
        reader: &mut Reader,
        stream: &Stream,
        shard: &Shard,
        position: &mut StreamPosition,
        max: usize,
        max_bytes: usize,
        batch: &mut Vec<Logged>,
        bytes: &mut usize,
    ) -> Result<ShardRead> {
        let mark = position.mark(&shard.id);
        let mut iterator = match reader.iterators.remove(&shard.id) {
            Some((from, iterator, issued)) if from == mark && issued.elapsed() < ITERATOR_TTL => {
                Some(iterator)
            }
            _ => None,
        };
        let mut renewed = false;
        let output = loop {
            let current = match iterator.take() {
                Some(iterator) => iterator,
                None => match self.iterator(stream, &shard.id, &mark).await? {
                    Ok(iterator) => iterator,
                    Err(trimmed) => return Ok(ShardRead::Trimmed(trimmed)),
                },
            };
            match self
                .streams
                .get_records()
                .shard_iterator(current)
                .limit(GET_RECORDS_MAX)
                .send()
                .await
            {
                Ok(output) => break output,
                Err(err) => {
                    let service = err.as_service_error();
                    if service.is_some_and(|e| e.is_expired_iterator_exception()) && !renewed {
                        renewed = true;
                        continue;
                    }
                    if service.is_some_and(|e| {
                        e.is_trimmed_data_access_exception() || e.is_resource_not_found_exception()
                    }) {
                        return Ok(ShardRead::Trimmed(format!(
                            "shard {} no longer holds the records after {mark:?}",
                            shard.id
                        )));
                    }
                    return Err(map_sdk_error("GetRecords", err));
                }
            }
        };
        let mut records = 0;
        for record in output.records() {
            let Some(sequence) = record.dynamodb().and_then(|r| r.sequence_number()) else {
                continue;
            };
            let change = self.change_of(record, position.since_ms)?;
            if let Some(change) = &change
                && (batch.len() >= max
                    || (!batch.is_empty() && *bytes + change.value_len() > max_bytes))
            {
                // Cut here: the rest is read again from the mark next time.
                return Ok(ShardRead::Read { records });
            }
            records += 1;
            position
                .shards
                .insert(shard.id.clone(), Mark::After(sequence.to_string()));
            if let Some(change) = change {
                *bytes += change.value_len();
                batch.push(Logged {
                    change,
                    position: position.encode(),
                });
            }
        }
        match output.next_shard_iterator() {
            Some(next) => {
                reader.iterators.insert(
                    shard.id.clone(),
                    (position.mark(&shard.id), next.to_string(), Instant::now()),
                );
            }
            None if shard.closed => {
                position.shards.insert(shard.id.clone(), Mark::Done);
                // Its children can be read now: list them.
                reader.listed_at = None;
            }
            // An open shard without a next iterator: the stream is being disabled; read again.
            None => reader.listed_at = None,
        }
        Ok(ShardRead::Read { records })
    }

    /// An iterator after `mark`, or `Err(why)` when the stream no longer holds those records.
    async fn iterator(
        &self,
        stream: &Stream,
        shard: &str,
        mark: &Mark,
    ) -> Result<std::result::Result<String, String>> {
        let request = self
            .streams
            .get_shard_iterator()
            .stream_arn(&stream.arn)
            .shard_id(shard);
        let request = match mark {
            Mark::After(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence),
            Mark::From(sequence) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(sequence),
            Mark::Unread | Mark::Done => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
        };
        match request.send().await {
            Ok(output) => match output.shard_iterator() {
                Some(iterator) => Ok(Ok(iterator.to_string())),
                None => Ok(Err(format!("shard {shard} gave no iterator"))),
            },
            Err(err)
                if err.as_service_error().is_some_and(|e| {
                    e.is_trimmed_data_access_exception() || e.is_resource_not_found_exception()
                }) =>
            {
                Ok(Err(format!(
                    "shard {shard} no longer holds the records after {mark:?}"
                )))
            }
            Err(err) => Err(map_sdk_error("GetShardIterator", err)),
        }
    }

    /// The change a record makes to this namespace's keys, if any.
    fn change_of(&self, record: &Record, since_ms: u64) -> Result<Option<Change>> {
        let Some(data) = record.dynamodb() else {
            return Ok(None);
        };
        let Some(keys) = data.keys() else {
            return Ok(None);
        };
        if text(keys, ATTR_NAMESPACE) != Some(self.namespace.as_str()) {
            return Ok(None);
        }
        let Some(key) = text(keys, ATTR_KEY) else {
            return Ok(None);
        };
        let created_ms = data
            .approximate_creation_date_time()
            .and_then(|at| at.to_millis().ok())
            .unwrap_or(i64::MAX);
        if created_ms < since_ms as i64 {
            return Ok(None);
        }
        let old = data.old_image();
        let old_is_tombstone = old.is_some_and(is_tombstone);
        let delete = || Change::Delete {
            key: key.to_string(),
        };
        Ok(match record.event_name() {
            // DynamoDB's TTL removing an expired value (a tombstone's removal is no change).
            Some(OperationType::Remove) => (!old_is_tombstone).then(delete),
            Some(OperationType::Insert | OperationType::Modify) => {
                let Some(new) = data.new_image() else {
                    return Err(KvError::internal(format!(
                        "dynamodb table {}: a stream record has no new image (the stream's view \
                         type changed?)",
                        self.table
                    )));
                };
                // Every write of a value or a delete gives the item a new version; one that
                // keeps it (a counter's stale slots removed) changed nothing a reader sees.
                if let Some(old) = old
                    && text(new, ATTR_VERSION).is_some()
                    && text(old, ATTR_VERSION) == text(new, ATTR_VERSION)
                {
                    return Ok(None);
                }
                if is_tombstone(new) {
                    // A delete of a key with a live (or expired) value; a tombstone written
                    // where there was none, or over another, deletes nothing. Without old
                    // images, a MODIFY is taken as a delete (maybe one delivered twice).
                    let existed = match old {
                        Some(_) => !old_is_tombstone,
                        None => record.event_name() == Some(&OperationType::Modify),
                    };
                    existed.then(delete)
                } else {
                    Some(Change::Set {
                        key: key.to_string(),
                        value: value_of(new).map_err(|why| {
                            KvError::internal(format!(
                                "dynamodb table {}: key {key:?} in the stream: {why}",
                                self.table
                            ))
                        })?,
                    })
                }
            }
            _ => None,
        })
    }

    /// The position now: every shard open now is read from the records created from now on
    /// (less [`START_MARGIN`]), every closed one is done.
    async fn head_in(&self, reader: &mut Reader) -> Result<StreamPosition> {
        let mut stream = self.stream(reader).await?;
        reader.listed_at = None;
        let shards = match self.shards(reader, &stream).await? {
            Some(shards) => shards,
            // Disabled since it was described: the table's stream now (or the reason why none).
            None => {
                stream = self.stream(reader).await?;
                self.shards(reader, &stream).await?.ok_or_else(|| {
                    KvError::unavailable(format!(
                        "dynamodb table {}: its stream is being disabled",
                        self.table
                    ))
                })?
            }
        };
        let now = clock::now_ms();
        Ok(StreamPosition {
            label: stream.label,
            since_ms: now.saturating_sub(START_MARGIN.as_millis() as u64),
            at_ms: now,
            shards: shards
                .into_iter()
                .map(|shard| {
                    let mark = if shard.closed {
                        Mark::Done
                    } else {
                        Mark::Unread
                    };
                    (shard.id, mark)
                })
                .collect(),
        })
    }

    async fn gap(&self, reader: &mut Reader, why: String) -> Result<Changes> {
        reader.iterators.clear();
        let position = self.head_in(reader).await?.encode();
        Ok(Changes::Gap { position, why })
    }
}

fn text<'a>(image: &'a HashMap<String, StreamValue>, name: &str) -> Option<&'a str> {
    match image.get(name) {
        Some(StreamValue::S(text)) => Some(text),
        _ => None,
    }
}

fn number(image: &HashMap<String, StreamValue>, name: &str) -> Option<u64> {
    match image.get(name) {
        Some(StreamValue::N(text)) => text.parse().ok(),
        _ => None,
    }
}

/// What a delete writes (`store::DynamoBucket::tombstone`): expired at the first
/// millisecond; older releases wrote no value and the deletion time. An item with neither a
/// value nor a counter is taken as one either way: it holds nothing to deliver.
fn is_tombstone(image: &HashMap<String, StreamValue>) -> bool {
    number(image, ATTR_UNTIL) == Some(rmw::TOMBSTONE_EXPIRES_AT_MS)
        || (!image.contains_key(ATTR_VALUE) && !image.contains_key(ATTR_COUNTER))
}

/// The value an item holds, as `store` reads it: the binary value, or a counter written as a
/// number by older releases.
fn value_of(image: &HashMap<String, StreamValue>) -> std::result::Result<Vec<u8>, &'static str> {
    match image.get(ATTR_VALUE) {
        Some(StreamValue::B(blob)) => Ok(blob.as_ref().to_vec()),
        Some(_) => Err("the value attribute is not binary"),
        None => match image.get(ATTR_COUNTER) {
            Some(StreamValue::N(counter)) => counter
                .parse::<i64>()
                .map(|counter| counter.to_string().into_bytes())
                .map_err(|_| "the counter attribute is not an i64"),
            _ => Err("the item has neither a value nor a counter"),
        },
    }
}

#[async_trait]
impl ChangeFeed for DynamoFeed {
    async fn head(&self) -> Result<Position> {
        let mut reader = self.reader.lock().await;
        Ok(self.head_in(&mut reader).await?.encode())
    }

    async fn changes_after(
        &self,
        after: &Position,
        max: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Changes> {
        let mut reader = self.reader.lock().await;
        let stream = self.stream(&mut reader).await?;
        let Some(mut position) = StreamPosition::decode(after) else {
            let why = format!("{after} is not a position of a DynamoDB stream");
            return self.gap(&mut reader, why).await;
        };
        if position.label != stream.label {
            let why = format!(
                "the position is of stream {}, the table's stream is now {}",
                position.label, stream.label
            );
            return self.gap(&mut reader, why).await;
        }
        let now = clock::now_ms();
        let age = Duration::from_millis(now.saturating_sub(position.at_ms));
        if age > POSITION_MAX_AGE {
            let why = format!(
                "the position is {} h old, and the stream keeps records for {} h",
                age.as_secs() / 3600,
                STREAM_RETENTION.as_secs() / 3600
            );
            return self.gap(&mut reader, why).await;
        }
        if age > POSITION_RENEWAL {
            position.at_ms = now;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut batch = Vec::new();
        let mut bytes = 0;
        loop {
            // (The batch is empty here: a read that found changes has returned.)
            let Some(shards) = self.shards(&mut reader, &stream).await? else {
                let why = format!("the stream {} was disabled", stream.label);
                return self.gap(&mut reader, why).await;
            };
            // A shard the position was reading that the stream no longer lists lost records;
            // a finished one that it no longer lists is forgotten.
            let listed: HashMap<&str, &Shard> = shards
                .iter()
                .map(|shard| (shard.id.as_str(), shard))
                .collect();
            if let Some((gone, _)) = position
                .shards
                .iter()
                .find(|(id, mark)| **mark != Mark::Done && !listed.contains_key(id.as_str()))
            {
                let why = format!("the stream no longer holds shard {gone}");
                return self.gap(&mut reader, why).await;
            }
            position
                .shards
                .retain(|id, mark| *mark != Mark::Done || listed.contains_key(id.as_str()));
            // The children of a shard read to its end are named in the position from their
            // first record on: one trimmed before it was read, or gone from the listing, is
            // then a gap rather than a silent later start.
            for shard in &shards {
                let parent_done = shard
                    .parent
                    .as_deref()
                    .is_some_and(|parent| position.shards.get(parent) == Some(&Mark::Done));
                if parent_done && !position.shards.contains_key(&shard.id) {
                    let mark = shard.start.clone().map_or(Mark::Unread, Mark::From);
                    position.shards.insert(shard.id.clone(), mark);
                }
            }
            // Parents first: a shard is read once its parent is done (or gone, read long ago).
            let ready: Vec<Shard> = shards
                .iter()
                .filter(|shard| position.mark(&shard.id) != Mark::Done)
                .filter(|shard| {
                    shard.parent.as_deref().is_none_or(|parent| {
                        !listed.contains_key(parent) || position.mark(parent) == Mark::Done
                    })
                })
                .cloned()
                .collect();
            // A different shard first on each read, so that one busy shard cannot keep the
            // others waiting.
            reader.turn = reader.turn.wrapping_add(1);
            let first = if ready.is_empty() {
                0
            } else {
                reader.turn % ready.len()
            };
            let mut read_records = false;
            for shard in ready[first..].iter().chain(&ready[..first]) {
                let read = self
                    .read_shard(
                        &mut reader,
                        &stream,
                        shard,
                        &mut position,
                        max,
                        max_bytes,
                        &mut batch,
                        &mut bytes,
                    )
                    .await?;
                if let ShardRead::Read { records } = read {
                    read_records |= records > 0;
                }
                if let ShardRead::Trimmed(why) = read {
                    if batch.is_empty() {
                        return self.gap(&mut reader, why).await;
                    }
                    // Deliver what was read first (its deletes would be lost to a resync);
                    // the next read meets the gap again.
                    break;
                }
                if batch.len() >= max || (!batch.is_empty() && bytes >= max_bytes) {
                    break;
                }
            }
            if !batch.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(Changes::Next {
                    changes: batch,
                    position: position.encode(),
                });
            }
            // Records of other namespaces (or from before the start) were stepped over: read on
            // at once, a poll's pause is for a stream that has nothing more.
            if !read_records {
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + POLL)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_back_and_refuse_what_they_did_not_write() {
        let position = StreamPosition {
            label: "2026-12-07T12:27:26.485".into(),
            since_ms: 1,
            at_ms: 2,
            shards: BTreeMap::from([
                ("shardId-1".to_string(), Mark::Done),
                (
                    "shardId-2".to_string(),
                    Mark::After("000000000000000000042".into()),
                ),
                ("shardId-3".to_string(), Mark::Unread),
                (
                    "shardId-4".to_string(),
                    Mark::From("000000000000000000043".into()),
                ),
            ]),
        };
        let encoded = position.encode();
        assert_eq!(StreamPosition::decode(&encoded), Some(position));
        for other in [
            "",
            "sqlite|x|1",
            "dynamodb-stream||1|2|",
            "dynamodb-stream|l|x|2|",
            "dynamodb-stream|l|1|2|s=abc",
            "dynamodb-stream|l|1|2|s",
            "dynamodb-stream|l|1|2|s=1|more",
            "dynamodb-stream|l|1|2|s=@",
            "dynamodb-stream|l|1|2|s=@x1",
        ] {
            assert_eq!(
                StreamPosition::decode(&Position(other.into())),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn tombstones_and_values_are_told_apart() {
        let tombstone = HashMap::from([(ATTR_UNTIL.to_string(), StreamValue::N("1".into()))]);
        assert!(is_tombstone(&tombstone));
        let expiring = HashMap::from([
            (
                ATTR_UNTIL.to_string(),
                StreamValue::N("1765000000000".into()),
            ),
            (
                ATTR_VALUE.to_string(),
                StreamValue::B(aws_sdk_dynamodbstreams::primitives::Blob::new(
                    b"v".to_vec(),
                )),
            ),
        ]);
        assert!(!is_tombstone(&expiring));
        assert_eq!(value_of(&expiring), Ok(b"v".to_vec()));
        let counter = HashMap::from([(ATTR_COUNTER.to_string(), StreamValue::N("-7".into()))]);
        assert_eq!(value_of(&counter), Ok(b"-7".to_vec()));
        assert!(value_of(&tombstone).is_err());
        // An older release's tombstone: no value, expired at the deletion.
        let older = HashMap::from([(
            ATTR_UNTIL.to_string(),
            StreamValue::N("1765000000000".into()),
        )]);
        assert!(is_tombstone(&older));
    }
}
