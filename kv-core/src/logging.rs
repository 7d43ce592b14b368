//! What the checked store logs and reports about provider calls, in one place: the full cause
//! chain goes to the host's log, never to the guest (docs/semantics.md S11); each finished
//! operation goes to the host's [`Observer`], if it installed one.

use std::sync::Arc;
use std::time::Instant;

use crate::error::{ErrorKind, KvError};
use crate::observe::{Observer, StoreCall, Transfer};
use crate::retry::OUTCOME_UNKNOWN;

/// Whether the caller of `op` cannot tell if it applied: an increment or swap says so in its
/// message, a plain write by its class (`unavailable`, `timeout`).
fn outcome_unknown(op: &str, err: &KvError) -> bool {
    let write = matches!(
        op,
        "set" | "set-with-ttl" | "delete" | "set-many" | "delete-many" | "increment" | "swap"
    );
    err.message().starts_with(OUTCOME_UNKNOWN) || (write && err.may_have_applied())
}

/// The log of one store's provider calls.
#[derive(Clone)]
pub(crate) struct CallLog {
    store: String,
    provider: String,
    observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for CallLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallLog")
            .field("store", &self.store)
            .field("provider", &self.provider)
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

impl CallLog {
    pub(crate) fn new(store: &str, provider: &str, observer: Option<Arc<dyn Observer>>) -> CallLog {
        CallLog {
            store: store.to_string(),
            provider: provider.to_string(),
            observer,
        }
    }

    /// When an operation starts, if anyone observes it (no clock is read otherwise).
    #[inline]
    pub(crate) fn start(&self) -> Option<Instant> {
        self.observer.as_ref().map(|_| Instant::now())
    }

    /// An operation started at `started` ended after `calls` provider calls and `attempts`
    /// attempts, with `error` or without.
    #[inline]
    pub(crate) fn finish(
        &self,
        op: &'static str,
        started: Option<Instant>,
        (calls, attempts): (u32, u32),
        error: Option<&KvError>,
    ) {
        if let (Some(observer), Some(started)) = (&self.observer, started) {
            observer.call(&StoreCall {
                store: &self.store,
                provider: &self.provider,
                op,
                error: error.map(KvError::kind),
                outcome_unknown: error.is_some_and(|err| outcome_unknown(op, err)),
                calls,
                attempts,
                elapsed: started.elapsed(),
            });
        }
    }

    /// A successful operation moved `bytes` of values in `entries` entries.
    #[inline]
    pub(crate) fn transfer(&self, op: &'static str, entries: usize, bytes: u64, written: bool) {
        if let Some(observer) = &self.observer {
            observer.transfer(&Transfer {
                store: &self.store,
                provider: &self.provider,
                op,
                entries,
                bytes,
                written,
            });
        }
    }

    /// Whether anyone observes this store's operations.
    #[inline]
    pub(crate) fn observed(&self) -> bool {
        self.observer.is_some()
    }

    /// An attempt failed transiently and another one follows.
    pub(crate) fn retrying(&self, op: &'static str, attempt: u32, err: &KvError) {
        tracing::debug!(store = %self.store, op, attempt, error = %err.chain(), "retrying");
    }

    /// The call failed for good after `attempts` attempts. Backend trouble is a warning; a
    /// rejection the guest caused (a conflict, an invalid value) is only debug output.
    pub(crate) fn failed(&self, op: &'static str, attempts: u32, err: &KvError) {
        match err.kind() {
            ErrorKind::Unavailable
            | ErrorKind::Throttled
            | ErrorKind::Timeout
            | ErrorKind::Internal => {
                tracing::warn!(store = %self.store, provider = %self.provider, op, attempts, error = %err.chain(), "operation failed")
            }
            _ => {
                tracing::debug!(store = %self.store, op, error = %err, "operation rejected")
            }
        }
    }
}
