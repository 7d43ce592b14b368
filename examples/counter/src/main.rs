//! Counts how often it has run, in the store named by `$KV_STORE` (default: `default`).
//!
//! ```sh
//! wasi-kv run --store default=redis://127.0.0.1:6379/0 counter.wasm
//! ```

mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit/keyvalue"],
        world: "wasi:keyvalue/imports@0.2.0-draft2",
        generate_all,
    });
}

use bindings::wasi::keyvalue::{atomics, store};

fn main() {
    let name = std::env::var("KV_STORE").unwrap_or_else(|_| "default".to_string());
    let bucket = match store::open(&name) {
        Ok(bucket) => bucket,
        Err(err) => fail(&format!("cannot open store {name:?}: {err:?}")),
    };
    match atomics::increment(&bucket, "runs", 1) {
        Ok(count) => println!(
            "this component has run {count} time{}",
            if count == 1 { "" } else { "s" }
        ),
        Err(err) => fail(&format!("cannot count this run: {err:?}")),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("counter: {message}");
    std::process::exit(1)
}
