//! What the `wasi-kv serve` test binaries share: the server as a real process on a free
//! loopback port, and a real HTTP client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kv_testkit::provider_tests::{TestResult, check};
use libtest_mimic::Failed;
use reqwest::StatusCode;

/// The `wasi-kv` binary under test.
pub const WASI_KV: &str = env!("CARGO_BIN_EXE_wasi-kv");

/// A `wasi-kv serve` process; SIGKILLed if a test fails before stopping it.
pub struct Served {
    pub child: Child,
    pub base: String,
    /// The metrics URL, when started with `--metrics`.
    pub metrics: Option<String>,
}

impl Served {
    pub fn start(component: &str, args: &[&str]) -> Result<Served, Failed> {
        Self::start_logging(component, args, Stdio::inherit())
    }

    /// [`Served::start`] with the server's log (stderr) going to `log`.
    pub fn start_logging(component: &str, args: &[&str], log: Stdio) -> Result<Served, Failed> {
        let mut child = Command::new(WASI_KV)
            .arg("serve")
            .arg("--addr")
            .arg("127.0.0.1:0")
            .args(args)
            .arg(component)
            .env("WASI_KV_LOG", "warn,kv_cli=info")
            .env("COSMOS_DISABLE_IMDS", "1")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|err| Failed::from(format!("cannot start wasi-kv: {err}")))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .map_err(|err| Failed::from(format!("reading the address: {err}")))?;
        let metrics = if args.contains(&"--metrics") {
            let mut metrics = String::new();
            stdout
                .read_line(&mut metrics)
                .map_err(|err| Failed::from(format!("reading the metrics address: {err}")))?;
            Some(
                metrics
                    .trim()
                    .strip_prefix("metrics ")
                    .ok_or_else(|| format!("no metrics address: {metrics:?}"))?
                    .to_string(),
            )
        } else {
            None
        };
        let base = line
            .trim()
            .strip_prefix("serving ")
            .ok_or_else(|| {
                let status = child.wait().ok();
                Failed::from(format!(
                    "wasi-kv serve did not start ({status:?}): {line:?}"
                ))
            })?
            .to_string();
        Ok(Served {
            child,
            base,
            metrics,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then the exit status (bounded wait).
    pub fn terminate(&mut self) -> Result<ExitStatus, Failed> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .map_err(|err| Failed::from(format!("kill: {err}")))?;
        check(status.success(), "kill -TERM failed")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|err| Failed::from(err.to_string()))?
            {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err("wasi-kv serve did not exit within 20 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("an HTTP client builds")
}

pub async fn send(request: reqwest::RequestBuilder) -> Result<(StatusCode, Vec<u8>), Failed> {
    let response = request
        .send()
        .await
        .map_err(|err| Failed::from(format!("request failed: {err}")))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|err| Failed::from(format!("reading the body: {err}")))?;
    Ok((status, body.to_vec()))
}

pub fn json(body: &[u8]) -> Result<serde_json::Value, Failed> {
    serde_json::from_slice(body).map_err(|err| {
        Failed::from(format!(
            "not JSON ({err}): {}",
            String::from_utf8_lossy(body)
        ))
    })
}

pub fn expect(
    what: &str,
    got: &(StatusCode, Vec<u8>),
    status: u16,
    body: Option<&[u8]>,
) -> TestResult {
    check(
        got.0.as_u16() == status,
        format!(
            "{what}: expected {status}, got {} {}",
            got.0,
            String::from_utf8_lossy(&got.1)
        ),
    )?;
    if let Some(body) = body {
        check(
            got.1 == body,
            format!("{what}: body {:?}", String::from_utf8_lossy(&got.1)),
        )?;
    }
    Ok(())
}

/// A store argument `NAME=URL` with `namespace` added to the URL's query, so a test's keys
/// never meet another run's on a shared backend.
pub fn namespaced(name: &str, url: &str, namespace: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{name}={url}{separator}namespace={namespace}")
}

/// The backends a CLI test runs on: memory, and Redis when it is installed or `KV_REQUIRE`
/// names it (then a missing server fails the test). The server lives as long as the guard.
pub fn memory_and_redis() -> (
    Option<kv_testkit::emulator::RedisServer>,
    Vec<(&'static str, String)>,
) {
    let required = std::env::var("KV_REQUIRE").unwrap_or_default();
    let redis = if required.split(',').any(|name| name.trim() == "redis")
        || kv_testkit::emulator::installed("redis")
    {
        Some(kv_testkit::emulator::RedisServer::start().expect("redis-server starts"))
    } else {
        None
    };
    let mut backends = vec![("memory", "memory:".to_string())];
    if let Some(server) = &redis {
        backends.push(("redis", server.url()));
    }
    (redis, backends)
}

/// A plain HTTP server on loopback that answers 200 and counts its connections.
pub fn counting_http_server()
-> Result<(u16, std::sync::Arc<std::sync::atomic::AtomicUsize>), Failed> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|err| Failed::from(err.to_string()))?;
    let port = listener
        .local_addr()
        .map_err(|err| Failed::from(err.to_string()))?
        .port();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100) {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut buffer = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut buffer);
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            );
        }
    });
    Ok((port, connections))
}

/// The stores beside `default` that the Spin SDK fixtures are run with, and their seed: a
/// label with access none (`locked`), a read-only one (`reference`), and `greeting=hello`.
pub const SPIN_FIXTURE_STORES: [&str; 6] = [
    "--store",
    "locked=memory:?access=none",
    "--store",
    "reference=memory:?access=read-only",
    "--seed",
    "greeting=hello",
];
