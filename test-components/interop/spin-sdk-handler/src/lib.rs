//! An HTTP handler as a Spin user writes one with `spin-sdk` 5.2.0 (`Store::open`,
//! `#[http_component]`): every key-value operation of Spin's interface, one route each.
//!
//! - `GET /kv/{key}`: the value (404 when missing); `PUT /kv/{key}`: sets the body;
//!   `DELETE /kv/{key}`: deletes; `HEAD /kv/{key}`: 200 if it exists, else 404;
//! - `GET /keys`: every key, sorted, one per line;
//! - `GET /open-all`: opens the store again and again, holding each, until the host refuses.
//!
//! `?store=LABEL` opens another store than `default`. An error is answered 500 with Spin's
//! error variant (`no-such-store`, `access-denied`, `store-table-full`, `other: …`).

use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::key_value::{Error, Store};

#[path = "../../src/spin_error.rs"]
mod spin_error;
use spin_error::describe;

#[http_component]
fn handle(request: Request) -> Response {
    match route(&request) {
        Ok(response) => response,
        Err(err) => respond(500, describe(&err)),
    }
}

fn route(request: &Request) -> Result<Response, Error> {
    let label = request
        .query()
        .split('&')
        .find_map(|pair| pair.strip_prefix("store="))
        .unwrap_or("default");
    let store = Store::open(label)?;
    let path = request.path();
    if path == "/open-all" {
        // Opens stores until the host refuses, holding every one: Spin's `store-table-full`.
        let mut open = vec![store];
        for _ in 0..1_000_000 {
            open.push(Store::open(label)?);
        }
        return Ok(respond(200, format!("{} stores open", open.len())));
    }
    if path == "/keys" {
        let mut keys = store.get_keys()?;
        keys.sort();
        return Ok(respond(200, keys.join("\n")));
    }
    let Some(key) = path.strip_prefix("/kv/") else {
        return Ok(respond(404, "no such route"));
    };
    Ok(match request.method() {
        Method::Get => match store.get(key)? {
            Some(value) => respond(200, value),
            None => respond(404, "missing"),
        },
        Method::Put => {
            store.set(key, request.body())?;
            respond(200, "set")
        }
        Method::Delete => {
            store.delete(key)?;
            respond(200, "deleted")
        }
        Method::Head => respond(if store.exists(key)? { 200 } else { 404 }, ""),
        _ => respond(405, "method not allowed"),
    })
}

fn respond(status: u16, body: impl AsRef<[u8]>) -> Response {
    Response::builder()
        .status(status)
        .body(body.as_ref().to_vec())
        .build()
}
