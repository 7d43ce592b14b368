//! Judges a watch history (docs/semantics.md S13): what the runner wrote, key by key in the
//! order the store applied it, against what the watcher recorded, in delivery order.
//!
//! The runner gives every set of a key a value no other set of that key wrote, so each
//! delivered `on-set` names the one write it reports. Per key, the checker then requires:
//!
//! - **nothing invented:** every event reports a write of that key (a set of that value, a
//!   delete, an expiry); an event of a key never written is a failure;
//! - **order:** within one run of a watcher, the writes reported never go back (a repeat of
//!   the last one is a redelivery). A new run (a restart from the checkpoint) or a resync may
//!   go back: at-least-once repeats a stretch;
//! - **the final state:** the key's last event reports its last write; a key whose last write
//!   is a delete may have no event at all where the provider coalesces (`every_value: false`:
//!   it appeared and vanished between two looks), but an expiry is always reported;
//! - **every write** reported at least once, where the provider declares `every_value`; and
//!   there, a delete reported twice in a row within one run is a change that was not one (a
//!   delete of a missing key). A set may be reported twice: a retried set applies twice.

use std::collections::BTreeMap;
use std::fmt;

/// One write of a key, as applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// `set` (or any write leaving a value): the value.
    Set(Vec<u8>),
    /// `delete` of a key that held a value.
    Delete,
    /// A TTL that ran out.
    Expire,
}

/// One event the watcher recorded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// `on-set(key, value)`.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// `on-delete(key)`.
    Delete {
        /// The key.
        key: String,
    },
}

impl Event {
    /// Parses the recorder's `set KEY VALUE` / `delete KEY` (keys hold no space); a set's
    /// value is `value`, the bytes the recorder kept beside the line (the line shows them as
    /// lossy UTF-8).
    pub fn parse(line: &str, value: Option<Vec<u8>>) -> Option<Event> {
        if let Some(rest) = line.strip_prefix("set ") {
            let key = rest.split_once(' ').map_or(rest, |(key, _)| key);
            return Some(Event::Set {
                key: key.to_string(),
                value: value?,
            });
        }
        line.strip_prefix("delete ").map(|key| Event::Delete {
            key: key.to_string(),
        })
    }

    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Set { key, .. } | Event::Delete { key } => key,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Set { key, value } => {
                write!(f, "set {key} {:?}", String::from_utf8_lossy(value))
            }
            Event::Delete { key } => write!(f, "delete {key}"),
        }
    }
}

impl fmt::Display for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Write::Set(value) => write!(f, "set {:?}", String::from_utf8_lossy(value)),
            Write::Delete => f.write_str("delete"),
            Write::Expire => f.write_str("expiry"),
        }
    }
}

/// What the runner wrote, and what the watcher recorded.
#[derive(Debug, Default, Clone)]
pub struct WatchHistory {
    /// Each key's writes, in the order the store applied them.
    pub writes: BTreeMap<String, Vec<Write>>,
    /// The events, in delivery order.
    pub events: Vec<Event>,
    /// Indices into `events` where a new run of the watcher began (after a restart), or where
    /// order may restart for another declared reason (a resync).
    pub new_runs: Vec<usize>,
    /// Indices into `events` where a resync from a listing began (a gap in the feed, or a
    /// feed that did not outlive the watcher): a delete made before one is not delivered (S13
    /// declares it), so a key deleted then may keep a set from before as its last event.
    pub resyncs: Vec<usize>,
    /// Keys whose every write need not be reported even where the provider declares
    /// `every_value`: written while no watcher of a feed that does not outlive it ran.
    pub coalesced: std::collections::BTreeSet<String>,
}

/// The checker's judgement.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Broken rules: any one fails the case.
    pub violations: Vec<String>,
    /// Writes reported after later ones of the same key within one run.
    pub out_of_order: Vec<String>,
    /// A delete reported twice in a row within one run, where every value is reported: a
    /// delete that deleted nothing, unless a delivery failed after recording it.
    pub repeated_deletes: Vec<String>,
    /// What has not arrived (yet): the case waits for these, then fails on them.
    pub missing: Vec<String>,
}

impl Verdict {
    /// Nothing broken and nothing missing.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
            && self.out_of_order.is_empty()
            && self.repeated_deletes.is_empty()
            && self.missing.is_empty()
    }

    /// The first few problems, for a case's failure reason.
    pub fn summary(&self) -> String {
        let total = self.violations.len()
            + self.out_of_order.len()
            + self.repeated_deletes.len()
            + self.missing.len();
        let mut shown: Vec<&str> = self
            .violations
            .iter()
            .chain(&self.out_of_order)
            .chain(&self.repeated_deletes)
            .chain(&self.missing)
            .map(String::as_str)
            .take(5)
            .collect();
        if total > shown.len() {
            shown.push("…");
        }
        format!("{total} problem(s): {}", shown.join("; "))
    }
}

impl WatchHistory {
    /// Judges the history; `every_value` is the provider's declaration.
    pub fn check(&self, every_value: bool) -> Verdict {
        let mut verdict = Verdict::default();
        // Per key: the write the last event reported in the current run, and every write
        // reported so far.
        let mut last: BTreeMap<&str, usize> = BTreeMap::new();
        let mut reported: BTreeMap<&str, Vec<bool>> = BTreeMap::new();
        let mut final_event: BTreeMap<&str, (usize, &Event)> = BTreeMap::new();
        for (index, event) in self.events.iter().enumerate() {
            if self.new_runs.contains(&index) {
                last.clear();
            }
            let key = event.key();
            let Some(writes) = self.writes.get(key) else {
                verdict.violations.push(format!(
                    "event {index} ({event}) is about a key never written"
                ));
                continue;
            };
            final_event.insert(key, (index, event));
            let matches = |write: &Write| match (event, write) {
                (Event::Set { value, .. }, Write::Set(written)) => value == written,
                (Event::Delete { .. }, Write::Delete | Write::Expire) => true,
                _ => false,
            };
            let last_reported = last.get(key).copied();
            let from = last_reported.unwrap_or(0);
            // The earliest matching write not before the last one reported (a repeat of the
            // last one is a redelivery).
            let found = (from..writes.len()).find(|&i| matches(&writes[i]));
            match found {
                Some(i) => {
                    if every_value
                        && last_reported == Some(i)
                        && matches!(event, Event::Delete { .. })
                    {
                        verdict.repeated_deletes.push(format!(
                            "key {key:?}: event {index} repeats the delete (write #{i}) just \
                             reported in the same run: a delete that deleted nothing"
                        ));
                    }
                    last.insert(key, i);
                    reported
                        .entry(key)
                        .or_insert_with(|| vec![false; writes.len()])[i] = true;
                }
                None => match (0..from).find(|&i| matches(&writes[i])) {
                    Some(i) => verdict.out_of_order.push(format!(
                        "key {key:?}: event {index} reports write #{i} ({}) after write #{from} \
                         ({}) in the same run: out of order",
                        writes[i], writes[from]
                    )),
                    None => verdict.violations.push(format!(
                        "key {key:?}: event {index} ({event}) reports no write of that key"
                    )),
                },
            }
        }
        for (key, writes) in &self.writes {
            let Some(last_write) = writes.last() else {
                continue;
            };
            let ends_deleted = matches!(last_write, Write::Delete | Write::Expire);
            let expired = matches!(last_write, Write::Expire);
            let coalesced = !every_value || self.coalesced.contains(key);
            match final_event.get(key.as_str()) {
                None if ends_deleted && coalesced && !expired => {}
                // An expiry inside the gap a resync covered is not delivered either.
                None if expired && !self.resyncs.is_empty() => {}
                None => verdict.missing.push(format!(
                    "key {key:?}: nothing delivered (last write: {last_write})"
                )),
                Some(&(index, event)) => {
                    let ok = match (event, last_write) {
                        (Event::Set { value, .. }, Write::Set(written)) => value == written,
                        (Event::Delete { .. }, Write::Delete | Write::Expire) => true,
                        // Deleted, or expired, inside the gap a resync covered.
                        (Event::Set { .. }, Write::Delete | Write::Expire) => {
                            self.resyncs.iter().any(|&resync| index < resync)
                        }
                        _ => false,
                    };
                    if !ok {
                        verdict.missing.push(format!(
                            "key {key:?}: the last event is {event}, not the last write \
                             ({last_write})"
                        ));
                    }
                }
            }
            if every_value && !self.coalesced.contains(key) {
                let seen = reported.get(key.as_str());
                let unreported: Vec<String> = writes
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| !seen.is_some_and(|seen| seen[i]))
                    .map(|(i, write)| format!("#{i} {write}"))
                    .collect();
                if !unreported.is_empty() {
                    verdict.missing.push(format!(
                        "key {key:?}: {} of {} writes never delivered ({})",
                        unreported.len(),
                        writes.len(),
                        unreported
                            .iter()
                            .take(3)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> Event {
        Event::Set {
            key: key.to_string(),
            value: value.as_bytes().to_vec(),
        }
    }

    fn written(value: &str) -> Write {
        Write::Set(value.as_bytes().to_vec())
    }

    fn delete(key: &str) -> Event {
        Event::Delete {
            key: key.to_string(),
        }
    }

    fn history(events: Vec<Event>) -> WatchHistory {
        let mut writes = BTreeMap::new();
        writes.insert(
            "a".to_string(),
            vec![written("1"), written("2"), Write::Delete, written("3")],
        );
        writes.insert("b".to_string(), vec![written("x"), Write::Expire]);
        WatchHistory {
            writes,
            events,
            new_runs: Vec::new(),
            resyncs: Vec::new(),
            coalesced: Default::default(),
        }
    }

    fn every_event() -> Vec<Event> {
        vec![
            set("a", "1"),
            set("b", "x"),
            set("a", "2"),
            delete("a"),
            delete("b"),
            set("a", "3"),
        ]
    }

    #[test]
    fn every_write_in_order_passes() {
        assert!(history(every_event()).check(true).passed());
    }

    #[test]
    fn a_repeat_is_a_redelivery_but_going_back_is_out_of_order() {
        let mut events = every_event();
        events.insert(3, set("a", "2"));
        assert!(history(events.clone()).check(true).passed());
        events.insert(4, set("a", "1"));
        let verdict = history(events).check(true);
        assert!(
            verdict
                .out_of_order
                .iter()
                .any(|v| v.contains("out of order")),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_new_run_may_repeat_a_stretch() {
        let mut events = every_event();
        events.extend([set("a", "2"), delete("a"), set("a", "3")]);
        let mut going_back = history(events);
        assert!(!going_back.check(true).passed());
        going_back.new_runs.push(6);
        assert!(going_back.check(true).passed());
    }

    #[test]
    fn a_lost_write_fails_only_where_every_value_is_declared() {
        let events: Vec<Event> = every_event()
            .into_iter()
            .filter(|event| *event != set("a", "2"))
            .collect();
        let verdict = history(events.clone()).check(true);
        assert!(verdict.violations.is_empty(), "{verdict:?}");
        assert!(
            verdict
                .missing
                .iter()
                .any(|m| m.contains("never delivered")),
            "{verdict:?}"
        );
        assert!(history(events).check(false).passed());
    }

    #[test]
    fn the_final_state_must_arrive_even_when_coalescing() {
        let events = every_event()[..5].to_vec();
        assert!(!history(events.clone()).check(false).passed());
        assert!(!history(events).check(true).passed());
        // A key that ends deleted may vanish unseen where changes coalesce; an expiry may not.
        let mut vanished = history(
            every_event()
                .into_iter()
                .filter(|event| event.key() == "b")
                .collect(),
        );
        if let Some(a) = vanished.writes.get_mut("a") {
            a.pop();
            a.push(Write::Delete);
        }
        assert!(
            vanished.check(false).passed(),
            "{:?}",
            vanished.check(false)
        );
        assert!(!vanished.check(true).passed());
        let unexpired: Vec<Event> = every_event()
            .into_iter()
            .filter(|event| *event != delete("b"))
            .collect();
        let verdict = history(unexpired).check(false);
        assert!(
            verdict.missing.iter().any(|m| m.contains("\"b\"")),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_delete_inside_a_resynced_gap_is_declared_lost_and_nothing_else_is() {
        // `a` is deleted while no watcher runs; the restarted one resyncs from a listing.
        let events = vec![set("a", "1"), set("b", "x"), delete("b")];
        let mut resynced = history(events);
        if let Some(a) = resynced.writes.get_mut("a") {
            a.truncate(3);
        }
        assert!(!resynced.check(false).passed());
        resynced.new_runs.push(3);
        resynced.resyncs.push(3);
        assert!(
            resynced.check(false).passed(),
            "{:?}",
            resynced.check(false)
        );
        // A set delivered after the resync is the listing's: the key was live then.
        resynced.events.push(set("a", "2"));
        assert!(!resynced.check(false).passed());
    }

    #[test]
    fn an_expiry_inside_a_resynced_gap_is_declared_lost_too() {
        let mut expired = history(vec![
            set("a", "1"),
            set("a", "2"),
            delete("a"),
            set("a", "3"),
        ]);
        expired.events.insert(0, set("b", "x"));
        assert!(!expired.check(false).passed());
        expired.new_runs.push(2);
        expired.resyncs.push(2);
        assert!(expired.check(false).passed(), "{:?}", expired.check(false));
        // Never delivered at all, with a resync in the run: also declared.
        expired.events.remove(0);
        assert!(expired.check(false).passed(), "{:?}", expired.check(false));
    }

    #[test]
    fn invented_events_are_violations() {
        let mut events = every_event();
        events.push(set("c", "1"));
        events.push(set("a", "never written"));
        let verdict = history(events).check(false);
        assert_eq!(verdict.violations.len(), 2, "{verdict:?}");
        assert!(verdict.violations[0].contains("never written"));
        assert!(verdict.violations[1].contains("reports no write"));
    }

    #[test]
    fn a_delete_repeated_within_a_run_is_one_that_deleted_nothing() {
        let mut events = every_event();
        events.insert(4, delete("a"));
        let verdict = history(events.clone()).check(true);
        assert!(
            verdict
                .repeated_deletes
                .iter()
                .any(|v| v.contains("deleted nothing")),
            "{verdict:?}"
        );
        // Where reads coalesce, a delete read back twice is not a second change.
        assert!(history(events.clone()).check(false).passed());
        // A set repeated is a redelivery (a retried set applies twice).
        events.remove(4);
        events.insert(3, set("a", "2"));
        assert!(history(events).check(true).passed());
    }

    #[test]
    fn values_are_compared_as_bytes() {
        let mut binary = history(Vec::new());
        binary.writes.clear();
        binary
            .writes
            .insert("k".into(), vec![Write::Set(vec![0xff, 0xfe])]);
        binary.events.push(Event::Set {
            key: "k".into(),
            value: vec![0xfe, 0xff],
        });
        let verdict = binary.check(false);
        assert!(!verdict.passed(), "{verdict:?}");
    }

    #[test]
    fn keys_written_while_no_watcher_ran_need_only_their_final_state() {
        let events: Vec<Event> = every_event()
            .into_iter()
            .filter(|event| *event != set("a", "2"))
            .collect();
        let mut relaxed = history(events);
        assert!(!relaxed.check(true).passed());
        relaxed.coalesced.insert("a".into());
        assert!(relaxed.check(true).passed());
    }

    #[test]
    fn recorder_lines_parse() {
        let bytes = |text: &str| Some(text.as_bytes().to_vec());
        assert_eq!(
            Event::parse("set k v w", bytes("v w")),
            Some(set("k", "v w"))
        );
        assert_eq!(Event::parse("set k ", bytes("")), Some(set("k", "")));
        assert_eq!(Event::parse("set k v", None), None, "a set needs its bytes");
        assert_eq!(Event::parse("delete k", None), Some(delete("k")));
        assert_eq!(Event::parse("other", None), None);
    }
}
