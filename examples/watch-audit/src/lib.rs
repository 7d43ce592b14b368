//! An audit log of a store's changes, for `wasi-kv watch` (docs/watch.md).
//!
//! For every change of a watched store it appends an entry to the store `audit`:
//! `log/000000000001` = `set greeting (5 bytes)` or `delete greeting`, numbered by the counter
//! `entries`. A change delivered twice (after a host crash: delivery is at least once) is
//! logged twice; the log never misses one.
//!
//! ```sh
//! wasi-kv watch --store data=sqlite:data.db --store audit=sqlite:audit.db \
//!     --store state=sqlite:audit.db?namespace=watch --state state --watch data watch_audit.wasm
//! ```

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/keyvalue"],
        world: "wasi:keyvalue/watch-service@0.2.0-draft2",
        generate_all,
    });
}

use bindings::exports::wasi::keyvalue::watcher::Guest;
use bindings::wasi::keyvalue::atomics;
use bindings::wasi::keyvalue::store::{self, Bucket, Error};

struct Audit;

impl Guest for Audit {
    fn on_set(_bucket: Bucket, key: String, value: Vec<u8>) {
        append(&format!("set {key} ({} bytes)", value.len()));
    }

    fn on_delete(_bucket: Bucket, key: String) {
        append(&format!("delete {key}"));
    }
}

/// Appends `entry` to the log. A store error traps, so the host delivers the change again
/// (and, if it keeps failing, keeps it in its dead letters) instead of the log missing it.
fn append(entry: &str) {
    if let Err(err) = try_append(entry) {
        panic!("cannot append to the audit log: {err:?}");
    }
}

fn try_append(entry: &str) -> Result<(), Error> {
    let audit = store::open("audit")?;
    let number = atomics::increment(&audit, "entries", 1)?;
    audit.set(&format!("log/{number:012}"), entry.as_bytes())
}

bindings::export!(Audit with_types_in bindings);
