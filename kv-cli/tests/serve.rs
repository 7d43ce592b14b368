//! End-to-end tests of `wasi-kv serve`: the real binary on a free loopback port, driven with a
//! real HTTP client. The example's REST API runs on the in-memory store always and on every
//! provider whose emulator is installed (required when `KV_REQUIRE` names it); the limits and
//! shutdown run on the misbehaving fixture.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kv_testkit::provider_tests::{TestResult, check};
use kv_testkit::{required_targets, runtime};
use libtest_mimic::{Arguments, Failed, Trial};
use reqwest::StatusCode;

mod common;
use common::{Served, WASI_KV, client, expect, json, send};

const EXAMPLE: &str = kv_test_artifacts::HTTP_KV_EXAMPLE;
const FIXTURE: &str = kv_test_artifacts::HTTP_FIXTURE;
const COMPAT: &str = kv_test_artifacts::COMPAT_FIXTURE;

/// Every route of the example, as documented in docs/serve.md, then 200 concurrent
/// increments of one counter.
async fn example_routes(served: &Served) -> TestResult {
    let http = client();
    let url = |path: &str| served.url(path);
    let value: Vec<u8> = (0..=255u8)
        .chain(b"\0 not utf-8 \xff".iter().copied())
        .collect();

    expect(
        "GET missing",
        &send(http.get(url("/kv/greeting"))).await?,
        404,
        None,
    )?;
    let put = send(http.put(url("/kv/greeting")).body(value.clone())).await?;
    expect("PUT", &put, 204, Some(b""))?;
    expect(
        "GET",
        &send(http.get(url("/kv/greeting"))).await?,
        200,
        Some(&value),
    )?;
    expect(
        "PUT empty",
        &send(http.put(url("/kv/empty")).body(Vec::new())).await?,
        204,
        None,
    )?;
    expect(
        "GET empty",
        &send(http.get(url("/kv/empty"))).await?,
        200,
        Some(b""),
    )?;
    // `%2F` and a raw `/` name the same key; unicode and spaces survive.
    expect(
        "PUT a%2Fb",
        &send(http.put(url("/kv/a%2Fb")).body("1")).await?,
        204,
        None,
    )?;
    expect(
        "GET a/b",
        &send(http.get(url("/kv/a/b"))).await?,
        200,
        Some(b"1"),
    )?;
    let unicode = "/kv/%C3%A9t%C3%A9%20%E2%9C%93";
    expect(
        "PUT unicode",
        &send(http.put(url(unicode)).body("2")).await?,
        204,
        None,
    )?;
    expect(
        "DELETE",
        &send(http.delete(url("/kv/greeting"))).await?,
        204,
        None,
    )?;
    expect(
        "GET deleted",
        &send(http.get(url("/kv/greeting"))).await?,
        404,
        None,
    )?;
    expect(
        "DELETE again",
        &send(http.delete(url("/kv/greeting"))).await?,
        204,
        None,
    )?;

    let counted = send(http.post(url("/counter/hits"))).await?;
    expect("POST counter", &counted, 200, None)?;
    check(
        json(&counted.1)? == serde_json::json!({"key": "hits", "value": 1}),
        format!("counter body {:?}", String::from_utf8_lossy(&counted.1)),
    )?;
    let by = send(http.post(url("/counter/hits?by=-3"))).await?;
    check(json(&by.1)?["value"] == -2, "POST ?by=-3 gives -2")?;
    expect(
        "GET counter",
        &send(http.get(url("/kv/hits"))).await?,
        200,
        Some(b"-2"),
    )?;

    // Bad input is 400; a non-integer counter is 409.
    for (what, request) in [
        ("bad escape", http.get(url("/kv/%ZZ"))),
        ("invalid UTF-8", http.get(url("/kv/%FF"))),
        ("empty key", http.post(url("/counter/"))),
        ("bad by", http.post(url("/counter/hits?by=x"))),
        ("bad ttl", http.put(url("/kv/t?ttl=0")).body("x")),
        ("bad cursor", http.get(url("/kv?cursor=not-a-cursor"))),
        (
            "key too long",
            http.get(url(&format!("/kv/{}", "k".repeat(1025)))),
        ),
    ] {
        let got = send(request).await?;
        expect(what, &got, 400, None)?;
        check(
            json(&got.1)?.get("error").is_some(),
            format!("{what}: no error field"),
        )?;
    }
    let text = http.put(url("/kv/text")).body("hello");
    expect("PUT text", &send(text).await?, 204, None)?;
    let not_an_integer = send(http.post(url("/counter/text"))).await?;
    expect("not an integer", &not_an_integer, 409, None)?;
    let unchanged = send(http.get(url("/kv/text"))).await?;
    expect("unchanged", &unchanged, 200, Some(b"hello"))?;
    expect("no route", &send(http.get(url("/nope"))).await?, 404, None)?;
    expect(
        "wrong method",
        &send(http.post(url("/kv/x"))).await?,
        405,
        None,
    )?;

    // Listing: one page, every key exactly once, in the JSON shape.
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(cursor) => format!("/kv?cursor={}", percent_encode(cursor)),
            None => "/kv".to_string(),
        };
        let page = send(http.get(url(&path))).await?;
        expect("GET /kv", &page, 200, None)?;
        let page = json(&page.1)?;
        for key in page["keys"].as_array().ok_or("keys is not an array")? {
            keys.push(key.as_str().ok_or("a key is not a string")?.to_string());
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    keys.sort();
    check(
        keys == ["a/b", "empty", "hits", "text", "été ✓"],
        format!("listed keys {keys:?}"),
    )?;

    // 200 concurrent increments, each its own request and instance, end exact.
    let requests = (0..200).map(|_| {
        let http = http.clone();
        let url = url("/counter/concurrent");
        async move { send(http.post(url)).await }
    });
    let results = futures::future::join_all(requests).await;
    let mut seen = Vec::new();
    for result in results {
        let (status, body) = result?;
        check(status == StatusCode::OK, format!("increment: {status}"))?;
        seen.push(
            json(&body)?["value"]
                .as_i64()
                .ok_or("value is not a number")?,
        );
    }
    seen.sort_unstable();
    check(
        seen == (1..=200).collect::<Vec<i64>>(),
        "200 concurrent increments did not return each total 1..=200 once",
    )?;
    let total = send(http.get(url("/kv/concurrent"))).await?;
    expect("final count", &total, 200, Some(b"200"))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The example on `provider`: in memory, or on its freshly started emulator.
fn example_on(provider: &'static str) -> TestResult {
    runtime().block_on(async {
        let (url, _guard) = if provider == "memory" {
            ("memory:".to_string(), None)
        } else {
            let started = kv_testkit::emulator::Emulator::start_for(provider).await?;
            (started.store_url, Some(started.guard))
        };
        let store = format!("default={url}");
        let mut served = Served::start(EXAMPLE, &["--store", &store, "--time-limit", "60s"])?;
        example_routes(&served).await?;
        let status = served.terminate()?;
        check(status.success(), format!("serve exited with {status}"))?;
        seeded_keys_are_there_before_the_first_request(&url).await
    })
}

/// Seeds from the config file (text and file) and from `--seed` (text and `@FILE`) are in the
/// store before the component's first request, on every provider.
async fn seeded_keys_are_there_before_the_first_request(url: &str) -> TestResult {
    let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).map(|_| path)
    };
    write("logo.bin", &[0, 159, 146, 150]).map_err(|err| err.to_string())?;
    let from_cli = write("from-cli.txt", b"file via --seed").map_err(|err| err.to_string())?;
    let namespace = format!("seeded-{:08x}", rand::random::<u32>());
    let config = write(
        "wasi-kv.toml",
        format!(
            "[stores.default]\nurl = \"{url}\"\nnamespace = \"{namespace}\"\n\
             [stores.default.seed]\nfrom-config = \"text in the file\"\n\
             logo = {{ file = \"logo.bin\" }}\n"
        )
        .as_bytes(),
    )
    .map_err(|err| err.to_string())?;
    let config = config.to_string_lossy().into_owned();
    let from_cli = format!("from-cli-file=@{}", from_cli.display());
    let mut served = Served::start(
        EXAMPLE,
        &[
            "--config",
            &config,
            "--seed",
            "from-cli=text via --seed",
            "--seed",
            &from_cli,
            "--time-limit",
            "60s",
        ],
    )?;
    let http = client();
    for (key, expected) in [
        ("from-config", b"text in the file".as_slice()),
        ("logo", &[0, 159, 146, 150]),
        ("from-cli", b"text via --seed"),
        ("from-cli-file", b"file via --seed"),
    ] {
        let got = send(http.get(served.url(&format!("/kv/{key}")))).await?;
        expect(&format!("GET /kv/{key}"), &got, 200, Some(expected))?;
    }
    let status = served.terminate()?;
    check(status.success(), format!("serve exited with {status}"))
}

/// A store that goes away answers 503, and the server serves again when it is back.
fn unavailable_store_is_503() -> TestResult {
    runtime().block_on(async {
        let mut redis = tokio::task::spawn_blocking(kv_testkit::emulator::RedisServer::start)
            .await
            .map_err(|err| Failed::from(err.to_string()))?
            .map_err(Failed::from)?;
        let store = format!("default={}", redis.url());
        let served = Served::start(EXAMPLE, &["--store", &store])?;
        let http = client();
        let put = send(http.put(served.url("/kv/k")).body("v")).await?;
        expect("PUT", &put, 204, None)?;
        redis.stop();
        let started = Instant::now();
        for (what, request) in [
            ("GET", http.get(served.url("/kv/k"))),
            ("PUT", http.put(served.url("/kv/k")).body("w")),
            ("POST", http.post(served.url("/counter/n"))),
            ("list", http.get(served.url("/kv"))),
        ] {
            let got = send(request).await?;
            expect(&format!("{what} with the store down"), &got, 503, None)?;
            let error = json(&got.1)?;
            check(
                error["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("unavailable")),
                format!("{what}: {error}"),
            )?;
        }
        check(
            started.elapsed() < Duration::from_secs(30),
            format!("503s took {:?}", started.elapsed()),
        )?;
        // Keep the restarted server alive until the end of the test.
        let _redis = tokio::task::spawn_blocking(move || redis.restart().map(|()| redis))
            .await
            .map_err(|err| Failed::from(err.to_string()))?
            .map_err(Failed::from)?;
        // Redis restarted empty: the server reconnects and serves again.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = send(http.put(served.url("/kv/k")).body("again")).await?;
            if got.0 == StatusCode::NO_CONTENT {
                break;
            }
            check(Instant::now() < deadline, "the server did not recover")?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        expect(
            "GET after recovery",
            &send(http.get(served.url("/kv/k"))).await?,
            200,
            Some(b"again"),
        )
    })
}

/// With `--time-limit 1s`: a request that computes (`spinning`) and one that waits
/// (`waiting`) are each a 504 within 5 s, while 20 requests beside them (`beside`, answered
/// `status` and `body`) take under 900 ms each.
async fn over_the_time_limit_while_others_are_served(
    served: &Served,
    spinning: &str,
    waiting: &str,
    beside: (&str, u16, &[u8]),
) -> TestResult {
    let http = client();
    let started = Instant::now();
    let spinning = tokio::spawn(send(http.get(served.url(spinning))));
    let waiting = tokio::spawn(send(http.get(served.url(waiting))));
    let (path, status, body) = beside;
    for _ in 0..20 {
        let asked = Instant::now();
        expect(
            &format!("GET {path} beside them"),
            &send(http.get(served.url(path))).await?,
            status,
            Some(body),
        )?;
        check(
            asked.elapsed() < Duration::from_millis(900),
            format!(
                "a request beside the spinning one took {:?}",
                asked.elapsed()
            ),
        )?;
    }
    for (what, task) in [("spin", spinning), ("wait", waiting)] {
        let got = task.await.map_err(|err| Failed::from(err.to_string()))??;
        expect(what, &got, 504, None)?;
        let elapsed = started.elapsed();
        check(
            elapsed < Duration::from_secs(5),
            format!("{what} was stopped after {elapsed:?}"),
        )?;
    }
    Ok(())
}

/// A request over the time limit is a 504 within about the limit, while requests beside it
/// are answered normally; the server keeps serving afterwards.
fn time_limit_is_504_and_others_are_served() -> TestResult {
    runtime().block_on(async {
        let served = Served::start(FIXTURE, &["--time-limit", "1s"])?;
        let http = client();
        over_the_time_limit_while_others_are_served(
            &served,
            "/spin",
            "/sleep?ms=5000",
            ("/", 200, b"ok"),
        )
        .await?;
        expect(
            "GET / after",
            &send(http.get(served.url("/"))).await?,
            200,
            Some(b"ok"),
        )
    })
}

/// A handler that traps after its response started gives the client a broken response, not a
/// clean 200: when the head already went out, the chunked body is never terminated and the
/// connection closes; when it had not, the connection closes with no response. The server
/// logs it as an error and keeps serving.
///
/// `route` traps after `?ms=N` ms; `after` is then a request that must be answered as
/// `(status, body)`. The WASI 0.3 fixture resolves its trailers at once, so only the host can
/// tell its body was cut.
fn trap_after_the_head_is_a_broken_response(
    component: &str,
    route: &str,
    after: (&str, u16, &[u8]),
) -> TestResult {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).map_err(|err| err.to_string())?;
    let served = Served::start_logging(component, &[], Stdio::from(log))?;
    let addr = served.base.trim_start_matches("http://").to_string();
    let waiting = format!("{route}?ms=300");
    for (path, head_sent) in [(waiting.as_str(), true), (route, false)] {
        let mut stream =
            std::net::TcpStream::connect(&addr).map_err(|err| Failed::from(err.to_string()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|err| err.to_string())?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .map_err(|err| err.to_string())?;
        let mut raw = Vec::new();
        // Read until the server closes the connection: after a completed response it would
        // keep it open for the next request, and the read would time out instead.
        let read = stream.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        check(
            read.is_ok(),
            format!("{path}: the connection was not closed: {read:?} after {text:?}"),
        )?;
        check(
            !text.ends_with("0\r\n\r\n"),
            format!("{path}: the chunked body must not be terminated: {text:?}"),
        )?;
        if head_sent {
            check(
                text.starts_with("HTTP/1.1 200") && text.contains("the first half"),
                format!("{path}: the head and the first chunk were sent: {text:?}"),
            )?;
        }
    }
    runtime().block_on(async {
        let http = client();
        // A real client sees an error, never a short success.
        let answer = http.get(served.url(&waiting)).send().await;
        match answer {
            Ok(response) => {
                check(response.status() == 200, "the head says 200")?;
                let body = response.bytes().await;
                check(
                    body.is_err(),
                    format!("reading the body must fail: {body:?}"),
                )?;
            }
            Err(err) => return Err(Failed::from(format!("the head was not sent: {err}"))),
        }
        let (path, status, body) = after;
        expect(
            &format!("GET {path} after"),
            &send(http.get(served.url(path))).await?,
            status,
            Some(body),
        )
    })?;
    drop(served);
    let log = std::fs::read_to_string(&log_path).map_err(|err| err.to_string())?;
    check(
        log.contains("ERROR") && log.contains("response aborted"),
        format!("the abort is logged as an error: {log}"),
    )
}

/// HTTP handlers built the way other runtimes' users build them are served unchanged, with
/// seeded data: Spin's draft2 WIT (the PR #55 `get-many` shape) and wasmtime's `0.2.0-draft`
/// (opening `""`).
fn handlers_built_for_spin_and_wasmtime_serve_unchanged() -> TestResult {
    use kv_test_artifacts::{INTEROP_DRAFT_HANDLER, INTEROP_SPIN_HANDLER};
    for component in [INTEROP_SPIN_HANDLER, INTEROP_DRAFT_HANDLER] {
        let served = Served::start(component, &["--seed", "greeting=hello"])?;
        runtime().block_on(async {
            let http = client();
            for runs in 1..=2 {
                let expected = format!("greeting: hello\nmissing: <none>\nruns: {runs}\n");
                let got = send(http.get(served.url("/"))).await?;
                expect(component, &got, 200, Some(expected.as_bytes()))?;
            }
            TestResult::Ok(())
        })?;
    }
    Ok(())
}

/// A handler built with Spin's Rust SDK is served with seeded data on memory and on Redis:
/// every operation of Spin's interface, and Spin's errors for a store that does not exist, one
/// the component may not open, and one it may only read. Two SDKs: 5.2.0 (WASI 0.2,
/// `fermyon:spin/key-value@2.0.0`; it did not link before that interface was served) and the
/// current 7.0.0 (a WASI 0.3 `#[http_service]`, `spin:key-value@3.0.0`; `serve` could not load
/// a WASI 0.3 handler before).
fn spin_sdk_handler_is_served(handler: &'static str, provider: &'static str) -> TestResult {
    runtime().block_on(async {
        let (url, _guard) = if provider == "memory" {
            ("memory:".to_string(), None)
        } else {
            let started = kv_testkit::emulator::Emulator::start_for(provider).await?;
            (started.store_url, Some(started.guard))
        };
        let namespace = format!("spin-sdk-{:08x}", rand::random::<u32>());
        let default = common::namespaced("default", &url, &namespace);
        let mut args = vec!["--store", default.as_str(), "--time-limit", "60s"];
        args.extend_from_slice(&common::SPIN_FIXTURE_STORES);
        let mut served = Served::start(handler, &args)?;
        let http = client();
        let what = |step: &str| format!("{provider}: {step}");
        let got = send(http.get(served.url("/kv/greeting"))).await?;
        expect(&what("the seeded key"), &got, 200, Some(b"hello"))?;
        let got = send(http.get(served.url("/kv/missing"))).await?;
        expect(&what("a missing key"), &got, 404, Some(b"missing"))?;
        let got = send(http.put(served.url("/kv/answer")).body("42")).await?;
        expect(&what("set"), &got, 200, Some(b"set"))?;
        let got = send(http.get(served.url("/kv/answer"))).await?;
        expect(&what("get after set"), &got, 200, Some(b"42"))?;
        let got = send(http.head(served.url("/kv/answer"))).await?;
        expect(&what("exists"), &got, 200, None)?;
        let got = send(http.head(served.url("/kv/missing"))).await?;
        expect(&what("exists on a missing key"), &got, 404, None)?;
        let got = send(http.get(served.url("/keys"))).await?;
        expect(&what("get-keys"), &got, 200, Some(b"answer\ngreeting"))?;
        let got = send(http.delete(served.url("/kv/answer"))).await?;
        expect(&what("delete"), &got, 200, Some(b"deleted"))?;
        let got = send(http.delete(served.url("/kv/answer"))).await?;
        expect(
            &what("delete of a missing key"),
            &got,
            200,
            Some(b"deleted"),
        )?;
        let got = send(http.head(served.url("/kv/answer"))).await?;
        expect(&what("exists after delete"), &got, 404, None)?;
        let got = send(http.get(served.url("/keys"))).await?;
        expect(&what("get-keys after delete"), &got, 200, Some(b"greeting"))?;
        let got = send(http.get(served.url("/kv/greeting?store=nope"))).await?;
        expect(&what("an unknown label"), &got, 500, Some(b"no-such-store"))?;
        let got = send(http.get(served.url("/kv/greeting?store=locked"))).await?;
        expect(
            &what("a store with access none"),
            &got,
            500,
            Some(b"access-denied"),
        )?;
        let got = send(http.put(served.url("/kv/x?store=reference")).body("1")).await?;
        expect(
            &what("a write to a read-only store"),
            &got,
            500,
            Some(b"access-denied"),
        )?;
        let got = send(http.get(served.url("/kv/x?store=reference"))).await?;
        expect(
            &what("a read of a read-only store"),
            &got,
            404,
            Some(b"missing"),
        )?;
        // The instance's host handles run out (docs/security.md): Spin's own error, and the
        // next request (a fresh instance) is served.
        let got = send(http.get(served.url("/open-all"))).await?;
        expect(
            &what("too many open stores"),
            &got,
            500,
            Some(b"store-table-full"),
        )?;
        let got = send(http.get(served.url("/kv/greeting"))).await?;
        expect(&what("after store-table-full"), &got, 200, Some(b"hello"))?;
        let status = served.terminate()?;
        check(status.success(), format!("serve exited with {status}"))
    })
}

/// Spin's `get-keys` answers every key in one list: it is charged to the bytes an instance may
/// hold (`limits.max_held_bytes`), so a store larger than that is `batch-too-large` instead of
/// unbounded host memory, and a smaller one is listed whole. The empty key is Spin's
/// `other("invalid-key: …")`.
fn spin_sdk_get_keys_is_bounded(handler: &'static str) -> TestResult {
    use std::fmt::Write as _;
    let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
    let mut config = String::from(
        "[limits]\nmax_held_bytes = 65536\n\
         [stores.default]\nurl = \"memory:\"\n[stores.default.seed]\n",
    );
    for index in 0..3000 {
        let _ = writeln!(config, "\"key-{index:05}\" = \"v\"");
    }
    config.push_str("[stores.small]\nurl = \"memory:\"\n[stores.small.seed]\n");
    for index in 0..100 {
        let _ = writeln!(config, "\"key-{index:05}\" = \"v\"");
    }
    let path = dir.path().join("wasi-kv.toml");
    std::fs::write(&path, config).map_err(|err| err.to_string())?;
    let path = path.to_string_lossy().into_owned();
    let mut served = Served::start(handler, &["--config", &path])?;
    runtime().block_on(async {
        let http = client();
        let (status, body) = send(http.get(served.url("/keys"))).await?;
        let body = String::from_utf8_lossy(&body);
        check(
            status.as_u16() == 500 && body.starts_with("other: batch-too-large: get-keys"),
            format!("get-keys of 3,000 keys within 64 KiB: {status} {body}"),
        )?;
        let (status, body) = send(http.get(served.url("/keys?store=small"))).await?;
        check(
            status.as_u16() == 200 && body.split(|byte| *byte == b'\n').count() == 100,
            format!("get-keys of 100 keys: {status}"),
        )?;
        let (status, body) = send(http.get(served.url("/kv/"))).await?;
        let body = String::from_utf8_lossy(&body);
        check(
            status.as_u16() == 500 && body.starts_with("other: invalid-key: "),
            format!("the empty key: {status} {body}"),
        )
    })?;
    let status = served.terminate()?;
    check(status.success(), format!("serve exited with {status}"))
}

/// The WASI 0.2 imports of a component, e.g. `wasi:http/types@0.2.0`.
fn wasi_imports(path: &str) -> Result<Vec<String>, Failed> {
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::from_file(&engine, path)
        .map_err(|err| Failed::from(format!("{path}: {err}")))?;
    Ok(component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .filter(|name| name.starts_with("wasi:http/") || name.starts_with("wasi:cli/"))
        .collect())
}

/// Components built against different WASI 0.2 patch versions are served: one against
/// `wasi:http@0.2.0` and `wasi:cli@0.2.0`, one against `wasi:http@0.2.12` (the version the
/// host links) with the `wasi:cli` patch version Rust's standard library brings.
fn wasi_0_2_patch_versions_are_served() -> TestResult {
    use kv_test_artifacts::INTEROP_DRAFT_HANDLER;
    let old = wasi_imports(COMPAT)?;
    let versions = |prefix: &str, components: &[&Vec<String>]| {
        let mut versions: Vec<String> = components
            .iter()
            .flat_map(|imports| imports.iter())
            .filter(|name| name.starts_with(prefix))
            .filter_map(|name| name.split('@').nth(1).map(str::to_string))
            .collect();
        versions.sort();
        versions.dedup();
        versions
    };
    let example = wasi_imports(EXAMPLE)?;
    let draft = wasi_imports(INTEROP_DRAFT_HANDLER)?;
    let http = versions("wasi:http/", &[&old, &example]);
    let cli = versions("wasi:cli/", &[&old, &draft]);
    check(
        http.len() >= 2,
        format!("two wasi:http patch versions: {http:?}"),
    )?;
    check(
        cli.len() >= 2,
        format!("two wasi:cli patch versions: {cli:?}"),
    )?;
    let served = Served::start(COMPAT, &["--env", "GREETING=hello"])?;
    runtime().block_on(async {
        let http = client();
        for count in 1..=2 {
            let got = send(http.get(served.url("/"))).await?;
            expect(
                "GET /",
                &got,
                200,
                Some(format!("hello {count}\n").as_bytes()),
            )?;
        }
        TestResult::Ok(())
    })?;
    drop(served);
    let served = Served::start(INTEROP_DRAFT_HANDLER, &["--env", "INTEROP_NOTE=0.2.12"])?;
    runtime().block_on(async {
        let got = send(client().get(served.url("/"))).await?;
        let expected = "greeting: <none>\nmissing: <none>\nruns: 1\nnote: 0.2.12\n";
        expect(
            "GET / (draft handler)",
            &got,
            200,
            Some(expected.as_bytes()),
        )
    })
}

/// A request over the memory limit is a 500; a request under it, and the next ones, succeed.
fn memory_limit_is_500() -> TestResult {
    runtime().block_on(async {
        let served = Served::start(FIXTURE, &["--memory-limit", "32MiB"])?;
        let http = client();
        expect(
            "under",
            &send(http.get(served.url("/grow?mib=8"))).await?,
            200,
            None,
        )?;
        let over = send(http.get(served.url("/grow?mib=64"))).await?;
        expect("over", &over, 500, None)?;
        check(
            String::from_utf8_lossy(&over.1).contains("memory limit"),
            "the 500 names the memory limit",
        )?;
        expect(
            "after",
            &send(http.get(served.url("/grow?mib=8"))).await?,
            200,
            None,
        )
    })
}

/// Memory is reset in place between requests (dirty pages rewritten, not unmapped): no
/// request sees what an earlier one on the same slot wrote to its data segment or its
/// zero-initialised memory, also after one that grew far past the part kept resident, and with
/// requests running side by side.
fn no_memory_survives_a_request() -> TestResult {
    runtime().block_on(async {
        let served = Served::start(FIXTURE, &[])?;
        let http = client();
        for round in 0..40 {
            let got = send(http.get(served.url("/residue"))).await?;
            expect(
                &format!("residue, round {round}"),
                &got,
                200,
                Some(b"data=7 bss=0"),
            )?;
            if round % 10 == 5 {
                expect(
                    "grow past the resident part",
                    &send(http.get(served.url("/grow?mib=16"))).await?,
                    200,
                    None,
                )?;
            }
        }
        let side_by_side: Vec<_> = (0..8)
            .map(|_| send(http.get(served.url("/residue"))))
            .collect();
        for got in futures::future::join_all(side_by_side).await {
            expect("residue, side by side", &got?, 200, Some(b"data=7 bss=0"))?;
        }
        Ok(())
    })
}

/// SIGTERM stops accepting connections, lets the in-flight request finish with its 200, and
/// exits 0.
fn sigterm_finishes_in_flight_requests() -> TestResult {
    runtime().block_on(async {
        let mut served = Served::start(FIXTURE, &["--time-limit", "10s"])?;
        let http = client();
        let in_flight = tokio::spawn(send(http.get(served.url("/sleep?ms=1500"))));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let base = served.base.clone();
        let status = tokio::task::spawn_blocking(move || served.terminate())
            .await
            .map_err(|err| Failed::from(err.to_string()))??;
        let got = in_flight
            .await
            .map_err(|err| Failed::from(err.to_string()))??;
        expect("in-flight request", &got, 200, Some(b"slept 1500 ms"))?;
        check(status.success(), format!("serve exited with {status}"))?;
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| Failed::from(e.to_string()))?;
        check(
            fresh.get(format!("{base}/")).send().await.is_err(),
            "a new connection was accepted after shutdown",
        )
    })
}

/// A file that is not an HTTP handler is refused at start-up with one clear line.
fn non_handler_is_refused() -> TestResult {
    let out = Command::new(WASI_KV)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            kv_test_artifacts::COUNTER_EXAMPLE,
        ])
        .output()
        .map_err(|err| Failed::from(err.to_string()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    check(
        out.status.code() == Some(2),
        format!("exit {:?}", out.status),
    )?;
    check(
        stderr.contains("wasi:http/incoming-handler"),
        format!("stderr: {stderr}"),
    )
}

/// A WASI 0.3 handler (async `wasi:http/handler@0.3.0`, built with wit-bindgen's async
/// support) is served with seeded data: every keyvalue operation on `provider`, a body the
/// guest writes after `handle` returned, and 64 concurrent increments counted exactly once by
/// instances that answer several requests each (and say so).
fn wasip3_handler_is_served(provider: &'static str) -> TestResult {
    use kv_test_artifacts::P3_HANDLER;
    runtime().block_on(async {
        let (url, _guard) = if provider == "memory" {
            ("memory:".to_string(), None)
        } else {
            let started = kv_testkit::emulator::Emulator::start_for(provider).await?;
            (started.store_url, Some(started.guard))
        };
        let namespace = format!("p3-handler-{:08x}", rand::random::<u32>());
        let default = common::namespaced("default", &url, &namespace);
        let mut served = Served::start(
            P3_HANDLER,
            &[
                "--store",
                &default,
                "--seed",
                "greeting=hello",
                "--time-limit",
                "60s",
            ],
        )?;
        let http = client();
        let what = |step: &str| format!("{provider}: {step}");
        let steps: Vec<(&str, reqwest::RequestBuilder, u16, Option<&[u8]>)> = vec![
            (
                "the seeded key",
                http.get(served.url("/kv/greeting")),
                200,
                Some(b"hello"),
            ),
            (
                "a missing key",
                http.get(served.url("/kv/missing")),
                404,
                Some(b"missing"),
            ),
            (
                "set",
                http.put(served.url("/kv/answer")).body("42"),
                204,
                Some(b""),
            ),
            (
                "get after set",
                http.get(served.url("/kv/answer")),
                200,
                Some(b"42"),
            ),
            ("exists", http.head(served.url("/kv/answer")), 200, None),
            (
                "exists on a missing key",
                http.head(served.url("/kv/missing")),
                404,
                None,
            ),
            (
                "increment",
                http.post(served.url("/incr/counter?by=5")),
                200,
                Some(b"5"),
            ),
            (
                "get-many",
                http.get(served.url("/many?keys=answer,missing")),
                200,
                Some(b"answer=42 <none>"),
            ),
            (
                "list-keys",
                http.get(served.url("/keys")),
                200,
                Some(b"answer\ncounter\ngreeting"),
            ),
            (
                "delete",
                http.delete(served.url("/kv/answer")),
                204,
                Some(b""),
            ),
            (
                "get after delete",
                http.get(served.url("/kv/answer")),
                404,
                Some(b"missing"),
            ),
            (
                "a body written after handle returned",
                http.get(served.url("/stream?chunks=3&ms=50")),
                200,
                Some(b"chunk 0\nchunk 1\nchunk 2\n"),
            ),
        ];
        for (step, request, status, body) in steps {
            expect(&what(step), &send(request).await?, status, body)?;
        }
        let unknown = send(http.get(served.url("/kv/x?store=nope"))).await?;
        expect(&what("an unknown store"), &unknown, 500, None)?;
        check(
            String::from_utf8_lossy(&unknown.1).contains("NoSuchStore"),
            format!(
                "{provider}: an unknown store answered {:?}",
                String::from_utf8_lossy(&unknown.1)
            ),
        )?;
        let increments: Vec<_> = (0..64)
            .map(|_| send(http.post(served.url("/incr/hits"))))
            .collect();
        let mut totals = Vec::new();
        for got in futures::future::join_all(increments).await {
            let got = got?;
            expect(&what("a concurrent increment"), &got, 200, None)?;
            totals.push(String::from_utf8_lossy(&got.1).parse::<u64>().unwrap_or(0));
        }
        totals.sort_unstable();
        check(
            totals == (1..=64).collect::<Vec<u64>>(),
            format!("{provider}: 64 concurrent increments returned {totals:?}"),
        )?;
        // A request that arrives while every instance is busy, or just before one says it is
        // free again, gets a new instance: reuse shows over several requests, not in each.
        // On a loaded machine the worker that answered may not have run again (to say it is
        // free) before the next request arrives, however many times in a row: the requests
        // are spaced, growing to 50 ms, until one lands on an instance that answered before.
        let mut most = 0;
        for attempt in 0..60u64 {
            let instance = send(http.get(served.url("/instance"))).await?;
            expect(&what("instance"), &instance, 200, None)?;
            let handled: u64 = String::from_utf8_lossy(&instance.1)
                .trim_start_matches("requests ")
                .parse()
                .unwrap_or(0);
            most = most.max(handled);
            if most > 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(attempt.min(50))).await;
        }
        check(
            most > 1,
            format!("{provider}: no instance answered more than {most} request (no reuse)"),
        )?;
        let status = served.terminate()?;
        check(status.success(), format!("serve exited with {status}"))
    })
}

/// `--instance-reuse 1` gives every WASI 0.3 request a fresh instance: none sees another's
/// memory.
fn wasip3_instance_reuse_1_is_a_fresh_instance_per_request() -> TestResult {
    use kv_test_artifacts::P3_HANDLER;
    runtime().block_on(async {
        let served = Served::start(P3_HANDLER, &["--instance-reuse", "1"])?;
        let http = client();
        for round in 0..5 {
            let got = send(http.get(served.url("/instance"))).await?;
            expect(&format!("round {round}"), &got, 200, Some(b"requests 1"))?;
        }
        Ok(())
    })
}

/// serve's limits hold for a WASI 0.3 handler, whose instances answer several requests: a
/// guest that computes or waits past the time limit is a 504 while requests beside it are
/// answered; memory past the limit is a 500 naming it; stores opened past the handle cap are
/// a 500 (the trap of a full table); a body over `--max-body` is a 413; afterwards the server still serves.
fn wasip3_handler_limits() -> TestResult {
    use kv_test_artifacts::P3_HANDLER;
    runtime().block_on(async {
        let served = Served::start(
            P3_HANDLER,
            &[
                "--time-limit",
                "1s",
                "--memory-limit",
                "32MiB",
                "--max-body",
                "64KiB",
            ],
        )?;
        let http = client();
        over_the_time_limit_while_others_are_served(
            &served,
            "/spin",
            "/wait",
            ("/kv/x", 404, b"missing"),
        )
        .await?;
        // The 504 alone does not show the guest stopped: its instance must not go on
        // computing after it.
        #[cfg(target_os = "linux")]
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let pid = served.child.id();
            let before = cpu_seconds(pid).ok_or("no /proc stat")?;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let used = cpu_seconds(pid).ok_or("no /proc stat")? - before;
            check(
                used < 0.5,
                format!("the server used {used:.2} s of CPU in 1.5 s after the 504s"),
            )?;
        }
        expect(
            "8 MiB",
            &send(http.get(served.url("/grow?mib=8"))).await?,
            200,
            None,
        )?;
        let over = send(http.get(served.url("/grow?mib=64"))).await?;
        expect("64 MiB", &over, 500, None)?;
        check(
            String::from_utf8_lossy(&over.1).contains("memory limit"),
            format!(
                "the 500 names the memory limit: {:?}",
                String::from_utf8_lossy(&over.1)
            ),
        )?;
        // wasi:keyvalue's `open` traps on a full handle table: the instance is dropped and
        // the next request gets a fresh one.
        let opened = send(http.get(served.url("/open?n=20000"))).await?;
        expect(
            "20,000 open stores",
            &opened,
            500,
            Some(b"the handler failed\n"),
        )?;
        expect(
            "100 open stores",
            &send(http.get(served.url("/open?n=100"))).await?,
            200,
            Some(b"opened 100"),
        )?;
        let big = send(http.put(served.url("/kv/big")).body(vec![7u8; 100 << 10])).await?;
        expect("a body over --max-body", &big, 413, None)?;
        // The 413 closes its connection: a new client, not a pooled connection racing it.
        let http = client();
        expect(
            "after",
            &send(http.put(served.url("/kv/small")).body("ok")).await?,
            204,
            None,
        )?;
        expect(
            "get after",
            &send(http.get(served.url("/kv/small"))).await?,
            200,
            Some(b"ok"),
        )
    })
}

/// 16 keep-alive clients sending 200 requests each to a WASI 0.3 handler, with
/// `--max-requests 16` (a pool of 32 instances): every request is answered, because instances
/// are reused instead of a new one being made whenever none looks free. (A first version
/// counted an instance that had run into an epoch tick in the last 20 ms as busy: under load
/// every instance had, and half the requests got 503 for an exhausted pool.)
fn wasip3_sustained_load_reuses_instances() -> TestResult {
    runtime().block_on(async {
        let served = Served::start(
            kv_test_artifacts::P3_HANDLER,
            &["--max-requests", "16", "--seed", "k=v"],
        )?;
        let clients: Vec<_> = (0..16)
            .map(|_| {
                let http = client();
                let url = served.url("/kv/k");
                tokio::spawn(async move {
                    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
                    for _ in 0..200 {
                        let (status, _) = send(http.get(&url)).await?;
                        *statuses.entry(status.as_u16()).or_default() += 1;
                    }
                    Ok::<_, Failed>(statuses)
                })
            })
            .collect();
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        for client in clients {
            let counted = client
                .await
                .map_err(|err| Failed::from(err.to_string()))??;
            for (status, count) in counted {
                *statuses.entry(status).or_default() += count;
            }
        }
        check(
            statuses.len() == 1 && statuses.get(&200) == Some(&3200),
            format!("3,200 requests answered: {statuses:?}"),
        )
    })
}

/// A WASI 0.3 handler's `wasi:http/client.send` goes through serve's outbound policy: denied
/// by default (the local server sees no connection), allowed when listed, and the metadata
/// address denied even under `*://*:*`.
fn wasip3_outbound_is_denied_by_default() -> TestResult {
    use kv_test_artifacts::P3_HANDLER;
    use std::sync::atomic::Ordering;
    let (port, connections) = common::counting_http_server()?;
    let local = format!("/fetch?host=127.0.0.1:{port}");
    let metadata = "/fetch?host=169.254.169.254";
    runtime().block_on(async {
        let http = client();
        let closed = Served::start(P3_HANDLER, &[])?;
        let got = send(http.get(closed.url(&local))).await?;
        expect(
            "local, not allowed",
            &got,
            403,
            Some(b"ErrorCode::HttpRequestDenied"),
        )?;
        let got = send(http.get(closed.url(metadata))).await?;
        expect(
            "metadata, not allowed",
            &got,
            403,
            Some(b"ErrorCode::HttpRequestDenied"),
        )?;
        check(
            connections.load(Ordering::SeqCst) == 0,
            "a denied request reached the local server",
        )?;
        let allow = format!("http://127.0.0.1:{port}");
        let open = Served::start(
            P3_HANDLER,
            &["--allow-outbound", &allow, "--allow-outbound", "*://*:*"],
        )?;
        let got = send(http.get(open.url(&local))).await?;
        expect("local, allowed", &got, 200, Some(b"status 200"))?;
        check(
            connections.load(Ordering::SeqCst) == 1,
            "the allowed request reached the local server once",
        )?;
        let got = send(http.get(open.url(metadata))).await?;
        expect(
            "metadata under *://*:*",
            &got,
            403,
            Some(b"ErrorCode::DestinationIpProhibited"),
        )
    })
}

/// CPU seconds a process has used (user + system; Linux's `/proc/PID/stat`, 100 ticks a
/// second).
#[cfg(target_os = "linux")]
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state, then utime and stime are the 12th and
    // 13th fields.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A client that asks for a large WASI 0.3 body and stops reading is disconnected after
/// `--write-timeout` without progress, which gives its request slot back: with
/// `--max-requests 1` (and a time limit far away) the next request is a 503 while the body is
/// being written, and is served after the stall limit. hyper does not poll a body while its
/// write buffer is full, so nothing inside the body could notice.
fn wasip3_a_client_that_stops_reading_gives_its_slot_back() -> TestResult {
    use std::io::Write as _;
    let served = Served::start(
        kv_test_artifacts::P3_HANDLER,
        &[
            "--max-requests",
            "1",
            "--time-limit",
            "60s",
            "--write-timeout",
            "1s",
        ],
    )?;
    let addr = served.base.trim_start_matches("http://").to_string();
    let mut stalled =
        std::net::TcpStream::connect(&addr).map_err(|err| Failed::from(err.to_string()))?;
    // 64 MiB: far more than the sockets between them buffer.
    stalled
        .write_all(b"GET /stream?chunks=64&kib=1024 HTTP/1.1\r\nHost: x\r\n\r\n")
        .map_err(|err| err.to_string())?;
    runtime().block_on(async {
        let http = client();
        tokio::time::sleep(Duration::from_millis(500)).await;
        expect(
            "while the body is written",
            &send(http.get(served.url("/kv/x"))).await?,
            503,
            None,
        )?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        expect(
            "after the stall limit",
            &send(http.get(served.url("/kv/x"))).await?,
            404,
            Some(b"missing"),
        )
    })?;
    drop(stalled);
    Ok(())
}

/// Requests of each kind in the metrics test.
const SCRAPED_EACH: usize = 100;

/// A real Prometheus server scrapes `serve --metrics` every 500 ms while 300 requests run
/// (100 each of set, get and increment, 8 at a time): once it has scraped after the load, its
/// counters say exactly what was sent, per route and per store operation.
fn metrics_scraped_by_prometheus() -> TestResult {
    let dir = tempfile::tempdir().map_err(|err| Failed::from(err.to_string()))?;
    let served = Served::start(
        kv_test_artifacts::HTTP_KV_EXAMPLE,
        &[
            "--store",
            "cache=memory:",
            "--env",
            "KV_STORE=cache",
            "--metrics",
            "127.0.0.1:0",
        ],
    )?;
    let metrics_url = served.metrics.clone().ok_or("no metrics address")?;
    let target = metrics_url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .ok_or_else(|| format!("unexpected metrics URL {metrics_url}"))?
        .to_string();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n\
             scrape_configs:\n  - job_name: wasi-kv\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .map_err(|err| Failed::from(err.to_string()))?;
    let data = dir.path().join("data");
    let prometheus = kv_testkit::emulator::LocalServer::start_http(
        "prometheus",
        move |port| {
            let mut command = Command::new("prometheus");
            command
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn");
            command
        },
        Duration::from_secs(60),
    )?;
    let api = format!("http://127.0.0.1:{}/api/v1/query", prometheus.port());
    runtime().block_on(async {
        let http = client();
        let load = (0..8).map(|worker| {
            let http = http.clone();
            let served = &served;
            async move {
                for index in (worker..SCRAPED_EACH).step_by(8) {
                    let key = served.url(&format!("/kv/key-{index}"));
                    expect("PUT", &send(http.put(&key).body("v")).await?, 204, None)?;
                    expect("GET", &send(http.get(&key)).await?, 200, Some(b"v"))?;
                    let counter = served.url("/counter/hits");
                    expect("POST", &send(http.post(&counter)).await?, 200, None)?;
                }
                Ok::<(), Failed>(())
            }
        });
        futures::future::try_join_all(load).await?;
        let query = |expr: &'static str| {
            let http = http.clone();
            let api = api.clone();
            async move {
                let (status, body) = send(http.get(&api).query(&[("query", expr)])).await?;
                check(status.is_success(), format!("{expr}: {status}"))?;
                let answer = json(&body)?;
                Ok::<Option<f64>, Failed>(
                    answer["data"]["result"][0]["value"][1]
                        .as_str()
                        .and_then(|value| value.parse().ok()),
                )
            }
        };
        let all = (3 * SCRAPED_EACH) as f64;
        // Scrapes run every 500 ms: within 30 s one lands after the last request.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if query("sum(wasi_kv_http_requests_total)").await? == Some(all) {
                break;
            }
            check(
                Instant::now() < deadline,
                "Prometheus never scraped all 300 requests",
            )?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let each = Some(SCRAPED_EACH as f64);
        for (expr, expected) in [
            (r#"sum(wasi_kv_http_requests_total{status="204"})"#, each),
            (
                r#"sum(wasi_kv_http_requests_total{status="200"})"#,
                Some(2.0 * SCRAPED_EACH as f64),
            ),
            (
                r#"sum(wasi_kv_store_calls_total{store="cache",op="set",outcome="ok"})"#,
                each,
            ),
            (
                r#"sum(wasi_kv_store_calls_total{store="cache",op="get",outcome="ok"})"#,
                each,
            ),
            (
                r#"sum(wasi_kv_store_calls_total{store="cache",op="increment",outcome="ok"})"#,
                each,
            ),
            (r#"sum(wasi_kv_store_calls_total{outcome!="ok"})"#, None),
            (
                r#"sum(wasi_kv_store_value_bytes_total{op="set",direction="written"})"#,
                each,
            ),
            (
                r#"sum(wasi_kv_store_call_duration_seconds_count{op="get"})"#,
                each,
            ),
            (
                "sum(wasi_kv_http_request_duration_seconds_count)",
                Some(all),
            ),
            ("sum(wasi_kv_instance_memory_bytes_count)", Some(all)),
            (r#"up{job="wasi-kv"}"#, Some(1.0)),
        ] {
            let got = query(expr).await?;
            check(
                got == expected,
                format!("{expr}: {got:?}, expected {expected:?}"),
            )?;
        }
        Ok(())
    })
}

/// Every body POSTed to an OTLP/HTTP receiver.
type Received = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// An OTLP/HTTP receiver on a free loopback port, keeping every body POSTed to `/v1/traces`.
async fn otlp_receiver() -> Result<(String, Received), Failed> {
    use http_body_util::BodyExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|err| Failed::from(err.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|err| Failed::from(err.to_string()))?;
    let bodies: Received = Default::default();
    let received = bodies.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let received = received.clone();
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let received = received.clone();
                    async move {
                        let traces = request.uri().path() == "/v1/traces";
                        let body = request.into_body().collect().await?.to_bytes();
                        let mut response = hyper::Response::new(http_body_util::Full::new(
                            hyper::body::Bytes::new(),
                        ));
                        if traces {
                            received.lock().unwrap().push(body.to_vec());
                        } else {
                            *response.status_mut() = hyper::StatusCode::NOT_FOUND;
                        }
                        Ok::<_, hyper::Error>(response)
                    }
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    Ok((format!("http://{addr}"), bodies))
}

/// `serve --otlp-endpoint` sends, to a receiver the test started, one span per request and
/// one per store operation inside it: `kv set` under the PUT's span, `kv get` under the GET's,
/// in the same trace, with the store, provider and attempts. Spans still buffered at
/// shutdown are exported on SIGTERM.
fn otlp_spans_for_requests_and_store_calls() -> TestResult {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message as _;
    let (endpoint, bodies) = runtime().block_on(otlp_receiver())?;
    let mut served = Served::start(
        kv_test_artifacts::HTTP_KV_EXAMPLE,
        &["--otlp-endpoint", &endpoint],
    )?;
    runtime().block_on(async {
        let http = client();
        let put = send(http.put(served.url("/kv/traced")).body("v")).await?;
        expect("PUT", &put, 204, None)?;
        let get = send(http.get(served.url("/kv/traced"))).await?;
        expect("GET", &get, 200, Some(b"v"))
    })?;
    let status = served.terminate()?;
    check(status.success(), format!("serve exited with {status}"))?;
    let exports = bodies
        .lock()
        .unwrap()
        .iter()
        .map(|body| ExportTraceServiceRequest::decode(&body[..]))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| Failed::from(format!("not an OTLP trace export: {err}")))?;
    let spans: Vec<_> = exports
        .into_iter()
        .flat_map(|request| request.resource_spans)
        .flat_map(|resource| resource.scope_spans)
        .flat_map(|scope| scope.spans)
        .collect();
    let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
    let named = |name: &str| {
        spans
            .iter()
            .filter(|span| span.name == name)
            .collect::<Vec<_>>()
    };
    let requests = named("request");
    check(requests.len() == 2, format!("spans received: {names:?}"))?;
    for op in ["set", "get"] {
        let calls = named(&format!("kv {op}"));
        check(calls.len() == 1, format!("spans received: {names:?}"))?;
        let call = calls[0];
        check(
            requests.iter().any(|request| {
                request.trace_id == call.trace_id && request.span_id == call.parent_span_id
            }),
            format!("kv {op} is not a child of a request span"),
        )?;
        let attribute = |key: &str| {
            call.attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.as_ref()?.value.clone())
        };
        check(
            attribute("kv.store") == Some(Value::StringValue("default".into()))
                && attribute("kv.provider") == Some(Value::StringValue("memory".into()))
                && attribute("kv.attempts") == Some(Value::IntValue(1)),
            format!("kv {op} attributes: {:?}", call.attributes),
        )?;
        check(
            call.end_time_unix_nano >= call.start_time_unix_nano,
            "span times",
        )?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    kv_testkit::stay_on_loopback();
    let args = Arguments::from_args();
    let required = required_targets();
    let mut trials = vec![
        Trial::test("example_on_memory", || example_on("memory")),
        Trial::test(
            "time_limit_is_504_and_others_are_served",
            time_limit_is_504_and_others_are_served,
        ),
        Trial::test("memory_limit_is_500", memory_limit_is_500),
        Trial::test("no_memory_survives_a_request", no_memory_survives_a_request),
        Trial::test(
            "wasi_0_2_patch_versions_are_served",
            wasi_0_2_patch_versions_are_served,
        ),
        Trial::test(
            "handlers_built_for_spin_and_wasmtime_serve_unchanged",
            handlers_built_for_spin_and_wasmtime_serve_unchanged,
        ),
        Trial::test("spin_sdk_get_keys_is_bounded", || {
            spin_sdk_get_keys_is_bounded(kv_test_artifacts::INTEROP_SPIN_SDK_HANDLER)
        }),
        Trial::test("spin_sdk_handler_on_memory", || {
            spin_sdk_handler_is_served(kv_test_artifacts::INTEROP_SPIN_SDK_HANDLER, "memory")
        }),
        Trial::test("spin_sdk_7_get_keys_is_bounded", || {
            spin_sdk_get_keys_is_bounded(kv_test_artifacts::INTEROP_SPIN_SDK7_HANDLER)
        }),
        Trial::test("spin_sdk_7_handler_on_memory", || {
            spin_sdk_handler_is_served(kv_test_artifacts::INTEROP_SPIN_SDK7_HANDLER, "memory")
        }),
        Trial::test("trap_after_the_head_is_a_broken_response", || {
            trap_after_the_head_is_a_broken_response(
                FIXTURE,
                "/trap-after-headers",
                ("/", 200, b"ok"),
            )
        }),
        Trial::test("wasip3_trap_after_the_head_is_a_broken_response", || {
            trap_after_the_head_is_a_broken_response(
                kv_test_artifacts::P3_HANDLER,
                "/trap-after-head",
                ("/kv/x", 404, b"missing"),
            )
        }),
        Trial::test(
            "sigterm_finishes_in_flight_requests",
            sigterm_finishes_in_flight_requests,
        ),
        Trial::test("non_handler_is_refused", non_handler_is_refused),
        Trial::test("wasip3_handler_on_memory", || {
            wasip3_handler_is_served("memory")
        }),
        Trial::test(
            "wasip3_instance_reuse_1_is_a_fresh_instance_per_request",
            wasip3_instance_reuse_1_is_a_fresh_instance_per_request,
        ),
        Trial::test("wasip3_handler_limits", wasip3_handler_limits),
        Trial::test(
            "wasip3_outbound_is_denied_by_default",
            wasip3_outbound_is_denied_by_default,
        ),
        Trial::test(
            "wasip3_sustained_load_reuses_instances",
            wasip3_sustained_load_reuses_instances,
        ),
        Trial::test(
            "wasip3_a_client_that_stops_reading_gives_its_slot_back",
            wasip3_a_client_that_stops_reading_gives_its_slot_back,
        ),
    ];
    trials.push(Trial::test(
        "otlp_spans_for_requests_and_store_calls",
        otlp_spans_for_requests_and_store_calls,
    ));
    let scraped = Trial::test(
        "metrics_scraped_by_prometheus",
        metrics_scraped_by_prometheus,
    );
    trials.push(if kv_testkit::tool_required_or_installed("prometheus") {
        scraped
    } else {
        scraped
            .with_ignored_flag(true)
            .with_kind("no prometheus installed")
    });
    let mut with_emulator: Vec<(&str, Trial)> =
        ["redis", "dynamodb", "gcs", "cosmos", "s3", "azblob"]
            .into_iter()
            .map(|provider| {
                let name = format!("example_on_{provider}");
                (provider, Trial::test(name, move || example_on(provider)))
            })
            .collect();
    with_emulator.push((
        "redis",
        Trial::test("unavailable_store_is_503", unavailable_store_is_503),
    ));
    with_emulator.push((
        "redis",
        Trial::test("wasip3_handler_on_redis", || {
            wasip3_handler_is_served("redis")
        }),
    ));
    with_emulator.push((
        "redis",
        Trial::test("spin_sdk_handler_on_redis", || {
            spin_sdk_handler_is_served(kv_test_artifacts::INTEROP_SPIN_SDK_HANDLER, "redis")
        }),
    ));
    with_emulator.push((
        "redis",
        Trial::test("spin_sdk_7_handler_on_redis", || {
            spin_sdk_handler_is_served(kv_test_artifacts::INTEROP_SPIN_SDK7_HANDLER, "redis")
        }),
    ));
    for (provider, trial) in with_emulator {
        let available = kv_testkit::emulator::installed(provider)
            || required.iter().any(|name| name == provider);
        trials.push(if available {
            trial
        } else {
            trial
                .with_ignored_flag(true)
                .with_kind(format!("no {provider} emulator installed"))
        });
    }
    libtest_mimic::run(&args, trials).exit_code()
}
