//! Times keyvalue operations from inside a component: `kv_bench_guest OP N [VALUE_BYTES]`
//! prints `OP NS_PER_OP`. It is written against `wasi:keyvalue@0.2.0-draft` and opens `""`,
//! so the same file runs on `wasi-kv run` and on `wasmtime run -S keyvalue`
//! (`kv-cli/benches/kv.rs`, docs/benchmarks.md).
//!
//! OP: `get`, `set`, `exists`, `increment`, `get-many-100`, `set-many-100`. The keys are
//! written first, then N/10 operations warm up, then N are timed.
//!
//! `kv_bench_guest keys N [VALUE_BYTES]` times N fresh keys (`perf-key-0…N`) through four
//! phases, one line each: `insert`, `get` (each key, checked), `exists`, `delete`; then prints
//! `done` and waits for stdin to close, so the host can read the process's peak memory.
//!
//! `kv_bench_guest OP N VALUE_BYTES START_UNIX_MS WINDOW_MS` times a wall-clock window instead:
//! after the warm-up it waits for `START_UNIX_MS` and counts operations until the window ends,
//! so guests run side by side measure the same interval and their rates add up. A guest that
//! reaches the start late fails rather than measure a shorter window. It prints
//! `OP NS_PER_OP MADE LATENCIES`, MADE counting the warm-up too, and LATENCIES each timed
//! operation's latency as `NS:COUNT,…` (an HDR histogram, two significant digits), which the
//! host merges across guests for percentiles.

#[macro_use]
#[path = "../../../interop/src/wit.rs"]
mod wit;

interop_bindings!(in_commands "wasi-kv:interop/draft-command@0.1.0");

use std::time::Instant;

use bindings::wasi::keyvalue0_2_0_draft::{atomics, batch, store};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let op = args.first().cloned().unwrap_or_default();
    let n: u32 = args
        .get(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
        .max(1);
    let size: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(256);
    let bucket = store::open("").unwrap_or_else(|err| fail(&format!("open: {err:?}")));
    let value = vec![b'v'; size];
    if op == "keys" {
        fresh_keys(&bucket, n, &value);
        return;
    }
    let keys: Vec<String> = (0..100).map(|i| format!("bench-{i}")).collect();
    let entries: Vec<(String, Vec<u8>)> = keys
        .iter()
        .map(|key| (key.clone(), value.clone()))
        .collect();
    bucket
        .set("bench", &value)
        .unwrap_or_else(|err| fail(&format!("set: {err:?}")));
    batch::set_many(&bucket, &entries).unwrap_or_else(|err| fail(&format!("set-many: {err:?}")));
    let once = |op: &str| -> Result<(), String> {
        match op {
            "get" => bucket.get("bench").map(drop),
            "set" => bucket.set("bench", &value),
            "exists" => bucket.exists("bench").map(drop),
            "increment" => atomics::increment(&bucket, "bench-counter", 1).map(drop),
            "get-many-100" => batch::get_many(&bucket, &keys).map(drop),
            "set-many-100" => batch::set_many(&bucket, &entries),
            other => return Err(format!("unknown operation {other:?}")),
        }
        .map_err(|err| format!("{op}: {err:?}"))
    };
    for _ in 0..(n / 10).max(1) {
        once(&op).unwrap_or_else(|err| fail(&err));
    }
    let number = |index: usize| args.get(index).and_then(|text| text.parse::<u64>().ok());
    if let (Some(start_ms), Some(window_ms)) = (number(3), number(4)) {
        let late_ms = unix_ms().saturating_sub(start_ms);
        if late_ms > 0 {
            fail(&format!("reached the start {late_ms} ms late"));
        }
        while unix_ms() < start_ms {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let end_ms = start_ms + window_ms;
        let mut count: u64 = 0;
        // 1 ns to 60 s; slower operations count as 60 s.
        let mut latencies = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 2)
            .unwrap_or_else(|err| fail(&format!("histogram: {err}")));
        while unix_ms() < end_ms {
            let started = Instant::now();
            once(&op).unwrap_or_else(|err| fail(&err));
            latencies.saturating_record(started.elapsed().as_nanos() as u64);
            count += 1;
        }
        // The operations made, warm-up included, so a host can check a counter's total.
        let made = u64::from((n / 10).max(1)) + count;
        let recorded: Vec<String> = latencies
            .iter_recorded()
            .map(|value| format!("{}:{}", value.value_iterated_to(), value.count_at_value()))
            .collect();
        println!(
            "{op} {} {made} {}",
            u128::from(window_ms) * 1_000_000 / u128::from(count.max(1)),
            recorded.join(",")
        );
        return;
    }
    let started = Instant::now();
    for _ in 0..n {
        once(&op).unwrap_or_else(|err| fail(&err));
    }
    let elapsed = started.elapsed();
    println!("{op} {}", elapsed.as_nanos() / u128::from(n));
}

/// The `keys` phases. Keys are formatted into one buffer as they go, so the guest's own memory
/// does not grow with N.
fn fresh_keys(bucket: &store::Bucket, n: u32, value: &[u8]) {
    use std::fmt::Write as _;
    let mut key = String::new();
    let mut phase = |name: &str, op: &mut dyn FnMut(&str) -> Result<(), String>| {
        let started = Instant::now();
        for i in 0..n {
            key.clear();
            let _ = write!(key, "perf-key-{i}");
            op(&key).unwrap_or_else(|err| fail(&format!("{name} {key}: {err}")));
        }
        println!("{name} {}", started.elapsed().as_nanos() / u128::from(n));
    };
    phase("insert", &mut |key| {
        bucket.set(key, value).map_err(|err| format!("{err:?}"))
    });
    phase("get", &mut |key| match bucket.get(key) {
        Ok(Some(found)) if found.len() == value.len() => Ok(()),
        other => Err(format!("{other:?}")),
    });
    phase("exists", &mut |key| match bucket.exists(key) {
        Ok(true) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    phase("delete", &mut |key| {
        bucket.delete(key).map_err(|err| format!("{err:?}"))
    });
    println!("done");
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn fail(message: &str) -> ! {
    eprintln!("kv-bench-guest: {message}");
    std::process::exit(1)
}
