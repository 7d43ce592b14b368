//! A WASI 0.3 response whose body a task writes after `handle` returns (the host reads it
//! then). Shared by the WASIp3 handler fixtures (`#[path]`): each has a `bindings` module with
//! `wasi:http@0.3.0` in it.

use crate::bindings::wasi::http::types::{Fields, Response};
use crate::bindings::{wit_future, wit_stream};

pub(crate) fn respond(status: u16, body: Vec<u8>) -> Response {
    let (mut contents_tx, contents) = wit_stream::new();
    let (trailers_tx, trailers) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (response, _sent) = Response::new(Fields::new(), Some(contents), trailers);
    let _ = response.set_status_code(status);
    wit_bindgen::spawn_local(async move {
        let _unwritten = contents_tx.write_all(body).await;
    });
    response
}
