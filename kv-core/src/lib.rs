//! The core of wasi-kv: the contract every key-value provider keeps, the in-memory reference
//! provider and store configuration. The wasmtime bindings for `wasi:keyvalue` are `kv-host`.
//!
//! - [`Provider`] / [`Bucket`]: the async trait a backing store implements.
//! - [`KvStore`]: a checked handle that enforces the contract's limits, access modes,
//!   timeouts and retries in front of any provider.
//! - [`layer`]: a bucket wrapped in another ([`Layer`], [`LayeredBucket`]), for fault
//!   injection and instrumentation in tests.
//! - [`KvConfig`] / [`ProviderRegistry`] / [`Stores`]: from configuration to open stores.

#![deny(missing_docs)]

pub mod backoff;
pub mod capabilities;
pub mod clock;
pub mod combine;
pub mod config;
pub mod counter;
pub mod cursor;
pub mod error;
pub mod layer;
pub mod limits;
mod logging;
pub mod memory;
pub mod naming;
pub mod observe;
pub mod provider;
mod retry;
pub mod rmw;
pub mod secret;
pub mod store;
pub mod stores;
pub mod watch;

pub use backoff::Backoff;
pub use capabilities::Capabilities;
pub use config::{ConfigError, KvConfig, StoreSpec};
pub use counter::CounterRange;
pub use error::{ErrorKind, KvError, Result};
pub use layer::{Layer, LayeredBucket, LayeredProvider};
pub use limits::{Limits, RetryPolicy};
pub use memory::MemoryProvider;
pub use provider::{
    Attempt, Bucket, Bytes, ImmediateBucket, KeyPage, Provider, RequestId, StoredValue,
    SwapOutcome, Version, Versioned,
};
pub use secret::{ConnectionKey, Secret};
pub use store::{Access, CursorSecret, KvStore};
pub use stores::{MemoryFactory, ProviderFactory, ProviderRegistry, Stores, StoresBuilder};

/// The WIT version of the keyvalue interfaces this crate implements first.
pub const WIT_VERSION: &str = "wasi:keyvalue@0.2.0-draft2";
