//! `--otlp-endpoint URL`: OpenTelemetry spans over OTLP/HTTP (protobuf) — one per `serve`
//! request (and per `run`), and one per store operation inside it, its child in the same
//! trace. Nothing is exported without the flag.
//!
//! Request spans are the host's `tracing` spans, bridged by `tracing-opentelemetry`; store
//! spans are made by [`StoreSpans`] from kv-core's [`Observer`] hook once an operation ends,
//! with its real start and end, so the store's hot path has no span to enter.

use std::borrow::Cow;
use std::time::SystemTime;

use anyhow::Context as _;
use kv_core::observe::{Observer, StoreCall};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The OTLP/HTTP path of traces, appended to a collector's base URL.
const TRACES_PATH: &str = "/v1/traces";

/// The exporter of one process; [`Traces::shutdown`] sends what is still buffered.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces").finish_non_exhaustive()
    }
}

/// The traces URL of `endpoint`: a collector's base (`http://127.0.0.1:4318`) gets
/// `/v1/traces`; a URL that already names it is kept.
pub fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(endpoint)
        .with_context(|| format!("--otlp-endpoint {endpoint:?}: not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        anyhow::bail!("--otlp-endpoint {endpoint:?}: expected http://HOST:PORT or https://…");
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        anyhow::bail!(
            "--otlp-endpoint {endpoint:?}: no query, fragment or user info (headers go in \
             OTEL_EXPORTER_OTLP_HEADERS)"
        );
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if url.path().ends_with(TRACES_PATH) {
        base.to_string()
    } else {
        format!("{base}{TRACES_PATH}")
    })
}

impl Traces {
    /// An exporter to `endpoint`, batching spans on a thread of its own.
    pub fn new(endpoint: &str) -> anyhow::Result<Traces> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(endpoint)?)
            .build()
            .context("cannot build the OTLP exporter")?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("wasi-kv").build())
            .build();
        Ok(Traces { provider })
    }

    /// The tracer spans are made with.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("wasi-kv")
    }

    /// Exports what is buffered and stops.
    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("warning: exporting the last spans failed: {err}");
        }
    }
}

/// Makes a span of each store operation, a child of the span the caller is in (the request).
pub struct StoreSpans {
    tracer: SdkTracer,
}

impl StoreSpans {
    /// Spans from `tracer`.
    pub fn new(tracer: SdkTracer) -> StoreSpans {
        StoreSpans { tracer }
    }
}

impl Observer for StoreSpans {
    fn call(&self, call: &StoreCall<'_>) {
        let end = SystemTime::now();
        let start = end.checked_sub(call.elapsed).unwrap_or(end);
        let parent = tracing::Span::current().context();
        let mut attributes = vec![
            KeyValue::new("db.system.name", "wasi-kv"),
            KeyValue::new("db.operation.name", call.op),
            KeyValue::new("kv.store", call.store.to_string()),
            KeyValue::new("kv.provider", call.provider.to_string()),
            KeyValue::new("kv.calls", i64::from(call.calls)),
            KeyValue::new("kv.attempts", i64::from(call.attempts)),
        ];
        if let Some(kind) = call.error {
            attributes.push(KeyValue::new("error.type", kind.class()));
        }
        if call.outcome_unknown {
            attributes.push(KeyValue::new("kv.outcome_unknown", true));
        }
        let mut span = self
            .tracer
            .span_builder(Cow::Owned(format!("kv {}", call.op)))
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        if let Some(kind) = call.error {
            span.set_status(Status::error(kind.class()));
        }
        span.end_with_timestamp(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for (given, url) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
            (
                "https://otel.example:4318/v1/traces",
                "https://otel.example:4318/v1/traces",
            ),
            ("http://collector/otlp", "http://collector/otlp/v1/traces"),
        ] {
            assert_eq!(traces_url(given).unwrap(), url, "{given}");
        }
        for bad in [
            "127.0.0.1:4318",
            "grpc://127.0.0.1:4317",
            "http://u:p@host:4318",
            "http://host:4318/?token=x",
            "",
        ] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }
}
