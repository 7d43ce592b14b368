//! The wasi-kv conformance suite: every case of the contract (docs/semantics.md), written once against
//! `wasi:keyvalue` and run unchanged against every provider by the host-side runner.

/// `mod bindings` for one conformance world, with the given `wasi:keyvalue@0.2.0-draft2` WIT.
macro_rules! suite_bindings {
    ($draft2:tt, $world:tt) => {
        mod bindings {
            wit_bindgen::generate!({
                path: [
                    $draft2,
                    "../../wit/keyvalue-draft",
                    "../../wit/ttl",
                    "../../wit/host",
                    "../../wit/conformance",
                ],
                world: $world,
                generate_all,
            });
        }
    };
}

// The tagged draft2 text.
#[cfg(not(any(feature = "spin-batch", feature = "draft2-only")))]
suite_bindings!("../../wit/keyvalue", "wasi-kv:conformance/guest@0.1.0");

// Spin's draft2 WIT: `get-many` returns every key with an optional value.
#[cfg(all(feature = "spin-batch", not(feature = "draft2-only")))]
suite_bindings!("../../wit/keyvalue-spin", "wasi-kv:conformance/guest@0.1.0");

// Spin's draft2 WIT and nothing else: the world a host that links only draft2 serves.
#[cfg(feature = "draft2-only")]
suite_bindings!(
    "../../wit/keyvalue-spin",
    "wasi-kv:conformance/guest-draft2-only@0.1.0"
);

mod cases;
mod check;
#[cfg(feature = "portable")]
mod portable;

/// The portable build is a `wasi:cli` command: `main` runs the suite against the stores named
/// on its command line.
#[cfg(feature = "portable")]
fn main() {
    std::process::exit(portable::main());
}

use bindings::exports::wasi_kv::conformance::suite::{self, CaseInfo, Phase, Profile, Target};

struct Suite;

impl suite::Guest for Suite {
    fn list_cases() -> Vec<CaseInfo> {
        cases::all()
            .map(|case| CaseInfo {
                name: case.name.to_string(),
                rules: case.rules.iter().map(|rule| rule.to_string()).collect(),
                summary: case.summary.to_string(),
                needs: case.needs.to_vec(),
                workers: case.workers,
            })
            .collect()
    }

    fn run_case(
        name: String,
        target: Target,
        profile: Profile,
        phase: Phase,
    ) -> Result<(), String> {
        let case = cases::all()
            .find(|case| case.name == name)
            .ok_or_else(|| format!("no case named {name:?}"))?;
        let ctx = check::Ctx { target, profile };
        (case.run)(&ctx, phase)
    }
}

bindings::export!(Suite with_types_in bindings);
