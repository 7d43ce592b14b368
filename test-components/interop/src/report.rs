//! What every interop fixture does: read `greeting` and `missing` with one `get-many`, count
//! its runs with `increment`, and describe the result in three lines. Built against Spin's
//! draft2 WIT (feature `spin`: opens `default`, the store Spin components use) or wasmtime's
//! `0.2.0-draft` (feature `draft`: opens `""`, the only store wasmtime knows).

#[cfg(feature = "draft")]
use crate::bindings::wasi::keyvalue0_2_0_draft::{atomics, batch, store};
#[cfg(feature = "spin")]
use crate::bindings::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};

const KEYS: [&str; 2] = ["greeting", "missing"];

fn shown(value: Option<Vec<u8>>) -> String {
    value.map_or_else(
        || "<none>".to_string(),
        |value| String::from_utf8_lossy(&value).into_owned(),
    )
}

/// `greeting: …`, `missing: <none>`, `runs: N`.
pub fn report() -> Result<String, String> {
    let keys: Vec<String> = KEYS.map(String::from).to_vec();
    #[cfg(feature = "spin")]
    let (bucket, values) = {
        let bucket = store::open("default").map_err(|err| format!("open: {err:?}"))?;
        // Spin's shape: every key, with an optional value.
        let entries =
            batch::get_many(&bucket, &keys).map_err(|err| format!("get-many: {err:?}"))?;
        let values: Vec<Option<Vec<u8>>> = entries.into_iter().map(|(_, value)| value).collect();
        (bucket, values)
    };
    #[cfg(feature = "draft")]
    let (bucket, values) = {
        let bucket = store::open("").map_err(|err| format!("open: {err:?}"))?;
        // The draft shape: an optional key-value pair per key.
        let entries =
            batch::get_many(&bucket, &keys).map_err(|err| format!("get-many: {err:?}"))?;
        let values: Vec<Option<Vec<u8>>> = entries
            .into_iter()
            .map(|entry| entry.map(|(_, value)| value))
            .collect();
        (bucket, values)
    };
    let runs =
        atomics::increment(&bucket, "runs", 1).map_err(|err| format!("increment: {err:?}"))?;
    let mut text = String::new();
    for (key, value) in KEYS.iter().zip(values) {
        text.push_str(&format!("{key}: {}\n", shown(value)));
    }
    text.push_str(&format!("runs: {runs}\n"));
    Ok(text)
}
