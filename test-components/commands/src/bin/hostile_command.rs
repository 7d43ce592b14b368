//! A command that attacks its host, for `wasi-kv run`'s limits (docs/security.md):
//!
//! - `spin`: computes forever (the time limit must stop it);
//! - `grow MIB`: allocates and touches MIB MiB (the memory limit must stop a large one);
//! - `open N`: opens the default store N times and keeps every handle (the resource cap must
//!   stop a large N);
//! - `get-many KEY…`: reads the KEYs of the default store with one `get-many`, prints what it
//!   got, then waits until its stdin closes (so a test can read the host's peak memory while
//!   the host still runs).

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/keyvalue"],
        world: "wasi:keyvalue/imports@0.2.0-draft2",
        generate_all,
    });
}

use std::io::{Read, Write};

use bindings::wasi::keyvalue::{batch, store};

fn main() {
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
        Some("grow") => {
            let mut block = vec![0u8; number(1) << 20];
            for page in block.chunks_mut(4096) {
                page[0] = 1;
            }
            println!("touched {} bytes", std::hint::black_box(&block).len());
        }
        Some("open") => {
            let mut handles = Vec::new();
            for _ in 0..number(1) {
                match store::open("default") {
                    Ok(bucket) => handles.push(bucket),
                    Err(err) => {
                        println!("open failed after {}: {err:?}", handles.len());
                        return;
                    }
                }
            }
            println!("opened {}", handles.len());
        }
        Some("get-many") => {
            let bucket = store::open("default").unwrap_or_else(|err| {
                println!("open failed: {err:?}");
                std::process::exit(1)
            });
            match batch::get_many(&bucket, &args[1..]) {
                Ok(values) => {
                    let bytes: usize = values.iter().flatten().map(|(_, value)| value.len()).sum();
                    println!("get-many returned {} values, {bytes} bytes", values.len());
                }
                Err(err) => println!("get-many failed: {err:?}"),
            }
            let _ = std::io::stdout().flush();
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        }
        _ => {
            eprintln!("usage: hostile-command spin | grow MIB | open N | get-many KEY…");
            std::process::exit(2);
        }
    }
}
