//! `wasi-kv watch` end to end: the recorder component (kv-conformance/guest-watch)
//! writes each change it is given into the `audit` store, and these tests compare that log
//! with what they wrote (docs/watch.md, docs/semantics.md S13).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_cli::watch::WatchOptions;
use kv_core::{KvStore, Stores};
use kv_testkit::emulator::DynamoDbLocal;
use kv_testkit::faults::{Fault, FaultProxy, Injected, Protocol};

const WASI_KV: &str = env!("CARGO_BIN_EXE_wasi-kv");
const RECORDER: &str = kv_test_artifacts::WATCH_RECORDER;

async fn stores(specs: &[&str]) -> Arc<Stores> {
    let specs: Vec<String> = specs.iter().map(|spec| spec.to_string()).collect();
    let config = kv_cli::load_config(None, &specs).expect("configuration");
    Arc::new(
        kv_cli::registry()
            .build(&config)
            .await
            .expect("stores open"),
    )
}

fn options(watched: &str) -> WatchOptions {
    WatchOptions {
        component: RECORDER.into(),
        name: None,
        watched: vec![watched.to_string()],
        state: "state".into(),
        dead_letters: None,
        envs: vec![],
        time_limit: Duration::from_secs(5),
        memory_limit: 64 << 20,
        delivery: kv_watch::WatchOptions {
            wait: Duration::from_millis(200),
            ..kv_watch::WatchOptions::default()
        },
    }
}

/// A `wasi-kv watch` run in this process, and how to stop it.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<(String, kv_watch::Delivered)>>>,
}

impl Running {
    /// Starts watching (`expect`: what starting means, for the failure message).
    async fn start(options: &WatchOptions, stores: &Arc<Stores>, expect: &str) -> Running {
        let watching = kv_cli::watch::start(options, stores.clone())
            .await
            .expect(expect);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(watching.run(async {
            let _ = stopped.await;
        }));
        Running { stop, task }
    }

    /// Stops it (within 20 s) and returns what each store delivered.
    async fn stop(self, expect: &str) -> Vec<(String, kv_watch::Delivered)> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("stops")
            .unwrap()
            .expect(expect)
    }
}

/// The recorder's log, oldest first.
async fn events(audit: &KvStore) -> Vec<String> {
    let count = match audit.get("seq").await.expect("read seq") {
        Some(seq) => String::from_utf8_lossy(&seq)
            .parse::<u64>()
            .expect("a count"),
        None => 0,
    };
    let keys: Vec<String> = (1..=count).map(|n| format!("event/{n:08}")).collect();
    let mut events = Vec::new();
    for chunk in keys.chunks(500) {
        for value in audit.get_many(chunk).await.expect("read events") {
            events.push(String::from_utf8_lossy(&value.unwrap_or_default()).into_owned());
        }
    }
    events
}

/// Waits (bounded) until `done` holds for the log.
async fn wait_for(
    audit: &KvStore,
    limit: Duration,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let seen = events(audit).await;
        if done(&seen) || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_delivered_in_order_on_memory() {
    every_change_in_order(RECORDER).await;
}

/// The same through the `0.2.0-draft` watcher export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_watcher_gets_every_change_in_order() {
    every_change_in_order(kv_test_artifacts::WATCH_RECORDER_DRAFT).await;
}

async fn every_change_in_order(component: &str) {
    let stores = stores(&[
        "data=memory:?namespace=data",
        "audit=memory:?namespace=audit",
        "state=memory:?namespace=state",
    ])
    .await;
    let mut options = options("data");
    options.component = component.into();
    let watching = kv_cli::watch::start(&options, stores.clone())
        .await
        .expect("the watcher starts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(watching.run(async {
        let _ = stopped.await;
    }));
    let data = stores.open("data").await.unwrap();
    let audit = stores.open("audit").await.unwrap();
    data.set("a", b"1".to_vec()).await.unwrap();
    data.set("b", b"2".to_vec()).await.unwrap();
    data.set("a", b"3".to_vec()).await.unwrap();
    data.delete("b").await.unwrap();
    // Deleting a missing key changes nothing: no event.
    data.delete("never-there").await.unwrap();
    data.increment("c", 5).await.unwrap();
    data.set_many(vec![
        ("d".into(), b"4".to_vec()),
        ("e".into(), b"5".to_vec()),
    ])
    .await
    .unwrap();
    data.delete_many(&["d".to_string(), "e".to_string()])
        .await
        .unwrap();
    data.set_with_ttl("t", b"soon".to_vec(), 300).await.unwrap();
    let expected = [
        "set a 1",
        "set b 2",
        "set a 3",
        "delete b",
        "set c 5",
        "set d 4",
        "set e 5",
        "delete d",
        "delete e",
        "set t soon",
        // The TTL running out is a delete too.
        "delete t",
    ];
    let seen = wait_for(&audit, Duration::from_secs(20), |seen| {
        seen.len() >= expected.len()
    })
    .await;
    assert_eq!(seen, expected, "what the watcher received, in order");
    // Nothing more arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(events(&audit).await.len(), expected.len());
    let _ = stop.send(());
    let delivered = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the watcher stops within 20 s")
        .unwrap()
        .expect("the watcher stops cleanly");
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].1.changes, expected.len() as u64);
    assert_eq!(delivered[0].1.failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_retried_then_dead_lettered_never_dropped() {
    let stores = stores(&[
        "data=memory:?namespace=data",
        "audit=memory:?namespace=audit",
        "state=memory:?namespace=state",
        "dead=memory:?namespace=dead",
    ])
    .await;
    let mut options = options("data");
    options.dead_letters = Some("dead".into());
    options.time_limit = Duration::from_secs(1);
    options.delivery.max_attempts = 3;
    options.delivery.backoff = kv_core::Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    let watching = kv_cli::watch::start(&options, stores.clone())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(watching.run(async {
        let _ = stopped.await;
    }));
    let data = stores.open("data").await.unwrap();
    let audit = stores.open("audit").await.unwrap();
    let dead = stores.open("dead").await.unwrap();
    data.set("before", b"ok".to_vec()).await.unwrap();
    // Traps on its first delivery: delivered again, on a new instance, and recorded once.
    data.set("flaky", b"trap-once".to_vec()).await.unwrap();
    // Traps every time: after 3 deliveries it goes to the dead letters.
    data.set("poison", b"trap-always".to_vec()).await.unwrap();
    // Computes forever: the time limit stops each delivery.
    data.set("slow", b"spin".to_vec()).await.unwrap();
    // Later changes are still delivered, after the ones that failed.
    data.set("after", b"ok".to_vec()).await.unwrap();
    let expected = ["set before ok", "set flaky trap-once", "set after ok"];
    let seen = wait_for(&audit, Duration::from_secs(30), |seen| {
        seen.len() >= expected.len()
    })
    .await;
    assert_eq!(seen, expected);
    assert_eq!(
        audit.get("attempts/flaky").await.unwrap().as_deref(),
        Some(&b"2"[..]),
        "trap-once was delivered exactly twice"
    );
    let mut letters = Vec::new();
    let mut cursor = None;
    loop {
        let page = dead.list_keys(cursor.as_deref()).await.unwrap();
        for key in page.keys {
            let body = dead.get(&key).await.unwrap().unwrap();
            letters.push((
                key,
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            ));
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(letters.len(), 2, "two dead letters: {letters:?}");
    let by_key: HashMap<String, &serde_json::Value> = letters
        .iter()
        .map(|(_, letter)| (letter["key"].as_str().unwrap().to_string(), letter))
        .collect();
    let poison = by_key["poison"];
    assert_eq!(poison["op"], "set");
    assert_eq!(poison["attempts"], 3);
    assert_eq!(poison["store"], "data");
    assert!(
        poison["error"].as_str().unwrap().contains("trapped"),
        "{poison}"
    );
    let slow = by_key["slow"];
    assert!(
        slow["error"].as_str().unwrap().contains("time limit"),
        "{slow}"
    );
    for (key, _) in &letters {
        assert!(
            key.starts_with("watch/kv_watch_recorder/data/dead/"),
            "{key}"
        );
    }
    let _ = stop.send(());
    let delivered = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
    assert_eq!(delivered[0].1.dead_letters, 2);
    assert_eq!(delivered[0].1.failures, 1 + 3 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_refuses_what_it_cannot_serve() {
    let stores = stores(&[
        "data=memory:?namespace=data",
        "audit=memory:",
        "state=memory:?namespace=state",
        "alias=memory:?namespace=data",
    ])
    .await;
    let mut not_a_watcher = options("data");
    not_a_watcher.component = kv_test_artifacts::COUNTER_EXAMPLE.into();
    let err = kv_cli::watch::start(&not_a_watcher, stores.clone())
        .await
        .err()
        .expect("a command is not a watcher");
    assert!(
        format!("{err:#}").contains("exports no wasi:keyvalue/watcher"),
        "{err:#}"
    );
    let mut loop_back = options("data");
    loop_back.state = "data".into();
    let err = kv_cli::watch::start(&loop_back, stores.clone())
        .await
        .err()
        .expect("a watched store cannot hold the checkpoints");
    assert!(
        format!("{err:#}").contains("it is the watched store"),
        "{err:#}"
    );
    // The same keys under another name: every checkpoint would be a change to deliver.
    let mut aliased = options("data");
    aliased.state = "alias".into();
    let err = kv_cli::watch::start(&aliased, stores.clone())
        .await
        .err()
        .expect("an alias of the watched store cannot hold the checkpoints");
    assert!(
        format!("{err:#}").contains("it is the watched store"),
        "{err:#}"
    );
    let mut unknown = options("nope");
    unknown.watched = vec!["nope".into()];
    let err = kv_cli::watch::start(&unknown, stores)
        .await
        .err()
        .expect("no such store");
    assert!(format!("{err:#}").contains("--watch nope"), "{err:#}");
}

/// A `wasi-kv watch` process; SIGKILLed when dropped.
struct WatchProcess(Child);

impl WatchProcess {
    fn start(args: &[String]) -> WatchProcess {
        let mut child = Command::new(WASI_KV)
            .arg("watch")
            .args(args)
            .arg(RECORDER)
            .env("WASI_KV_LOG", "warn,kv_cli=info,kv_watch=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("wasi-kv starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the first line");
        assert!(
            line.starts_with("watching "),
            "wasi-kv watch did not start: {line:?}"
        );
        WatchProcess(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, and the exit status (bounded wait).
    fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wasi-kv watch did not stop within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WatchProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// 10,000 writes (8,000 sets, 2,000 deletes) over 200 keys while the watcher is killed (SIGKILL) mid-stream and started
/// again: every write is delivered at least once, and each key's writes arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_killed_mid_stream_resumes_without_loss_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let data_url = format!("sqlite:{}", dir.path().join("data.db").display());
    killed_mid_stream_resumes_without_loss(&dir, &data_url, 10_000, 200).await;
}

/// The same on DynamoDB (its stream is the durable source; 4,000 writes over 100 keys keep the
/// run short on DynamoDB Local).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_killed_mid_stream_resumes_without_loss_on_dynamodb() {
    let Some(local) = dynamodb_local() else {
        eprintln!("DynamoDB Local is not installed and KV_REQUIRE does not name dynamodb: not run");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data_url = format!("{}&namespace=killed", local.store_url("wasikv-watch-kill"));
    killed_mid_stream_resumes_without_loss(&dir, &data_url, 4_000, 100).await;
}

/// `writes` writes over `keys` keys of the store at `data_url` (every fifth round deletes), a
/// `wasi-kv watch` process recording them into SQLite, killed after a third and restarted.
async fn killed_mid_stream_resumes_without_loss(
    dir: &tempfile::TempDir,
    data_url: &str,
    writes: usize,
    keys: usize,
) {
    // Every fifth round over the keys deletes them (each was set in the round before: a
    // delete of a missing key would change nothing, and be no event).
    let is_delete = move |n: usize| (n / keys) % 5 == 4;
    let audit_url = format!("sqlite:{}", dir.path().join("audit.db").display());
    let specs = [
        format!("data={data_url}"),
        format!("audit={audit_url}?namespace=audit"),
        format!("state={audit_url}?namespace=state"),
    ];
    let args: Vec<String> = specs
        .iter()
        .flat_map(|spec| ["--store".to_string(), spec.clone()])
        .chain(["--watch", "data", "--state", "state"].map(String::from))
        .collect();
    let spec_refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let stores = stores(&spec_refs).await;
    let data = stores.open("data").await.unwrap();
    let audit = stores.open("audit").await.unwrap();
    let mut watcher = WatchProcess::start(&args);
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            for n in 0..writes {
                let key = format!("k{:03}", n % keys);
                if is_delete(n) {
                    data.delete(&key).await.unwrap();
                } else {
                    data.set(&key, format!("w{n:05}").into_bytes())
                        .await
                        .unwrap();
                }
            }
        })
    };
    // Killed once a third has been delivered.
    let seen = wait_for(&audit, Duration::from_secs(120), |seen| {
        seen.len() >= writes / 3
    })
    .await;
    assert!(
        seen.len() >= writes / 3,
        "only {} delivered in 120 s",
        seen.len()
    );
    watcher.kill();
    let killed_at = events(&audit).await.len();
    let mut watcher = WatchProcess::start(&args);
    writer.await.unwrap();
    // The writes as the watcher must see them, per key.
    let mut written: HashMap<String, Vec<String>> = HashMap::new();
    for n in 0..writes {
        let key = format!("k{:03}", n % keys);
        let event = if is_delete(n) {
            format!("delete {key}")
        } else {
            format!("set {key} w{n:05}")
        };
        written.entry(key).or_default().push(event);
    }
    let seen = wait_for(&audit, Duration::from_secs(300), |seen| {
        in_order(&written, seen).is_ok()
    })
    .await;
    if let Err(missing) = in_order(&written, &seen) {
        panic!("after {} events: {missing}", seen.len());
    }
    let redelivered = seen.len() - writes;
    eprintln!(
        "{writes} writes, {} events ({redelivered} redelivered after the kill at {killed_at})",
        seen.len()
    );
    let status = watcher.terminate();
    assert!(status.success(), "wasi-kv watch exited with {status}");
    // The checkpoint is where the last run stopped: a third run delivers nothing old.
    let before = events(&audit).await.len();
    let mut third = WatchProcess::start(&args);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        events(&audit).await.len(),
        before,
        "a clean stop left nothing to redeliver"
    );
    third.terminate();
}

/// Whether every write arrived, each key's in the order written: they must be a subsequence
/// of the key's events (a redelivery repeats a stretch, which at-least-once allows; a
/// reordering or a loss does not match).
fn in_order(written: &HashMap<String, Vec<String>>, seen: &[String]) -> Result<(), String> {
    let mut per_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for event in seen {
        let key = event.split(' ').nth(1).unwrap_or_default();
        per_key.entry(key).or_default().push(event.as_str());
    }
    for (key, writes) in written {
        let got = per_key.get(key.as_str()).cloned().unwrap_or_default();
        let mut next = 0;
        for event in &got {
            if next < writes.len() && *event == writes[next] {
                next += 1;
            }
        }
        if next < writes.len() {
            return Err(format!(
                "{key}: {next} of {} writes arrived in order; then {:?} is missing: {got:?}",
                writes.len(),
                writes[next]
            ));
        }
    }
    Ok(())
}

/// `wasi-kv watch` arguments: `data_url` watched under `name`, the recorder's log in
/// `audit_file` and the checkpoint in `state_file` (both SQLite, in `dir`).
fn watch_args(
    dir: &tempfile::TempDir,
    data_url: &str,
    name: &str,
    audit_file: &str,
    state_file: &str,
) -> (Vec<String>, String) {
    let audit_url = format!(
        "sqlite:{}?namespace=audit",
        dir.path().join(audit_file).display()
    );
    let state_url = format!(
        "sqlite:{}?namespace=state",
        dir.path().join(state_file).display()
    );
    let args = [
        "--store".to_string(),
        format!("data={data_url}"),
        "--store".to_string(),
        format!("audit={audit_url}"),
        "--store".to_string(),
        format!("state={state_url}"),
        "--watch".to_string(),
        "data".to_string(),
        "--state".to_string(),
        "state".to_string(),
        "--name".to_string(),
        name.to_string(),
    ];
    (args.to_vec(), audit_url)
}

/// `writes` sets of `keys` keys (`w` and the write's number), as the recorder logs them.
async fn write_sets(
    data: &KvStore,
    from: usize,
    writes: usize,
    keys: usize,
) -> HashMap<String, Vec<String>> {
    let mut written: HashMap<String, Vec<String>> = HashMap::new();
    for n in from..from + writes {
        let key = format!("k{:03}", n % keys);
        let value = format!("w{n:05}");
        data.set(&key, value.clone().into_bytes()).await.unwrap();
        written
            .entry(key.clone())
            .or_default()
            .push(format!("set {key} {value}"));
    }
    written
}

/// Two `wasi-kv watch` processes of one SQLite file under different names, their checkpoints
/// in one state store (each under its name) and each with its own log: both get every write
/// in order, and one killed (SIGKILL) and restarted while the writes go on does not disturb
/// the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watcher_processes_of_one_store_each_get_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let data_url = format!("sqlite:{}", dir.path().join("data.db").display());
    let (first_args, first_audit) = watch_args(&dir, &data_url, "first", "first.db", "state.db");
    let (second_args, second_audit) =
        watch_args(&dir, &data_url, "second", "second.db", "state.db");
    let stores = stores(&[
        &format!("data={data_url}"),
        &format!("first={first_audit}"),
        &format!("second={second_audit}"),
    ])
    .await;
    let data = stores.open("data").await.unwrap();
    let (first_log, second_log) = (
        stores.open("first").await.unwrap(),
        stores.open("second").await.unwrap(),
    );
    let mut first = WatchProcess::start(&first_args);
    let mut second = WatchProcess::start(&second_args);
    let writer = {
        let data = data.clone();
        tokio::spawn(async move { write_sets(&data, 0, 3_000, 50).await })
    };
    let seen = wait_for(&first_log, Duration::from_secs(60), |seen| {
        seen.len() >= 300
    })
    .await;
    first.kill();
    let killed_at = events(&first_log).await.len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut first = WatchProcess::start(&first_args);
    let written = writer.await.unwrap();
    assert!(
        seen.len() >= 300 && killed_at < 3_000,
        "the first watcher was killed mid-stream (at {killed_at} of 3,000 events)"
    );
    for (log, name) in [(&first_log, "first"), (&second_log, "second")] {
        let seen = wait_for(log, Duration::from_secs(120), |seen| {
            in_order(&written, seen).is_ok()
        })
        .await;
        if let Err(missing) = in_order(&written, &seen) {
            panic!("{name}, after {} events: {missing}", seen.len());
        }
    }
    assert_eq!(
        events(&second_log).await.len(),
        3_000,
        "the watcher that was not killed delivered each write once"
    );
    assert!(first.terminate().success());
    assert!(second.terminate().success());
}

/// Two processes under one name (a restart that overlaps the old process) share a checkpoint:
/// each delivers every change from where it started, whichever saved last is where the next
/// run resumes, and nothing is lost (a saved position was delivered by the process that
/// saved it). docs/watch.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_under_one_name_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_url = format!("sqlite:{}", dir.path().join("data.db").display());
    let (old_args, old_audit) = watch_args(&dir, &data_url, "shared", "old.db", "state.db");
    let (new_args, new_audit) = watch_args(&dir, &data_url, "shared", "new.db", "state.db");
    let (next_args, next_audit) = watch_args(&dir, &data_url, "shared", "next.db", "state.db");
    let stores = stores(&[
        &format!("data={data_url}"),
        &format!("old={old_audit}"),
        &format!("new={new_audit}"),
        &format!("next={next_audit}"),
    ])
    .await;
    let data = stores.open("data").await.unwrap();
    let logs = [
        stores.open("old").await.unwrap(),
        stores.open("new").await.unwrap(),
        stores.open("next").await.unwrap(),
    ];
    let mut old = WatchProcess::start(&old_args);
    let before = write_sets(&data, 0, 500, 50).await;
    let mut new = WatchProcess::start(&new_args);
    let during = write_sets(&data, 500, 500, 50).await;
    // The old process saw both; the new one, started on the old one's checkpoint, at least
    // what was written after it started.
    for (log, written, name) in [
        (&logs[0], &before, "old"),
        (&logs[0], &during, "old"),
        (&logs[1], &during, "new"),
    ] {
        let seen = wait_for(log, Duration::from_secs(120), |seen| {
            in_order(written, seen).is_ok()
        })
        .await;
        if let Err(missing) = in_order(written, &seen) {
            panic!("{name}, after {} events: {missing}", seen.len());
        }
    }
    assert!(old.terminate().success());
    assert!(new.terminate().success());
    // Written while neither runs: the next run under the name delivers each, and nothing
    // from before the stop (both stopped at the head).
    let after = write_sets(&data, 1_000, 200, 50).await;
    let mut next = WatchProcess::start(&next_args);
    let seen = wait_for(&logs[2], Duration::from_secs(60), |seen| {
        in_order(&after, seen).is_ok()
    })
    .await;
    if let Err(missing) = in_order(&after, &seen) {
        panic!("next, after {} events: {missing}", seen.len());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        events(&logs[2]).await.len(),
        200,
        "nothing from before the stop again"
    );
    assert!(next.terminate().success());
}

/// The README's quickstart for `examples/watch-audit`, with the binary: a change made with
/// `wasi-kv store set` is in the audit log, and a restarted watcher resumes from its
/// checkpoint (the entry is not logged twice after a clean stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_audit_example_logs_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("data=sqlite:{}", dir.path().join("data.db").display());
    let audit = format!("audit=sqlite:{}", dir.path().join("audit.db").display());
    let state = format!(
        "state=sqlite:{}?namespace=watch",
        dir.path().join("audit.db").display()
    );
    let watch_args = |component: &str| {
        let mut child = Command::new(WASI_KV)
            .args([
                "watch", "--store", &data, "--store", &audit, "--store", &state,
            ])
            .args(["--state", "state", "--watch", "data", component])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("wasi-kv starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "watching data");
        WatchProcess(child)
    };
    let store = |args: &[&str]| {
        let output = Command::new(WASI_KV)
            .arg("store")
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let mut watcher = watch_args(kv_test_artifacts::WATCH_AUDIT_EXAMPLE);
    assert_eq!(
        store(&["set", "--store", &data, "greeting", "hello"]).0,
        Some(0)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let read = store(&["get", "--store", &audit, "log/000000000001"]);
        if read.0 == Some(0) || Instant::now() > deadline {
            break read;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(first, (Some(0), "set greeting (5 bytes)".to_string()));
    assert!(watcher.terminate().success());
    let mut again = watch_args(kv_test_artifacts::WATCH_AUDIT_EXAMPLE);
    assert_eq!(store(&["delete", "--store", &data, "greeting"]).0, Some(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        let read = store(&["get", "--store", &audit, "log/000000000002"]);
        if read.0 == Some(0) || Instant::now() > deadline {
            break read;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(second, (Some(0), "delete greeting".to_string()));
    assert_eq!(
        store(&["get", "--store", &audit, "entries"]),
        (Some(0), "2".to_string()),
        "one entry per change"
    );
    assert!(again.terminate().success());
}

/// Redis, when installed or required (`KV_REQUIRE` names it: CI); `None` otherwise.
fn redis_server() -> Option<kv_testkit::emulator::RedisServer> {
    wanted("redis")
        .then(|| kv_testkit::emulator::RedisServer::start().expect("redis-server starts"))
}

/// DynamoDB Local, when installed or required; `None` otherwise.
fn dynamodb_local() -> Option<DynamoDbLocal> {
    wanted("dynamodb").then(|| DynamoDbLocal::start().expect("DynamoDB Local starts"))
}

/// The provider's backend is installed, or `KV_REQUIRE` names it (CI: then it must start).
fn wanted(provider: &str) -> bool {
    let required = std::env::var("KV_REQUIRE").unwrap_or_default();
    required.split(',').any(|name| name.trim() == provider)
        || kv_testkit::emulator::installed(provider)
}

/// Waits (bounded) until the log's last event is `expected`.
async fn wait_for_last(audit: &KvStore, expected: &str) -> Vec<String> {
    wait_for(audit, Duration::from_secs(10), |seen| {
        seen.last().map(String::as_str) == Some(expected)
    })
    .await
}

/// Redis through keyspace notifications (single server): every kind of write, TTL expiry,
/// and a lost subscription (the server kills the subscriber) resynchronised. Each write waits
/// for its event: Redis delivers the value a key has when its notification is read, so quick
/// writes of one key may arrive as the latest value (docs/watch.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_changes_are_delivered_and_a_lost_subscription_resyncs() {
    let Some(server) = redis_server() else {
        eprintln!("redis-server is not installed and KV_REQUIRE does not name redis: not run");
        return;
    };
    let namespace = format!("watch-{:08x}", rand::random::<u32>());
    let data = format!("data={}?namespace={namespace}", server.url());
    let stores = stores(&[
        data.as_str(),
        "audit=memory:?namespace=audit",
        "state=memory:?namespace=state",
    ])
    .await;
    let running = Running::start(&options("data"), &stores, "the watcher subscribes").await;
    let data = stores.open("data").await.unwrap();
    let audit = stores.open("audit").await.unwrap();
    data.set("a", b"1".to_vec()).await.unwrap();
    wait_for_last(&audit, "set a 1").await;
    data.set("a", b"2".to_vec()).await.unwrap();
    wait_for_last(&audit, "set a 2").await;
    data.delete("a").await.unwrap();
    wait_for_last(&audit, "delete a").await;
    data.delete("never-there").await.unwrap();
    data.increment("c", 5).await.unwrap();
    wait_for_last(&audit, "set c 5").await;
    data.set_many(vec![("m".into(), b"1".to_vec())])
        .await
        .unwrap();
    wait_for_last(&audit, "set m 1").await;
    data.delete_many(&["m".to_string()]).await.unwrap();
    wait_for_last(&audit, "delete m").await;
    data.set_with_ttl("t", b"soon".to_vec(), 300).await.unwrap();
    wait_for_last(&audit, "set t soon").await;
    let seen = wait_for_last(&audit, "delete t").await;
    assert_eq!(
        seen,
        [
            "set a 1",
            "set a 2",
            "delete a",
            "set c 5",
            "set m 1",
            "delete m",
            "set t soon",
            "delete t"
        ],
        "what the watcher received, in order"
    );
    // The server drops the subscriber: notifications until it is back are lost, so the
    // watcher resynchronises (every live key delivered again) and goes on.
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(killed, 1, "one subscriber");
    data.set("after", b"kill".to_vec()).await.unwrap();
    let seen = wait_for(&audit, Duration::from_secs(20), |seen| {
        seen.iter().filter(|event| *event == "set c 5").count() >= 2
            && seen.iter().any(|event| event == "set after kill")
    })
    .await;
    assert!(
        seen.iter().filter(|event| *event == "set c 5").count() >= 2
            && seen.iter().any(|event| event == "set after kill"),
        "after the subscription was lost: {seen:?}"
    );
    // Notifications flow again on the new subscription (not only the resync's listing).
    data.set("later", b"1".to_vec()).await.unwrap();
    let seen = wait_for_last(&audit, "set later 1").await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("set later 1"),
        "{seen:?}"
    );
    let delivered = running.stop("stops cleanly").await;
    assert!(delivered[0].1.resyncs >= 1, "{delivered:?}");
}

/// DynamoDB through its table's stream: every kind of write in order with the value it wrote,
/// nothing of another store in the table, nothing for deletes that delete nothing; then the
/// stream answers 503 to eight requests in a row (a fault proxy in front of DynamoDB Local)
/// and the watcher goes on without losing a change. The test writes straight to DynamoDB
/// Local; only the watcher's store goes through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_changes_are_delivered_in_order_through_feed_faults() {
    let Some(local) = dynamodb_local() else {
        eprintln!("DynamoDB Local is not installed and KV_REQUIRE does not name dynamodb: not run");
        return;
    };
    let direct = local.store_url("wasikv-watch");
    let upstream: std::net::SocketAddr = local
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = FaultProxy::start(upstream, Protocol::Http).await.unwrap();
    let proxied = direct.replace(&upstream.to_string(), &proxy.addr().to_string());
    let watched = format!("data={proxied}&namespace=data");
    let writer = format!("writer={direct}&namespace=data");
    let other = format!("other={direct}&namespace=other");
    let stores = stores(&[
        watched.as_str(),
        writer.as_str(),
        other.as_str(),
        "audit=memory:?namespace=audit",
        "state=memory:?namespace=state",
    ])
    .await;
    let running = Running::start(
        &options("data"),
        &stores,
        "the watcher starts (the stream is enabled)",
    )
    .await;
    let data = stores.open("writer").await.unwrap();
    let other = stores.open("other").await.unwrap();
    let audit = stores.open("audit").await.unwrap();
    data.set("a", b"1".to_vec()).await.unwrap();
    other.set("a", b"elsewhere".to_vec()).await.unwrap();
    data.set("b", b"2".to_vec()).await.unwrap();
    data.set("a", b"3".to_vec()).await.unwrap();
    data.delete("b").await.unwrap();
    data.delete("b").await.unwrap();
    data.delete("never-there").await.unwrap();
    data.increment("c", 5).await.unwrap();
    data.set_many(vec![
        ("d".into(), b"4".to_vec()),
        ("e".into(), b"5".to_vec()),
    ])
    .await
    .unwrap();
    data.delete_many(&["d".to_string(), "e".to_string()])
        .await
        .unwrap();
    let expected = [
        "set a 1", "set b 2", "set a 3", "delete b", "set c 5", "set d 4", "set e 5", "delete d",
        "delete e",
    ];
    let seen = wait_for(&audit, Duration::from_secs(30), |seen| {
        seen.len() >= expected.len()
    })
    .await;
    assert_eq!(seen, expected, "what the watcher received, in order");
    // The stream fails eight requests in a row: the watcher retries and misses nothing.
    proxy.next(Fault::Respond(Injected::status(503)), 8);
    data.set("f", b"6".to_vec()).await.unwrap();
    data.delete("a").await.unwrap();
    let seen = wait_for(&audit, Duration::from_secs(30), |seen| {
        seen.len() >= expected.len() + 2
    })
    .await;
    assert_eq!(
        proxy.pending(),
        0,
        "the faults reached the watcher's requests"
    );
    assert_eq!(&seen[expected.len()..], ["set f 6", "delete a"], "{seen:?}");
    assert!(!running.task.is_finished(), "the watcher is still running");
    let delivered = running.stop("stops cleanly after the faults").await;
    assert_eq!(delivered[0].1.changes, expected.len() as u64 + 2);
}

/// Redis Cluster: each primary's keyspace notifications are its own, so every primary is
/// subscribed. Keys spread over all three primaries arrive (sets, deletes, a TTL's expiry);
/// then a manual failover (`CLUSTER FAILOVER`: no subscription is lost) and a primary killed
/// (SIGKILL): each time the watcher subscribes on the new primaries, resynchronises, and
/// delivers the writes made after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_changes_arrive_from_every_primary_and_a_failover_resyncs() {
    if !wanted("redis-cluster") {
        eprintln!(
            "redis-server is not installed and KV_REQUIRE does not name redis-cluster: not run"
        );
        return;
    }
    let mut cluster = kv_testkit::emulator::RedisCluster::start().expect("the cluster starts");
    let namespace = format!("watch-{:08x}", rand::random::<u32>());
    let data = format!("data={}?namespace={namespace}", cluster.url());
    let stores = stores(&[
        data.as_str(),
        "audit=memory:?namespace=audit",
        "state=memory:?namespace=state",
    ])
    .await;
    let running = Running::start(
        &options("data"),
        &stores,
        "the watcher subscribes on every primary",
    )
    .await;
    let data = stores.open("data").await.unwrap();
    let audit = stores.open("audit").await.unwrap();
    // 30 keys: their slots fall on all three primaries.
    let keys: Vec<String> = (0..30).map(|n| format!("k{n:02}")).collect();
    for key in &keys {
        data.set(key, b"1".to_vec()).await.unwrap();
    }
    for key in &keys[..10] {
        data.delete(key).await.unwrap();
    }
    data.set_with_ttl("t", b"soon".to_vec(), 300).await.unwrap();
    let mut expected: Vec<String> = keys.iter().map(|key| format!("set {key} 1")).collect();
    expected.extend(keys[..10].iter().map(|key| format!("delete {key}")));
    expected.extend(["set t soon".to_string(), "delete t".to_string()]);
    let has_all = |seen: &[String], wanted: &[String]| wanted.iter().all(|w| seen.contains(w));
    let seen = wait_for(&audit, Duration::from_secs(20), |seen| {
        has_all(seen, &expected)
    })
    .await;
    assert!(has_all(&seen, &expected), "from every primary: {seen:?}");
    // Each key's events in order: its set before its delete.
    for key in &keys[..10] {
        let set = seen.iter().position(|e| *e == format!("set {key} 1"));
        let delete = seen.iter().position(|e| *e == format!("delete {key}"));
        assert!(set < delete, "{key}: {seen:?}");
    }
    // A manual failover: a replica takes over and its primary lives on as a replica, so no
    // subscription is lost. The demoted node is told to send no more notifications: only
    // listing the primaries again finds the new one (and its events must be switched on).
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3, "three primaries");
    let replica = replica_of(primaries[1]).await;
    let node = |port: u16| async move {
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    };
    let () = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query_async(&mut node(replica).await)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.primaries().contains(&replica) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        cluster.primaries().contains(&replica),
        "the replica took over"
    );
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("")
        .query_async(&mut node(primaries[1]).await)
        .await
        .unwrap();
    resubscribed_and_deletes_arrive(&data, &audit, "moved", 2).await;
    // A primary dies; its replica is promoted.
    cluster.kill(primaries[0]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.primaries().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        cluster.primaries().len(),
        3,
        "a replica took over within 60 s"
    );
    resubscribed_and_deletes_arrive(&data, &audit, "after", 3).await;
    let delivered = running.stop("stops cleanly").await;
    assert!(
        delivered[0].1.resyncs >= 2,
        "resynchronised twice: {delivered:?}"
    );
}

/// Waits for the resync that follows a failover (the live key `k29` seen `times_seen` times,
/// its first set counted), then writes 30 keys and deletes 10 of them:
/// a resync delivers no deletes, so only subscriptions on the new primaries can deliver them.
async fn resubscribed_and_deletes_arrive(
    data: &KvStore,
    audit: &KvStore,
    prefix: &str,
    times_seen: usize,
) {
    let seen = wait_for(audit, Duration::from_secs(60), |seen| {
        seen.iter().filter(|event| *event == "set k29 1").count() >= times_seen
    })
    .await;
    assert!(
        seen.iter().filter(|event| *event == "set k29 1").count() >= times_seen,
        "no resync after the failover ({prefix}): {seen:?}"
    );
    write_all(data, prefix, b"2").await;
    for n in 0..10 {
        let key = format!("{prefix}{n:02}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while data.delete(&key).await.is_err() {
            assert!(Instant::now() < deadline, "{key} could not be deleted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let wanted: Vec<String> = (0..30)
        .map(|n| format!("set {prefix}{n:02} 2"))
        .chain((0..10).map(|n| format!("delete {prefix}{n:02}")))
        .collect();
    let seen = wait_for(audit, Duration::from_secs(30), |seen| {
        wanted.iter().all(|event| seen.contains(event))
    })
    .await;
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|event| !seen.contains(event))
        .collect();
    assert!(
        missing.is_empty(),
        "after the failover ({prefix}), missing: {missing:?}"
    );
}

/// Sets `PREFIX00`..`PREFIX29` to `value`, each retried (bounded) while a cluster settles.
async fn write_all(data: &KvStore, prefix: &str, value: &[u8]) {
    for n in 0..30 {
        let key = format!("{prefix}{n:02}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while data.set(&key, value.to_vec()).await.is_err() {
            assert!(Instant::now() < deadline, "{key} could not be written");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The port of the replica of the primary on `port` (`INFO replication`).
async fn replica_of(port: u16) -> u16 {
    let mut connection = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut connection)
            .await
            .unwrap();
        let replica = info
            .lines()
            .find(|line| line.starts_with("slave0:"))
            .and_then(|line| {
                line.split(',')
                    .find_map(|field| field.strip_prefix("port="))
            })
            .and_then(|port| port.parse().ok());
        match replica {
            Some(replica) => return replica,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            None => panic!("no replica of 127.0.0.1:{port}: {info}"),
        }
    }
}

/// Cloud Storage by listing (fake-gcs-server has no notifications): each kind of write, each
/// waited for (writes of one key between two listings arrive as its value then), a TTL's
/// expiry as a delete, nothing for a delete of a missing key; a restarted watcher holds a
/// position of the earlier process's log, so it resynchronises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_changes_are_found_by_listing_and_a_restart_resyncs() {
    if !wanted("gcs") {
        eprintln!("fake-gcs-server is not installed and KV_REQUIRE does not name gcs: not run");
        return;
    }
    let server = kv_testkit::emulator::FakeGcsServer::start().expect("fake-gcs-server starts");
    listed_changes_arrive_and_a_restart_resyncs(&format!(
        "data={}",
        server.store_url("wasikv-watch", "app/")
    ))
    .await;
}

/// The same on Cosmos DB (the local server's change feed is the whole listing with a fixed
/// ETag, so the store is listed and compared on each item's `_etag`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosmos_changes_are_found_by_listing_and_a_restart_resyncs() {
    if !wanted("cosmos") {
        eprintln!(
            "the Cosmos DB server is not installed and KV_REQUIRE does not name cosmos: not run"
        );
        return;
    }
    let server = kv_testkit::emulator::CosmosServer::start().expect("the Cosmos DB server starts");
    listed_changes_arrive_and_a_restart_resyncs(&format!(
        "data={}",
        server.store_url("wasikv", "watch")
    ))
    .await;
}

/// A store watched by listing (`data`: its spec): each kind of write, each waited for, a
/// TTL's expiry, no event for a delete of a missing key, and a restart that resynchronises.
async fn listed_changes_arrive_and_a_restart_resyncs(data: &str) {
    let stores = stores(&[
        data,
        "audit=memory:?namespace=audit",
        "state=memory:?namespace=state",
    ])
    .await;
    let running = Running::start(&options("data"), &stores, "the watcher starts").await;
    let data = stores.open("data").await.unwrap();
    let audit = stores.open("audit").await.unwrap();
    data.set("a", b"1".to_vec()).await.unwrap();
    wait_for_last(&audit, "set a 1").await;
    data.set("a", b"2".to_vec()).await.unwrap();
    wait_for_last(&audit, "set a 2").await;
    data.delete("a").await.unwrap();
    wait_for_last(&audit, "delete a").await;
    data.delete("never-there").await.unwrap();
    data.increment("c", 5).await.unwrap();
    wait_for_last(&audit, "set c 5").await;
    data.set_many(vec![("m".into(), b"1".to_vec())])
        .await
        .unwrap();
    wait_for_last(&audit, "set m 1").await;
    data.delete_many(&["m".to_string()]).await.unwrap();
    wait_for_last(&audit, "delete m").await;
    data.set_with_ttl("t", b"soon".to_vec(), 1500)
        .await
        .unwrap();
    wait_for_last(&audit, "set t soon").await;
    let seen = wait_for_last(&audit, "delete t").await;
    assert_eq!(
        seen,
        [
            "set a 1",
            "set a 2",
            "delete a",
            "set c 5",
            "set m 1",
            "delete m",
            "set t soon",
            "delete t"
        ],
        "what the watcher received, in order"
    );
    let first = running.stop("stops cleanly").await;
    assert_eq!(first[0].1.resyncs, 0);
    // Written while no watcher runs, then a new watcher from the same checkpoint: the log it
    // names is gone with the process, so it resynchronises (every live key as a set).
    data.set("while-down", b"x".to_vec()).await.unwrap();
    let running = Running::start(&options("data"), &stores, "the watcher starts again").await;
    let seen = wait_for(&audit, Duration::from_secs(20), |seen| {
        seen.iter().any(|event| event == "set while-down x")
            && seen.iter().filter(|event| *event == "set c 5").count() >= 2
    })
    .await;
    assert!(
        seen.iter().any(|event| event == "set while-down x")
            && seen.iter().filter(|event| *event == "set c 5").count() >= 2,
        "after the restart: {seen:?}"
    );
    // The restarted feed goes on finding changes (not only the resync's listing).
    data.set("after-restart", b"y".to_vec()).await.unwrap();
    data.delete("while-down").await.unwrap();
    let both = |seen: &[String]| {
        seen.iter().any(|event| event == "set after-restart y")
            && seen.iter().any(|event| event == "delete while-down")
    };
    let seen = wait_for(&audit, Duration::from_secs(20), both).await;
    assert!(both(&seen), "after the restart: {seen:?}");
    let second = running.stop("stops cleanly").await;
    assert_eq!(second[0].1.resyncs, 1, "{second:?}");
}

/// Listings that fail lose nothing: with the watcher's Cloud Storage requests answered 503
/// three times (a fault proxy in front of fake-gcs-server), a write made meanwhile straight to
/// the server arrives once a listing succeeds, compared with the last good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_listings_that_fail_lose_nothing() {
    if !wanted("gcs") {
        eprintln!("fake-gcs-server is not installed and KV_REQUIRE does not name gcs: not run");
        return;
    }
    let server = kv_testkit::emulator::FakeGcsServer::start().expect("fake-gcs-server starts");
    let direct = server.store_url("wasikv-watch-faults", "app/");
    let upstream: std::net::SocketAddr = server
        .endpoint()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let proxy = FaultProxy::start(upstream, Protocol::Http).await.unwrap();
    let watched = format!(
        "data={}",
        direct.replace(&upstream.to_string(), &proxy.addr().to_string())
    );
    let writer = format!("writer={direct}&namespace=data");
    let stores = stores(&[
        watched.as_str(),
        writer.as_str(),
        "audit=memory:?namespace=audit",
        "state=memory:?namespace=state",
    ])
    .await;
    let running = Running::start(&options("data"), &stores, "the watcher starts").await;
    let data = stores.open("writer").await.unwrap();
    let audit = stores.open("audit").await.unwrap();
    data.set("before", b"1".to_vec()).await.unwrap();
    wait_for_last(&audit, "set before 1").await;
    proxy.next(Fault::Respond(Injected::status(503)), 3);
    data.set("during", b"2".to_vec()).await.unwrap();
    let seen = wait_for(&audit, Duration::from_secs(20), |seen| {
        seen.iter().any(|event| event == "set during 2")
    })
    .await;
    assert_eq!(
        proxy.pending(),
        0,
        "the faults reached the watcher's listings"
    );
    assert_eq!(seen, ["set before 1", "set during 2"]);
    let delivered = running.stop("stops cleanly").await;
    assert_eq!(delivered[0].1.resyncs, 0, "{delivered:?}");
}
