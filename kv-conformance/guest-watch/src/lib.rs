//! A `watch-service` component (`wasi:keyvalue/watcher@0.2.0-draft2`, or `@0.2.0-draft` with
//! the `draft` feature) that records each change
//! it is given into the store `audit`, so a test can check what was delivered, in what order:
//!
//! - `seq` counts deliveries; `event/{seq:08}` holds `set KEY VALUE` (the value as lossy
//!   UTF-8; `value/{seq:08}` holds its bytes) or `delete KEY`;
//! - a value starting with `trap-once` traps on its first delivery (counted in
//!   `attempts/KEY`) and is recorded on the next;
//! - a value starting with `trap-always` always traps (it must reach the dead letters);
//! - a value starting with `spin` computes forever (the per-call time limit must stop it).
//!
//! Every event also reads the key back through the `bucket` handle it was given: a handle that
//! is not the watched store's fails the delivery.

#[cfg(not(feature = "draft"))]
mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/keyvalue"],
        world: "wasi:keyvalue/watch-service@0.2.0-draft2",
        generate_all,
    });
}

/// The same recorder against `0.2.0-draft` (the `recorder-draft` crate).
#[cfg(feature = "draft")]
mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/keyvalue-draft"],
        world: "wasi:keyvalue/watch-service@0.2.0-draft",
        generate_all,
    });
}

use bindings::exports::wasi::keyvalue::watcher::Guest;
use bindings::wasi::keyvalue::atomics;
use bindings::wasi::keyvalue::store::{self, Bucket};

struct Recorder;

fn audit() -> Bucket {
    store::open("audit").unwrap_or_else(|err| panic!("cannot open the audit store: {err:?}"))
}

/// Appends `event` to the audit log, with a set's value as given (`value/{seq:08}`: the
/// event's text shows it as lossy UTF-8).
fn record(event: String, value: Option<&[u8]>) {
    let audit = audit();
    let seq = atomics::increment(&audit, "seq", 1)
        .unwrap_or_else(|err| panic!("cannot count the event: {err:?}"));
    if let Some(value) = value {
        audit
            .set(&format!("value/{seq:08}"), value)
            .unwrap_or_else(|err| panic!("cannot record the value: {err:?}"));
    }
    audit
        .set(&format!("event/{seq:08}"), event.as_bytes())
        .unwrap_or_else(|err| panic!("cannot record the event: {err:?}"));
}

impl Guest for Recorder {
    fn on_set(bucket: Bucket, key: String, value: Vec<u8>) {
        if let Err(err) = bucket.exists(&key) {
            panic!("the bucket handle does not work: {err:?}");
        }
        if value.starts_with(b"trap-once") {
            let attempts = atomics::increment(&audit(), &format!("attempts/{key}"), 1)
                .unwrap_or_else(|err| panic!("cannot count the attempt: {err:?}"));
            if attempts == 1 {
                panic!("trapping on the first delivery of {key}");
            }
        }
        if value.starts_with(b"trap-always") {
            panic!("trapping on every delivery of {key}");
        }
        if value.starts_with(b"spin") {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        record(
            format!("set {key} {}", String::from_utf8_lossy(&value)),
            Some(&value),
        );
    }

    fn on_delete(bucket: Bucket, key: String) {
        if let Err(err) = bucket.exists(&key) {
            panic!("the bucket handle does not work: {err:?}");
        }
        record(format!("delete {key}"), None);
    }
}

bindings::export!(Recorder with_types_in bindings);
