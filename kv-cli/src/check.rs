//! `wasi-kv check`: histories of concurrent clients under faults, checked
//! (kv-conformance's `histories` module records, kv-check judges).

use std::time::Duration;

use anyhow::{Context as _, bail};
use kv_check::Recorder;
use kv_conformance::histories::{self, CheckReport, NemesisKind, Plan, Source};

use crate::cli::CheckArgs;

/// The longest `--time` accepted: every run is bounded.
const MAX_TIME: Duration = Duration::from_secs(3600);

/// Runs the check; returns whether the history is valid.
pub async fn check(args: &CheckArgs) -> anyhow::Result<bool> {
    let registry = crate::registry();
    if !registry.names().contains(&args.provider.as_str()) {
        bail!(
            "unknown provider {:?} (this build knows: {})",
            args.provider,
            registry.names().join(", ")
        );
    }
    if args.time > MAX_TIME {
        bail!("--time is at most 1h");
    }
    if args.clients == 0 || args.clients > 256 || args.hosts == 0 || args.hosts > 16 {
        bail!("--clients must be 1–256 and --hosts 1–16");
    }
    if args.rate == 0 || args.rate > 100_000 {
        bail!("--rate must be 1–100000 operations per second");
    }
    if args.keys == 0 || args.keys > 10_000 {
        bail!("--keys must be 1–10000");
    }
    let source = match (&args.store, args.emulator) {
        (Some(url), _) => Source::Url(url.clone()),
        (None, true) => Source::Emulator {
            durable: matches!(args.nemesis, Some(NemesisKind::Crash | NemesisKind::All) | None)
                && args.provider != "cosmos",
        },
        (None, false) if matches!(args.provider.as_str(), "memory" | "sqlite") => {
            Source::InProcess
        }
        (None, false) => bail!(
            "no store of provider {:?}: pass --emulator (a local emulator on loopback) or \
             --store URL",
            args.provider
        ),
    };
    // Faults only where this command controls the backend; the default nemesis follows.
    let nemesis = match (args.nemesis, &source) {
        (Some(kind), Source::Url(_)) if kind != NemesisKind::None => bail!(
            "--nemesis {kind} needs the fault proxy, which runs only in front of a backend this \
             command starts on loopback (--emulator, or memory/sqlite in process); a store given \
             by URL is checked with --nemesis none"
        ),
        (Some(kind), _) => kind,
        (None, Source::Url(_)) => NemesisKind::None,
        (None, _) => NemesisKind::All,
    };
    let plan = Plan {
        workload: args.workload,
        nemesis,
        clients: args.clients,
        time: args.time,
        max_ops: args.max_ops,
        keys: args.keys,
        seed: args.seed.unwrap_or_else(rand::random),
        rate: args.rate,
    };
    eprintln!(
        "checking {}: workload {}, nemesis {}, {} host(s) × {} clients, {} s, seed {}",
        args.provider,
        plan.workload,
        plan.nemesis,
        args.hosts,
        plan.clients,
        plan.time.as_secs_f64(),
        plan.seed
    );
    let setup = histories::setup(&registry, &args.provider, source, args.hosts)
        .await
        .map_err(anyhow::Error::msg)?;
    if let Some(why) = setup.faults.unsupported(plan.nemesis) {
        bail!("--nemesis {} cannot run on {}: {why}", plan.nemesis, args.provider);
    }
    let limits = histories::limits();
    let hosts = histories::open_hosts(&setup.providers, &setup.namespace, &limits)
        .await
        .context("opening the store")?;
    let recorder = Recorder::new();
    let recorded = histories::record(&hosts, &plan, &setup.faults, &recorder)
        .await
        .map_err(anyhow::Error::msg)?;
    if let Err(err) = histories::clean_up(&hosts, &plan).await {
        eprintln!("warning: the check's keys were not all deleted: {err}");
    }
    let verdict = histories::check(&recorded.history, &limits);
    let report = CheckReport::new(
        &args.provider,
        &setup.backend,
        &plan,
        args.hosts,
        0,
        recorded.elapsed,
        &recorded.history,
        recorded.events,
        verdict,
    );
    if let Some(dir) = &args.report_dir {
        report
            .write_dir(dir, &recorded.history)
            .with_context(|| format!("writing the report into {}", dir.display()))?;
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_markdown());
    }
    eprintln!("{}", report.summary_line());
    Ok(report.is_valid())
}
