//! Fault injection between a provider and its backend, on loopback, for the fault matrix
//! (docs/reliability.md) and `wasi-kv conformance --faults`.
//!
//! - [`FaultProxy`] listens on a free loopback port and forwards to the backend. Faults are
//!   scripted per request: "drop the reply of the next N requests", "answer the next N with
//!   429". The Redis proxy works on TCP reads (a read from the client is one request). The
//!   HTTP proxy works on HTTP/1.1 requests, one upstream connection per client connection,
//!   and can also answer with injected responses.
//! - [`Lossy`] wraps any provider in process (the in-memory one has no network): its
//!   buckets apply an operation and then report it failed, as a lost reply would.
//!
//! No maintained proxy fits: Toxiproxy-style proxies (the `noxious` crates) shape TCP streams,
//! but none can let one request through and drop exactly its reply, or answer one HTTP request
//! with a throttling response. This module does only that.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kv_core::layer::{Layer, LayeredBucket, LayeredProvider, Op};
use kv_core::{Bucket, KvError, Provider, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What happens to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forwarded after this delay.
    Latency(Duration),
    /// Forwarded after this delay even if the client has given up and closed the connection
    /// meanwhile (HTTP; over TCP, as [`Fault::Latency`]): a copy still on its way, which the
    /// backend executes after the client has moved on. The reply reaches a client still
    /// waiting.
    LateCopy(Duration),
    /// The connection is closed before the request reaches the backend: nothing applied.
    ResetBeforeForward,
    /// Forwarded; the backend executes it; its reply is dropped and the connection closed.
    DropReply,
    /// Never forwarded and never answered: the client waits until it gives up.
    Stall,
    /// Answered by the proxy (HTTP only), never forwarded.
    Respond(Injected),
    /// DynamoDB batch calls (HTTP only) answered with every item left unprocessed, as a
    /// throttled table does; other requests are forwarded.
    DynamoUnprocessed,
}

/// An HTTP response the proxy answers with instead of the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl Injected {
    /// `429 Too Many Requests`, with `Retry-After: seconds` when given.
    pub fn too_many_requests(retry_after_secs: Option<u64>) -> Injected {
        Injected {
            status: 429,
            headers: retry_after_secs
                .map(|secs| vec![("retry-after".to_string(), secs.to_string())])
                .unwrap_or_default(),
            body: "{\"error\":{\"code\":429,\"message\":\"rate limited (injected)\"}}".to_string(),
        }
    }

    /// A bare status with a small JSON body.
    pub fn status(status: u16) -> Injected {
        Injected {
            status,
            headers: Vec::new(),
            body: format!("{{\"error\":{{\"code\":{status},\"message\":\"injected\"}}}}"),
        }
    }

    /// DynamoDB's throughput error, as the service sends it.
    pub fn dynamodb_throughput_exceeded() -> Injected {
        Injected {
            status: 400,
            headers: vec![(
                "content-type".to_string(),
                "application/x-amz-json-1.0".to_string(),
            )],
            body: "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException\",\
                   \"message\":\"The level of configured provisioned throughput for the table was exceeded (injected)\"}"
                .to_string(),
        }
    }
}

/// Which requests get a fault.
#[derive(Debug, Default)]
struct Script {
    /// What happens to the next requests, in order: a fault, or `None` to let one through.
    next: VecDeque<Option<Fault>>,
    /// A fault for every n-th request after the scripted ones.
    every: Option<(u64, Fault)>,
    /// Requests seen.
    seen: u64,
}

/// The protocol the proxy understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Raw TCP, one client read = one request (Redis).
    Tcp,
    /// HTTP/1.1 (DynamoDB, Cloud Storage, Cosmos DB).
    Http,
}

/// A loopback proxy in front of one backend that injects scripted faults.
pub struct FaultProxy {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr, protocol: Protocol) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let script = Arc::new(Mutex::new(Script::default()));
        let task_script = script.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                let script = task_script.clone();
                tokio::spawn(async move {
                    match protocol {
                        Protocol::Tcp => serve_tcp(client, upstream, script).await,
                        Protocol::Http => serve_http(client, upstream, script).await,
                    }
                });
            }
        });
        Ok(FaultProxy { addr, script, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next `count` requests get `fault`.
    pub fn next(&self, fault: Fault, count: usize) {
        let mut script = lock(&self.script);
        script.next.extend(std::iter::repeat_n(Some(fault), count));
    }

    /// The next `pass` requests go through untouched; the one after gets `fault`. This is how
    /// a fault reaches the second or third request of one operation (the conditional write of
    /// a read-modify-write, the write after a resolving read).
    pub fn after(&self, pass: usize, fault: Fault) {
        let mut script = lock(&self.script);
        script.next.extend(std::iter::repeat_n(None, pass));
        script.next.push_back(Some(fault));
    }

    /// Scripted requests not reached yet: non-zero after an operation means it sent fewer
    /// requests than the script covers.
    pub fn pending(&self) -> usize {
        lock(&self.script).next.len()
    }

    /// Requests that reached the proxy since it started.
    pub fn seen(&self) -> u64 {
        lock(&self.script).seen
    }

    /// Every `n`-th request (after the scripted ones) gets `fault`, until [`Self::clear`].
    pub fn every(&self, n: u64, fault: Fault) {
        lock(&self.script).every = Some((n.max(1), fault));
    }

    /// No more faults.
    pub fn clear(&self) {
        let mut script = lock(&self.script);
        script.next.clear();
        script.every = None;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(script: &Mutex<Script>) -> std::sync::MutexGuard<'_, Script> {
    script
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The fault for the request arriving now, if any.
fn take_fault(script: &Mutex<Script>) -> Option<Fault> {
    let mut script = lock(script);
    script.seen += 1;
    match script.next.pop_front() {
        Some(scripted) => scripted,
        None => match &script.every {
            Some((n, fault)) if script.seen.is_multiple_of(*n) => Some(fault.clone()),
            _ => None,
        },
    }
}

/// Upper bound on how long a stalled request is held: the client gives up long before.
const STALL: Duration = Duration::from_secs(120);

async fn serve_tcp(mut client: TcpStream, upstream: SocketAddr, script: Arc<Mutex<Script>>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let mut from_client = vec![0u8; 64 * 1024];
    let mut from_server = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = client.read(&mut from_client) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                match take_fault(&script) {
                    None => {}
                    Some(Fault::Latency(delay) | Fault::LateCopy(delay)) => {
                        tokio::time::sleep(delay).await
                    }
                    Some(Fault::ResetBeforeForward) => return,
                    Some(Fault::Stall) => {
                        tokio::time::sleep(STALL).await;
                        return;
                    }
                    Some(Fault::DropReply) => {
                        // Let the server execute it, wait for its reply, then drop both ends.
                        if server.write_all(&from_client[..n]).await.is_ok() {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(5),
                                server.read(&mut from_server),
                            )
                            .await;
                        }
                        return;
                    }
                    Some(Fault::Respond(_) | Fault::DynamoUnprocessed) => return,
                }
                if server.write_all(&from_client[..n]).await.is_err() {
                    return;
                }
            }
            read = server.read(&mut from_server) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                if client.write_all(&from_server[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

type ProxyBody = Full<Bytes>;

async fn serve_http(client: TcpStream, upstream: SocketAddr, script: Arc<Mutex<Script>>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let Ok((sender, connection)) =
        hyper::client::conn::http1::handshake::<_, ProxyBody>(TokioIo::new(server)).await
    else {
        return;
    };
    tokio::spawn(connection);
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let (sender, script) = (sender.clone(), script.clone());
        async move {
            let fault = take_fault(&script);
            let (parts, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|err| std::io::Error::other(err.to_string()))?
                .to_bytes();
            match fault {
                Some(Fault::Respond(injected)) => {
                    let mut response = hyper::Response::builder().status(injected.status);
                    for (name, value) in &injected.headers {
                        response = response.header(name, value);
                    }
                    return response
                        .body(Full::new(Bytes::from(injected.body)))
                        .map_err(|err| std::io::Error::other(err.to_string()));
                }
                Some(Fault::ResetBeforeForward) => {
                    return Err(std::io::Error::other("reset before forwarding (injected)"));
                }
                Some(Fault::Stall) => {
                    tokio::time::sleep(STALL).await;
                    return Err(std::io::Error::other("stalled (injected)"));
                }
                Some(Fault::Latency(delay)) => tokio::time::sleep(delay).await,
                Some(Fault::DynamoUnprocessed) => {
                    if let Some(answer) = unprocessed(&parts.headers, &body) {
                        return hyper::Response::builder()
                            .status(200)
                            .header("content-type", "application/x-amz-json-1.0")
                            .body(Full::new(Bytes::from(answer)))
                            .map_err(|err| std::io::Error::other(err.to_string()));
                    }
                }
                Some(Fault::LateCopy(delay)) => {
                    // Apart from this connection: hyper drops this future when the client
                    // closes, and the copy must still arrive.
                    let forwarded = hyper::Request::from_parts(parts, Full::new(body));
                    let late = tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let response = sender.lock().await.send_request(forwarded).await;
                        match response {
                            Ok(response) => {
                                let (parts, body) = response.into_parts();
                                let body = body.collect().await.map(|body| body.to_bytes());
                                body.map(|body| (parts, body))
                                    .map_err(|err| err.to_string())
                            }
                            Err(err) => Err(err.to_string()),
                        }
                    });
                    let (parts, body) = late
                        .await
                        .map_err(|err| std::io::Error::other(err.to_string()))?
                        .map_err(std::io::Error::other)?;
                    return Ok(hyper::Response::from_parts(parts, Full::new(body)));
                }
                Some(Fault::DropReply) | None => {}
            }
            let forwarded = hyper::Request::from_parts(parts, Full::new(body));
            let response = sender
                .lock()
                .await
                .send_request(forwarded)
                .await
                .map_err(|err| std::io::Error::other(err.to_string()))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|err| std::io::Error::other(err.to_string()))?
                .to_bytes();
            if fault == Some(Fault::DropReply) {
                // The backend executed the request; the client never hears of it.
                return Err(std::io::Error::other("reply dropped (injected)"));
            }
            Ok::<_, std::io::Error>(hyper::Response::from_parts(parts, Full::new(body)))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(client), service)
        .await;
}

/// The answer of a throttled table to a DynamoDB batch request: every item unprocessed.
fn unprocessed(headers: &hyper::HeaderMap, body: &[u8]) -> Option<String> {
    let target = headers.get("x-amz-target")?.to_str().ok()?;
    let request: serde_json::Value = serde_json::from_slice(body).ok()?;
    let items = request.get("RequestItems")?.clone();
    let answer = if target.ends_with(".BatchWriteItem") {
        serde_json::json!({ "UnprocessedItems": items })
    } else if target.ends_with(".BatchGetItem") {
        serde_json::json!({ "Responses": {}, "UnprocessedKeys": items })
    } else {
        return None;
    };
    Some(answer.to_string())
}

/// In-process faults, the network faults of a provider without a network: replies lost after
/// the operation applied, requests dropped before it, and a partition during which nothing
/// reaches the store.
#[derive(Debug, Default)]
pub struct LossyState {
    lose_next: AtomicU64,
    every: AtomicU64,
    seen: AtomicU64,
    refuse_every: AtomicU64,
    refused_seen: AtomicU64,
    partitioned: std::sync::atomic::AtomicBool,
}

impl LossyState {
    /// The replies of the next `count` operations are lost.
    pub fn lose_next(&self, count: u64) {
        self.lose_next.fetch_add(count, Ordering::Relaxed);
    }

    /// The reply of every `n`-th operation is lost (0 = none).
    pub fn lose_every(&self, n: u64) {
        self.every.store(n, Ordering::Relaxed);
    }

    /// Every `n`-th operation (0 = none) fails with `unavailable` before it reaches the store,
    /// as a request lost on the way does: nothing applied, and the client cannot know that.
    pub fn refuse_every(&self, n: u64) {
        self.refuse_every.store(n, Ordering::Relaxed);
    }

    /// While on, operations wait before reaching the store (until it ends, or the caller's
    /// operation timeout gives up on them), as behind a network partition.
    pub fn partition(&self, on: bool) {
        self.partitioned.store(on, Ordering::Relaxed);
    }

    async fn admit(&self) -> Result<()> {
        while self.partitioned.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let every = self.refuse_every.load(Ordering::Relaxed);
        let seen = self.refused_seen.fetch_add(1, Ordering::Relaxed) + 1;
        if every > 0 && seen.is_multiple_of(every) {
            return Err(KvError::unavailable(
                "the request was lost before the store (injected)",
            ));
        }
        Ok(())
    }

    fn lose(&self) -> bool {
        let seen = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        let scripted = self
            .lose_next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        let every = self.every.load(Ordering::Relaxed);
        scripted || (every > 0 && seen.is_multiple_of(every))
    }

    fn apply<T>(&self, result: Result<T>) -> Result<T> {
        match result {
            Ok(_) if self.lose() => Err(KvError::unavailable("the reply was lost (injected)")),
            other => other,
        }
    }
}

/// Replies lost on command ([`LossyState`]): a [`Layer`] over every bucket of a provider.
#[derive(Debug, Clone, Default)]
pub struct Lossy {
    state: Arc<LossyState>,
}

impl Lossy {
    /// `inner` with every bucket it opens losing replies as the returned state says.
    pub fn provider(inner: Arc<dyn Provider>) -> (Arc<dyn Provider>, Arc<LossyState>) {
        let state = Arc::new(LossyState::default());
        (Self::provider_with(inner, &state), state)
    }

    /// `inner` with its buckets under `state`, shared with other providers (several hosts'
    /// connections to one SQLite file, faulted together).
    pub fn provider_with(inner: Arc<dyn Provider>, state: &Arc<LossyState>) -> Arc<dyn Provider> {
        let lossy = Lossy {
            state: state.clone(),
        };
        Arc::new(LayeredProvider::new(inner, lossy))
    }
}

impl Layer for Lossy {
    fn layer(&self, inner: Arc<dyn Bucket>) -> Arc<dyn Bucket> {
        Arc::new(LossyBucket {
            inner,
            state: self.state.clone(),
        })
    }
}

struct LossyBucket {
    inner: Arc<dyn Bucket>,
    state: Arc<LossyState>,
}

/// Every call is forwarded unless refused or held by a partition; a lost reply replaces a
/// success after the backend applied it. The bucket's change feed is faulted the same way.
#[async_trait]
impl LayeredBucket for LossyBucket {
    fn inner(&self) -> &dyn Bucket {
        &*self.inner
    }

    fn change_feed(&self) -> Option<Arc<dyn kv_core::watch::ChangeFeed>> {
        let feed = self.inner.change_feed()?;
        Some(Arc::new(LossyFeed {
            feed,
            state: self.state.clone(),
        }))
    }

    async fn before(&self, _op: Op) -> Result<()> {
        self.state.admit().await
    }

    fn after<T: Send>(&self, _op: Op, result: Result<T>) -> Result<T> {
        self.state.apply(result)
    }
}

/// A bucket's change feed under a [`LossyState`]: its reads are refused, held or have their
/// replies lost like the bucket's calls.
struct LossyFeed {
    feed: Arc<dyn kv_core::watch::ChangeFeed>,
    state: Arc<LossyState>,
}

#[async_trait]
impl kv_core::watch::ChangeFeed for LossyFeed {
    async fn head(&self) -> Result<kv_core::watch::Position> {
        self.state.admit().await?;
        self.state.apply(self.feed.head().await)
    }

    async fn changes_after(
        &self,
        after: &kv_core::watch::Position,
        max: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<kv_core::watch::Changes> {
        self.state.admit().await?;
        self.state
            .apply(self.feed.changes_after(after, max, max_bytes, wait).await)
    }
}
