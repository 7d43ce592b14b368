//! Runs the guest's cases against a provider.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use kv_core::{Access, Limits, Provider, Stores};
use kv_host::{KvCtx, KvView, WasiKvView};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::profile::Profile;
use crate::report::{CaseResult, Outcome};

mod bindings {
    wasmtime::component::bindgen!({
        path: [
            "../wit/keyvalue",
            "../wit/keyvalue-draft",
            "../wit/ttl",
            "../wit/host",
            "../wit/conformance",
        ],
        world: "wasi-kv:conformance/guest@0.1.0",
        exports: { default: async },
        with: {
            "wasi:keyvalue/store@0.2.0-draft2": kv_host::wit_draft2::store,
            "wasi:keyvalue/atomics@0.2.0-draft2": kv_host::wit_draft2::atomics,
            "wasi:keyvalue/batch@0.2.0-draft2": kv_host::wit_draft2::batch,
            "wasi:keyvalue/store@0.2.0-draft": kv_host::wit_draft::store,
            "wasi:keyvalue/atomics@0.2.0-draft": kv_host::wit_draft::atomics,
            "wasi:keyvalue/batch@0.2.0-draft": kv_host::wit_draft::batch,
            "wasi-kv:ttl/ttl": kv_host::wit_ttl,
        },
    });
}

/// The suite export of a guest whose `run-case` is an `async func` (Spin 4's key-value
/// interface is async, and a guest may wait on it only inside an async export).
mod async_bindings {
    wasmtime::component::bindgen!({
        path: ["../wit/spin-kv-3", "../wit/conformance-spin-kv-3"],
        world: "wasi-kv:conformance-spin-kv-3/runner-view@0.1.0",
        exports: { default: async | store },
    });
}

use async_bindings::exports::wasi_kv::conformance_spin_kv_3::suite as async_wit;
use bindings::exports::wasi_kv::conformance::suite as wit;

/// Wall-clock limit of one case, workers included.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(180);

/// Store identifiers the runner offers to a case.
const STORE: &str = "kv-under-test";
const PEER: &str = "kv-peer";
const READ_ONLY: &str = "kv-read-only";
const DENIED: &str = "kv-denied";
const DEFAULT: &str = kv_core::config::DEFAULT_STORE;

/// Result names of the spin-shaped suite start with this.
pub const SPIN_SHAPE_LABEL: &str = "spin-shape/";
/// Result names of the cases run through Spin's own key-value interface start with this.
pub const SPIN_KV_LABEL: &str = "spin-kv/";
/// Result names of the same cases run through Spin 4's `spin:key-value@3.0.0` start with this.
pub const SPIN_KV_3_LABEL: &str = "spin-kv-3/";

/// A case as the guest declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseInfo {
    /// Case name.
    pub name: String,
    /// Contract rules it covers (`S1`..`S13`).
    pub rules: Vec<String>,
    /// What a pass means.
    pub summary: String,
    /// Needs `set-with-ttl`.
    pub needs_ttl: bool,
    /// Needs compare-and-swap.
    pub needs_cas: bool,
    /// Concurrent worker instances (0 = a single run).
    pub workers: u32,
}

/// What the suite runs against: a provider, its profile and the host limits.
#[derive(Clone)]
pub struct Target {
    /// Name in reports (usually the provider name).
    pub name: String,
    /// The provider under test.
    pub provider: Arc<dyn Provider>,
    /// The same backend on a bucket or container of its own, where the watch cases run: where
    /// the backend slows with everything the run stored beside them (fake-gcs-server), the
    /// deliveries they time would measure that. `None`: they run on `provider`.
    pub watch_provider: Option<Arc<dyn Provider>>,
    /// What this backend is expected to do.
    pub profile: Profile,
    /// Namespaces of this run start with this prefix (so runs can share a real table).
    pub namespace_prefix: String,
    /// Host limits used for every case.
    pub limits: Limits,
    /// Kept alive as long as the target (e.g. the emulator process it runs against).
    pub keep_alive: Vec<Arc<dyn std::any::Any + Send + Sync>>,
}

impl Target {
    /// A target with default limits and a `conformance` namespace prefix.
    pub fn new(name: &str, provider: Arc<dyn Provider>, profile: Profile) -> Self {
        Target {
            name: name.to_string(),
            provider,
            watch_provider: None,
            profile,
            namespace_prefix: "conformance".to_string(),
            limits: Limits::default(),
            keep_alive: Vec::new(),
        }
    }

    /// The provider the watch cases run on.
    pub fn watched_provider(&self) -> &Arc<dyn Provider> {
        self.watch_provider.as_ref().unwrap_or(&self.provider)
    }

    fn wit_profile(&self) -> wit::Profile {
        let caps = self.provider.capabilities();
        let max_value = self
            .profile
            .max_value_bytes
            .unwrap_or(caps.max_value_bytes)
            .min(caps.max_value_bytes)
            .min(self.limits.max_value_bytes);
        wit::Profile {
            max_value_bytes: max_value as u64,
            max_batch_entries: self.limits.max_batch_entries.min(u32::MAX as usize) as u32,
            list_may_repeat: caps.list_may_repeat,
            ttl: caps.ttl,
            cas: caps.cas,
        }
    }

    /// Why `case` is not run against this target, if it is not.
    pub fn skip_reason(&self, case: &CaseInfo) -> Option<String> {
        let caps = self.provider.capabilities();
        if case.needs_ttl && !caps.ttl {
            return Some(format!("the {} provider does not declare TTL", self.name));
        }
        if case.needs_cas && !caps.cas {
            return Some(format!(
                "the {} provider does not declare compare-and-swap",
                self.name
            ));
        }
        self.profile
            .divergences
            .get(&case.name)
            .map(|reason| format!("known divergence of {}: {reason}", self.profile.flavour))
    }
}

struct GuestState {
    table: ResourceTable,
    wasi: WasiCtx,
    kv: KvCtx,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiKvView for GuestState {
    fn kv(&mut self) -> KvView<'_> {
        KvView::new(&self.kv, &mut self.table)
    }
}

/// A suite component, pre-instantiated: one whose `run-case` is synchronous (WASI 0.2), or
/// one whose `run-case` is an `async func`, called on the store's event loop.
#[derive(Clone)]
enum GuestPre {
    Sync(bindings::GuestPre<GuestState>),
    Async(async_bindings::RunnerViewPre<GuestState>),
}

/// An instantiated suite component.
enum Guest {
    Sync(bindings::Guest),
    Async(async_bindings::RunnerView),
}

/// The compiled suite; cheap to share between threads.
pub struct Suite {
    engine: Engine,
    pre: GuestPre,
    cases: Vec<CaseInfo>,
    ticker_stop: Arc<AtomicBool>,
    run_id: String,
    label: &'static str,
}

impl Drop for Suite {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// An engine for async components with epoch-based preemption.
pub fn engine() -> anyhow::Result<Engine> {
    engine_for(false)
}

/// [`engine`], with component-model async (and the store's concurrency support) only for a
/// suite whose `run-case` is an `async func`: the WASI 0.2 suites run exactly as before.
fn engine_for(component_model_async: bool) -> anyhow::Result<Engine> {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    if component_model_async {
        config.wasm_component_model_async(true);
    } else {
        config.concurrency_support(false);
    }
    Ok(Engine::new(&config)?)
}

impl Suite {
    /// Compiles the bundled conformance component.
    pub async fn new() -> anyhow::Result<Suite> {
        Self::from_bytes(crate::guests::CONFORMANCE_GUEST).await
    }

    /// Compiles a conformance component from its bytes.
    pub async fn from_bytes(wasm: &[u8]) -> anyhow::Result<Suite> {
        Self::from_bytes_as(wasm, false).await
    }

    /// Compiles a conformance component whose `run-case` is synchronous, or (`async_suite`)
    /// an `async func` importing Spin 4's key-value interface.
    async fn from_bytes_as(wasm: &[u8], async_suite: bool) -> anyhow::Result<Suite> {
        let engine = engine_for(async_suite)?;
        let component = Component::new(&engine, wasm)
            .map_err(anyhow::Error::from)
            .context("compiling the conformance component")?;
        let mut linker = Linker::<GuestState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // The suite is built twice, once per draft2 `get-many` shape.
        kv_host::add_to_linker_for(&mut linker, &component)?;
        // Spin's own key-value interface, for components built with spin-sdk up to 5.x.
        kv_host::add_spin_key_value_to_linker(&mut linker)?;
        if async_suite {
            // Spin 4's, for WASIp3 components built with spin-sdk 6.x.
            kv_host::add_spin3_key_value_to_linker(&mut linker)?;
        }
        let instance_pre = linker.instantiate_pre(&component)?;
        let pre = if async_suite {
            GuestPre::Async(async_bindings::RunnerViewPre::new(instance_pre)?)
        } else {
            GuestPre::Sync(bindings::GuestPre::new(instance_pre)?)
        };
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            // Lets a guest stuck in a loop yield, so the case timeout can fire.
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                    engine.increment_epoch();
                }
            });
        }
        let run_id = format!("{:08x}", rand::random::<u32>());
        let mut suite = Suite {
            engine,
            pre,
            cases: Vec::new(),
            ticker_stop,
            run_id,
            label: "",
        };
        suite.cases = suite.load_cases().await?;
        Ok(suite)
    }

    /// The cases the component declares, in its order.
    pub fn cases(&self) -> &[CaseInfo] {
        &self.cases
    }

    /// The suite built against Spin's draft2 WIT, with only its batch cases (rule S8): the
    /// draft2 `get-many` exists in two shapes under one version string, and the host links
    /// whichever a component imports, so the batch rules are checked under both. Its results
    /// are named `spin-shape/<case>`.
    pub async fn spin_shape() -> anyhow::Result<Suite> {
        let mut suite = Self::from_bytes(crate::guests::CONFORMANCE_GUEST_SPIN)
            .await
            .context("loading the spin-shaped conformance component")?;
        suite
            .cases
            .retain(|case| case.rules.iter().any(|rule| rule == "S8"));
        suite.label = SPIN_SHAPE_LABEL;
        Ok(suite)
    }

    /// The cases that apply to Spin's own key-value interface (`fermyon:spin/key-value@2.0.0`:
    /// keys, values, missing keys, listing, isolation, access, errors), run through it by a
    /// component that imports nothing else. Its results are named `spin-kv/<case>`.
    pub async fn spin_kv() -> anyhow::Result<Suite> {
        let mut suite = Self::from_bytes(crate::guests::CONFORMANCE_GUEST_SPIN_KV)
            .await
            .context("loading the Spin key-value conformance component")?;
        suite.label = SPIN_KV_LABEL;
        Ok(suite)
    }

    /// The same cases through Spin 4's `spin:key-value@3.0.0` (every call `async`, `get-keys`
    /// a stream), by a WASIp3 component whose `run-case` is an `async func`. Its results are
    /// named `spin-kv-3/<case>`.
    pub async fn spin_kv_3() -> anyhow::Result<Suite> {
        let mut suite = Self::from_bytes_as(crate::guests::CONFORMANCE_GUEST_SPIN_KV_3, true)
            .await
            .context("loading the Spin 4 key-value conformance component")?;
        suite.label = SPIN_KV_3_LABEL;
        Ok(suite)
    }

    /// What this suite's result names start with (`""`, `spin-shape/`, `spin-kv/` or
    /// `spin-kv-3/`).
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// Keeps only the cases whose name contains one of `patterns` (all of them when
    /// `patterns` is empty); how many are left.
    pub fn select(&mut self, patterns: &[String]) -> usize {
        if !patterns.is_empty() {
            self.cases
                .retain(|case| patterns.iter().any(|pattern| case.name.contains(pattern)));
        }
        self.cases.len()
    }

    async fn load_cases(&self) -> anyhow::Result<Vec<CaseInfo>> {
        let stores = Arc::new(Stores::builder(Limits::default()).build());
        let instance = Instance {
            engine: self.engine.clone(),
            pre: self.pre.clone(),
            stores,
        };
        let (mut store, guest, _) = instance.start().await?;
        match guest {
            Guest::Sync(guest) => {
                let cases = guest
                    .wasi_kv_conformance_suite()
                    .call_list_cases(&mut store)
                    .await?;
                Ok(cases
                    .into_iter()
                    .map(|case| CaseInfo {
                        needs_ttl: case.needs.contains(&wit::Capability::Ttl),
                        needs_cas: case.needs.contains(&wit::Capability::Cas),
                        name: case.name,
                        rules: case.rules,
                        summary: case.summary,
                        workers: case.workers,
                    })
                    .collect())
            }
            Guest::Async(guest) => {
                let cases = store
                    .run_concurrent(async move |accessor| {
                        guest
                            .wasi_kv_conformance_spin_kv_3_suite()
                            .call_list_cases(accessor)
                            .await
                    })
                    .await??;
                Ok(cases
                    .into_iter()
                    .map(|case| CaseInfo {
                        needs_ttl: case.needs.contains(&async_wit::Capability::Ttl),
                        needs_cas: case.needs.contains(&async_wit::Capability::Cas),
                        name: case.name,
                        rules: case.rules,
                        summary: case.summary,
                        workers: case.workers,
                    })
                    .collect())
            }
        }
    }

    /// Runs one case (or reports why it is ignored).
    pub async fn run_case(&self, target: &Target, case: &CaseInfo) -> CaseResult {
        timed_case(
            target,
            self.label,
            case,
            target.skip_reason(case),
            CASE_TIMEOUT,
            self.execute(target, case),
        )
        .await
    }

    /// Runs every case, `jobs` at a time, calling `progress` after each.
    pub async fn run_all(
        &self,
        target: &Target,
        jobs: usize,
        progress: &(dyn Fn(&CaseResult, usize, usize) + Sync),
    ) -> Vec<CaseResult> {
        run_cases(&self.cases, self.label, jobs, progress, |case| {
            self.run_case(target, case)
        })
        .await
    }

    fn stores_for(&self, target: &Target, case: &CaseInfo) -> Arc<Stores> {
        let index = self
            .cases
            .iter()
            .position(|c| c.name == case.name)
            .unwrap_or(usize::MAX);
        let nonce: u32 = rand::random();
        let base = format!(
            "{}-{}-{index}-{nonce:08x}",
            target.namespace_prefix, self.run_id
        );
        let (main, peer) = namespace_pair(&base, index);
        let provider = &target.provider;
        Arc::new(
            Stores::builder(target.limits.clone())
                .store(STORE, provider.clone(), &main, Access::ReadWrite)
                // The host's default store, which `open("")` reaches (wasmtime compatibility).
                .store(DEFAULT, provider.clone(), &main, Access::ReadWrite)
                .store(PEER, provider.clone(), &peer, Access::ReadWrite)
                .store(READ_ONLY, provider.clone(), &main, Access::ReadOnly)
                .store(DENIED, provider.clone(), &main, Access::Denied)
                .build(),
        )
    }

    async fn execute(&self, target: &Target, case: &CaseInfo) -> Result<(), String> {
        let stores = self.stores_for(target, case);
        let wit_target = wit::Target {
            store: STORE.to_string(),
            peer: PEER.to_string(),
            read_only: READ_ONLY.to_string(),
            denied: DENIED.to_string(),
            unknown: format!("kv-unknown-{:08x}", rand::random::<u32>()),
        };
        let profile = target.wit_profile();
        if case.workers == 0 {
            return self
                .call(&stores, case, &wit_target, profile, wit::Phase::Single)
                .await;
        }
        // Workers run as separate tasks so they truly interleave on the multi-thread runtime.
        let workers: Vec<_> = (0..case.workers)
            .map(|worker| {
                let instance = Instance {
                    engine: self.engine.clone(),
                    pre: self.pre.clone(),
                    stores: stores.clone(),
                };
                let (name, target) = (case.name.clone(), wit_target.clone());
                tokio::spawn(async move {
                    instance
                        .call(&name, &target, profile, wit::Phase::Worker(worker))
                        .await
                })
            })
            .collect();
        let mut results = Vec::with_capacity(workers.len());
        for worker in workers {
            results.push(
                worker
                    .await
                    .unwrap_or_else(|err| Err(format!("worker task failed: {err}"))),
            );
        }
        for (worker, result) in results.into_iter().enumerate() {
            result.map_err(|reason| format!("worker {worker}: {reason}"))?;
        }
        self.call(&stores, case, &wit_target, profile, wit::Phase::Check)
            .await
            .map_err(|reason| format!("check: {reason}"))
    }

    async fn call(
        &self,
        stores: &Arc<Stores>,
        case: &CaseInfo,
        target: &wit::Target,
        profile: wit::Profile,
        phase: wit::Phase,
    ) -> Result<(), String> {
        let instance = Instance {
            engine: self.engine.clone(),
            pre: self.pre.clone(),
            stores: stores.clone(),
        };
        instance.call(&case.name, target, profile, phase).await
    }
}

/// One case's result: `run` within `limit`, or ignored for `skip`'s reason; named `label` +
/// the case's name.
pub(crate) async fn timed_case(
    target: &Target,
    label: &str,
    case: &CaseInfo,
    skip: Option<String>,
    limit: Duration,
    run: impl std::future::Future<Output = Result<(), String>>,
) -> CaseResult {
    let started = Instant::now();
    let (outcome, reason) = match skip {
        Some(reason) => (Outcome::Ignored, Some(reason)),
        None => match tokio::time::timeout(limit, run).await {
            Ok(Ok(())) => (Outcome::Passed, None),
            Ok(Err(reason)) => (Outcome::Failed, Some(reason)),
            Err(_) => (
                Outcome::Failed,
                Some(format!("did not finish within {} s", limit.as_secs())),
            ),
        },
    };
    CaseResult {
        provider: target.name.clone(),
        case: format!("{label}{}", case.name),
        rules: case.rules.clone(),
        outcome,
        reason,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// Runs `cases` with `run`, `jobs` at a time, calling `progress` after each; the results in
/// the cases' order.
pub(crate) async fn run_cases<'a, Run, Fut>(
    cases: &'a [CaseInfo],
    label: &str,
    jobs: usize,
    progress: &(dyn Fn(&CaseResult, usize, usize) + Sync),
    run: Run,
) -> Vec<CaseResult>
where
    Run: Fn(&'a CaseInfo) -> Fut,
    Fut: std::future::Future<Output = CaseResult>,
{
    use futures::stream::{self, StreamExt};
    let total = cases.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<CaseResult> = stream::iter(cases)
        .map(|case| {
            let result = run(case);
            let done = &done;
            async move {
                let result = result.await;
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(&result, finished, total);
                result
            }
        })
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    let order = |name: &str| {
        let name = name.strip_prefix(label).unwrap_or(name);
        cases.iter().position(|case| case.name == name)
    };
    results.sort_by_key(|result| order(&result.case));
    results
}

/// What one guest instance needs; owned, so worker instances can run as their own tasks.
struct Instance {
    engine: Engine,
    pre: GuestPre,
    stores: Arc<Stores>,
}

impl Instance {
    async fn start(self) -> anyhow::Result<(Store<GuestState>, Guest, MemoryOutputPipe)> {
        let stderr = MemoryOutputPipe::new(64 * 1024);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let state = GuestState {
            table: ResourceTable::new(),
            wasi,
            kv: KvCtx::new(self.stores),
        };
        let mut store = Store::new(&self.engine, state);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let guest = match &self.pre {
            GuestPre::Sync(pre) => Guest::Sync(pre.instantiate_async(&mut store).await?),
            GuestPre::Async(pre) => Guest::Async(pre.instantiate_async(&mut store).await?),
        };
        Ok((store, guest, stderr))
    }

    async fn call(
        self,
        case: &str,
        target: &wit::Target,
        profile: wit::Profile,
        phase: wit::Phase,
    ) -> Result<(), String> {
        let (mut store, guest, stderr) = self
            .start()
            .await
            .map_err(|err| format!("instantiation failed: {err:#}"))?;
        let result = match guest {
            Guest::Sync(guest) => {
                guest
                    .wasi_kv_conformance_suite()
                    .call_run_case(&mut store, case, target, profile, phase)
                    .await
            }
            Guest::Async(guest) => {
                let (case, target, profile, phase) = (
                    case.to_string(),
                    async_target(target),
                    async_profile(profile),
                    async_phase(phase),
                );
                store
                    .run_concurrent(async move |accessor| {
                        guest
                            .wasi_kv_conformance_spin_kv_3_suite()
                            .call_run_case(accessor, case, target, profile, phase)
                            .await
                    })
                    .await
                    .and_then(|result| result)
            }
        };
        match result {
            Ok(result) => result,
            Err(trap) => {
                let output = String::from_utf8_lossy(&stderr.contents()).into_owned();
                Err(format!("trap: {trap:#}{}", tail(&output)))
            }
        }
    }
}

/// The suite's records, as the async suite's WIT repeats them.
fn async_target(target: &wit::Target) -> async_wit::Target {
    async_wit::Target {
        store: target.store.clone(),
        peer: target.peer.clone(),
        read_only: target.read_only.clone(),
        denied: target.denied.clone(),
        unknown: target.unknown.clone(),
    }
}

fn async_profile(profile: wit::Profile) -> async_wit::Profile {
    async_wit::Profile {
        max_value_bytes: profile.max_value_bytes,
        max_batch_entries: profile.max_batch_entries,
        list_may_repeat: profile.list_may_repeat,
        ttl: profile.ttl,
        cas: profile.cas,
    }
}

fn async_phase(phase: wit::Phase) -> async_wit::Phase {
    match phase {
        wit::Phase::Single => async_wit::Phase::Single,
        wit::Phase::Worker(worker) => async_wit::Phase::Worker(worker),
        wit::Phase::Check => async_wit::Phase::Check,
    }
}

fn tail(output: &str) -> String {
    let output = output.trim();
    if output.is_empty() {
        return String::new();
    }
    let start = output.len().saturating_sub(600);
    let start = (start..output.len())
        .find(|i| output.is_char_boundary(*i))
        .unwrap_or(0);
    format!("; guest stderr: {}", &output[start..])
}

impl std::fmt::Debug for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("cases", &self.cases.len())
            .finish()
    }
}

/// Runs the whole suite on a fresh multi-thread runtime (for callers without one).
pub fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| anyhow!("starting tokio: {err}"))?;
    Ok(runtime.block_on(future))
}

/// The namespaces of the store under test and its peer. Cases rotate through pairs where one
/// namespace is a prefix of the other (`x` and `x/b`, `x:1` and `x`) and a pair of equal
/// length, so isolation (S10) is checked where a naive prefix scheme would leak.
fn namespace_pair(base: &str, case_index: usize) -> (String, String) {
    // Offset so the isolation cases (S10) get both prefix pairs.
    match (case_index + 1) % 3 {
        0 => (base.to_string(), format!("{base}/b")),
        1 => (format!("{base}:1"), base.to_string()),
        _ => (format!("{base}-a"), format!("{base}-b")),
    }
}
