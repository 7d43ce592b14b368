//! Times compare-and-swap from inside a component: `kv_bench_guest_cas N` prints `cas NS_PER_OP`,
//! one operation being `cas.new` (read the value and its version) plus `swap`. CAS exists only
//! in `wasi:keyvalue@0.2.0-draft2`, which wasmtime's `-S keyvalue` does not host, so this
//! guest runs on wasi-kv only, beside the same calls made natively (`kv-cli/benches/kv.rs`).

#[macro_use]
#[path = "../../../interop/src/wit.rs"]
mod wit;

interop_bindings!(in_commands "wasi-kv:interop/spin-command@0.1.0");

use std::time::Instant;

use bindings::wasi::keyvalue0_2_0_draft2::{atomics, store};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
        .max(1);
    let bucket = store::open("").unwrap_or_else(|err| fail(&format!("open: {err:?}")));
    let value = vec![b'v'; 256];
    bucket
        .set("bench-cas", &value)
        .unwrap_or_else(|err| fail(&format!("set: {err:?}")));
    let once = || {
        let cas = atomics::Cas::new(&bucket, "bench-cas")
            .unwrap_or_else(|err| fail(&format!("cas.new: {err:?}")));
        if let Err(err) = atomics::swap(cas, &value) {
            fail(&format!("swap: {err:?}"));
        }
    };
    for _ in 0..(n / 10).max(1) {
        once();
    }
    let started = Instant::now();
    for _ in 0..n {
        once();
    }
    println!("cas {}", started.elapsed().as_nanos() / u128::from(n));
}

fn fail(message: &str) -> ! {
    eprintln!("kv-bench-guest-cas: {message}");
    std::process::exit(1)
}
