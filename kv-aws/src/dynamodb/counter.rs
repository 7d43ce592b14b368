//! Increments of one item without racing: a provider instance (a process) is a *writer* with
//! a random id and a sequence that only grows. Each batch of increments
//! ([`kv_core::combine`]) is one `UpdateItem` that adds the batch's sum and records, in the
//! writer's slot, the batch's sequence (`ws.#w`) and the total after it (`wt.#w`). It is
//! conditioned on the item's incarnation (`inc`, new whenever a `set`, `delete` or swap
//! replaces the item) and on the slot holding exactly the sequence the writer last saw.
//! Writers never conflict: each condition reads only the writer's own slot.
//!
//! A batch whose reply is lost (or whose sender went away) stays unresolved until the slot is
//! read, before the writer's next batch on that key:
//! - the slot holds its sequence: it applied, and each total follows from `wt.#w`;
//! - the slot still holds what it was conditioned on: it has not applied yet, but a copy may
//!   still be on its way. Its increments go again in the next batch, conditioned on the same
//!   slot, so at most one of the two ever applies, and the slot says which;
//! - the item was replaced (or expired): it may have applied before, so its increments answer
//!   `outcome unknown`.
//!
//! An item that is not yet in this form (a value, missing, expired) is converted by a
//! `PutItem` conditioned on the item as read, and a lost conversion is judged the same way, by
//! that condition.
//!
//! Slots of other writers unused for [`STALE_SLOT_MS`] are removed by the next writer that
//! reads the item, and counted (`wr`): a missing slot says "not applied" only while the count
//! is unchanged, whatever the clocks of the writers that removed slots. docs/providers/
//! dynamodb.md has the mapping; docs/benchmarks.md measures it against `UpdateItem ADD`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use kv_core::Backoff;
use kv_core::combine::{ApplyBatch, Batch};
use kv_core::rmw::INCREMENT_ATTEMPTS;

use super::error::map_sdk_error;
use super::store::{
    ATTR_COUNTER, ATTR_JOURNAL, ATTR_KEY, ATTR_UNTIL, ATTR_VALUE, ATTR_VERSION, DynamoBucket, Item,
    expires_ms, expiry_attributes, is_conditional_failure, is_live, new_version, s, value_of,
};
use kv_core::store::OUTCOME_UNKNOWN;
use kv_core::{KvError, RequestId, clock};

/// Attributes of an item in counter form, beside `c` (the counter) and `ver`.
pub const ATTR_INCARNATION: &str = "inc";
/// Map: writer id → the sequence of its last applied batch.
pub const ATTR_SLOT_SEQUENCE: &str = "ws";
/// Map: writer id → the counter after its last applied batch.
pub const ATTR_SLOT_TOTAL: &str = "wt";
/// Map: writer id → epoch milliseconds of its last batch (for removing old slots).
pub const ATTR_SLOT_USED: &str = "wa";
/// How many times stale slots were removed (a missing slot says "not applied" only while this
/// is unchanged).
pub const ATTR_SLOT_REMOVALS: &str = "wr";

/// A slot unused this long belongs to a writer that is gone (a process that ended): the next
/// writer to read the item removes it, so the item does not grow with every process that ever
/// incremented it. Far longer than a request can live: DynamoDB refuses a request signed more
/// than 5 minutes earlier, so no late copy can find its slot missing and apply.
pub(super) const STALE_SLOT_MS: u64 = 15 * 60 * 1000;

/// Stale slots removed by one `UpdateItem` (each is three paths of its expression).
const STALE_SLOTS_PER_REMOVAL: usize = 32;

/// A batch sent whose outcome is not known yet (its reply lost, or its sender gone).
#[derive(Debug, Clone)]
pub(super) struct Unresolved {
    pub sequence: u64,
    /// The incarnation it was conditioned on (a conversion: the one it creates).
    pub incarnation: String,
    /// What it was conditioned on.
    pub condition: Condition,
    /// Each increment's request and the sum of the deltas after it in the batch (i128: a
    /// batch's sum may leave i64 even when every total stays within it).
    pub requests: Vec<(RequestId, i128)>,
}

/// What an unresolved write was conditioned on: while the item still holds it, the write has
/// not applied, and the next one is conditioned on it too, so at most one of them applies.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Condition {
    /// A batch: the incarnation, and the writer's slot holding this sequence (`None`: none,
    /// while the item's count of stale-slot removals is `removals`).
    Slot { slot: Option<u64>, removals: u64 },
    /// A conversion: no item (`None`), or the item's version (`Some(None)`: it has none).
    Item(Option<Option<AttributeValue>>),
}

impl Unresolved {
    fn contains(&self, request: RequestId) -> bool {
        self.requests.iter().any(|(id, _)| *id == request)
    }
}

/// The item as a writer last knew it: its incarnation and the writer's slot in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    /// The item's incarnation (`inc`).
    pub incarnation: String,
    /// The sequence in the writer's slot (`ws.#w`); `None`: no slot.
    pub slot: Option<u64>,
    /// Whether the item expires. Only a write that replaces the item (a new incarnation) can
    /// give it an expiry, so without one the batch need not be conditioned on it.
    pub expires: bool,
    /// How many times stale slots were removed from the item (`wr`).
    pub removals: u64,
}

/// What a writer knows about one key.
#[derive(Debug, Default)]
struct KeyState {
    known: Option<Known>,
    /// Unresolved batches, oldest first. Each was conditioned on the slot holding exactly
    /// `known.slot`, as is the next batch, so at most one of them all can ever apply: a batch
    /// judged not applied yet whose copy is still on its way can land, but then the next one
    /// cannot, and the other way round.
    unresolved: Vec<Unresolved>,
}

/// A store instance as a writer of counter items.
#[derive(Debug)]
pub(super) struct Writer {
    pub id: String,
    sequence: AtomicU64,
    keys: Mutex<HashMap<String, KeyState>>,
    /// How resolved batches ended for their requests, for the host's retries of those whose
    /// callers were not in the batch that resolved them: the total, or `None` (not applied).
    resolved: Mutex<HashMap<RequestId, Option<i64>>>,
}

/// Resolved requests remembered; past this all are forgotten, and their retries answer
/// `outcome unknown` (never applied twice).
const RESOLVED_REMEMBERED: usize = 65_536;

/// Keys whose state a writer keeps before forgetting all (what is known is read again;
/// unresolved batches are kept).
const KEYS_REMEMBERED: usize = 10_000;

impl Writer {
    pub fn new() -> Writer {
        Writer {
            id: format!("w{:016x}", rand::random::<u64>()),
            sequence: AtomicU64::new(1),
            keys: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    pub fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeyState>> {
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn known(&self, key: &str) -> Option<Known> {
        self.lock().get(key).and_then(|state| state.known.clone())
    }

    fn set_known(&self, key: &str, known: Option<Known>) {
        let mut keys = self.lock();
        if keys.len() >= KEYS_REMEMBERED && !keys.contains_key(key) {
            keys.retain(|_, state| !state.unresolved.is_empty());
        }
        keys.entry(key.to_string()).or_default().known = known;
    }

    /// The item was replaced through this store (`set`, `delete`, a swap): read it again.
    pub fn forget(&self, key: &str) {
        if let Some(state) = self.lock().get_mut(key) {
            state.known = None;
        }
    }

    fn unresolved(&self, key: &str) -> Vec<Unresolved> {
        self.lock()
            .get(key)
            .map(|state| state.unresolved.clone())
            .unwrap_or_default()
    }

    fn push_unresolved(&self, key: &str, unresolved: Unresolved) {
        self.lock()
            .entry(key.to_string())
            .or_default()
            .unresolved
            .push(unresolved);
    }

    /// Drops the batch `sequence`, known not applied and never to apply; the batches left.
    fn drop_unresolved(&self, key: &str, sequence: u64) -> Vec<Unresolved> {
        let mut keys = self.lock();
        let Some(state) = keys.get_mut(key) else {
            return Vec::new();
        };
        state.unresolved.retain(|batch| batch.sequence != sequence);
        state.unresolved.clone()
    }

    fn clear_unresolved(&self, key: &str) {
        if let Some(state) = self.lock().get_mut(key) {
            state.unresolved.clear();
        }
    }

    fn remember(&self, decided: &HashMap<RequestId, Decision>) {
        let mut resolved = self
            .resolved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if resolved.len() + decided.len() > RESOLVED_REMEMBERED {
            resolved.clear();
        }
        for (request, decision) in decided {
            match decision {
                Decision::Applied(total) => resolved.insert(*request, Some(*total)),
                Decision::NotApplied => resolved.insert(*request, None),
                Decision::Unknown => resolved.remove(request),
            };
        }
    }

    /// How the request's earlier batch ended, if this writer resolved it: `Some(Some(total))`
    /// applied, `Some(None)` not applied.
    pub fn resolved(&self, request: RequestId) -> Option<Option<i64>> {
        self.resolved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&request)
            .copied()
    }
}

/// How a writer's unresolved batches stand, judged from the item as read.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    /// This batch applied, leaving the counter at `total`; the others never can.
    Applied { sequence: u64, total: i64 },
    /// None has applied yet (the slot holds what they were conditioned on); any may still.
    NotYet,
    /// The item was replaced (or expired) since: any may have applied before.
    Unknown,
}

/// How one increment of an unresolved batch ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    Applied(i64),
    NotApplied,
    Unknown,
}

/// The number `writer` holds in the slot map `map` of `item`.
fn slot_entry<T: std::str::FromStr>(writer: &str, item: &Item, map: &str) -> Option<T> {
    match item.get(map) {
        Some(AttributeValue::M(slots)) => match slots.get(writer) {
            Some(AttributeValue::N(number)) => number.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// The writer's slot in `item`: the sequence of its last applied batch.
fn slot_of(writer: &str, item: &Item) -> Option<u64> {
    slot_entry(writer, item, ATTR_SLOT_SEQUENCE)
}

/// The counter after the writer's last applied batch.
fn slot_total(writer: &str, item: &Item) -> Option<i64> {
    slot_entry(writer, item, ATTR_SLOT_TOTAL)
}

/// How many times stale slots were removed from the item.
fn slot_removals(item: &Item) -> u64 {
    match item.get(ATTR_SLOT_REMOVALS) {
        Some(AttributeValue::N(number)) => number.parse().unwrap_or(u64::MAX),
        _ => 0,
    }
}

/// How one unresolved write stands against the item as read.
enum Judged {
    Applied(i64),
    NotYet,
    Other,
}

fn judge(writer: &str, sent: &Unresolved, item: Option<&Item>) -> Judged {
    let incarnation = incarnation_of(item);
    let slot = item.and_then(|item| slot_of(writer, item));
    if incarnation.as_ref() == Some(&sent.incarnation) && slot == Some(sent.sequence) {
        return match item.and_then(|item| slot_total(writer, item)) {
            Some(total) => Judged::Applied(total),
            None => Judged::Other,
        };
    }
    let unchanged = match &sent.condition {
        Condition::Slot {
            slot: expected,
            removals,
        } => {
            incarnation.as_ref() == Some(&sent.incarnation)
                && slot == *expected
                // No slot, and slots were removed since: this one may have been, after it
                // applied (whatever the clocks of the writers that removed it said).
                && (slot.is_some() || item.map(slot_removals) == Some(*removals))
        }
        // Deletes leave tombstones and every write a new version: an item still missing, or
        // at the version read, has had no write since.
        Condition::Item(None) => item.is_none(),
        Condition::Item(Some(version)) => {
            item.is_some_and(|item| item.get(ATTR_VERSION) == version.as_ref())
        }
    };
    if unchanged {
        Judged::NotYet
    } else {
        Judged::Other
    }
}

/// Judges `unresolved` (non-empty) against `item` (`None`: no item), for `writer`. A live
/// item is needed to see a batch applied: one that expired since may have been written by a
/// late copy before it did, so that is `Unknown`.
pub(super) fn resolve(writer: &str, unresolved: &[Unresolved], item: Option<&Item>) -> Outcome {
    let mut all_not_yet = true;
    for sent in unresolved {
        match judge(writer, sent, item) {
            Judged::Applied(total) => {
                return Outcome::Applied {
                    sequence: sent.sequence,
                    total,
                };
            }
            Judged::NotYet => {}
            Judged::Other => all_not_yet = false,
        }
    }
    if all_not_yet {
        Outcome::NotYet
    } else {
        Outcome::Unknown
    }
}

/// Answers the increments of `batch` that belonged to `unresolved` as `outcome` says, and
/// remembers the answers for retries that come later. `NotYet` answers nothing: those
/// increments go again in the next batch, which is conditioned like theirs.
fn settle(
    writer: &Writer,
    state: &str,
    batch: &mut Batch,
    unresolved: &[Unresolved],
    outcome: &Outcome,
) {
    if *outcome == Outcome::NotYet {
        return;
    }
    let mut decided: HashMap<RequestId, Decision> = HashMap::new();
    for sent in unresolved {
        for (request, after) in &sent.requests {
            let decision = match outcome {
                Outcome::Applied { sequence, total } if *sequence == sent.sequence => {
                    // Within i64 by the batch's range condition; if not, the item is not
                    // what this writer wrote.
                    i64::try_from(i128::from(*total) - after)
                        .map_or(Decision::Unknown, Decision::Applied)
                }
                Outcome::Applied { .. } => Decision::NotApplied,
                _ => Decision::Unknown,
            };
            // An increment sent again is answered by the batch that applied, whichever.
            let entry = decided.entry(*request).or_insert(decision);
            if matches!(decision, Decision::Applied(_)) {
                *entry = decision;
            }
        }
    }
    // Those answered here need no remembering: only callers that went away retry later.
    let mut absent = decided.clone();
    for pending in batch.iter() {
        absent.remove(&pending.attempt.request());
    }
    writer.remember(&absent);
    writer.clear_unresolved(state);
    batch.answer(|pending| match decided.get(&pending.attempt.request())? {
        Decision::Applied(total) => {
            pending.attempt.set_attempted_base(None);
            Some(Ok(*total))
        }
        Decision::NotApplied => {
            pending.attempt.set_attempted_base(None);
            None
        }
        Decision::Unknown => Some(Err(outcome_unknown(
            "the item was replaced before the increment's lost reply could be resolved",
        ))),
    });
}

/// The write of batch `sequence` applied, leaving the counter at `total` and the item as
/// `known`: its increments (and those of batches that can no longer apply) are answered.
fn applied(
    writer: &Writer,
    state: &str,
    batch: &mut Batch,
    sequence: u64,
    total: i64,
    known: Known,
) {
    let unresolved = writer.unresolved(state);
    settle(
        writer,
        state,
        batch,
        &unresolved,
        &Outcome::Applied { sequence, total },
    );
    writer.set_known(state, Some(known));
}

/// The `UpdateItem` of one batch on an item in counter form: adds `sum`, records `sequence`
/// and the total in `writer`'s slot, conditioned on the incarnation, on the slot holding
/// `known.slot` exactly, on the item being live (if it expires at all) and on the counter
/// staying within `low..=high` for every increment of the batch. Public for the benchmark
/// that measures this write natively.
#[allow(clippy::too_many_arguments)]
pub fn batch_update(
    request: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    writer: &str,
    known: &Known,
    sequence: u64,
    sum: i128,
    low: i64,
    high: i64,
    new_version: AttributeValue,
) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
    let n = |number: i128| AttributeValue::N(number.to_string());
    // Without a slot, also on no slot having been removed since: a removal (of this slot,
    // after a batch applied) then refuses a late copy, whatever the removers' clocks said.
    let slot = match (known.slot, known.removals) {
        (Some(_), _) => "ws.#w = :last",
        (None, 0) => "attribute_not_exists(ws.#w) AND (attribute_not_exists(wr) OR wr = :wr)",
        (None, _) => "attribute_not_exists(ws.#w) AND wr = :wr",
    };
    let live = if known.expires {
        " AND (attribute_not_exists(#until) OR #until > :now)"
    } else {
        ""
    };
    let mut request = request.condition_expression(format!(
        "inc = :inc AND {slot}{live} AND c BETWEEN :low AND :high"
    ));
    match known.slot {
        Some(last) => request = request.expression_attribute_values(":last", n(last.into())),
        None => {
            request = request.expression_attribute_values(":wr", n(known.removals.into()));
        }
    }
    if known.expires {
        request = request.expression_attribute_names("#until", ATTR_UNTIL);
    }
    request
        .update_expression(
            "SET c = c + :sum, ws.#w = :seq, wt.#w = c + :sum, wa.#w = :now, ver = :ver",
        )
        .expression_attribute_names("#w", writer)
        .expression_attribute_values(":sum", n(sum))
        .expression_attribute_values(":seq", n(sequence.into()))
        .expression_attribute_values(":now", n(clock::now_ms().into()))
        .expression_attribute_values(":ver", new_version)
        .expression_attribute_values(":inc", AttributeValue::S(known.incarnation.clone()))
        .expression_attribute_values(":low", n(low.into()))
        .expression_attribute_values(":high", n(high.into()))
        .return_values(ReturnValue::UpdatedNew)
}

/// The counter values before a batch that keep every increment within its range: each
/// increment's total (`c + prefix`) must be an i64, and ≥ 0 for an unsigned one. `None` when
/// no value does (an increment of the batch fails whatever the counter is).
pub(super) fn batch_bounds(deltas: &[(i64, kv_core::CounterRange)]) -> Option<(i64, i64)> {
    let (mut low, mut high) = (i128::from(i64::MIN), i128::from(i64::MAX));
    let mut prefix: i128 = 0;
    for (delta, range) in deltas {
        prefix += i128::from(*delta);
        low = low.max(i128::from(i64::MIN) - prefix);
        high = high.min(i128::from(i64::MAX) - prefix);
        if *range == kv_core::CounterRange::Unsigned {
            low = low.max(-prefix);
        }
    }
    if low > high {
        return None;
    }
    Some((i64::try_from(low).ok()?, i64::try_from(high).ok()?))
}

/// The writers whose slots in `item` were last used [`STALE_SLOT_MS`] or more before `now`,
/// each with that time as stored (the removal is conditioned on it).
pub(super) fn stale_slots(item: &Item, now: u64, own: &str) -> Vec<(String, String)> {
    let Some(AttributeValue::M(used)) = item.get(ATTR_SLOT_USED) else {
        return Vec::new();
    };
    used.iter()
        .filter(|(writer, _)| writer.as_str() != own)
        .filter_map(|(writer, at)| match at {
            AttributeValue::N(text) => text
                .parse::<u64>()
                .ok()
                .filter(|at| now.saturating_sub(*at) >= STALE_SLOT_MS)
                .map(|_| (writer.clone(), text.clone())),
            _ => None,
        })
        .take(STALE_SLOTS_PER_REMOVAL)
        .collect()
}

/// Removes `stale` slots from the item, each only if still unused since it was read, and only
/// in this incarnation, and counts the removal (`wr`). Best effort: a failure leaves them for
/// the next reader. The value and `ver` are unchanged, so no swap is refused and the change
/// feed reports no change. The count of removals after it, if it removed.
async fn remove_stale_slots(
    bucket: &DynamoBucket,
    key: &str,
    incarnation: &str,
    stale: &[(String, String)],
) -> Option<u64> {
    let mut request = bucket
        .client
        .update_item()
        .table_name(bucket.table.as_ref())
        .set_key(Some(bucket.key(key)))
        .expression_attribute_values(":inc", s(incarnation));
    let (mut paths, mut conditions) = (Vec::new(), vec!["inc = :inc".to_string()]);
    for (index, (writer, used)) in stale.iter().enumerate() {
        for map in [ATTR_SLOT_SEQUENCE, ATTR_SLOT_TOTAL, ATTR_SLOT_USED] {
            paths.push(format!("{map}.#s{index}"));
        }
        conditions.push(format!("{ATTR_SLOT_USED}.#s{index} = :u{index}"));
        request = request
            .expression_attribute_names(format!("#s{index}"), writer)
            .expression_attribute_values(format!(":u{index}"), AttributeValue::N(used.clone()));
    }
    let removed = request
        .update_expression(format!(
            "REMOVE {} ADD {ATTR_SLOT_REMOVALS} :one",
            paths.join(", ")
        ))
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .return_values(ReturnValue::UpdatedNew)
        .condition_expression(conditions.join(" AND "))
        .send()
        .await;
    match removed {
        Ok(output) => Some(output.attributes.as_ref().map_or(u64::MAX, slot_removals)),
        Err(err) => {
            tracing::debug!(
                slots = stale.len(),
                error = %map_sdk_error("UpdateItem", err),
                "dynamodb: stale counter slots left for the next reader"
            );
            None
        }
    }
}

/// The increments of one key through one store, applied as described above.
pub(super) struct SlotIncrements<'a> {
    pub bucket: &'a DynamoBucket,
    pub key: &'a str,
}

fn outcome_unknown(why: &str) -> KvError {
    KvError::unavailable(format!("{OUTCOME_UNKNOWN}: dynamodb increment: {why}"))
        .with_transient(false)
}

/// The incarnation of an item in counter form, live; `None` for anything else.
fn incarnation_of(item: Option<&Item>) -> Option<String> {
    let item = item?;
    if !is_live(item, clock::now_ms()) || item.contains_key(ATTR_VALUE) {
        return None;
    }
    match (item.get(ATTR_INCARNATION), item.get(ATTR_COUNTER)) {
        (Some(AttributeValue::S(incarnation)), Some(AttributeValue::N(_))) => {
            Some(incarnation.clone())
        }
        _ => None,
    }
}

/// What `writer` knows of an item in counter form; `None` for anything else.
fn known_of(writer: &str, item: Option<&Item>) -> Option<Known> {
    let incarnation = incarnation_of(item)?;
    let item = item?;
    Some(Known {
        incarnation,
        slot: slot_of(writer, item),
        expires: expires_ms(item).is_some(),
        removals: slot_removals(item),
    })
}

fn counter_total(item: &Item) -> Option<i64> {
    match item.get(ATTR_COUNTER) {
        Some(AttributeValue::N(text)) => text.parse().ok(),
        _ => None,
    }
}

/// Writes that may have applied, resolved as not applied yet, sent again before the
/// increments answer `outcome unknown` (a persistent fault should not cost 200 rounds).
const SENDS_IN_DOUBT: u32 = 3;

/// Reads tried before an increment answers with the read's error: an `unavailable` read
/// would make the host count the call as possibly applied.
const READS: u32 = 3;

async fn read_retried(bucket: &DynamoBucket, key: &str) -> kv_core::Result<Option<Item>> {
    let mut tried = 0;
    loop {
        tried += 1;
        match bucket.read(key).await {
            Err(err) if err.is_transient() && tried < READS => {
                Backoff::CONTENTION.wait(tried).await
            }
            read => return read,
        }
    }
}

/// The batch judged against the counter as read (`total`): the first increment that leaves
/// its range is refused if it is first; otherwise the next batch stops before it, so it comes
/// first after that batch (a batch whose condition fails on the range is never sent unchanged
/// again). Returns `None` when one was refused (read again), else how many may go.
fn cut_at_range(batch: &mut Batch, total: i64, unresolved: &[Unresolved]) -> Option<usize> {
    let mut running = total;
    let mut leaves = None;
    for (index, pending) in batch.iter().enumerate() {
        match kv_core::counter::add_delta_within(running, pending.delta, pending.range) {
            Ok(next) => running = next,
            Err(_) => {
                leaves = Some(index);
                break;
            }
        }
    }
    match leaves {
        None => Some(usize::MAX),
        Some(0) => {
            let mut first = true;
            batch.answer(|pending| {
                if !std::mem::take(&mut first) {
                    return None;
                }
                let err = kv_core::counter::add_delta_within(total, pending.delta, pending.range)
                    .err()?;
                if unresolved
                    .iter()
                    .any(|sent| sent.contains(pending.attempt.request()))
                {
                    // An earlier copy of it may still land: not a refusal to report.
                    return Some(Err(outcome_unknown(&format!(
                        "it would now leave its range ({err}), and an earlier copy may still \
                         apply"
                    ))));
                }
                Some(Err(err))
            });
            None
        }
        Some(index) => Some(index),
    }
}

/// Answers the increments of `batch` marked as sent by an earlier attempt, whose batch was
/// resolved while they were away (their callers were not in the batch that resolved it). A
/// mark this writer knows nothing of went through another store (or was forgotten).
fn answer_returning(writer: &Writer, batch: &mut Batch, unresolved: &[Unresolved]) {
    batch.answer(|pending| {
        pending.attempt.attempted_base()?;
        let request = pending.attempt.request();
        if unresolved.iter().any(|sent| sent.contains(request)) {
            // Still unresolved: it goes again in the next batch, conditioned like its own.
            return None;
        }
        match writer.resolved(request) {
            Some(Some(total)) => {
                pending.attempt.set_attempted_base(None);
                Some(Ok(total))
            }
            Some(None) => {
                pending.attempt.set_attempted_base(None);
                None
            }
            None => Some(Err(outcome_unknown(
                "an earlier attempt's batch is not known to this store",
            ))),
        }
    });
}

/// Clears the marks of the first `count` increments not in any of `unresolved`: their
/// batch is known not applied.
fn clear_marks(batch: &mut Batch, count: usize, unresolved: &[Unresolved]) {
    let mut seen = 0;
    batch.answer(|pending| {
        if seen < count {
            seen += 1;
            let request = pending.attempt.request();
            if !unresolved.iter().any(|sent| sent.contains(request)) {
                pending.attempt.set_attempted_base(None);
            }
        }
        None
    });
}

/// The requests of the first `count` increments of `batch`, each with the sum of the deltas
/// after it among those.
fn requests_of(batch: &Batch, count: usize) -> Vec<(RequestId, i128)> {
    let mut after: i128 = batch
        .iter()
        .take(count)
        .map(|pending| i128::from(pending.delta))
        .sum();
    batch
        .iter()
        .take(count)
        .map(|pending| {
            after -= i128::from(pending.delta);
            (pending.attempt.request(), after)
        })
        .collect()
}

/// Marks the first `count` increments of `batch` as sent in batch `sequence`.
fn mark_sent(batch: &mut Batch, count: usize, sequence: u64) {
    let mut marked = 0;
    batch.answer(|pending| {
        if marked < count {
            marked += 1;
            pending.attempt.set_attempted_base(Some(sequence as u32));
        }
        None
    });
}

#[async_trait]
impl ApplyBatch for SlotIncrements<'_> {
    async fn apply(&self, batch: &mut Batch) {
        let (bucket, key) = (self.bucket, self.key);
        let writer = &bucket.writer;
        let state = bucket.writer_key(key);
        let mut waits = 0;
        // Writes that failed and may have applied, and the last one's error: each is resolved
        // from the item and, if not applied yet, sent again on the same condition, up to
        // SENDS_IN_DOUBT times.
        let (mut failed_sends, mut send_error) = (0, None::<KvError>);
        for _ in 0..INCREMENT_ATTEMPTS {
            if batch.is_empty() {
                return;
            }
            let unresolved = writer.unresolved(&state);
            // How many increments the next batch may take (fewer after a read that shows a
            // later one leaving its range).
            let mut cap = usize::MAX;
            let known = match writer.known(&state) {
                Some(known) if unresolved.is_empty() => known,
                // Not known, or batches of this store on this key are unresolved: read.
                _ => {
                    let item = match read_retried(bucket, key).await {
                        Ok(item) => item,
                        Err(err) => return batch.answer(|_| Some(Err(err.duplicate()))),
                    };
                    if !unresolved.is_empty() {
                        let outcome = resolve(&writer.id, &unresolved, item.as_ref());
                        settle(writer, &state, batch, &unresolved, &outcome);
                    }
                    let left = writer.unresolved(&state);
                    if let Some(err) = send_error.take()
                        && !left.is_empty()
                    {
                        if failed_sends >= SENDS_IN_DOUBT {
                            // Still not applied, and a copy may still land: say so, keeping
                            // the batches so the next one is conditioned like them.
                            return batch.answer(|pending| {
                                let request = pending.attempt.request();
                                Some(Err(if left.iter().any(|sent| sent.contains(request)) {
                                    outcome_unknown(&err.to_string())
                                } else {
                                    err.duplicate()
                                }))
                            });
                        }
                        Backoff::CONTENTION.wait(failed_sends).await;
                    }
                    let known = known_of(&writer.id, item.as_ref());
                    writer.set_known(&state, known.clone());
                    answer_returning(writer, batch, &writer.unresolved(&state));
                    if batch.is_empty() {
                        return;
                    }
                    let (Some(mut known), Some(item)) = (known, item.as_ref()) else {
                        // Not in counter form (a value, missing, expired): convert it.
                        match self.convert(batch, item.as_ref()).await {
                            Ok(true) => {}
                            Ok(false) => {
                                waits += 1;
                                Backoff::CONTENTION.wait(waits).await;
                            }
                            Err(err) => {
                                failed_sends += 1;
                                send_error = Some(err);
                            }
                        }
                        continue;
                    };
                    let stale = stale_slots(item, clock::now_ms(), &writer.id);
                    // Not while a batch is unresolved: one sent without a slot is judged by the
                    // count of removals, which this would change.
                    if !stale.is_empty()
                        && writer.unresolved(&state).is_empty()
                        && let Some(removals) =
                            remove_stale_slots(bucket, key, &known.incarnation, &stale).await
                    {
                        known.removals = removals;
                        writer.set_known(&state, Some(known.clone()));
                    }
                    if let Some(total) = counter_total(item) {
                        match cut_at_range(batch, total, &writer.unresolved(&state)) {
                            Some(room) => cap = room,
                            None => continue,
                        }
                    }
                    known
                }
            };
            let unresolved = writer.unresolved(&state);
            answer_returning(writer, batch, &unresolved);
            if batch.is_empty() {
                return;
            }
            // The longest run of increments that some counter value keeps within range.
            let mut deltas = Vec::new();
            for pending in batch.iter().take(cap) {
                deltas.push((pending.delta, pending.range));
                if batch_bounds(&deltas).is_none() {
                    deltas.pop();
                    break;
                }
            }
            let Some((low, high)) = batch_bounds(&deltas) else {
                // Even the first alone leaves the range whatever the counter: refuse it.
                let mut first = true;
                batch.answer(|pending| {
                    std::mem::take(&mut first).then(|| {
                        kv_core::counter::add_delta_within(0, pending.delta, pending.range)
                            .and_then(|_| {
                                Err(KvError::overflow("the increment leaves the i64 range"))
                            })
                    })
                });
                continue;
            };
            let count = deltas.len();
            let sequence = writer.next_sequence();
            let sum: i128 = deltas.iter().map(|(delta, _)| i128::from(*delta)).sum();
            writer.push_unresolved(
                &state,
                Unresolved {
                    sequence,
                    incarnation: known.incarnation.clone(),
                    condition: Condition::Slot {
                        slot: known.slot,
                        removals: known.removals,
                    },
                    requests: requests_of(batch, count),
                },
            );
            mark_sent(batch, count, sequence);
            let request = batch_update(
                bucket
                    .client
                    .update_item()
                    .table_name(bucket.table.as_ref())
                    .set_key(Some(bucket.key(key))),
                &writer.id,
                &known,
                sequence,
                sum,
                low,
                high,
                new_version(),
            );
            match request.send().await {
                Ok(output) => {
                    let total = output.attributes.as_ref().and_then(counter_total);
                    let Some(total) = total else {
                        // Applied, but the total cannot be read: the slot has it.
                        continue;
                    };
                    let known = Known {
                        slot: Some(sequence),
                        ..known
                    };
                    applied(writer, &state, batch, sequence, total, known);
                }
                // Not applied, and a later copy cannot apply either (nothing resends it),
                // unless the SDK resends: then it may be a resend meeting its own first write,
                // and the slot says. Either way the item is read again: an unresolved batch
                // may have landed, or another write replaced the item.
                Err(err) if is_conditional_failure(&err) => {
                    if !bucket.sdk_resends {
                        let left = writer.drop_unresolved(&state, sequence);
                        clear_marks(batch, count, &left);
                    }
                    writer.forget(&state);
                }
                Err(err) => {
                    let mut err = map_sdk_error("UpdateItem", err);
                    if err.kind() == kv_core::ErrorKind::ValueTooLarge {
                        err = KvError::new(
                            kv_core::ErrorKind::ValueTooLarge,
                            format!(
                                "dynamodb increment: the counter's item has no room for this \
                                 process's slot (each process that incremented the key in the \
                                 last 15 minutes keeps one; about 4,800 fit): {err}"
                            ),
                        );
                    }
                    // An error after the SDK resent may follow a copy that applied.
                    if err.may_have_applied() || bucket.sdk_resends {
                        // Resolved at once from the slot (the next round), so the host sees an
                        // outcome rather than an ambiguous error.
                        failed_sends += 1;
                        send_error = Some(err);
                        continue;
                    }
                    let left = writer.drop_unresolved(&state, sequence);
                    let mut seen = 0;
                    batch.answer(|pending| {
                        (seen < count).then(|| {
                            seen += 1;
                            if left
                                .iter()
                                .any(|sent| sent.contains(pending.attempt.request()))
                            {
                                // An earlier copy of it may still land.
                                return Err(outcome_unknown(&err.to_string()));
                            }
                            pending.attempt.set_attempted_base(None);
                            Err(err.duplicate())
                        })
                    });
                }
            }
        }
        batch.answer(|_| {
            Some(Err(KvError::unavailable(
                "dynamodb increment: too many attempts on a contended item",
            )))
        });
    }
}

impl SlotIncrements<'_> {
    /// Turns an item that is not in counter form (a value, missing, expired, a tombstone)
    /// into it, applying the batch: one `PutItem` conditioned on the item as read. False when
    /// another write came first (the caller reads again); the error when the write may have
    /// applied (the caller resolves it).
    async fn convert(&self, batch: &mut Batch, item: Option<&Item>) -> Result<bool, KvError> {
        let (bucket, key) = (self.bucket, self.key);
        let writer = &bucket.writer;
        let state = bucket.writer_key(key);
        let now = clock::now_ms();
        let (base, expires_at_ms, version) = match item {
            None => (0, None, None),
            Some(item) if !is_live(item, now) => (0, None, Some(item.get(ATTR_VERSION).cloned())),
            Some(item) => {
                let parsed =
                    value_of(item).and_then(|value| kv_core::counter::parse_counter(&value));
                match parsed {
                    Ok(base) => (
                        base,
                        expires_ms(item),
                        Some(item.get(ATTR_VERSION).cloned()),
                    ),
                    Err(err) => {
                        batch.answer(|_| Some(Err(err.duplicate())));
                        return Ok(true);
                    }
                }
            }
        };
        // Refused increments are answered now; the rest are applied in order.
        let mut total = base;
        batch.answer(|pending| {
            match kv_core::counter::add_delta_within(total, pending.delta, pending.range) {
                Ok(next) => {
                    total = next;
                    None
                }
                Err(err) => Some(Err(err)),
            }
        });
        if batch.is_empty() {
            return Ok(true);
        }
        let count = batch.iter().count();
        let sequence = writer.next_sequence();
        let incarnation = format!("{:032x}", rand::random::<u128>());
        writer.push_unresolved(
            &state,
            Unresolved {
                sequence,
                incarnation: incarnation.clone(),
                condition: Condition::Item(version.clone()),
                requests: requests_of(batch, count),
            },
        );
        mark_sent(batch, count, sequence);
        let slot = |value: String| {
            AttributeValue::M(HashMap::from([(
                writer.id.clone(),
                AttributeValue::N(value),
            )]))
        };
        let mut put = bucket.key(key);
        put.insert(ATTR_COUNTER.into(), AttributeValue::N(total.to_string()));
        put.insert(ATTR_INCARNATION.into(), s(incarnation.clone()));
        put.insert(ATTR_SLOT_SEQUENCE.into(), slot(sequence.to_string()));
        put.insert(ATTR_SLOT_TOTAL.into(), slot(total.to_string()));
        put.insert(ATTR_SLOT_USED.into(), slot(now.to_string()));
        put.insert(ATTR_VERSION.into(), new_version());
        if let Some(at) = expires_at_ms {
            put.extend(expiry_attributes(at));
        }
        if let Some(journal) = item.and_then(|item| item.get(ATTR_JOURNAL)) {
            put.insert(ATTR_JOURNAL.into(), journal.clone());
        }
        let request = bucket
            .client
            .put_item()
            .table_name(bucket.table.as_ref())
            .set_item(Some(put));
        // A live value that expires must still be live when the conversion lands.
        let live =
            if expires_at_ms.is_some() && item.is_some_and(|item| item.contains_key(ATTR_UNTIL)) {
                " AND #until > :now"
            } else {
                ""
            };
        let request = match version {
            None => request
                .condition_expression("attribute_not_exists(#k)")
                .expression_attribute_names("#k", ATTR_KEY),
            Some(Some(version)) => request
                .condition_expression(format!("#ver = :ver{live}"))
                .expression_attribute_names("#ver", ATTR_VERSION)
                .expression_attribute_values(":ver", version),
            Some(None) => request
                .condition_expression(format!(
                    "attribute_exists(#k) AND attribute_not_exists(#ver){live}"
                ))
                .expression_attribute_names("#k", ATTR_KEY)
                .expression_attribute_names("#ver", ATTR_VERSION),
        };
        let request = if live.is_empty() {
            request
        } else {
            request
                .expression_attribute_names("#until", ATTR_UNTIL)
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
        };
        match request.send().await {
            Ok(_) => {
                let known = Known {
                    incarnation,
                    slot: Some(sequence),
                    expires: expires_at_ms.is_some(),
                    removals: 0,
                };
                applied(writer, &state, batch, sequence, total, known);
                Ok(true)
            }
            // Another write came first: not applied, unless the SDK resends (then it may be a
            // resend meeting its own first write, and the slot says).
            Err(err) if is_conditional_failure(&err) => {
                if !bucket.sdk_resends {
                    let left = writer.drop_unresolved(&state, sequence);
                    clear_marks(batch, count, &left);
                }
                Ok(false)
            }
            Err(err) => {
                let err = map_sdk_error("PutItem", err);
                // An error after the SDK resent may follow a copy that applied.
                if err.may_have_applied() || bucket.sdk_resends {
                    // Resolved at once from the slot, by the caller's next round.
                    return Err(err);
                }
                let left = writer.drop_unresolved(&state, sequence);
                clear_marks(batch, count, &left);
                batch.answer(|_| Some(Err(err.duplicate())));
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_core::CounterRange::{Signed, Unsigned};

    #[test]
    fn bounds_keep_every_total_in_range() {
        assert_eq!(batch_bounds(&[(1, Signed)]), Some((i64::MIN, i64::MAX - 1)));
        assert_eq!(batch_bounds(&[(-5, Unsigned)]), Some((5, i64::MAX)));
        assert_eq!(
            batch_bounds(&[(3, Signed), (-5, Unsigned)]),
            Some((2, i64::MAX - 3))
        );
        assert_eq!(
            batch_bounds(&[(i64::MAX, Signed), (i64::MAX, Signed)]),
            Some((i64::MIN, -i64::MAX))
        );
        assert_eq!(
            batch_bounds(&[(i64::MAX, Signed), (i64::MIN, Unsigned)]),
            None
        );
    }

    /// A live counter item of incarnation `i`, with writer `w1`'s slot (if any).
    fn item(incarnation: &str, slot: Option<(u64, i64)>) -> Item {
        let map = |value: Option<String>| {
            AttributeValue::M(
                value
                    .map(|value| ("w1".to_string(), AttributeValue::N(value)))
                    .into_iter()
                    .collect(),
            )
        };
        HashMap::from([
            (
                ATTR_INCARNATION.to_string(),
                AttributeValue::S(incarnation.into()),
            ),
            (ATTR_COUNTER.to_string(), AttributeValue::N("40".into())),
            (
                ATTR_SLOT_SEQUENCE.to_string(),
                map(slot.map(|(sequence, _)| sequence.to_string())),
            ),
            (
                ATTR_SLOT_TOTAL.to_string(),
                map(slot.map(|(_, total)| total.to_string())),
            ),
        ])
    }

    fn sent(sequence: u64, expected: Option<u64>) -> Unresolved {
        Unresolved {
            sequence,
            incarnation: "i".into(),
            condition: Condition::Slot {
                slot: expected,
                removals: 0,
            },
            requests: Vec::new(),
        }
    }

    #[test]
    fn unresolved_batches_are_judged_from_the_slot() {
        let one = [sent(7, Some(5))];
        assert_eq!(
            resolve("w1", &one, Some(&item("i", Some((7, 40))))),
            Outcome::Applied {
                sequence: 7,
                total: 40
            }
        );
        assert_eq!(
            resolve("w1", &one, Some(&item("i", Some((5, 30))))),
            Outcome::NotYet
        );
        // Another writer's slot says nothing of this one's.
        assert_eq!(
            resolve("w2", &one, Some(&item("i", Some((7, 40))))),
            Outcome::Unknown
        );
        // Replaced since, deleted, or a slot no batch of these would leave.
        assert_eq!(
            resolve("w1", &one, Some(&item("j", Some((7, 40))))),
            Outcome::Unknown
        );
        assert_eq!(resolve("w1", &one, None), Outcome::Unknown);
        assert_eq!(
            resolve("w1", &one, Some(&item("i", Some((8, 40))))),
            Outcome::Unknown
        );
        // Two sent on the same slot (the first judged not applied yet, the second sent
        // while its copy may still land): whichever the slot names applied, alone.
        let two = [sent(7, Some(5)), sent(8, Some(5))];
        for applied in [7, 8] {
            assert_eq!(
                resolve("w1", &two, Some(&item("i", Some((applied, 41))))),
                Outcome::Applied {
                    sequence: applied,
                    total: 41
                }
            );
        }
        assert_eq!(
            resolve("w1", &two, Some(&item("i", Some((5, 30))))),
            Outcome::NotYet
        );
        // No slot: none applied yet, unless slots were removed since (this one may have
        // been, after it applied).
        let first = [sent(7, None)];
        assert_eq!(
            resolve("w1", &first, Some(&item("i", None))),
            Outcome::NotYet
        );
        let mut removed = item("i", None);
        removed.insert(ATTR_SLOT_REMOVALS.into(), AttributeValue::N("1".into()));
        assert_eq!(resolve("w1", &first, Some(&removed)), Outcome::Unknown);
    }

    #[test]
    fn slots_unused_for_the_stale_age_are_found() {
        let now = 100 * STALE_SLOT_MS;
        let used = |at: u64| AttributeValue::N(at.to_string());
        let item = HashMap::from([(
            ATTR_SLOT_USED.to_string(),
            AttributeValue::M(HashMap::from([
                ("old".to_string(), used(now - STALE_SLOT_MS)),
                ("young".to_string(), used(now - STALE_SLOT_MS + 1)),
                ("future".to_string(), used(now + 5)),
            ])),
        )]);
        assert_eq!(
            stale_slots(&item, now, "w1"),
            vec![("old".to_string(), (now - STALE_SLOT_MS).to_string())]
        );
        // Never the reader's own.
        assert!(stale_slots(&item, now, "old").is_empty());
        let many = HashMap::from([(
            ATTR_SLOT_USED.to_string(),
            AttributeValue::M((0..100).map(|w| (format!("w{w}"), used(0))).collect()),
        )]);
        assert_eq!(stale_slots(&many, now, "w1").len(), STALE_SLOTS_PER_REMOVAL);
        assert!(stale_slots(&HashMap::new(), now, "w1").is_empty());
    }
}
