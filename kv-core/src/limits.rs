//! How the host protects itself from a guest and from a slow backend (docs/semantics.md, S12).

use std::time::Duration;

use crate::backoff::Backoff;

/// Every provider accepts every key of 1 to 1024 UTF-8 bytes (S1).
pub const MAX_KEY_BYTES: usize = 1024;
/// A `list-keys` page never holds more keys than this (S5).
pub const MAX_LIST_PAGE: usize = 1000;
/// The longest TTL `set-with-ttl` accepts: 100 years.
pub const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// How long a provider keeps the record of an applied increment or swap (a Redis request key,
/// a SQLite request row). A guest call's retries all happen within its operation timeout, so
/// the record outlives them as long as the timeout stays within [`MAX_OPERATION_TIMEOUT`].
pub const REQUEST_RECORD_TTL: Duration = Duration::from_secs(600);

/// The longest operation timeout: half of [`REQUEST_RECORD_TTL`], so a retry always finds the
/// record of its own earlier attempt (S6, exactly once). Longer timeouts are refused in
/// configuration and clamped by [`Limits::effective`].
pub const MAX_OPERATION_TIMEOUT: Duration = Duration::from_secs(300);

/// Host limits; the effective value limit is the smaller of this and the provider's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest value a guest may write, in bytes.
    pub max_value_bytes: usize,
    /// Most entries in one `get-many`, `set-many` or `delete-many` call.
    pub max_batch_entries: usize,
    /// Most value bytes one `get-many` returns or one `set-many` writes: the host memory one
    /// batch call may hold for a guest. `get-many` charges values as each round of keys
    /// arrives and stops at the limit.
    pub max_batch_bytes: usize,
    /// Most value bytes the host holds for one instance between calls (the values captured
    /// by its open compare-and-swap handles).
    pub max_held_bytes: usize,
    /// Most keys in one `list-keys` page (at most [`MAX_LIST_PAGE`]).
    pub list_page_size: usize,
    /// Time limit for one operation, retries included.
    pub operation_timeout: Duration,
    /// How transient backend errors are retried.
    pub retry: RetryPolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value_bytes: 64 * 1024 * 1024,
            max_batch_entries: 10_000,
            max_batch_bytes: 64 * 1024 * 1024,
            max_held_bytes: 64 * 1024 * 1024,
            list_page_size: MAX_LIST_PAGE,
            operation_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

impl Limits {
    /// These limits with the operation timeout clamped to [`MAX_OPERATION_TIMEOUT`]: beyond it,
    /// a retry could outlive the record that makes it exactly once.
    pub fn effective(mut self) -> Limits {
        if self.operation_timeout > MAX_OPERATION_TIMEOUT {
            tracing::warn!(
                requested_ms = self.operation_timeout.as_millis() as u64,
                max_ms = MAX_OPERATION_TIMEOUT.as_millis() as u64,
                "operation timeout clamped: retries must end before the records of applied \
                 increments and swaps expire"
            );
            self.operation_timeout = MAX_OPERATION_TIMEOUT;
        }
        self
    }
}

/// How transient errors of idempotent operations are retried ([`Backoff`] between attempts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Upper bound of one delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The backoff between attempts.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.initial_backoff,
            max: self.max_backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operation_timeout_stays_within_the_request_records() {
        const { assert!(MAX_OPERATION_TIMEOUT.as_secs() * 2 <= REQUEST_RECORD_TTL.as_secs()) };
        let long = Limits {
            operation_timeout: Duration::from_secs(3600),
            ..Limits::default()
        };
        assert_eq!(long.effective().operation_timeout, MAX_OPERATION_TIMEOUT);
        assert_eq!(
            Limits::default().effective().operation_timeout,
            Limits::default().operation_timeout
        );
    }

    #[test]
    fn backoff_is_capped() {
        let policy = RetryPolicy::default();
        for retry in 1..40 {
            assert!(policy.backoff().delay(retry) <= policy.max_backoff);
        }
        assert!(policy.backoff().delay(1) <= policy.initial_backoff);
    }
}
