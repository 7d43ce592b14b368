//! The conformance cases of `guest-spin-kv` (keys, values, missing keys, listing, isolation,
//! access and errors), run through Spin 4's `spin:key-value@3.0.0`, the interface spin-sdk 6.x
//! imports: every call `async`, `get-keys` a `stream<string>` with a `future` for its error.
//! The cases are the same file; here each call is awaited to completion inside the async
//! `run-case`, so a case reads like its Spin 2 twin. Results are named `spin-kv-3/<case>`.

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/spin-kv-3", "../../wit/conformance-spin-kv-3"],
        world: "wasi-kv:conformance-spin-kv-3/guest@0.1.0",
        generate_all,
    });
}

use bindings::exports::wasi_kv::conformance_spin_kv_3::suite::{
    self, CaseInfo, Phase, Profile, Target,
};
use bindings::spin::key_value::key_value;

pub(crate) use key_value::Error;

#[path = "../../guest-spin-kv/src/cases.rs"]
mod cases;

use cases::CASES;

/// Spin 4's store with the calls of Spin 2's: each waits for its answer.
pub(crate) struct Store(key_value::Store);

impl Store {
    pub(crate) fn open(label: &str) -> Result<Store, Error> {
        wit_bindgen::block_on(key_value::Store::open(label.to_string())).map(Store)
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        wit_bindgen::block_on(self.0.get(key.to_string()))
    }

    pub(crate) fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        wit_bindgen::block_on(self.0.set(key.to_string(), value.to_vec()))
    }

    pub(crate) fn delete(&self, key: &str) -> Result<(), Error> {
        wit_bindgen::block_on(self.0.delete(key.to_string()))
    }

    pub(crate) fn exists(&self, key: &str) -> Result<bool, Error> {
        wit_bindgen::block_on(self.0.exists(key.to_string()))
    }

    /// Every key: the stream read to its end, then its `future`, whose error ends the stream
    /// early.
    pub(crate) fn get_keys(&self) -> Result<Vec<String>, Error> {
        wit_bindgen::block_on(async {
            let (keys, result) = self.0.get_keys().await;
            let keys = keys.collect().await;
            result.await?;
            Ok(keys)
        })
    }
}

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

    async fn run_case(
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
