//! Wall-clock time as providers store it: expiry instants in Unix milliseconds or seconds.
//!
//! TTL expiry is stored as an absolute time in the backend (every host replica must agree on
//! it), so it comes from the system clock, not from a monotonic one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Now, in seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// The instant, in Unix milliseconds, at which something written now with `ttl` expires.
pub fn expires_at_ms(ttl: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds on this process's monotonic clock. The origin is arbitrary, and far enough
/// from 0 that an age can be subtracted.
fn monotonic_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    const OFFSET_MS: u64 = 1 << 40;
    let elapsed = ORIGIN.get_or_init(std::time::Instant::now).elapsed();
    OFFSET_MS.saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// A moment inside this process as both clocks saw it, for ages that must never read too
/// young (a CAS handle's, an unresolved write's): the backends keep removing items on their own
/// clocks meanwhile. The monotonic clock does not step back with the wall clock; the wall
/// clock counts time the machine spent suspended, which the monotonic one does not (Linux
/// `CLOCK_MONOTONIC`, macOS). An age is the larger of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    monotonic_ms: u64,
    wall_ms: u64,
}

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        Stamp {
            monotonic_ms: monotonic_ms(),
            wall_ms: now_ms(),
        }
    }

    /// A moment `ms` ago on both clocks.
    pub fn ago(ms: u64) -> Stamp {
        let now = Stamp::now();
        Stamp {
            monotonic_ms: now.monotonic_ms.saturating_sub(ms),
            wall_ms: now.wall_ms.saturating_sub(ms),
        }
    }

    /// Milliseconds since this moment: the larger of what the two clocks say.
    pub fn age_ms(self) -> u64 {
        let now = Stamp::now();
        (now.monotonic_ms.saturating_sub(self.monotonic_ms))
            .max(now.wall_ms.saturating_sub(self.wall_ms))
    }

    /// `MONOTONIC.WALL`, as a CAS handle's version carries it.
    pub fn encode(self) -> String {
        format!("{}.{}", self.monotonic_ms, self.wall_ms)
    }

    /// The inverse of [`Stamp::encode`].
    pub fn decode(text: &str) -> Option<Stamp> {
        let (monotonic, wall) = text.split_once('.')?;
        Some(Stamp {
            monotonic_ms: monotonic.parse().ok()?,
            wall_ms: wall.parse().ok()?,
        })
    }
}

/// Whether a value expiring at `expires_at_ms` (if ever) is still live.
pub fn is_live(expires_at_ms: Option<u64>, now_ms: u64) -> bool {
    expires_at_ms.is_none_or(|at| at > now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An age is the larger of the two clocks': a wall clock that stepped back does not make
    /// a moment younger, and one that ran on (a suspended machine) makes it older.
    #[test]
    fn ages_never_read_too_young() {
        let stamp = Stamp::ago(5_000);
        assert!(stamp.age_ms() >= 5_000);
        let wall_behind = Stamp {
            wall_ms: now_ms() + 60_000,
            ..Stamp::ago(5_000)
        };
        assert!(wall_behind.age_ms() >= 5_000, "the monotonic age stands");
        let suspended = Stamp {
            monotonic_ms: monotonic_ms(),
            wall_ms: now_ms() - 900_000,
        };
        assert!(suspended.age_ms() >= 900_000, "the wall clock's age stands");
        assert_eq!(Stamp::decode(&stamp.encode()), Some(stamp));
        assert_eq!(Stamp::decode("12"), None);
    }

    #[test]
    fn expiry_is_in_the_future_and_saturates() {
        let now = now_ms();
        let at = expires_at_ms(Duration::from_secs(1));
        assert!(at >= now + 1000 && at < now + 60_000);
        assert_eq!(expires_at_ms(Duration::MAX), u64::MAX);
        assert!(is_live(None, now));
        assert!(is_live(Some(now + 1), now));
        assert!(!is_live(Some(now), now));
    }
}
