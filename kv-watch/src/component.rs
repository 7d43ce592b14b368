//! A `watch-service` component as the [`Watcher`](crate::Watcher) of a [`Delivery`]: what
//! `wasi-kv watch` and the conformance runner's watch cases run. Each call of `on-set` or
//! `on-delete` runs under the limits `serve` applies to a request (`kv_host::sandbox`); an
//! instance that trapped or ran out of time or memory is dropped, and the next call gets a new
//! one.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use kv_core::{KvStore, Stores};
use kv_host::sandbox::{
    EpochTicker, MemoryLimiter, TimeLimitExceeded, is_time_limit, resource_table, set_deadline,
};
use kv_host::watch::{WatchVersion, WatcherInstance};
use kv_host::{KvCtx, KvView, WasiKvView};
use tracing::info;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::{Delivered, Delivery, Position, WatchOptions};

/// What one call of the component may use.
#[derive(Debug, Clone)]
pub struct CallLimits {
    /// Longest one `on-set` or `on-delete` may run.
    pub time_limit: Duration,
    /// Most linear memory the component may use.
    pub memory_limit: usize,
    /// Environment variables the component sees.
    pub envs: Vec<(String, String)>,
}

/// Which stores one watcher follows, and where it keeps its records.
#[derive(Debug, Clone)]
pub struct WatchPlan {
    /// Names the watcher in checkpoint and dead-letter keys.
    pub name: String,
    /// The stores whose changes are delivered.
    pub watched: Vec<String>,
    /// The store keeping checkpoints (and, by default, dead letters).
    pub state: String,
    /// The store receiving dead letters; `None`: the state store.
    pub dead_letters: Option<String>,
    /// Reads, retries and backoff.
    pub delivery: WatchOptions,
}

/// The state of one watcher instance.
struct WatchState {
    table: ResourceTable,
    wasi: WasiCtx,
    kv: KvCtx,
    limiter: MemoryLimiter,
}

impl WasiView for WatchState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiKvView for WatchState {
    fn kv(&mut self) -> KvView<'_> {
        KvView::new(&self.kv, &mut self.table)
    }
}

/// A compiled `watch-service` component (either WIT version), shared by the watchers of every
/// store it follows.
pub struct WatcherComponent {
    engine: Engine,
    component: Component,
    linker: Linker<WatchState>,
    version: WatchVersion,
    envs: Vec<(String, String)>,
    time_limit: Duration,
    memory_limit: usize,
    _ticker: EpochTicker,
}

/// Calls the component for one store's changes. An instance that trapped or ran out of time is
/// dropped, and the next call gets a new one.
struct ComponentWatcher {
    compiled: Arc<WatcherComponent>,
    stores: Arc<Stores>,
    instance: Option<(Store<WatchState>, WatcherInstance)>,
    memory_hit: Arc<AtomicBool>,
}

impl ComponentWatcher {
    async fn instance(&mut self) -> anyhow::Result<&mut (Store<WatchState>, WatcherInstance)> {
        if self.instance.is_none() {
            let compiled = &self.compiled;
            let mut wasi = WasiCtxBuilder::new();
            wasi.inherit_stderr();
            for (name, value) in &compiled.envs {
                wasi.env(name, value);
            }
            self.memory_hit.store(false, Ordering::Relaxed);
            let state = WatchState {
                table: resource_table(),
                wasi: wasi.build(),
                kv: KvCtx::new(self.stores.clone()),
                limiter: MemoryLimiter::new(compiled.memory_limit, self.memory_hit.clone()),
            };
            let mut store = Store::new(&compiled.engine, state);
            store.limiter(|state| &mut state.limiter);
            set_deadline(&mut store, Some(compiled.time_limit));
            let instance = WatcherInstance::instantiate(
                &mut store,
                &compiled.linker,
                &compiled.component,
                compiled.version,
            )
            .await
            .map_err(anyhow::Error::from)
            .context("instantiating the watcher")?;
            self.instance = Some((store, instance));
        }
        self.instance
            .as_mut()
            .context("the watcher instance is gone")
    }

    /// One call, under the time limit; the instance is dropped if it failed.
    async fn call(
        &mut self,
        store: &KvStore,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), String> {
        let time_limit = self.compiled.time_limit;
        let memory_limit = self.compiled.memory_limit;
        let result = async {
            let (wasm_store, instance) = self.instance().await?;
            set_deadline(wasm_store, Some(time_limit));
            // The epoch deadline stops a guest that computes; this stops one that waits.
            let call = async {
                match value {
                    Some(value) => instance.on_set(wasm_store, store, key, value).await,
                    None => instance.on_delete(wasm_store, store, key).await,
                }
            };
            match tokio::time::timeout(time_limit, call).await {
                Ok(result) => result.map_err(anyhow::Error::from),
                Err(_) => Err(anyhow::Error::from(TimeLimitExceeded)),
            }
        }
        .await;
        result.map_err(|err| {
            self.instance = None;
            if is_time_limit(&err) {
                format!("the watcher exceeded its time limit of {time_limit:?}")
            } else if self.memory_hit.load(Ordering::Relaxed) {
                format!("the watcher exceeded its memory limit of {memory_limit} bytes")
            } else {
                format!("the watcher trapped: {err:#}")
            }
        })
    }
}

#[async_trait]
impl crate::Watcher for ComponentWatcher {
    async fn on_set(&mut self, store: &KvStore, key: &str, value: &[u8]) -> Result<(), String> {
        self.call(store, key, Some(value)).await
    }

    async fn on_delete(&mut self, store: &KvStore, key: &str) -> Result<(), String> {
        self.call(store, key, None).await
    }
}

impl WatcherComponent {
    /// Compiles the component file at `path`; fails unless it exports a `watcher`.
    pub fn from_file(path: &Path, limits: CallLimits) -> anyhow::Result<WatcherComponent> {
        let engine = Self::engine()?;
        let component = Component::from_file(&engine, path)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("loading {}", path.display()))?;
        Self::new(engine, component, &path.display().to_string(), limits)
    }

    /// Compiles a component from its bytes; `what` names it in errors.
    pub fn from_bytes(
        bytes: &[u8],
        what: &str,
        limits: CallLimits,
    ) -> anyhow::Result<WatcherComponent> {
        let engine = Self::engine()?;
        let component = Component::new(&engine, bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling {what}"))?;
        Self::new(engine, component, what, limits)
    }

    fn engine() -> anyhow::Result<Engine> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.concurrency_support(false);
        Engine::new(&config).map_err(anyhow::Error::from)
    }

    fn new(
        engine: Engine,
        component: Component,
        what: &str,
        limits: CallLimits,
    ) -> anyhow::Result<WatcherComponent> {
        let Some(version) = WatchVersion::of(&engine, &component) else {
            bail!(
                "{what} exports no wasi:keyvalue/watcher (0.2.0-draft2 or 0.2.0-draft): it is \
                 not a watch-service component"
            );
        };
        let mut linker = Linker::<WatchState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        kv_host::add_to_linker_for(&mut linker, &component)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(WatcherComponent {
            engine,
            component,
            linker,
            version,
            envs: limits.envs,
            time_limit: limits.time_limit,
            memory_limit: limits.memory_limit,
            _ticker: ticker,
        })
    }
}

/// A watcher whose starting positions are taken: every change made from now on will be
/// delivered by [`Watching::run`].
pub struct Watching {
    deliveries: Vec<(String, Delivery, Position, ComponentWatcher)>,
    name: String,
}

impl Watching {
    /// Opens the stores of `plan` and takes each watched store's starting position (its
    /// checkpoint, or its head now).
    pub async fn start(
        component: Arc<WatcherComponent>,
        plan: &WatchPlan,
        stores: Arc<Stores>,
    ) -> anyhow::Result<Watching> {
        let name = &plan.name;
        if name.is_empty() || name.contains('/') {
            bail!("watcher name {name:?}: a watcher's name is not empty and has no '/'");
        }
        if plan.watched.is_empty() {
            bail!("nothing to watch: name a store with --watch STORE");
        }
        let dead_letter_store = plan.dead_letters.as_deref().unwrap_or(&plan.state);
        for watched in &plan.watched {
            for (what, other) in [
                ("--state", plan.state.as_str()),
                ("--dead-letter", dead_letter_store),
            ] {
                if stores.same_keys(watched, other) {
                    bail!(
                        "{what} {other}: it is the watched store {watched:?}, which cannot keep \
                         the watcher's own records (each record would be a change to deliver)"
                    );
                }
            }
        }
        let state = stores
            .open(&plan.state)
            .await
            .map_err(|err| anyhow::anyhow!("--state {}: {err}", plan.state))?;
        let dead_letters = stores
            .open(dead_letter_store)
            .await
            .map_err(|err| anyhow::anyhow!("dead letters in {dead_letter_store}: {err}"))?;
        let mut deliveries = Vec::new();
        for watched in &plan.watched {
            let store = stores
                .open(watched)
                .await
                .map_err(|err| anyhow::anyhow!("--watch {watched}: {err}"))?;
            let delivery = Delivery::new(
                name,
                store,
                state.clone(),
                dead_letters.clone(),
                plan.delivery.clone(),
            )
            .map_err(|err| anyhow::anyhow!("--watch {watched}: {err}"))?;
            let from = delivery
                .start()
                .await
                .map_err(|err| anyhow::anyhow!("--watch {watched}: {err}"))?;
            let watcher = ComponentWatcher {
                compiled: component.clone(),
                stores: stores.clone(),
                instance: None,
                memory_hit: Arc::new(AtomicBool::new(false)),
            };
            deliveries.push((watched.clone(), delivery, from, watcher));
        }
        Ok(Watching {
            deliveries,
            name: name.clone(),
        })
    }

    /// Delivers the watched stores' changes to the component until `shutdown` completes,
    /// then saves every checkpoint and returns what was delivered per store. One store whose
    /// delivery fails stops the others, and the error is returned.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Vec<(String, Delivered)>> {
        self.run_or_kill(shutdown, std::future::pending()).await
    }

    /// [`Watching::run`], or, once `kill` completes, a stop as abrupt as a killed process's:
    /// each delivery is dropped wherever it is (no checkpoint saved beyond its last batch's)
    /// and has ended when this returns, with an error. What tests of resuming need.
    pub async fn run_or_kill(
        self,
        shutdown: impl std::future::Future<Output = ()>,
        kill: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Vec<(String, Delivered)>> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let names: Vec<String> = self
            .deliveries
            .iter()
            .map(|(name, ..)| name.clone())
            .collect();
        for (watched, delivery, from, mut watcher) in self.deliveries {
            let stopped = stopped.clone();
            tasks.spawn(async move {
                let result = delivery.run(&mut watcher, from, stopped).await;
                (watched, result)
            });
        }
        info!(watcher = %self.name, stores = ?names, "watching");
        let mut shutdown = std::pin::pin!(shutdown);
        let mut kill = std::pin::pin!(kill);
        let mut delivered = Vec::new();
        let mut failed = None;
        loop {
            tokio::select! {
                () = &mut kill => {
                    tasks.abort_all();
                    // Each aborted task is joined: none runs on once this returns.
                    while tasks.join_next().await.is_some() {}
                    bail!("killed");
                }
                () = &mut shutdown, if !*stop.borrow() => {
                    info!("stopping: finishing the deliveries under way and saving checkpoints");
                    let _ = stop.send(true);
                }
                joined = tasks.join_next() => {
                    let Some(joined) = joined else { break };
                    let (watched, result) = joined.context("a delivery task failed")?;
                    match result {
                        Ok(summary) => {
                            info!(store = %watched, ?summary, "stopped");
                            delivered.push((watched, summary));
                        }
                        Err(err) => {
                            // One store failing stops the others: a half-running watcher
                            // would look healthy while missing changes.
                            tracing::error!(store = %watched, error = %err, "delivery stopped");
                            failed.get_or_insert(format!("--watch {watched}: {err}"));
                            let _ = stop.send(true);
                        }
                    }
                }
            }
        }
        match failed {
            Some(err) => bail!("{err}"),
            None => Ok(delivered),
        }
    }
}
