//! `wasi-kv serve`: an HTTP handler component with keyvalue: WASI 0.2's
//! `wasi:http/incoming-handler` (one instance per request) or WASI 0.3's `wasi:http/handler`
//! (instances reused, see [`p3`]).
//!
//! The component is compiled and pre-instantiated once. Every WASI 0.2 request gets a fresh
//! store with its own memory limit and time limit. The time limit is enforced two ways: epoch
//! interruption stops guest code that computes too long, and a timer stops a guest that waits
//! too long on the host. A request that breaks either limit, or traps, gets a 5xx and a log
//! line, and the server carries on.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use kv_core::Stores;
use kv_host::{KvCtx, KvView, WasiKvView};
use tokio::net::TcpListener;
use tracing::{Instrument as _, debug, error, info, info_span, warn};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::ProxyHandler;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{Error as HttpError, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::outbound::{OutboundHooks, OutboundPolicy};
use crate::run::{load_component, needs_component_model_async};
use kv_host::sandbox::{EpochTicker, MemoryLimiter, is_time_limit, resource_table, set_deadline};

mod p3;
mod stall;

pub use p3::InstanceReuse;

/// Bytes of each pooled linear memory kept mapped between requests (reset in place); a
/// handler's stack and small heap fit, and 256 slots keep at most 1 GiB resident.
const KEEP_RESIDENT_MEMORY_BYTES: usize = 4 << 20;

/// Bytes of each pooled table kept mapped between requests.
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;

/// How long a refused connection's 503 may take to write before the socket is dropped.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of one server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The component file.
    pub component: PathBuf,
    /// `NAME=VALUE` pairs for the component's environment.
    pub envs: Vec<String>,
    /// Wall-clock limit of one request, from instantiation to the end of the handler.
    pub time_limit: Duration,
    /// Linear-memory limit of one request's instance, in bytes.
    pub memory_limit: usize,
    /// How long shutdown waits for in-flight requests before dropping them.
    pub shutdown_timeout: Duration,
    /// Where outbound HTTP may go (`SCHEME://HOST[:PORT]` patterns); empty denies all.
    pub allowed_outbound: Vec<String>,
    /// Time a client has to send a request head; it also closes an idle keep-alive
    /// connection (waiting for the next head). Stops slow-header clients.
    pub header_timeout: Duration,
    /// How long a response write may wait on a client that takes nothing (or so little that
    /// the socket stays full); then the connection closes, and its request slot and body go
    /// with it. Stops clients that stop reading.
    pub write_timeout: Duration,
    /// Connections open at once; one more gets a 503 and is closed.
    pub max_connections: usize,
    /// Requests running at once (instance slots); one more gets a 503.
    pub max_requests: u32,
    /// Largest request body; a larger `Content-Length` gets a 413, and a streamed body is cut
    /// at the limit (the component sees a body error).
    pub max_body_bytes: u64,
    /// Where requests are counted (`--metrics`), if anywhere.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// How a WASI 0.3 handler's instances are reused (a WASI 0.2 handler gets a fresh
    /// instance per request).
    pub reuse: InstanceReuse,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            component: PathBuf::new(),
            envs: Vec::new(),
            time_limit: Duration::from_secs(30),
            memory_limit: 128 << 20,
            shutdown_timeout: Duration::from_secs(30),
            allowed_outbound: Vec::new(),
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_requests: 256,
            max_body_bytes: 16 << 20,
            metrics: None,
            reuse: InstanceReuse::default(),
        }
    }
}

/// Host state of one request.
pub struct RequestState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    kv: KvCtx,
    limiter: MemoryLimiter,
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl WasiKvView for RequestState {
    fn kv(&mut self) -> KvView<'_> {
        KvView::new(&self.kv, &mut self.table)
    }
}

/// Why a request got no response from the component.
#[derive(Debug)]
enum Failure {
    /// The request ran longer than the time limit.
    TimeLimit(Duration),
    /// The instance asked for more memory than the limit.
    MemoryLimit(usize),
    /// The component could not be instantiated (for example a store it needs at start-up).
    Instantiate(anyhow::Error),
    /// The component trapped.
    Trap(anyhow::Error),
    /// The handler returned without setting a response.
    NoResponse,
    /// The handler answered with a `wasi:http` error code instead of a response.
    Guest(String),
    /// Every request slot is taken.
    Busy,
    /// The declared request body is larger than the limit.
    BodyTooLarge(u64),
}

impl Failure {
    fn status(&self) -> u16 {
        match self {
            Failure::TimeLimit(_) => 504,
            Failure::Instantiate(_) | Failure::Busy => 503,
            Failure::BodyTooLarge(_) => 413,
            Failure::MemoryLimit(_)
            | Failure::Trap(_)
            | Failure::NoResponse
            | Failure::Guest(_) => 500,
        }
    }

    /// What the client is told: the class of failure, never guest or host internals.
    fn public_message(&self) -> String {
        match self {
            Failure::TimeLimit(limit) => {
                format!("the handler exceeded its time limit of {limit:?}")
            }
            Failure::MemoryLimit(limit) => {
                format!("the handler exceeded its memory limit of {limit} bytes")
            }
            Failure::Instantiate(_) => "the handler could not be started".to_string(),
            Failure::Busy => "the server is at its limit of concurrent requests".to_string(),
            Failure::BodyTooLarge(limit) => {
                format!("the request body exceeds the limit of {limit} bytes")
            }
            Failure::Trap(_) | Failure::NoResponse | Failure::Guest(_) => {
                "the handler failed".to_string()
            }
        }
    }

    fn log(&self) {
        match self {
            Failure::TimeLimit(limit) => warn!(?limit, "request stopped: time limit exceeded"),
            Failure::MemoryLimit(limit) => {
                warn!(
                    limit_bytes = limit,
                    "request stopped: memory limit exceeded"
                )
            }
            Failure::Instantiate(err) => error!("cannot instantiate the component: {err:#}"),
            Failure::Trap(err) => error!("the component trapped: {err:?}"),
            Failure::NoResponse => error!("the handler returned without setting a response"),
            Failure::Guest(code) => warn!(error_code = %code, "the handler answered with an error"),
            Failure::Busy => warn!("request refused: every request slot is taken"),
            Failure::BodyTooLarge(limit) => {
                warn!(limit_bytes = limit, "request refused: body too large")
            }
        }
    }

    fn response(&self) -> hyper::Response<HyperOutgoingBody> {
        let mut response = hyper::Response::new(full_body(format!("{}\n", self.public_message())));
        *response.status_mut() = hyper::StatusCode::from_u16(self.status())
            .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

/// The body of a response the component has started. Its last frame waits for the handler's
/// outcome: if the handler failed after the head was sent, the body ends with an error, so
/// hyper aborts the response (the chunked body is never terminated, the connection closes)
/// instead of completing it as if the handler had succeeded.
struct GuardedBody {
    inner: HyperOutgoingBody,
    outcome: Option<tokio::sync::oneshot::Receiver<Result<(), Failure>>>,
    span: tracing::Span,
}

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, HttpError>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {}
            frame => return frame,
        }
        let Some(outcome) = this.outcome.as_mut() else {
            return Poll::Ready(None);
        };
        let Poll::Ready(outcome) = std::pin::Pin::new(outcome).poll(cx) else {
            return Poll::Pending;
        };
        this.outcome = None;
        let _entered = this.span.enter();
        match outcome {
            Ok(Ok(())) => Poll::Ready(None),
            Ok(Err(failure)) => {
                error!(
                    "response aborted: the handler failed after its response started: {}",
                    failure.public_message()
                );
                failure.log();
                Poll::Ready(Some(Err(ErrorCode::InternalError(Some(
                    failure.public_message(),
                ))
                .into())))
            }
            Err(_) => {
                error!("response aborted: the handler task ended without an outcome");
                Poll::Ready(Some(Err(ErrorCode::InternalError(None).into())))
            }
        }
    }
}

fn full_body(text: String) -> HyperOutgoingBody {
    Full::new(Bytes::from(text))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// The handler a component exports, and how its requests get instances.
enum Handler {
    /// WASI 0.2's `wasi:http/incoming-handler`: a fresh instance per request.
    P2(ProxyPre<RequestState>),
    /// WASI 0.3's `wasi:http/handler`: wasmtime's worker pool, instances reused
    /// ([`InstanceReuse`]).
    P3(ProxyHandler<p3::Instances>),
}

/// What every request's (or WASI 0.3 instance's) store is made of.
pub(crate) struct StoreFactory {
    engine: Engine,
    stores: Arc<Stores>,
    envs: Vec<(String, String)>,
    outbound: Arc<OutboundPolicy>,
    memory_limit: usize,
}

impl StoreFactory {
    /// A store with its memory limit and no deadline yet (the caller sets the one of its
    /// handler kind: an engine with epoch checks stops a store without one at once).
    fn new_store(&self, memory_hit: Arc<AtomicBool>) -> Store<RequestState> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stdout().inherit_stderr();
        wasi.envs(&self.envs);
        let state = RequestState {
            table: resource_table(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks::new(self.outbound.clone()),
            kv: KvCtx::new(self.stores.clone()),
            limiter: MemoryLimiter::new(self.memory_limit, memory_hit),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store
    }
}

/// A compiled, pre-instantiated component and everything each request needs.
pub struct Server {
    handler: Handler,
    factory: Arc<StoreFactory>,
    options: ServeOptions,
    connections: Arc<tokio::sync::Semaphore>,
    requests: Arc<tokio::sync::Semaphore>,
    next_request: AtomicU64,
    _ticker: Arc<EpochTicker>,
}

/// The engine `serve` compiles with: epoch checks, pooled instances; component-model async
/// (and the store's concurrency support) only for a WASI 0.3 handler.
fn serve_engine(options: &ServeOptions, wasip3: bool) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    if wasip3 {
        config.wasm_component_model_async(true);
    } else {
        // WASI 0.2 handlers: no store needs wasmtime's concurrency support, so none pays
        // for it.
        config.concurrency_support(false);
    }
    // Pre-reserved instance slots: per-request instantiation reuses memory instead of
    // mapping it afresh. A request beyond the slots gets a 503.
    let slots = options.max_requests.max(1);
    let mut pool = PoolingAllocationConfig::default();
    // A WASI 0.3 instance can outlive its requests' slots (a request expired at the time
    // limit, its instance draining), so its pool has room for twice as many; its concurrent
    // requests may each hold a fiber.
    let instances = if wasip3 { slots * 2 } else { slots };
    pool.total_component_instances(instances)
        .total_core_instances(instances * 4)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        .total_stacks(instances)
        .max_memory_size(options.memory_limit);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        // A finished instance's memory is reset by rewriting only the pages it dirtied
        // (Linux's PAGEMAP_SCAN, kernel 6.7+), not unmapped: the next request takes no
        // page faults and no other core has its TLB flushed. Without the scan, keeping
        // memory resident would mean clearing all of it per request, so it is not kept.
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY_BYTES)
            .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(anyhow::Error::from)
}

/// Whether `component` exports WASI 0.3's handler.
fn exports_wasip3_handler(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name == p3::WASIP3_HANDLER)
}

impl Server {
    /// Compiles and pre-instantiates the component; fails if it is not an HTTP handler or
    /// needs imports the host does not have.
    pub fn new(options: ServeOptions, stores: Arc<Stores>) -> anyhow::Result<Server> {
        let mut envs = Vec::new();
        for pair in &options.envs {
            let (name, value) = pair
                .split_once('=')
                .with_context(|| format!("--env {pair}: expected NAME=VALUE"))?;
            envs.push((name.to_string(), value.to_string()));
        }
        let outbound = Arc::new(OutboundPolicy::parse(&options.allowed_outbound)?);
        if options.reuse.requests == 0 || options.reuse.concurrent == 0 {
            bail!("--instance-reuse and --instance-concurrency must be at least 1");
        }
        // A WASI 0.2 handler compiles for an engine without concurrency support, exactly as
        // before WASI 0.3; one that uses component-model async (WASI 0.3) gets an engine
        // with it.
        let engine = serve_engine(&options, false)?;
        let (engine, component, wasip3) = match load_component(&engine, &options.component) {
            Ok(component) if !exports_wasip3_handler(&engine, &component) => {
                (engine, component, false)
            }
            Err(err) if !needs_component_model_async(&err) => return Err(err),
            _ => {
                let engine = serve_engine(&options, true)?;
                let component = load_component(&engine, &options.component)?;
                (engine, component, true)
            }
        };
        info!(
            reset = if PoolingAllocationConfig::is_pagemap_scan_available() {
                "in place (PAGEMAP_SCAN)"
            } else {
                "by unmapping"
            },
            "instance memory is reset between instances"
        );
        let mut linker = Linker::<RequestState>::new(&engine);
        // A WASI 0.3 component built with Rust's standard library imports WASI 0.2's streams
        // for its stdio too, so WASI 0.2 is always linked.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)?;
        // Either draft2 `get-many` shape: the one this component was built against.
        kv_host::add_to_linker_for(&mut linker, &component)?;
        // Spin's own key-value interface, for components built with spin-sdk up to 5.x.
        kv_host::add_spin_key_value_to_linker(&mut linker)?;
        if wasip3 {
            wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
            wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
            // Spin 4's, for WASI 0.3 components built with spin-sdk 6.x.
            kv_host::add_spin3_key_value_to_linker(&mut linker)?;
        }
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context(
                "linking the component (does it import only WASI 0.2 or 0.3.0, wasi:http and \
                 keyvalue?)",
            )?;
        let slots = options.max_requests.max(1);
        let factory = Arc::new(StoreFactory {
            engine: engine.clone(),
            stores,
            envs,
            outbound,
            memory_limit: options.memory_limit,
        });
        // The ticker lives as long as the server and every WASI 0.3 worker (which can outlive
        // the server's last reference while it drains).
        let ticker = Arc::new(EpochTicker::start(engine.clone()));
        let handler = if wasip3 {
            let pre = ServicePre::new(instance_pre)
                .map_err(anyhow::Error::from)
                .context("the component does not export wasi:http/handler@0.3.0")?;
            info!(
                requests_per_instance = options.reuse.requests,
                at_once = options.reuse.concurrent,
                "a WASI 0.3 handler: instances are reused (--instance-reuse, \
                 --instance-concurrency)"
            );
            Handler::P3(ProxyHandler::new(p3::Instances::new(
                factory.clone(),
                pre,
                options.time_limit,
                options.reuse,
                options.metrics.clone(),
                ticker.clone(),
            )))
        } else {
            Handler::P2(
                ProxyPre::new(instance_pre)
                    .map_err(anyhow::Error::from)
                    .context(
                        "the component exports neither wasi:http/incoming-handler (WASI 0.2) \
                         nor wasi:http/handler@0.3.0 (WASI 0.3)",
                    )?,
            )
        };
        Ok(Server {
            handler,
            factory,
            connections: Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1))),
            requests: Arc::new(tokio::sync::Semaphore::new(slots as usize)),
            options,
            next_request: AtomicU64::new(1),
            _ticker: ticker,
        })
    }

    /// Accepts connections on `listener` until `shutdown` completes, then stops accepting,
    /// lets in-flight requests finish (up to the shutdown timeout) and returns.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            // Typically out of file descriptors: back off instead of spinning.
                            warn!("accept failed: {err}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                        // Over the connection cap: a 503 and close, never a hang.
                        warn!(%peer, "connection refused: too many open connections");
                        tokio::spawn(refuse_connection(stream));
                        continue;
                    };
                    let server = self.clone();
                    let service = service_fn(move |request| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(request).await) }
                    });
                    let connection = http1::Builder::new()
                        .keep_alive(true)
                        .timer(TokioTimer::new())
                        .header_read_timeout(self.options.header_timeout)
                        .serve_connection(
                            TokioIo::new(stall::StallLimited::new(
                                stream,
                                self.options.write_timeout,
                            )),
                            service,
                        );
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(err) = connection.await {
                            debug!(%peer, "connection ended with an error: {err}");
                        }
                        drop(permit);
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        let in_flight = graceful.count();
        info!(
            connections = in_flight,
            "shutting down: no new connections, finishing in-flight requests"
        );
        match tokio::time::timeout(self.options.shutdown_timeout, graceful.shutdown()).await {
            Ok(()) => info!("shut down cleanly"),
            Err(_) => warn!(
                timeout = ?self.options.shutdown_timeout,
                "shutdown timeout reached; dropping the remaining connections"
            ),
        }
        if let Handler::P3(handler) = &self.handler {
            handler.state().stop();
        }
        Ok(())
    }

    /// Answers one request; never fails (failures become 5xx responses).
    async fn handle(
        self: Arc<Self>,
        request: hyper::Request<Incoming>,
    ) -> hyper::Response<HyperOutgoingBody> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let span =
            info_span!("request", id, method = %request.method(), path = %request.uri().path());
        async move {
            let started = Instant::now();
            let response = match self.clone().call_component(request).await {
                Ok(response) => response,
                Err(failure) => {
                    failure.log();
                    failure.response()
                }
            };
            let elapsed = started.elapsed();
            if let Some(metrics) = &self.options.metrics {
                metrics.request(response.status().as_u16(), elapsed);
            }
            info!(
                status = response.status().as_u16(),
                elapsed_us = elapsed.as_micros() as u64,
                "request"
            );
            response
        }
        .instrument(span)
        .await
    }

    async fn call_component(
        self: Arc<Self>,
        request: hyper::Request<Incoming>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, Failure> {
        let declared = request
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.options.max_body_bytes) {
            return Err(Failure::BodyTooLarge(self.options.max_body_bytes));
        }
        let Ok(slot) = self.requests.clone().try_acquire_owned() else {
            return Err(Failure::Busy);
        };
        let request = request.map(|body| LimitedBody {
            inner: body,
            remaining: self.options.max_body_bytes,
            limit: self.options.max_body_bytes,
        });
        let pre = match &self.handler {
            Handler::P2(pre) => pre.clone(),
            Handler::P3(handler) => {
                return p3::call(
                    handler,
                    request,
                    slot,
                    self.options.time_limit,
                    self.options.memory_limit,
                )
                .await;
            }
        };
        let memory_hit = Arc::new(AtomicBool::new(false));
        let mut store = self.factory.new_store(memory_hit.clone());
        set_deadline(&mut store, Some(self.options.time_limit));
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let (incoming, outparam) = {
            let mut http = store.data_mut().http();
            let incoming = http
                .new_incoming_request(Scheme::Http, request)
                .map_err(|err| Failure::Instantiate(anyhow::Error::from(err)))?;
            let outparam = http
                .new_response_outparam(sender)
                .map_err(|err| Failure::Instantiate(anyhow::Error::from(err)))?;
            (incoming, outparam)
        };
        let time_limit = self.options.time_limit;
        let memory_limit = self.options.memory_limit;
        let server = self.clone();
        let (done, outcome) = tokio::sync::oneshot::channel();
        // The handler runs in its own task: it may keep streaming the body after the
        // response head is sent, and it must not hold up the connection task. Its outcome
        // decides how the body ends.
        tokio::spawn(
            async move {
                let run = async {
                    let proxy = pre
                        .instantiate_async(&mut store)
                        .await
                        .map_err(|err| Failure::Instantiate(anyhow::Error::from(err)))?;
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, incoming, outparam)
                        .await
                        .map_err(|err| {
                            classify_trap(
                                anyhow::Error::from(err),
                                &memory_hit,
                                time_limit,
                                memory_limit,
                            )
                        })
                };
                let result = match tokio::time::timeout(time_limit, run).await {
                    Ok(result) => result,
                    Err(_) => Err(Failure::TimeLimit(time_limit)),
                };
                if let Some(metrics) = &server.options.metrics {
                    metrics.instance_memory(store.data().limiter.peak());
                }
                let _ = done.send(result);
                drop(slot);
            }
            .in_current_span(),
        );
        match receiver.await {
            Ok(Ok(response)) => Ok(response.map(|body| {
                GuardedBody {
                    inner: body,
                    outcome: Some(outcome),
                    span: tracing::Span::current(),
                }
                .boxed_unsync()
            })),
            Ok(Err(code)) => Err(Failure::Guest(format!("{code:?}"))),
            // The outparam was dropped unset: the handler's outcome says why.
            Err(_) => match outcome.await {
                Ok(Ok(())) => Err(Failure::NoResponse),
                Ok(Err(failure)) => Err(failure),
                Err(_) => Err(Failure::Trap(anyhow::anyhow!(
                    "the handler task ended without an outcome"
                ))),
            },
        }
    }
}

fn classify_trap(
    err: anyhow::Error,
    memory_hit: &AtomicBool,
    time_limit: Duration,
    memory_limit: usize,
) -> Failure {
    if is_time_limit(&err) {
        Failure::TimeLimit(time_limit)
    } else if memory_hit.load(Ordering::Relaxed) {
        // A refused memory.grow surfaces as the guest's own out-of-memory abort.
        Failure::MemoryLimit(memory_limit)
    } else {
        Failure::Trap(err)
    }
}

/// Answers a connection over the cap with a 503 and closes it, within a bounded time.
async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt as _;
    const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
        Content-Length: 40\r\nRetry-After: 1\r\nConnection: close\r\n\r\n\
        the server has too many open connections";
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await
    })
    .await;
}

/// A request body cut at the limit: past it, reading fails with a body-size error.
struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
}

impl hyper::body::Body for LimitedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, HttpError>>> {
        let limit = self.limit;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                let size = frame.data_ref().map_or(0, |data| data.len() as u64);
                match self.remaining.checked_sub(size) {
                    Some(left) => {
                        self.remaining = left;
                        std::task::Poll::Ready(Some(Ok(frame)))
                    }
                    None => std::task::Poll::Ready(Some(Err(HttpError::HttpRequestBodySize(
                        Some(limit),
                    )))),
                }
            }
            std::task::Poll::Ready(Some(Err(err))) => {
                std::task::Poll::Ready(Some(Err(HttpError::from(err))))
            }
            std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Binds `addr`; a separate step so callers can learn the port before serving.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Completes on Ctrl-C, or SIGTERM on Unix, or Ctrl-Break, closing the console or system
/// shutdown on Windows (where SIGTERM does not exist).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            error!("cannot listen for Ctrl-C: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                error!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(windows)]
    let terminate = async {
        use tokio::signal::windows;
        match (
            windows::ctrl_break(),
            windows::ctrl_close(),
            windows::ctrl_shutdown(),
        ) {
            (Ok(mut brk), Ok(mut close), Ok(mut shutdown)) => {
                tokio::select! {
                    _ = brk.recv() => {}
                    _ = close.recv() => {}
                    _ = shutdown.recv() => {}
                }
            }
            _ => {
                error!("cannot listen for Ctrl-Break and console close");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(any(unix, windows)))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("Ctrl-C received"),
        () = terminate => info!("termination requested (SIGTERM, Ctrl-Break or console close)"),
    }
}
