//! A WASIp3 command using `spin_sdk::key_value` from spin-sdk 6.0.0, the Spin 4 API (every
//! call async, `get_keys` a stream), the way a Spin user writes it. Its first argument picks
//! what it does:
//!
//! - none: every operation on store `default`, one line each (the seeded key `greeting`,
//!   set, get, exists, get-keys, delete);
//! - `open LABEL`: opens `LABEL` and prints `opened`, or Spin's error;
//! - `set LABEL`: writes a key in `LABEL` and prints `set`, or Spin's error;
//! - `open-all`: opens `default` until the host refuses, holding every store;
//! - `hoard N`: asks for every key N times without reading the answers, then reads the last.

mod bindings {
    wit_bindgen::generate!({
        path: ["../../../wit/keyvalue", "../../../wit/p3"],
        world: "wasi-kv:p3/cli@0.1.0",
        generate_all,
    });
}

use bindings::exports::wasi::cli::run::Guest;
use spin_sdk::key_value::{Error, Store};

#[path = "../../src/spin_error.rs"]
mod spin_error;
use spin_error::describe;

struct Command;

impl Guest for Command {
    async fn run() -> Result<(), ()> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let label = args.get(1).map(String::as_str).unwrap_or("default");
        let outcome = match args.first().map(String::as_str) {
            Some("open") => Store::open(label).await.map(|_| println!("opened")),
            Some("set") => match Store::open(label).await {
                Ok(store) => store.set("k", b"v").await.map(|()| println!("set")),
                Err(err) => Err(err),
            },
            Some("open-all") => open_all().await,
            Some("hoard") => hoard(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1)).await,
            _ => every_operation().await,
        };
        outcome.map_err(|err| println!("error: {}", describe(&err)))
    }
}

async fn every_operation() -> Result<(), Error> {
    let text = |value: Option<Vec<u8>>| match value {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => "<none>".to_string(),
    };
    let store = Store::open_default().await?;
    println!("greeting: {}", text(store.get("greeting").await?));
    store.set("answer", b"42").await?;
    println!("answer: {}", text(store.get("answer").await?));
    println!("exists: {}", store.exists("answer").await?);
    let mut keys = store.get_keys().await.collect().await?;
    keys.sort();
    println!("keys: {}", keys.join(","));
    store.delete("answer").await?;
    println!("after delete: {}", store.exists("answer").await?);
    println!("missing: {}", text(store.get("answer").await?));
    Ok(())
}

/// Asks for every key `times` times without reading any answer, then reads the last one.
async fn hoard(times: usize) -> Result<(), Error> {
    let store = Store::open_default().await?;
    let mut unread = Vec::new();
    for _ in 0..times {
        unread.push(store.get_keys().await);
    }
    let last = unread.pop().map(|keys| keys.collect());
    match last {
        Some(keys) => {
            let keys = keys.await?;
            println!("hoarded {times}; the last lists {} keys", keys.len());
            Ok(())
        }
        None => Ok(()),
    }
}

async fn open_all() -> Result<(), Error> {
    let mut open = Vec::new();
    for _ in 0..1_000_000 {
        open.push(Store::open_default().await?);
    }
    println!("{} stores open", open.len());
    Ok(())
}

bindings::export!(Command with_types_in bindings);
