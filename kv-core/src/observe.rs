//! What a host can watch of its stores: every finished operation, as one [`StoreCall`], goes
//! to the [`Observer`] the host installed ([`crate::StoresBuilder::observer`]) — metrics,
//! traces. Without one nothing is measured: no clock is read on the fast path.

use std::time::Duration;

use crate::error::ErrorKind;

/// One finished store operation.
#[derive(Debug, Clone)]
pub struct StoreCall<'a> {
    /// The store identifier.
    pub store: &'a str,
    /// The provider name.
    pub provider: &'a str,
    /// The operation (`get`, `set-many`, `increment`, …).
    pub op: &'static str,
    /// The class of the error the caller got; `None` on success.
    pub error: Option<ErrorKind>,
    /// The caller was told the outcome is unknown (a write that may have applied).
    pub outcome_unknown: bool,
    /// Provider calls the operation needed: 1, or a batch's parts or rounds; 0 when it was
    /// refused before any.
    pub calls: u32,
    /// Provider attempts, retries included: `attempts - calls` were retries.
    pub attempts: u32,
    /// From the call to its final result, retries and backoff included.
    pub elapsed: Duration,
}

/// Values one operation moved.
#[derive(Debug, Clone)]
pub struct Transfer<'a> {
    /// The store identifier.
    pub store: &'a str,
    /// The provider name.
    pub provider: &'a str,
    /// The operation.
    pub op: &'static str,
    /// Entries of the call (1 for a single-key call).
    pub entries: usize,
    /// Value bytes read or written.
    pub bytes: u64,
    /// Whether the bytes were written (else read).
    pub written: bool,
}

/// Several observers, each told of every operation in turn.
pub struct Observers(pub Vec<std::sync::Arc<dyn Observer>>);

impl Observer for Observers {
    fn call(&self, call: &StoreCall<'_>) {
        self.0.iter().for_each(|observer| observer.call(call));
    }

    fn transfer(&self, transfer: &Transfer<'_>) {
        self.0
            .iter()
            .for_each(|observer| observer.transfer(transfer));
    }
}

/// Receives every store operation of a host. Called on the caller's task, inline: keep it
/// cheap (atomic counters; no I/O).
pub trait Observer: Send + Sync + 'static {
    /// An operation finished.
    fn call(&self, call: &StoreCall<'_>);

    /// An operation moved values (called once it succeeded).
    fn transfer(&self, _transfer: &Transfer<'_>) {}
}
