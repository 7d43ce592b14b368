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

/// Path of the handler with one route per attack on its host (the hostile-guest suite).
pub const HOSTILE_FIXTURE: &str = env!("KV_GUEST_HOSTILE_FIXTURE");

/// Path of the benchmark command that times keyvalue operations from inside a component
/// (0.2.0-draft, opens `""`; runs on wasi-kv and on `wasmtime run -S keyvalue`).
pub const BENCH_GUEST: &str = env!("KV_GUEST_KV_BENCH_GUEST");

/// Path of the benchmark command that times `cas.new` plus `swap` (0.2.0-draft2, opens `""`;
/// wasi-kv only: wasmtime's `-S keyvalue` has no CAS).
pub const BENCH_GUEST_CAS: &str = env!("KV_GUEST_KV_BENCH_GUEST_CAS");

/// Path of the benchmark HTTP handler: `GET`/`PUT /kv/{key}`, `POST /counter/{key}`
/// (0.2.0-draft, opens `""`; runs on `wasi-kv serve` and on `wasmtime serve -S keyvalue`).
pub const BENCH_HANDLER: &str = env!("KV_GUEST_KV_BENCH_HANDLER");

/// Path of the command that spins, allocates or opens stores without end (`run`'s limits).
pub const HOSTILE_COMMAND: &str = env!("KV_GUEST_HOSTILE_COMMAND");

/// Interop fixtures: components built the way other runtimes' users build them. Each reads
/// `greeting` and `missing` with one `get-many` and counts its runs.
/// A command built against Spin's draft2 WIT (opens `default`).
pub const INTEROP_SPIN_COMMAND: &str = env!("KV_GUEST_INTEROP_SPIN_COMMAND");
/// An HTTP handler built against Spin's draft2 WIT (opens `default`).
pub const INTEROP_SPIN_HANDLER: &str = env!("KV_GUEST_INTEROP_SPIN_HANDLER");
/// A command written for wasmtime's `0.2.0-draft` (opens `""`).
pub const INTEROP_DRAFT_COMMAND: &str = env!("KV_GUEST_INTEROP_DRAFT_COMMAND");
/// An HTTP handler written for wasmtime's `0.2.0-draft` (opens `""`).
pub const INTEROP_DRAFT_HANDLER: &str = env!("KV_GUEST_INTEROP_DRAFT_HANDLER");

/// The suite as a `wasi:cli` command (`kv-conformance/portable`), for any host that links
/// `wasi:keyvalue@0.2.0-draft2`.
pub const PORTABLE_SUITE: &str = env!("KV_GUEST_KV_CONFORMANCE_PORTABLE");

/// The cases `wasi:keyvalue@0.2.0-draft` can express, as a `wasi:cli` command importing
/// nothing else (`kv-conformance/portable-draft`), for hosts that link only that version.
pub const PORTABLE_DRAFT_SUITE: &str = env!("KV_GUEST_KV_CONFORMANCE_PORTABLE_DRAFT");

/// The portable suite for hosts that link only `wasi:keyvalue@0.2.0-draft2` with Spin's
/// `get-many` shape (`kv-conformance/portable-spin`): no TTL or `0.2.0-draft` cases.
pub const PORTABLE_SPIN_SUITE: &str = env!("KV_GUEST_KV_CONFORMANCE_PORTABLE_SPIN");

/// An HTTP handler built against WASI 0.2.0 (`wasi:http`, `wasi:cli`), older than the 0.2.12
/// the host links (`kv-conformance/compat-fixture`).
pub const COMPAT_FIXTURE: &str = env!("KV_GUEST_COMPAT_FIXTURE");

/// The wasmtime version the host is built with.
pub const WASMTIME_VERSION: &str = env!("KV_WASMTIME_VERSION");
