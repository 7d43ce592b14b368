//! The conformance suite against every provider this workspace builds, one trial per
//! provider x case. Unreachable backends are ignored unless named in `KV_REQUIRE`.

use std::process::ExitCode;
use std::sync::Arc;

use kv_conformance::harness::{self, TargetSource};
use kv_conformance::{Profile, Target};
use kv_core::MemoryProvider;

fn main() -> ExitCode {
    harness::main(vec![TargetSource::new("memory", || async {
        Ok(Target::new(
            "memory",
            Arc::new(MemoryProvider::new()),
            Profile::memory(),
        ))
    })])
}
