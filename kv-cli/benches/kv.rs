//! The design targets of docs/benchmarks.md, each measured side by side in one run:
//!
//! 1. **boundary**: keyvalue operations timed inside a guest (`test-components/commands` (`kv_bench_guest`), 256 B
//!    values) on the in-memory store, through `wasi-kv run`'s host, through
//!    `wasmtime run -S keyvalue` (when a `wasmtime` CLI is on `PATH` or named by `$WASMTIME`),
//!    and the same `KvStore` calls made natively; compare-and-swap (`cas.new` plus `swap`,
//!    0.2.0-draft2) through wasi-kv and natively only, as wasmtime hosts no CAS;
//! 2. **redis**: the guest's `get`/`set` on a local Redis against the native `redis` client,
//!    at concurrency 1 and 16, every client a task counting over one wall-clock window;
//! 3. **batch**: `set-many`/`get-many` of 1,000 keys against 1,000 single calls, on every
//!    backend the project installs;
//! 4. **listing**: 10,000, 100,000 and 1,000,000 keys listed page by page: time and
//!    resident-memory growth;
//! 5. **keys**: N fresh keys inserted, read, checked and deleted inside the guest (50,000 and
//!    1,000,000), `wasi-kv run` and `wasmtime run -S keyvalue` as processes side by side, with
//!    each process's peak resident memory per key.
//!
//! 6. **hot**: 16 writers (2 hosts × 8 guests) incrementing one key on every backend the project
//!    installs, against the backend's own atomic counter driven natively ([`hot_key`]); on
//!    DynamoDB also its own exactly-once counter (`TransactWriteItems` with a
//!    `ClientRequestToken`): whether the server honours the token, and its rate;
//! 7. **clients**: throughput and p99 latency at 1…64 clients, guests and native clients, on
//!    memory, Redis and DynamoDB Local ([`curves`]);
//! 8. **get-many**: time per call at 1…1,000 keys, and what the byte-bounded rounds cost.
//!
//! ```sh
//! cargo bench -p kv-cli --bench kv -- [--rows boundary,redis,batch,listing,keys,hot,clients,get-many]
//!     [--backends redis,dynamodb,…] [--quick] [--plots DIR]
//! ```
//! `--plots DIR` draws the curves (rows 4, 7 and 8) as PNG files in DIR; `scripts/plots.sh`
//! regenerates those of docs/benchmarks.md.
//! Every server is a local process on loopback, started here and stopped by PID.

#[path = "kv/curves.rs"]
mod curves;
#[path = "kv/floor.rs"]
mod floor;
#[path = "kv/hot_key.rs"]
mod hot_key;
#[path = "kv/plot.rs"]
mod plot;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_cli::run::{Output, RunOptions, Runner};
use kv_core::{KvStore, Stores};
use kv_testkit::emulator::{self, Emulator};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

const GUEST: &str = kv_test_artifacts::BENCH_GUEST;
const GUEST_CAS: &str = kv_test_artifacts::BENCH_GUEST_CAS;
/// Rounds of each boundary and Redis measurement; the best of them is reported.
const ROUNDS: usize = 3;
const VALUE: &[u8] = &[b'v'; 256];

struct Settings {
    rows: Vec<String>,
    /// Operations per boundary measurement.
    boundary_ops: u32,
    /// Warm-up operations per Redis client (a tenth of this).
    redis_ops: u32,
    /// The wall-clock window every Redis measurement counts over.
    redis_window: Duration,
    /// Keys listed, one point each.
    listing_keys: Vec<usize>,
    /// Fresh keys per `keys` run.
    fresh_keys: Vec<u32>,
    /// The wall-clock window every hot-key measurement counts over.
    hot_window: Duration,
    /// The backends the hot-key and curve rows measure (all installed ones when empty).
    backends: Vec<String>,
    /// The client counts of the clients curve.
    curve_clients: Vec<usize>,
    /// The window each point of the clients curve counts over.
    curve_window: Duration,
    /// Rounds per point of the clients curve; the best is kept.
    curve_rounds: usize,
    /// Where the curves are drawn, if anywhere.
    plots: Option<std::path::PathBuf>,
}

impl Settings {
    fn wanted_backend(&self, name: &str) -> bool {
        self.backends.is_empty() || self.backends.iter().any(|backend| backend == name)
    }
}

fn settings() -> Settings {
    let mut settings = Settings {
        rows: [
            "boundary", "redis", "batch", "listing", "keys", "hot", "clients", "get-many",
        ]
        .map(String::from)
        .to_vec(),
        boundary_ops: 200_000,
        redis_ops: 5_000,
        redis_window: Duration::from_secs(2),
        listing_keys: vec![10_000, 100_000, 1_000_000],
        fresh_keys: vec![50_000, 1_000_000],
        hot_window: Duration::from_secs(3),
        backends: Vec::new(),
        curve_clients: vec![1, 2, 4, 8, 16, 32, 64],
        curve_window: Duration::from_secs(2),
        curve_rounds: 2,
        plots: None,
    };
    let mut args = std::env::args().skip(1);
    // A comma-separated list argument.
    let list = |args: &mut dyn Iterator<Item = String>| -> Vec<String> {
        let text = args.next().unwrap_or_default();
        text.split(',').map(str::to_string).collect()
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rows" => settings.rows = list(&mut args),
            "--backends" => settings.backends = list(&mut args),
            "--plots" => settings.plots = args.next().map(std::path::PathBuf::from),
            "--quick" => {
                settings.boundary_ops = 20_000;
                settings.redis_ops = 1_000;
                settings.redis_window = Duration::from_secs(1);
                settings.listing_keys = vec![10_000, 100_000];
                settings.curve_clients = vec![1, 4, 16, 64];
                settings.curve_window = Duration::from_millis(500);
                settings.curve_rounds = 1;
                settings.fresh_keys = vec![50_000];
                settings.hot_window = Duration::from_secs(1);
            }
            // `cargo bench` passes `--bench`; ignore it and anything else libtest-shaped.
            _ => {}
        }
    }
    settings
}

/// A store set with one store, `default`, at `url`.
async fn stores(url: &str) -> anyhow::Result<Arc<Stores>> {
    let config = kv_cli::load_config(None, &[format!("default={url}")])?;
    Ok(Arc::new(kv_cli::registry().build(&config).await?))
}

/// The guest's `OP N` through wasi-kv's host (`wasi-kv run`, in process): ns per operation.
async fn guest_ns(stores: Arc<Stores>, op: &str, n: u32) -> anyhow::Result<f64> {
    let runner = Arc::new(Runner::new(GUEST.as_ref(), None)?);
    parse_ns(&guest_run(&runner, stores, vec![op.to_string(), n.to_string()]).await?)
}

/// The guest's `OP` counted over the wall-clock window `[start, start + window)`, after `n/10`
/// warm-up operations: ns per operation. Guests run side by side over one window add up.
async fn guest_window_ns(
    runner: Arc<Runner>,
    stores: Arc<Stores>,
    op: &str,
    n: u32,
    start_unix_ms: u64,
    window: Duration,
) -> anyhow::Result<f64> {
    let output = guest_window(runner, stores, op, n, start_unix_ms, window).await?;
    parse_ns(&output)
}

/// [`guest_window_ns`]'s run, its output whole: `OP NS_PER_OP MADE`.
async fn guest_window(
    runner: Arc<Runner>,
    stores: Arc<Stores>,
    op: &str,
    n: u32,
    start_unix_ms: u64,
    window: Duration,
) -> anyhow::Result<String> {
    let args = [
        op.to_string(),
        n.to_string(),
        VALUE.len().to_string(),
        start_unix_ms.to_string(),
        window.as_millis().to_string(),
    ];
    guest_run(&runner, stores, args.to_vec()).await
}

/// Runs the bench guest to its end: what it printed.
async fn guest_run(
    runner: &Arc<Runner>,
    stores: Arc<Stores>,
    args: Vec<String>,
) -> anyhow::Result<String> {
    let options = RunOptions {
        component: GUEST.into(),
        args,
        envs: vec![],
        dirs: vec![],
        time_limit: None,
        memory_limit: kv_cli::run::DEFAULT_RUN_MEMORY_LIMIT,
    };
    // A window run prints its latency histogram: a few KiB.
    let stdout = MemoryOutputPipe::new(1 << 20);
    let code = runner
        .run(&options, stores, Output::Capture(stdout.clone()))
        .await?;
    anyhow::ensure!(code == 0, "the bench guest exited with {code}");
    Ok(String::from_utf8_lossy(&stdout.contents()).into_owned())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn parse_ns(output: &str) -> anyhow::Result<f64> {
    output
        .split_whitespace()
        .nth(1)
        .and_then(|ns| ns.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unexpected guest output {output:?}"))
}

/// The guest's `OP N` under `wasmtime run -S keyvalue`: ns per operation.
fn wasmtime_ns(cli: &std::path::Path, op: &str, n: u32) -> anyhow::Result<f64> {
    let out = std::process::Command::new(cli)
        .args(["run", "-S", "keyvalue", GUEST, op, &n.to_string()])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "wasmtime run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_ns(&String::from_utf8_lossy(&out.stdout))
}

/// The same operation called natively on `KvStore`, `n` times after `n / 10` warm-up calls.
async fn native_ns(store: &KvStore, op: &str, n: u32) -> anyhow::Result<f64> {
    let keys: Vec<String> = (0..100).map(|i| format!("bench-{i}")).collect();
    let entries: Vec<(String, Vec<u8>)> = keys
        .iter()
        .map(|key| (key.clone(), VALUE.to_vec()))
        .collect();
    store.set("bench", VALUE.to_vec()).await?;
    store.set("bench-cas", VALUE.to_vec()).await?;
    store.set_many(entries.clone()).await?;
    let once = || async {
        match op {
            "get" => store.get("bench").await.map(drop),
            "set" => store.set("bench", VALUE.to_vec()).await,
            "exists" => store.exists("bench").await.map(drop),
            "increment" => store.increment("bench-counter", 1).await.map(drop),
            "get-many-100" => store.get_many(&keys).await.map(drop),
            "cas" => {
                let read = store.read_versioned("bench-cas").await?;
                store
                    .swap("bench-cas", &read.version, VALUE)
                    .await
                    .map(drop)
            }
            _ => store.set_many(entries.clone()).await,
        }
    };
    for _ in 0..(n / 10).max(1) {
        once().await?;
    }
    let started = Instant::now();
    for _ in 0..n {
        once().await?;
    }
    Ok(started.elapsed().as_nanos() as f64 / f64::from(n))
}

async fn open(url: &str) -> anyhow::Result<KvStore> {
    Ok(stores(url).await?.open("default").await?)
}

async fn boundary(settings: &Settings) -> anyhow::Result<()> {
    let cli = emulator::wasmtime_cli();
    println!("\n### 1. Boundary cost per operation, in-memory store, 256 B values\n");
    println!(
        "wasmtime CLI: {}\n",
        cli.as_ref().map_or(
            "none (set $WASMTIME or put wasmtime on PATH)".to_string(),
            |p| { p.display().to_string() }
        )
    );
    println!(
        "| operation | wasi-kv guest ns/op | wasmtime -S keyvalue ns/op | native KvStore ns/op | speed vs wasmtime (target ≥ 1.0) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for op in [
        "get",
        "set",
        "exists",
        "increment",
        "get-many-100",
        "set-many-100",
        "cas",
    ] {
        let n = if op.ends_with("-100") {
            settings.boundary_ops / 50
        } else {
            settings.boundary_ops
        };
        // The three are measured in turn, ROUNDS times, and each keeps its best: noise on a
        // shared machine only ever slows a run down.
        let (mut ours, mut theirs, mut native) = (f64::MAX, None::<f64>, f64::MAX);
        for _ in 0..ROUNDS {
            // CAS exists only in 0.2.0-draft2, which wasmtime's `-S keyvalue` does not host.
            let guest = if op == "cas" {
                let runner = Arc::new(Runner::new(GUEST_CAS.as_ref(), None)?);
                parse_ns(&guest_run(&runner, stores("memory:").await?, vec![n.to_string()]).await?)?
            } else {
                guest_ns(stores("memory:").await?, op, n).await?
            };
            ours = ours.min(guest);
            if let Some(cli) = cli.as_ref().filter(|_| op != "cas") {
                let wasmtime = wasmtime_ns(cli, op, n)?;
                theirs = Some(theirs.map_or(wasmtime, |best| best.min(wasmtime)));
            }
            native = native.min(native_ns(&open("memory:").await?, op, n).await?);
        }
        println!(
            "| {op} | {ours:.0} | {} | {native:.0} | {} |",
            theirs.map_or("–".to_string(), |t| format!("{t:.0}")),
            theirs.map_or("–".to_string(), |t| format!("{:.2}", t / ours)),
        );
    }
    Ok(())
}

async fn redis_rows(settings: &Settings) -> anyhow::Result<()> {
    let server = tokio::task::spawn_blocking(emulator::RedisServer::start)
        .await?
        .map_err(anyhow::Error::msg)?;
    let url = server.url();
    let n = settings.redis_ops;
    println!("\n### 2. Redis on loopback: the guest against the native `redis` client\n");
    println!(
        "| operation | clients | guest ops/s | native ops/s | guest / native (target ≥ 0.9 at 1, ≥ 0.95 at 16) |"
    );
    println!("|---|---:|---:|---:|---:|");
    let client = redis::Client::open(url.as_str())?;
    let native = client.get_multiplexed_async_connection().await?;
    let mut seed = native.clone();
    redis::cmd("SET")
        .arg("native-bench")
        .arg(VALUE)
        .query_async::<()>(&mut seed)
        .await?;
    let window = settings.redis_window;
    for op in ["get", "set"] {
        for clients in [1usize, 16] {
            // The guests (instances of one compiled component, as `serve` runs them) count
            // operations over one common wall-clock window, which starts once all of them
            // are warm, so their rates add up.
            let stores = stores(&url).await?;
            let runner = Arc::new(Runner::new(GUEST.as_ref(), None)?);
            // Guests and native clients take turns, ROUNDS times; each side keeps its best.
            let (mut best_guest, mut best_native) = (0f64, 0f64);
            for _ in 0..ROUNDS {
                let start = unix_ms() + 1_000 + 100 * clients as u64;
                let guests: Vec<_> = (0..clients)
                    .map(|_| guest_window_ns(runner.clone(), stores.clone(), op, n, start, window))
                    .collect();
                let guest_rate: f64 = futures::future::try_join_all(guests)
                    .await?
                    .iter()
                    .map(|ns| 1e9 / ns)
                    .sum();
                // The native clients: the same window, counted the same way, each a task on the
                // runtime's workers as each guest is.
                let started = Instant::now();
                let deadline = started + window;
                let natives: Vec<_> = (0..clients)
                    .map(|_| {
                        let mut connection = native.clone();
                        tokio::spawn(async move {
                            let mut count = 0u64;
                            while Instant::now() < deadline {
                                // As in the guest: the clock is read every 16 operations.
                                for _ in 0..16 {
                                    if op == "get" {
                                        redis::cmd("GET")
                                            .arg("native-bench")
                                            .query_async::<Option<Vec<u8>>>(&mut connection)
                                            .await?;
                                    } else {
                                        redis::cmd("SET")
                                            .arg("native-bench")
                                            .arg(VALUE)
                                            .query_async::<()>(&mut connection)
                                            .await?;
                                    }
                                }
                                count += 16;
                            }
                            Ok::<u64, redis::RedisError>(count)
                        })
                    })
                    .collect();
                let mut counted = 0u64;
                for native in futures::future::try_join_all(natives).await? {
                    counted += native?;
                }
                let native_rate = counted as f64 / started.elapsed().as_secs_f64();
                best_guest = best_guest.max(guest_rate);
                best_native = best_native.max(native_rate);
            }
            println!(
                "| {op} | {clients} | {best_guest:.0} | {best_native:.0} | {:.2} |",
                best_guest / best_native
            );
        }
    }
    drop(server);
    Ok(())
}

async fn batch_rows() -> anyhow::Result<()> {
    println!("\n### 3. Batches of 1,000 keys against 1,000 single calls (native `KvStore`)\n");
    println!(
        "| backend | 1,000 × set ms | set-many ms | speed-up | 1,000 × get ms | get-many ms | speed-up | target |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let keys: Vec<String> = (0..1000).map(|i| format!("batch-{i:04}")).collect();
    let sqlite_dir = tempfile::tempdir()?;
    let mut backends: Vec<(String, String, Option<emulator::Started>)> = vec![
        ("memory".into(), "memory:".into(), None),
        (
            "sqlite".into(),
            format!("sqlite:{}", sqlite_dir.path().join("bench.db").display()),
            None,
        ),
    ];
    for emulator in [
        Emulator::Redis,
        Emulator::DynamoDb,
        Emulator::Cosmos,
        Emulator::Gcs,
        Emulator::S3,
        Emulator::S3Moto,
        Emulator::Azblob,
    ] {
        let provider = emulator.provider();
        let Some(started) = start_installed(emulator).await? else {
            continue;
        };
        backends.push((
            provider.to_string(),
            started.store_url.clone(),
            Some(started),
        ));
    }
    for (name, url, _guard) in &backends {
        let store = open(url).await?;
        let started = Instant::now();
        for key in &keys {
            store.set(key, VALUE.to_vec()).await?;
        }
        let singles_set = started.elapsed();
        let entries: Vec<(String, Vec<u8>)> = keys
            .iter()
            .map(|key| (key.clone(), VALUE.to_vec()))
            .collect();
        let started = Instant::now();
        store.set_many(entries).await?;
        let batch_set = started.elapsed();
        let started = Instant::now();
        for key in &keys {
            store.get(key).await?;
        }
        let singles_get = started.elapsed();
        let started = Instant::now();
        let values = store.get_many(&keys).await?;
        let batch_get = started.elapsed();
        anyhow::ensure!(
            values.iter().all(Option::is_some),
            "{name}: a batch key is missing"
        );
        let target = match name.as_str() {
            "redis" => "≥ 20×",
            "dynamodb" => "≥ 5×",
            _ => "",
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {name} | {:.1} | {:.1} | {:.1}× | {:.1} | {:.1} | {:.1}× | {target} |",
            ms(singles_set),
            ms(batch_set),
            ms(singles_set) / ms(batch_set),
            ms(singles_get),
            ms(batch_get),
            ms(singles_get) / ms(batch_get),
        );
    }
    Ok(())
}

/// Starts `emulator` on loopback, or prints a table row saying it is not installed (the rows
/// of every table here have eight columns).
async fn start_installed(emulator: Emulator) -> anyhow::Result<Option<emulator::Started>> {
    if !emulator.installed() {
        println!("| {} | not installed | | | | | | |", emulator.provider());
        return Ok(None);
    }
    let started = tokio::task::spawn_blocking(move || emulator.start())
        .await?
        .map_err(anyhow::Error::msg)?;
    Ok(Some(started))
}

/// A native DynamoDB client on the store at `url` (its endpoint and credentials), and its
/// table, created if missing: what the rows' native clients drive.
async fn dynamo_client(url: &str) -> anyhow::Result<(aws_sdk_dynamodb::Client, String)> {
    let config = kv_cli::load_config(None, &[format!("default={url}")])?;
    let spec = config
        .stores
        .get("default")
        .ok_or_else(|| anyhow::anyhow!("no default store"))?;
    let config = kv_aws::dynamodb::DynamoConfig::from_spec(spec)?;
    let client = kv_aws::dynamodb::client::build_client(&config).await;
    kv_aws::dynamodb::client::ensure_table(&client, &config.table).await?;
    Ok((client, config.table))
}

/// This process's resident memory, in KiB (`VmRSS`; Linux, else 0).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn listing_rows(settings: &Settings) -> anyhow::Result<()> {
    println!("\n### 4. Listing keys page by page\n");
    println!("| backend | keys | pages | listing s | resident memory growth MiB (target < 64) |");
    println!("|---|---:|---:|---:|---:|");
    let redis = tokio::task::spawn_blocking(emulator::RedisServer::start)
        .await?
        .map_err(anyhow::Error::msg)?;
    let (mut times, mut growths) = (Vec::new(), Vec::new());
    for (name, url) in [("memory", "memory:".to_string()), ("redis", redis.url())] {
        let (mut time_line, mut growth_line) = (Vec::new(), Vec::new());
        for &keys in &settings.listing_keys {
            let (seconds, growth_mib) = listing_point(name, &url, keys).await?;
            time_line.push((keys as f64, seconds));
            growth_line.push((keys as f64, growth_mib));
        }
        times.push(plot::Series {
            label: name.to_string(),
            points: time_line,
        });
        growths.push(plot::Series {
            label: name.to_string(),
            points: growth_line,
        });
    }
    drop(redis);
    if let Some(dir) = &settings.plots {
        let chart = |title, y_label, log_y| plot::Chart {
            title,
            x_label: "keys",
            y_label,
            log_x: true,
            log_y,
        };
        let path = dir.join("listing-time.png");
        plot::line_chart(
            &path,
            &chart("listing: time vs keys", "seconds", true),
            &times,
        )?;
        println!("\n![listing time vs keys]({})", path.display());
        let path = dir.join("listing-memory.png");
        let title = "listing: resident memory growth vs keys";
        plot::line_chart(&path, &chart(title, "MiB", false), &growths)?;
        println!("![listing memory vs keys]({})", path.display());
    }
    Ok(())
}

/// `keys` keys written to a fresh store at `url`, then listed page by page: seconds, and the
/// growth of this process's resident memory while listing, in MiB.
async fn listing_point(name: &str, url: &str, keys: usize) -> anyhow::Result<(f64, f64)> {
    {
        let store = open(url).await?;
        // Each point starts from an empty store.
        if url != "memory:" {
            let mut cursor: Option<String> = None;
            loop {
                let page = store.list_keys(cursor.as_deref()).await?;
                store.delete_many(&page.keys).await?;
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        let all: Vec<usize> = (0..keys).collect();
        for chunk in all.chunks(1000) {
            let entries = chunk
                .iter()
                .map(|i| (format!("list-{i:07}"), b"v".to_vec()))
                .collect();
            store.set_many(entries).await?;
        }
        let before = rss_kib();
        let mut peak = before;
        let mut pages = 0usize;
        let mut seen = 0usize;
        let mut cursor: Option<String> = None;
        let started = Instant::now();
        loop {
            let page = store.list_keys(cursor.as_deref()).await?;
            pages += 1;
            seen += page.keys.len();
            peak = peak.max(rss_kib());
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        anyhow::ensure!(seen >= keys, "{name}: listed {seen} of {keys} keys");
        let (seconds, growth) = (
            started.elapsed().as_secs_f64(),
            (peak - before) as f64 / 1024.0,
        );
        println!("| {name} | {keys} | {pages} | {seconds:.2} | {growth:.1} |");
        Ok((seconds, growth))
    }
}

/// One `keys N` run of the guest as a process (`wasi-kv run` or `wasmtime run -S keyvalue`):
/// ns per operation of each phase, and the process's peak resident memory in bytes, read from
/// `/proc` while the guest waits on stdin after its last phase.
fn fresh_keys_run(
    program: &std::path::Path,
    args: &[&str],
    n: u32,
) -> anyhow::Result<(Vec<(String, f64)>, u64)> {
    use std::io::{BufRead as _, Write as _};
    let mut child = std::process::Command::new(program)
        .args(args)
        .args([GUEST, "keys", &n.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut phases = Vec::new();
    let mut peak = 0;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        if line == "done" {
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
            peak = status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024);
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(b"\n");
            }
            continue;
        }
        phases.push(parse_phase(&line)?);
    }
    let status = child.wait()?;
    anyhow::ensure!(
        status.success(),
        "{} exited with {status}",
        program.display()
    );
    anyhow::ensure!(peak > 0, "{}: no peak memory read", program.display());
    Ok((phases, peak))
}

fn parse_phase(line: &str) -> anyhow::Result<(String, f64)> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next().and_then(|ns| ns.parse().ok())) {
        (Some(name), Some(ns)) => Ok((name.to_string(), ns)),
        _ => anyhow::bail!("unexpected guest output {line:?}"),
    }
}

/// Fresh keys side by side: each runtime ROUNDS times per N, the best time per phase and the
/// lowest peak kept; memory per key is the peak over a 1,000-key run of the same runtime,
/// divided by the extra keys.
async fn fresh_keys_rows(settings: &Settings) -> anyhow::Result<()> {
    println!("\n### 5. Fresh keys on the in-memory store, 256 B values, processes side by side\n");
    let Some(wasmtime) = emulator::wasmtime_cli() else {
        println!("no wasmtime CLI (set $WASMTIME or put wasmtime on PATH): rows skipped");
        return Ok(());
    };
    let ours = std::path::PathBuf::from(env!("CARGO_BIN_EXE_wasi-kv"));
    let runtimes: [(&str, &std::path::Path, &[&str]); 2] = [
        ("wasi-kv", ours.as_path(), &["run"]),
        ("wasmtime", wasmtime.as_path(), &["run", "-S", "keyvalue"]),
    ];
    println!("wasmtime CLI: {}\n", wasmtime.display());
    println!(
        "| keys | operation | wasi-kv ns/op | wasmtime ns/op | speed vs wasmtime (target ≥ 1.0) |"
    );
    println!("|---:|---|---:|---:|---:|");
    let mut memory_rows = Vec::new();
    for &n in &settings.fresh_keys {
        let mut best: Vec<Vec<(String, f64)>> = vec![Vec::new(), Vec::new()];
        let mut peaks = [u64::MAX; 2];
        let mut base = [u64::MAX; 2];
        for _ in 0..ROUNDS {
            for (index, (_, program, args)) in runtimes.iter().enumerate() {
                let (phases, peak) = fresh_keys_run(program, args, n)?;
                peaks[index] = peaks[index].min(peak);
                if best[index].is_empty() {
                    best[index] = phases;
                } else {
                    for (kept, (_, ns)) in best[index].iter_mut().zip(phases) {
                        kept.1 = kept.1.min(ns);
                    }
                }
                let (_, small) = fresh_keys_run(program, args, 1_000)?;
                base[index] = base[index].min(small);
            }
        }
        for ((name, ours_ns), (_, theirs_ns)) in best[0].iter().zip(&best[1]) {
            println!(
                "| {n} | {name} | {ours_ns:.0} | {theirs_ns:.0} | {:.2} |",
                theirs_ns / ours_ns
            );
        }
        let per_key = |index: usize| {
            peaks[index].saturating_sub(base[index]) as f64
                / f64::from(n.saturating_sub(1_000).max(1))
        };
        memory_rows.push(format!(
            "| {n} | {:.1} | {:.1} | {:.0} | {:.0} | {:.2} |",
            peaks[0] as f64 / 1e6,
            peaks[1] as f64 / 1e6,
            per_key(0),
            per_key(1),
            per_key(1) / per_key(0),
        ));
    }
    println!(
        "\n| keys | wasi-kv peak RSS MB | wasmtime peak RSS MB | wasi-kv bytes/key | wasmtime bytes/key | wasmtime / wasi-kv (target ≥ 1.0) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for row in memory_rows {
        println!("{row}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    kv_testkit::stay_on_loopback();
    // `RUST_LOG=warn` shows the provider errors behind a failed row.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let settings = settings();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "wasi-kv benchmarks, {} cores, rows: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        settings.rows.join(",")
    );
    runtime.block_on(async {
        if settings.rows.iter().any(|row| row == "boundary") {
            boundary(&settings).await?;
        }
        if settings.rows.iter().any(|row| row == "redis") {
            redis_rows(&settings).await?;
        }
        if settings.rows.iter().any(|row| row == "batch") {
            batch_rows().await?;
        }
        if settings.rows.iter().any(|row| row == "listing") {
            listing_rows(&settings).await?;
        }
        if settings.rows.iter().any(|row| row == "keys") {
            fresh_keys_rows(&settings).await?;
        }
        if settings.rows.iter().any(|row| row == "hot") {
            hot_key::hot_key_rows(&settings).await?;
        }
        if settings.rows.iter().any(|row| row == "clients") {
            curves::clients_rows(&settings).await?;
        }
        if settings.rows.iter().any(|row| row == "get-many") {
            curves::get_many_rows(&settings).await?;
        }
        anyhow::Ok(())
    })
}
