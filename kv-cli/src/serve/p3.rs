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
//!   older than the limit (plus [`EXPIRY_GRACE`], so that a request which only waited is
//!   expired by the event loop before a neighbour computing at that moment is stopped). An
//!   instance whose guest code is computing takes no new request, and a worker whose event
//!   loop is stuck is dropped from outside it.
//! - **response bodies**: a body is part of its request and ends at its time limit; one cut
//!   by its instance's failure is aborted, never completed.
//! - **memory**: the memory limit bounds the instance, which its concurrent requests share.
//! - **handles** and held bytes: per instance, as `docs/security.md` says for one store.
//!
//! A failure of the instance (trap, time limit, memory limit) fails every request it was
//! answering; each gets the 5xx of that cause.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use tracing::{Instrument as _, debug, error, warn};
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
use kv_host::sandbox::{EpochTicker, TimeLimitExceeded, is_time_limit};

/// The export that makes a component a WASI 0.3 handler. Release candidates of 0.3 are other
/// interfaces (wasmtime 48.0.8 implements 0.3.0) and fail to link naming their version.
pub(super) const WASIP3_HANDLER: &str = "wasi:http/handler@0.3.0";

/// How long an instance with nothing to do is kept for the next request.
const IDLE_INSTANCE_TIMEOUT: Duration = Duration::from_secs(5);

/// How much later than a request's expiry its instance's guest code is stopped, and the
/// request's own last-resort timer fires: the event loop expires a request that only waited
/// first (it runs between epoch ticks), so neither takes down a neighbour that computes.
const EXPIRY_GRACE: Duration = Duration::from_millis(50);

/// How long a request may have been running before its instance takes no new request: one
/// that computes (or waits) that long would hold up, or take down at its time limit, those
/// queued beside it. Far above a normal request, far below a time limit.
const SLOW_REQUEST: Duration = Duration::from_millis(100);

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
    /// Set once the server has finished serving: workers take no more requests, and those
    /// dropped after it are not failures.
    stopped: Arc<AtomicBool>,
    /// Keeps the epoch ticking (and so the time limit working) while any worker runs.
    ticker: Arc<EpochTicker>,
}

impl Instances {
    pub(super) fn new(
        factory: Arc<StoreFactory>,
        pre: ServicePre<RequestState>,
        time_limit: Duration,
        reuse: InstanceReuse,
        metrics: Option<Arc<Metrics>>,
        ticker: Arc<EpochTicker>,
    ) -> Instances {
        Instances {
            factory,
            pre,
            time_limit,
            reuse,
            metrics,
            stopped: Arc::new(AtomicBool::new(false)),
            ticker,
        }
    }

    /// Says that serving has ended: the runtime drops the idle workers next.
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// One request as its instance knows it. Which instance answered it is filled in when the
/// instance takes it: a failure is classified by what its instance saw. From then until the
/// last holder drops it, it counts as one of the instance's open requests, which keep the
/// instance's store alive (see [`Worker::drop`]). It holds the request's `--max-requests`
/// slot, and so do its holders: the caller until the response head, the response body until
/// it ends, and the instance until the guest answered or the request expired (a client that
/// hangs up does not free the slot while the guest still works on its request).
pub(super) struct RequestAssignment {
    instance: OnceLock<Arc<InstanceFlags>>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

pub(super) type Assignment = Arc<RequestAssignment>;

impl RequestAssignment {
    fn new(slot: tokio::sync::OwnedSemaphorePermit) -> Assignment {
        Arc::new(RequestAssignment {
            instance: OnceLock::new(),
            _slot: slot,
        })
    }

    fn instance(&self) -> Option<&Arc<InstanceFlags>> {
        self.instance.get()
    }

    fn assign(&self, flags: &Arc<InstanceFlags>) {
        if self.instance.set(flags.clone()).is_ok() {
            flags.open_requests.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for RequestAssignment {
    fn drop(&mut self) {
        if let Some(flags) = self.instance.get() {
            flags.open_requests.fetch_sub(1, Ordering::SeqCst);
            flags.requests_closed.notify_waiters();
        }
    }
}

/// What one instance saw, shared by its store's limiter and deadline, its worker and the
/// requests it answers.
pub(super) struct InstanceFlags {
    /// The memory limiter refused a `memory.grow`.
    memory_hit: Arc<AtomicBool>,
    /// The instance was stopped by the time limit (a deadline or the expiration).
    timed_out: AtomicBool,
    /// The instance's store was dropped with response bodies still open: they were cut. Set
    /// before the drop, which is what ends those bodies (and makes them look complete).
    cut: AtomicBool,
    /// Requests assigned to the instance whose response has not ended.
    open_requests: AtomicUsize,
    requests_closed: tokio::sync::Notify,
    running: Mutex<Running>,
}

/// The requests an instance is answering, by start time.
struct Running {
    started: BTreeMap<u64, Instant>,
    next: u64,
    /// When the instance last had no request running (or was created).
    quiet_since: Instant,
    /// Since when the worker has not been idle (its expiration's view).
    busy_since: Option<Instant>,
}

impl InstanceFlags {
    fn new() -> Arc<InstanceFlags> {
        Arc::new(InstanceFlags {
            memory_hit: Arc::new(AtomicBool::new(false)),
            timed_out: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            open_requests: AtomicUsize::new(0),
            requests_closed: tokio::sync::Notify::new(),
            running: Mutex::new(Running {
                started: BTreeMap::new(),
                next: 0,
                quiet_since: Instant::now(),
                busy_since: None,
            }),
        })
    }

    fn running(&self) -> MutexGuard<'_, Running> {
        // The lock is never held across a panic point; a poisoned one still has valid data.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start_request(self: &Arc<Self>, assignment: Assignment) -> RunningRequest {
        let mut running = self.running();
        let id = running.next;
        running.next += 1;
        running.started.insert(id, Instant::now());
        RunningRequest {
            flags: self.clone(),
            id,
            expired: false,
            _assignment: assignment,
        }
    }

    /// Waits until no request assigned to this instance is open, or `limit` has passed;
    /// whether they all closed.
    async fn requests_closed_within(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            loop {
                let closed = self.requests_closed.notified();
                tokio::pin!(closed);
                closed.as_mut().enable();
                if self.open_requests.load(Ordering::SeqCst) == 0 {
                    return;
                }
                closed.await;
            }
        })
        .await
        .is_ok()
    }
}

/// A request counted as running until it answers (dropped then). One that expired stays
/// counted: its guest code may go on, and the instance's epoch stop must still see its start.
struct RunningRequest {
    flags: Arc<InstanceFlags>,
    id: u64,
    expired: bool,
    _assignment: Assignment,
}

impl RunningRequest {
    /// The request reached its time limit: it stays counted from its start.
    fn expire(&mut self) {
        self.expired = true;
    }
}

impl Drop for RunningRequest {
    fn drop(&mut self) {
        if self.expired {
            return;
        }
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
                _ticker: self.ticker.clone(),
            },
        })
    }
}

/// Stops guest code once the oldest request running on the instance (or its last quiet
/// moment) is older than `time_limit` plus [`EXPIRY_GRACE`], asked at every epoch tick;
/// other tasks get the thread at every tick until then.
fn set_instance_deadline(
    store: &mut Store<RequestState>,
    flags: Arc<InstanceFlags>,
    time_limit: Duration,
) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        let now = Instant::now();
        let computing_since = {
            let running = flags.running();
            running
                .started
                .values()
                .min()
                .copied()
                .unwrap_or(running.quiet_since)
        };
        if now.duration_since(computing_since) >= time_limit + EXPIRY_GRACE {
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
    _ticker: Arc<EpochTicker>,
}

impl WorkerState for Worker {
    type StoreData = RequestState;
    type RequestData = Assignment;

    fn should_accept_request(&self, concurrent_count: usize, total_count: usize) -> ShouldAccept {
        if total_count >= self.reuse.requests || self.stopped.load(Ordering::Relaxed) {
            return ShouldAccept::Never;
        }
        let running = self.flags.running();
        // Not idle for the time limit (bodies or tasks kept alive by a stream of new
        // requests): drain instead, so the expiration bounds what is left.
        if running
            .busy_since
            .is_some_and(|since| since.elapsed() >= self.time_limit)
        {
            return ShouldAccept::Never;
        }
        // A request running for long (a guest computing: the event loop runs between its
        // epoch ticks, so wasmtime sees room for more): a new one would wait for it, or die
        // with it at its time limit.
        let slow = running
            .started
            .values()
            .min()
            .is_some_and(|start| start.elapsed() >= SLOW_REQUEST);
        if slow || concurrent_count >= self.reuse.concurrent {
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
        assignment.assign(&self.flags);
        let mut running = self.flags.start_request(assignment);
        let time_limit = self.time_limit;
        Box::pin(async move {
            // Counted as running until it answers (this future is dropped) or expires.
            tokio::time::sleep(time_limit).await;
            running.expire();
        })
    }

    /// The store goes when the worker ends. A worker that failed (a trap, a limit, an
    /// expiry) cuts the response bodies still open, and says so first. A worker that ended
    /// cleanly has no guest task left, so its open bodies were closed by the guest but may not
    /// have been read to their end: the store is kept until they are, or until the time
    /// limit.
    fn drop(&self, store: Store<RequestState>, result: wasmtime::Result<()>) {
        if let Some(metrics) = &self.metrics {
            metrics.instance_memory(store.data().limiter.peak());
        }
        match result {
            Ok(()) => {
                if self.flags.open_requests.load(Ordering::SeqCst) == 0 {
                    return;
                }
                let flags = self.flags.clone();
                let time_limit = self.time_limit;
                tokio::spawn(
                    async move {
                        if !flags.requests_closed_within(time_limit).await {
                            flags.cut.store(true, Ordering::SeqCst);
                        }
                        drop(store);
                    }
                    .in_current_span(),
                );
            }
            Err(err) => {
                self.flags.cut.store(true, Ordering::SeqCst);
                drop(store);
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
        {
            let mut running = this.flags.running();
            if status == WorkerStatus::Idle {
                running.busy_since = None;
            } else {
                running.busy_since.get_or_insert(start);
            }
        }
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
/// `--max-requests`) is held as [`RequestAssignment`] says.
pub(super) async fn call(
    handler: &ProxyHandler<Instances>,
    request: hyper::Request<LimitedBody>,
    slot: tokio::sync::OwnedSemaphorePermit,
    time_limit: Duration,
    memory_limit: usize,
) -> Result<hyper::Response<super::HyperOutgoingBody>, Failure> {
    let deadline = tokio::time::Instant::now() + time_limit;
    let assignment = RequestAssignment::new(slot);
    let request = request.map(|body| body.boxed_unsync());
    // The worker expires the request at the time limit; this bounds the wait if its event
    // loop cannot even do that.
    let answered = match tokio::time::timeout(
        time_limit + 2 * EXPIRY_GRACE,
        handler.handle(assignment.clone(), request),
    )
    .await
    {
        Ok(answered) => answered,
        Err(_) => return Err(Failure::TimeLimit(time_limit)),
    };
    match answered {
        // Answered, but after the time limit (a host call holding the store returned late):
        // as late as no answer.
        Ok(_) if tokio::time::Instant::now() >= deadline => Err(Failure::TimeLimit(time_limit)),
        Ok(response) => Ok(response.map(|body| {
            InstanceBody {
                inner: body,
                assignment: Some(assignment),
                span: tracing::Span::current(),
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
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
    let flags = assignment.instance();
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

type Frame = Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, wasmtime_wasi_http::Error>>>;

/// A response body from a WASI 0.3 instance, bounded by its request's time limit like the rest
/// of the request: past the deadline it ends with an error.
///
/// The guest's body stream also closes when its instance's store is dropped, which looks like
/// a complete body; so at its end the body asks whether the store was dropped with bodies open
/// ([`InstanceFlags::cut`]), and ends with an error if so: hyper then aborts the response (the
/// chunked body is never terminated) instead of completing a short 200. A complete body that
/// hyper reads only after another request made the same instance fail is aborted too; a cut one
/// is never completed.
struct InstanceBody {
    inner: super::HyperOutgoingBody,
    /// Until the body ends: the request stays open on its instance and keeps its slot. A
    /// client that reads nothing is disconnected by the connection's stall limit, which drops
    /// the body (hyper does not poll a body while its write buffer is full).
    assignment: Option<Assignment>,
    span: tracing::Span,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl InstanceBody {
    fn end(&mut self) {
        self.assignment = None;
    }

    fn abort(&mut self, why: &str) -> Frame {
        self.end();
        let _entered = self.span.enter();
        error!("response aborted: {why}");
        Poll::Ready(Some(Err(ErrorCode::InternalError(Some(
            "the handler failed".to_string(),
        ))
        .into())))
    }
}

impl hyper::body::Body for InstanceBody {
    type Data = bytes::Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Frame {
        if self.assignment.is_none() {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return self.abort("the response body did not end within the time limit");
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {}
            frame => return frame,
        }
        let cut = self
            .assignment
            .as_ref()
            .and_then(|assignment| assignment.instance())
            .is_some_and(|flags| flags.cut.load(Ordering::SeqCst));
        if cut {
            return self.abort("the handler's instance ended before its response body did");
        }
        self.end();
        Poll::Ready(None)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
