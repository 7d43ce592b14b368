//! The serve benchmark's WASIp3 handler (`kv-cli/benches/serve.rs`, docs/benchmarks.md): the
//! routes of `test-components/handlers/bench-handler` behind WASI 0.3's async
//! `wasi:http/handler@0.3.0`, written against `wasi:keyvalue@0.2.0-draft` and opening `""`,
//! so the same file runs on `wasi-kv serve` and on `wasmtime serve -S p3 -S keyvalue`:
//!
//! | route | answer |
//! |---|---|
//! | `GET /kv/{key}` | 200 and the value; 404 if missing |
//! | `PUT /kv/{key}` | 204; the body is the value |
//! | `POST /counter/{key}` | 200 and the new count |
//!
//! Store errors are 500 with the error's text; the benchmark counts any non-2xx as an error.

mod bindings {
    wit_bindgen::generate!({
        path: [
            "../../../wit/keyvalue",
            "../../../wit/keyvalue-draft",
            "../../../wit/p3",
            "../../../wit/p3-bench",
        ],
        world: "wasi-kv:p3-bench/bench-handler@0.1.0",
        generate_all,
    });
}

use bindings::exports::wasi::http::handler::Guest;
use bindings::wasi::http::types::{ErrorCode, Method, Request, Response};
use bindings::wasi::keyvalue0_2_0_draft::{atomics, store};
use bindings::wit_future;

#[path = "../../p3-handler/src/respond.rs"]
mod respond;

use respond::respond;

struct Handler;

impl Guest for Handler {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        let bucket = match store::open("") {
            Ok(bucket) => bucket,
            Err(err) => return Ok(failed(err)),
        };
        Ok(match (request.get_method(), path.strip_prefix('/')) {
            (Method::Get, Some(rest)) if rest.starts_with("kv/") => match bucket.get(&rest[3..]) {
                Ok(Some(value)) => respond(200, value),
                Ok(None) => respond(404, b"no such key".to_vec()),
                Err(err) => failed(err),
            },
            (Method::Put, Some(rest)) if rest.starts_with("kv/") => {
                let key = rest[3..].to_string();
                let (_, result) = wit_future::new(|| Ok(()));
                let (contents, _trailers) = Request::consume_body(request, result);
                let value = contents.collect().await;
                match bucket.set(&key, &value) {
                    Ok(()) => respond(204, Vec::new()),
                    Err(err) => failed(err),
                }
            }
            (Method::Post, Some(rest)) if rest.starts_with("counter/") => {
                match atomics::increment(&bucket, &rest[8..], 1) {
                    Ok(count) => respond(200, count.to_string().into_bytes()),
                    Err(err) => failed(err),
                }
            }
            _ => respond(404, b"no such route".to_vec()),
        })
    }
}

fn failed(err: store::Error) -> Response {
    respond(500, format!("{err:?}").into_bytes())
}

bindings::export!(Handler with_types_in bindings);
