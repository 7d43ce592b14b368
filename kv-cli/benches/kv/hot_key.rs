//! Row 6, **hot key**: P hosts × C guests incrementing one key, against the backend's own
//! atomic counter driven natively by as many clients, over the same wall-clock window.
//!
//! Every host is a separate [`Stores`] (its own connections, as a separate process has), and
//! its guests are instances of one compiled component. After each round the counter must equal
//! the increments the guests made, warm-up included: a throughput bought by losing or doubling
//! increments is not reported.
//!
//! On DynamoDB the row also measures DynamoDB's own exactly-once counter, `TransactWriteItems`
//! with a `ClientRequestToken`, beside `UpdateItem ADD`, after checking that the server honours
//! the token.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use kv_cli::run::Runner;
use kv_core::{KvStore, Stores};
use kv_testkit::emulator::Emulator;

use super::{GUEST, ROUNDS, Settings, guest_window, start_installed, stores, unix_ms};

/// The concurrent writers of the target (docs/benchmarks.md: ≥ 0.8 of native at 16).
pub(super) const WRITERS: usize = 16;
/// The key the bench guest increments.
const GUEST_KEY: &str = "bench-counter";

/// The backend's own counter, incremented by native clients.
enum Native {
    /// `KvStore::increment` on the in-memory store (it has no other client).
    Memory(Arc<Stores>),
    /// `UPDATE … SET n = n + 1` through rusqlite, one connection per writer.
    Sqlite(PathBuf),
    /// `INCRBY` on one multiplexed connection.
    Redis(redis::aio::MultiplexedConnection),
    /// `UpdateItem ADD` with the SDK client.
    Dynamo {
        client: aws_sdk_dynamodb::Client,
        table: String,
    },
    /// No atomic counter: the reason.
    Without(&'static str),
}

struct Backend {
    name: String,
    url: String,
    /// The numbers of hosts sharing the key, one row each: 1 for the in-memory store, which
    /// lives in one host; 16 (one guest each) shows what batching inside a host cannot help.
    shapes: Vec<usize>,
    native: Native,
    _guard: Option<kv_testkit::emulator::Started>,
}

pub async fn hot_key_rows(settings: &Settings) -> anyhow::Result<()> {
    println!(
        "\n### 6. Hot key: {WRITERS} writers incrementing one key, guests against the backend's own counter\n"
    );
    println!(
        "| backend | hosts × guests | guest ok/s | exact | `KvStore` ok/s (no guest) | native counter | native ok/s | guest / native (target ≥ 0.8 on redis, dynamodb) |"
    );
    println!("|---|---|---:|---|---:|---|---:|---:|");
    let dir = tempfile::tempdir()?;
    let wanted = |name: &str| settings.wanted_backend(name);
    let mut floors = Vec::new();
    for backend in backends(dir.path(), &wanted).await? {
        for &hosts in &backend.shapes {
            row(settings, &backend, hosts).await?;
        }
        match &backend.native {
            Native::Dynamo { client, table } => {
                let mut lines = dynamo_transact_rows(client, table, settings.hot_window).await?;
                let mut hosts = Vec::new();
                for _ in 0..WRITERS {
                    hosts.push(stores(&backend.url).await?);
                }
                lines +=
                    &super::floor::dynamo_floor(client, table, &hosts, settings.hot_window).await?;
                floors.push(lines);
            }
            Native::Redis(connection) => {
                floors.push(super::floor::redis_floor(connection, settings.hot_window).await?);
            }
            _ => {}
        }
    }
    for lines in floors {
        println!("{lines}");
    }
    Ok(())
}

/// DynamoDB's own exactly-once counter: `TransactWriteItems` of one `Update … ADD` with a
/// `ClientRequestToken`, which DynamoDB documents as idempotent for 10 minutes. Checks
/// whether the server honours the token (the same token sent twice must add once, and the
/// same token with other parameters must be refused), then measures it beside
/// `UpdateItem ADD` at [`WRITERS`] writers in one run.
async fn dynamo_transact_rows(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    window: Duration,
) -> anyhow::Result<String> {
    let run = format!("{:x}", unix_ms());
    let native = Native::Dynamo {
        client: client.clone(),
        table: table.to_string(),
    };
    reset(&native).await?;
    let token = format!("probe-{run}");
    transact_add(client, table, &token, 1).await?;
    let resent = transact_add(client, table, &token, 1).await;
    let after_resend = total(&native).await?;
    let mismatch = transact_add(client, table, &token, 2).await;
    let after_mismatch = total(&native).await?;
    let mut lines = String::from(
        "\n#### DynamoDB's exactly-once counter: `TransactWriteItems` with a `ClientRequestToken`\n\n",
    );
    lines += &format!(
        "- The same token sent twice: the second call {}; the counter is {after_resend} (1 if the token is honoured).\n",
        match &resent {
            Ok(()) => "succeeded".to_string(),
            Err(err) => format!("failed ({err})"),
        }
    );
    lines += &format!(
        "- The same token with another delta: {}; the counter is {after_mismatch}.\n",
        match &mismatch {
            Ok(()) => "accepted".to_string(),
            Err(err) => format!("refused ({err})"),
        }
    );
    let (mut best_update, mut best_transact) = (0f64, 0f64);
    for round in 0..ROUNDS {
        if let Some(rate) = native_rate(&native, window).await? {
            best_update = best_update.max(rate);
        }
        reset(&native).await?;
        let started = Instant::now();
        let deadline = started + window;
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                // Unique in the run: a token seen in the last 10 minutes adds nothing.
                let run = format!("{run}-{round}");
                let (client, table) = (client.clone(), table.to_string());
                tokio::spawn(async move {
                    let mut count = 0u64;
                    while Instant::now() < deadline {
                        let token = format!("{run}-{writer}-{count}");
                        transact_add(&client, &table, &token, 1).await?;
                        count += 1;
                    }
                    anyhow::Ok(count)
                })
            })
            .collect();
        best_transact = best_transact.max(checked_rate(writers, started, &native).await?);
    }
    lines += &format!(
        "\n| {WRITERS} native writers | ok/s | of `UpdateItem ADD` |\n|---|---:|---:|\n\
         | `UpdateItem ADD` (returns the total; a resend adds again) | {best_update:.0} | 1.00 |\n\
         | `TransactWriteItems` ADD + `ClientRequestToken` (exactly once for 10 min; returns no total) | {best_transact:.0} | {:.2} |\n",
        best_transact / best_update
    );
    Ok(lines)
}

/// One `TransactWriteItems` adding `delta` to the native counter under `token`.
async fn transact_add(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    token: &str,
    delta: i64,
) -> anyhow::Result<()> {
    let update = aws_sdk_dynamodb::types::Update::builder()
        .table_name(table)
        .set_key(Some(dynamo_key()))
        .update_expression("ADD n :d")
        .expression_attribute_values(":d", AttributeValue::N(delta.to_string()))
        .build()?;
    client
        .transact_write_items()
        .transact_items(
            aws_sdk_dynamodb::types::TransactWriteItem::builder()
                .update(update)
                .build(),
        )
        .client_request_token(token)
        .send()
        .await
        .map_err(|err| {
            let code = err
                .as_service_error()
                .and_then(|service| service.code())
                .map(str::to_string);
            anyhow::anyhow!(
                "{}",
                code.unwrap_or_else(
                    || aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string()
                )
            )
        })?;
    Ok(())
}

async fn backends(dir: &Path, wanted: &dyn Fn(&str) -> bool) -> anyhow::Result<Vec<Backend>> {
    let memory = stores("memory:").await?;
    let sqlite = dir.join("hot.db");
    let mut backends = vec![
        Backend {
            name: "memory".into(),
            url: "memory:".into(),
            shapes: vec![1],
            native: Native::Memory(memory),
            _guard: None,
        },
        Backend {
            name: "sqlite".into(),
            url: format!("sqlite:{}", sqlite.display()),
            shapes: vec![2],
            native: Native::Sqlite(dir.join("native.db")),
            _guard: None,
        },
    ];
    for emulator in [
        Emulator::Redis,
        Emulator::DynamoDb,
        Emulator::Cosmos,
        Emulator::Gcs,
    ] {
        let provider = emulator.provider();
        if !wanted(provider) {
            continue;
        }
        let Some(started) = start_installed(emulator).await? else {
            continue;
        };
        let native = match emulator {
            Emulator::Redis => Native::Redis(
                redis::Client::open(started.store_url.as_str())?
                    .get_multiplexed_async_connection()
                    .await?,
            ),
            Emulator::DynamoDb => {
                let (client, table) = super::dynamo_client(&started.store_url).await?;
                Native::Dynamo { client, table }
            }
            Emulator::Cosmos => Native::Without(
                "patch `incr` (not driven here: it needs azure_data_cosmos's unstable_patch)",
            ),
            _ => Native::Without("none: objects have no atomic add"),
        };
        backends.push(Backend {
            name: provider.to_string(),
            url: started.store_url.clone(),
            shapes: match emulator {
                Emulator::Redis | Emulator::DynamoDb => vec![2, 16],
                _ => vec![2],
            },
            native,
            _guard: Some(started),
        });
    }
    backends.retain(|backend| wanted(&backend.name));
    Ok(backends)
}

async fn row(settings: &Settings, backend: &Backend, shape: usize) -> anyhow::Result<()> {
    let hosts = if shape == 1 {
        let Native::Memory(memory) = &backend.native else {
            anyhow::bail!("one host only for the in-memory store");
        };
        vec![memory.clone()]
    } else {
        let mut hosts = Vec::new();
        for _ in 0..shape {
            hosts.push(stores(&backend.url).await?);
        }
        hosts
    };
    let guests_per_host = WRITERS / hosts.len();
    let runner = Arc::new(Runner::new(GUEST.as_ref(), None)?);
    let check: KvStore = hosts[0].open("default").await?;
    let window = settings.hot_window;
    let (mut best_guest, mut best_native, mut exact) = (0f64, None::<f64>, true);
    let mut best_host = 0f64;
    for _ in 0..ROUNDS {
        // Set, not deleted: hosts racing to create a key through a client that resends
        // (Cosmos DB) may have to answer `outcome unknown` (docs/semantics.md S6), and this
        // row measures increments, not creates.
        check.set(GUEST_KEY, b"0".to_vec()).await?;
        // Every guest makes one warm-up increment before the window; slow backends need the
        // margin before a common start.
        let start = unix_ms() + 3_000 + 200 * WRITERS as u64;
        let mut guests = Vec::new();
        for host in &hosts {
            for _ in 0..guests_per_host {
                guests.push(guest_window(
                    runner.clone(),
                    host.clone(),
                    "increment",
                    10,
                    start,
                    window,
                ));
            }
        }
        let (mut rate, mut made) = (0f64, 0u64);
        for output in futures::future::try_join_all(guests).await? {
            let mut fields = output.split_whitespace().skip(1);
            let ns: f64 = fields.next().unwrap_or_default().parse()?;
            made += fields.next().unwrap_or_default().parse::<u64>()?;
            rate += 1e9 / ns;
        }
        let total = check.get(GUEST_KEY).await?.unwrap_or_default();
        exact &= total == made.to_string().into_bytes();
        if !exact {
            println!(
                "{}: the counter is {:?} after {made} increments",
                backend.name,
                String::from_utf8_lossy(&total)
            );
        }
        best_guest = best_guest.max(rate);
        best_host = best_host.max(host_rate(&hosts, window).await?);
        if let Some(native) = native_rate(&backend.native, window).await? {
            best_native = Some(best_native.unwrap_or(0.0).max(native));
        }
    }
    let (counter, native, ratio) = match (&backend.native, best_native) {
        (Native::Without(why), _) => (why.to_string(), String::new(), String::new()),
        (native, Some(rate)) => (
            native.name().to_string(),
            format!("{rate:.0}"),
            format!("{:.2}", best_guest / rate),
        ),
        (native, None) => (native.name().to_string(), String::new(), String::new()),
    };
    println!(
        "| {} | {} × {guests_per_host} | {best_guest:.0} | {} | {best_host:.0} | {counter} | {native} | {ratio} |",
        backend.name,
        hosts.len(),
        if exact { "yes" } else { "**no**" },
    );
    Ok(())
}

impl Native {
    fn name(&self) -> &'static str {
        match self {
            Native::Memory(_) => "`KvStore::increment`",
            Native::Sqlite(_) => "`UPDATE … n = n + 1`",
            Native::Redis(_) => "`INCRBY`",
            Native::Dynamo { .. } => "`UpdateItem ADD`",
            Native::Without(_) => "",
        }
    }
}

fn dynamo_key() -> std::collections::HashMap<String, AttributeValue> {
    [
        ("ns".to_string(), AttributeValue::S("native-bench".into())),
        ("k".to_string(), AttributeValue::S("counter".into())),
    ]
    .into_iter()
    .collect()
}

/// [`WRITERS`] tasks calling [`KvStore::increment`] on the hosts' stores, as many on each,
/// for `window`: ok/s, after checking the total. What the host costs without a guest.
pub(super) async fn host_rate(hosts: &[Arc<Stores>], window: Duration) -> anyhow::Result<f64> {
    const KEY: &str = "host-counter";
    let check = hosts[0].open("default").await?;
    check.set(KEY, b"0".to_vec()).await?;
    let started = Instant::now();
    let deadline = started + window;
    let mut writers = Vec::new();
    for index in 0..WRITERS {
        let store = hosts[index % hosts.len()].open("default").await?;
        writers.push(tokio::spawn(async move {
            let mut count = 0u64;
            while Instant::now() < deadline {
                store.increment(KEY, 1).await?;
                count += 1;
            }
            anyhow::Ok(count)
        }));
    }
    let mut counted = 0;
    for writer in futures::future::try_join_all(writers).await? {
        counted += writer?;
    }
    let rate = counted as f64 / started.elapsed().as_secs_f64();
    let total = check.get(KEY).await?.unwrap_or_default();
    anyhow::ensure!(
        total == counted.to_string().into_bytes(),
        "the host's counter is {:?} after {counted} increments",
        String::from_utf8_lossy(&total)
    );
    Ok(rate)
}

/// Starts the native counter at 0.
async fn reset(native: &Native) -> anyhow::Result<()> {
    match native {
        Native::Without(_) => {}
        Native::Memory(stores) => {
            stores
                .open("default")
                .await?
                .delete("native-counter")
                .await?
        }
        Native::Sqlite(path) => {
            let setup = rusqlite::Connection::open(path)?;
            setup.pragma_update(None, "journal_mode", "WAL")?;
            setup.execute_batch(
                "CREATE TABLE IF NOT EXISTS counters (k TEXT PRIMARY KEY, n INTEGER NOT NULL);
                 INSERT OR REPLACE INTO counters VALUES ('c', 0);",
            )?;
        }
        Native::Redis(connection) => {
            redis::cmd("DEL")
                .arg("native-counter")
                .query_async::<()>(&mut connection.clone())
                .await?
        }
        Native::Dynamo { client, table } => {
            client
                .delete_item()
                .table_name(table)
                .set_key(Some(dynamo_key()))
                .send()
                .await?;
        }
    }
    Ok(())
}

/// The native counter's total.
async fn total(native: &Native) -> anyhow::Result<u64> {
    Ok(match native {
        Native::Without(_) => 0,
        Native::Memory(stores) => {
            let total = stores.open("default").await?.get("native-counter").await?;
            String::from_utf8(total.unwrap_or_default())?.parse()?
        }
        Native::Sqlite(path) => rusqlite::Connection::open(path)?
            .query_row("SELECT n FROM counters WHERE k = 'c'", [], |row| {
                row.get::<_, i64>(0)
            })?
            .try_into()?,
        Native::Redis(connection) => {
            redis::cmd("GET")
                .arg("native-counter")
                .query_async(&mut connection.clone())
                .await?
        }
        Native::Dynamo { client, table } => {
            let item = client
                .get_item()
                .table_name(table)
                .set_key(Some(dynamo_key()))
                .consistent_read(true)
                .send()
                .await?;
            match item.item.as_ref().and_then(|item| item.get("n")) {
                Some(AttributeValue::N(n)) => n.parse()?,
                _ => 0,
            }
        }
    })
}

/// [`WRITERS`] native clients incrementing one key for `window`: ok/s, after checking the
/// counter's total against the increments counted.
async fn native_rate(native: &Native, window: Duration) -> anyhow::Result<Option<f64>> {
    if matches!(native, Native::Without(_)) {
        return Ok(None);
    }
    reset(native).await?;
    let started = Instant::now();
    let deadline = started + window;
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| match native {
            Native::Without(_) => tokio::spawn(async { anyhow::Ok(0) }),
            Native::Memory(stores) => {
                let stores = stores.clone();
                tokio::spawn(async move {
                    let store = stores.open("default").await?;
                    let mut count = 0u64;
                    while Instant::now() < deadline {
                        store.increment("native-counter", 1).await?;
                        count += 1;
                    }
                    anyhow::Ok(count)
                })
            }
            Native::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let connection = rusqlite::Connection::open(path)?;
                    connection.busy_timeout(Duration::from_secs(30))?;
                    let mut update =
                        connection.prepare("UPDATE counters SET n = n + 1 WHERE k = 'c'")?;
                    let mut count = 0u64;
                    while Instant::now() < deadline {
                        update.execute([])?;
                        count += 1;
                    }
                    anyhow::Ok(count)
                })
            }
            Native::Redis(connection) => {
                let mut connection = connection.clone();
                tokio::spawn(async move {
                    let mut count = 0u64;
                    while Instant::now() < deadline {
                        redis::cmd("INCRBY")
                            .arg("native-counter")
                            .arg(1)
                            .query_async::<i64>(&mut connection)
                            .await?;
                        count += 1;
                    }
                    anyhow::Ok(count)
                })
            }
            Native::Dynamo { client, table } => {
                let (client, table) = (client.clone(), table.clone());
                tokio::spawn(async move {
                    let mut count = 0u64;
                    while Instant::now() < deadline {
                        client
                            .update_item()
                            .table_name(&table)
                            .set_key(Some(dynamo_key()))
                            .update_expression("ADD n :one")
                            .expression_attribute_values(":one", AttributeValue::N("1".into()))
                            .return_values(ReturnValue::UpdatedNew)
                            .send()
                            .await?;
                        count += 1;
                    }
                    anyhow::Ok(count)
                })
            }
        })
        .collect();
    Ok(Some(checked_rate(writers, started, native).await?))
}

/// The increments per second the `writers` made since `started`, after checking that the
/// native counter's total is exactly their count.
async fn checked_rate(
    writers: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
    started: Instant,
    native: &Native,
) -> anyhow::Result<f64> {
    let mut counted = 0;
    for writer in futures::future::try_join_all(writers).await? {
        counted += writer?;
    }
    let rate = counted as f64 / started.elapsed().as_secs_f64();
    let total = total(native).await?;
    anyhow::ensure!(
        total == counted,
        "the native counter is {total} after {counted} increments"
    );
    Ok(rate)
}
