//! `wasi-kv conformance`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use kv_conformance::{Outcome, Profile, Report, Suite, Target, WatchSuite};
use kv_core::Provider;

use crate::cli::{ConformanceArgs, FaultProfile, Format};
use kv_testkit::emulator::Emulator;
use kv_testkit::faults::{Fault, FaultProxy, Lossy};

/// `--faults lossy`: the reply of every n-th request is dropped after the backend executed it.
const LOSSY_EVERY: u64 = 10;

/// Runs the suite; returns whether it passed.
pub async fn conformance(args: &ConformanceArgs) -> anyhow::Result<bool> {
    let config = crate::load_config(args.stores.config.as_deref(), &args.stores.stores)?;
    let registry = crate::registry();
    crate::known_provider(&registry, &args.provider, args.emulator)?;
    let mut profile =
        Profile::bundled(&args.provider).unwrap_or_else(|| Profile::plain(&args.provider));
    let mut keep_alive: Vec<Guard> = Vec::new();
    // The emulator's own place for the watch cases, where it has one (`Started`).
    let mut watch_provider: Option<Arc<dyn Provider>> = None;
    let mut spec = config
        .stores
        .values()
        .find(|spec| spec.provider == args.provider)
        .cloned();
    if args.emulator {
        let emulator = Emulator::for_provider(&args.provider).ok_or_else(|| {
            anyhow::anyhow!(
                "no local emulator is known for provider {:?}",
                args.provider
            )
        })?;
        let fault_protocol = emulator.fault_protocol();
        if args.faults.is_some() && fault_protocol.is_none() {
            bail!(
                "--faults cannot run on {}: the fault proxy sits in front of one address, and a \
                 cluster client talks to every node directly",
                args.provider
            );
        }
        let started = emulator.start_async().await.map_err(anyhow::Error::msg)?;
        eprintln!("started {} on loopback", started.backend);
        profile = Profile::bundled(started.flavour)
            .ok_or_else(|| anyhow::anyhow!("no bundled profile {:?}", started.flavour))?;
        profile.backend = started.backend.clone();
        let mut url = started.store_url.clone();
        let mut watch_url = started.watch_store_url.clone();
        if let (Some(FaultProfile::Lossy), Some(protocol)) = (args.faults, fault_protocol) {
            let proxy = FaultProxy::start(started.addr(), protocol).await?;
            proxy.every(LOSSY_EVERY, Fault::DropReply);
            eprintln!(
                "every {LOSSY_EVERY}th reply is dropped after the backend executed the request \
                 (fault proxy on {})",
                proxy.addr()
            );
            url = started.store_url_via(proxy.addr());
            watch_url = watch_url.map(|watch_url| started.url_via(&watch_url, proxy.addr()));
            keep_alive.push(Arc::new(proxy));
        }
        keep_alive.push(started.guard);
        spec = Some(kv_core::config::parse_short_form(&format!("conformance={url}"))?.1);
        if let Some(watch_url) = watch_url {
            let watch_spec = kv_core::config::parse_short_form(&format!("watch={watch_url}"))?.1;
            watch_provider = Some(registry.connect(&watch_spec).await?);
        }
    } else if args.faults.is_some() && args.provider != "memory" {
        bail!(
            "--faults needs --emulator (the fault proxy sits between the host and a local backend)"
        );
    }
    let (mut provider, prefix): (Arc<dyn Provider>, String) = match &spec {
        Some(spec) => (registry.connect(spec).await?, spec.namespace.clone()),
        None if args.provider == "memory" => (
            Arc::new(kv_core::MemoryProvider::new()),
            "conformance".to_string(),
        ),
        // SQLite needs no server: a file in a temporary directory, removed afterwards.
        None if args.provider == "sqlite" => {
            let dir = tempfile::tempdir().context("creating a directory for the database")?;
            let url = format!("conformance=sqlite:{}", dir.path().join("kv.db").display());
            let spec = kv_core::config::parse_short_form(&url)?.1;
            keep_alive.push(Arc::new(dir));
            (registry.connect(&spec).await?, "conformance".to_string())
        }
        None => bail!(
            "no store of provider {:?} is configured: pass --emulator, --store NAME=URL or --config FILE",
            args.provider
        ),
    };
    let mut limits = config.limits.clone();
    if args.faults == Some(FaultProfile::Lossy) {
        if args.provider == "memory" {
            let (lossy, state) = Lossy::provider(provider);
            state.lose_every(LOSSY_EVERY);
            provider = lossy;
        }
        // One reply in ten is lost: enough attempts that a run of losses is vanishingly rare.
        limits.retry.max_attempts = limits.retry.max_attempts.max(20);
    }
    let mut target = Target::new(&args.provider, provider, profile);
    target.watch_provider = watch_provider;
    target.keep_alive = keep_alive;
    target.namespace_prefix = prefix;
    target.limits = limits;

    let started = SystemTime::now();
    let mut suite = Suite::new()
        .await
        .context("loading the conformance component")?;
    // The batch cases again, built against Spin's draft2 WIT: the other `get-many` shape.
    let mut spin_shape = Suite::spin_shape()
        .await
        .context("loading the spin-shaped conformance component")?;
    // The cases that apply to Spin's own key-value interface, run through it.
    let mut spin_kv = Suite::spin_kv()
        .await
        .context("loading the Spin key-value conformance component")?;
    // The same cases through Spin 4's async interface, by a WASIp3 component.
    let mut spin_kv_3 = Suite::spin_kv_3()
        .await
        .context("loading the Spin 4 key-value conformance component")?;
    // The watch cases (S13): the runner writes, a watch-service component records.
    let mut watch = WatchSuite::new().context("loading the watch cases' recorder component")?;
    if suite.select(&args.cases)
        + spin_shape.select(&args.cases)
        + spin_kv.select(&args.cases)
        + spin_kv_3.select(&args.cases)
        + watch.select(&args.cases)
        == 0
    {
        bail!("no case name contains any of {:?}", args.cases);
    }
    let progress = |result: &kv_conformance::CaseResult, done: usize, total: usize| {
        let mut err = std::io::stderr().lock();
        let mark = match result.outcome {
            Outcome::Passed => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Ignored => "ignored",
        };
        let _ = writeln!(err, "[{done:>3}/{total}] {} {mark}", result.case);
    };
    let mut results = suite.run_all(&target, args.jobs, &progress).await;
    results.extend(spin_shape.run_all(&target, args.jobs, &progress).await);
    results.extend(spin_kv.run_all(&target, args.jobs, &progress).await);
    results.extend(spin_kv_3.run_all(&target, args.jobs, &progress).await);
    results.extend(watch.run_all(&target, args.jobs, &progress).await);
    let report = Report::new(&args.provider, &target.profile.backend, started, results);

    if let Some(dir) = &args.report_dir {
        report
            .write_dir(dir)
            .with_context(|| format!("writing the reports into {}", dir.display()))?;
    }
    let text = match args.format {
        Format::Table => report.to_table(),
        Format::Json => report.to_json(),
        Format::Junit => report.to_junit(),
        Format::Markdown => report.to_markdown(),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        writeln!(out)?;
    }
    if args.format != Format::Table {
        eprintln!("{}", report.summary_line());
    }
    if report.count(Outcome::Passed) == 0 {
        eprintln!("error: no case passed");
    }
    Ok(report.is_success())
}

/// Keeps an emulator running; dropping it stops the emulator.
pub type Guard = Arc<dyn std::any::Any + Send + Sync>;
