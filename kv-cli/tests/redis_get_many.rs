//! `get-many`'s byte budget on Redis, end to end: `wasi-kv run` runs
//! `test-components/commands` (`hostile_command`)'s `get-many` against a `redis-server` the test starts, holding
//! 20 values of 48 MiB seeded directly (not through a guest). One `get-many` of all of them
//! passes `limits.max_batch_bytes` (64 MiB): it must fail with `batch-too-large`, and the host's
//! peak RSS (`VmHWM`) must show that the values never reached it. Ignored without
//! redis-server, unless `KV_REQUIRE` names `redis`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WASI_KV: &str = env!("CARGO_BIN_EXE_wasi-kv");
const HOSTILE_COMMAND: &str = kv_test_artifacts::HOSTILE_COMMAND;

const VALUES: usize = 20;
const VALUE_MIB: usize = 48;
/// What the host may reach: far below one value (48 MiB) plus its runtime.
const RSS_BOUND_MIB: u64 = 200;

/// The peak resident memory of process `pid` so far, in MiB (`VmHWM`; Linux).
fn peak_rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Kills the child if the test fails before it exits.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn get_many_over_the_byte_budget_never_brings_the_values_to_the_host() {
    let required = kv_testkit::required_targets()
        .iter()
        .any(|name| name == "redis");
    if !required && !kv_testkit::emulator::installed("redis") {
        eprintln!("skipped: no redis-server installed");
        return;
    }
    let server = kv_testkit::emulator::RedisServer::start().expect("redis-server starts");
    let client = redis::Client::open(server.url()).expect("redis url");
    let mut raw = client.get_connection().expect("redis connects");
    let keys: Vec<String> = (0..VALUES).map(|i| format!("big-{i}")).collect();
    let full = |key: &str| {
        let mut full = kv_redis::key_prefix("rss");
        full.extend_from_slice(key.as_bytes());
        full
    };
    redis::cmd("SET")
        .arg(full(&keys[0]))
        .arg(vec![b'x'; VALUE_MIB << 20])
        .query::<()>(&mut raw)
        .expect("SET");
    for key in &keys[1..] {
        redis::cmd("COPY")
            .arg(full(&keys[0]))
            .arg(full(key))
            .query::<i64>(&mut raw)
            .expect("COPY");
    }

    let store = format!("default={}?namespace=rss", server.url());
    let child = Command::new(WASI_KV)
        .arg("run")
        .args(["--store", &store])
        .arg(HOSTILE_COMMAND)
        .arg("get-many")
        .args(&keys)
        .env("WASI_KV_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("wasi-kv starts");
    let mut child = Killed(child);
    let pid = child.0.id();
    let stdout = child.0.stdout.take().expect("stdout");
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = send.send(line);
    });
    // The guest prints what get-many gave, then waits for its stdin to close: the host is still
    // running when its peak is read.
    let line = receive
        .recv_timeout(Duration::from_secs(120))
        .expect("the guest reports its get-many within 120 s");
    let peak = peak_rss_mib(pid).expect("VmHWM of the host");
    drop(child.0.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "wasi-kv did not exit within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("get-many of {VALUES} x {VALUE_MIB} MiB: {line:?}, host peak RSS {peak} MiB");
    assert!(
        line.contains("get-many failed") && line.contains("batch-too-large"),
        "expected batch-too-large, got {line:?}"
    );
    assert!(status.success(), "wasi-kv exited with {status}");
    assert!(
        peak < RSS_BOUND_MIB,
        "host peak RSS {peak} MiB, over the bound of {RSS_BOUND_MIB} MiB"
    );
}
