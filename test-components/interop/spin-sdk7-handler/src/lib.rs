//! An HTTP handler as a Spin user writes one with the current Spin SDK, `spin-sdk` 7.0.0
//! (`#[http_service]`, an async handler on WASI 0.3; `Store::open` and every call awaited):
//! every key-value operation of Spin's interface, one route each, as the 5.2.0 fixture has.
//!
//! - `GET /kv/{key}`: the value (404 when missing); `PUT /kv/{key}`: sets the body;
//!   `DELETE /kv/{key}`: deletes; `HEAD /kv/{key}`: 200 if it exists, else 404;
//! - `GET /keys`: every key, sorted, one per line (`get-keys`' stream, read to its end);
//! - `GET /open-all`: opens the store again and again, holding each, until the host refuses.
//!
//! `?store=LABEL` opens another store than `default`. An error is answered 500 with Spin's
//! error variant (`no-such-store`, `access-denied`, `store-table-full`, `other: …`).

use bytes::Bytes;
use spin_sdk::http::body::IncomingBodyExt as _;
use spin_sdk::http::{FullBody, IntoResponse, Method, Request, StatusCode};
use spin_sdk::http_service;
use spin_sdk::key_value::{Error, Store};

#[path = "../../src/spin_error.rs"]
mod spin_error;
use spin_error::describe;

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    match route(request).await {
        Ok(response) => response,
        Err(err) => respond(500, describe(&err)),
    }
}

async fn route(request: Request) -> Result<(StatusCode, FullBody<Bytes>), Error> {
    let label = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("store="))
        .unwrap_or("default")
        .to_string();
    let store = Store::open(&label).await?;
    let path = request.uri().path().to_string();
    if path == "/open-all" {
        // Opens stores until the host refuses, holding every one: Spin's `store-table-full`.
        let mut open = vec![store];
        for _ in 0..1_000_000 {
            open.push(Store::open(&label).await?);
        }
        return Ok(respond(200, format!("{} stores open", open.len())));
    }
    if path == "/keys" {
        let mut keys = store.get_keys().await.collect().await?;
        keys.sort();
        return Ok(respond(200, keys.join("\n")));
    }
    let Some(key) = path.strip_prefix("/kv/") else {
        return Ok(respond(404, "no such route"));
    };
    Ok(match *request.method() {
        Method::GET => match store.get(key).await? {
            Some(value) => respond(200, value),
            None => respond(404, "missing"),
        },
        Method::PUT => {
            let body = match request.into_body().bytes().await {
                Ok(body) => body,
                Err(err) => return Ok(respond(400, format!("reading the body: {err:?}"))),
            };
            store.set(key, &body).await?;
            respond(200, "set")
        }
        Method::DELETE => {
            store.delete(key).await?;
            respond(200, "deleted")
        }
        Method::HEAD => respond(if store.exists(key).await? { 200 } else { 404 }, ""),
        _ => respond(405, "method not allowed"),
    })
}

fn respond(status: u16, body: impl Into<Vec<u8>>) -> (StatusCode, FullBody<Bytes>) {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        FullBody::new(Bytes::from(body.into())),
    )
}
