//! The suite's guest components, built by `build.rs` and embedded in the runner.

/// The conformance suite component.
pub const CONFORMANCE_GUEST: &[u8] = include_bytes!(env!("KV_GUEST_KV_CONFORMANCE_GUEST"));

/// The same suite built against Spin's draft2 WIT (the PR #55 `get-many` shape).
pub const CONFORMANCE_GUEST_SPIN: &[u8] =
    include_bytes!(env!("KV_GUEST_KV_CONFORMANCE_GUEST_SPIN"));

/// The wasmtime version the host is built with.
pub const WASMTIME_VERSION: &str = env!("KV_WASMTIME_VERSION");
