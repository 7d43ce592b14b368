//! The one backoff of the workspace: capped exponential growth with full jitter.
//!
//! Used for retries of transient errors ([`crate::RetryPolicy`]), for batch entries a backend
//! left unprocessed, and for read-modify-write loops that lost a race. Full jitter (a uniform
//! delay between zero and the capped exponential) spreads contenders apart, which a
//! deterministic or clock-derived delay does not.

use std::time::Duration;

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first delay; doubled for each further one.
    pub initial: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// Retries after losing a compare-and-set race: short, so contenders interleave quickly.
    pub const CONTENTION: Backoff = Backoff {
        initial: Duration::from_millis(2),
        max: Duration::from_millis(50),
    };

    /// Backend-side pressure (unprocessed batch entries, throttling).
    pub const PRESSURE: Backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_secs(1),
    };

    /// The ceiling of delay number `retry` (1-based): `initial * 2^(retry-1)`, capped.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doubled = self
            .initial
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        doubled.min(self.max)
    }

    /// A delay for retry number `retry` (1-based): uniform between zero and [`Self::ceiling`].
    pub fn delay(&self, retry: u32) -> Duration {
        self.ceiling(retry).mul_f64(rand::random::<f64>())
    }

    /// Sleeps for [`Self::delay`].
    pub async fn wait(&self, retry: u32) {
        tokio::time::sleep(self.delay(retry)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_are_jittered() {
        let backoff = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
        };
        assert_eq!(backoff.ceiling(1), Duration::from_millis(10));
        assert_eq!(backoff.ceiling(2), Duration::from_millis(20));
        assert_eq!(backoff.ceiling(5), Duration::from_millis(100));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_millis(100));
        for retry in 1..40 {
            assert!(backoff.delay(retry) <= backoff.ceiling(retry));
        }
        // Jitter: 200 draws of one retry are not all the same delay.
        let draws: std::collections::HashSet<_> = (0..200).map(|_| backoff.delay(4)).collect();
        assert!(draws.len() > 1, "no jitter");
    }
}
