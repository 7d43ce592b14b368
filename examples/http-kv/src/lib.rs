//! A REST API over one `wasi:keyvalue` store, served by `wasi-kv serve`:
//!
//! | route | answer |
//! |---|---|
//! | `GET /kv/{key}` | 200 and the value; 404 if missing |
//! | `PUT /kv/{key}[?ttl=SECONDS]` | 204; the body is the value |
//! | `DELETE /kv/{key}` | 204 (also when missing) |
//! | `POST /counter/{key}[?by=N]` | 200 `{"key":..,"value":N}` |
//! | `GET /kv[?cursor=..]` | 200 `{"keys":[..],"cursor":..}`, one page |
//!
//! `{key}` is the rest of the path, percent-decoded, so `/kv/a%2Fb` and `/kv/a/b` both name the
//! key `a/b`. Bad input is 400, store errors map to 403/409/413/503/500 (see [`error_status`]).
//! The store is `$KV_STORE` (default `default`).

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/keyvalue", "../../wit/ttl", "../../wit/http-handler"],
        world: "wasi-kv:http-handler/handler@0.1.0",
        generate_all,
    });
}

mod http;

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use bindings::wasi::keyvalue::{atomics, store};
use bindings::wasi_kv::ttl::ttl;

use http::{Response, percent_decode, query_param};

/// Largest request body read into memory; bigger ones are refused with 413 before the store
/// sees them (the store has its own, usually smaller, maximum).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

struct Handler;

impl Guest for Handler {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let response = route(&request);
        response.send(response_out);
    }
}

bindings::export!(Handler with_types_in bindings);

fn route(request: &IncomingRequest) -> Response {
    let path_with_query = request.path_with_query().unwrap_or_default();
    let (path, query) = match path_with_query.split_once('?') {
        Some((path, query)) => (path, query),
        None => (path_with_query.as_str(), ""),
    };
    let method = request.method();
    if path == "/kv" || path == "/kv/" {
        return match method {
            Method::Get => list(query),
            _ => Response::method_not_allowed("GET"),
        };
    }
    if let Some(raw_key) = path.strip_prefix("/kv/") {
        let key = match decode_key(raw_key) {
            Ok(key) => key,
            Err(response) => return response,
        };
        return match method {
            Method::Get => get(&key),
            Method::Put => put(request, &key, query),
            Method::Delete => delete(&key),
            _ => Response::method_not_allowed("GET, PUT, DELETE"),
        };
    }
    if let Some(raw_key) = path.strip_prefix("/counter/") {
        let key = match decode_key(raw_key) {
            Ok(key) => key,
            Err(response) => return response,
        };
        return match method {
            Method::Post => increment(&key, query),
            _ => Response::method_not_allowed("POST"),
        };
    }
    Response::error(404, "no such route; try /kv/{key}, /counter/{key} or /kv")
}

fn decode_key(raw: &str) -> Result<String, Response> {
    let key = percent_decode(raw)
        .ok_or_else(|| Response::error(400, "the key is not valid percent-encoded UTF-8"))?;
    if key.is_empty() {
        return Err(Response::error(400, "the key is empty"));
    }
    Ok(key)
}

fn open() -> Result<store::Bucket, Response> {
    let name = std::env::var("KV_STORE").unwrap_or_else(|_| "default".to_string());
    store::open(&name).map_err(|err| store_error(&err))
}

fn get(key: &str) -> Response {
    let bucket = match open() {
        Ok(bucket) => bucket,
        Err(response) => return response,
    };
    match bucket.get(key) {
        Ok(Some(value)) => Response::new(200, "application/octet-stream", value),
        Ok(None) => Response::error(404, "no such key"),
        Err(err) => store_error(&err),
    }
}

fn put(request: &IncomingRequest, key: &str, query: &str) -> Response {
    let ttl_seconds = match query_param(query, "ttl") {
        None => None,
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) if seconds > 0 => Some(seconds),
            _ => return Response::error(400, "ttl must be a positive number of seconds"),
        },
    };
    let value = match http::read_body(request, MAX_BODY_BYTES) {
        Ok(value) => value,
        Err(response) => return response,
    };
    let bucket = match open() {
        Ok(bucket) => bucket,
        Err(response) => return response,
    };
    let written = match ttl_seconds {
        None => bucket.set(key, &value),
        Some(seconds) => match seconds.checked_mul(1000) {
            Some(ms) => ttl::set_with_ttl(&bucket, key, &value, ms),
            None => return Response::error(400, "ttl is too large"),
        },
    };
    match written {
        Ok(()) => Response::empty(204),
        Err(err) => store_error(&err),
    }
}

fn delete(key: &str) -> Response {
    let bucket = match open() {
        Ok(bucket) => bucket,
        Err(response) => return response,
    };
    match bucket.delete(key) {
        Ok(()) => Response::empty(204),
        Err(err) => store_error(&err),
    }
}

fn increment(key: &str, query: &str) -> Response {
    let delta = match query_param(query, "by") {
        None => 1,
        Some(text) => match text.parse::<i64>() {
            Ok(delta) => delta,
            Err(_) => return Response::error(400, "by must be a 64-bit signed integer"),
        },
    };
    let bucket = match open() {
        Ok(bucket) => bucket,
        Err(response) => return response,
    };
    match atomics::increment(&bucket, key, delta) {
        Ok(value) => Response::json(
            200,
            format!("{{\"key\":{},\"value\":{value}}}", http::json_string(key)),
        ),
        Err(err) => store_error(&err),
    }
}

fn list(query: &str) -> Response {
    let cursor = query_param(query, "cursor").filter(|cursor| !cursor.is_empty());
    let bucket = match open() {
        Ok(bucket) => bucket,
        Err(response) => return response,
    };
    match bucket.list_keys(cursor.as_deref()) {
        Ok(page) => {
            let keys: Vec<String> = page.keys.iter().map(|key| http::json_string(key)).collect();
            let cursor = match &page.cursor {
                Some(cursor) => http::json_string(cursor),
                None => "null".to_string(),
            };
            Response::json(
                200,
                format!("{{\"keys\":[{}],\"cursor\":{cursor}}}", keys.join(",")),
            )
        }
        Err(err) => store_error(&err),
    }
}

/// The HTTP status for a store error. wasi-kv hosts put the error class first in `other`
/// (`"unavailable: ..."`, see docs/semantics.md S11); other hosts' messages become 500.
fn error_status(err: &store::Error) -> u16 {
    match err {
        store::Error::NoSuchStore => 500,
        store::Error::AccessDenied => 403,
        store::Error::Other(message) => {
            let class = message.split(':').next().unwrap_or_default();
            match class {
                "invalid-key" | "invalid-cursor" | "invalid-ttl" => 400,
                "not-an-integer" | "overflow" => 409,
                "value-too-large" => 413,
                "unavailable" | "throttled" | "timeout" => 503,
                _ => 500,
            }
        }
    }
}

fn store_error(err: &store::Error) -> Response {
    let message = match err {
        store::Error::NoSuchStore => "no-such-store: the store is not configured".to_string(),
        store::Error::AccessDenied => "access-denied".to_string(),
        store::Error::Other(message) => message.clone(),
    };
    Response::error(error_status(err), &message)
}
