//! WASI 0.3 handlers (`wasi:http/handler@0.3.0`): served by wasmtime's worker pool
//! (`wasmtime_wasi_http::handler::ProxyHandler`), each instance answering up to
//! [`InstanceReuse::requests`] requests, [`InstanceReuse::concurrent`] at once, inside the
//! store's event loop (`run_concurrent`).
//!
//! Reuse changes what the limits are limits of, so each is restated per instance:
//!
//! - **time**: a request that has no response after the time limit gets a 504 and its
//!   instance takes no more requests. Guest code is stopped (epoch interruption) once the
//!   oldest request still running on its instance, or the instance's last quiet moment, is
//!   older than the limit, so a guest that computes is stopped however many requests
//!   arrived after it. A worker whose event loop is stuck is dropped from outside it.
//! - **memory**: the memory limit bounds the instance, which its concurrent requests share.
//! - **handles** and held bytes: per instance, as `docs/security.md` says for one store.
//!
//! A failure of the instance (trap, time limit, memory limit) fails every request it was
//! answering; each gets the 5xx of that cause.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use tracing::{debug, warn};
use wasmtime::component::GuestTaskId;
use wasmtime::{Store, StoreContextMut, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, InstantiationError, Proxy, ProxyHandler, ShouldAccept,
    TrapOrPanicError, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

use super::{Failure, LimitedBody, RequestState, StoreFactory};
use crate::metrics::Metrics;
use crate::sandbox::{TimeLimitExceeded, is_time_limit};

/// The export that makes a component a WASI 0.3 handler. Release candidates of 0.3 are other
/// interfaces (wasmtime 48.0.8 implements 0.3.0) and fail to link naming their version.
pub(super) const WASIP3_HANDLER: &str = "wasi:http/handler@0.3.0";

/// How long an instance with nothing to do is kept for the next request.
const IDLE_INSTANCE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a WASI 0.3 handler's instances are reused (`--instance-reuse`,
/// `--instance-concurrency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceReuse {
    /// Requests one instance answers before it is retired; 1: a fresh instance per request,
    /// as for WASI 0.2 (nothing in guest memory survives a request).
    pub requests: usize,
    /// Requests one instance answers at once (each a task on its event loop).
    pub concurrent: usize,
}

impl Default for InstanceReuse {
    fn default() -> Self {
        InstanceReuse {
            requests: 128,
            concurrent: 16,
        }
    }
}

/// What serves a WASI 0.3 handler's requests: makes instances for wasmtime's worker pool.
pub(super) struct Instances {
    factory: Arc<StoreFactory>,
    pre: ServicePre<RequestState>,
    time_limit: Duration,
    reuse: InstanceReuse,
    metrics: Option<Arc<Metrics>>,
    /// Set once the server has finished serving: workers dropped after it are not failures.
    stopped: Arc<AtomicBool>,
}

impl Instances {
    pub(super) fn new(
        factory: Arc<StoreFactory>,
        pre: ServicePre<RequestState>,
        time_limit: Duration,
        reuse: InstanceReuse,
        metrics: Option<Arc<Metrics>>,
    ) -> Instances {
        Instances {
            factory,
            pre,
            time_limit,
            reuse,
            metrics,
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Says that serving has ended: the runtime drops the idle workers next.
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// Which instance answered a request, filled in when the instance takes it: a failure is
/// classified by what its instance saw.
pub(super) type Assignment = Arc<OnceLock<Arc<InstanceFlags>>>;

/// What one instance saw, shared by its store's limiter and deadline, its worker and the
/// requests it answers.
pub(super) struct InstanceFlags {
    /// The memory limiter refused a `memory.grow`.
    memory_hit: Arc<AtomicBool>,
    /// The instance was stopped by the time limit (a deadline or the expiration).
    timed_out: AtomicBool,
    running: Mutex<Running>,
}

/// The requests an instance is answering, by start time.
struct Running {
    started: BTreeMap<u64, Instant>,
    next: u64,
    /// When the instance last had no request running (or was created).
    quiet_since: Instant,
}

impl InstanceFlags {
    fn new() -> Arc<InstanceFlags> {
        Arc::new(InstanceFlags {
            memory_hit: Arc::new(AtomicBool::new(false)),
            timed_out: AtomicBool::new(false),
            running: Mutex::new(Running {
                started: BTreeMap::new(),
                next: 0,
                quiet_since: Instant::now(),
            }),
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        // The lock is never held across a panic point; a poisoned one still has valid data.
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Since when guest code on this instance may have been running for one request: the
    /// oldest request still running, or the last quiet moment.
    fn computing_since(&self) -> Instant {
        let running = self.running();
        running
            .started
            .values()
            .min()
            .copied()
            .unwrap_or(running.quiet_since)
    }

    fn start_request(self: &Arc<Self>) -> RunningRequest {
        let mut running = self.running();
        let id = running.next;
        running.next += 1;
        running.started.insert(id, Instant::now());
        RunningRequest {
            flags: self.clone(),
            id,
        }
    }
}

/// A request counted as running until it answers or expires (dropped then).
struct RunningRequest {
    flags: Arc<InstanceFlags>,
    id: u64,
}

impl Drop for RunningRequest {
    fn drop(&mut self) {
        let mut running = self.flags.running();
        running.started.remove(&self.id);
        if running.started.is_empty() {
            running.quiet_since = Instant::now();
        }
    }
}

impl HandlerState for Instances {
    type StoreData = RequestState;
    type WorkerExpiration = Expiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<RequestState, Expiration, Worker>> {
        let flags = InstanceFlags::new();
        let mut store = self.factory.new_store(flags.memory_hit.clone());
        set_instance_deadline(&mut store, flags.clone(), self.time_limit);
        let service =
            match tokio::time::timeout(self.time_limit, self.pre.instantiate_async(&mut store))
                .await
            {
                Ok(service) => service?,
                Err(_) => {
                    return Err(wasmtime::format_err!(
                        "instantiation exceeded the time limit of {:?}",
                        self.time_limit
                    ));
                }
            };
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: <RequestState as WasiHttpView>::http,
            expiration: Expiration {
                flags: flags.clone(),
                time_limit: self.time_limit,
                timer: Box::pin(tokio::time::sleep(IDLE_INSTANCE_TIMEOUT)),
            },
            state: Worker {
                flags,
                time_limit: self.time_limit,
                reuse: self.reuse,
                metrics: self.metrics.clone(),
                stopped: self.stopped.clone(),
            },
        })
    }
}

/// Stops guest code once [`InstanceFlags::computing_since`] is older than `time_limit`, asked
/// at every epoch tick; other tasks get the thread at every tick until then.
fn set_instance_deadline(
    store: &mut Store<RequestState>,
    flags: Arc<InstanceFlags>,
    time_limit: Duration,
) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if flags.computing_since().elapsed() >= time_limit {
            flags.timed_out.store(true, Ordering::Relaxed);
            Err(wasmtime::Error::from(TimeLimitExceeded))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

/// One instance's worker: which requests it takes, and their deadlines.
pub(super) struct Worker {
    flags: Arc<InstanceFlags>,
    time_limit: Duration,
    reuse: InstanceReuse,
    metrics: Option<Arc<Metrics>>,
    stopped: Arc<AtomicBool>,
}

impl WorkerState for Worker {
    type StoreData = RequestState;
    type RequestData = Assignment;

    fn should_accept_request(&self, concurrent_count: usize, total_count: usize) -> ShouldAccept {
        if total_count >= self.reuse.requests {
            ShouldAccept::Never
        } else if concurrent_count >= self.reuse.concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, RequestState>,
        assignment: Assignment,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        let _ = assignment.set(self.flags.clone());
        let running = self.flags.start_request();
        let time_limit = self.time_limit;
        Box::pin(async move {
            // Counted as running until it answers (this future is dropped) or expires.
            let _running = running;
            tokio::time::sleep(time_limit).await;
        })
    }

    fn drop(&self, store: Store<RequestState>, result: wasmtime::Result<()>) {
        if let Some(metrics) = &self.metrics {
            metrics.instance_memory(store.data().limiter.peak());
        }
        if let Err(err) = result {
            if self.stopped.load(Ordering::Relaxed) {
                debug!("instance dropped at shutdown: {err:#}");
            } else if self.flags.timed_out.load(Ordering::Relaxed) {
                warn!(limit = ?self.time_limit, "instance stopped: time limit exceeded");
            } else if self.flags.memory_hit.load(Ordering::Relaxed) {
                warn!("instance stopped: memory limit exceeded");
            } else {
                warn!("instance stopped: {err:#}");
            }
        }
    }
}

/// When an instance is dropped, decided outside its event loop (which a guest that
/// computes, or a host call holding the store, keeps from running): after the time limit
/// since its latest request started (or since it went quiet with work left), or after
/// [`IDLE_INSTANCE_TIMEOUT`] idle.
pub(super) struct Expiration {
    flags: Arc<InstanceFlags>,
    time_limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl WorkerExpiration for Expiration {
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let this = &mut *self;
        let deadline = match status {
            WorkerStatus::Idle => start + IDLE_INSTANCE_TIMEOUT,
            WorkerStatus::Requests | WorkerStatus::PostReturn => start + this.time_limit,
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if this.timer.deadline() != deadline {
            this.timer.as_mut().reset(deadline);
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                if status != WorkerStatus::Idle {
                    this.flags.timed_out.store(true, Ordering::Relaxed);
                }
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Answers one request on a WASI 0.3 instance; `slot` (the request's place among
/// `--max-requests`) is held until the response body ends.
pub(super) async fn call(
    handler: &ProxyHandler<Instances>,
    request: hyper::Request<LimitedBody>,
    slot: tokio::sync::OwnedSemaphorePermit,
    time_limit: Duration,
    memory_limit: usize,
) -> Result<hyper::Response<super::HyperOutgoingBody>, Failure> {
    let assignment = Assignment::default();
    let request = request.map(|body| body.boxed_unsync());
    // The worker expires the request at the time limit; this bounds the wait if its event
    // loop cannot even do that.
    let answered =
        match tokio::time::timeout(time_limit, handler.handle(assignment.clone(), request)).await {
            Ok(answered) => answered,
            Err(_) => return Err(Failure::TimeLimit(time_limit)),
        };
    match answered {
        Ok(response) => Ok(response.map(|body| {
            SlotBody {
                inner: body,
                _slot: slot,
            }
            .boxed_unsync()
        })),
        Err(err) => Err(classify(err, &assignment, time_limit, memory_limit)),
    }
}

fn classify(
    err: wasmtime::Error,
    assignment: &Assignment,
    time_limit: Duration,
    memory_limit: usize,
) -> Failure {
    if err.is::<ExpirationError>() {
        return Failure::TimeLimit(time_limit);
    }
    if let Some(code) = err.downcast_ref::<ErrorCode>() {
        return Failure::Guest(format!("{code:?}"));
    }
    if err.is::<InstantiationError<Assignment>>() {
        return Failure::Instantiate(anyhow::Error::from(err));
    }
    let flags = assignment.get();
    if flags.is_some_and(|flags| flags.timed_out.load(Ordering::Relaxed)) {
        return Failure::TimeLimit(time_limit);
    }
    if flags.is_some_and(|flags| flags.memory_hit.load(Ordering::Relaxed)) {
        // A refused memory.grow surfaces as the guest's own out-of-memory abort.
        return Failure::MemoryLimit(memory_limit);
    }
    let lost_instance = err.is::<TrapOrPanicError>();
    let err = anyhow::Error::from(err);
    if is_time_limit(&err) {
        Failure::TimeLimit(time_limit)
    } else if lost_instance {
        Failure::Trap(err.context("the instance answering this request failed"))
    } else {
        Failure::Trap(err)
    }
}

/// A response body that holds its request's slot until it ends.
struct SlotBody {
    inner: super::HyperOutgoingBody,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl hyper::body::Body for SlotBody {
    type Data = bytes::Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
