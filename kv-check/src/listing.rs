//! Listings (docs/semantics.md S5): a complete listing returns every key that existed for the
//! whole listing; keys added or deleted meanwhile may or may not appear.
//!
//! A key certainly existed throughout a listing when some write of it (`set`, a `set-many`
//! entry, `increment`, a swap) completed `ok` before the listing was invoked, and no delete of it
//! that is not certainly `fail` can fall after that write and before the listing completed: every
//! delete either completed before the write was invoked or was invoked after the listing
//! completed. An `info` delete never completes, so it excuses the key from its invocation on.

use std::collections::BTreeMap;

use crate::history::{History, Op, Outcome, Ret};
use crate::keyed::{KeyHistory, KeyOpKind};
use crate::report::{AnomalyKind, Finding};

/// Checks every `ok` listing of `history` against the writes and deletes in `keys`.
pub(crate) fn check(history: &History, keys: &BTreeMap<String, KeyHistory>) -> Vec<Finding> {
    let mut anomalies = Vec::new();
    for (index, entry) in history.entries.iter().enumerate() {
        let (Op::ListKeys { prefix }, Outcome::Ok(Ret::Keys(listed)), Some(complete)) =
            (&entry.op, &entry.outcome, entry.complete)
        else {
            continue;
        };
        let listed: std::collections::HashSet<&str> = listed.iter().map(String::as_str).collect();
        let prefix = prefix.as_deref().unwrap_or("");
        for (key, ops) in keys.range::<str, _>((
            std::ops::Bound::Included(prefix),
            std::ops::Bound::Unbounded,
        )) {
            if !key.starts_with(prefix) {
                break;
            }
            if listed.contains(key.as_str()) {
                continue;
            }
            let deletes: Vec<_> = ops
                .ops
                .iter()
                .filter(|op| op.kind == KeyOpKind::Write(None))
                .collect();
            // The latest acknowledged write that no delete can follow within the listing.
            let witness = ops
                .ops
                .iter()
                .filter(|w| {
                    !matches!(w.kind, KeyOpKind::Read(_) | KeyOpKind::Write(None))
                        && w.complete.is_some_and(|c| c < entry.invoke)
                })
                .filter(|w| {
                    deletes
                        .iter()
                        .all(|d| d.invoke > complete || d.complete.is_some_and(|c| c < w.invoke))
                })
                .max_by_key(|w| w.complete);
            if let Some(write) = witness {
                anomalies.push(Finding::new(
                    AnomalyKind::ListingMissingKey,
                    Some(key),
                    format!(
                        "{key} was written before the listing began and not deleted before it \
                         ended, but the listing did not return it"
                    ),
                    vec![write.entry, index],
                ));
            }
        }
    }
    anomalies
}
