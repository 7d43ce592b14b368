//! The time limit and retries of provider calls (docs/semantics.md S12, docs/reliability.md).
//!
//! This is the only layer that retries: SDK retries are off, and providers mark transient only
//! what is safe to try again. A call gets [`Limits::operation_timeout`](crate::Limits) in
//! total; transient errors are retried with the [`RetryPolicy`]'s backoff
//! ([`crate::backoff`]), at least as long as the backend's `Retry-After`. A retry that would end
//! past the deadline is not started, so throttling that outlasts the retries surfaces as
//! `throttled`, not `timeout`; the final error is marked permanent.
//!
//! Increments and swaps are retried too: every attempt gets the call's one [`Attempt`] (its
//! request id, and what earlier attempts left unresolved), so a retry after a lost reply
//! returns the first result instead of applying again ([`Increment`], [`Swap`]). Their final
//! error says when the outcome is unknown ([`final_error_of_write`], docs/semantics.md S6, S7).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::counter::CounterRange;
use crate::error::{ErrorKind, KvError, Result};
use crate::limits::RetryPolicy;
use crate::logging::CallLog;
use crate::provider::{Attempt, Bucket, Bytes, SwapOutcome, Version};

/// How the message of an ambiguous write's error starts.
pub const OUTCOME_UNKNOWN: &str = "outcome unknown";

/// One operation the retry loop may start more than once.
///
/// What it returns, `T`, is a parameter rather than an associated type: a projection with the
/// impls' lifetimes in it makes the compiler fail to prove the calling futures `Send`.
pub(crate) trait Retryable<T> {
    /// Starts the next attempt. The attempt may borrow the operation (the state its attempts
    /// share); it is boxed anyway, as every [`Bucket`](crate::Bucket) method's future is.
    fn start(&mut self) -> BoxFuture<'_, Result<T>>;

    /// The error the caller sees once no attempt follows. `ambiguous`: some attempt failed in
    /// a way that may have applied it ([`KvError::may_have_applied`]).
    fn final_error(&self, err: KvError, _ambiguous: bool) -> KvError {
        err
    }
}

/// A provider call started anew for each attempt; its final error is the last attempt's, except
/// for a write after an attempt that may have applied it.
pub(crate) struct EachTime<'a, F> {
    each: F,
    write: bool,
    _borrow: PhantomData<&'a ()>,
}

impl<'a, F> EachTime<'a, F> {
    /// A read: its last error is its final error.
    pub(crate) fn read(each: F) -> Self {
        EachTime {
            each,
            write: false,
            _borrow: PhantomData,
        }
    }

    /// A plain write (`set`, `delete`, a batch part): when an earlier attempt may have applied
    /// it, a final error that looks certain (`throttled`) becomes outcome unknown, or the
    /// caller would take a write that happened for one that did not.
    pub(crate) fn write(each: F) -> Self {
        EachTime {
            each,
            write: true,
            _borrow: PhantomData,
        }
    }
}

impl<'a, F, T> Retryable<T> for EachTime<'a, F>
where
    F: FnMut() -> BoxFuture<'a, Result<T>>,
{
    fn start(&mut self) -> BoxFuture<'_, Result<T>> {
        (self.each)()
    }

    fn final_error(&self, err: KvError, ambiguous: bool) -> KvError {
        // The last attempt's own class stays when it already says the write may have
        // applied (`timeout` stays `timeout`).
        if self.write && ambiguous && !err.may_have_applied() {
            final_error_of_write(err, true)
        } else {
            err
        }
    }
}

/// An increment, exactly once across its attempts: each gets the same [`Attempt`].
pub(crate) struct Increment<'a> {
    pub(crate) bucket: &'a dyn Bucket,
    pub(crate) key: &'a str,
    pub(crate) delta: i64,
    pub(crate) range: CounterRange,
    pub(crate) attempt: Attempt,
}

impl Retryable<i64> for Increment<'_> {
    fn start(&mut self) -> BoxFuture<'_, Result<i64>> {
        self.bucket
            .increment(self.key, self.delta, self.range, &mut self.attempt)
    }

    fn final_error(&self, err: KvError, ambiguous: bool) -> KvError {
        final_error_of_attempts(&self.attempt, err, ambiguous)
    }
}

/// A swap, exactly once across its attempts: each gets the same [`Attempt`].
pub(crate) struct Swap<'a> {
    pub(crate) bucket: &'a dyn Bucket,
    pub(crate) key: &'a str,
    pub(crate) expected: &'a Version,
    pub(crate) value: Bytes,
    pub(crate) attempt: Attempt,
}

impl Retryable<SwapOutcome> for Swap<'_> {
    fn start(&mut self) -> BoxFuture<'_, Result<SwapOutcome>> {
        self.bucket.swap(
            self.key,
            self.expected,
            self.value.clone(),
            &mut self.attempt,
        )
    }

    fn final_error(&self, err: KvError, ambiguous: bool) -> KvError {
        final_error_of_attempts(&self.attempt, err, ambiguous)
    }
}

/// The final error of an increment's or swap's attempts: a provider that left an attempt
/// unresolved (a read-modify-write whose conditional write may have applied) says so through
/// the [`Attempt`], whatever error came last.
fn final_error_of_attempts(attempt: &Attempt, err: KvError, ambiguous: bool) -> KvError {
    let unresolved = attempt.attempted_base().is_some();
    final_error_of_write(err, ambiguous || unresolved)
}

/// The first attempt, polled once before any clock is read or timer armed.
enum First<T> {
    /// It finished at the first poll.
    Ready(Result<T>),
    /// It had to wait: its outcome (`None` if it timed out) and the call's deadline.
    Waited(Option<Result<T>>, Instant),
}

/// How a run reports its end: to the observer, from `started`, or, for a part of an
/// operation, as attempts added to the operation's count.
struct Ended<'a> {
    started: Option<std::time::Instant>,
    part: Option<&'a Parts>,
}

/// The provider calls of one operation made in parts (a batch's parts, a `get-many`'s
/// rounds) and their attempts, reported once for the whole operation.
#[derive(Debug, Default)]
pub(crate) struct Parts {
    calls: AtomicU32,
    attempts: AtomicU32,
}

impl Parts {
    /// One more call, which took `attempts` attempts.
    pub(crate) fn add(&self, attempts: u32) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.attempts.fetch_add(attempts, Ordering::Relaxed);
    }

    /// Calls and attempts so far.
    pub(crate) fn counts(&self) -> (u32, u32) {
        (
            self.calls.load(Ordering::Relaxed),
            self.attempts.load(Ordering::Relaxed),
        )
    }
}

/// Runs provider calls under the time limit, retrying transient errors.
#[derive(Debug, Clone)]
pub(crate) struct Retry {
    policy: RetryPolicy,
    timeout: Duration,
    log: CallLog,
}

impl Retry {
    pub(crate) fn new(policy: RetryPolicy, timeout: Duration, log: CallLog) -> Retry {
        Retry {
            policy,
            timeout,
            log,
        }
    }

    /// Runs `call` to its final result.
    ///
    /// The first attempt is polled once before any clock is read or timer armed: a provider
    /// that answers without waiting costs neither. Waiting and retrying live in boxed futures
    /// of their own, so the happy path's future stays small.
    pub(crate) async fn run<T, R: Retryable<T>>(&self, op: &'static str, call: R) -> Result<T> {
        self.run_counted(op, call, None).await
    }

    /// [`Retry::run`] for one part of an operation (a batch's part, a `get-many` round): its
    /// attempts are added to `attempts`, and the caller reports the whole operation once.
    pub(crate) async fn run_part<T, R: Retryable<T>>(
        &self,
        op: &'static str,
        call: R,
        parts: &Parts,
    ) -> Result<T> {
        self.run_counted(op, call, Some(parts)).await
    }

    async fn run_counted<T, R: Retryable<T>>(
        &self,
        op: &'static str,
        mut call: R,
        part: Option<&Parts>,
    ) -> Result<T> {
        let started = match part {
            Some(_) => None,
            None => self.log.start(),
        };
        let ended = Ended { started, part };
        let first = {
            let mut attempt = call.start();
            match futures::poll!(attempt.as_mut()) {
                Poll::Ready(result) => First::Ready(result),
                Poll::Pending => {
                    let deadline = Instant::now() + self.timeout;
                    let waited = Box::pin(tokio::time::timeout_at(deadline, attempt)).await;
                    First::Waited(waited.ok(), deadline)
                }
            }
        };
        let (outcome, deadline) = match first {
            First::Ready(Ok(value)) => {
                self.ended(op, &ended, 1, None);
                return Ok(value);
            }
            First::Ready(Err(err)) if !err.is_transient() => {
                return Err(self.give_up(op, &ended, 1, &call, err, false));
            }
            First::Ready(result) => (Some(result), Instant::now() + self.timeout),
            First::Waited(outcome, deadline) => (outcome, deadline),
        };
        Box::pin(self.retry(op, &ended, &mut call, outcome, deadline)).await
    }

    /// An operation (or a part of one) ended after `attempts` attempts.
    #[inline]
    fn ended(&self, op: &'static str, ended: &Ended<'_>, attempts: u32, error: Option<&KvError>) {
        match ended.part {
            Some(parts) => parts.add(attempts),
            None => self.log.finish(op, ended.started, (1, attempts), error),
        }
    }

    /// [`Retry::run`] once the first attempt failed transiently, or had to wait.
    async fn retry<T, R: Retryable<T>>(
        &self,
        op: &'static str,
        ended: &Ended<'_>,
        call: &mut R,
        mut outcome: Option<Result<T>>,
        deadline: Instant,
    ) -> Result<T> {
        let attempts = self.policy.max_attempts.max(1);
        let mut attempt = 1;
        let mut ambiguous = false;
        let err = loop {
            let err = match outcome {
                Some(Ok(value)) => {
                    self.ended(op, ended, attempt, None);
                    return Ok(value);
                }
                Some(Err(err)) => err,
                None => {
                    break KvError::new(
                        ErrorKind::Timeout,
                        format!("{op} did not finish within {} ms", self.timeout.as_millis()),
                    );
                }
            };
            ambiguous |= err.may_have_applied();
            if !err.is_transient() || attempt >= attempts {
                break err;
            }
            let delay = self
                .policy
                .backoff()
                .delay(attempt)
                .max(err.retry_after().unwrap_or_default());
            if Instant::now() + delay >= deadline {
                break err;
            }
            self.log.retrying(op, attempt, &err);
            tokio::time::sleep(delay).await;
            attempt += 1;
            outcome = tokio::time::timeout_at(deadline, call.start()).await.ok();
        };
        Err(self.give_up(op, ended, attempt, call, err, ambiguous))
    }

    /// The final error of a call that made `attempts` attempts, logged.
    fn give_up<T, R: Retryable<T>>(
        &self,
        op: &'static str,
        ended: &Ended<'_>,
        attempts: u32,
        call: &R,
        err: KvError,
        ambiguous: bool,
    ) -> KvError {
        // The provider's own error is logged (its class and cause); the guest gets the final one.
        let err = err.with_transient(false);
        self.log.failed(op, attempts, &err);
        let err = call.final_error(err, ambiguous);
        self.ended(op, ended, attempts, Some(&err));
        err
    }

    /// The outcome of an operation an [`ImmediateBucket`](crate::ImmediateBucket) completed:
    /// final (with nothing to wait for, there is nothing to retry), and logged like any
    /// failure.
    pub(crate) fn settled<T>(
        &self,
        op: &'static str,
        started: Option<std::time::Instant>,
        result: Result<T>,
    ) -> Result<T> {
        let result = self.settled_part(op, result);
        self.log.finish(op, started, (1, 1), result.as_ref().err());
        result
    }

    /// [`Retry::settled`] for one part of an operation its caller reports once.
    pub(crate) fn settled_part<T>(&self, op: &'static str, result: Result<T>) -> Result<T> {
        result.map_err(|err| {
            let err = err.with_transient(false);
            self.log.failed(op, 1, &err);
            err
        })
    }

    /// The store's log and observer.
    pub(crate) fn log(&self) -> &CallLog {
        &self.log
    }
}

/// The final error of an increment or swap. If the last attempt, or any earlier one, failed
/// in a way that may have applied it ([`KvError::may_have_applied`]), the guest is told the
/// outcome is unknown rather than the last attempt's class: a `throttled` after a lost reply
/// would invite a retry that applies the call twice. The guest must read before retrying.
pub(crate) fn final_error_of_write(err: KvError, earlier_ambiguous: bool) -> KvError {
    if err.message().starts_with(OUTCOME_UNKNOWN) {
        return err;
    }
    if err.may_have_applied() {
        return KvError::new(
            ErrorKind::Unavailable,
            format!("{OUTCOME_UNKNOWN} (it may have been applied): {err}"),
        )
        .with_transient(false)
        .with_source(err);
    }
    if earlier_ambiguous {
        return KvError::new(
            ErrorKind::Unavailable,
            format!(
                "{OUTCOME_UNKNOWN} (an earlier attempt may have been applied; the last one \
                 failed with {err})"
            ),
        )
        .with_transient(false)
        .with_source(err);
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_may_have_applied_ends_as_outcome_unknown() {
        let throttled = || KvError::new(ErrorKind::Throttled, "429");
        assert_eq!(
            final_error_of_write(throttled(), false).kind(),
            ErrorKind::Throttled
        );
        let err = final_error_of_write(throttled(), true);
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.message().starts_with(OUTCOME_UNKNOWN), "{err}");
        let err = final_error_of_write(KvError::unavailable("reset"), false);
        assert!(err.message().starts_with(OUTCOME_UNKNOWN), "{err}");
        assert!(!err.is_transient());
        // Already unknown: not wrapped twice.
        let again = final_error_of_write(err, true);
        assert!(!again.message()[OUTCOME_UNKNOWN.len()..].contains(OUTCOME_UNKNOWN));
    }
}
