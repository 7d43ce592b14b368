//! Paths of the wasm32-wasip2 components other crates' tests and benchmarks run, built by
//! `build.rs` (wasmtime's `test-programs-artifacts` pattern). A dev-dependency only: nothing a
//! user runs depends on it.
//!
//! `build.rs` holds the one list of fixtures; each becomes a `pub const NAME: &str` (the path
//! of its `.wasm`) here.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
