//! Test support shared by every crate's tests (docs/architecture.md): local emulators started
//! and stopped by PID on loopback, the fault proxy, and helpers for provider test binaries.
//! A dev-dependency everywhere except `wasi-kv conformance --emulator`/`--faults`, which use the
//! emulators and the fault proxy.

use std::sync::OnceLock;

use tokio::runtime::Runtime;

pub mod emulator;
pub mod faults;
pub mod provider_tests;

/// The shared tokio runtime of a harness process.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("failed to start the tokio runtime")
    })
}

/// Switches off the cloud SDKs' calls to metadata services (Cosmos DB's IMDS probe; AWS's
/// IMDS credential lookup) for this process. Call it first thing in a test `main`, before any
/// thread starts: tests talk to 127.0.0.1 only.
pub fn stay_on_loopback() {
    for (name, value) in [
        ("COSMOS_DISABLE_IMDS", "1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ] {
        if std::env::var_os(name).is_none() {
            // SAFETY: called at the start of `main`, while the process is single-threaded.
            unsafe { std::env::set_var(name, value) };
        }
    }
}

/// Whether a test that drives `tool` (a program, not a backend: `prometheus`, `chromium`) must
/// run: the program is installed, or `KV_REQUIRE_TOOLS` names it (then its absence fails the
/// test instead of skipping it).
pub fn tool_required_or_installed(tool: &str) -> bool {
    emulator::find_program(tool).is_some()
        || std::env::var("KV_REQUIRE_TOOLS")
            .unwrap_or_default()
            .split(',')
            .any(|name| name.trim() == tool)
}

/// The names listed in `KV_REQUIRE`.
pub fn required_targets() -> Vec<String> {
    std::env::var("KV_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect()
}
