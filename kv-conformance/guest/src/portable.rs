//! The suite as a self-contained `wasi:cli` command, so any host that links
//! `wasi:keyvalue@0.2.0-draft2` can run it (`wasi-kv run`, Spin, other embedders):
//!
//! ```text
//! kv-conformance-portable.wasm [--store NAME] [--peer NAME] [--read-only NAME] [--denied NAME]
//!     [--max-value-bytes N] [--max-batch-entries N] [--no-ttl] [--no-cas] [--list-may-repeat]
//!     [--case TEXT]... [--skip TEXT]...
//! ```
//!
//! It runs every case that needs no host orchestration (the concurrent cases need several
//! instances driven by a host, so they are skipped) against the named stores, prints one line
//! per case and `N passed, N failed, N skipped`, and exits 1 if any case failed. Cases that
//! need a store that was not named, or a host limit that was not given, are skipped with that
//! reason. The read-only store must be a read-only view of the store under test, and the peer
//! a store with another namespace. Every key in the store under test and the peer store is
//! deleted before each case: name stores dedicated to the suite.

use crate::bindings::exports::wasi_kv::conformance::suite::{Capability, Phase, Profile, Target};
use crate::bindings::wasi::keyvalue0_2_0_draft2::batch;
use crate::bindings::wasi::keyvalue0_2_0_draft2::store;
use crate::cases;
use crate::check::{Ctx, SKIP, list_all};

const USAGE: &str = "usage: kv-conformance-portable [--store NAME] [--peer NAME] \
    [--read-only NAME] [--denied NAME] [--max-value-bytes N] [--max-batch-entries N] \
    [--no-ttl] [--no-cas] [--list-may-repeat] [--case TEXT]... [--skip TEXT]...";

/// The case that checks `open("")` against the store under test.
const EMPTY_IDENTIFIER_CASE: &str = "open_empty_identifier_is_the_default_store";

/// Cases that need the host's exact value limit (`--max-value-bytes`).
const NEEDS_MAX_VALUE: &[&str] = &[
    "value_at_declared_maximum",
    "value_over_maximum_rejected",
    "batch_invalid_entry_writes_nothing",
    "error_classes_are_stable",
];

/// Cases that need the host's exact batch limit (`--max-batch-entries`).
const NEEDS_MAX_BATCH: &[&str] = &["batch_over_host_limit_rejected"];

struct Options {
    target: Target,
    profile: Profile,
    cases: Vec<String>,
    skips: Vec<String>,
    max_value_known: bool,
    max_batch_known: bool,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut target = Target {
        store: "default".to_string(),
        peer: String::new(),
        read_only: String::new(),
        denied: String::new(),
        unknown: format!("kv-portable-unknown-{:016x}", unique()),
    };
    let mut profile = Profile {
        // The contract's minimum: every provider stores 256 KiB values.
        max_value_bytes: 256 * 1024,
        max_batch_entries: 10_000,
        list_may_repeat: false,
        ttl: true,
        cas: true,
    };
    let mut cases = Vec::new();
    let mut skips = Vec::new();
    let (mut max_value_known, mut max_batch_known) = (false, false);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--store" => target.store = value()?,
            "--peer" => target.peer = value()?,
            "--read-only" => target.read_only = value()?,
            "--denied" => target.denied = value()?,
            "--max-value-bytes" => {
                profile.max_value_bytes = value()?.parse().map_err(|_| USAGE.to_string())?;
                max_value_known = true;
            }
            "--max-batch-entries" => {
                profile.max_batch_entries = value()?.parse().map_err(|_| USAGE.to_string())?;
                max_batch_known = true;
            }
            "--case" => cases.push(value()?),
            "--skip" => skips.push(value()?),
            "--no-ttl" => profile.ttl = false,
            "--no-cas" => profile.cas = false,
            "--list-may-repeat" => profile.list_may_repeat = true,
            "--help" | "-h" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Options {
        target,
        profile,
        cases,
        skips,
        max_value_known,
        max_batch_known,
    })
}

/// Some bits that differ between runs, for a store name nobody configured.
fn unique() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or_default();
    now as u64
}

/// Why `case` cannot run here, if it cannot.
fn skip_reason(case: &cases::Case, options: &Options) -> Option<String> {
    if let Some(text) = options
        .skips
        .iter()
        .find(|text| case.name.contains(text.as_str()))
    {
        return Some(format!("--skip {text} (a divergence the host declares)"));
    }
    if case.workers > 0 {
        return Some("needs host orchestration (concurrent instances)".to_string());
    }
    if case.needs.contains(&Capability::Ttl) && !options.profile.ttl {
        return Some("--no-ttl".to_string());
    }
    if case.needs.contains(&Capability::Cas) && !options.profile.cas {
        return Some("--no-cas".to_string());
    }
    if NEEDS_MAX_VALUE.contains(&case.name) && !options.max_value_known {
        return Some("needs --max-value-bytes (the host's exact maximum)".to_string());
    }
    if NEEDS_MAX_BATCH.contains(&case.name) && !options.max_batch_known {
        return Some("needs --max-batch-entries (the host's exact maximum)".to_string());
    }
    let store = options.target.store.as_str();
    if case.name == EMPTY_IDENTIFIER_CASE && !matches!(store, "default" | "") {
        return Some("needs --store default (open(\"\") reaches the default store)".to_string());
    }
    None
}

/// Deletes every key of `name`, so each case starts from an empty store.
fn clear(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Ok(());
    }
    let bucket = store::open(name).map_err(|err| format!("open {name:?}: {err:?}"))?;
    let keys = list_all(&bucket)?;
    for chunk in keys.chunks(1000) {
        batch::delete_many(&bucket, chunk).map_err(|err| format!("clear {name:?}: {err:?}"))?;
    }
    Ok(())
}

/// Runs the suite; the process exit code.
pub fn main() -> i32 {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return 2;
        }
    };
    let (mut passed, mut failed, mut skipped) = (0u32, 0u32, 0u32);
    for case in cases::all() {
        if !options.cases.is_empty() && !options.cases.iter().any(|text| case.name.contains(text)) {
            continue;
        }
        if let Some(reason) = skip_reason(case, &options) {
            println!("skip {} ({reason})", case.name);
            skipped += 1;
            continue;
        }
        let ctx = Ctx {
            target: options.target.clone(),
            profile: options.profile,
        };
        let outcome = clear(&options.target.store)
            .and_then(|()| clear(&options.target.peer))
            .and_then(|()| (case.run)(&ctx, Phase::Single));
        match outcome {
            Ok(()) => {
                println!("ok   {}", case.name);
                passed += 1;
            }
            Err(reason) if reason.starts_with(SKIP) => {
                println!("skip {} ({})", case.name, &reason[SKIP.len()..]);
                skipped += 1;
            }
            Err(reason) => {
                println!("FAIL {}: {reason}", case.name);
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 || passed == 0 { 1 } else { 0 }
}
