//! A WASIp3 HTTP handler: `wasi:http/handler@0.3.0`'s async `handle`, built with wit-bindgen's
//! async support, using `wasi:keyvalue@0.2.0-draft2`. `?store=NAME` picks the store
//! (`default` otherwise).
//!
//! - `GET /kv/{key}`: 200 and the value, or 404 `missing`; `HEAD`: 200 or 404 (`exists`);
//!   `PUT` (the body is the value): 204; `DELETE`: 204;
//! - `GET /keys`: every key, sorted, one per line (`list-keys`, page by page);
//! - `POST /incr/{key}?by=N`: 200 and the new total (`increment`);
//! - `GET /many?keys=A,B`: `get-many`, `A=value` or `<none>` per key;
//! - `GET /instance`: how many requests this instance has handled, itself included (1 on a
//!   fresh instance per request);
//! - `GET /stream?chunks=N&ms=M[&kib=K]`: N lines written after `handle` returned, M ms
//!   apart on the host clock (with `kib`, each chunk is K KiB of `x`);
//! - `GET /trap-after-head?ms=N`: answers 200, writes the first part of the body, waits N ms
//!   and traps (its trailers are resolved at once, so only the host can tell the body is cut);
//! - `GET /fetch?host=HOST:PORT`: `GET http://HOST:PORT/` with `wasi:http/client.send`:
//!   `status N`, or 403 and the error code when the host refuses it;
//! - `GET /spin`: computes forever; `GET /wait`: waits an hour on the host clock;
//!   `GET /grow?mib=N`: allocates and touches N MiB; `GET /open?n=N`: opens the store N times
//!   keeping every handle (each for one of serve's limits).
//!
//! A store error is a 500 whose body is the error (`error: …`).

mod bindings {
    wit_bindgen::generate!({
        path: ["../../../wit/keyvalue", "../../../wit/p3"],
        world: "wasi-kv:p3/handler@0.1.0",
        generate_all,
    });
}

use std::sync::atomic::{AtomicU64, Ordering};

use bindings::exports::wasi::http::handler::Guest;
use bindings::wasi::clocks::monotonic_clock;
use bindings::wasi::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use bindings::wasi::keyvalue::{atomics, batch, store};
use bindings::{wit_future, wit_stream};

/// Requests this instance has handled; survives between requests only if the host reuses
/// the instance.
static HANDLED: AtomicU64 = AtomicU64::new(0);

mod respond;

use respond::respond;

struct Handler;

impl Guest for Handler {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let handled = HANDLED.fetch_add(1, Ordering::Relaxed) + 1;
        let method = request.get_method();
        let target = request.get_path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        };
        let number = |name: &str| param(name).and_then(|text| text.parse::<u64>().ok());
        let store_name = param("store").unwrap_or_else(|| "default".to_string());
        if let Some(key) = path.strip_prefix("/kv/") {
            let key = key.to_string();
            return Ok(match method {
                Method::Put => {
                    let (_, result) = wit_future::new(|| Ok(()));
                    let (contents, _trailers) = Request::consume_body(request, result);
                    let value = contents.collect().await;
                    reply(
                        with_store(&store_name, |bucket| bucket.set(&key, &value))
                            .map(|()| (204, Vec::new())),
                    )
                }
                Method::Delete => reply(
                    with_store(&store_name, |bucket| bucket.delete(&key))
                        .map(|()| (204, Vec::new())),
                ),
                Method::Head => reply(
                    with_store(&store_name, |bucket| bucket.exists(&key))
                        .map(|exists| (if exists { 200 } else { 404 }, Vec::new())),
                ),
                _ => reply(
                    with_store(&store_name, |bucket| bucket.get(&key)).map(|value| match value {
                        Some(value) => (200, value),
                        None => (404, b"missing".to_vec()),
                    }),
                ),
            });
        }
        if let Some(key) = path.strip_prefix("/incr/") {
            let by = number("by").unwrap_or(1) as i64;
            return Ok(reply(
                with_store(&store_name, |bucket| atomics::increment(bucket, key, by))
                    .map(|total| (200, total.to_string().into_bytes())),
            ));
        }
        Ok(match path {
            "/keys" => reply(
                with_store(&store_name, all_keys).map(|keys| (200, keys.join("\n").into_bytes())),
            ),
            "/many" => {
                let keys: Vec<String> = param("keys")
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_string)
                    .collect();
                reply(
                    with_store(&store_name, |bucket| batch::get_many(bucket, &keys)).map(|found| {
                        let found: Vec<String> = found
                            .into_iter()
                            .map(|entry| match entry {
                                Some((key, value)) => {
                                    format!("{key}={}", String::from_utf8_lossy(&value))
                                }
                                None => "<none>".to_string(),
                            })
                            .collect();
                        (200, found.join(" ").into_bytes())
                    }),
                )
            }
            "/instance" => respond(200, format!("requests {handled}").into_bytes()),
            "/stream" => streamed(
                number("chunks").unwrap_or(3),
                number("ms").unwrap_or(0),
                number("kib"),
            ),
            "/trap-after-head" => trap_after_head(number("ms").unwrap_or(0)),
            "/fetch" => fetch(&param("host").unwrap_or_default()).await,
            "/spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "/wait" => {
                monotonic_clock::wait_for(3_600_000_000_000).await;
                respond(200, b"waited an hour".to_vec())
            }
            "/grow" => {
                let mut block = vec![0u8; (number("mib").unwrap_or(1) as usize) << 20];
                for page in block.chunks_mut(4096) {
                    page[0] = 1;
                }
                respond(
                    200,
                    format!("touched {}", std::hint::black_box(&block).len()).into_bytes(),
                )
            }
            "/open" => {
                let mut handles = Vec::new();
                let wanted = number("n").unwrap_or(1);
                for _ in 0..wanted {
                    match store::open(&store_name) {
                        Ok(bucket) => handles.push(bucket),
                        Err(err) => {
                            return Ok(respond(
                                500,
                                format!("open failed after {}: {err:?}", handles.len())
                                    .into_bytes(),
                            ));
                        }
                    }
                }
                respond(200, format!("opened {}", handles.len()).into_bytes())
            }
            _ => respond(404, b"no such route".to_vec()),
        })
    }
}

fn with_store<T>(
    name: &str,
    operation: impl FnOnce(&store::Bucket) -> Result<T, store::Error>,
) -> Result<T, store::Error> {
    operation(&store::open(name)?)
}

fn all_keys(bucket: &store::Bucket) -> Result<Vec<String>, store::Error> {
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = bucket.list_keys(cursor.as_deref())?;
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    keys.sort();
    Ok(keys)
}

fn reply(result: Result<(u16, Vec<u8>), store::Error>) -> Response {
    match result {
        Ok((status, body)) => respond(status, body),
        Err(err) => respond(500, format!("error: {err:?}").into_bytes()),
    }
}

/// `chunks` lines (or `kib` KiB blocks), `ms` milliseconds apart, all written after `handle`
/// returned.
fn streamed(chunks: u64, ms: u64, kib: Option<u64>) -> Response {
    let (mut contents_tx, contents) = wit_stream::new();
    let (trailers_tx, trailers) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (response, _sent) = Response::new(Fields::new(), Some(contents), trailers);
    wit_bindgen::spawn_local(async move {
        for chunk in 0..chunks {
            if chunk > 0 {
                monotonic_clock::wait_for(ms * 1_000_000).await;
            }
            let block = match kib {
                Some(kib) => vec![b'x'; (kib as usize) << 10],
                None => format!("chunk {chunk}\n").into_bytes(),
            };
            let unwritten = contents_tx.write_all(block).await;
            if !unwritten.is_empty() {
                return;
            }
        }
    });
    response
}

/// `GET http://{host}/` through the host's outbound HTTP.
async fn fetch(host: &str) -> Response {
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (request, _sent) = Request::new(Fields::new(), None, trailers, None);
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(host));
    let _ = request.set_path_with_query(Some("/"));
    match bindings::wasi::http::client::send(request).await {
        Ok(response) => respond(
            200,
            format!("status {}", response.get_status_code()).into_bytes(),
        ),
        Err(code) => respond(403, format!("{code:?}").into_bytes()),
    }
}

/// A 200 whose body task writes part of the answer, waits `ms` milliseconds and traps.
fn trap_after_head(ms: u64) -> Response {
    let (mut contents_tx, contents) = wit_stream::new();
    let (trailers_tx, trailers) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (response, _sent) = Response::new(Fields::new(), Some(contents), trailers);
    wit_bindgen::spawn_local(async move {
        let _unwritten = contents_tx
            .write_all(b"the first half of the answer, then ".to_vec())
            .await;
        if ms > 0 {
            monotonic_clock::wait_for(ms * 1_000_000).await;
        }
        panic!("the handler traps after its response started");
    });
    response
}

bindings::export!(Handler with_types_in bindings);
