//! The conformance suite against every provider this workspace builds, one trial per
//! provider x case. Each emulated backend is started by the harness on a free loopback port
//! and stopped by PID; unreachable backends are ignored unless named in `KV_REQUIRE`. With
//! `KV_REPORT_DIR` set, the evidence reports of every provider are written there.

use std::process::ExitCode;
use std::sync::Arc;

use kv_conformance::harness::{self, TargetSource};
use kv_conformance::{Profile, Target};
use kv_core::MemoryProvider;
use kv_testkit::emulator::Emulator;

mod common;

fn main() -> ExitCode {
    kv_testkit::stay_on_loopback();
    let mut sources = vec![TargetSource::new("memory", || async {
        Ok(Target::new(
            "memory",
            Arc::new(MemoryProvider::new()),
            Profile::memory(),
        ))
    })];
    // SQLite needs no server: a file in a temporary directory, kept as long as the target.
    sources.push(TargetSource::new("sqlite", || async {
        let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
        let url = format!("sqlite:{}", dir.path().join("conformance.db").display());
        let provider = common::connect("sqlite", &url).await?;
        let mut target = Target::new("sqlite", provider, Profile::plain("sqlite"));
        target.profile.backend = format!("SQLite {} (bundled)", rusqlite_version());
        target.keep_alive.push(Arc::new(dir));
        Ok(target)
    }));
    for emulator in Emulator::ALL {
        sources.push(TargetSource::new(emulator.provider(), move || {
            emulated(emulator)
        }));
    }
    harness::main(sources)
}

/// Starts `provider`'s emulator and connects to it through the provider's own factory.
async fn emulated(emulator: Emulator) -> Result<Target, String> {
    let provider = emulator.provider();
    let started = emulator.start_async().await?;
    let connected = common::connect(provider, &started.store_url).await?;
    let mut profile = Profile::bundled(started.flavour)
        .ok_or_else(|| format!("no bundled profile {:?}", started.flavour))?;
    profile.backend = started.backend;
    let mut target = Target::new(provider, connected, profile);
    if let Some(url) = &started.watch_store_url {
        target.watch_provider = Some(common::connect(provider, url).await?);
    }
    if emulator == Emulator::Azblob {
        // Azurite is one Node.js thread keeping blobs in memory: while it takes the largest
        // values of cases running beside each other, other requests wait, and four sets of
        // the interop cases passed the 30 s default in two of the CI runs of 2026-12
        // ("set did not finish within 30000 ms"). A slow emulator, not a lost request.
        target.limits.operation_timeout = std::time::Duration::from_secs(120);
    }
    target.keep_alive.push(started.guard);
    Ok(target)
}

/// The SQLite library version compiled in.
fn rusqlite_version() -> &'static str {
    kv_sqlite::sqlite_version()
}
