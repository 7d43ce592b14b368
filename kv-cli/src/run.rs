//! `wasi-kv run`: a wasi:cli command component (WASIp2 or WASIp3) with keyvalue.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use kv_core::Stores;
use kv_host::{KvCtx, KvView, WasiKvView};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};

use kv_host::sandbox::{EpochTicker, MemoryLimiter, is_time_limit, resource_table, set_deadline};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::p3::bindings::Command as P3Command;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Host state of one command run.
pub struct RunState {
    table: ResourceTable,
    wasi: WasiCtx,
    kv: KvCtx,
    limiter: MemoryLimiter,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiKvView for RunState {
    fn kv(&mut self) -> KvView<'_> {
        KvView::new(&self.kv, &mut self.table)
    }
}

/// Where the component's stdout goes.
pub enum Output {
    /// The process's own stdio.
    Inherit,
    /// Captured (for tests); stderr is inherited.
    Capture(MemoryOutputPipe),
}

/// One invocation.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The component file.
    pub component: PathBuf,
    /// `argv[1..]`.
    pub args: Vec<String>,
    /// `NAME=VALUE` pairs.
    pub envs: Vec<String>,
    /// `HOST[::GUEST]` directories.
    pub dirs: Vec<String>,
    /// Longest the component may run; `None`: no limit.
    pub time_limit: Option<Duration>,
    /// Most linear memory the component may use, in bytes.
    pub memory_limit: usize,
}

/// `run`'s default memory limit: 1 GiB.
pub const DEFAULT_RUN_MEMORY_LIMIT: usize = 1 << 30;

/// Runs the component and returns its exit code.
pub async fn run(options: &RunOptions, stores: Arc<Stores>, output: Output) -> anyhow::Result<i32> {
    Arc::new(Runner::new(&options.component, options.time_limit)?)
        .run(options, stores, output)
        .await
}

/// A command component compiled and linked once, to run any number of times, each run a
/// fresh instance (an embedder running one command for many inputs compiles it once).
pub struct Runner {
    engine: Engine,
    component: Component,
    /// Which `wasi:cli/run` the component exports.
    world: CommandWorld,
    linker: Linker<RunState>,
    time_limit: Option<Duration>,
    _ticker: Option<EpochTicker>,
}

impl Runner {
    /// Compiles `component`. With `time_limit`, every run is stopped after it (or after its
    /// own `RunOptions::time_limit`); epoch checks are compiled in only then, since they cost
    /// the guest a little on every loop.
    pub fn new(component: &Path, time_limit: Option<Duration>) -> anyhow::Result<Runner> {
        // A WASIp2 component runs on an engine without concurrency support, exactly as before
        // WASIp3 existed; only a component that uses component-model async (WASIp3) gets an
        // engine with it.
        let engine = run_engine(time_limit, false)?;
        let (engine, component, wasip3) = match load_component(&engine, component) {
            Ok(loaded) => (engine, loaded, false),
            Err(err) if needs_component_model_async(&err) => {
                let engine = run_engine(time_limit, true)?;
                let loaded = load_component(&engine, component)?;
                (engine, loaded, true)
            }
            Err(err) => return Err(err),
        };
        let ticker = time_limit
            .is_some()
            .then(|| EpochTicker::start(engine.clone()));
        let mut linker = Linker::<RunState>::new(&engine);
        // A WASIp3 component built with Rust's standard library imports WASIp2's streams for
        // its stdio too, so WASIp2 is always linked.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Either draft2 `get-many` shape: the one this component was built against.
        kv_host::add_to_linker_for(&mut linker, &component)?;
        // Spin's own key-value interface, for components built with spin-sdk up to 5.x.
        kv_host::add_spin_key_value_to_linker(&mut linker)?;
        if wasip3 {
            wasmtime_wasi::p3::add_to_linker(&mut linker)?;
            // Spin 4's, for WASIp3 components built with spin-sdk 6.x.
            kv_host::add_spin3_key_value_to_linker(&mut linker)?;
        }
        let world = CommandWorld::of(&engine, &component);
        Ok(Runner {
            engine,
            component,
            world,
            linker,
            time_limit,
            _ticker: ticker,
        })
    }

    /// Runs the component once with `options`' arguments, environment, directories and
    /// memory limit, and returns its exit code.
    ///
    /// The component runs as a task of its own on the runtime's workers, beside the
    /// connection tasks of the stores it waits on: a reply then wakes it on the same thread,
    /// without a hop to the thread that called `run` (a `block_on` caller would add two per
    /// store round trip).
    pub async fn run(
        self: &Arc<Self>,
        options: &RunOptions,
        stores: Arc<Stores>,
        output: Output,
    ) -> anyhow::Result<i32> {
        if options.time_limit.is_some() && self.time_limit.is_none() {
            bail!("this runner was compiled without a time limit; create it with one");
        }
        let runner = self.clone();
        let options = options.clone();
        tokio::spawn(async move { runner.run_here(&options, stores, output).await })
            .await
            .map_err(|err| anyhow::anyhow!("the component's task failed: {err}"))?
    }

    async fn run_here(
        &self,
        options: &RunOptions,
        stores: Arc<Stores>,
        output: Output,
    ) -> anyhow::Result<i32> {
        let (engine, component, linker) = (&self.engine, &self.component, &self.linker);
        let mut wasi = WasiCtxBuilder::new();
        match output {
            Output::Inherit => {
                wasi.inherit_stdio();
            }
            Output::Capture(pipe) => {
                wasi.inherit_stdin().stdout(pipe).inherit_stderr();
            }
        }
        let program = options
            .component
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "component".to_string());
        wasi.arg(program);
        wasi.args(&options.args);
        for pair in &options.envs {
            let (name, value) = pair
                .split_once('=')
                .with_context(|| format!("--env {pair}: expected NAME=VALUE"))?;
            wasi.env(name, value);
        }
        for dir in &options.dirs {
            let (host, guest) = parse_dir(dir, cfg!(windows));
            wasi.preopened_dir(host, &guest, FsPerms::ReadWrite)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("--dir {dir}: cannot open {host}"))?;
        }
        let memory_hit = Arc::new(AtomicBool::new(false));
        let state = RunState {
            table: resource_table(),
            wasi: wasi.build(),
            kv: KvCtx::new(stores),
            limiter: MemoryLimiter::new(options.memory_limit, memory_hit.clone()),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limiter);
        // An engine with epoch checks needs a deadline on every store, or the first check
        // would stop the guest at once.
        let time_limit = options.time_limit.or(self.time_limit);
        if time_limit.is_some() {
            set_deadline(&mut store, time_limit);
        }
        let ran = match self.world {
            CommandWorld::P2 => {
                let command = Command::instantiate_async(&mut store, component, linker)
                    .await
                    .map_err(anyhow::Error::from)
                    .context("instantiating the component (is it a wasi:cli command?)")?;
                command.wasi_cli_run().call_run(&mut store).await
            }
            CommandWorld::P3 => {
                let command = P3Command::instantiate_async(&mut store, component, linker)
                    .await
                    .map_err(anyhow::Error::from)
                    .context("instantiating the component as a WASIp3 command")?;
                // The run and every task it spawns are driven by the store's event loop. The
                // epoch deadline stops a guest that computes; a guest that only waits (on a
                // future it never completes, or on the host) is stopped by the clock.
                let ran = store.run_concurrent(async move |store| {
                    command.wasi_cli_run().call_run(store).await
                });
                match time_limit {
                    Some(limit) => match tokio::time::timeout(limit, ran).await {
                        Ok(ran) => ran.and_then(|ran| ran),
                        Err(_) => bail!("the component exceeded its time limit of {limit:?}"),
                    },
                    None => ran.await.and_then(|ran| ran),
                }
            }
        };
        match ran {
            Ok(Ok(())) => Ok(0),
            Ok(Err(())) => Ok(1),
            Err(err) => match err.downcast_ref::<I32Exit>() {
                Some(exit) => Ok(exit.0),
                None => {
                    let err = anyhow::Error::from(err);
                    if is_time_limit(&err) {
                        let limit = time_limit.unwrap_or_default();
                        bail!("the component exceeded its time limit of {limit:?}");
                    }
                    if memory_hit.load(Ordering::Relaxed) {
                        bail!(
                            "the component exceeded its memory limit of {} bytes",
                            options.memory_limit
                        );
                    }
                    Err(err.context("the component trapped"))
                }
            },
        }
    }
}

/// The engine `run` compiles with: epoch checks only with a time limit; component-model
/// async (and the store's concurrency support) only for a WASIp3 component.
fn run_engine(time_limit: Option<Duration>, wasip3: bool) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(time_limit.is_some());
    if wasip3 {
        config.wasm_component_model_async(true);
    } else {
        config.concurrency_support(false);
    }
    Engine::new(&config).map_err(anyhow::Error::from)
}

/// Whether loading failed only because the component uses component-model async (a WASIp3
/// component on an engine without it). wasmparser's message is the only signal; the WASIp3
/// tests (`a_wasip3_command_runs_with_keyvalue`) fail if it changes.
pub(crate) fn needs_component_model_async(err: &anyhow::Error) -> bool {
    format!("{err:#}").contains("component model async feature")
}

/// The WASIp3 `run` this host implements (wasmtime 48.0.8's WASI 0.3.0): release candidates
/// of 0.3 are other interfaces, and fail to link naming their version.
const WASIP3_RUN: &str = "wasi:cli/run@0.3.0";

/// The `wasi:cli/run` a command exports: WASIp2's (`@0.2.x`, a synchronous `run`) or
/// WASIp3's (`@0.3.0`, an async `run` driven by the store's event loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandWorld {
    /// `wasi:cli/run@0.2.x`.
    P2,
    /// `wasi:cli/run@0.3.0`.
    P3,
}

impl CommandWorld {
    /// The run `component` exports: WASIp3's when it exports `wasi:cli/run@0.3.0` (also when
    /// it exports WASIp2's too), else WASIp2's (whose absence instantiation reports).
    pub fn of(engine: &Engine, component: &Component) -> CommandWorld {
        let p3 = component
            .component_type()
            .exports(engine)
            .any(|(name, _)| name == WASIP3_RUN);
        if p3 {
            CommandWorld::P3
        } else {
            CommandWorld::P2
        }
    }
}

pub(crate) fn load_component(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    if !path.exists() {
        bail!("{}: no such file", path.display());
    }
    Component::from_file(engine, path)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{}: not a loadable WebAssembly component", path.display()))
}

/// `--dir HOST[::GUEST]`: the host directory and the path the guest sees. Without `::` the
/// guest sees the host path; a Windows host path (`C:\data`, `\\server\share`) is offered to
/// the guest with forward slashes (`C:/data`), since WASI paths use `/`. `::` never occurs in a
/// Windows path (a drive letter has one colon), so `C:\data::/data` splits at the `::`.
fn parse_dir(text: &str, windows: bool) -> (&str, String) {
    match text.split_once("::") {
        Some((host, guest)) => (host, guest.to_string()),
        None if windows => (text, text.replace('\\', "/")),
        None => (text, text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_dir;

    #[test]
    fn dirs_parse_with_windows_paths() {
        assert_eq!(parse_dir("data", false), ("data", "data".to_string()));
        assert_eq!(parse_dir("/srv/x::/x", false), ("/srv/x", "/x".to_string()));
        assert_eq!(
            parse_dir(r"C:\data::/data", true),
            (r"C:\data", "/data".to_string())
        );
        assert_eq!(
            parse_dir(r"C:\data", true),
            (r"C:\data", "C:/data".to_string())
        );
        assert_eq!(
            parse_dir(r"\\server\share\kv", true),
            (r"\\server\share\kv", "//server/share/kv".to_string())
        );
        assert_eq!(parse_dir(r"a\b", false), (r"a\b", r"a\b".to_string()));
    }
}
