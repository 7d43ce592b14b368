//! What a provider can do, stated up front (like OpenDAL's `Capability`): the host enforces
//! the value limit and refuses TTL and CAS calls a provider cannot serve, and the conformance
//! runner skips the cases that need them, with the reason, instead of failing them.

/// The features and limits of one provider (and backend flavour). Every field is read by the
/// host ([`crate::KvStore`]) or the conformance runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// `set-with-ttl` is supported and expired keys read as missing.
    pub ttl: bool,
    /// Compare-and-swap (`cas::new` / `swap`) is supported.
    pub cas: bool,
    /// A listing may return a key more than once across pages (Redis SCAN).
    pub list_may_repeat: bool,
    /// The largest value, in bytes, the provider stores.
    pub max_value_bytes: usize,
    /// Entries per provider call of `set-many`: the host splits a larger batch into calls of
    /// this many, in order, each with its own time limit and retries, so a batch's deadline
    /// grows with the backend requests it needs. About one round of the provider's requests.
    pub set_many_part: usize,
    /// The same for `delete-many`.
    pub delete_many_part: usize,
    /// Whether buckets report their changes ([`crate::provider::Bucket::change_feed`]), and
    /// what the feed guarantees (docs/watch.md); `None`: `wasi-kv watch` refuses the store.
    pub watch: Option<crate::watch::WatchSupport>,
}

/// [`Capabilities::set_many_part`] and [`Capabilities::delete_many_part`] by default: one
/// round of DynamoDB's batch writes (25 per request, 8 in flight), and 13 rounds of single
/// requests (16 in flight) on a provider without native batches.
pub const DEFAULT_BATCH_PART: usize = 200;

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            ttl: false,
            cas: false,
            list_may_repeat: false,
            max_value_bytes: 256 * 1024,
            set_many_part: DEFAULT_BATCH_PART,
            delete_many_part: DEFAULT_BATCH_PART,
            watch: None,
        }
    }
}
