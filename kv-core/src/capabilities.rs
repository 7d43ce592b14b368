//! What a provider can do, stated up front (like OpenDAL's `Capability`), so the host can
//! enforce limits and the conformance runner can skip cases with a reason instead of failing.

use crate::limits::MAX_KEY_BYTES;

/// The features and limits of one provider (and backend flavour).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// `set-with-ttl` is supported and expired keys read as missing.
    pub ttl: bool,
    /// Compare-and-swap (`cas::new` / `swap`) is supported.
    pub cas: bool,
    /// A listing may return a key more than once across pages (Redis SCAN).
    pub list_may_repeat: bool,
    /// The largest key, in bytes, the provider accepts (at least [`MAX_KEY_BYTES`]).
    pub max_key_bytes: usize,
    /// The largest value, in bytes, the provider stores.
    pub max_value_bytes: usize,
    /// Entries per native batch read call (0 = no native batch read).
    pub native_batch_read: usize,
    /// Entries per native batch write call (0 = no native batch write).
    pub native_batch_write: usize,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            ttl: false,
            cas: false,
            list_may_repeat: false,
            max_key_bytes: MAX_KEY_BYTES,
            max_value_bytes: 256 * 1024,
            native_batch_read: 0,
            native_batch_write: 0,
        }
    }
}
