//! Read-modify-write increment and compare-and-swap, exactly once, for backends that offer a
//! consistent read with a version (an ETag, a generation, a version attribute) and a write
//! conditioned on that version (S6, S7).
//!
//! [`increment`] reads, parses the counter, adds, and writes under the condition. A lost race
//! backs off with jitter ([`Backoff::CONTENTION`]) and tries again, so N concurrent writers
//! doing M increments end at exactly N*M. An increment keeps the key's expiry, like Redis
//! `INCRBY`. An expired key counts as missing and starts at 0.
//!
//! **Exactly once.** A write's response can be lost after the backend applied it: a reset
//! connection, a timeout, or an SDK that resends and then sees its own write as a conflict.
//! Every increment and swap therefore writes a [`Journal`] beside the value. The journal holds
//! the guest call's [`RequestId`], its result, and the version the write was conditioned on,
//! for the last [`JOURNAL_LEN`] writes of that key. The call's [`Attempt`], which the host
//! lends to each of its attempts, carries the version an attempt's write was conditioned on
//! while its outcome is unknown. Before writing, a retry of the same call reads the key and
//! resolves the earlier attempt:
//! - its request id is in the journal: it was applied, and its recorded result is returned;
//! - the version it was conditioned on is unchanged: it was not applied;
//! - another request's entry is conditioned on that version: the other write won the race, so
//!   ours was not applied (only one write can succeed per version);
//! - otherwise (a plain `set` replaced the key, or more than [`JOURNAL_LEN`] writes happened
//!   since): the outcome cannot be known, and the call fails with
//!   `unavailable: outcome unknown`. It never applies twice.
//!
//! **Tombstones.** A delete leaves an empty item, expired on every clock, with a new version,
//! kept for [`TOMBSTONE_RETENTION`] (providers keep expiring values as long past their
//! expiry). A CAS handle on a missing key carries that item's version, or, where there was no
//! item, the time it looked; [`swap`] inserts only if nothing was written and removed since
//! (S7: no ABA from a missing key either).

use std::collections::VecDeque;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::backoff::Backoff;
use crate::clock;
use crate::combine::{self, ApplyBatch, Batch};
use crate::counter::{CounterRange, add_delta_within, encode_counter, parse_counter};
use crate::error::{KvError, Result};
use crate::provider::{Attempt, RequestId, SwapOutcome, Version};
use crate::retry::OUTCOME_UNKNOWN;

/// Attempts before an increment that keeps losing races gives up.
pub const INCREMENT_ATTEMPTS: u32 = 200;

/// Writes remembered per key. A retry resolves its earlier attempt if fewer writes than this
/// happened to the key in between.
pub const JOURNAL_LEN: usize = 128;

/// One key as a read-modify-write loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stored value, expired or not.
    pub value: Vec<u8>,
    /// The version a conditional write must match.
    pub version: String,
    /// Expiry in Unix milliseconds, if any.
    pub expires_at_ms: Option<u64>,
    /// The writes recorded with the value.
    pub journal: Journal,
}

/// What the write of a read-modify-write step is conditioned on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No item may exist (create-if-absent).
    Absent,
    /// The item is still at this version.
    Version(String),
}

impl Expect {
    /// Absence and every version fingerprint differently, including a backend's empty version
    /// (a DynamoDB item written before versions existed): an empty version is not absence.
    fn fingerprint(&self) -> u32 {
        let mut hash = Sha256::new();
        match self {
            Expect::Absent => hash.update(b"absent"),
            Expect::Version(version) => {
                hash.update(b"version:");
                hash.update(version.as_bytes());
            }
        }
        let digest = hash.finalize();
        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
    }
}

/// The fingerprint of a write conditioned on the key's absence.
fn absent_fingerprint() -> u32 {
    Expect::Absent.fingerprint()
}

/// Whether a write conditioned on `base` can be resolved by the version alone. Absence is
/// not a version (a write and a delete restore it), and neither is an empty version: a
/// backend item written without one (by a release before versions) gets the empty version
/// again with every such write.
fn base_is_a_version(base: u32) -> bool {
    base != absent_fingerprint() && base != Expect::Version(String::new()).fingerprint()
}

/// The outcome of [`ConditionalStore::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Nothing is stored under the key.
    Missing,
    /// The key's state (expired items included, with their expiry).
    Found(Snapshot),
    /// A concurrent writer replaced the key while it was read: a lost race.
    Raced,
}

/// A conditional write: the value, its expiry, and the journal to store with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The new value.
    pub value: Vec<u8>,
    /// Expiry in Unix milliseconds, if any.
    pub expires_at_ms: Option<u64>,
    /// The journal to store beside the value ([`Journal::encode`]).
    pub journal: Journal,
}

/// A backend's consistent read and conditional write of one key.
#[async_trait]
pub trait ConditionalStore: Send + Sync {
    /// The key's stored state. A key deleted or expired less than [`TOMBSTONE_RETENTION`] ago
    /// is `Found` (a tombstone: expired, with a version), never `Missing`.
    async fn read(&self, key: &str) -> Result<Read>;

    /// Stores `write` only if `expect` holds; `Ok(false)` when it did not (the race was lost,
    /// nothing was written).
    async fn write_if(&self, key: &str, write: Write, expect: Expect) -> Result<bool>;

    /// What names `key`'s backend item in this store (a bucket and object name, a container,
    /// partition and id): read-modify-write steps on one item in this process take turns,
    /// and its increments are applied in batches ([`increment`], [`swap`]). Only increments
    /// through the same store instance share a batch, so equal names of different stores
    /// never do; they only wait for each other. The default, the key alone, suits a store
    /// whose keys name its items.
    fn queue_name(&self, key: &str) -> String {
        key.to_string()
    }

    /// Whether the backend's client may resend a conditional write after a lost reply, so
    /// that `Ok(false)` can be the resend failing against the first send's own write. Then a
    /// conflict is resolved through the journal like a lost reply; otherwise it is final.
    fn resends_conditional_writes(&self) -> bool {
        false
    }

    /// Whether `version` names one write, never to come back. A version that is a digest of
    /// the bytes (an S3 ETag of an object written without this provider's write id) comes back
    /// when the same bytes do: a retry then tells "not applied" from "applied and undone" by
    /// the version and the journal together ([`fingerprint_of`]).
    fn version_names_one_write(&self, _version: &str) -> bool {
        true
    }

    /// How many writes the journal stored with `key` remembers: [`JOURNAL_LEN`], or fewer
    /// where the backend keeps less beside a value (S3's 2 KB of user metadata).
    fn journal_len(&self, _key: &str) -> usize {
        JOURNAL_LEN
    }
}

/// What an applied request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Incremented(i64),
    Swapped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Fingerprint of the version the write was conditioned on.
    base: u32,
    /// The low 64 bits of the request id: unique enough among one key's entries.
    request: u64,
    applied: Applied,
}

/// The last [`JOURNAL_LEN`] increments and swaps of one key, stored beside its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Journal {
    entries: VecDeque<Entry>,
}

impl Journal {
    /// Parses a stored journal. Anything unreadable counts as empty: the worst that can
    /// happen is an `outcome unknown` error, never a second application.
    pub fn parse(text: &str) -> Journal {
        let entries = text
            .split(';')
            .filter(|part| !part.is_empty())
            .map(|part| {
                let mut fields = part.split('.');
                let base = u32::from_str_radix(fields.next()?, 16).ok()?;
                let request = u64::from_str_radix(fields.next()?, 16).ok()?;
                let applied = match fields.next()? {
                    "s" => Applied::Swapped,
                    number => Applied::Incremented(number.parse().ok()?),
                };
                fields.next().is_none().then_some(Entry {
                    base,
                    request,
                    applied,
                })
            })
            .collect::<Option<VecDeque<Entry>>>()
            .unwrap_or_default();
        Journal { entries }
    }

    /// The stored form: `base.request.result` entries, oldest first, `;`-separated.
    pub fn encode(&self) -> String {
        let entries: Vec<String> = self
            .entries
            .iter()
            .map(|entry| {
                let applied = match entry.applied {
                    Applied::Swapped => "s".to_string(),
                    Applied::Incremented(total) => total.to_string(),
                };
                format!("{:08x}.{:016x}.{applied}", entry.base, entry.request)
            })
            .collect();
        entries.join(";")
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, request: RequestId) -> Option<Applied> {
        let id = request.short();
        self.entries
            .iter()
            .rev()
            .find(|entry| entry.request == id)
            .map(|entry| entry.applied)
    }

    /// Whether a whole write conditioned on `base` is recorded. A journal of `len` entries
    /// may have been trimmed one entry at a time (by a release before batches, which keeps
    /// exactly `len`), so a group among its oldest entries may have lost some of them.
    fn has_other_write_on(&self, base: u32, len: usize) -> bool {
        let whole = self.entries.len() < len
            || self
                .entries
                .front()
                .is_some_and(|oldest| oldest.base != base);
        whole && self.entries.iter().any(|entry| entry.base == base)
    }

    /// This journal with one more entry ([`Journal::recording_all`]).
    fn recording(&self, base: u32, request: RequestId, applied: Applied, len: usize) -> Journal {
        self.recording_all(base, [(request, applied)], len)
    }

    /// This journal with the entries of one write conditioned on `base`, the oldest writes
    /// dropped beyond `len` entries. A write's entries (a batch of increments) are dropped
    /// together, never some of them: a retry that finds another request's entry on its base
    /// concludes that another write won ([`resolve`]), which holds only if every entry of the
    /// write that won is still there.
    fn recording_all(
        &self,
        base: u32,
        written: impl IntoIterator<Item = (RequestId, Applied)>,
        len: usize,
    ) -> Journal {
        let mut entries = self.entries.clone();
        entries.extend(written.into_iter().map(|(request, applied)| Entry {
            base,
            request: request.short(),
            applied,
        }));
        while entries.len() > len.max(1) {
            let Some(oldest) = entries.pop_front() else {
                break;
            };
            while entries
                .front()
                .is_some_and(|entry| entry.base == oldest.base)
            {
                entries.pop_front();
            }
        }
        Journal { entries }
    }
}

/// How an earlier attempt of the same request ended, judged from the key's current state.
enum Earlier {
    /// No earlier attempt, or it certainly did not apply.
    NotApplied,
    /// It applied, with this result.
    Applied(Applied),
}

/// Resolves the earlier attempt of the call (if any) against the current `journal` and
/// version fingerprint; an attempt resolved as not applied is cleared from `attempt`.
///
/// A version is never reused, so an unchanged version, or another request's entry conditioned
/// on the same version, proves the earlier attempt did not apply. Absence is not a version:
/// an attempt that created the key may have applied and been deleted since (after which the
/// key is missing again, or re-created by someone else with a fresh journal), so an attempt
/// conditioned on absence is resolved only by finding its own entry; otherwise the outcome is
/// unknown.
///
/// No item at all (`missing`) soon after a write conditioned on a version also proves it did
/// not apply: had it applied, its item (no expiry, or its expiry kept) would be kept for
/// [`TOMBSTONE_RETENTION`] past any later delete or expiry, and the version it was conditioned
/// on is gone for good (the backend's expiry removed that item), so it never will.
fn resolve(
    attempt: &mut Attempt,
    journal: &Journal,
    current: u32,
    len: usize,
    missing: bool,
) -> Result<Earlier> {
    if let Some(applied) = journal.find(attempt.request()) {
        return Ok(Earlier::Applied(applied));
    }
    let Some(base) = attempt.attempted_base() else {
        return Ok(Earlier::NotApplied);
    };
    let lifetime = u64::try_from(ABSENCE_HANDLE_LIFETIME.as_millis()).unwrap_or(u64::MAX);
    let gone_since_it_was_sent =
        missing && attempt.attempted_ms_ago().is_some_and(|ago| ago < lifetime);
    if base_is_a_version(base)
        && (base == current || journal.has_other_write_on(base, len) || gone_since_it_was_sent)
    {
        attempt.set_attempted_base(None);
        return Ok(Earlier::NotApplied);
    }
    let why = if !base_is_a_version(base) {
        "an earlier attempt lost its reply, and the key has no record of it: the state it was \
         conditioned on (no item, or bytes a plain set can restore) may have come back since"
    } else {
        "an earlier attempt's reply was lost and the key has changed too much since to tell \
         whether it was applied"
    };
    Err(KvError::unavailable(format!("{OUTCOME_UNKNOWN}: {why}")).with_transient(false))
}

/// Re-reads `key` right after an ambiguous write to resolve it: what it applied, or `None`
/// when it did not apply (`attempted_base` cleared once the version has moved on, kept while
/// it is still the one the write was conditioned on: the write may yet land) or when the
/// backend could not be read (`attempted_base` kept, for the host's retry to resolve).
async fn resolve_now<S: ConditionalStore + ?Sized>(
    store: &S,
    key: &str,
    attempt: &mut Attempt,
) -> Result<Option<Applied>> {
    for read_attempt in 1..=RESOLVE_ATTEMPTS {
        match store.read(key).await {
            Ok(read) if read != Read::Raced => {
                let (journal, len) = (journal_of(&read), store.journal_len(key));
                let (before, current) = (attempt.clone(), fingerprint_of(store, &read));
                let missing = read == Read::Missing;
                return match resolve(attempt, &journal, current, len, missing)? {
                    Earlier::Applied(applied) => Ok(Some(applied)),
                    Earlier::NotApplied => {
                        // Not applied yet: the write may still land, so it keeps its base
                        // (and the time it was sent).
                        if before.attempted_base() == Some(current) {
                            *attempt = before;
                        }
                        Ok(None)
                    }
                };
            }
            _ => Backoff::CONTENTION.wait(read_attempt).await,
        }
    }
    Ok(None)
}

/// Reads tried right after an ambiguous write before leaving it to the host's retry.
const RESOLVE_ATTEMPTS: u32 = 4;

fn journal_of(read: &Read) -> Journal {
    match read {
        Read::Found(snapshot) => snapshot.journal.clone(),
        Read::Missing | Read::Raced => Journal::default(),
    }
}

/// What a write conditioned on the state `read` is conditioned on, as the journal and an
/// [`Attempt`] record it. Where a version is a digest of the bytes
/// ([`ConditionalStore::version_names_one_write`] is false), the same version comes back
/// whenever the same bytes do, so the journal read with it is part of the state; and a state
/// with an empty journal names nothing certain (a plain `set` of the same bytes restores it
/// exactly), so it fingerprints like absence: only the request's own journal entry resolves a
/// write on it.
fn fingerprint_of<S: ConditionalStore + ?Sized>(store: &S, read: &Read) -> u32 {
    match read {
        Read::Found(snapshot) if !store.version_names_one_write(&snapshot.version) => {
            if snapshot.journal.is_empty() {
                absent_fingerprint()
            } else {
                let state = format!("{}\n{}", snapshot.version, snapshot.journal.encode());
                Expect::Version(state).fingerprint()
            }
        }
        Read::Found(snapshot) => Expect::Version(snapshot.version.clone()).fingerprint(),
        Read::Missing | Read::Raced => Expect::Absent.fingerprint(),
    }
}

/// Adds `delta` to the counter at `key`, exactly once for the call of `attempt` however often
/// it is retried (each retry with the same [`Attempt`]).
pub async fn increment<S: ConditionalStore + ?Sized>(
    store: &S,
    key: &str,
    delta: i64,
    attempt: &mut Attempt,
) -> Result<i64> {
    increment_within(store, key, delta, CounterRange::Signed, attempt).await
}

/// The most increments of one key applied in one write ([`crate::combine`]). Each adds a
/// journal entry, so a batch is also bounded by an eighth of the key's journal: a retry still
/// finds its entry after at least 8 more writes of full batches (and [`JOURNAL_LEN`] writes
/// of one increment each).
pub const MAX_BATCH: usize = 16;

/// [`increment`], failing with `overflow` and writing nothing when the total would leave
/// `range`. Concurrent increments of one key from this process are applied together, one
/// read and one conditional write for the batch ([`crate::combine`]).
pub async fn increment_within<S: ConditionalStore + ?Sized>(
    store: &S,
    key: &str,
    delta: i64,
    range: CounterRange,
    attempt: &mut Attempt,
) -> Result<i64> {
    let max_batch = (store.journal_len(key) / 8).clamp(1, MAX_BATCH);
    let applier = Increments { store, key };
    combine::increment(
        store,
        &store.queue_name(key),
        delta,
        range,
        attempt,
        max_batch,
        &applier,
    )
    .await
}

/// The increments of one key, applied by read-modify-write.
struct Increments<'a, S: ?Sized> {
    store: &'a S,
    key: &'a str,
}

#[async_trait]
impl<S: ConditionalStore + ?Sized> ApplyBatch for Increments<'_, S> {
    async fn apply(&self, batch: &mut Batch) {
        apply_increments(self.store, self.key, batch).await
    }
}

/// Reads the key, resolves what earlier attempts left unknown, adds every increment of the
/// batch in order and writes the total with one journal entry per increment, conditioned on
/// the version read. A lost race reads again (with backoff); an ambiguous write is resolved at
/// once through the journal. An increment that would leave its range fails alone.
async fn apply_increments<S: ConditionalStore + ?Sized>(store: &S, key: &str, batch: &mut Batch) {
    let resends = store.resends_conditional_writes();
    for round in 0..INCREMENT_ATTEMPTS {
        if batch.is_empty() {
            return;
        }
        if round > 0 {
            Backoff::CONTENTION.wait(round).await;
        }
        let read = match store.read(key).await {
            Ok(Read::Raced) => continue,
            Ok(read) => read,
            Err(err) => return batch.answer(|_| Some(Err(err.duplicate()))),
        };
        let base = fingerprint_of(store, &read);
        settle(batch, &read, base, store.journal_len(key));
        if batch.is_empty() {
            return;
        }
        let (start, expires_at_ms, expect, journal) = match read {
            Read::Raced => continue,
            Read::Missing => (0, None, Expect::Absent, Journal::default()),
            Read::Found(snapshot) if !clock::is_live(snapshot.expires_at_ms, clock::now_ms()) => {
                // Expired: the counter restarts, and so does its history.
                (
                    0,
                    None,
                    Expect::Version(snapshot.version),
                    Journal::default(),
                )
            }
            Read::Found(snapshot) => match parse_counter(&snapshot.value) {
                Ok(current) => (
                    current,
                    snapshot.expires_at_ms,
                    Expect::Version(snapshot.version),
                    snapshot.journal,
                ),
                Err(err) => return batch.answer(|_| Some(Err(err.duplicate()))),
            },
        };
        // Each increment adds to the totals before it. One that would leave its range is
        // left out, and told so only once the write applied: the totals it was judged on
        // exist only then.
        let mut total = start;
        let mut written = Vec::new();
        batch.answer(|pending| {
            match add_delta_within(total, pending.delta, pending.range) {
                Ok(next) => {
                    total = next;
                    pending.planned = Some(next);
                    pending.refused = None;
                    // An earlier write on this very base was not applied yet, but may still
                    // land (a reply lost, or a batch handed back by a caller that gave up).
                    pending.in_doubt = pending.attempt.attempted_base() == Some(base);
                    pending.attempt.set_attempted_base(Some(base));
                    written.push((pending.attempt.request(), Applied::Incremented(next)));
                }
                Err(err) => {
                    pending.planned = None;
                    pending.refused = Some(err);
                    pending.in_doubt = pending.attempt.attempted_base() == Some(base);
                }
            }
            None
        });
        if written.is_empty() {
            // Nothing to write: the range errors stand on the state just read. An increment
            // whose earlier write may still land is not told "not applied".
            return batch.answer(|pending| match pending.refused.take() {
                Some(_) if pending.in_doubt => Some(Err(in_doubt_error())),
                Some(err) => Some(Err(err)),
                None => Some(Err(KvError::internal("an increment had no plan"))),
            });
        }
        let write = Write {
            value: encode_counter(total),
            expires_at_ms,
            journal: journal.recording_all(base, written, store.journal_len(key)),
        };
        let failure = match store.write_if(key, write, expect).await {
            Ok(true) => {
                return batch.answer(|pending| {
                    Some(match (pending.planned, pending.refused.take()) {
                        (Some(total), _) => Ok(total),
                        // Left out of a write that applied, on the totals it wrote. That write
                        // was conditioned on the base of any earlier write of this increment,
                        // so the earlier one had not landed and never will.
                        (None, Some(err)) => {
                            pending.attempt.set_attempted_base(None);
                            Err(err)
                        }
                        (None, None) => Err(KvError::internal("an increment had no plan")),
                    })
                });
            }
            Ok(false) if !resends => {
                // A conflict is final: this write did not happen. An earlier write of the same
                // increment on the same base may be what moved the version: that one keeps its
                // base, and the next read resolves it through the journal.
                batch.answer(|pending| {
                    if !pending.in_doubt {
                        pending.attempt.set_attempted_base(None);
                    }
                    None
                });
                continue;
            }
            // The conflict may be a resend meeting our own first send.
            Ok(false) => None,
            // Refused (throttled, rejected): certainly not written, unless the client resends
            // (then the refusal may answer a resend whose first send applied). The host's
            // retry, which honours the backend's Retry-After, decides whether to try again.
            Err(err) if !err.may_have_applied() && !resends => {
                return batch.answer(|pending| {
                    // One whose earlier write may still land keeps it open: the host's retry,
                    // or its final `outcome unknown`, resolves it.
                    if !pending.in_doubt {
                        pending.attempt.set_attempted_base(None);
                    }
                    Some(Err(err.duplicate()))
                });
            }
            // The reply was lost: the write may or may not have happened.
            Err(err) => {
                tracing::debug!(error = %err.chain(), "a batch's increment write may have applied");
                Some(err)
            }
        };
        // Resolve it now, while the entries are surely still in the journal: after the host's
        // backoff, other writers may have pushed them out.
        let resolved = settle_now(store, key, batch).await;
        if let Some(err) = failure.filter(|_| !resolved) {
            // Still unresolved (the backend kept failing): the host's retry resolves it.
            return batch.answer(|_| Some(Err(err.duplicate())));
        }
    }
    batch.answer(|_| {
        Some(Err(KvError::unavailable(
            "increment lost every race under contention",
        )
        .with_transient(false)))
    });
}

/// The answer of an increment that cannot be applied now, whose earlier write, handed back by
/// a caller that gave up, may still land.
fn in_doubt_error() -> KvError {
    KvError::unavailable(format!(
        "{OUTCOME_UNKNOWN}: an earlier write of this increment may still be in flight"
    ))
    .with_transient(false)
}

/// Answers the increments whose earlier attempt `journal` and the `current` version fingerprint
/// resolve (applied: its recorded total; unknowable: `outcome unknown`); those certainly not
/// applied stay, their attempts cleared.
///
/// "Not applied" because the version is still the one an earlier write was conditioned on
/// means "not applied yet": that write may still land. Its base stays in the attempt, so the
/// next write on the same base knows (`Pending::in_doubt`) and no answer
/// says "not applied" before the version has moved on.
fn settle(batch: &mut Batch, read: &Read, current: u32, len: usize) {
    let (journal, missing) = (&journal_of(read), *read == Read::Missing);
    batch.answer(|pending| {
        let before = pending.attempt.clone();
        let settled = resolve(&mut pending.attempt, journal, current, len, missing);
        if before.attempted_base() == Some(current) && matches!(settled, Ok(Earlier::NotApplied)) {
            pending.attempt = before;
        }
        match settled {
            Ok(Earlier::Applied(Applied::Incremented(total))) => Some(Ok(total)),
            Ok(Earlier::Applied(Applied::Swapped)) => {
                Some(Err(KvError::internal("a swap's request id was reused")))
            }
            Ok(Earlier::NotApplied) => None,
            Err(err) => Some(Err(err)),
        }
    });
}

/// [`settle`] right after an ambiguous write, reading the key again: whether a read succeeded.
async fn settle_now<S: ConditionalStore + ?Sized>(store: &S, key: &str, batch: &mut Batch) -> bool {
    for read_attempt in 1..=RESOLVE_ATTEMPTS {
        match store.read(key).await {
            Ok(read) if read != Read::Raced => {
                let len = store.journal_len(key);
                settle(batch, &read, fingerprint_of(store, &read), len);
                return true;
            }
            _ => Backoff::CONTENTION.wait(read_attempt).await,
        }
    }
    false
}

/// The version a guest's CAS handle carries for `read`: the backend version of a live value;
/// for a key missing to the guest, the tombstone or expired item it found, or the time at
/// which it found no item at all ([`swap`] says what each allows).
pub fn version_of(read: &Read) -> Version {
    match read {
        Read::Found(snapshot) if clock::is_live(snapshot.expires_at_ms, clock::now_ms()) => {
            Version::Tag(snapshot.version.clone())
        }
        Read::Found(snapshot) => Version::Tag(format!(
            "{GONE_AT}{}@{}",
            clock::Stamp::now().encode(),
            snapshot.version
        )),
        Read::Missing => Version::Tag(format!("{MISSING_SINCE}{}", clock::Stamp::now().encode())),
        Read::Raced => Version::Absent,
    }
}

/// How long a deleted or expired key's item stays readable (a tombstone) before the backend
/// may remove it. Every [`ConditionalStore`] keeps this promise: a delete writes a tombstone
/// (an item without a value, expired on every clock) that is kept this long, and an expiring
/// value is kept this long past its expiry. So a key seen with no item at all cannot have been
/// written and removed since, if it was seen less than [`ABSENCE_HANDLE_LIFETIME`] ago.
pub const TOMBSTONE_RETENTION: std::time::Duration = std::time::Duration::from_secs(600);

/// The expiry a tombstone carries (Unix ms): long past on every clock, so no host whose clock
/// is behind the deleting host's reads a tombstone as a live value. How long the backend keeps
/// it is set apart, from the deletion time ([`TOMBSTONE_RETENTION`]).
pub const TOMBSTONE_EXPIRES_AT_MS: u64 = 1;

/// How long a CAS handle taken on a key with no item at all can insert it. Half of
/// [`TOMBSTONE_RETENTION`]: a tombstone written after the handle was taken is surely still
/// there (the other half covers clock skew between the host and the backend's expiry). An
/// older handle gets `cas-failed` and a fresh handle rather than a guess.
pub const ABSENCE_HANDLE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(300);

/// A handle's version for a key with no item: this prefix and the time at which the absence
/// was seen ([`clock::Stamp`]: handles are host resources, never stored or sent). No backend
/// version contains `@`.
const MISSING_SINCE: &str = "missing@";

/// A handle's version for a key whose item is expired or a tombstone: this prefix, the time at
/// which it was seen ([`clock::Stamp`]), `@` and that item's version.
const GONE_AT: &str = "gone@";

/// What `swap` must find for a key that is missing to the guest: the same tombstone or
/// expired item, or still no item (or no item any more: the backend's expiry may remove an
/// expired item or an old tombstone at any time), seen recently enough that a delete in
/// between would have left a tombstone. `None` when the key changed or the handle is too
/// old to tell.
fn unchanged_absence(tag: &str, read: &Read, now_ms: u64) -> Option<Expect> {
    let (since, gone) = match tag.strip_prefix(GONE_AT) {
        Some(rest) => {
            let (since, version) = rest.split_once('@')?;
            (since, Some(version))
        }
        None => (tag.strip_prefix(MISSING_SINCE)?, None),
    };
    let since = clock::Stamp::decode(since)?;
    let lifetime = u64::try_from(ABSENCE_HANDLE_LIFETIME.as_millis()).unwrap_or(u64::MAX);
    match (read, gone) {
        // Still missing too: where versions are digests, a live value can have the version the
        // expired one had.
        (Read::Found(snapshot), Some(version))
            if snapshot.version == version && !clock::is_live(snapshot.expires_at_ms, now_ms) =>
        {
            Some(Expect::Version(snapshot.version.clone()))
        }
        (Read::Missing, _) if since.age_ms() < lifetime => Some(Expect::Absent),
        _ => None,
    }
}

/// Whether `version` may be answered by an expired item or a tombstone, which the backend may
/// remove between `swap`'s read and its write: a handle taken on one, or no read at all.
fn may_meet_a_removed_item(version: &Version) -> bool {
    match version {
        Version::Tag(tag) => tag.starts_with(GONE_AT),
        Version::Absent => true,
    }
}

/// Writes `value` if `key` is still at `expected` (a version from [`version_of`]), exactly
/// once for the call of `attempt` however often it is retried (each retry with the same
/// [`Attempt`]). A handle taken on a missing key inserts only if the key was not written and
/// removed since (S7, no ABA): the same tombstone or expired item is still there, which is
/// then replaced under its own version, or there is still no item and the handle is younger
/// than [`ABSENCE_HANDLE_LIFETIME`]. [`Version::Absent`] (no read) matches any missing key.
/// The write clears any expiry, like `set`.
pub async fn swap<S: ConditionalStore + ?Sized>(
    store: &S,
    key: &str,
    expected: &Version,
    value: &[u8],
    attempt: &mut Attempt,
) -> Result<SwapOutcome> {
    let outcome = swap_once(store, key, expected, value, attempt).await?;
    // The expired item or tombstone the handle was taken on may have been removed by the
    // backend's expiry (DynamoDB's TTL) between this read and this write: the key is still
    // missing, so look again rather than answer a conflict nobody caused. A conflict is
    // certainly not applied, so the same attempt may write again.
    if outcome == SwapOutcome::Conflict && may_meet_a_removed_item(expected) {
        return swap_once(store, key, expected, value, attempt).await;
    }
    Ok(outcome)
}

async fn swap_once<S: ConditionalStore + ?Sized>(
    store: &S,
    key: &str,
    expected: &Version,
    value: &[u8],
    attempt: &mut Attempt,
) -> Result<SwapOutcome> {
    let _turn = combine::turn(&store.queue_name(key)).await;
    let read = loop {
        match store.read(key).await? {
            Read::Raced => Backoff::CONTENTION.wait(1).await,
            read => break read,
        }
    };
    let journal = journal_of(&read);
    let (before, current) = (attempt.clone(), fingerprint_of(store, &read));
    let missing = read == Read::Missing;
    match resolve(attempt, &journal, current, store.journal_len(key), missing)? {
        Earlier::Applied(Applied::Swapped) => return Ok(SwapOutcome::Swapped),
        Earlier::Applied(Applied::Incremented(_)) => {
            return Err(KvError::internal("an increment's request id was reused"));
        }
        Earlier::NotApplied => {}
    }
    // Not applied *yet*: an earlier write on this very version may still land (as for
    // increments, `settle`). It keeps its base, and this attempt's answers allow for it.
    let in_doubt = before.attempted_base() == Some(current);
    if in_doubt {
        *attempt = before;
    }
    let condition = match (expected, &read) {
        // A version from no read (an embedder's "insert if missing"): no live item.
        (Version::Absent, Read::Missing) => Expect::Absent,
        (Version::Absent, Read::Found(snapshot))
            if !clock::is_live(snapshot.expires_at_ms, clock::now_ms()) =>
        {
            Expect::Version(snapshot.version.clone())
        }
        (Version::Tag(tag), Read::Found(snapshot)) if snapshot.version == *tag => {
            Expect::Version(tag.clone())
        }
        (Version::Tag(tag), read) => match unchanged_absence(tag, read, clock::now_ms()) {
            Some(condition) => condition,
            None => return Ok(SwapOutcome::Conflict),
        },
        _ => return Ok(SwapOutcome::Conflict),
    };
    let base = fingerprint_of(store, &read);
    let write = Write {
        value: value.to_vec(),
        expires_at_ms: None,
        journal: journal.recording(
            base,
            attempt.request(),
            Applied::Swapped,
            store.journal_len(key),
        ),
    };
    attempt.set_attempted_base(Some(base));
    let failure = match store.write_if(key, write, condition).await {
        Ok(true) => return Ok(SwapOutcome::Swapped),
        Ok(false) if !store.resends_conditional_writes() && !in_doubt => None,
        // A conflict that may be a resend meeting our own first send, or our earlier write
        // landing first: the journal tells.
        Ok(false) => Some(None),
        // Refused (throttled, rejected): certainly not written (unless the client resends),
        // and not a conflict either (S7: a store failure is a store error, never
        // `cas-failed`). An earlier write that may still land keeps the outcome open.
        Err(err) if !err.may_have_applied() && !store.resends_conditional_writes() => {
            if !in_doubt {
                attempt.set_attempted_base(None);
            }
            return Err(err);
        }
        // The reply was lost: the write may or may not have happened.
        Err(err) => Some(Some(err)),
    };
    let Some(failure) = failure else {
        attempt.set_attempted_base(None);
        return Ok(SwapOutcome::Conflict);
    };
    match resolve_now(store, key, attempt).await? {
        Some(Applied::Swapped) => Ok(SwapOutcome::Swapped),
        Some(Applied::Incremented(_)) => {
            Err(KvError::internal("an increment's request id was reused"))
        }
        None => match failure {
            // Unresolved (the backend kept failing), or resolved as not applied after a
            // failure: either way the key may still be at the expected version, so this is a
            // store error for the host's retry, which resolves it again and writes or finds
            // the real conflict; never `cas-failed` against a key nobody changed.
            Some(err) => Err(err),
            // A resend's conflict that could not be resolved (the reads kept failing): the
            // first send may have applied, so it is not a conflict the guest may retry from.
            None if attempt.attempted_base().is_some() => Err(KvError::unavailable(
                "a conditional write was resent and met a conflict, and the key could not be \
                 read to tell whether the first send applied",
            )),
            // A conflicting resend whose first send did not apply: a real conflict.
            None => Ok(SwapOutcome::Conflict),
        },
    }
}

/// The key's live value and the time it has left, for `get_with_ttl`.
pub async fn get_with_ttl<S: ConditionalStore + ?Sized>(
    store: &S,
    key: &str,
) -> Result<Option<crate::provider::StoredValue>> {
    for attempt in 0..INCREMENT_ATTEMPTS {
        if attempt > 0 {
            Backoff::CONTENTION.wait(attempt).await;
        }
        return Ok(match store.read(key).await? {
            Read::Raced => continue,
            Read::Missing => None,
            Read::Found(snapshot) => crate::provider::StoredValue::at(
                snapshot.value,
                snapshot.expires_at_ms,
                clock::now_ms(),
            ),
        });
    }
    Err(KvError::unavailable(
        "the key kept changing while it was read",
    ))
}

/// The key's current value and CAS version, for `read_versioned`.
pub async fn read_versioned<S: ConditionalStore + ?Sized>(
    store: &S,
    key: &str,
) -> Result<crate::provider::Versioned> {
    for attempt in 0..INCREMENT_ATTEMPTS {
        if attempt > 0 {
            Backoff::CONTENTION.wait(attempt).await;
        }
        let read = store.read(key).await?;
        let value = match &read {
            Read::Raced => continue,
            Read::Found(snapshot) if clock::is_live(snapshot.expires_at_ms, clock::now_ms()) => {
                Some(snapshot.value.clone())
            }
            _ => None,
        };
        return Ok(crate::provider::Versioned {
            version: version_of(&read),
            value,
        });
    }
    Err(KvError::unavailable(
        "the key kept changing while it was read",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

    /// Value, version, expiry and journal of one key.
    type Entry = (Vec<u8>, u64, Option<u64>, Journal);

    /// A versioned map: each write bumps the version. `lose_replies` makes the next writes
    /// apply and then fail, as a lost reply would.
    #[derive(Default)]
    struct Versioned {
        items: Mutex<HashMap<String, Entry>>,
        next: AtomicU64,
        lose_replies: AtomicU32,
        /// Reads that fail, as a backend that stays unreachable for a while.
        fail_reads: AtomicU32,
        /// Reads that fail after the next lost reply.
        fail_reads_after_loss: AtomicU32,
        /// Writes refused before they apply, with this error.
        refuse_writes: Mutex<Vec<KvError>>,
        /// Writes that apply and then answer `Ok(false)`, as a client's resend meeting its
        /// first send's write does.
        resend_conflicts: AtomicU32,
        /// Whether the client resends conditional writes.
        resends: bool,
        /// Versions are digests of the bytes (as S3's ETags), not a counter.
        digests: bool,
        /// The next write first finds the key's item removed, as DynamoDB's TTL sweeper
        /// removes an expired item between a read and a write.
        sweep_before_next_write: AtomicBool,
    }

    impl Versioned {
        /// The version of a write of `value`: a digest of it, or the next count.
        fn version_for(&self, value: &[u8]) -> u64 {
            if self.digests {
                let digest = Sha256::digest(value);
                u64::from_be_bytes(digest[..8].try_into().unwrap())
            } else {
                self.next.fetch_add(1, Ordering::Relaxed) + 1
            }
        }

        fn put(&self, key: &str, value: &[u8], expires_at_ms: Option<u64>) {
            let version = self.version_for(value);
            let mut items = self.items.lock().unwrap();
            items.insert(
                key.to_string(),
                (value.to_vec(), version, expires_at_ms, Journal::default()),
            );
        }

        fn value(&self, key: &str) -> Vec<u8> {
            self.items.lock().unwrap()[key].0.clone()
        }

        fn remove(&self, key: &str) {
            self.items.lock().unwrap().remove(key);
        }

        /// The next write is refused with `error` and applies nothing.
        fn refuse_next_write(&self, error: KvError) {
            self.refuse_writes.lock().unwrap().push(error);
        }
    }

    #[async_trait]
    impl ConditionalStore for Versioned {
        async fn read(&self, key: &str) -> Result<Read> {
            tokio::task::yield_now().await;
            let fail = self
                .fail_reads
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if fail {
                return Err(KvError::unavailable("read failed"));
            }
            Ok(match self.items.lock().unwrap().get(key) {
                None => Read::Missing,
                Some((value, version, expires_at_ms, journal)) => Read::Found(Snapshot {
                    value: value.clone(),
                    version: version.to_string(),
                    expires_at_ms: *expires_at_ms,
                    journal: journal.clone(),
                }),
            })
        }

        async fn write_if(&self, key: &str, write: Write, expect: Expect) -> Result<bool> {
            tokio::task::yield_now().await;
            if let Some(error) = self.refuse_writes.lock().unwrap().pop() {
                return Err(error);
            }
            let holds = {
                let mut items = self.items.lock().unwrap();
                if self.sweep_before_next_write.swap(false, Ordering::Relaxed) {
                    items.remove(key);
                }
                let current = items.get(key).map(|(_, version, _, _)| version.to_string());
                let holds = match expect {
                    Expect::Absent => current.is_none(),
                    Expect::Version(version) => current == Some(version),
                };
                if holds {
                    let version = self.version_for(&write.value);
                    let stored = Journal::parse(&write.journal.encode());
                    items.insert(
                        key.to_string(),
                        (write.value, version, write.expires_at_ms, stored),
                    );
                }
                holds
            };
            let resend_conflict = self
                .resend_conflicts
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if resend_conflict {
                let after = self.fail_reads_after_loss.swap(0, Ordering::Relaxed);
                self.fail_reads.store(after, Ordering::Relaxed);
                return Ok(false);
            }
            let lose = self
                .lose_replies
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if lose {
                let after = self.fail_reads_after_loss.swap(0, Ordering::Relaxed);
                self.fail_reads.store(after, Ordering::Relaxed);
                return Err(KvError::unavailable("reply lost"));
            }
            Ok(holds)
        }

        fn resends_conditional_writes(&self) -> bool {
            self.resends
        }

        fn version_names_one_write(&self, _version: &str) -> bool {
            !self.digests
        }
    }

    /// A client that resends: the first send applies, its reply is lost, the resend meets
    /// that write as a conflict, and the key cannot be read to tell. That is not a conflict
    /// the guest may retry from (its CAS loop would apply its change twice), and a refusal
    /// after a resend is not proof that nothing applied.
    #[tokio::test]
    async fn an_unresolved_resend_conflict_is_not_cas_failed() {
        let store = Versioned {
            resends: true,
            ..Versioned::default()
        };
        store.put("k", b"a", None);
        let version = version_of_key(&store, "k");
        let mut call = Attempt::new();
        store.resend_conflicts.store(1, Ordering::Relaxed);
        store
            .fail_reads_after_loss
            .store(RESOLVE_ATTEMPTS, Ordering::Relaxed);
        let err = swap(&store, "k", &version, b"b", &mut call)
            .await
            .expect_err("not a conflict");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(call.attempted_base().is_some(), "left unresolved");
        assert_eq!(store.value("k"), b"b", "the first send applied");
        // The host's retry resolves it: swapped, once.
        let outcome = swap(&store, "k", &version, b"b", &mut call).await.unwrap();
        assert_eq!(outcome, SwapOutcome::Swapped);
        // A throttled answer from a resending client keeps the attempt open.
        let store = Versioned {
            resends: true,
            ..Versioned::default()
        };
        store.put("k", b"a", None);
        let version = version_of_key(&store, "k");
        store.refuse_next_write(KvError::new(ErrorKind::Throttled, "429"));
        let mut call = Attempt::new();
        let outcome = swap(&store, "k", &version, b"b", &mut call).await;
        // Resolved at once by reading: not applied, so the error goes to the host's retry.
        assert!(outcome.is_err(), "{outcome:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_increments_are_exact() {
        let store = std::sync::Arc::new(Versioned::default());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..50 {
                        increment(&*store, "n", 1, &mut Attempt::new())
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(store.value("n"), b"400");
    }

    /// A backend that loses every race it can: each conditional write first waits, so
    /// concurrent writers of this process would all read one version and all but one lose.
    /// Taking turns, none of 8 x 25 increments ever loses a race.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writers_of_one_process_take_turns() {
        struct Slow(Versioned, AtomicU32);
        #[async_trait]
        impl ConditionalStore for Slow {
            async fn read(&self, key: &str) -> Result<Read> {
                self.0.read(key).await
            }
            async fn write_if(&self, key: &str, write: Write, expect: Expect) -> Result<bool> {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                let written = self.0.write_if(key, write, expect).await?;
                if !written {
                    self.1.fetch_add(1, Ordering::Relaxed);
                }
                Ok(written)
            }
            fn queue_name(&self, key: &str) -> String {
                format!("slow-test/{key}")
            }
        }
        let store = std::sync::Arc::new(Slow(Versioned::default(), AtomicU32::new(0)));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..25 {
                        increment(&*store, "n", 1, &mut Attempt::new())
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(store.0.value("n"), b"200");
        assert_eq!(store.1.load(Ordering::Relaxed), 0, "races were lost");
    }

    /// Concurrent increments of one key through one store are applied in batches: fewer writes
    /// than increments, each increment once, each total distinct, also when batches lose their
    /// replies (resolved through the journal entry of every increment of the batch).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn increments_are_batched_and_each_applied_once() {
        struct Counted(Versioned, AtomicU32);
        #[async_trait]
        impl ConditionalStore for Counted {
            async fn read(&self, key: &str) -> Result<Read> {
                self.0.read(key).await
            }
            async fn write_if(&self, key: &str, write: Write, expect: Expect) -> Result<bool> {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                self.1.fetch_add(1, Ordering::Relaxed);
                self.0.write_if(key, write, expect).await
            }
        }
        let store = std::sync::Arc::new(Counted(Versioned::default(), AtomicU32::new(0)));
        let tasks: Vec<_> = (0..8)
            .map(|task| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut totals = Vec::new();
                    for round in 0..25 {
                        if task == 0 && round % 5 == 0 {
                            store.0.lose_replies.store(1, Ordering::Relaxed);
                        }
                        totals.push(
                            increment(&*store, "n", 1, &mut Attempt::new())
                                .await
                                .unwrap(),
                        );
                    }
                    totals
                })
            })
            .collect();
        let mut totals = Vec::new();
        for task in tasks {
            totals.extend(task.await.unwrap());
        }
        totals.sort_unstable();
        assert_eq!(totals, (1..=200).collect::<Vec<i64>>(), "distinct totals");
        assert_eq!(store.0.value("n"), b"200");
        let writes = store.1.load(Ordering::Relaxed);
        assert!(
            writes < 100,
            "{writes} writes for 200 increments: not batched"
        );
    }

    /// A range error is judged on the totals the write makes. Before, in a batch of +5 and
    /// +10 at i64::MAX - 10, the +10 was answered `overflow` at once; the write then lost to
    /// another writer's -100, and the counter never held a value the +10 overflowed from.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_error_waits_for_the_write_it_is_judged_on() {
        struct Contended {
            inner: Versioned,
            writes: AtomicU32,
        }
        #[async_trait]
        impl ConditionalStore for Contended {
            async fn read(&self, key: &str) -> Result<Read> {
                self.inner.read(key).await
            }
            async fn write_if(&self, key: &str, write: Write, expect: Expect) -> Result<bool> {
                match self.writes.fetch_add(1, Ordering::SeqCst) {
                    // The first call holds the turn while the two others queue up.
                    0 => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                    // Their batch loses to another host's -100.
                    1 => {
                        let current = self.inner.value(key);
                        let current: i64 = std::str::from_utf8(&current).unwrap().parse().unwrap();
                        self.inner
                            .put(key, (current - 100).to_string().as_bytes(), None);
                    }
                    _ => {}
                }
                self.inner.write_if(key, write, expect).await
            }
        }
        let store = std::sync::Arc::new(Contended {
            inner: Versioned::default(),
            writes: AtomicU32::new(0),
        });
        store
            .inner
            .put("n", (i64::MAX - 10).to_string().as_bytes(), None);
        let call = |delta: i64| {
            let store = store.clone();
            tokio::spawn(async move { increment(&*store, "n", delta, &mut Attempt::new()).await })
        };
        let first = call(0);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let plus_five = call(5);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let plus_ten = call(10);
        assert_eq!(first.await.unwrap().unwrap(), i64::MAX - 10);
        assert_eq!(plus_five.await.unwrap().unwrap(), i64::MAX - 105);
        assert_eq!(plus_ten.await.unwrap().unwrap(), i64::MAX - 95);
        assert_eq!(
            store.inner.value("n"),
            (i64::MAX - 95).to_string().as_bytes()
        );
    }

    /// A release before batches trims the journal one entry at a time, so a batch's group at
    /// the front may be cut: another request's entry on the base there proves nothing.
    #[test]
    fn a_group_at_the_front_may_be_cut() {
        let base = Expect::Version("7".into()).fingerprint();
        let ours = RequestId::new();
        let mut attempt = Attempt::of(ours);
        attempt.set_attempted_base(Some(base));
        let current = Expect::Version("9".into()).fingerprint();
        // Our batch-mate's entry is the oldest left: ours may have been trimmed before it.
        let cut = Journal::default()
            .recording(base, RequestId::new(), Applied::Incremented(2), 8)
            .recording(current, RequestId::new(), Applied::Incremented(3), 8);
        let err = resolve(&mut attempt, &cut, current, 2, false)
            .err()
            .expect("unknown");
        assert!(err.message().starts_with(OUTCOME_UNKNOWN), "{err}");
        // A journal shorter than its bound was never trimmed: the oldest group is whole. (The
        // first write after a plain set is the oldest: a rule on position alone made every
        // lost race of a resending client, Cosmos DB, `outcome unknown`.)
        let mut again = Attempt::of(ours);
        again.set_attempted_base(Some(base));
        assert!(matches!(
            resolve(&mut again, &cut, current, 8, false),
            Ok(Earlier::NotApplied)
        ));
        // Behind an older write, the group on our base is whole: another write won.
        let whole = Journal::default()
            .recording(1, RequestId::new(), Applied::Incremented(1), 8)
            .recording(base, RequestId::new(), Applied::Incremented(2), 8);
        assert!(matches!(
            resolve(&mut attempt, &whole, current, 2, false),
            Ok(Earlier::NotApplied)
        ));
    }

    /// A store whose first write is sent but lands late: its reply is lost at once, and it
    /// lands just before the second write, followed by `others` writes of other requests (each
    /// a +1 with its journal entry), which push old entries out of the journal.
    struct LandsLate {
        inner: Versioned,
        writes: AtomicU32,
        held: Mutex<Option<(String, Write, Expect)>>,
        others: u32,
    }

    impl LandsLate {
        fn new(others: u32) -> Self {
            LandsLate {
                inner: Versioned::default(),
                writes: AtomicU32::new(0),
                held: Mutex::new(None),
                others,
            }
        }

        async fn another_write(&self, key: &str) -> Result<()> {
            let Read::Found(now) = self.inner.read(key).await? else {
                return Err(KvError::internal("the key is missing"));
            };
            let next = parse_counter(&now.value)? + 1;
            let base = Expect::Version(now.version.clone()).fingerprint();
            let other = Write {
                value: encode_counter(next),
                expires_at_ms: None,
                journal: now.journal.recording(
                    base,
                    RequestId::new(),
                    Applied::Incremented(next),
                    JOURNAL_LEN,
                ),
            };
            self.inner
                .write_if(key, other, Expect::Version(now.version))
                .await?;
            Ok(())
        }
    }

    #[async_trait]
    impl ConditionalStore for LandsLate {
        async fn read(&self, key: &str) -> Result<Read> {
            self.inner.read(key).await
        }

        async fn write_if(&self, key: &str, write: Write, expect: Expect) -> Result<bool> {
            match self.writes.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    *self.held.lock().unwrap() = Some((key.to_string(), write, expect));
                    return Err(KvError::unavailable("reply lost"));
                }
                1 => {
                    let (k, w, e) = self.held.lock().unwrap().take().unwrap();
                    assert!(self.inner.write_if(&k, w, e).await?, "the late write lands");
                    for _ in 0..self.others {
                        self.another_write(key).await?;
                    }
                }
                _ => {}
            }
            self.inner.write_if(key, write, expect).await
        }
    }

    /// A write whose reply was lost may still be on its way when the version says "not
    /// applied": it lands after the retry read, the retry's own write then loses the race, and
    /// 130 other writes push the first write's entry out of the journal before the next read.
    /// Before, the lost race cleared the attempt and the third round applied the increment a
    /// second time (132); now the attempt keeps its base and the call is `outcome unknown`.
    #[tokio::test]
    async fn a_write_that_lands_late_is_never_applied_again() {
        let store = LandsLate::new(130);
        store.inner.put("n", b"0", None);
        let mut call = Attempt::new();
        let err = increment(&store, "n", 1, &mut call).await.unwrap_err();
        assert!(err.message().starts_with(OUTCOME_UNKNOWN), "{err}");
        assert_eq!(
            store.inner.value("n"),
            b"131",
            "applied once, by the late write"
        );
        assert!(call.attempted_base().is_some(), "still unresolved");
    }

    /// The retry of a call whose write may still land, refused this time, keeps the attempt
    /// open: its final error says the outcome is unknown, not "throttled" (which reads as
    /// not applied), since the first write can land after it.
    #[tokio::test]
    async fn a_refusal_after_a_write_in_flight_keeps_the_outcome_open() {
        let store = Versioned::default();
        store.put("n", b"0", None);
        let mut call = Attempt::new();
        let version = store.items.lock().unwrap()["n"].1.to_string();
        let base = Expect::Version(version).fingerprint();
        // As if an earlier attempt had sent a write on this version that has not landed.
        call.set_attempted_base(Some(base));
        store.refuse_next_write(KvError::new(ErrorKind::Throttled, "429"));
        let err = increment(&store, "n", 1, &mut call).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Throttled);
        assert_eq!(
            call.attempted_base(),
            Some(base),
            "the earlier write may land"
        );
    }

    /// The swap twin of `a_write_that_lands_late_is_never_applied_again`: a retry that finds
    /// the version unchanged writes again, and its write meets the first one, which landed in
    /// between. Before, that conflict was answered `Conflict` (cas-failed) for a swap that had
    /// happened; now the journal shows it swapped.
    #[tokio::test]
    async fn a_swap_whose_first_write_lands_late_is_swapped() {
        let store = LandsLate::new(0);
        store.inner.put("k", b"a", None);
        let version = version_of_key(&store.inner, "k");
        let mut call = Attempt::new();
        // The first attempt's reply is lost and the read right after finds the version
        // unchanged: an error for the host's retry.
        assert!(swap(&store, "k", &version, b"b", &mut call).await.is_err());
        let outcome = swap(&store, "k", &version, b"b", &mut call).await.unwrap();
        assert_eq!(outcome, SwapOutcome::Swapped);
        assert_eq!(store.inner.value("k"), b"b");
    }

    /// A batch's entries leave the journal together: a retry that finds another entry on
    /// its base concludes another write won, which needs every entry of that write.
    #[test]
    fn a_batch_leaves_the_journal_whole() {
        let requests: Vec<RequestId> = (0..4).map(|_| RequestId::new()).collect();
        let journal = Journal::default()
            .recording(1, RequestId::new(), Applied::Incremented(1), 5)
            .recording_all(2, requests.iter().map(|r| (*r, Applied::Incremented(2))), 5);
        assert_eq!(journal.entries.len(), 5);
        let journal = journal.recording(3, RequestId::new(), Applied::Incremented(3), 5);
        // One more entry: the single oldest goes, the batch stays.
        assert_eq!(journal.entries.len(), 5);
        assert!(requests.iter().all(|r| journal.find(*r).is_some()));
        let journal = journal.recording(4, RequestId::new(), Applied::Incremented(4), 5);
        // Another: the batch goes whole, not its oldest entry alone.
        assert_eq!(journal.entries.len(), 2);
        assert!(requests.iter().all(|r| journal.find(*r).is_none()));
        assert!(!journal.has_other_write_on(2, 5));
    }

    /// Makes the next write apply and lose its reply, and the reads right after it fail, so
    /// the call cannot resolve the write itself and the host's retry must.
    fn lose_the_next_reply_and_reads(store: &Versioned) {
        store.lose_replies.store(1, Ordering::Relaxed);
        store
            .fail_reads_after_loss
            .store(RESOLVE_ATTEMPTS, Ordering::Relaxed);
    }

    /// Where versions are digests of the bytes (S3), the bytes a write was conditioned on can
    /// come back without it: deleted and counted up again, or restored by a plain `set`. A
    /// retry that then finds neither its entry nor the journal it read must not take the old
    /// version for "not applied": before, it applied again (6 then 7, and 5 then 6 again).
    #[tokio::test]
    async fn digest_versions_never_take_old_bytes_for_not_applied() {
        let store = Versioned {
            digests: true,
            ..Versioned::default()
        };
        for _ in 0..5 {
            increment(&store, "n", 1, &mut Attempt::new())
                .await
                .unwrap();
        }
        let mut call = Attempt::new();
        lose_the_next_reply_and_reads(&store);
        assert!(increment(&store, "n", 1, &mut call).await.is_err());
        assert_eq!(store.value("n"), b"6");
        store.remove("n");
        for _ in 0..5 {
            increment(&store, "n", 1, &mut Attempt::new())
                .await
                .unwrap();
        }
        let err = increment(&store, "n", 1, &mut call).await.unwrap_err();
        assert!(err.message().starts_with(OUTCOME_UNKNOWN), "{err}");
        assert_eq!(store.value("n"), b"5", "applied twice");
        // A plain set of the bytes the write was conditioned on (no journal).
        store.put("m", b"5", None);
        let mut call = Attempt::new();
        lose_the_next_reply_and_reads(&store);
        assert!(increment(&store, "m", 1, &mut call).await.is_err());
        store.put("m", b"5", None);
        let err = increment(&store, "m", 1, &mut call).await.unwrap_err();
        assert!(err.message().starts_with(OUTCOME_UNKNOWN), "{err}");
        assert_eq!(store.value("m"), b"5", "applied twice");
        // Unchanged since (same bytes, same journal): resolved as not applied, and applied.
        store.refuse_next_write(KvError::unavailable("connection reset"));
        assert_eq!(
            increment(&store, "n", 1, &mut Attempt::new())
                .await
                .unwrap(),
            6
        );
    }

    /// A handle on an expired value does not swap over a live one with the same version, as
    /// digest versions allow (an expired lease renewed with the same bytes).
    #[tokio::test]
    async fn a_handle_on_an_expired_value_does_not_swap_over_a_live_one() {
        let store = Versioned {
            digests: true,
            ..Versioned::default()
        };
        store.put("lock", b"h1", Some(1));
        let handle = read_versioned(&store, "lock").await.unwrap();
        assert_eq!(handle.value, None);
        store.put("lock", b"h1", Some(clock::now_ms() + 60_000));
        let outcome = swap(&store, "lock", &handle.version, b"h2", &mut Attempt::new()).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Conflict);
        assert_eq!(store.value("lock"), b"h1");
    }

    #[tokio::test]
    async fn a_lost_reply_is_resolved_at_once() {
        let store = Versioned::default();
        store.lose_replies.store(1, Ordering::Relaxed);
        assert_eq!(
            increment(&store, "n", 5, &mut Attempt::new())
                .await
                .unwrap(),
            5
        );
        assert_eq!(store.value("n"), b"5");
    }

    #[tokio::test]
    async fn a_retry_after_a_lost_reply_applies_once() {
        let store = Versioned::default();
        let mut call = Attempt::new();
        lose_the_next_reply_and_reads(&store);
        let err = increment(&store, "n", 5, &mut call).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(store.value("n"), b"5", "the lost write was applied");
        // The host retries the same call: it finds its write and returns its result.
        assert_eq!(increment(&store, "n", 5, &mut call).await.unwrap(), 5);
        assert_eq!(store.value("n"), b"5");
        // Another writer in between does not hide it either.
        let mut call = Attempt::new();
        lose_the_next_reply_and_reads(&store);
        assert!(increment(&store, "n", 1, &mut call).await.is_err());
        increment(&store, "n", 100, &mut Attempt::new())
            .await
            .unwrap();
        assert_eq!(increment(&store, "n", 1, &mut call).await.unwrap(), 6);
        assert_eq!(store.value("n"), b"106");
    }

    #[tokio::test]
    async fn a_swap_retried_after_a_lost_reply_is_swapped_not_conflict() {
        let store = Versioned::default();
        store.put("k", b"a", None);
        let Read::Found(snapshot) = store.read("k").await.unwrap() else {
            panic!("missing");
        };
        let version = Version::Tag(snapshot.version);
        let mut call = Attempt::new();
        lose_the_next_reply_and_reads(&store);
        assert!(swap(&store, "k", &version, b"b", &mut call).await.is_err());
        let outcome = swap(&store, "k", &version, b"b", &mut call).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Swapped);
        // A different call with the stale version is a conflict.
        let other = swap(&store, "k", &version, b"c", &mut Attempt::new()).await;
        assert_eq!(other.unwrap(), SwapOutcome::Conflict);
        assert_eq!(store.value("k"), b"b");
        // Resolved at once when the backend answers the next read.
        let Read::Found(snapshot) = store.read("k").await.unwrap() else {
            panic!("missing");
        };
        store.lose_replies.store(1, Ordering::Relaxed);
        let version = Version::Tag(snapshot.version);
        let outcome = swap(&store, "k", &version, b"d", &mut Attempt::new()).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Swapped);
    }

    fn version_of_key(store: &Versioned, key: &str) -> Version {
        Version::Tag(store.items.lock().unwrap()[key].1.to_string())
    }

    /// S7: a store failure is a store error, never `cas-failed`. A write refused (throttled)
    /// or lost before it reached the backend, on a key nobody changed, is an error the host
    /// retries, and the retry swaps.
    #[tokio::test]
    async fn a_failed_write_on_an_unchanged_key_is_an_error_not_a_conflict() {
        for refusal in [
            KvError::new(ErrorKind::Throttled, "429"),
            KvError::unavailable("connection reset before the request was sent"),
        ] {
            let store = Versioned::default();
            store.put("k", b"a", None);
            let version = version_of_key(&store, "k");
            let mut call = Attempt::new();
            let kind = refusal.kind();
            store.refuse_next_write(refusal);
            let err = swap(&store, "k", &version, b"b", &mut call)
                .await
                .expect_err("a failed write is not a conflict");
            assert_eq!(err.kind(), kind, "{err}");
            assert_eq!(store.value("k"), b"a");
            // The host retries the same call: it swaps.
            let outcome = swap(&store, "k", &version, b"b", &mut call).await.unwrap();
            assert_eq!(outcome, SwapOutcome::Swapped);
            assert_eq!(store.value("k"), b"b");
        }
        // An increment whose write is throttled returns the error to the host's retry (which
        // honours Retry-After) instead of looping on its own.
        let store = Versioned::default();
        store.refuse_next_write(KvError::new(ErrorKind::Throttled, "429"));
        let mut call = Attempt::new();
        let err = increment(&store, "n", 1, &mut call).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Throttled);
        assert_eq!(increment(&store, "n", 1, &mut call).await.unwrap(), 1);
    }

    /// Absence is not a version: an increment that created the key and lost its reply, then
    /// a delete by someone else, leaves the key missing as if the write never happened. The
    /// retry must not apply again.
    #[tokio::test]
    async fn a_create_then_delete_is_not_mistaken_for_not_applied() {
        // The key is missing again when the retry looks.
        let store = Versioned::default();
        let mut call = Attempt::new();
        lose_the_next_reply_and_reads(&store);
        assert!(increment(&store, "n", 5, &mut call).await.is_err());
        assert_eq!(store.value("n"), b"5", "the lost write was applied");
        store.remove("n");
        let err = increment(&store, "n", 5, &mut call).await.unwrap_err();
        assert!(err.message().starts_with(OUTCOME_UNKNOWN), "{err}");
        assert!(
            !store.items.lock().unwrap().contains_key("n"),
            "applied twice"
        );
        // Re-created by another writer from absence, with a journal of its own.
        let store = Versioned::default();
        let mut call = Attempt::new();
        lose_the_next_reply_and_reads(&store);
        assert!(increment(&store, "n", 5, &mut call).await.is_err());
        store.remove("n");
        increment(&store, "n", 100, &mut Attempt::new())
            .await
            .unwrap();
        let err = increment(&store, "n", 5, &mut call).await.unwrap_err();
        assert!(err.message().starts_with(OUTCOME_UNKNOWN), "{err}");
        assert_eq!(store.value("n"), b"100", "applied twice");
        // The same for a swap from absence.
        let store = Versioned::default();
        let mut call = Attempt::new();
        lose_the_next_reply_and_reads(&store);
        assert!(
            swap(&store, "k", &Version::Absent, b"v", &mut call)
                .await
                .is_err()
        );
        store.remove("k");
        let err = swap(&store, "k", &Version::Absent, b"v", &mut call)
            .await
            .unwrap_err();
        assert!(err.message().starts_with(OUTCOME_UNKNOWN), "{err}");
        assert!(
            !store.items.lock().unwrap().contains_key("k"),
            "applied twice"
        );
    }

    /// An item written before versions existed has an empty version; a write conditioned on
    /// absence must not fingerprint like it.
    #[test]
    fn an_empty_version_is_not_absence() {
        assert_ne!(
            Expect::Absent.fingerprint(),
            Expect::Version(String::new()).fingerprint()
        );
    }

    #[tokio::test]
    async fn an_expired_item_is_absent_to_cas() {
        let store = Versioned::default();
        store.put("k", b"old", Some(1));
        let read = read_versioned(&store, "k").await.unwrap();
        assert_eq!(read.value, None);
        let (mut first, mut second) = (Attempt::new(), Attempt::new());
        let outcome = swap(&store, "k", &read.version, b"new", &mut first).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Swapped);
        assert_eq!(store.value("k"), b"new");
        assert_eq!(
            store.items.lock().unwrap()["k"].2,
            None,
            "the expiry is cleared"
        );
        // A live key is not absent.
        let outcome = swap(&store, "k", &Version::Absent, b"x", &mut second).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Conflict);
    }

    /// S7, no ABA from a missing key: a handle taken on a missing key does not insert once
    /// the key was written and deleted (or expired) since, whether it first had no item or a
    /// tombstone; nor once it is too old for every such change to have left a tombstone.
    #[tokio::test]
    async fn absence_written_and_removed_since_is_a_change() {
        let store = Versioned::default();
        // No item at all: someone writes and deletes it (a tombstone stays).
        let missing = read_versioned(&store, "k").await.unwrap();
        assert_eq!(missing.value, None);
        store.put("k", b"a", None);
        store.put("k", b"", Some(1));
        let outcome = swap(&store, "k", &missing.version, b"v", &mut Attempt::new()).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Conflict);
        // A tombstone: written and deleted again.
        let gone = read_versioned(&store, "k").await.unwrap();
        assert_eq!(gone.value, None);
        store.put("k", b"b", None);
        store.put("k", b"", Some(1));
        let outcome = swap(&store, "k", &gone.version, b"v", &mut Attempt::new()).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Conflict);
        // Unchanged since: the handle inserts, over the tombstone or where no item is.
        let gone = read_versioned(&store, "k").await.unwrap();
        let outcome = swap(&store, "k", &gone.version, b"v", &mut Attempt::new()).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Swapped);
        let missing = read_versioned(&store, "m").await.unwrap();
        let outcome = swap(&store, "m", &missing.version, b"v", &mut Attempt::new()).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Swapped);
        // A handle on no item, older than a tombstone surely lasts: a conflict, not a guess.
        let lifetime = u64::try_from(ABSENCE_HANDLE_LIFETIME.as_millis()).unwrap();
        let old = Version::Tag(format!(
            "{MISSING_SINCE}{}",
            clock::Stamp::ago(lifetime).encode()
        ));
        let outcome = swap(&store, "old", &old, b"v", &mut Attempt::new()).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Conflict);
        let fresh = Version::Tag(format!(
            "{MISSING_SINCE}{}",
            clock::Stamp::ago(1_000).encode()
        ));
        let outcome = swap(&store, "old", &fresh, b"v", &mut Attempt::new()).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Swapped);
    }

    /// The backend's expiry (DynamoDB's TTL sweeper, 18–30 s after the expiry on DynamoDB
    /// Local) may remove the expired item a handle was taken on, before the swap reads or
    /// between its read and its write: the key is still missing, so the handle inserts. Once
    /// someone writes the key, or the handle is too old to tell, it does not.
    #[tokio::test]
    async fn a_handle_on_an_expired_item_survives_its_removal() {
        let store = Versioned::default();
        // Removed before the swap's read.
        store.put("k", b"old", Some(1));
        let handle = read_versioned(&store, "k").await.unwrap();
        store.remove("k");
        let outcome = swap(&store, "k", &handle.version, b"a", &mut Attempt::new()).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Swapped);
        assert_eq!(store.value("k"), b"a");
        // Removed between the swap's read and its write.
        store.put("k", b"old", Some(1));
        let handle = read_versioned(&store, "k").await.unwrap();
        store.sweep_before_next_write.store(true, Ordering::Relaxed);
        let outcome = swap(&store, "k", &handle.version, b"b", &mut Attempt::new()).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Swapped);
        assert_eq!(store.value("k"), b"b");
        // Removed, then written by someone else: a conflict.
        store.put("k", b"old", Some(1));
        let handle = read_versioned(&store, "k").await.unwrap();
        store.remove("k");
        store.put("k", b"theirs", None);
        let outcome = swap(&store, "k", &handle.version, b"c", &mut Attempt::new()).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Conflict);
        assert_eq!(store.value("k"), b"theirs");
        // No read at all (an embedder's "insert if missing"), removed before the write.
        store.put("k", b"old", Some(1));
        store.sweep_before_next_write.store(true, Ordering::Relaxed);
        let outcome = swap(&store, "k", &Version::Absent, b"e", &mut Attempt::new()).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Swapped);
        assert_eq!(store.value("k"), b"e");
        // Removed, and the handle older than a tombstone surely lasts: a conflict.
        let lifetime = u64::try_from(ABSENCE_HANDLE_LIFETIME.as_millis()).unwrap();
        let old = Version::Tag(format!(
            "{GONE_AT}{}@7",
            clock::Stamp::ago(lifetime).encode()
        ));
        let outcome = swap(&store, "none", &old, b"d", &mut Attempt::new()).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Conflict);
    }

    /// The same removal meeting a client that resends (its conflict is resolved through the
    /// journal), or a write whose reply was lost: no item at all, soon after a write
    /// conditioned on a version, proves that write did not apply and never will. It was
    /// `outcome unknown`.
    #[tokio::test]
    async fn a_removal_after_an_ambiguous_write_resolves_it() {
        // A resending client meets the removal as a conflict.
        let store = Versioned {
            resends: true,
            ..Versioned::default()
        };
        store.put("k", b"old", Some(1));
        let handle = read_versioned(&store, "k").await.unwrap();
        store.sweep_before_next_write.store(true, Ordering::Relaxed);
        let outcome = swap(&store, "k", &handle.version, b"a", &mut Attempt::new()).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Swapped);
        assert_eq!(store.value("k"), b"a");
        // A write whose reply was lost, which the removal kept from applying; the host's
        // retry (the same attempt) resolves it and swaps.
        let store = Versioned::default();
        store.put("k", b"old", Some(1));
        let handle = read_versioned(&store, "k").await.unwrap();
        let mut attempt = Attempt::new();
        store.sweep_before_next_write.store(true, Ordering::Relaxed);
        lose_the_next_reply_and_reads(&store);
        assert!(
            swap(&store, "k", &handle.version, b"b", &mut attempt)
                .await
                .is_err()
        );
        let outcome = swap(&store, "k", &handle.version, b"b", &mut attempt).await;
        assert_eq!(outcome.unwrap(), SwapOutcome::Swapped);
        assert_eq!(store.value("k"), b"b");
        // An increment of an expired counter, the same way.
        let store = Versioned::default();
        store.put("n", b"5", Some(1));
        let mut attempt = Attempt::new();
        store.sweep_before_next_write.store(true, Ordering::Relaxed);
        lose_the_next_reply_and_reads(&store);
        assert!(increment(&store, "n", 1, &mut attempt).await.is_err());
        assert_eq!(increment(&store, "n", 1, &mut attempt).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn an_unresolvable_outcome_is_reported_not_reapplied() {
        let store = Versioned::default();
        let mut call = Attempt::new();
        lose_the_next_reply_and_reads(&store);
        assert!(increment(&store, "n", 1, &mut call).await.is_err());
        // A plain set replaces the value and its journal: nobody can tell any more.
        store.put("n", b"10", None);
        let err = increment(&store, "n", 1, &mut call).await.unwrap_err();
        assert!(err.to_string().contains("outcome unknown"), "{err}");
        assert_eq!(store.value("n"), b"10");
    }

    #[tokio::test]
    async fn keeps_expiry_and_restarts_expired_counters() {
        let store = Versioned::default();
        let later = clock::now_ms() + 60_000;
        store.put("live", b"41", Some(later));
        assert_eq!(
            increment(&store, "live", 1, &mut Attempt::new())
                .await
                .unwrap(),
            42
        );
        assert_eq!(store.items.lock().unwrap()["live"].2, Some(later));
        store.put("gone", b"41", Some(1));
        assert_eq!(
            increment(&store, "gone", 1, &mut Attempt::new())
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.items.lock().unwrap()["gone"].2, None);
        store.put("text", b"x", None);
        let err = increment(&store, "text", 1, &mut Attempt::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotAnInteger);
        assert_eq!(store.value("text"), b"x");
    }

    #[test]
    fn journals_round_trip_and_stay_bounded() {
        let requests: Vec<RequestId> = (0..200).map(|_| RequestId::new()).collect();
        let mut journal = Journal::default();
        // The longest totals: 20 characters each.
        for (i, request) in requests.iter().enumerate() {
            let total = i64::MIN + i as i64;
            journal =
                journal.recording(i as u32, *request, Applied::Incremented(total), JOURNAL_LEN);
        }
        assert_eq!(journal.entries.len(), JOURNAL_LEN);
        let parsed = Journal::parse(&journal.encode());
        assert_eq!(parsed, journal);
        assert_eq!(
            parsed.find(requests[199]),
            Some(Applied::Incremented(i64::MIN + 199))
        );
        assert_eq!(parsed.find(requests[3]), None, "the oldest were dropped");
        assert!(Journal::parse("garbage;1.2").is_empty());
        // At most 128 entries of 46 bytes (8 + 1 + 16 + 1 + 20, and a separator): 6,015 bytes,
        // which fits Cloud Storage's 8 KiB of custom metadata beside the base64 of a hashed
        // 1,024-byte key (1,366 bytes) and an expiry; DynamoDB's item budget counts it too.
        assert_eq!(journal.encode().len(), JOURNAL_LEN * 47 - 1);
        assert!(journal.encode().len() + 1_366 + 64 < 8 * 1024);
    }
}
