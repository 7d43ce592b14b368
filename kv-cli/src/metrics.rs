//! `--metrics ADDR`: what `serve` and `run` did, as Prometheus text on `http://ADDR/metrics`.
//!
//! Per store and operation: calls by outcome (`ok` or the error class), retries, calls whose
//! outcome is unknown, latency, batch sizes and value bytes. Per `serve` request: the status,
//! the duration to the response head, and the linear memory the instance grew to. Counted by
//! kv-core's [`Observer`] hook, so every provider and every entry point is measured the same
//! way; nothing is measured without `--metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kv_core::observe::{Observer, StoreCall, Transfer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// The OpenMetrics content type Prometheus asks for and `prometheus-client` writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    store: String,
    provider: String,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    store: String,
    provider: String,
    op: &'static str,
    /// `ok`, or the error class (`unavailable`, `no-such-key`…).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    store: String,
    provider: String,
    op: &'static str,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of one host process.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    retries: Family<OpLabels, Counter>,
    outcome_unknown: Family<OpLabels, Counter>,
    latency: HistogramFamily<OpLabels>,
    batch_entries: HistogramFamily<OpLabels>,
    value_bytes: Family<BytesLabels, Counter>,
    requests: Family<StatusLabels, Counter>,
    request_duration: Histogram,
    instance_memory: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_buckets() -> Histogram {
    // 50 µs to about 1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

fn batch_buckets() -> Histogram {
    // 1 to 16,384 entries.
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wasi_kv");
        let calls = Family::default();
        let retries = Family::default();
        let outcome_unknown = Family::default();
        let latency: HistogramFamily<OpLabels> = Family::new_with_constructor(latency_buckets);
        let batch_entries: HistogramFamily<OpLabels> = Family::new_with_constructor(batch_buckets);
        let value_bytes = Family::default();
        let requests = Family::default();
        let request_duration = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        // 64 KiB (one wasm page) to 2 GiB.
        let instance_memory = Histogram::new(exponential_buckets(65_536.0, 2.0, 16));
        registry.register(
            "store_calls",
            "Store operations by outcome: ok, or the error class the caller got",
            calls.clone(),
        );
        registry.register(
            "store_retries",
            "Provider attempts beyond the first, after transient errors",
            retries.clone(),
        );
        registry.register(
            "store_outcome_unknown",
            "Writes that ended with the outcome unknown (they may have applied)",
            outcome_unknown.clone(),
        );
        registry.register(
            "store_call_duration_seconds",
            "Store operation latency, retries and backoff included",
            latency.clone(),
        );
        registry.register(
            "store_batch_entries",
            "Entries per successful batch operation",
            batch_entries.clone(),
        );
        registry.register(
            "store_value_bytes",
            "Value bytes read and written by successful operations",
            value_bytes.clone(),
        );
        registry.register(
            "http_requests",
            "Requests served, by response status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response head",
            request_duration.clone(),
        );
        registry.register(
            "instance_memory_bytes",
            "Linear memory one request's instance grew to",
            instance_memory.clone(),
        );
        Metrics {
            registry,
            calls,
            retries,
            outcome_unknown,
            latency,
            batch_entries,
            value_bytes,
            requests,
            request_duration,
            instance_memory,
        }
    }

    /// One `serve` request answered with `status` after `elapsed`.
    pub fn request(&self, status: u16, elapsed: Duration) {
        self.requests.get_or_create(&StatusLabels { status }).inc();
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    /// A request's instance grew its linear memory to `bytes`.
    pub fn instance_memory(&self, bytes: usize) {
        self.instance_memory.observe(bytes as f64);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Observer for Metrics {
    fn call(&self, call: &StoreCall<'_>) {
        let op = OpLabels {
            store: call.store.to_string(),
            provider: call.provider.to_string(),
            op: call.op,
        };
        self.calls
            .get_or_create(&CallLabels {
                store: op.store.clone(),
                provider: op.provider.clone(),
                op: call.op,
                outcome: call.error.map_or("ok", |kind| kind.class()),
            })
            .inc();
        let retries = call.attempts.saturating_sub(call.calls);
        if retries > 0 {
            self.retries.get_or_create(&op).inc_by(u64::from(retries));
        }
        if call.outcome_unknown {
            self.outcome_unknown.get_or_create(&op).inc();
        }
        self.latency
            .get_or_create(&op)
            .observe(call.elapsed.as_secs_f64());
    }

    fn transfer(&self, transfer: &Transfer<'_>) {
        if transfer.op.ends_with("-many") {
            self.batch_entries
                .get_or_create(&OpLabels {
                    store: transfer.store.to_string(),
                    provider: transfer.provider.to_string(),
                    op: transfer.op,
                })
                .observe(transfer.entries as f64);
        }
        if transfer.bytes > 0 {
            self.value_bytes
                .get_or_create(&BytesLabels {
                    store: transfer.store.to_string(),
                    provider: transfer.provider.to_string(),
                    op: transfer.op,
                    direction: if transfer.written { "written" } else { "read" },
                })
                .inc_by(transfer.bytes);
        }
    }
}

/// Binds the admin address (loopback unless told otherwise: it is unauthenticated).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen for metrics on {addr}: {err}"))
}

/// Answers `GET /metrics` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!("metrics: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let metrics = metrics.clone();
            async move {
                let response = if request.uri().path() == "/metrics"
                    && request.method() == hyper::Method::GET
                {
                    hyper::Response::builder()
                        .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
                        .body(Full::new(Bytes::from(metrics.encode())))
                } else {
                    hyper::Response::builder()
                        .status(hyper::StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from_static(
                            b"only GET /metrics is here\n",
                        )))
                };
                Ok::<_, Infallible>(response.unwrap_or_default())
            }
        });
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                debug!(%peer, "metrics connection ended with an error: {err}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use kv_core::ErrorKind;

    /// Outcomes by class, retries beyond the first attempt, unknown outcomes, batch sizes and
    /// bytes by direction all reach the text Prometheus reads.
    #[test]
    fn observed_calls_become_series() {
        let metrics = Metrics::new();
        let call = |op, error, outcome_unknown, attempts| StoreCall {
            calls: 1,
            store: "cache",
            provider: "redis",
            op,
            error,
            outcome_unknown,
            attempts,
            elapsed: Duration::from_millis(2),
        };
        metrics.call(&call("get", None, false, 1));
        metrics.call(&call("get", None, false, 3));
        metrics.call(&call("set", Some(ErrorKind::Unavailable), true, 4));
        // A batch in three parts, none retried: no retries.
        metrics.call(&StoreCall {
            calls: 3,
            ..call("delete-many", None, false, 3)
        });
        metrics.transfer(&Transfer {
            store: "cache",
            provider: "redis",
            op: "set-many",
            entries: 10,
            bytes: 640,
            written: true,
        });
        metrics.request(200, Duration::from_millis(3));
        metrics.instance_memory(1 << 20);
        let text = metrics.encode();
        assert!(!text.contains(r#"retries_total{store="cache",provider="redis",op="delete-many""#));
        for line in [
            r#"wasi_kv_store_calls_total{store="cache",provider="redis",op="get",outcome="ok"} 2"#,
            r#"wasi_kv_store_calls_total{store="cache",provider="redis",op="set",outcome="unavailable"} 1"#,
            r#"wasi_kv_store_retries_total{store="cache",provider="redis",op="get"} 2"#,
            r#"wasi_kv_store_retries_total{store="cache",provider="redis",op="set"} 3"#,
            r#"wasi_kv_store_outcome_unknown_total{store="cache",provider="redis",op="set"} 1"#,
            r#"wasi_kv_store_call_duration_seconds_count{store="cache",provider="redis",op="get"} 2"#,
            r#"wasi_kv_store_batch_entries_sum{store="cache",provider="redis",op="set-many"} 10.0"#,
            r#"wasi_kv_store_value_bytes_total{store="cache",provider="redis",op="set-many",direction="written"} 640"#,
            r#"wasi_kv_http_requests_total{status="200"} 1"#,
            "wasi_kv_instance_memory_bytes_count 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
