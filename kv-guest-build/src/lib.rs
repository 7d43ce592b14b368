//! Builds wasm32-wasip2 components from a build script: the suite's guests (`kv-conformance`)
//! and the test fixtures (`kv-test-artifacts`) both need it, the way wasmtime's
//! `test-programs-artifacts` builds `test-programs`.
//!
//! The components are built by a nested `cargo build --release --target wasm32-wasip2` into a
//! target directory of their own (`$CARGO_TARGET_DIR/wasm-guests`): the outer cargo holds the
//! lock on the normal one.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One component to build: a workspace package and the artifact (bin or cdylib name) it makes.
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    /// The package, as `cargo build -p` takes it.
    pub package: &'static str,
    /// The file name without `.wasm` (a bin's name, or a cdylib's name with `_`).
    pub artifact: &'static str,
}

/// The workspace root of the build script's package: the nearest directory above
/// `$CARGO_MANIFEST_DIR` that holds wasi-kv's `wit/` and `Cargo.lock`. Panics (the build
/// script fails) if there is none, rather than building from an unrelated directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file() && dir.join("wit").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no wasi-kv workspace (Cargo.lock and wit/) above {}",
                manifest_dir.display()
            )
        })
        .to_path_buf()
}

/// Builds `guests` and returns each one's `.wasm` path, in order. `watched` are paths relative
/// to the workspace root whose changes rerun the build script (the guests' sources, `wit`).
///
/// Panics with the fix when the target is missing: a build script has no other way to fail.
pub fn build(guests: &[Guest], watched: &[&str]) -> Vec<PathBuf> {
    let workspace = workspace_root();
    for path in watched.iter().chain(["Cargo.lock"].iter()) {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("wasm-guests"),
        None => workspace.join("target").join("wasm-guests"),
    };
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--target=wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    let mut packages: Vec<&str> = guests.iter().map(|guest| guest.package).collect();
    packages.sort_unstable();
    packages.dedup();
    for package in packages {
        command.arg("-p").arg(package);
    }
    // The outer build's flags and jobserver are for the host target, not for the guests.
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
    guests
        .iter()
        .map(|guest| {
            let path = out.join(format!("{}.wasm", guest.artifact));
            assert!(
                Path::new(&path).exists(),
                "{} did not produce {}",
                guest.package,
                path.display()
            );
            path
        })
        .collect()
}
