//! Whole stores moved and compared: export to JSON lines, import from them, copy between any
//! two configured stores, and verify that two stores hold the same keys, values and TTLs.
//!
//! Everything streams a listing page at a time. What is held at once is bounded: a page's keys
//! (at most 1,000), the values read but not yet written (flushed once they reach
//! `limits.max_batch_bytes`, 64 MiB by default), and the reads in flight. `verify` also keeps a
//! 16-byte hash of every key it saw, to count each key once when a listing repeats one (Redis's
//! may) and to find keys only the destination holds. Writes are idempotent (a key written twice
//! holds the same value), so a resumed run may redo the part it was killed in.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use kv_core::limits::MAX_TTL_MS;
use kv_core::{KvStore, Limits, StoredValue, clock};
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

/// How far apart two TTLs of one key may be and still count as the same, beside 1% of the
/// source's: what a copy's read and write of one key can take, retries included.
pub const TTL_TOLERANCE: Duration = Duration::from_secs(10);

/// Writes every key of `store` (those starting with `prefix`, if given) as a JSON line to
/// `out`, reading `jobs` values at a time; returns how many.
pub async fn export(
    store: &KvStore,
    prefix: Option<&str>,
    jobs: usize,
    out: &mut dyn Write,
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
                (key, read, clock::now_ms())
            })
            .buffered(jobs.max(1));
        while let Some((key, read, at)) = reads.next().await {
            // Deleted or expired since it was listed: not part of the store any more.
            if let Some(stored) = read.with_context(|| format!("reading {key:?}"))? {
                writeln!(out, "{}", Record::new(key, stored, at).to_line())
                    .context("writing the export")?;
                count += 1;
            }
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(count),
        }
    }
}

/// Entries waiting to be written, flushed by [`Pending::flush`] once their values reach
/// `limits.max_batch_bytes`.
struct Pending {
    entries: Vec<Entry>,
    bytes: usize,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            entries: Vec::new(),
            bytes: 0,
        }
    }

    fn push(&mut self, entry: Entry) {
        self.bytes += entry.value.len();
        self.entries.push(entry);
    }

    fn full(&self, limits: &Limits) -> bool {
        self.bytes >= limits.max_batch_bytes
    }

    /// Writes what is pending, each TTL counted from its expiry to now (not to when it was
    /// read), so the destination expires when the source does; keys expired meanwhile are
    /// dropped.
    async fn flush(
        &mut self,
        store: &KvStore,
        limits: &Limits,
        jobs: usize,
    ) -> anyhow::Result<u64> {
        let now = clock::now_ms();
        let entries: Vec<Entry> = std::mem::take(&mut self.entries)
            .into_iter()
            .filter_map(|entry| {
                let ttl_ms = entry.ttl_left(now)?;
                Some(Entry { ttl_ms, ..entry })
            })
            .collect();
        self.bytes = 0;
        write_entries(store, limits, entries, jobs).await
    }
}

/// Writes `entries` into `store`: keys without a TTL in `set-many` calls, the others one by
/// one, up to `jobs` calls of each kind at a time. The last entry of a key wins, as it would
/// written in order. An entry's `ttl_ms` is the time it has left (the caller counted it).
/// Returns the keys written (each once).
async fn write_entries(
    store: &KvStore,
    limits: &Limits,
    entries: Vec<Entry>,
    jobs: usize,
) -> anyhow::Result<u64> {
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
    let keys = (plain.len() + timed.len()) as u64;
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
    Ok(keys)
}

/// What a file line says, checked against `store` the way a write would check it.
fn check_entry(store: &KvStore, entry: &Entry) -> Result<(), String> {
    kv_core::store::check_key(&entry.key).map_err(|err| err.to_string())?;
    let max = store.max_value_bytes();
    if entry.value.len() > max {
        return Err(format!(
            "value-too-large: the value of {:?} is {} bytes, over this store's limit of {max}",
            entry.key,
            entry.value.len()
        ));
    }
    if entry.ttl_ms.is_some_and(|ms| ms > MAX_TTL_MS) {
        return Err(format!(
            "invalid-ttl: ttl_ms is over the maximum of {MAX_TTL_MS}"
        ));
    }
    // The time left only shrinks, so what passes here still passes when it is written.
    if entry
        .expires_at_ms
        .is_some_and(|at| at > clock::now_ms().saturating_add(MAX_TTL_MS))
    {
        return Err(format!(
            "invalid-ttl: expires_at_ms is more than the maximum TTL ({MAX_TTL_MS} ms) from now"
        ));
    }
    for (field, ms) in [
        ("ttl_ms", entry.ttl_ms),
        ("expires_at_ms", entry.expires_at_ms),
    ] {
        if ms.is_some() && !store.capabilities().ttl {
            return Err(format!(
                "{:?} has a TTL ({field}), and this store's provider keeps none",
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
    /// The store imported into, by name.
    store: String,
    /// The backend and settings of that store ([`super::store_identity`]).
    store_identity: String,
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
    /// Keys whose `expires_at_ms` had passed: not written.
    pub expired: u64,
}

/// Imports the JSON lines of `file` into `store` (whose backend `identity` names). The file
/// is read once: every line is checked while it is copied aside, and the copy is what is
/// written, so nothing is written from a file with a bad line, nor from lines added to the
/// file during the import. A backend failure part-way leaves a checkpoint that `resume`
/// continues from.
pub async fn import(
    store: &KvStore,
    identity: &str,
    limits: &Limits,
    file: &Path,
    checkpoint: &Checkpoint,
    resume: bool,
    jobs: usize,
) -> anyhow::Result<Imported> {
    // Beside the checkpoint (the file's directory by default), not in a tmpfs `/tmp`.
    let beside = match checkpoint.path().parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let snapshot = tempfile::tempfile_in(beside)
        .with_context(|| format!("creating a copy of the file in {}", beside.display()))?;
    let (file_sha256, keys, snapshot) = check_file(store, file, snapshot)?;
    let mut state = ImportState {
        file_sha256,
        store: store.name().to_string(),
        store_identity: identity.to_string(),
        lines_done: 0,
        keys_done: 0,
    };
    if resume {
        match checkpoint.load::<ImportState>()? {
            Some(saved)
                if saved.file_sha256 == state.file_sha256
                    && saved.store == state.store
                    && saved.store_identity == state.store_identity =>
            {
                eprintln!(
                    "import: resuming after line {} ({} keys written)",
                    saved.lines_done, saved.keys_done
                );
                state = saved;
            }
            Some(_) => bail!(
                "{} is the checkpoint of another file or another store (its backend or settings \
                 differ): remove it, or import without --resume",
                checkpoint.path().display()
            ),
            None => eprintln!(
                "import: no checkpoint at {}, starting at the first line",
                checkpoint.path().display()
            ),
        }
    }
    // Where the checkpoint goes must be writable before anything is written.
    checkpoint.save(&state)?;
    let mut pending = Pending::new();
    let mut written = 0;
    let mut expired = 0;
    let mut batch_keys = 0;
    for (index, line) in BufReader::new(snapshot).lines().enumerate() {
        let line_no = index as u64 + 1;
        let at = || format!("{}:{line_no}", file.display());
        let line = line.with_context(at)?;
        if line_no <= state.lines_done {
            continue;
        }
        // A byte-order mark is dropped from the first line, as the check did.
        let line = match line_no {
            1 => line.strip_prefix('\u{feff}').unwrap_or(&line).to_string(),
            _ => line,
        };
        if !line.trim().is_empty() {
            let entry = Record::parse(&line)
                .and_then(|entry| check_entry(store, &entry).map(|()| entry))
                .map_err(|reason| anyhow::anyhow!("{}: {reason}", at()))?;
            // Counted from the file's expiry at the write (`Pending::flush`); a line with only
            // `ttl_ms` gets it from now.
            let expires_at_ms = entry
                .expires_at_ms
                .or_else(|| entry.ttl_ms.map(|ttl| clock::now_ms().saturating_add(ttl)));
            match entry.ttl_left(clock::now_ms()) {
                None => expired += 1,
                Some(_) => pending.push(Entry {
                    expires_at_ms,
                    ..entry
                }),
            }
            batch_keys += 1;
        }
        if pending.full(limits) || batch_keys >= IMPORT_BATCH {
            written += pending.flush(store, limits, jobs).await?;
            state.lines_done = line_no;
            state.keys_done += batch_keys as u64;
            batch_keys = 0;
            checkpoint.save(&state)?;
        }
    }
    written += pending.flush(store, limits, jobs).await?;
    checkpoint.remove()?;
    Ok(Imported {
        keys,
        written,
        expired,
    })
}

fn open(file: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))
}

/// Checks every line of `file` against `store` while copying it into `snapshot`; returns the
/// file's SHA-256, how many keys it holds, and the copy, rewound. The first bad line is the
/// error, with its line number.
fn check_file(
    store: &KvStore,
    file: &Path,
    snapshot: std::fs::File,
) -> anyhow::Result<(String, u64, std::fs::File)> {
    let mut reader = BufReader::new(open(file)?);
    let mut copy = std::io::BufWriter::new(snapshot);
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
        copy.write_all(&line).context("copying the file aside")?;
        let text = std::str::from_utf8(&line)
            .map_err(|_| anyhow::anyhow!("{}:{line_no}: not UTF-8", file.display()))?;
        let text = match line_no {
            1 => text.strip_prefix('\u{feff}').unwrap_or(text),
            _ => text,
        };
        if text.trim().is_empty() {
            continue;
        }
        Record::parse(text)
            .and_then(|entry| check_entry(store, &entry))
            .map_err(|reason| anyhow::anyhow!("{}:{line_no}: {reason}", file.display()))?;
        keys += 1;
    }
    let mut snapshot = copy.into_inner().map_err(|err| err.into_error())?;
    std::io::Seek::rewind(&mut snapshot)?;
    Ok((hex(&hash.finalize()), keys, snapshot))
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
    /// The backends and settings of both ([`super::store_identity`]): a checkpoint resumes
    /// only the copy between the same two stores.
    pub identities: [String; 2],
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
    pub fn new(from: &str, to: &str, identities: [String; 2]) -> CopyState {
        CopyState {
            from: from.to_string(),
            to: to.to_string(),
            identities,
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
        let mut reads = futures::stream::iter(page.keys)
            .map(|key| async move {
                let read = from.get_with_ttl(&key).await;
                (key, read, clock::now_ms())
            })
            .buffered(jobs.max(1));
        let mut pending = Pending::new();
        let mut page_written = 0;
        while let Some((key, read, read_at)) = reads.next().await {
            let read = read.with_context(|| format!("reading {key:?} from {}", from.name()))?;
            // Deleted or expired since it was listed: not part of the store any more.
            let Some(stored) = read else { continue };
            let ttl_ms = stored.ttl.map(ttl_millis);
            pending.push(Entry {
                key,
                value: stored.value,
                ttl_ms,
                expires_at_ms: ttl_ms.map(|ttl| read_at.saturating_add(ttl)),
            });
            if pending.full(limits) {
                page_written += pending.flush(to, limits, jobs).await?;
            }
        }
        page_written += pending.flush(to, limits, jobs).await?;
        written += page_written;
        state.copied += page_written;
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
    /// Distinct keys in the source.
    pub source_keys: u64,
    /// Distinct keys in the destination.
    pub destination_keys: u64,
    /// Digest of every source key and value, whatever their order.
    pub digest: Digest,
    /// Source keys the destination lacks, or holds another value or TTL for.
    pub differing: u64,
    /// Keys only the destination holds.
    pub only_in_destination: u64,
    /// The first few of each, with what differs.
    pub examples: Vec<String>,
}

impl Comparison {
    /// Whether the destination holds exactly the source's keys, values and TTLs.
    pub fn equal(&self) -> bool {
        self.differing == 0
            && self.only_in_destination == 0
            && self.source_keys == self.destination_keys
    }
}

/// An order-independent digest of key/value pairs: the sum of each pair's SHA-256, so two
/// stores listed in different orders digest alike.
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

/// A key's 16-byte fingerprint, for the sets of keys seen.
fn fingerprint(key: &str) -> [u8; 16] {
    let digest = Sha256::digest(key.as_bytes());
    let mut short = [0; 16];
    short.copy_from_slice(&digest[..16]);
    short
}

/// Differences a comparison names.
const EXAMPLES: usize = 10;

/// What differs between a source key and its copy, if anything.
fn difference(source: &StoredValue, destination: Option<&StoredValue>) -> Option<&'static str> {
    let Some(destination) = destination else {
        return Some("missing");
    };
    if destination.value != source.value {
        return Some("another value");
    }
    match (source.ttl, destination.ttl) {
        (None, None) => None,
        (Some(_), None) => Some("no TTL (the source's expires)"),
        (None, Some(_)) => Some("a TTL (the source's does not expire)"),
        (Some(a), Some(b)) if a.abs_diff(b) > TTL_TOLERANCE + a / 100 => Some("another TTL"),
        _ => None,
    }
}

/// Compares `to` with `from`: every source key's value and TTL in both (TTLs within
/// [`TTL_TOLERANCE`]), and the keys only `to` holds.
pub async fn verify(from: &KvStore, to: &KvStore, jobs: usize) -> anyhow::Result<Comparison> {
    let progress = Progress::new("verify", "compared");
    let mut comparison = Comparison::default();
    let mut source_seen: HashSet<[u8; 16]> = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = from.list_keys(cursor.as_deref()).await?;
        // A listing may return a key twice (a Redis scan across a restart): once is counted.
        let fresh: Vec<String> = page
            .keys
            .into_iter()
            .filter(|key| source_seen.insert(fingerprint(key)))
            .collect();
        let mut reads = futures::stream::iter(fresh)
            .map(|key| async move {
                let both = futures::try_join!(from.get_with_ttl(&key), to.get_with_ttl(&key));
                (key, both)
            })
            .buffered(jobs.max(1));
        while let Some((key, both)) = reads.next().await {
            let (source, destination) = both.with_context(|| format!("comparing {key:?}"))?;
            // Deleted or expired in the source since it was listed: not compared.
            let Some(source) = source else {
                source_seen.remove(&fingerprint(&key));
                continue;
            };
            comparison.source_keys += 1;
            comparison.digest.add(&key, &source.value);
            if let Some(what) = difference(&source, destination.as_ref()) {
                comparison.differing += 1;
                if comparison.examples.len() < EXAMPLES {
                    comparison.examples.push(format!("{key:?}: {what}"));
                }
            }
        }
        progress.set(comparison.source_keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut destination_seen: HashSet<[u8; 16]> = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = to.list_keys(cursor.as_deref()).await?;
        for key in page.keys {
            let seen = fingerprint(&key);
            if !destination_seen.insert(seen) {
                continue;
            }
            comparison.destination_keys += 1;
            if !source_seen.contains(&seen) {
                comparison.only_in_destination += 1;
                if comparison.examples.len() < EXAMPLES {
                    comparison
                        .examples
                        .push(format!("{key:?}: only in {:?}", to.name()));
                }
            }
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    progress.finish(comparison.source_keys);
    Ok(comparison)
}

/// A TTL in whole milliseconds, at least one.
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

    #[test]
    fn differences_include_ttls() {
        let stored = |value: &[u8], ttl: Option<u64>| StoredValue {
            value: value.to_vec(),
            ttl: ttl.map(Duration::from_secs),
        };
        let hour = stored(b"v", Some(3600));
        assert_eq!(difference(&hour, Some(&stored(b"v", Some(3590)))), None);
        assert_eq!(difference(&hour, Some(&stored(b"v", Some(3640)))), None);
        assert_eq!(
            difference(&stored(b"v", Some(2)), Some(&stored(b"v", Some(61)))),
            Some("another TTL")
        );
        assert_eq!(difference(&hour, None), Some("missing"));
        assert_eq!(
            difference(&hour, Some(&stored(b"w", Some(3600)))),
            Some("another value")
        );
        assert!(difference(&hour, Some(&stored(b"v", None))).is_some());
        assert!(difference(&stored(b"v", None), Some(&hour)).is_some());
        assert_eq!(
            difference(&hour, Some(&stored(b"v", Some(60)))),
            Some("another TTL")
        );
    }
}
