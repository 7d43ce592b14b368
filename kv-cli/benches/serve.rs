//! `wasi-kv serve` throughput and latency: the `examples/http-kv` component on the in-memory
//! store and on a local Redis, driven over loopback HTTP/1.1 keep-alive connections.
//!
//! Beside each component run, the same routes are served by a plain hyper handler that calls
//! the store natively (no component), so the table shows what the per-request instance costs,
//! measured in the same process on the same machine.
//!
//! When a wasmtime CLI is found (`$WASMTIME`, or `wasmtime` on `PATH`), `wasi-kv serve` and
//! `wasmtime serve -S keyvalue` then serve one 0.2.0-draft handler, as separate processes,
//! side by side.
//!
//! `--curve` measures only the curve against wasmtime: `GET` at 1…1,024 connections, each
//! server's requests/s and resident memory, then each server's memory per idle keep-alive
//! connection; `--plots DIR` draws it as PNG files there.
//!
//! ```sh
//! cargo bench -p kv-cli --bench serve -- [--seconds 5] [--connections 16] [--providers memory,redis]
//!     [--curve [--plots DIR]]
//! ```
//! Client and server share the machine's cores, so absolute numbers are pessimistic; compare
//! the rows of one run.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kv_cli::serve::{ServeOptions, Server};
use kv_core::{KvStore, Stores};
use kv_testkit::emulator;
use tokio::net::TcpListener;

#[path = "kv/plot.rs"]
mod plot;

const KEYS: usize = 1000;
const VALUE: &[u8] = &[b'v'; 256];

struct Settings {
    seconds: u64,
    connections: usize,
    providers: Vec<String>,
    /// Only the curve against wasmtime.
    curve: bool,
    /// Only the WASIp3 handler against wasmtime.
    p3: bool,
    plots: Option<std::path::PathBuf>,
}

fn settings() -> Settings {
    let mut settings = Settings {
        seconds: 5,
        connections: 16,
        providers: vec!["memory".to_string(), "redis".to_string()],
        curve: false,
        p3: false,
        plots: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => settings.seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(5),
            "--connections" => {
                settings.connections = args.next().and_then(|v| v.parse().ok()).unwrap_or(16)
            }
            "--curve" => settings.curve = true,
            "--p3" => settings.p3 = true,
            "--plots" => settings.plots = args.next().map(std::path::PathBuf::from),
            "--providers" => {
                settings.providers = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|provider| !provider.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            // `cargo bench` passes `--bench`; ignore it and anything else libtest-shaped.
            _ => {}
        }
    }
    settings
}

/// A route and how many keys its requests spread over.
#[derive(Clone, Copy)]
enum Route {
    Get(usize),
    Put(usize),
    Counter,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Get(_) => "GET /kv/{key}",
            Route::Put(_) => "PUT /kv/{key}",
            Route::Counter => "POST /counter/{key}",
        }
    }

    fn request(self, base: &str, n: usize) -> hyper::Request<Full<Bytes>> {
        let (method, path, body) = match self {
            Route::Get(keys) => ("GET", format!("/kv/key-{}", n % keys), Bytes::new()),
            Route::Put(keys) => (
                "PUT",
                format!("/kv/key-{}", n % keys),
                Bytes::from_static(VALUE),
            ),
            Route::Counter => ("POST", format!("/counter/c-{}", n % 16), Bytes::new()),
        };
        hyper::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header("host", "127.0.0.1")
            .body(Full::new(body))
            .expect("a valid request")
    }
}

struct Measured {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Measured {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// One table row: `| {first} | {route} | {path} | connections | req/s | percentiles | errors |`.
    fn row(&self, first: &str, route: Route, path: &str, connections: usize) -> String {
        format!(
            "| {first} | {} | {path} | {connections} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            route.name(),
            self.rps(),
            self.percentile(0.50),
            self.percentile(0.90),
            self.percentile(0.99),
            self.percentile(1.0),
            self.errors,
        )
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[index] as f64 / 1000.0
    }
}

/// `connections` keep-alive connections, each sending `route` requests back to back.
async fn drive(addr: SocketAddr, route: Route, connections: usize, duration: Duration) -> Measured {
    let base = format!("http://{addr}");
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut n = connection * 7919;
            while Instant::now() < deadline {
                n += 1;
                let sent = Instant::now();
                match sender.send_request(route.request(&base, n)).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let _ = response.into_body().collect().await;
                        if ok {
                            latencies.push(sent.elapsed().as_micros() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        // A closed connection (refused by a server at its limit) is done.
                        if sender.is_closed() {
                            break;
                        }
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut measured = Measured {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for task in tasks {
        let (latencies, errors) = task.await.expect("client task");
        measured.requests += latencies.len();
        measured.errors += errors;
        measured.latencies_us.extend(latencies);
    }
    measured.elapsed = started.elapsed();
    measured.latencies_us.sort_unstable();
    measured
}

/// [`drive`] after a short warm-up of the same route (connections, pages, the store's
/// connection pool).
async fn warm_then_drive(
    addr: SocketAddr,
    route: Route,
    connections: usize,
    duration: Duration,
) -> Measured {
    drive(addr, route, connections, Duration::from_millis(500)).await;
    // Let the server see the warm-up's connections close: a server at its connection limit
    // refuses new ones while it still counts them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drive(addr, route, connections, duration).await
}

/// The example's routes served natively on `store`: the baseline without a component.
async fn serve_native(listener: TcpListener, store: KvStore) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let store = store.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(native_route(&store, request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn native_route(
    store: &KvStore,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let respond = |status: u16, body: Bytes| {
        let mut response = hyper::Response::new(Full::new(body));
        *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
        response
    };
    if let Some(key) = path.strip_prefix("/kv/") {
        match method.as_str() {
            "GET" => match store.get(key).await {
                Ok(Some(value)) => respond(200, Bytes::from(value)),
                Ok(None) => respond(404, Bytes::new()),
                Err(_) => respond(503, Bytes::new()),
            },
            _ => {
                let body = match request.into_body().collect().await {
                    Ok(body) => body.to_bytes().to_vec(),
                    Err(_) => return respond(400, Bytes::new()),
                };
                match store.set(key, body).await {
                    Ok(()) => respond(204, Bytes::new()),
                    Err(_) => respond(503, Bytes::new()),
                }
            }
        }
    } else if let Some(key) = path.strip_prefix("/counter/") {
        match store.increment(key, 1).await {
            Ok(value) => respond(
                200,
                Bytes::from(format!("{{\"key\":\"{key}\",\"value\":{value}}}")),
            ),
            Err(_) => respond(503, Bytes::new()),
        }
    } else {
        respond(404, Bytes::new())
    }
}

async fn bench_provider(provider: &str, settings: &Settings) -> anyhow::Result<()> {
    let (url, _guard) = if provider == "memory" {
        ("memory:".to_string(), None)
    } else {
        let started = kv_testkit::emulator::Emulator::start_for(provider)
            .await
            .map_err(anyhow::Error::msg)?;
        (started.store_url, Some(started.guard))
    };
    let config = kv_cli::load_config(None, &[format!("default={url}")])?;
    let stores: Arc<Stores> = Arc::new(kv_cli::registry().build(&config).await?);
    let store = stores.open("default").await?;
    for n in 0..KEYS {
        store.set(&format!("key-{n}"), VALUE.to_vec()).await?;
    }

    let options = ServeOptions {
        component: kv_test_artifacts::HTTP_KV_EXAMPLE.into(),
        ..ServeOptions::default()
    };
    let server = Arc::new(Server::new(options, stores.clone())?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let component_addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let native = TcpListener::bind("127.0.0.1:0").await?;
    let native_addr = native.local_addr()?;
    let native_task = tokio::spawn(serve_native(native, store.clone()));

    let duration = Duration::from_secs(settings.seconds);
    for route in [Route::Get(KEYS), Route::Put(KEYS), Route::Counter] {
        let component =
            warm_then_drive(component_addr, route, settings.connections, duration).await;
        let native = warm_then_drive(native_addr, route, settings.connections, duration).await;
        for (path, measured) in [("component", &component), ("native", &native)] {
            println!(
                "{}",
                measured.row(provider, route, path, settings.connections)
            );
        }
        println!(
            "| {provider} | {} | component/native | | {:.2} | | | | | |",
            route.name(),
            component.rps() / native.rps()
        );
    }
    let _ = stop.send(());
    serving.await??;
    native_task.abort();
    Ok(())
}

/// `wasi-kv serve` and `wasmtime serve -S keyvalue` as separate processes on the same
/// 0.2.0-draft handler (`test-components/handlers/bench-handler`, opens `""`), each with the same keys
/// preset (`--seed`; `-S keyvalue-in-memory-data`), driven alike, route by route.
///
/// wasmtime's in-memory store copies its preset data into every instance that opens it, so
/// its cost per request grows with the data: the routes run with `keys` preset keys.
async fn bench_vs_wasmtime(
    cli: &std::path::Path,
    handler: Handler,
    settings: &Settings,
    keys: usize,
    routes: &[Route],
) -> anyhow::Result<()> {
    let servers = Servers::start(cli, handler, keys)?;
    let hosts = servers.hosts();
    let duration = Duration::from_secs(settings.seconds);
    for &route in routes {
        let mut rates = Vec::new();
        for (host, addr, _) in hosts {
            let measured = warm_then_drive(addr, route, settings.connections, duration).await;
            println!(
                "{}",
                measured.row(&keys.to_string(), route, host, settings.connections)
            );
            rates.push(measured.rps());
        }
        println!(
            "| {keys} | {} | wasi-kv/wasmtime | | {:.2} | | | | | |",
            route.name(),
            rates[0] / rates[1]
        );
    }
    Ok(())
}

/// The WASIp3 bench handler on `wasi-kv serve` and on `wasmtime serve -S p3 -S keyvalue`,
/// route by route, 16 preset keys.
async fn bench_p3_vs_wasmtime(cli: &std::path::Path, settings: &Settings) -> anyhow::Result<()> {
    println!();
    println!(
        "WASIp3: against `{} serve -S p3 -S keyvalue` on test-components/handlers/p3-bench-handler \
         (wasi:http/handler@0.3.0; both hosts reuse instances, 128 requests each, 16 at once):",
        cli.display()
    );
    println!();
    println!(
        "| preset keys | route | host | connections | req/s | p50 ms | p90 ms | p99 ms | max ms | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let routes = [Route::Get(16), Route::Put(16), Route::Counter];
    bench_vs_wasmtime(cli, Handler::P3, settings, 16, &routes).await
}

/// Which bench handler both hosts serve.
#[derive(Clone, Copy)]
enum Handler {
    /// WASI 0.2's `wasi:http/incoming-handler`: `test-components/handlers/bench-handler`.
    P2,
    /// WASI 0.3's `wasi:http/handler@0.3.0`: `test-components/handlers/p3-bench-handler`
    /// (`wasmtime serve -S p3`); both hosts reuse its instances, 128 requests each and 16 at
    /// once by default.
    P3,
}

/// `wasi-kv serve` and `wasmtime serve -S keyvalue` as processes on a bench handler, with
/// the same preset keys.
struct Servers {
    wasi_kv: emulator::LocalServer,
    wasmtime: emulator::LocalServer,
}

impl Servers {
    fn start(cli: &std::path::Path, handler: Handler, keys: usize) -> anyhow::Result<Servers> {
        let (handler, wasip3) = match handler {
            Handler::P2 => (kv_test_artifacts::BENCH_HANDLER, false),
            Handler::P3 => (kv_test_artifacts::P3_BENCH_HANDLER, true),
        };
        let value = String::from_utf8(VALUE.to_vec())?;
        let seeds: Vec<String> = (0..keys).map(|n| format!("key-{n}={value}")).collect();
        let wasi_kv_seeds = seeds.clone();
        let wasi_kv = emulator::LocalServer::start_http(
            "wasi-kv serve",
            move |port| {
                let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_wasi-kv"));
                command.arg("serve");
                for seed in &wasi_kv_seeds {
                    command.args(["--seed", seed]);
                }
                command.args(["--addr", &format!("127.0.0.1:{port}"), handler]);
                command
            },
            Duration::from_secs(60),
        )
        .map_err(anyhow::Error::msg)?;
        let cli = cli.to_path_buf();
        let wasmtime = emulator::LocalServer::start_http(
            "wasmtime serve",
            move |port| {
                let mut command = std::process::Command::new(&cli);
                command.args(["serve", "-S", "cli", "-S", "keyvalue"]);
                if wasip3 {
                    command.args(["-S", "p3"]);
                }
                for seed in &seeds {
                    command.args(["-S", &format!("keyvalue-in-memory-data={seed}")]);
                }
                command.args(["--addr", &format!("127.0.0.1:{port}"), handler]);
                command
            },
            Duration::from_secs(60),
        )
        .map_err(anyhow::Error::msg)?;
        Ok(Servers { wasi_kv, wasmtime })
    }

    /// Each server's name, address and PID.
    fn hosts(&self) -> [(&'static str, SocketAddr, Option<u32>); 2] {
        let at = |server: &emulator::LocalServer| SocketAddr::from(([127, 0, 0, 1], server.port()));
        [
            ("wasi-kv serve", at(&self.wasi_kv), self.wasi_kv.pid()),
            ("wasmtime serve", at(&self.wasmtime), self.wasmtime.pid()),
        ]
    }
}

/// A process's resident memory in KiB (`VmRSS`; Linux).
fn rss_kib(pid: Option<u32>) -> anyhow::Result<u64> {
    let pid = pid.ok_or_else(|| anyhow::anyhow!("the server is not running"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))
}

/// The connection counts of the curve.
const CURVE_CONNECTIONS: [usize; 6] = [1, 4, 16, 64, 256, 1024];

/// First each server's memory per idle keep-alive connection ([`idle_connections`], target
/// ≤ 64 KiB), then `GET` (16 preset keys) on both servers at each of [`CURVE_CONNECTIONS`]:
/// requests/s, p99 and each server's resident memory after the run.
async fn serve_curve(cli: &std::path::Path, settings: &Settings) -> anyhow::Result<()> {
    let servers = Servers::start(cli, Handler::P2, 16)?;
    let hosts = servers.hosts();
    idle_connections(&hosts).await?;
    println!();
    println!(
        "| connections | host | req/s | p99 ms | errors | resident MiB after the run | wasi-kv / wasmtime (target ≥ 2) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let duration = Duration::from_secs(settings.seconds);
    let mut rates: Vec<plot::Series> = Vec::new();
    let mut memory: Vec<plot::Series> = Vec::new();
    for (host, _, _) in hosts {
        for lines in [&mut rates, &mut memory] {
            lines.push(plot::Series {
                label: host.to_string(),
                points: Vec::new(),
            });
        }
    }
    for connections in CURVE_CONNECTIONS {
        let mut measured_rates = Vec::new();
        for (index, (host, addr, pid)) in hosts.into_iter().enumerate() {
            let measured = warm_then_drive(addr, Route::Get(16), connections, duration).await;
            let rss_mib = rss_kib(pid)? as f64 / 1024.0;
            let ratio = match measured_rates.first() {
                Some(ours) => format!("{:.2}", ours / measured.rps()),
                None => String::new(),
            };
            println!(
                "| {connections} | {host} | {:.0} | {:.2} | {} | {rss_mib:.1} | {ratio} |",
                measured.rps(),
                measured.percentile(0.99),
                measured.errors
            );
            measured_rates.push(measured.rps());
            rates[index]
                .points
                .push((connections as f64, measured.rps()));
            memory[index].points.push((connections as f64, rss_mib));
        }
    }
    if let Some(dir) = &settings.plots {
        let chart = |title, y_label, log_y| plot::Chart {
            title,
            x_label: "concurrent keep-alive connections",
            y_label,
            log_x: true,
            log_y,
        };
        let path = dir.join("serve-throughput.png");
        plot::line_chart(
            &path,
            &chart("serve GET: requests/s vs connections", "req/s", true),
            &rates,
        )?;
        println!("\n![serve throughput vs connections]({})", path.display());
        let path = dir.join("serve-memory.png");
        let title = "serve GET: server resident memory vs connections";
        plot::line_chart(&path, &chart(title, "MiB", false), &memory)?;
        println!("![serve memory vs connections]({})", path.display());
    }
    Ok(())
}

/// Each server's resident memory growth with [`IDLE`] idle keep-alive connections open, each
/// having served one request: measured on freshly started servers, before any load, so the
/// growth is not memory a busier moment left behind for reuse.
async fn idle_connections(hosts: &[(&'static str, SocketAddr, Option<u32>)]) -> anyhow::Result<()> {
    println!();
    println!(
        "| host | idle keep-alive connections | resident memory growth KiB | KiB per connection (target ≤ 64) |"
    );
    println!("|---|---:|---:|---:|");
    for &(host, addr, pid) in hosts {
        // Let the server settle after its start (and the other server's connections close).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = rss_kib(pid)?;
        let mut open = Vec::with_capacity(IDLE);
        let mut unanswered = None;
        for index in 0..IDLE {
            let connect = async {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                let driver = tokio::spawn(connection);
                // One request, so the server has served the connection and keeps it alive.
                let response = sender.send_request(Route::Get(16).request("", 0)).await?;
                let _ = response.into_body().collect().await?;
                anyhow::Ok((sender, driver))
            };
            match tokio::time::timeout(Duration::from_secs(10), connect).await {
                Ok(opened) => open.push(opened?),
                Err(_) => {
                    unanswered = Some(index);
                    break;
                }
            }
        }
        if let Some(index) = unanswered {
            println!(
                "| {host} | {IDLE} | – | no answer in 10 s on a new connection with {index} open |"
            );
            for (_, driver) in open {
                driver.abort();
            }
            continue;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib(pid)?;
        let alive = open
            .iter()
            .filter(|(sender, _)| !sender.is_closed())
            .count();
        anyhow::ensure!(
            alive == IDLE,
            "{host}: {} of {IDLE} idle connections were closed",
            IDLE - alive
        );
        let growth = after.saturating_sub(before);
        println!(
            "| {host} | {IDLE} | {growth} | {:.1} |",
            growth as f64 / IDLE as f64
        );
        for (_, driver) in open {
            driver.abort();
        }
    }
    Ok(())
}

/// Idle connections opened by [`idle_connections`]: fewer than `wasi-kv serve`'s 1,024 at once.
const IDLE: usize = 1000;

fn main() -> anyhow::Result<()> {
    let settings = settings();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if settings.curve {
        let cli = emulator::wasmtime_cli()
            .ok_or_else(|| anyhow::anyhow!("--curve needs a wasmtime CLI ($WASMTIME or PATH)"))?;
        println!(
            "wasi-kv serve against `{} serve -S keyvalue`, GET of 16 preset keys:\n",
            cli.display()
        );
        return runtime.block_on(serve_curve(&cli, &settings));
    }
    if settings.p3 {
        let cli = emulator::wasmtime_cli()
            .ok_or_else(|| anyhow::anyhow!("--p3 needs a wasmtime CLI ($WASMTIME or PATH)"))?;
        return runtime.block_on(bench_p3_vs_wasmtime(&cli, &settings));
    }
    println!(
        "wasi-kv serve benchmark: examples/http-kv, {} s per row, {} connections, {} cores",
        settings.seconds,
        settings.connections,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| store | route | path | connections | req/s | p50 ms | p90 ms | p99 ms | max ms | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for provider in &settings.providers {
        runtime.block_on(bench_provider(provider, &settings))?;
    }
    match emulator::wasmtime_cli() {
        Some(cli) => {
            println!();
            println!(
                "Against `{} serve -S keyvalue` on test-components/handlers/bench-handler (both hosts \
                 as separate processes):",
                cli.display()
            );
            println!();
            println!(
                "| preset keys | route | host | connections | req/s | p50 ms | p90 ms | p99 ms | max ms | errors |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|");
            let few = [Route::Get(16), Route::Put(16), Route::Counter];
            runtime.block_on(bench_vs_wasmtime(&cli, Handler::P2, &settings, 16, &few))?;
            runtime.block_on(bench_vs_wasmtime(
                &cli,
                Handler::P2,
                &settings,
                KEYS,
                &[Route::Get(KEYS)],
            ))?;
            runtime.block_on(bench_p3_vs_wasmtime(&cli, &settings))?;
        }
        None => println!("\nwasmtime serve: not measured (set $WASMTIME or put wasmtime on PATH)"),
    }
    Ok(())
}
