//! The guest components built by `build.rs`.

/// The conformance suite component.
pub const CONFORMANCE_GUEST: &[u8] = include_bytes!(env!("KV_GUEST_KV_CONFORMANCE_GUEST"));

/// Path of the `examples/counter` command component (for tests).
pub const COUNTER_EXAMPLE: &str = env!("KV_GUEST_COUNTER");

/// The wasmtime version the host is built with.
pub const WASMTIME_VERSION: &str = env!("KV_WASMTIME_VERSION");
