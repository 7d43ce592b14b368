//! Whole stores moved and compared: export to JSON lines, import from them, copy between any
//! two configured stores, and verify that two stores hold the same keys and values.
//!
//! Everything streams one listing page at a time, so memory stays bounded by a page (at most
//! 1,000 keys and their values) whatever the size of the store. Writes are idempotent (a key
//! written twice holds the same value), so a resumed run may redo the page it was killed in.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use kv_core::limits::MAX_TTL_MS;
use kv_core::{KvStore, Limits, StoredValue};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::checkpoint::Checkpoint;
use super::jsonl::{Entry, Record};
use super::progress::Progress;

/// Keys written in one batch of an import (a checkpoint follows each).
const IMPORT_BATCH: usize = 500;

/// Keys of one `set-many` call: within every provider's batch limits and small enough that a
/// throttled call is cheap to retry.
const WRITE_CHUNK: usize = 100;

/// Reads every key of `store` (those starting with `prefix`, if given) with its value and TTL,
/// `jobs` at a time, and hands them to `each` in listing order. Returns how many it handed.
async fn for_each_entry(
    store: &KvStore,
    prefix: Option<&str>,
    jobs: usize,
    mut each: impl FnMut(String, StoredValue) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut cursor: Option<String> = None;
    let mut count = 0;
    loop {
        let page = store.list_keys(cursor.as_deref()).await?;
        let keys = page
            .keys
            .into_iter()
            .filter(|key| prefix.is_none_or(|prefix| key.starts_with(prefix)));
        let mut reads = futures::stream::iter(keys)
            .map(|key| async move {
                let read = store.get_with_ttl(&key).await;
                (key, read)
            })
            .buffered(jobs.max(1));
        while let Some((key, read)) = reads.next().await {
            // Deleted or expired since it was listed: not part of the store any more.
            if let Some(stored) = read.with_context(|| format!("reading {key:?}"))? {
                each(key, stored)?;
                count += 1;
            }
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(count),
        }
    }
}

/// Writes every key of `store` as a JSON line to `out`; returns how many.
pub async fn export(
    store: &KvStore,
    prefix: Option<&str>,
    jobs: usize,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    for_each_entry(store, prefix, jobs, |key, stored| {
        writeln!(out, "{}", Record::new(key, stored).to_line()).context("writing the export")
    })
    .await
}

/// Writes `entries` into `store`: keys without a TTL in `set-many` calls, the others one by
/// one, `jobs` at a time. The last entry of a key wins, as it would written in order.
async fn write_entries(
    store: &KvStore,
    limits: &Limits,
    entries: Vec<Entry>,
    jobs: usize,
) -> anyhow::Result<()> {
    let mut last = std::collections::HashMap::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        last.insert(entry.key.clone(), index);
    }
    let (plain, timed): (Vec<Entry>, Vec<Entry>) = entries
        .into_iter()
        .enumerate()
        .filter(|(index, entry)| last.get(&entry.key) == Some(index))
        .map(|(_, entry)| entry)
        .partition(|entry| entry.ttl_ms.is_none());
    let mut chunks: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
    let mut bytes = 0;
    for entry in plain {
        let full = chunks.last().is_none_or(|chunk| {
            chunk.len() >= WRITE_CHUNK.min(limits.max_batch_entries)
                || bytes + entry.value.len() > limits.max_batch_bytes
        });
        if full {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += entry.value.len();
        if let Some(chunk) = chunks.last_mut() {
            chunk.push((entry.key, entry.value));
        }
    }
    let sets = futures::stream::iter(chunks)
        .map(|chunk| async move {
            let first = chunk
                .first()
                .map(|(key, _)| key.clone())
                .unwrap_or_default();
            store
                .set_many(chunk)
                .await
                .with_context(|| format!("writing the batch that starts with {first:?}"))
        })
        .buffer_unordered(jobs.max(1));
    let expiring = futures::stream::iter(timed)
        .map(|entry| async move {
            let ttl_ms = entry.ttl_ms.unwrap_or(1);
            store
                .set_with_ttl(&entry.key, entry.value, ttl_ms)
                .await
                .with_context(|| format!("writing {:?}", entry.key))
        })
        .buffer_unordered(jobs.max(1));
    futures::try_join!(sets.try_collect::<()>(), expiring.try_collect::<()>())?;
    Ok(())
}

/// What a file line says, checked against `store` the way a write would check it.
fn check_entry(store: &KvStore, entry: &Entry) -> Result<(), String> {
    kv_core::store::check_key(&entry.key).map_err(|err| err.message().to_string())?;
    let max = store.max_value_bytes();
    if entry.value.len() > max {
        return Err(format!(
            "the value of {:?} is {} bytes, over this store's limit of {max}",
            entry.key,
            entry.value.len()
        ));
    }
    if let Some(ttl_ms) = entry.ttl_ms {
        if ttl_ms > MAX_TTL_MS {
            return Err(format!(
                "ttl_ms {ttl_ms} is over the maximum of {MAX_TTL_MS}"
            ));
        }
        if !store.capabilities().ttl {
            return Err(format!(
                "{:?} has a TTL, and this store's provider keeps none",
                entry.key
            ));
        }
    }
    Ok(())
}

/// Where an import stopped.
#[derive(Debug, Serialize, Deserialize)]
struct ImportState {
    /// SHA-256 of the file: a checkpoint only resumes the file it was written for.
    file_sha256: String,
    /// The store imported into.
    store: String,
    /// Lines of the file written so far.
    lines_done: u64,
    /// Keys written so far.
    keys_done: u64,
}

/// How an import went.
#[derive(Debug)]
pub struct Imported {
    /// Keys in the file.
    pub keys: u64,
    /// Keys written by this run (fewer when it resumed).
    pub written: u64,
}

/// Imports the JSON lines of `file` into `store`. Every line is checked before anything is
/// written, so a file with one bad line writes nothing; a backend failure part-way leaves a
/// checkpoint that `resume` continues from.
pub async fn import(
    store: &KvStore,
    limits: &Limits,
    file: &Path,
    checkpoint: &Checkpoint,
    resume: bool,
    jobs: usize,
) -> anyhow::Result<Imported> {
    let (file_sha256, keys) = check_file(store, file)?;
    let mut state = ImportState {
        file_sha256,
        store: store.name().to_string(),
        lines_done: 0,
        keys_done: 0,
    };
    if resume {
        match checkpoint.load::<ImportState>()? {
            Some(saved) if saved.file_sha256 == state.file_sha256 && saved.store == state.store => {
                eprintln!(
                    "import: resuming after line {} ({} keys written)",
                    saved.lines_done, saved.keys_done
                );
                state = saved;
            }
            Some(_) => bail!(
                "{} is the checkpoint of another file or store: remove it, or import without --resume",
                checkpoint.path().display()
            ),
            None => eprintln!(
                "import: no checkpoint at {}, starting at the first line",
                checkpoint.path().display()
            ),
        }
    }
    let reader = BufReader::new(open(file)?);
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut written = 0;
    for (index, line) in reader.lines().enumerate() {
        let line_no = index as u64 + 1;
        let line = line.with_context(|| format!("{}:{line_no}", file.display()))?;
        if line_no <= state.lines_done {
            continue;
        }
        if !line.trim().is_empty() {
            batch.push(Record::parse(&line).map_err(anyhow::Error::msg)?);
        }
        if batch.len() >= IMPORT_BATCH {
            let count = batch.len() as u64;
            write_entries(store, limits, std::mem::take(&mut batch), jobs).await?;
            written += count;
            state.lines_done = line_no;
            state.keys_done += count;
            checkpoint.save(&state)?;
        }
    }
    written += batch.len() as u64;
    write_entries(store, limits, batch, jobs).await?;
    checkpoint.remove()?;
    Ok(Imported { keys, written })
}

fn open(file: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))
}

/// Checks every line of `file` against `store`; returns the file's SHA-256 and how many keys
/// it holds. The first bad line is the error, with its line number.
fn check_file(store: &KvStore, file: &Path) -> anyhow::Result<(String, u64)> {
    let mut reader = BufReader::new(open(file)?);
    let mut hash = Sha256::new();
    let mut line = Vec::new();
    let mut keys = 0;
    for line_no in 1.. {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", file.display()))?;
        if read == 0 {
            break;
        }
        hash.update(&line);
        let text = std::str::from_utf8(&line)
            .map_err(|_| anyhow::anyhow!("{}:{line_no}: not UTF-8", file.display()))?;
        if text.trim().is_empty() {
            continue;
        }
        Record::parse(text)
            .and_then(|entry| check_entry(store, &entry))
            .map_err(|reason| anyhow::anyhow!("{}:{line_no}: {reason}", file.display()))?;
        keys += 1;
    }
    Ok((hex(&hash.finalize()), keys))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Where a copy stopped.
#[derive(Debug, Serialize, Deserialize)]
pub struct CopyState {
    /// The store copied from.
    pub from: String,
    /// The store copied to.
    pub to: String,
    /// Signs the listing cursor below (the host's cursors are bound to a secret; a resumed run
    /// uses this one so the saved cursor stays valid).
    pub cursor_secret: String,
    /// The listing cursor after the last page written; `None` before the first.
    pub cursor: Option<String>,
    /// Keys written so far.
    pub copied: u64,
    /// Every page was written (only the verification was left).
    pub done: bool,
}

impl CopyState {
    /// A copy about to start, with a fresh cursor secret.
    pub fn new(from: &str, to: &str) -> CopyState {
        CopyState {
            from: from.to_string(),
            to: to.to_string(),
            cursor_secret: hex(&rand::random::<[u8; 32]>()),
            cursor: None,
            copied: 0,
            done: false,
        }
    }
}

/// Copies every key of `from` into `to`, a listing page at a time, saving `state` to
/// `checkpoint` after each page. Returns the keys written by this run.
pub async fn copy(
    from: &KvStore,
    to: &KvStore,
    limits: &Limits,
    state: &mut CopyState,
    checkpoint: &Checkpoint,
    jobs: usize,
) -> anyhow::Result<u64> {
    let progress = Progress::new("copy", "copied");
    progress.set(state.copied);
    let mut written = 0;
    while !state.done {
        let page = from.list_keys(state.cursor.as_deref()).await?;
        let entries: Vec<Entry> = futures::stream::iter(page.keys)
            .map(|key| async move {
                let read = from.get_with_ttl(&key).await;
                (key, read)
            })
            .buffered(jobs.max(1))
            .map(|(key, read)| -> anyhow::Result<Option<Entry>> {
                Ok(read
                    .with_context(|| format!("reading {key:?} from {}", from.name()))?
                    .map(|stored| Entry {
                        key,
                        value: stored.value,
                        ttl_ms: stored
                            .ttl
                            .map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)),
                    }))
            })
            .try_filter_map(|entry| async move { Ok(entry) })
            .try_collect()
            .await?;
        let count = entries.len() as u64;
        write_entries(to, limits, entries, jobs).await?;
        written += count;
        state.copied += count;
        state.cursor = page.cursor;
        state.done = state.cursor.is_none();
        checkpoint.save(state)?;
        progress.set(state.copied);
    }
    progress.finish(state.copied);
    Ok(written)
}

/// Two stores compared key by key.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Keys in the source.
    pub source_keys: u64,
    /// Keys in the destination.
    pub destination_keys: u64,
    /// Digest of every source key and value, whatever their order.
    pub source_digest: Digest,
    /// Digest of the same keys' values in the destination.
    pub destination_digest: Digest,
    /// Source keys the destination lacks or holds another value for.
    pub differing: u64,
    /// The first few of them.
    pub examples: Vec<String>,
}

impl Comparison {
    /// Whether the destination holds exactly the source's keys and values.
    pub fn equal(&self) -> bool {
        self.differing == 0
            && self.source_keys == self.destination_keys
            && self.source_digest == self.destination_digest
    }
}

/// An order-independent digest of key/value pairs: the sum of each pair's SHA-256, so two
/// stores listed in different orders compare equal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Digest([u64; 4]);

impl Digest {
    fn add(&mut self, key: &str, value: &[u8]) {
        let mut hash = Sha256::new();
        hash.update((key.len() as u64).to_le_bytes());
        hash.update(key.as_bytes());
        hash.update(value);
        let sum = hash.finalize();
        for (lane, bytes) in self.0.iter_mut().zip(sum.chunks_exact(8)) {
            let mut word = [0; 8];
            word.copy_from_slice(bytes);
            *lane = lane.wrapping_add(u64::from_le_bytes(word));
        }
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0
            .iter()
            .try_for_each(|lane| write!(f, "{:016x}", lane))
    }
}

/// Differing keys a comparison names.
const EXAMPLES: usize = 10;

/// Compares `to` with `from`: every source key's value in both, and the key counts.
pub async fn verify(from: &KvStore, to: &KvStore, jobs: usize) -> anyhow::Result<Comparison> {
    let progress = Progress::new("verify", "compared");
    let mut comparison = Comparison::default();
    let mut cursor: Option<String> = None;
    loop {
        let page = from.list_keys(cursor.as_deref()).await?;
        let mut reads = futures::stream::iter(page.keys)
            .map(|key| async move {
                let both = futures::try_join!(from.get(&key), to.get(&key));
                (key, both)
            })
            .buffered(jobs.max(1));
        while let Some((key, both)) = reads.next().await {
            let (source, destination) = both.with_context(|| format!("comparing {key:?}"))?;
            // Deleted or expired in the source since it was listed: not compared.
            let Some(source) = source else { continue };
            comparison.source_keys += 1;
            comparison.source_digest.add(&key, &source);
            if let Some(destination) = &destination {
                comparison.destination_digest.add(&key, destination);
            }
            if destination.as_deref() != Some(&source[..]) {
                comparison.differing += 1;
                if comparison.examples.len() < EXAMPLES {
                    comparison.examples.push(key);
                }
            }
        }
        progress.set(comparison.source_keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    // Keys only the destination holds show in its count.
    let mut cursor: Option<String> = None;
    loop {
        let page = to.list_keys(cursor.as_deref()).await?;
        comparison.destination_keys += page.keys.len() as u64;
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    progress.finish(comparison.source_keys);
    Ok(comparison)
}

/// A TTL as the command line gives it, in milliseconds.
pub fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_ignores_order_and_sees_every_byte() {
        let mut forward = Digest::default();
        forward.add("a", b"1");
        forward.add("b", b"2");
        let mut backward = Digest::default();
        backward.add("b", b"2");
        backward.add("a", b"1");
        assert_eq!(forward, backward);
        let mut moved = Digest::default();
        // The same bytes split differently between key and value are another pair.
        moved.add("a1", b"");
        moved.add("b", b"2");
        assert_ne!(forward, moved);
        assert_eq!(forward.to_string().len(), 64);
    }
}
