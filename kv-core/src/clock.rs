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

/// Milliseconds on this process's monotonic clock, for ages measured inside one process (a CAS
/// handle's, an unresolved write's): a step of the wall clock neither ages nor rejuvenates
/// them. The origin is arbitrary, and far enough from 0 that an age can be subtracted.
pub fn monotonic_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    const OFFSET_MS: u64 = 1 << 40;
    let elapsed = ORIGIN.get_or_init(std::time::Instant::now).elapsed();
    OFFSET_MS.saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// Whether a value expiring at `expires_at_ms` (if ever) is still live.
pub fn is_live(expires_at_ms: Option<u64>, now_ms: u64) -> bool {
    expires_at_ms.is_none_or(|at| at > now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

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
