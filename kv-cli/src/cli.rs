//! Command-line definition.

use std::path::PathBuf;

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
    /// Run the conformance suite against a provider.
    Conformance(ConformanceArgs),
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
    /// The component (.wasm).
    pub component: PathBuf,
    /// Arguments passed to the component.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
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
    /// (redis: `redis-server`).
    #[arg(long, conflicts_with_all = ["config", "stores"])]
    pub emulator: bool,
    /// Write report.json, report.xml and report.md into this directory.
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// What to print on stdout at the end.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Cases run at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
}
