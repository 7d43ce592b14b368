//! The hostile-guest suite (docs/security.md): `wasi-kv serve` runs
//! `test-components/handlers/hostile-fixture`, which has one route per attack, and clients attack the
//! server itself (slow headers, connection floods, oversized bodies). For each attack:
//! - the attack fails with a clear error or status;
//! - a well-behaved request is served meanwhile;
//! - another store's data is untouched;
//! - the server's peak RSS (`VmHWM`) stays under the stated bound.
//!
//! Every attack runs on the in-memory store and on Redis (a `redis-server` the test starts; a
//! failure when `KV_REQUIRE` names `redis` and it is missing). `wasi-kv run`'s limits run on
//! `test-components/commands` (`hostile_command`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, ExitCode};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kv_testkit::emulator::RedisServer;
use kv_testkit::provider_tests::{TestResult, check};
use kv_testkit::{required_targets, runtime};
use libtest_mimic::{Arguments, Failed, Trial};

mod common;
use common::{Served, WASI_KV, client, send};

const HOSTILE: &str = kv_test_artifacts::HOSTILE_FIXTURE;
const HOSTILE_COMMAND: &str = kv_test_artifacts::HOSTILE_COMMAND;

/// The peak RSS every attack must stay under (measured: docs/security.md has the numbers).
const RSS_BOUND_MIB: u64 = 400;

/// A server for one attack, with the sentinel store beside the attacked one.
struct Target {
    served: Served,
    _redis: Option<RedisServer>,
}

fn start(provider: &str, extra: &[&str]) -> Result<Target, Failed> {
    let (redis, default, other) = match provider {
        "memory" => (None, "memory:".to_string(), "memory:".to_string()),
        _ => {
            let server = RedisServer::start().map_err(Failed::from)?;
            let url = server.url();
            (
                Some(server),
                format!("{url}?namespace=hostile"),
                format!("{url}?namespace=bystander"),
            )
        }
    };
    let default = format!("default={default}");
    let other = format!("other={other}");
    let mut args = vec![
        "--store",
        &default,
        "--store",
        &other,
        "--seed",
        "other::sentinel=untouched",
        "--memory-limit",
        "128MiB",
    ];
    if !extra.contains(&"--time-limit") {
        args.extend_from_slice(&["--time-limit", "3s"]);
    }
    args.extend_from_slice(extra);
    let served = Served::start(HOSTILE, &args)?;
    Ok(Target {
        served,
        _redis: redis,
    })
}

impl Target {
    /// The server's peak resident memory so far, in MiB (`VmHWM`; Linux).
    fn peak_rss_mib(&self) -> Option<u64> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.served.child.id())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024)
    }

    /// What holds after every attack: `/` is served, the other store's sentinel is intact,
    /// and the peak RSS is under the bound.
    async fn still_healthy(&self, attack: &str) -> TestResult {
        let http = client();
        let (status, body) = send(http.get(self.served.url("/"))).await?;
        check(
            status == 200 && body == b"ok",
            format!("{attack}: `/` afterwards gave {status}"),
        )?;
        let (status, body) =
            send(http.get(self.served.url("/get?store=other&key=sentinel"))).await?;
        check(
            status == 200 && body == b"untouched",
            format!(
                "{attack}: the other store's sentinel is {status} {:?}",
                String::from_utf8_lossy(&body)
            ),
        )?;
        if let Some(peak) = self.peak_rss_mib() {
            eprintln!("{attack}: peak RSS {peak} MiB");
            check(
                peak < RSS_BOUND_MIB,
                format!("{attack}: peak RSS {peak} MiB, over the bound of {RSS_BOUND_MIB} MiB"),
            )?;
        }
        Ok(())
    }

    /// Runs `attack` while well-behaved requests go on; every one of those must succeed.
    async fn under_attack<F, Fut>(&self, attack: F) -> Result<(u16, String), Failed>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<(u16, String), Failed>>,
    {
        let base = self.served.base.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let bystander = tokio::spawn(async move {
            let http = client();
            let mut served = 0usize;
            // At least one, and more for as long as the attack lasts.
            for _ in 0..10_000 {
                let (status, _) = send(http.get(format!("{base}/"))).await?;
                check(
                    status == 200,
                    format!("a well-behaved request got {status}"),
                )?;
                served += 1;
                if stopped.try_recv().is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<usize, Failed>(served)
        });
        let outcome = attack(self.served.base.clone()).await;
        let _ = stop.send(());
        let served = bystander
            .await
            .map_err(|err| Failed::from(err.to_string()))??;
        check(served > 0, "no well-behaved request was served")?;
        outcome
    }
}

async fn get(url: String) -> Result<(u16, String), Failed> {
    let (status, body) = send(client().get(url)).await?;
    Ok((status.as_u16(), String::from_utf8_lossy(&body).into_owned()))
}

fn expect_status(attack: &str, got: &(u16, String), status: u16, contains: &str) -> TestResult {
    check(
        got.0 == status && got.1.contains(contains),
        format!(
            "{attack}: expected {status} with {contains:?}, got {} {:?}",
            got.0, got.1
        ),
    )
}

/// `get-many` of 3,000 copies of a 1 MiB key: one read, then `batch-too-large` (3 GB of
/// copies refused; before the byte budget, `run` peaked at 6.18 GB on this attack).
fn huge_duplicate_get_many(provider: &str) -> TestResult {
    let target = start(provider, &[])?;
    runtime().block_on(async {
        let got = target
            .under_attack(|base| get(format!("{base}/get-many-dup?mib=1&copies=3000")))
            .await?;
        expect_status("get-many-dup", &got, 413, "batch-too-large")?;
        target.still_healthy("get-many-dup").await
    })
}

/// `set-many` of six 16 MiB values (96 MiB, over the 64 MiB budget): refused, nothing written.
fn oversized_set_many(provider: &str) -> TestResult {
    let target = start(provider, &[])?;
    runtime().block_on(async {
        let got = target
            .under_attack(|base| get(format!("{base}/set-many-big?mib=16&entries=6")))
            .await?;
        expect_status("set-many-big", &got, 413, "batch-too-large")?;
        let written = get(target.served.url("/get?store=default&key=big-0")).await?;
        expect_status("set-many-big wrote nothing", &written, 404, "missing")?;
        target.still_healthy("set-many-big").await
    })
}

/// Opening the store in a loop: stopped at the resource cap (a trap, so a 500).
fn open_loop(provider: &str) -> TestResult {
    let target = start(provider, &[])?;
    runtime().block_on(async {
        let got = target
            .under_attack(|base| get(format!("{base}/open-loop?n=100000")))
            .await?;
        check(
            got.0 == 500,
            format!("open-loop: expected 500, got {} {:?}", got.0, got.1),
        )?;
        target.still_healthy("open-loop").await
    })
}

/// Compare-and-swap handles that each hold a copy of an 8 MiB value: the ninth passes the
/// instance's 64 MiB of held bytes and is refused; dropping handles gives the bytes back.
fn cas_handles_hold_bounded_bytes(provider: &str) -> TestResult {
    let target = start(provider, &[])?;
    runtime().block_on(async {
        let got = target
            .under_attack(|base| get(format!("{base}/cas-hold?mib=8&n=100")))
            .await?;
        expect_status("cas-hold", &got, 413, "cas handle 9 refused")?;
        check(
            got.1.contains("max_held_bytes"),
            format!("cas-hold: {:?}", got.1),
        )?;
        // A fresh request (a fresh instance) starts from nothing held.
        let again = get(target.served.url("/cas-hold?mib=8&n=8")).await?;
        expect_status(
            "cas-hold within the budget",
            &again,
            200,
            "holding 8 handles",
        )?;
        target.still_healthy("cas-hold").await
    })
}

/// Listing 20,000 keys page by page: served, with pages never accumulated on the host.
fn unbounded_listing(provider: &str) -> TestResult {
    let target = start(provider, &["--time-limit", "30s"])?;
    runtime().block_on(async {
        let filled = get(target.served.url("/fill?n=20000")).await?;
        expect_status("fill", &filled, 200, "wrote 20000")?;
        let got = target
            .under_attack(|base| get(format!("{base}/list-all")))
            .await?;
        expect_status("list-all", &got, 200, "listed 20000")?;
        target.still_healthy("list-all").await
    })
}

/// Outbound HTTP: denied by default (the local server sees no connection), allowed when
/// listed, and the metadata address denied even under `*://*:*`.
fn outbound_is_denied_by_default(provider: &str) -> TestResult {
    let (port, connections) = common::counting_http_server()?;
    let local = format!("http://127.0.0.1:{port}/");
    let target = start(provider, &[])?;
    runtime().block_on(async {
        let encoded = |url: &str| url.replace(':', "%3A").replace('/', "%2F");
        let got = target
            .under_attack(|base| get(format!("{base}/fetch?url={}", encoded(&local))))
            .await?;
        expect_status("fetch local, not allowed", &got, 403, "HttpRequestDenied")?;
        let metadata = "http://169.254.169.254/latest/meta-data/";
        let got = get(target
            .served
            .url(&format!("/fetch?url={}", encoded(metadata))))
        .await?;
        expect_status(
            "fetch metadata, not allowed",
            &got,
            403,
            "HttpRequestDenied",
        )?;
        check(
            connections.load(Ordering::SeqCst) == 0,
            "a denied request reached the local server",
        )?;
        target.still_healthy("fetch").await?;

        let allow = format!("http://127.0.0.1:{port}");
        let open = start(
            provider,
            &["--allow-outbound", &allow, "--allow-outbound", "*://*:*"],
        )?;
        let got = get(open.served.url(&format!("/fetch?url={}", encoded(&local)))).await?;
        expect_status("fetch local, allowed", &got, 200, "status 200")?;
        check(
            connections.load(Ordering::SeqCst) == 1,
            "the allowed request reached the local server once",
        )?;
        let got = get(open
            .served
            .url(&format!("/fetch?url={}", encoded(metadata))))
        .await?;
        expect_status(
            "fetch metadata under *://*:*",
            &got,
            403,
            "DestinationIpProhibited",
        )
    })
}

/// A handler that computes forever: 504 at the time limit.
fn infinite_loop(provider: &str) -> TestResult {
    let target = start(provider, &[])?;
    runtime().block_on(async {
        let started = Instant::now();
        let got = target
            .under_attack(|base| get(format!("{base}/spin")))
            .await?;
        check(got.0 == 504, format!("spin: expected 504, got {}", got.0))?;
        check(
            started.elapsed() < Duration::from_secs(10),
            format!("spin took {:?}", started.elapsed()),
        )?;
        target.still_healthy("spin").await
    })
}

/// A handler that allocates 1 GiB: 500 at the 128 MiB memory limit.
fn memory_bomb(provider: &str) -> TestResult {
    let target = start(provider, &[])?;
    runtime().block_on(async {
        let got = target
            .under_attack(|base| get(format!("{base}/grow?mib=1024")))
            .await?;
        expect_status("grow", &got, 500, "memory limit")?;
        target.still_healthy("grow").await
    })
}

/// Runs blocking socket work off the runtime; its I/O errors fail the test.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, Failed> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Failed::from(err.to_string()))?
        .map_err(|err| Failed::from(err.to_string()))
}

fn addr_of(base: &str) -> String {
    base.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Whether the server closes `stream` within `within` (EOF or reset).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let _ = stream.set_read_timeout(Some(within));
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err) => {
                return !matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

/// 20 clients that send part of a request head and never finish it: each is closed at the
/// header timeout (1 s here), and `/` is served meanwhile.
fn slowloris(provider: &str) -> TestResult {
    let target = start(provider, &["--header-timeout", "1s"])?;
    runtime().block_on(async {
        let addr = addr_of(&target.served.base);
        let got = target
            .under_attack(|_| async move {
                let (closed, took) = blocking(move || {
                    let mut streams = Vec::new();
                    for _ in 0..20 {
                        let mut stream = TcpStream::connect(&addr)?;
                        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")?;
                        streams.push(stream);
                    }
                    let started = Instant::now();
                    let closed = streams
                        .iter_mut()
                        .map(|stream| closed_within(stream, Duration::from_secs(5)))
                        .filter(|closed| *closed)
                        .count();
                    Ok((closed, started.elapsed()))
                })
                .await?;
                Ok((closed as u16, format!("{took:?}")))
            })
            .await?;
        check(
            got.0 == 20,
            format!(
                "slowloris: {} of 20 slow connections closed (in {})",
                got.0, got.1
            ),
        )?;
        // An idle keep-alive connection is closed the same way.
        let mut idle = TcpStream::connect(addr_of(&target.served.base))
            .map_err(|err| Failed::from(err.to_string()))?;
        check(
            closed_within(&mut idle, Duration::from_secs(5)),
            "an idle connection stayed open past the header timeout",
        )?;
        target.still_healthy("slowloris").await
    })
}

/// More connections than `--max-connections`: the one over the cap gets a 503 at once.
fn connection_flood(provider: &str) -> TestResult {
    let target = start(
        provider,
        &["--max-connections", "8", "--header-timeout", "10s"],
    )?;
    runtime().block_on(async {
        let addr = addr_of(&target.served.base);
        let refusal = blocking(move || {
            let held: Vec<TcpStream> = (0..8)
                .map(|_| TcpStream::connect(&addr))
                .collect::<Result<_, _>>()?;
            // Let the server accept them all before the ninth.
            std::thread::sleep(Duration::from_millis(300));
            let mut extra = TcpStream::connect(&addr)?;
            extra.set_read_timeout(Some(Duration::from_secs(5)))?;
            extra.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut answer = String::new();
            let _ = extra.read_to_string(&mut answer);
            drop(held);
            Ok(answer)
        })
        .await?;
        check(
            refusal.starts_with("HTTP/1.1 503"),
            format!("connection over the cap: {refusal:?}"),
        )?;
        // The held connections are gone: the server serves again.
        tokio::time::sleep(Duration::from_millis(300)).await;
        target.still_healthy("connection-flood").await
    })
}

/// More requests than `--max-requests`: with the one slot held by a slow request, the next
/// request gets a 503 at once; once the slot is free, requests are served again.
fn request_slots(provider: &str) -> TestResult {
    let target = start(provider, &["--max-requests", "1"])?;
    runtime().block_on(async {
        let held = tokio::spawn(get(target.served.url("/spin")));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let refused = get(target.served.url("/")).await?;
        expect_status(
            "a request over the slots",
            &refused,
            503,
            "concurrent requests",
        )?;
        let spun = held.await.map_err(|err| Failed::from(err.to_string()))??;
        check(spun.0 == 504, format!("the slow request: {}", spun.0))?;
        target.still_healthy("request-slots").await
    })
}

/// A body larger than `--max-body`: 413 before the component runs.
fn oversized_body(provider: &str) -> TestResult {
    let target = start(provider, &["--max-body", "1MiB"])?;
    runtime().block_on(async {
        let addr = addr_of(&target.served.base);
        let answer = blocking(move || {
            let mut stream = TcpStream::connect(&addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 33554432\r\n\r\nsome of it",
            )?;
            let mut answer = [0u8; 64];
            let read = stream.read(&mut answer)?;
            Ok(String::from_utf8_lossy(&answer[..read]).into_owned())
        })
        .await?;
        check(
            answer.starts_with("HTTP/1.1 413"),
            format!("oversized body: {answer:?}"),
        )?;
        target.still_healthy("oversized-body").await
    })
}

/// `wasi-kv run` under its limits: a spinning command stops at `--time-limit`, a memory bomb
/// at `--memory-limit`, an open loop at the resource cap; each exits non-zero with a reason.
fn run_limits() -> TestResult {
    let run = |args: &[&str]| {
        let started = Instant::now();
        let out = Command::new(WASI_KV)
            .arg("run")
            .args(["--store", "default=memory:"])
            .args(args)
            .output()
            .map_err(|err| Failed::from(format!("cannot run wasi-kv: {err}")))?;
        Ok::<_, Failed>((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
            started.elapsed(),
        ))
    };
    let (code, output, took) = run(&["--time-limit", "2s", HOSTILE_COMMAND, "spin"])?;
    check(
        code != Some(0) && output.contains("time limit") && took < Duration::from_secs(10),
        format!("spin: {code:?} after {took:?}: {output}"),
    )?;
    let (code, output, _) = run(&["--memory-limit", "64MiB", HOSTILE_COMMAND, "grow", "256"])?;
    check(
        code != Some(0) && output.contains("memory limit"),
        format!("grow: {code:?}: {output}"),
    )?;
    let (code, output, _) = run(&[HOSTILE_COMMAND, "grow", "16"])?;
    check(
        code == Some(0),
        format!("a 16 MiB allocation: {code:?}: {output}"),
    )?;
    let (code, output, _) = run(&[HOSTILE_COMMAND, "open", "100000"])?;
    check(
        code != Some(0) && !output.contains("opened 100000"),
        format!("open loop: {code:?}: {output}"),
    )?;
    let (code, output, _) = run(&[HOSTILE_COMMAND, "open", "100"])?;
    check(
        code == Some(0) && output.contains("opened 100"),
        format!("100 opens: {code:?}: {output}"),
    )?;
    // The same limits hold for a WASIp3 command, whose async `run` is driven by the store's
    // event loop.
    let p3 = kv_test_artifacts::P3_COMMAND;
    let (code, output, took) = run(&["--time-limit", "2s", p3, "wait"])?;
    check(
        code != Some(0) && output.contains("time limit") && took < Duration::from_secs(10),
        format!("p3 wait: {code:?} after {took:?}: {output}"),
    )?;
    let (code, output, took) = run(&["--time-limit", "2s", p3, "spin"])?;
    check(
        code != Some(0) && output.contains("time limit") && took < Duration::from_secs(10),
        format!("p3 spin: {code:?} after {took:?}: {output}"),
    )?;
    let (code, output, _) = run(&["--memory-limit", "64MiB", p3, "grow", "256"])?;
    check(
        code != Some(0) && output.contains("memory limit"),
        format!("p3 grow: {code:?}: {output}"),
    )?;
    let (code, output, _) = run(&[p3, "grow", "16"])?;
    check(
        code == Some(0),
        format!("p3: a 16 MiB allocation: {code:?}: {output}"),
    )?;
    let (code, output, _) = run(&[p3, "open", "100000"])?;
    // Stopped by the handle cap (wasi:keyvalue's `open` traps on a full table), not by
    // anything else.
    check(
        code != Some(0) && output.contains("resource table has no free keys"),
        format!("p3 open loop: {code:?}: {output}"),
    )?;
    let (code, output, _) = run(&[p3, "open", "100"])?;
    check(
        code == Some(0) && output.contains("opened 100"),
        format!("p3: 100 opens: {code:?}: {output}"),
    )
}

type Attack = fn(&str) -> TestResult;

fn main() -> ExitCode {
    kv_testkit::stay_on_loopback();
    let args = Arguments::from_args();
    let required = required_targets();
    let attacks: [(&str, Attack); 12] = [
        ("huge_duplicate_get_many", huge_duplicate_get_many),
        ("oversized_set_many", oversized_set_many),
        ("open_loop", open_loop),
        (
            "cas_handles_hold_bounded_bytes",
            cas_handles_hold_bounded_bytes,
        ),
        ("unbounded_listing", unbounded_listing),
        (
            "outbound_is_denied_by_default",
            outbound_is_denied_by_default,
        ),
        ("infinite_loop", infinite_loop),
        ("memory_bomb", memory_bomb),
        ("slowloris", slowloris),
        ("connection_flood", connection_flood),
        ("request_slots", request_slots),
        ("oversized_body", oversized_body),
    ];
    let mut trials = vec![Trial::test("run_limits", run_limits)];
    for provider in ["memory", "redis"] {
        let available = provider == "memory"
            || kv_testkit::emulator::installed(provider)
            || required.iter().any(|name| name == provider);
        for (name, attack) in attacks {
            let trial = Trial::test(format!("{provider}::{name}"), move || attack(provider));
            trials.push(if available {
                trial
            } else {
                trial
                    .with_ignored_flag(true)
                    .with_kind(format!("no {provider} installed"))
            });
        }
    }
    libtest_mimic::run(&args, trials).exit_code()
}
