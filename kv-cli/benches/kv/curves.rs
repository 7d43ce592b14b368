//! Rows 7 and 8, **curves**: how throughput and latency grow with the load, not one point.
//!
//! - **clients**: `get` at 1…64 concurrent clients on memory, Redis and DynamoDB Local, through
//!   guests (instances of one compiled component in one host) and natively (the in-memory
//!   store's `KvStore`, the `redis` client's `GET`, the SDK's `GetItem`), each over the same
//!   wall-clock window: operations per second and the 99th-percentile latency of every
//!   operation made in the window (each client records its own, merged).
//! - **get-many**: the time of one `get-many` of 1…1,000 keys of 256 B through `KvStore`
//!   (validation, duplicates, byte-bounded rounds) against the provider's own calls on the
//!   same keys, unbounded (`get_many`) and byte-bounded (`get_many_within`, what each round
//!   calls): what the bounding costs (target ≤ 5% at 100 keys) and what the host adds.
//!
//! With `--plots DIR` each curve is also drawn as a PNG there ([`super::plot`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use hdrhistogram::Histogram;
use kv_cli::run::Runner;
use kv_core::{Bucket, KvStore, Stores};
use kv_testkit::emulator::Emulator;

use super::plot::{Chart, Series, line_chart};
use super::{
    GUEST, ROUNDS, Settings, VALUE, dynamo_client, guest_window, start_installed, stores, unix_ms,
};

/// A backend of the curves, its native client, and what keeps its server running.
struct Backend {
    name: &'static str,
    url: String,
    native: Native,
    /// Milliseconds each guest is given, beyond a base, to start and warm up before the
    /// common window: a guest writes its 101 keys first.
    start_ms_per_guest: u64,
    _guard: Option<kv_testkit::emulator::Started>,
}

/// How a native client reads one key.
#[derive(Clone)]
enum Native {
    Memory(KvStore),
    Redis(redis::aio::MultiplexedConnection),
    Dynamo {
        client: aws_sdk_dynamodb::Client,
        table: String,
    },
}

impl Native {
    fn name(&self) -> &'static str {
        match self {
            Native::Memory(_) => "KvStore",
            Native::Redis(_) => "redis GET",
            Native::Dynamo { .. } => "GetItem",
        }
    }

    fn dynamo_key() -> HashMap<String, AttributeValue> {
        [
            ("ns".to_string(), AttributeValue::S("native-bench".into())),
            ("k".to_string(), AttributeValue::S("get".into())),
        ]
        .into_iter()
        .collect()
    }

    /// Writes the key every read reads.
    async fn seed(&self) -> anyhow::Result<()> {
        match self {
            Native::Memory(store) => store.set("native-bench", VALUE.to_vec()).await?,
            Native::Redis(connection) => {
                redis::cmd("SET")
                    .arg("native-bench")
                    .arg(VALUE)
                    .query_async::<()>(&mut connection.clone())
                    .await?
            }
            Native::Dynamo { client, table } => {
                client
                    .put_item()
                    .table_name(table)
                    .set_item(Some(Native::dynamo_key()))
                    .item("v", AttributeValue::B(VALUE.to_vec().into()))
                    .send()
                    .await?;
            }
        }
        Ok(())
    }

    async fn get(&self) -> anyhow::Result<()> {
        let found = match self {
            Native::Memory(store) => store.get("native-bench").await?.is_some(),
            Native::Redis(connection) => redis::cmd("GET")
                .arg("native-bench")
                .query_async::<Option<Vec<u8>>>(&mut connection.clone())
                .await?
                .is_some(),
            Native::Dynamo { client, table } => client
                .get_item()
                .table_name(table)
                .set_key(Some(Native::dynamo_key()))
                .send()
                .await?
                .item
                .is_some(),
        };
        anyhow::ensure!(found, "{}: the seeded key is missing", self.name());
        Ok(())
    }
}

async fn backends(settings: &Settings) -> anyhow::Result<Vec<Backend>> {
    let memory = stores("memory:").await?;
    let mut backends = vec![Backend {
        name: "memory",
        url: "memory:".into(),
        native: Native::Memory(memory.open("default").await?),
        start_ms_per_guest: 20,
        _guard: None,
    }];
    for emulator in [Emulator::Redis, Emulator::DynamoDb] {
        if !settings.wanted_backend(emulator.provider()) {
            continue;
        }
        let Some(started) = start_installed(emulator).await? else {
            continue;
        };
        let (native, start_ms_per_guest) = if emulator == Emulator::Redis {
            let connection = redis::Client::open(started.store_url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            (Native::Redis(connection), 50)
        } else {
            let (client, table) = dynamo_client(&started.store_url).await?;
            (Native::Dynamo { client, table }, 300)
        };
        backends.push(Backend {
            name: emulator.provider(),
            url: started.store_url.clone(),
            native,
            start_ms_per_guest,
            _guard: Some(started),
        });
    }
    backends.retain(|backend| settings.wanted_backend(backend.name));
    Ok(backends)
}

/// One point of a curve: operations per second and the 99th percentile, in µs.
#[derive(Clone, Copy)]
struct Point {
    rate: f64,
    p99_us: f64,
}

impl Point {
    fn of(count: u64, elapsed: Duration, latencies: &Histogram<u64>) -> Point {
        Point {
            rate: count as f64 / elapsed.as_secs_f64(),
            p99_us: latencies.value_at_quantile(0.99) as f64 / 1e3,
        }
    }

    /// The better of two rounds: noise on a shared machine only ever slows a run down.
    fn best(self, other: Point) -> Point {
        if other.rate > self.rate { other } else { self }
    }
}

/// Latencies of 1 ns to 60 s (slower ones count as 60 s), two significant digits: the guest's.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000_000, 2)?)
}

/// `clients` guests reading one key over a common window: the merged point.
async fn guests_point(
    backend: &Backend,
    stores: &Arc<Stores>,
    runner: &Arc<Runner>,
    clients: usize,
    window: Duration,
) -> anyhow::Result<Point> {
    let start = unix_ms() + 1_000 + backend.start_ms_per_guest * clients as u64;
    let guests: Vec<_> = (0..clients)
        .map(|_| guest_window(runner.clone(), stores.clone(), "get", 100, start, window))
        .collect();
    let mut latencies = histogram()?;
    let mut rate = 0.0;
    for output in futures::future::try_join_all(guests).await? {
        // `get NS_PER_OP MADE NS:COUNT,…`
        let fields: Vec<&str> = output.split_whitespace().collect();
        let ns: f64 = fields.get(1).unwrap_or(&"").parse()?;
        rate += 1e9 / ns;
        for pair in fields.get(3).unwrap_or(&"").split(',') {
            if let Some((value, count)) = pair.split_once(':') {
                latencies.record_n(value.parse()?, count.parse()?)?;
            }
        }
    }
    anyhow::ensure!(!latencies.is_empty(), "the guests recorded no latencies");
    Ok(Point {
        rate,
        p99_us: latencies.value_at_quantile(0.99) as f64 / 1e3,
    })
}

/// `clients` native clients reading one key over `window`, each a task as each guest is.
async fn native_point(native: &Native, clients: usize, window: Duration) -> anyhow::Result<Point> {
    for _ in 0..10 {
        native.get().await?;
    }
    let started = Instant::now();
    let deadline = started + window;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let native = native.clone();
            tokio::spawn(async move {
                let mut latencies = histogram()?;
                let mut count = 0u64;
                while Instant::now() < deadline {
                    let at = Instant::now();
                    native.get().await?;
                    latencies.saturating_record(at.elapsed().as_nanos() as u64);
                    count += 1;
                }
                anyhow::Ok((count, latencies))
            })
        })
        .collect();
    let mut latencies = histogram()?;
    let mut count = 0;
    for task in futures::future::try_join_all(tasks).await? {
        let (made, recorded) = task?;
        count += made;
        latencies.add(&recorded)?;
    }
    Ok(Point::of(count, started.elapsed(), &latencies))
}

pub async fn clients_rows(settings: &Settings) -> anyhow::Result<()> {
    println!(
        "\n### 7. Clients: `get` of one 256 B key at 1…{} concurrent clients, guests and native clients over one window\n",
        settings.curve_clients.last().copied().unwrap_or(0)
    );
    println!(
        "| backend | clients | guest ops/s | guest p99 µs | native client | native ops/s | native p99 µs | guest / native |"
    );
    println!("|---|---:|---:|---:|---|---:|---:|---:|");
    let (mut rates, mut p99s) = (Vec::new(), Vec::new());
    for backend in backends(settings).await? {
        backend.native.seed().await?;
        let runner = Arc::new(Runner::new(GUEST.as_ref(), None)?);
        let stores = stores(&backend.url).await?;
        let (mut guest_line, mut native_line) = (Vec::new(), Vec::new());
        for &clients in &settings.curve_clients {
            let mut guest: Option<Point> = None;
            let mut native: Option<Point> = None;
            for _ in 0..settings.curve_rounds {
                let point =
                    guests_point(&backend, &stores, &runner, clients, settings.curve_window)
                        .await?;
                guest = Some(guest.map_or(point, |best| best.best(point)));
                let point = native_point(&backend.native, clients, settings.curve_window).await?;
                native = Some(native.map_or(point, |best| best.best(point)));
            }
            let (Some(guest), Some(native)) = (guest, native) else {
                continue;
            };
            println!(
                "| {} | {clients} | {:.0} | {:.1} | {} | {:.0} | {:.1} | {:.2} |",
                backend.name,
                guest.rate,
                guest.p99_us,
                backend.native.name(),
                native.rate,
                native.p99_us,
                guest.rate / native.rate
            );
            guest_line.push((clients as f64, guest));
            native_line.push((clients as f64, native));
        }
        for (side, line) in [("guests", &guest_line), ("native", &native_line)] {
            let label = format!("{} {side}", backend.name);
            rates.push(Series {
                label: label.clone(),
                points: line.iter().map(|&(x, p)| (x, p.rate)).collect(),
            });
            p99s.push(Series {
                label,
                points: line.iter().map(|&(x, p)| (x, p.p99_us)).collect(),
            });
        }
    }
    if let Some(dir) = &settings.plots {
        let chart = |title, y_label| Chart {
            title,
            x_label: "concurrent clients",
            y_label,
            log_x: true,
            log_y: true,
        };
        let path = dir.join("clients-throughput.png");
        line_chart(&path, &chart("get: throughput vs clients", "ops/s"), &rates)?;
        println!("\n![throughput vs clients]({})", path.display());
        let path = dir.join("clients-p99.png");
        line_chart(
            &path,
            &chart("get: p99 latency vs clients", "p99 µs"),
            &p99s,
        )?;
        println!("![p99 vs clients]({})", path.display());
    }
    Ok(())
}

/// The mean time of one call of `call`, over about `budget`, in µs.
pub(super) async fn mean_us<F, Fut>(budget: Duration, mut call: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    call().await?;
    let started = Instant::now();
    let mut calls = 0u32;
    while started.elapsed() < budget || calls < 3 {
        call().await?;
        calls += 1;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(calls))
}

pub async fn get_many_rows(settings: &Settings) -> anyhow::Result<()> {
    println!(
        "\n### 8. `get-many` of 1…1,000 keys of 256 B: `KvStore` (byte-bounded rounds) against the provider's own call\n"
    );
    println!(
        "| backend | keys | provider `get_many` µs | provider `get_many_within` µs | cost of the byte bound (target ≤ 5% at 100) | `KvStore::get_many` µs | host total over `get_many` |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut lines = Vec::new();
    let mut floors = Vec::new();
    let budget = settings.curve_window / 4;
    for backend in backends(settings).await? {
        if backend.name == "redis" {
            floors.push(super::floor::redis_get_many_floor(&backend.url, budget).await?);
        }
        let (_, spec) = kv_core::config::parse_short_form(&format!("s={}", backend.url))?;
        let provider = kv_cli::registry().connect(&spec).await?;
        let namespace = format!("get-many-{:08x}", rand::random::<u32>());
        let bucket: Arc<dyn Bucket> = provider.open(&namespace).await?;
        let store = Stores::builder(kv_core::Limits::default())
            .store("s", provider, &namespace, kv_core::Access::ReadWrite)
            .build()
            .open("s")
            .await?;
        let keys: Vec<String> = (0..1000).map(|i| format!("many-{i:04}")).collect();
        for chunk in keys.chunks(100) {
            let entries = chunk
                .iter()
                .map(|key| (key.clone(), VALUE.to_vec()))
                .collect();
            store.set_many(entries).await?;
        }
        let mut line = Vec::new();
        for size in [1usize, 10, 100, 1000] {
            let keys = &keys[..size];
            let (mut ours, mut theirs, mut within) = (f64::MAX, f64::MAX, f64::MAX);
            let budget_bytes = kv_core::Limits::default().max_batch_bytes;
            for _ in 0..ROUNDS {
                ours = ours.min(
                    mean_us(budget, || async {
                        let values = store.get_many(keys).await?;
                        anyhow::ensure!(values.iter().all(Option::is_some), "a key is missing");
                        Ok(())
                    })
                    .await?,
                );
                theirs = theirs.min(
                    mean_us(budget, || async {
                        let values = bucket.get_many(keys).await?;
                        anyhow::ensure!(values.iter().all(Option::is_some), "a key is missing");
                        Ok(())
                    })
                    .await?,
                );
                within = within.min(
                    mean_us(budget, || async {
                        let values = bucket.get_many_within(keys, budget_bytes).await?;
                        anyhow::ensure!(values.iter().all(Option::is_some), "a key is missing");
                        Ok(())
                    })
                    .await?,
                );
            }
            println!(
                "| {} | {size} | {theirs:.1} | {within:.1} | {:+.1}% | {ours:.1} | {:+.1}% |",
                backend.name,
                (within / theirs - 1.0) * 100.0,
                (ours / theirs - 1.0) * 100.0
            );
            line.push((size as f64, ours));
        }
        lines.push(Series {
            label: backend.name.to_string(),
            points: line,
        });
    }
    for floor in floors {
        println!("{floor}");
    }
    if let Some(dir) = &settings.plots {
        let path = dir.join("get-many.png");
        let chart = Chart {
            title: "get-many: time per call vs keys (256 B values)",
            x_label: "keys per call",
            y_label: "µs per call",
            log_x: true,
            log_y: true,
        };
        line_chart(&path, &chart, &lines)?;
        println!("\n![get-many time vs keys]({})", path.display());
    }
    Ok(())
}
