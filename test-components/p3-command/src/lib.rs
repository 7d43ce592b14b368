//! A WASIp3 command: `wasi:cli/run@0.3.0`'s async `run`, built with wit-bindgen's async
//! support, using `wasi:keyvalue@0.2.0-draft2` on store `default`. Its first argument picks
//! what it does:
//!
//! - none: every keyvalue operation, one line each (the seeded key `greeting`, set, get,
//!   exists, increment, get-many, list-keys, delete);
//! - `spin`: computes forever (the time limit must stop it);
//! - `wait`: waits an hour on the host's clock (the time limit must stop it too);
//! - `grow MIB`: allocates and touches MIB MiB (the memory limit must stop a large one);
//! - `open N`: opens the store N times, keeping every handle (the resource cap must stop a
//!   large N).

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/keyvalue", "../../wit/p3"],
        world: "wasi-kv:p3/command@0.1.0",
        generate_all,
    });
}

use bindings::exports::wasi::cli::run::Guest;
use bindings::wasi::keyvalue::{atomics, batch, store};

struct Command;

impl Guest for Command {
    async fn run() -> Result<(), ()> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let number = |index: usize| {
            args.get(index)
                .and_then(|text| text.parse::<usize>().ok())
                .unwrap_or(1)
        };
        match args.first().map(String::as_str) {
            Some("spin") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("wait") => {
                // Waits an hour on the host: nothing computes, so only the clock can stop it.
                bindings::wasi::clocks::monotonic_clock::wait_for(3_600_000_000_000).await;
                Ok(())
            }
            Some("grow") => {
                let mut block = vec![0u8; number(1) << 20];
                for page in block.chunks_mut(4096) {
                    page[0] = 1;
                }
                println!("touched {} bytes", std::hint::black_box(&block).len());
                Ok(())
            }
            Some("open") => {
                let mut handles = Vec::new();
                for _ in 0..number(1) {
                    match store::open("default") {
                        Ok(bucket) => handles.push(bucket),
                        Err(err) => {
                            println!("open failed after {}: {err:?}", handles.len());
                            return Err(());
                        }
                    }
                }
                println!("opened {}", handles.len());
                Ok(())
            }
            _ => every_operation().map_err(|err| println!("error: {err}")),
        }
    }
}

fn every_operation() -> Result<(), String> {
    let text = |value: Option<Vec<u8>>| match value {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => "<none>".to_string(),
    };
    fn err(what: &'static str) -> impl Fn(store::Error) -> String {
        move |err| format!("{what}: {err:?}")
    }
    let bucket = store::open("default").map_err(err("open"))?;
    println!(
        "greeting: {}",
        text(bucket.get("greeting").map_err(err("get"))?)
    );
    bucket.set("answer", b"42").map_err(err("set"))?;
    println!(
        "answer: {}",
        text(bucket.get("answer").map_err(err("get"))?)
    );
    println!(
        "exists: {}",
        bucket.exists("answer").map_err(err("exists"))?
    );
    let total = atomics::increment(&bucket, "counter", 5).map_err(err("increment"))?;
    println!("counter: {total}");
    let many = batch::get_many(&bucket, &["answer".to_string(), "missing".to_string()])
        .map_err(err("get-many"))?;
    let found: Vec<String> = many
        .into_iter()
        .map(|entry| match entry {
            Some((key, value)) => format!("{key}={}", String::from_utf8_lossy(&value)),
            None => "<none>".to_string(),
        })
        .collect();
    println!("get-many: {}", found.join(" "));
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = bucket
            .list_keys(cursor.as_deref())
            .map_err(err("list-keys"))?;
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    keys.sort();
    println!("keys: {}", keys.join(","));
    bucket.delete("answer").map_err(err("delete"))?;
    println!(
        "after delete: {}",
        bucket.exists("answer").map_err(err("exists"))?
    );
    Ok(())
}

bindings::export!(Command with_types_in bindings);
