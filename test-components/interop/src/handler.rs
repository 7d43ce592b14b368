//! An interop HTTP handler: answers every request with [`report::report`] (200), or 500.

#[macro_use]
mod wit;

#[cfg(feature = "spin")]
interop_bindings!("wasi-kv:interop/spin-handler@0.1.0");
#[cfg(feature = "draft")]
interop_bindings!("wasi-kv:interop/draft-handler@0.1.0");

// The example's HTTP plumbing, reused as is.
#[allow(dead_code)]
#[path = "../../../examples/http-kv/src/http.rs"]
mod http;

mod report;

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use http::Response;

struct Handler;

impl Guest for Handler {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let (status, text) = match report::report() {
            Ok(text) => (200, text),
            Err(err) => (500, format!("{err}\n")),
        };
        #[cfg(feature = "draft")]
        let text = with_note(text);
        Response::new(status, "text/plain", text.into_bytes()).send(out);
    }
}

/// The draft handler reads `INTEROP_NOTE` through `wasi:cli@0.2.12` itself.
#[cfg(feature = "draft")]
fn with_note(mut text: String) -> String {
    if let Some((_, note)) = bindings::wasi::cli::environment::get_environment()
        .into_iter()
        .find(|(name, _)| name == "INTEROP_NOTE")
    {
        text.push_str(&format!("note: {note}\n"));
    }
    text
}

bindings::export!(Handler with_types_in bindings);
