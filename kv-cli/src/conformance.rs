//! `wasi-kv conformance`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use kv_conformance::{Outcome, Profile, Report, Suite, Target};
use kv_core::Provider;

use crate::cli::{ConformanceArgs, Format};

/// Runs the suite; returns whether it passed.
pub async fn conformance(args: &ConformanceArgs) -> anyhow::Result<bool> {
    let config = crate::load_config(args.stores.config.as_deref(), &args.stores.stores)?;
    let registry = crate::registry();
    if !registry.names().contains(&args.provider.as_str()) {
        bail!(
            "unknown provider {:?} (this build knows: {})",
            args.provider,
            registry.names().join(", ")
        );
    }
    let flavour = match (args.provider.as_str(), args.emulator) {
        ("dynamodb", true) => "dynamodb-local",
        ("gcs", true) => "fake-gcs",
        ("cosmos", true) => "cosmos-local",
        (provider, _) => provider,
    };
    let mut profile = Profile::bundled(flavour).unwrap_or_else(|| Profile::plain(&args.provider));
    let mut keep_alive: Vec<Guard> = Vec::new();
    let mut spec = config
        .stores
        .values()
        .find(|spec| spec.provider == args.provider)
        .cloned();
    if args.emulator {
        let (url, version, guard) = start_emulator(&args.provider).await?;
        eprintln!("started {version} on loopback");
        profile.backend = version;
        keep_alive.push(guard);
        spec = Some(kv_core::config::parse_short_form(&format!("conformance={url}"))?.1);
    }
    let (provider, prefix): (Arc<dyn Provider>, String) = match &spec {
        Some(spec) => (registry.connect(spec).await?, spec.namespace.clone()),
        None if args.provider == "memory" => (
            Arc::new(kv_core::MemoryProvider::new()),
            "conformance".to_string(),
        ),
        None => bail!(
            "no store of provider {:?} is configured: pass --emulator, --store NAME=URL or --config FILE",
            args.provider
        ),
    };
    let mut target = Target::new(&args.provider, provider, profile);
    target.keep_alive = keep_alive;
    target.namespace_prefix = prefix;
    target.limits = config.limits.clone();

    let started = SystemTime::now();
    let suite = Suite::new()
        .await
        .context("loading the conformance component")?;
    let progress = |result: &kv_conformance::CaseResult, done: usize, total: usize| {
        let mut err = std::io::stderr().lock();
        let mark = match result.outcome {
            Outcome::Passed => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Ignored => "ignored",
        };
        let _ = writeln!(err, "[{done:>3}/{total}] {} {mark}", result.case);
    };
    let results = suite.run_all(&target, args.jobs, &progress).await;
    let report = Report::new(&args.provider, &target.profile.backend, started, results);

    if let Some(dir) = &args.report_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (file, text) in [
            ("report.json", report.to_json()),
            ("report.xml", report.to_junit()),
            ("report.md", report.to_markdown()),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
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

/// Whether the local emulator of `provider` is installed (by `scripts/setup.sh`).
pub fn emulator_installed(provider: &str) -> bool {
    use kv_conformance::emulator;
    match provider {
        "redis" => emulator::find_program("redis-server").is_some(),
        "dynamodb" => emulator::DynamoDbLocal::jar_dir().is_some(),
        "gcs" => emulator::FakeGcsServer::binary().is_some(),
        "cosmos" => emulator::CosmosServer::modules_dir().is_some(),
        _ => false,
    }
}

/// Starts the local emulator of `provider`: its URL, backend description, and a guard that
/// stops it when dropped.
pub async fn start_emulator(provider: &str) -> anyhow::Result<(String, String, Guard)> {
    match provider {
        "redis" => {
            let server = tokio::task::spawn_blocking(kv_conformance::emulator::RedisServer::start)
                .await?
                .map_err(anyhow::Error::msg)?;
            Ok((server.url(), server.version().to_string(), Arc::new(server)))
        }
        "dynamodb" => {
            let local = tokio::task::spawn_blocking(kv_conformance::emulator::DynamoDbLocal::start)
                .await?
                .map_err(anyhow::Error::msg)?;
            // Static test credentials and an explicit endpoint: nothing reaches AWS.
            let url = format!(
                "dynamodb://wasikv-conformance?region=us-east-1&endpoint={}&create_table=true\
                 &access_key_id=test&secret_access_key=test&max_attempts=1",
                local.endpoint()
            );
            Ok((url, local.version(), Arc::new(local)))
        }
        "gcs" => {
            let server =
                tokio::task::spawn_blocking(kv_conformance::emulator::FakeGcsServer::start)
                    .await?
                    .map_err(anyhow::Error::msg)?;
            // Plain HTTP on loopback means anonymous credentials: no metadata server lookup.
            let url = format!(
                "gcs://wasikv-conformance/runs?endpoint={}&create_bucket=true",
                server.endpoint()
            );
            Ok((url, server.version(), Arc::new(server)))
        }
        "cosmos" => {
            let server = tokio::task::spawn_blocking(kv_conformance::emulator::CosmosServer::start)
                .await?
                .map_err(anyhow::Error::msg)?;
            // The local server's well-known key, an explicit loopback endpoint, and
            // COSMOS_DISABLE_IMDS (set by the caller): nothing reaches Azure.
            let url = format!(
                "cosmos:///wasikv/conformance?endpoint={}&create_container=true\
                 &consistency=session&timeout_ms=10000&key={}",
                server.endpoint(),
                kv_conformance::emulator::COSMOS_EMULATOR_KEY
                    .replace('+', "%2B")
                    .replace('/', "%2F")
                    .replace('=', "%3D")
            );
            Ok((url, server.version(), Arc::new(server)))
        }
        other => bail!("no local emulator is known for provider {other:?}"),
    }
}
