//! The serve benchmark's handler (`kv-cli/benches/serve.rs`, docs/benchmarks.md), written
//! against `wasi:keyvalue@0.2.0-draft` and opening `""`, so the same file runs on
//! `wasi-kv serve` and on `wasmtime serve -S keyvalue`:
//!
//! | route | answer |
//! |---|---|
//! | `GET /kv/{key}` | 200 and the value; 404 if missing |
//! | `PUT /kv/{key}` | 204; the body is the value |
//! | `POST /counter/{key}` | 200 and the new count |
//!
//! Store errors are 500 with the error's text; the benchmark counts any non-2xx as an error.

#[macro_use]
#[path = "../../../interop/src/wit.rs"]
mod wit;

interop_bindings!("wasi-kv:interop/draft-handler@0.1.0");

// The example's HTTP plumbing, reused as is.
#[allow(dead_code)]
#[path = "../../../../examples/http-kv/src/http.rs"]
mod http;

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use bindings::wasi::keyvalue0_2_0_draft::{atomics, store};
use http::Response;

/// Largest body a PUT may send.
const MAX_BODY_BYTES: usize = 1 << 20;

struct Handler;

impl Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        route(&request).send(out);
    }
}

bindings::export!(Handler with_types_in bindings);

fn route(request: &IncomingRequest) -> Response {
    let path = request.path_with_query().unwrap_or_default();
    let bucket = match store::open("") {
        Ok(bucket) => bucket,
        Err(err) => return failed(err),
    };
    match (request.method(), path.split_once('/').map(|(_, rest)| rest)) {
        (Method::Get, Some(rest)) if rest.starts_with("kv/") => match bucket.get(&rest[3..]) {
            Ok(Some(value)) => Response::new(200, "application/octet-stream", value),
            Ok(None) => Response::error(404, "no such key"),
            Err(err) => failed(err),
        },
        (Method::Put, Some(rest)) if rest.starts_with("kv/") => {
            let value = match http::read_body(request, MAX_BODY_BYTES) {
                Ok(value) => value,
                Err(response) => return response,
            };
            match bucket.set(&rest[3..], &value) {
                Ok(()) => Response::empty(204),
                Err(err) => failed(err),
            }
        }
        (Method::Post, Some(rest)) if rest.starts_with("counter/") => {
            match atomics::increment(&bucket, &rest[8..], 1) {
                Ok(count) => Response::new(200, "text/plain", count.to_string().into_bytes()),
                Err(err) => failed(err),
            }
        }
        _ => Response::error(404, "no such route"),
    }
}

fn failed(err: store::Error) -> Response {
    Response::error(500, &format!("{err:?}"))
}
