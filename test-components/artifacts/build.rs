//! The one list of test components: each entry is built (kv-guest-build) and exposed as a
//! `pub const` holding its path.

use std::fmt::Write as _;
use std::path::PathBuf;

use kv_guest_build::Guest;

/// (constant, package, artifact, what it is).
const COMPONENTS: &[(&str, &str, &str, &str)] = &[
    (
        "COUNTER_EXAMPLE",
        "counter",
        "counter",
        "`examples/counter`: a command that counts its runs in a store.",
    ),
    (
        "HTTP_KV_EXAMPLE",
        "http-kv",
        "http_kv",
        "`examples/http-kv`: the REST API handler `wasi-kv serve` runs.",
    ),
    (
        "WATCH_AUDIT_EXAMPLE",
        "watch-audit",
        "watch_audit",
        "`examples/watch-audit`: an audit log of a store's changes, for `wasi-kv watch`.",
    ),
    (
        "HTTP_FIXTURE",
        "http-fixture",
        "http_fixture",
        "An HTTP handler that sleeps, spins or allocates on request (serve's limit tests).",
    ),
    (
        "HOSTILE_FIXTURE",
        "hostile-fixture",
        "hostile_fixture",
        "A handler with one route per attack on its host (the hostile-guest suite).",
    ),
    (
        "COMPAT_FIXTURE",
        "compat-fixture",
        "compat_fixture",
        "An HTTP handler built against WASI 0.2.0, older than the 0.2 patch the host links.",
    ),
    (
        "BENCH_HANDLER",
        "kv-bench-handler",
        "kv_bench_handler",
        "The benchmark handler: `GET`/`PUT /kv/{key}`, `POST /counter/{key}` (0.2.0-draft, \
         opens `\"\"`; runs on `wasi-kv serve` and `wasmtime serve -S keyvalue`).",
    ),
    (
        "HOSTILE_COMMAND",
        "kv-test-commands",
        "hostile_command",
        "A command that spins, allocates or opens stores without end (`run`'s limits).",
    ),
    (
        "BENCH_GUEST",
        "kv-test-commands",
        "kv_bench_guest",
        "The benchmark command timing keyvalue operations from inside a component \
         (0.2.0-draft, opens `\"\"`; runs on wasi-kv and `wasmtime run -S keyvalue`).",
    ),
    (
        "BENCH_GUEST_CAS",
        "kv-test-commands",
        "kv_bench_guest_cas",
        "The benchmark command timing `cas.new` plus `swap` (0.2.0-draft2; wasi-kv only).",
    ),
    (
        "WATCH_RECORDER",
        "kv-watch-recorder",
        "kv_watch_recorder",
        "A watch-service component recording each change into the `audit` store (`seq`, \
         `event/{seq}`), trapping on values `trap-once`/`trap-always`, spinning on `spin`.",
    ),
    (
        "WATCH_RECORDER_DRAFT",
        "kv-watch-recorder-draft",
        "kv_watch_recorder_draft",
        "The recorder built against `wasi:keyvalue@0.2.0-draft` (its `watcher` export).",
    ),
    (
        "INTEROP_SPIN_COMMAND",
        "interop-spin-command",
        "interop_spin_command",
        "Interop: a command built against Spin's draft2 WIT (opens `default`).",
    ),
    (
        "P3_COMMAND",
        "kv-p3-command",
        "kv_p3_command",
        "A WASIp3 command (`wasi:cli/run@0.3.0`, async) using wasi:keyvalue: every operation, \
         or `spin`, `grow MIB`, `open N` for `run`'s limits.",
    ),
    (
        "P3_HANDLER",
        "kv-p3-handler",
        "kv_p3_handler",
        "A WASIp3 HTTP handler (`wasi:http/handler@0.3.0`, async) using wasi:keyvalue: \
         `/kv/{key}`, `/keys`, `/incr/{key}`, `/many`, `/instance`, `/stream`, and `/spin`, \
         `/wait`, `/grow`, `/open` for serve's limits.",
    ),
    (
        "P3_BENCH_HANDLER",
        "kv-p3-bench-handler",
        "kv_p3_bench_handler",
        "The WASIp3 benchmark handler: `GET`/`PUT /kv/{key}`, `POST /counter/{key}` behind \
         `wasi:http/handler@0.3.0` (0.2.0-draft keyvalue, opens `\"\"`; runs on `wasi-kv serve` \
         and `wasmtime serve -S p3 -S keyvalue`).",
    ),
    (
        "INTEROP_SPIN_SDK6_COMMAND",
        "interop-spin-sdk6-command",
        "interop_spin_sdk6_command",
        "Interop: a WASIp3 command using spin-sdk 6.0.0's key-value API (`spin:key-value@3.0.0`): \
         every operation, or `open LABEL`, `set LABEL`, `open-all`.",
    ),
    (
        "INTEROP_SPIN_SDK_HANDLER",
        "interop-spin-sdk-handler",
        "interop_spin_sdk_handler",
        "Interop: an HTTP handler built with Spin's Rust SDK 5.2.0 (`fermyon:spin/key-value@2.0.0`): \
         `GET`/`PUT`/`DELETE`/`HEAD /kv/{key}`, `GET /keys`, `?store=LABEL`.",
    ),
    (
        "INTEROP_SPIN_SDK7_HANDLER",
        "interop-spin-sdk7-handler",
        "interop_spin_sdk7_handler",
        "Interop: a WASIp3 HTTP handler built with the current Spin SDK, spin-sdk 7.0.0 \
         (`#[http_service]`; `spin:key-value@3.0.0`, `wasi:http@0.3.0`): the routes of the 5.2.0 \
         handler.",
    ),
    (
        "INTEROP_SPIN_HANDLER",
        "interop-spin-handler",
        "interop_spin_handler",
        "Interop: an HTTP handler built against Spin's draft2 WIT (opens `default`).",
    ),
    (
        "INTEROP_DRAFT_COMMAND",
        "interop-draft-command",
        "interop_draft_command",
        "Interop: a command written for wasmtime's `0.2.0-draft` (opens `\"\"`).",
    ),
    (
        "INTEROP_DRAFT_HANDLER",
        "interop-draft-handler",
        "interop_draft_handler",
        "Interop: an HTTP handler written for wasmtime's `0.2.0-draft` (opens `\"\"`).",
    ),
    (
        "PORTABLE_SUITE",
        "kv-conformance-portable",
        "kv-conformance-portable",
        "The suite as a `wasi:cli` command for any host linking `wasi:keyvalue@0.2.0-draft2`.",
    ),
    (
        "PORTABLE_DRAFT_SUITE",
        "kv-conformance-portable-draft",
        "kv-conformance-portable-draft",
        "The cases `wasi:keyvalue@0.2.0-draft` can express, as a command importing nothing else.",
    ),
    (
        "PORTABLE_SPIN_SUITE",
        "kv-conformance-portable-spin",
        "kv-conformance-portable-spin",
        "The portable suite for hosts linking only draft2 with Spin's `get-many` shape.",
    ),
];

fn main() {
    let guests: Vec<Guest> = COMPONENTS
        .iter()
        .map(|&(_, package, artifact, _)| Guest { package, artifact })
        .collect();
    let paths = kv_guest_build::build(
        &guests,
        &[
            "wit",
            "test-components",
            "examples",
            "kv-conformance/guest",
            "kv-conformance/portable",
            "kv-conformance/portable-draft",
            "kv-conformance/portable-spin",
            "kv-conformance/guest-watch",
            "kv-conformance/guest-watch-draft",
        ],
    );
    let mut code = String::new();
    for ((name, _, _, doc), path) in COMPONENTS.iter().zip(paths) {
        let _ = writeln!(
            code,
            "#[doc = {doc:?}]\npub const {name}: &str = {:?};",
            path.display().to_string()
        );
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("artifacts.rs"), code).expect("writing OUT_DIR/artifacts.rs");
}
