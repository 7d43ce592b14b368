//! An interop HTTP handler: answers every request with [`report::report`] (200), or 500.

#[cfg(feature = "spin")]
mod bindings {
    wit_bindgen::generate!({
        path: [
            "../../../wit/keyvalue-spin",
            "../../../wit/keyvalue-draft",
            "../../../wit/ttl",
            "../../../wit/http-handler",
            "../../../wit/interop",
        ],
        world: "wasi-kv:interop/spin-handler@0.1.0",
        generate_all,
    });
}

#[cfg(feature = "draft")]
mod bindings {
    wit_bindgen::generate!({
        path: [
            "../../../wit/keyvalue-spin",
            "../../../wit/keyvalue-draft",
            "../../../wit/ttl",
            "../../../wit/http-handler",
            "../../../wit/interop",
        ],
        world: "wasi-kv:interop/draft-handler@0.1.0",
        generate_all,
    });
}

mod report;

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Handler;

impl Guest for Handler {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let (status, text) = match report::report() {
            Ok(text) => (200, text),
            Err(err) => (500, format!("{err}\n")),
        };
        #[cfg(feature = "draft")]
        let text = with_note(text);
        let response = OutgoingResponse::new(Fields::new());
        let _ = response.set_status_code(status);
        let Ok(body) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            let _ = stream.blocking_write_and_flush(text.as_bytes());
        }
        let _ = OutgoingBody::finish(body, None);
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
