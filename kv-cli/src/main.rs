use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use kv_cli::cli::{Cli, Command};
use kv_cli::run::{Output, RunOptions};
use kv_cli::serve::{ServeOptions, Server};
use kv_cli::traces::{StoreSpans, Traces};
use kv_core::observe::{Observer, Observers};
use tracing::Instrument as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let emulator = match &cli.command {
        Command::Conformance(args) => args.emulator,
        Command::Check(args) => args.emulator,
        _ => false,
    };
    if emulator && std::env::var_os("COSMOS_DISABLE_IMDS").is_none() {
        // SAFETY: still single-threaded (no runtime yet). A local emulator run must not let
        // the Cosmos driver probe the Azure instance metadata service.
        unsafe { std::env::set_var("COSMOS_DISABLE_IMDS", "1") };
    }
    if matches!(cli.command, Command::Run(_)) {
        one_malloc_arena();
    }
    // A server logs every request by default; the other commands only problems.
    let default_filter = match cli.command {
        Command::Serve(_) => "warn,kv_cli=info",
        Command::Watch(_) => "warn,kv_cli=info,kv_watch=info",
        _ => "warn",
    };
    let otlp_endpoint = match &cli.command {
        Command::Serve(args) => args.otlp_endpoint.as_deref(),
        Command::Run(args) => args.otlp_endpoint.as_deref(),
        _ => None,
    };
    let traces = match otlp_endpoint.map(Traces::new).transpose() {
        Ok(traces) => traces,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASI_KV_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        );
    // Only the host's own spans (requests, runs) become OpenTelemetry spans.
    let spans = traces.as_ref().map(|traces| {
        tracing_opentelemetry::layer()
            .with_tracer(traces.tracer())
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("kv_cli", tracing::Level::INFO)
                    .with_target("wasi_kv", tracing::Level::INFO),
            )
    });
    tracing_subscriber::registry().with(log).with(spans).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let store_spans = traces
        .as_ref()
        .map(|traces| Arc::new(StoreSpans::new(traces.tracer())) as Arc<dyn Observer>);
    let code = match runtime.block_on(dispatch(cli, store_spans)) {
        Ok(code) => code,
        Err(err) => {
            // One line: the problem and where it is.
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    };
    drop(runtime);
    if let Some(traces) = traces {
        traces.shutdown();
    }
    code
}

/// Every observer of the store operations: metrics and spans, when asked for.
fn observers(
    metrics: Option<Arc<kv_cli::metrics::Metrics>>,
    spans: Option<Arc<dyn Observer>>,
) -> Option<Arc<dyn Observer>> {
    let all: Vec<Arc<dyn Observer>> = metrics
        .map(|metrics| metrics as Arc<dyn Observer>)
        .into_iter()
        .chain(spans)
        .collect();
    match all.len() {
        0 => None,
        1 => all.into_iter().next(),
        _ => Some(Arc::new(Observers(all))),
    }
}

async fn dispatch(cli: Cli, spans: Option<Arc<dyn Observer>>) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            let config = kv_cli::load(&args.stores)?;
            let metrics = start_metrics(args.metrics).await?;
            if let Some((addr, _)) = &metrics {
                eprintln!("metrics http://{addr}/metrics");
            }
            let metrics = metrics.map(|(_, metrics)| metrics);
            let stores =
                kv_cli::open_stores_observed(&config.kv, observers(metrics, spans)).await?;
            let options = RunOptions {
                component: args.component,
                args: args.args,
                envs: args.envs,
                dirs: args.dirs,
                time_limit: args.time_limit,
                memory_limit: args.memory_limit,
            };
            let span = tracing::info_span!("run", component = %options.component.display());
            let code = kv_cli::run::run(&options, stores, Output::Inherit)
                .instrument(span)
                .await?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Serve(args) => {
            let config = kv_cli::load(&args.stores)?;
            let metrics = start_metrics(args.metrics).await?;
            let metrics_addr = metrics.as_ref().map(|(addr, _)| *addr);
            let metrics = metrics.map(|(_, metrics)| metrics);
            let stores =
                kv_cli::open_stores_observed(&config.kv, observers(metrics.clone(), spans)).await?;
            let mut allowed_outbound = config.outbound.allowed_hosts;
            allowed_outbound.extend(args.allow_outbound);
            let options = ServeOptions {
                component: args.component,
                envs: args.envs,
                time_limit: args.time_limit,
                memory_limit: args.memory_limit,
                shutdown_timeout: args.shutdown_timeout,
                allowed_outbound,
                header_timeout: args.header_timeout,
                write_timeout: args.write_timeout,
                max_connections: args.max_connections,
                max_requests: args.max_requests,
                max_body_bytes: args.max_body as u64,
                metrics,
                reuse: kv_cli::serve::InstanceReuse {
                    requests: args.instance_reuse,
                    concurrent: args.instance_concurrency,
                },
            };
            let server = Arc::new(Server::new(options, stores)?);
            let listener = kv_cli::serve::bind(args.addr).await?;
            let addr = listener.local_addr()?;
            // The one line on stdout: scripts and tests read the bound address from it.
            println!("serving http://{addr}");
            if let Some(metrics_addr) = metrics_addr {
                println!("metrics http://{metrics_addr}/metrics");
            }
            tracing::info!(%addr, "serving");
            server
                .serve(listener, kv_cli::serve::shutdown_signal())
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch(args) => {
            let config = kv_cli::load(&args.stores)?;
            let stores = kv_cli::open_stores_observed(&config.kv, observers(None, spans)).await?;
            let options = kv_cli::watch::WatchOptions {
                component: args.component,
                name: args.name,
                watched: args.watched,
                state: args.state,
                dead_letters: args.dead_letters,
                envs: args.envs,
                time_limit: args.time_limit,
                memory_limit: args.memory_limit,
                delivery: kv_watch::WatchOptions {
                    batch: args.batch as usize,
                    max_attempts: args.max_attempts,
                    backoff: kv_core::Backoff {
                        initial: args.retry_backoff,
                        max: args.retry_backoff.max(std::time::Duration::from_secs(5)),
                    },
                    ..kv_watch::WatchOptions::default()
                },
            };
            let watching = kv_cli::watch::start(&options, stores).await?;
            // The one line on stdout: scripts and tests wait for it (every change made after
            // it is delivered).
            println!("watching {}", options.watched.join(","));
            watching.run(kv_cli::serve::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            let valid = kv_cli::check::check(&args).await?;
            Ok(if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Store(command) => kv_cli::store::store(command).await,
        Command::Report(args) => {
            let evidence =
                kv_conformance::evidence::Evidence::load(&args.dirs).map_err(anyhow::Error::msg)?;
            let output = args
                .output
                .unwrap_or_else(|| args.dirs[0].join("index.html"));
            std::fs::write(&output, evidence.to_html())
                .map_err(|err| anyhow::anyhow!("writing {}: {err}", output.display()))?;
            println!(
                "{}: {} conformance reports, {} fault matrices, {} history checks",
                output.display(),
                evidence.reports.len(),
                evidence.faults.len(),
                evidence.histories.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Conformance(args) => {
            let passed = kv_cli::conformance::conformance(&args).await?;
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Binds `--metrics` and serves it in the background: the bound address and the metrics.
async fn start_metrics(
    addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<Option<(std::net::SocketAddr, Arc<kv_cli::metrics::Metrics>)>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = kv_cli::metrics::bind(addr).await?;
    let bound = listener.local_addr()?;
    let metrics = Arc::new(kv_cli::metrics::Metrics::new());
    tokio::spawn(kv_cli::metrics::serve(listener, metrics.clone()));
    Ok(Some((bound, metrics)))
}

/// `run` executes one component, as a task on the runtime's workers: glibc would give those
/// threads an arena of their own, which grows slower than the main one (fresh-key inserts
/// through a guest: 0.81 of wasmtime's speed, 0.92–0.97 with one arena; docs/benchmarks.md).
/// `serve`, whose requests allocate on every worker at once, keeps glibc's default.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before the runtime starts any thread; `mallopt` only sets a parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
