//! A handler that misbehaves on request, so `wasi-kv serve`'s protections can be tested:
//!
//! - `GET /` answers 200 `ok`;
//! - `GET /sleep?ms=N` answers after N ms of host timer (a slow but well-behaved request);
//! - `GET /spin` never returns (the per-request time limit must stop it);
//! - `GET /grow?mib=N` allocates and touches N MiB (the memory limit must stop a large N);
//! - `GET /trap-after-headers[?ms=N]` sends a 200 head and part of a chunked body, waits N ms,
//!   then traps (the client must see a broken response, not a complete one).

mod bindings {
    wit_bindgen::generate!({
        path: ["../../../wit/keyvalue", "../../../wit/ttl", "../../../wit/http-handler"],
        world: "wasi-kv:http-handler/handler@0.1.0",
        generate_all,
    });
}

// The example's HTTP plumbing, reused as is (it is written against the same bindings);
// the fixture needs only part of it.
#[allow(dead_code)]
#[path = "../../../../examples/http-kv/src/http.rs"]
mod http;

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::wasi::http::types::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};
use http::{Response, query_param};

struct Fixture;

impl Guest for Fixture {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if let Some(query) = path.strip_prefix("/trap-after-headers") {
            let wait = query_param(query.trim_start_matches('?'), "ms")
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(0);
            trap_after_headers(response_out, wait);
        }
        route(&request).send(response_out);
    }
}

/// Starts a streamed (chunked) 200 response, writes part of it, waits `wait_ms` (so the head
/// and the first chunk reach the client), and traps.
fn trap_after_headers(out: ResponseOutparam, wait_ms: u64) -> ! {
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("a new body has a stream");
    stream
        .blocking_write_and_flush(b"the first half of the answer, then ")
        .expect("the client reads the first part");
    drop(stream);
    std::thread::sleep(std::time::Duration::from_millis(wait_ms));
    panic!("the handler traps after its response started");
}

bindings::export!(Fixture with_types_in bindings);

fn route(request: &IncomingRequest) -> Response {
    let path_with_query = request.path_with_query().unwrap_or_default();
    let (path, query) = path_with_query
        .split_once('?')
        .unwrap_or((path_with_query.as_str(), ""));
    let number = |name: &str| query_param(query, name).and_then(|text| text.parse::<u64>().ok());
    match path {
        "/" => Response::new(200, "text/plain", b"ok".to_vec()),
        "/sleep" => {
            let ms = number("ms").unwrap_or(100);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Response::new(200, "text/plain", format!("slept {ms} ms").into_bytes())
        }
        "/spin" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "/grow" => {
            let mib = number("mib").unwrap_or(1);
            let Some(bytes) = usize::try_from(mib)
                .ok()
                .and_then(|m| m.checked_mul(1 << 20))
            else {
                return Response::error(400, "mib is too large");
            };
            let mut block = vec![0u8; bytes];
            for page in block.chunks_mut(4096) {
                page[0] = 1;
            }
            let touched = std::hint::black_box(&block)
                .iter()
                .filter(|b| **b == 1)
                .count();
            Response::new(
                200,
                "text/plain",
                format!("touched {touched} pages").into_bytes(),
            )
        }
        "/residue" => {
            // What an earlier request on the same instance slot left behind: a word of the
            // data segment (initially 7) and a page of zero-initialised memory. A host that
            // resets memory between requests always answers `data=7 bss=0`.
            use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
            static DATA_WORD: AtomicU32 = AtomicU32::new(7);
            static BSS_PAGE: [AtomicU8; 8192] = [const { AtomicU8::new(0) }; 8192];
            let data = DATA_WORD.swap(8, Ordering::Relaxed);
            let bss = BSS_PAGE
                .iter()
                .filter(|byte| byte.swap(0xab, Ordering::Relaxed) != 0)
                .count();
            Response::new(
                200,
                "text/plain",
                format!("data={data} bss={bss}").into_bytes(),
            )
        }
        _ => Response::error(404, "no such route"),
    }
}
