//! A handler with one route per attack on its host, for the hostile-guest suite
//! (`kv-cli/tests/hostile.rs`, docs/security.md). Every route uses the store `default` unless
//! it says otherwise; a refused attack answers 413 or 403 with the error it got, and attacks
//! the host stops with a trap surface as the server's own 5xx.
//!
//! - `GET /` answers 200 `ok` (the well-behaved request served meanwhile);
//! - `GET /get-many-dup?mib=M&copies=N`: sets `big` to M MiB, then `get-many` of N copies;
//! - `GET /set-many-big?mib=M&entries=N`: `set-many` of N values of M MiB;
//! - `GET /open-loop?n=N`: opens the store N times, keeping every handle;
//! - `GET /cas-hold?mib=M&n=N`: sets `big` to M MiB, then opens N compare-and-swap handles on
//!   it, keeping each (each holds a copy of the value on the host);
//! - `GET /fill?n=N`: writes N small keys with `set-many` in batches of 1,000;
//! - `GET /list-all`: lists every key, page by page;
//! - `GET /fetch?url=URL`: sends `GET URL` through `wasi:http/outgoing-handler`;
//! - `GET /get?store=S&key=K`: reads one key of store S;
//! - `GET /spin`: computes forever; `GET /grow?mib=M`: allocates and touches M MiB.

mod bindings {
    wit_bindgen::generate!({
        path: ["../../../wit/keyvalue", "../../../wit/ttl", "../../../wit/http-handler"],
        world: "wasi-kv:http-handler/hostile-handler@0.1.0",
        generate_all,
    });
}

#[allow(dead_code)]
#[path = "../../../../examples/http-kv/src/http.rs"]
mod http;

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::wasi::http::outgoing_handler;
use bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingRequest, ResponseOutparam, Scheme,
};
use bindings::wasi::keyvalue::{atomics, batch, store};
use http::{Response, query_param};

struct Fixture;

impl Guest for Fixture {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        route(&request).send(response_out);
    }
}

bindings::export!(Fixture with_types_in bindings);

fn text(status: u16, body: String) -> Response {
    Response::new(status, "text/plain", body.into_bytes())
}

fn open(name: &str) -> Result<store::Bucket, Response> {
    store::open(name).map_err(|err| text(503, format!("open {name}: {err:?}")))
}

fn route(request: &IncomingRequest) -> Response {
    let path_with_query = request.path_with_query().unwrap_or_default();
    let (path, query) = path_with_query
        .split_once('?')
        .unwrap_or((path_with_query.as_str(), ""));
    let number = |name: &str, default: usize| {
        query_param(query, name)
            .and_then(|text| text.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let result = match path {
        "/" => Ok(text(200, "ok".into())),
        "/get-many-dup" => get_many_dup(number("mib", 1), number("copies", 3000)),
        "/set-many-big" => set_many_big(number("mib", 16), number("entries", 6)),
        "/open-loop" => open_loop(number("n", 100_000)),
        "/cas-hold" => cas_hold(number("mib", 8), number("n", 100)),
        "/fill" => fill(number("n", 10_000)),
        "/list-all" => list_all(),
        "/fetch" => Ok(fetch(&query_param(query, "url").unwrap_or_default())),
        "/get" => get(
            &query_param(query, "store").unwrap_or_default(),
            &query_param(query, "key").unwrap_or_default(),
        ),
        "/spin" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "/grow" => {
            let mut block = vec![0u8; number("mib", 1) << 20];
            for page in block.chunks_mut(4096) {
                page[0] = 1;
            }
            Ok(text(
                200,
                format!("touched {}", std::hint::black_box(&block).len()),
            ))
        }
        _ => Ok(text(404, "no such route".into())),
    };
    result.unwrap_or_else(|response| response)
}

fn get_many_dup(mib: usize, copies: usize) -> Result<Response, Response> {
    let bucket = open("default")?;
    bucket
        .set("big", &vec![b'x'; mib << 20])
        .map_err(|err| text(500, format!("set: {err:?}")))?;
    let keys = vec!["big".to_string(); copies];
    Ok(match batch::get_many(&bucket, &keys) {
        Ok(values) => text(200, format!("returned {} values", values.len())),
        Err(err) => text(413, format!("{err:?}")),
    })
}

fn set_many_big(mib: usize, entries: usize) -> Result<Response, Response> {
    let bucket = open("default")?;
    let entries: Vec<(String, Vec<u8>)> = (0..entries)
        .map(|i| (format!("big-{i}"), vec![b'y'; mib << 20]))
        .collect();
    Ok(match batch::set_many(&bucket, &entries) {
        Ok(()) => text(200, format!("wrote {} values", entries.len())),
        Err(err) => text(413, format!("{err:?}")),
    })
}

fn open_loop(n: usize) -> Result<Response, Response> {
    let mut handles = Vec::new();
    for _ in 0..n {
        match store::open("default") {
            Ok(bucket) => handles.push(bucket),
            Err(err) => {
                return Ok(text(
                    413,
                    format!("open failed after {}: {err:?}", handles.len()),
                ));
            }
        }
    }
    Ok(text(200, format!("opened {}", handles.len())))
}

fn cas_hold(mib: usize, n: usize) -> Result<Response, Response> {
    let bucket = open("default")?;
    bucket
        .set("big", &vec![b'c'; mib << 20])
        .map_err(|err| text(500, format!("set: {err:?}")))?;
    let mut handles = Vec::new();
    for _ in 0..n {
        match atomics::Cas::new(&bucket, "big") {
            Ok(cas) => handles.push(cas),
            Err(err) => {
                return Ok(text(
                    413,
                    format!("cas handle {} refused: {err:?}", handles.len() + 1),
                ));
            }
        }
    }
    Ok(text(200, format!("holding {} handles", handles.len())))
}

fn fill(n: usize) -> Result<Response, Response> {
    let bucket = open("default")?;
    let keys: Vec<usize> = (0..n).collect();
    for chunk in keys.chunks(1000) {
        let entries: Vec<(String, Vec<u8>)> = chunk
            .iter()
            .map(|i| (format!("k-{i:06}"), b"v".to_vec()))
            .collect();
        batch::set_many(&bucket, &entries).map_err(|err| text(500, format!("{err:?}")))?;
    }
    Ok(text(200, format!("wrote {n}")))
}

fn list_all() -> Result<Response, Response> {
    let bucket = open("default")?;
    let mut cursor: Option<String> = None;
    let mut count = 0usize;
    loop {
        let page = bucket
            .list_keys(cursor.as_deref())
            .map_err(|err| text(500, format!("{err:?}")))?;
        count += page.keys.len();
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(text(200, format!("listed {count}"))),
        }
    }
}

fn get(store_name: &str, key: &str) -> Result<Response, Response> {
    let bucket = open(store_name)?;
    Ok(match bucket.get(key) {
        Ok(Some(value)) => Response::new(200, "application/octet-stream", value),
        Ok(None) => text(404, "missing".into()),
        Err(err) => text(500, format!("{err:?}")),
    })
}

/// `GET url` (`http://` or `https://`); 200 with the status it got, or 403 with the error.
fn fetch(url: &str) -> Response {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        _ => return text(400, format!("not an http(s) URL: {url:?}")),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(code) => return text(403, format!("{code:?}")),
    };
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => text(200, format!("status {}", response.status())),
        Some(Ok(Err(code))) => text(403, format!("{code:?}")),
        Some(Err(())) | None => text(500, "the response future failed".into()),
    }
}
