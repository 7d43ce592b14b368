//! The guest components built by `build.rs`.

/// The conformance suite component.
pub const CONFORMANCE_GUEST: &[u8] = include_bytes!(env!("KV_GUEST_KV_CONFORMANCE_GUEST"));

/// The same suite built against Spin's draft2 WIT (the PR #55 `get-many` shape).
pub const CONFORMANCE_GUEST_SPIN: &[u8] =
    include_bytes!(env!("KV_GUEST_KV_CONFORMANCE_GUEST_SPIN"));

/// Path of the `examples/counter` command component (for tests).
pub const COUNTER_EXAMPLE: &str = env!("KV_GUEST_COUNTER");

/// Path of `examples/http-kv`, the REST API handler `wasi-kv serve` runs.
pub const HTTP_KV_EXAMPLE: &str = env!("KV_GUEST_HTTP_KV");

/// Path of the HTTP handler that sleeps, spins or allocates on request (serve's limit tests).
pub const HTTP_FIXTURE: &str = env!("KV_GUEST_HTTP_FIXTURE");

/// The wasmtime version the host is built with.
pub const WASMTIME_VERSION: &str = env!("KV_WASMTIME_VERSION");
