//! The wasi-kv conformance runner (docs/architecture.md).
//!
//! The cases live in the guest component (`guest/`, built for wasm32-wasip2 by `build.rs`); this
//! crate runs them against any [`kv_core::Provider`], gives every case a fresh namespace, maps
//! capabilities and known divergences to "ignored" with a reason, and writes reports. The watch
//! cases ([`watch`], rule S13) are driven from here instead: the runner writes, and a
//! `watch-service` component records what it is delivered. Emulators,
//! the fault proxy and other test support live in `kv-testkit`; other crates' test components in
//! `test-components/`.

pub mod evidence;
pub mod guests;
pub mod harness;
pub mod histories;
pub mod profile;
pub mod report;
pub mod runner;
pub mod watch;

pub use profile::Profile;
pub use report::{CaseResult, Outcome, Report};
pub use runner::{CaseInfo, Suite, Target};
pub use watch::WatchSuite;
