//! What the checked store logs about provider calls, in one place: the full cause chain goes to
//! the host's log, never to the guest (docs/semantics.md S11).

use crate::error::{ErrorKind, KvError};

/// The log of one store's provider calls.
#[derive(Debug, Clone)]
pub(crate) struct CallLog {
    store: String,
    provider: String,
}

impl CallLog {
    pub(crate) fn new(store: &str, provider: &str) -> CallLog {
        CallLog {
            store: store.to_string(),
            provider: provider.to_string(),
        }
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
