//! An HTTP handler built against WASI 0.2.0: answers `GET /` with the value of the environment
//! variable `GREETING` (through `wasi:cli/environment@0.2.0`) and the count of its requests (a
//! keyvalue increment in the store `default`).

mod bindings {
    wit_bindgen::generate!({
        path: ["../../../wit/keyvalue", "wit"],
        world: "wasi-kv:compat/handler@0.1.0",
        generate_all,
    });
}

// The example's HTTP plumbing, reused as is.
#[allow(dead_code)]
#[path = "../../../../examples/http-kv/src/http.rs"]
mod http;

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::wasi::cli::environment;
use bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use bindings::wasi::keyvalue::{atomics, store};
use http::Response;

struct Handler;

impl Guest for Handler {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let greeting = environment::get_environment()
            .into_iter()
            .find(|(name, _)| name == "GREETING")
            .map(|(_, value)| value)
            .unwrap_or_default();
        let count =
            store::open("default").and_then(|bucket| atomics::increment(&bucket, "requests", 1));
        let (status, text) = match count {
            Ok(count) => (200, format!("{greeting} {count}\n")),
            Err(err) => (500, format!("{err:?}\n")),
        };
        Response::new(status, "text/plain", text.into_bytes()).send(out);
    }
}

bindings::export!(Handler with_types_in bindings);
