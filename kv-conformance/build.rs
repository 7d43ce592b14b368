//! Builds the guest components (the conformance suite and the examples) for wasm32-wasip2 and
//! exposes their paths to the crate, the way wasmtime's test-programs artifacts do.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUESTS: &[(&str, &str)] = &[
    ("kv-conformance-guest", "kv_conformance_guest"),
    ("kv-conformance-guest-spin", "kv_conformance_guest_spin"),
    ("kv-conformance-portable", "kv-conformance-portable"),
    (
        "kv-conformance-portable-draft",
        "kv-conformance-portable-draft",
    ),
    (
        "kv-conformance-portable-spin",
        "kv-conformance-portable-spin",
    ),
    ("counter", "counter"),
    ("http-kv", "http_kv"),
    ("http-fixture", "http_fixture"),
    ("hostile-fixture", "hostile_fixture"),
    ("hostile-command", "hostile-command"),
    ("kv-bench-guest", "kv_bench_guest"),
    ("kv-bench-guest", "kv_bench_guest_cas"),
    ("kv-bench-handler", "kv_bench_handler"),
    ("compat-fixture", "compat_fixture"),
    ("interop-spin-command", "interop_spin_command"),
    ("interop-spin-handler", "interop_spin_handler"),
    ("interop-draft-command", "interop_draft_command"),
    ("interop-draft-handler", "interop_draft_handler"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("kv-conformance lives in the workspace")
        .to_path_buf();
    for watched in [
        "wit",
        "kv-conformance/guest",
        "kv-conformance/guest-spin",
        "kv-conformance/portable",
        "kv-conformance/portable-draft",
        "kv-conformance/portable-spin",
        "kv-conformance/http-fixture",
        "kv-conformance/hostile-fixture",
        "kv-conformance/hostile-command",
        "kv-conformance/bench-guest",
        "kv-conformance/bench-handler",
        "kv-conformance/compat-fixture",
        "kv-conformance/interop",
        "examples",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!(
        "cargo:rustc-env=KV_WASMTIME_VERSION={}",
        wasmtime_version(&workspace)
    );
    // A target dir of its own: the outer cargo holds the lock on the normal one.
    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("wasm-guests"),
        None => workspace.join("target").join("wasm-guests"),
    };
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .arg("build")
        .arg("--release")
        .arg("--target=wasm32-wasip2")
        .arg("--target-dir")
        .arg(&target_dir);
    for (package, _) in GUESTS {
        command.arg("-p").arg(package);
    }
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .expect("failed to run cargo for the guest components");
    if !status.success() {
        panic!(
            "building the wasm32-wasip2 guest components failed; is the target installed? \
             Run `rustup target add wasm32-wasip2`."
        );
    }
    let out = target_dir.join("wasm32-wasip2").join("release");
    for (package, artifact) in GUESTS {
        let path = out.join(format!("{artifact}.wasm"));
        assert!(
            Path::new(&path).exists(),
            "{package} did not produce {}",
            path.display()
        );
        let var = format!("KV_GUEST_{}", artifact.to_uppercase().replace('-', "_"));
        println!("cargo:rustc-env={var}={}", path.display());
    }
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
