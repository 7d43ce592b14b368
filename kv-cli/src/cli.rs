//! Command-line definition.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run WebAssembly components with wasi:keyvalue backed by real stores, and test providers.
#[derive(Debug, Parser)]
#[command(name = "wasi-kv", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a wasi:cli command component.
    Run(RunArgs),
    /// Serve a wasi:http incoming-handler component, one instance per request.
    Serve(ServeArgs),
    /// Call a watch-service component's `on-set`/`on-delete` for every change of the watched
    /// stores: at least once, in order per key, resumable from a checkpoint.
    Watch(WatchArgs),
    /// Run the conformance suite against a provider.
    Conformance(ConformanceArgs),
    /// Record concurrent clients' histories under faults and check them (linearizability per
    /// key, counters, listings).
    Check(CheckArgs),
    /// Read and write a configured store's keys, export and import them, copy a store to
    /// another provider.
    Store(StoreCommand),
    /// Merge conformance reports (every provider and platform), fault matrices and history
    /// checks found under the directories into one HTML page.
    Report(ReportArgs),
}

/// `wasi-kv report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Where the page goes (default: index.html in the first directory).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Directories written by `conformance --report-dir`, the fault tests and `check
    /// --report-dir` (searched recursively).
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
}

/// `wasi-kv store`.
#[derive(Debug, Args)]
pub struct StoreCommand {
    /// What to do.
    #[command(subcommand)]
    pub action: StoreAction,
}

/// One configured store: which, and where stores come from.
#[derive(Debug, Args, Clone)]
pub struct StoreTarget {
    /// Stores.
    #[command(flatten)]
    pub stores: StoreArgs,
    /// The store to use (default: `default`, or the only store configured).
    #[arg(long, value_name = "NAME")]
    pub bucket: Option<String>,
}

/// How many keys `export`, `import`, `copy` and `verify` read and write at once.
#[derive(Debug, Args, Clone, Copy)]
pub struct Jobs {
    /// Keys read and written at once.
    #[arg(long = "jobs", value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub count: u16,
}

impl Jobs {
    /// The count, as a limit of concurrent calls.
    pub fn get(self) -> usize {
        usize::from(self.count)
    }
}

/// `wasi-kv store` subcommands.
#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// Print a key's value on stdout (exit code 1 if the key is missing).
    Get {
        /// The store.
        #[command(flatten)]
        target: StoreTarget,
        /// The key.
        key: String,
    },
    /// Write a key.
    Set {
        /// The store.
        #[command(flatten)]
        target: StoreTarget,
        /// The key.
        key: String,
        /// The value, or `@FILE` for a file's bytes (`@@` for a literal `@`).
        value: String,
        /// Expire the key after this long, e.g. `10m`.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Delete a key (a missing key is fine).
    Delete {
        /// The store.
        #[command(flatten)]
        target: StoreTarget,
        /// The key.
        key: String,
    },
    /// Add to a counter and print its new value.
    Incr {
        /// The store.
        #[command(flatten)]
        target: StoreTarget,
        /// The key.
        key: String,
        /// What to add (negative to subtract).
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
    },
    /// Print keys, one per line, a page at a time.
    List {
        /// The store.
        #[command(flatten)]
        target: StoreTarget,
        /// Only keys starting with this (the store is still listed whole).
        #[arg(long)]
        prefix: Option<String>,
        /// Stop after this many keys.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Write every key as a JSON line: key, value (text, or base64), TTL left.
    Export {
        /// The store.
        #[command(flatten)]
        target: StoreTarget,
        /// Only keys starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Write into this file (whole, or not at all) instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Keys read and written at once.
        #[command(flatten)]
        jobs: Jobs,
    },
    /// Write the keys of an export file; checks every line before writing any.
    Import {
        /// The store.
        #[command(flatten)]
        target: StoreTarget,
        /// The JSON-lines file `export` wrote.
        file: PathBuf,
        /// Carry on from where an interrupted import of the same file stopped.
        #[arg(long)]
        resume: bool,
        /// The checkpoint file (default: FILE.import-state).
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Keys read and written at once.
        #[command(flatten)]
        jobs: Jobs,
    },
    /// Copy every key (with its TTL) from one configured store to another, then verify.
    Copy {
        /// Stores.
        #[command(flatten)]
        stores: StoreArgs,
        /// The store to copy from (only read).
        from: String,
        /// The store to copy into.
        to: String,
        /// Carry on from where an interrupted copy stopped.
        #[arg(long)]
        resume: bool,
        /// The checkpoint file (default: wasi-kv-copy-FROM-TO.state).
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Keys read and written at once.
        #[command(flatten)]
        jobs: Jobs,
        /// Skip the verification pass.
        #[arg(long)]
        no_verify: bool,
    },
    /// Compare two stores: key counts, and every key's value (exit code 1 on any difference).
    Verify {
        /// Stores.
        #[command(flatten)]
        stores: StoreArgs,
        /// The reference store.
        from: String,
        /// The store that should hold the same keys and values.
        to: String,
        /// Keys read and written at once.
        #[command(flatten)]
        jobs: Jobs,
    },
}

/// Where stores come from; with neither, `default` is the in-memory store.
#[derive(Debug, Args, Clone, Default)]
pub struct StoreArgs {
    /// TOML configuration file with `[stores.NAME]` tables.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A store in short form, e.g. `cache=memory:` or `users=redis://127.0.0.1:6379/0`.
    #[arg(long = "store", value_name = "NAME=URL")]
    pub stores: Vec<String>,
    /// Preset a key before the component starts: `KEY=VALUE` in the default store (`""`),
    /// `STORE::KEY=VALUE` in another; `KEY=@FILE` takes the file's bytes (`@@` for a
    /// literal `@`). Repeatable.
    #[arg(long = "seed", value_name = "[STORE::]KEY=VALUE")]
    pub seeds: Vec<String>,
    /// Spin's runtime configuration file: its `[key_value_store.NAME]` tables become stores
    /// (`spin` -> sqlite, `redis`, `azure_cosmos` -> cosmos, `aws_dynamo` -> dynamodb).
    #[arg(long, value_name = "FILE")]
    pub spin_runtime_config: Option<PathBuf>,
}

/// `wasi-kv run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Stores offered to the component.
    #[command(flatten)]
    pub stores: StoreArgs,
    /// Set an environment variable for the component.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub envs: Vec<String>,
    /// Give the component a host directory, optionally under another guest path.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    pub dirs: Vec<String>,
    /// Longest the component may run, e.g. `30s`; past it, it is stopped (exit code 1).
    /// Default: no limit.
    #[arg(long, value_parser = parse_duration)]
    pub time_limit: Option<Duration>,
    /// Most linear memory the component may use, e.g. `256MiB`; past it, memory growth fails.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub memory_limit: usize,
    /// Serve Prometheus metrics of the store operations on `http://ADDR/metrics` while the
    /// component runs (e.g. `127.0.0.1:9464`; unauthenticated: keep it on loopback).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Export OpenTelemetry spans (the run, each store operation) over OTLP/HTTP to this
    /// collector, e.g. `http://127.0.0.1:4318`.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// The component (.wasm).
    pub component: PathBuf,
    /// Arguments passed to the component.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// `wasi-kv watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Stores offered to the component, the watched ones among them.
    #[command(flatten)]
    pub stores: StoreArgs,
    /// A store whose changes are delivered. Repeatable.
    #[arg(long = "watch", value_name = "STORE", required = true)]
    pub watched: Vec<String>,
    /// The store keeping the checkpoints, so a restart resumes where the watcher stopped
    /// (a durable store for a durable one; `--store state=memory:` when nothing is to
    /// survive the process).
    #[arg(long, value_name = "STORE")]
    pub state: String,
    /// The store receiving changes the component failed `--max-attempts` times
    /// (default: the state store).
    #[arg(long = "dead-letter", value_name = "STORE")]
    pub dead_letters: Option<String>,
    /// Names the watcher in checkpoint and dead-letter keys (default: the file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable for the component.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub envs: Vec<String>,
    /// Longest one `on-set` or `on-delete` may run.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub time_limit: Duration,
    /// Most linear memory the component may use.
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    pub memory_limit: usize,
    /// Deliveries of one change before it goes to the dead-letter store.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// The first wait before delivering a failed change again (doubled each time, up to 5s).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub retry_backoff: Duration,
    /// Changes read (and checkpointed) at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// The component (.wasm).
    pub component: PathBuf,
}

/// `wasi-kv serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Stores offered to the component.
    #[command(flatten)]
    pub stores: StoreArgs,
    /// Set an environment variable for the component.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub envs: Vec<String>,
    /// Longest a request may run, e.g. `30s` or `500ms`; a request over it gets a 504.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub time_limit: Duration,
    /// Most linear memory one request's instance may use, e.g. `128MiB`; a request over it
    /// gets a 500.
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    pub memory_limit: usize,
    /// How long Ctrl-C or SIGTERM waits for in-flight requests, e.g. `30s`.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Let the component's outbound HTTP reach `SCHEME://HOST[:PORT]` (Spin's
    /// `allowed_outbound_hosts` patterns: `https://*.example.com`, `http://127.0.0.1:*`);
    /// repeatable, added to the config file's `[outbound] allowed_hosts`. Without any, every
    /// outbound request is denied.
    #[arg(long = "allow-outbound", value_name = "SCHEME://HOST[:PORT]")]
    pub allow_outbound: Vec<String>,
    /// Time a client has to send a request head, e.g. `10s`; it also closes a keep-alive
    /// connection left idle that long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// How long a response write may wait on a client that takes nothing of it, e.g. `60s`;
    /// then the connection closes (a client reading slower than a third of the socket's send
    /// buffer in that time counts too).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// Connections open at once; one more gets a 503 and is closed.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Requests running at once; one more gets a 503.
    #[arg(long, default_value_t = 256)]
    pub max_requests: u32,
    /// Requests one instance of a WASI 0.3 handler answers before it is retired; 1 gives
    /// every request a fresh instance, as a WASI 0.2 handler always gets.
    #[arg(long, default_value_t = 128)]
    pub instance_reuse: usize,
    /// Requests one instance of a WASI 0.3 handler answers at once.
    #[arg(long, default_value_t = 16)]
    pub instance_concurrency: usize,
    /// Largest request body, e.g. `16MiB`; a larger Content-Length gets a 413.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub max_body: usize,
    /// Serve Prometheus metrics (requests, instance memory, store operations) on
    /// `http://ADDR/metrics`, e.g. `127.0.0.1:9464` (port 0 picks one, printed on stdout after
    /// the serving line; unauthenticated: keep it on loopback).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Export OpenTelemetry spans (each request, each store operation in it) over OTLP/HTTP
    /// to this collector, e.g. `http://127.0.0.1:4318`.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// The component (.wasm).
    pub component: PathBuf,
}

/// A duration above zero, as humantime writes it: `500ms`, `30s`, `2m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    // humantime reads `5M` as five months: as a time limit that is no limit at all.
    if text.contains('M') {
        return Err(format!(
            "{text:?}: `M` is ambiguous (humantime reads months); write `m` for minutes"
        ));
    }
    let duration = humantime::parse_duration(text)
        .map_err(|err| format!("{text:?}: {err} (e.g. 500ms, 30s or 2m)"))?;
    if duration.is_zero() {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(duration)
}

/// At least one 64 KiB wasm page, as bytesize writes it: `65536`, `512KiB`, `128MiB`, `1GiB`
/// (decimal `MB`/`M` are 1000², not 1024²).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize = text
        .parse()
        .map_err(|err| format!("{text:?}: {err} (e.g. 128MiB)"))?;
    // bytesize saturates on overflow: `20EiB` would be u64::MAX, a limit that is no limit.
    let bytes = Some(size.as_u64())
        .filter(|bytes| *bytes != u64::MAX)
        .and_then(|bytes| usize::try_from(bytes).ok())
        .ok_or_else(|| format!("{text:?}: too large"))?;
    if bytes < 1 << 16 {
        return Err(format!("{text:?}: must be at least one 64 KiB wasm page"));
    }
    Ok(bytes)
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable table.
    Table,
    /// JSON report (`results` array and environment facts).
    Json,
    /// JUnit XML.
    Junit,
    /// Markdown evidence page.
    Markdown,
}

/// `wasi-kv conformance`.
#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// Provider to test (`memory`, or one compiled in with its cargo feature).
    #[arg(long)]
    pub provider: String,
    /// Connection settings: the first configured store of that provider is used.
    #[command(flatten)]
    pub stores: StoreArgs,
    /// Start the provider's local emulator on a free loopback port, run, and stop it
    /// (redis-server, DynamoDB Local, fake-gcs-server, or the local Cosmos DB server).
    #[arg(long, conflicts_with_all = ["config", "stores"])]
    pub emulator: bool,
    /// Write report.json, report.xml, report.md and report.html into this directory.
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// What to print on stdout at the end.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Cases run at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Run only the cases whose name contains this text (repeatable; default: every case).
    #[arg(long = "case", value_name = "TEXT")]
    pub cases: Vec<String>,
    /// Run through a fault profile: `lossy` drops the reply of every 10th request after the
    /// backend executed it (a loopback proxy with --emulator; in-process hooks on memory).
    #[arg(long, value_enum, value_name = "PROFILE")]
    pub faults: Option<FaultProfile>,
}

/// `wasi-kv check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Provider to check (`memory` and `sqlite` run in this process without a URL).
    #[arg(long)]
    pub provider: String,
    /// Start the provider's local emulator on loopback (durable when the nemesis kills it),
    /// behind the fault proxy.
    #[arg(long, conflicts_with = "store")]
    pub emulator: bool,
    /// Check a store you run, e.g. `redis://127.0.0.1:6379/0` (only `--nemesis none`: faults
    /// are injected only into backends this command started on loopback).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// What the clients do: register, counter, cas, list, or mixed (all four at once).
    #[arg(long, default_value = "mixed", value_parser = |s: &str| s.parse::<kv_check::Workload>())]
    pub workload: kv_check::Workload,
    /// Faults: none, drop-reply, drop-request, partition, crash, or all (each in turn).
    #[arg(long, value_parser = |s: &str| s.parse::<kv_conformance::histories::NemesisKind>())]
    pub nemesis: Option<kv_conformance::histories::NemesisKind>,
    /// How long the clients run, e.g. `60s` (at most 1h).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub time: Duration,
    /// Most operations in all (the run ends at this or at --time; the checker's time grows
    /// with it).
    #[arg(long, default_value_t = 100_000)]
    pub max_ops: u64,
    /// Clients per host.
    #[arg(long, default_value_t = 8)]
    pub clients: u32,
    /// Most operations per second, all clients together.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Hosts in this process, each with its own connection to the store.
    #[arg(long, default_value_t = 2)]
    pub hosts: u32,
    /// Host processes (`wasi-kv run` of the workload component) beside them.
    #[arg(long, default_value_t = 0)]
    pub processes: u32,
    /// Keys per workload (few keys, more contention).
    #[arg(long, default_value_t = 5)]
    pub keys: u32,
    /// Seed of the workload and the nemesis (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write check.md, check.json, history.jsonl and anomaly-N.json into this directory.
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// Print the report as JSON instead of markdown.
    #[arg(long)]
    pub json: bool,
    /// Check every register strictly: no plain write takes effect twice, though the host's
    /// retries can repeat one within its call (docs/semantics.md S4). Shows the declared
    /// divergence rather than allowing it.
    #[arg(long)]
    pub strict: bool,
    /// Check a recorded history (`history.jsonl` of an earlier `--report-dir`) instead of
    /// running one.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["emulator", "store", "processes"])]
    pub history: Option<PathBuf>,
}

/// Fault profiles of `wasi-kv conformance --faults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultProfile {
    /// The reply of every 10th request is lost after the backend executed it.
    Lossy,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spellings `--time-limit` and friends accepted before humantime still mean the same.
    #[test]
    fn durations() {
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h 30m", Duration::from_secs(5400)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in ["0s", "0ms", "30", "", "5x", "-1s", "s", "5M", "1M 2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    /// The spellings `--memory-limit` and `--max-body` accepted before bytesize still mean
    /// the same.
    #[test]
    fn sizes() {
        for (text, expected) in [
            ("65536", 65536),
            ("65536B", 65536),
            ("512KiB", 512 << 10),
            ("128MiB", 128 << 20),
            ("1GiB", 1 << 30),
            ("16 MiB", 16 << 20),
        ] {
            assert_eq!(parse_size(text), Ok(expected), "{text}");
        }
        // Too large saturates in bytesize; it must be refused, not become "no limit".
        for bad in [
            "",
            "lots",
            "1KiB",
            "65535",
            "12XiB",
            "99999999999999999999",
            "99999999999GiB",
            "20EiB",
            "1e30",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
