//! The suite's guest components, built by `build.rs` and embedded in the runner.

/// The conformance suite component.
pub const CONFORMANCE_GUEST: &[u8] = include_bytes!(env!("KV_GUEST_KV_CONFORMANCE_GUEST"));

/// The same suite built against Spin's draft2 WIT (the PR #55 `get-many` shape).
pub const CONFORMANCE_GUEST_SPIN: &[u8] =
    include_bytes!(env!("KV_GUEST_KV_CONFORMANCE_GUEST_SPIN"));

/// The cases that apply to Spin's `fermyon:spin/key-value@2.0.0`, run through it.
pub const CONFORMANCE_GUEST_SPIN_KV: &[u8] =
    include_bytes!(env!("KV_GUEST_KV_CONFORMANCE_GUEST_SPIN_KV"));

/// The same cases through Spin 4's `spin:key-value@3.0.0` (async; a WASIp3 component).
pub const CONFORMANCE_GUEST_SPIN_KV_3: &[u8] =
    include_bytes!(env!("KV_GUEST_KV_CONFORMANCE_GUEST_SPIN_KV_3"));

/// The workload command of a history check across host processes (`kv_history_guest WORKLOAD
/// KEYS SEED HOST OPS MILLIS`): runs a `kv_check` workload against store `default` and prints
/// its progress log (`kv_check::History::from_progress_jsonl`) on stdout.
pub const HISTORY_GUEST: &[u8] = include_bytes!(env!("KV_GUEST_KV_HISTORY_GUEST"));

/// The watch cases' `watch-service` component (`wasi:keyvalue/watcher@0.2.0-draft2`): records
/// each change it is given into the store `audit` (`seq`, `event/{seq:08}`), and traps on the
/// values `trap-once…` (first delivery only) and `trap-always…`.
pub const WATCH_RECORDER: &[u8] = include_bytes!(env!("KV_GUEST_KV_WATCH_RECORDER"));

/// The same recorder built against `wasi:keyvalue@0.2.0-draft`.
pub const WATCH_RECORDER_DRAFT: &[u8] = include_bytes!(env!("KV_GUEST_KV_WATCH_RECORDER_DRAFT"));

/// The wasmtime version the host is built with.
pub const WASMTIME_VERSION: &str = env!("KV_WASMTIME_VERSION");
