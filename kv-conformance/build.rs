//! Builds the suite's guest components (the conformance cases, the same cases against Spin's
//! draft2 WIT, the cases that apply to Spin's own key-value interface (through Spin 2's and Spin 4's), the workload command of history checks across host processes, and the recorder the watch cases deliver to, in both WIT versions) for
//! wasm32-wasip2; the runner embeds them. Test fixtures are built by `test-components/artifacts`,
//! not here: `wasi-kv` users build only the suite.

use std::path::Path;

use kv_guest_build::Guest;

const GUESTS: &[Guest] = &[
    Guest {
        package: "kv-conformance-guest",
        artifact: "kv_conformance_guest",
    },
    Guest {
        package: "kv-conformance-guest-spin",
        artifact: "kv_conformance_guest_spin",
    },
    Guest {
        package: "kv-conformance-guest-spin-kv",
        artifact: "kv_conformance_guest_spin_kv",
    },
    Guest {
        package: "kv-conformance-guest-spin-kv-3",
        artifact: "kv_conformance_guest_spin_kv_3",
    },
    Guest {
        package: "kv-history-guest",
        artifact: "kv_history_guest",
    },
    Guest {
        package: "kv-watch-recorder",
        artifact: "kv_watch_recorder",
    },
    Guest {
        package: "kv-watch-recorder-draft",
        artifact: "kv_watch_recorder_draft",
    },
];

fn main() {
    let paths = kv_guest_build::build(
        GUESTS,
        &[
            "wit",
            "kv-conformance/guest",
            "kv-conformance/guest-spin",
            "kv-conformance/guest-spin-kv",
            "kv-conformance/guest-spin-kv-3",
            "kv-conformance/guest-history",
            "kv-conformance/guest-watch",
            "kv-conformance/guest-watch-draft",
            // The history guest runs kv-check's generator and writes its entries.
            "kv-check/src",
            "kv-check/Cargo.toml",
        ],
    );
    for (guest, path) in GUESTS.iter().zip(paths) {
        let var = format!("KV_GUEST_{}", guest.artifact.to_uppercase());
        println!("cargo:rustc-env={var}={}", path.display());
    }
    println!(
        "cargo:rustc-env=KV_WASMTIME_VERSION={}",
        wasmtime_version(&kv_guest_build::workspace_root())
    );
}

/// Records the locked wasmtime version for the evidence report.
fn wasmtime_version(workspace: &Path) -> String {
    let lock = std::fs::read_to_string(workspace.join("Cargo.lock")).unwrap_or_default();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasmtime\""
            && let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = "))
        {
            return version.trim_matches('"').to_string();
        }
    }
    "unknown".to_string()
}
