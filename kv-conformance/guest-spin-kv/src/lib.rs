//! The conformance cases that apply to Spin's `fermyon:spin/key-value@2.0.0` (keys, values,
//! missing keys, listing, isolation, access and errors), run through that interface the way a
//! component built with spin-sdk 5.x calls it. Spin's interface has no increments, batches,
//! TTLs or compare-and-swap, so those rules are not checked here. Results are named
//! `spin-kv/<case>`.

mod bindings {
    wit_bindgen::generate!({
        path: [
            "../../wit/spin-kv",
            "../../wit/keyvalue",
            "../../wit/keyvalue-draft",
            "../../wit/ttl",
            "../../wit/host",
            "../../wit/conformance",
            "../../wit/conformance-spin-kv",
        ],
        world: "wasi-kv:conformance-spin-kv/guest@0.1.0",
        generate_all,
    });
}

use bindings::exports::wasi_kv::conformance::suite::{self, CaseInfo, Phase, Profile, Target};
use bindings::fermyon::spin::key_value::{Error, Store};

#[path = "cases.rs"]
mod cases;

use cases::CASES;

struct Suite;

impl suite::Guest for Suite {
    fn list_cases() -> Vec<CaseInfo> {
        CASES
            .iter()
            .map(|case| CaseInfo {
                name: case.name.to_string(),
                rules: case.rules.iter().map(|rule| rule.to_string()).collect(),
                summary: case.summary.to_string(),
                needs: Vec::new(),
                workers: 0,
            })
            .collect()
    }

    fn run_case(
        name: String,
        target: Target,
        profile: Profile,
        _phase: Phase,
    ) -> Result<(), String> {
        let case = CASES
            .iter()
            .find(|case| case.name == name)
            .ok_or_else(|| format!("no case named {name:?}"))?;
        (case.run)(&target, &profile)
    }
}

bindings::export!(Suite with_types_in bindings);
