//! `wasi-kv check`: histories of concurrent clients under faults, checked
//! (kv-conformance's `histories` module records, kv-check judges).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use kv_check::{History, Recorder};
use kv_conformance::histories::{self, CheckReport, NemesisKind, Plan, Source};
use kv_testkit::emulator::Crashable;
use tokio::io::AsyncReadExt as _;

use crate::cli::CheckArgs;

/// The longest `--time` accepted: every run is bounded.
const MAX_TIME: Duration = Duration::from_secs(3600);

/// Runs the check; returns whether the history is valid.
pub async fn check(args: &CheckArgs) -> anyhow::Result<bool> {
    let registry = crate::registry();
    crate::known_provider(&registry, &args.provider, args.emulator)?;
    if let Some(path) = &args.history {
        return recheck(path, args.strict);
    }
    if args.time > MAX_TIME {
        bail!("--time is at most 1h");
    }
    if args.clients == 0 || args.clients > 256 || args.hosts == 0 || args.hosts > 16 {
        bail!("--clients must be 1–256 and --hosts 1–16");
    }
    if args.processes > 16 {
        bail!("--processes must be 0–16");
    }
    if args.rate == 0 || args.rate > 100_000 {
        bail!("--rate must be 1–100000 operations per second");
    }
    if args.keys == 0 || args.keys > 10_000 {
        bail!("--keys must be 1–10000");
    }
    let source = match (&args.store, args.emulator) {
        (Some(url), _) => Source::Url(url.clone()),
        (None, true) => Source::Emulator {
            durable: matches!(
                args.nemesis,
                Some(NemesisKind::Crash | NemesisKind::All) | None
            ) && kv_testkit::emulator::Emulator::for_provider(&args.provider)
                .is_some_and(|emulator| emulator.not_durable().is_none()),
        },
        (None, false) if matches!(args.provider.as_str(), "memory" | "sqlite") => Source::InProcess,
        (None, false) => bail!(
            "no store of provider {:?}: pass --emulator (a local emulator on loopback) or \
             --store URL",
            args.provider
        ),
    };
    // Faults only where this command controls the backend; the default nemesis follows.
    let nemesis = match (args.nemesis, &source) {
        (Some(kind), Source::Url(_)) if kind != NemesisKind::None => bail!(
            "--nemesis {kind} needs the fault proxy, which runs only in front of a backend this \
             command starts on loopback (--emulator, or memory/sqlite in process); a store given \
             by URL is checked with --nemesis none"
        ),
        (Some(kind), _) => kind,
        (None, Source::Url(_)) => NemesisKind::None,
        (None, _) => NemesisKind::All,
    };
    let plan = Plan {
        workload: args.workload,
        nemesis,
        clients: args.clients,
        time: args.time,
        max_ops: args.max_ops,
        keys: args.keys,
        seed: args.seed.unwrap_or_else(rand::random),
        rate: args.rate,
    };
    eprintln!(
        "checking {}: workload {}, nemesis {}, {} host(s) × {} clients, {} s, seed {}",
        args.provider,
        plan.workload,
        plan.nemesis,
        args.hosts,
        plan.clients,
        plan.time.as_secs_f64(),
        plan.seed
    );
    let mut setup = histories::setup(&registry, &args.provider, source, args.hosts)
        .await
        .map_err(anyhow::Error::msg)?;
    let recorder = Recorder::new();
    let processes = if args.processes > 0 {
        let Some(url) = &setup.process_url else {
            bail!(
                "--processes needs a store other processes can reach: the in-memory store lives \
                 in this process (use sqlite, --emulator or --store URL)"
            );
        };
        let processes = HostProcesses::start(args, &plan, url, &setup.namespace).await?;
        setup.faults.kill_host = Some(processes.clone());
        Some(processes)
    } else {
        None
    };
    if let Some(why) = setup.faults.unsupported(plan.nemesis) {
        bail!(
            "--nemesis {} cannot run on {}: {why}",
            plan.nemesis,
            args.provider
        );
    }
    let limits = histories::limits();
    let hosts = histories::open_hosts(&setup.providers, &setup.namespace, &limits)
        .await
        .context("opening the store")?;
    let recorded = histories::record(&hosts, &plan, &setup.faults, &recorder)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut history = recorded.history;
    if let Some(processes) = processes {
        let mut theirs = processes.finish().await?;
        theirs.rebase(recorder.origin_unix_nanos());
        history.entries.extend(theirs.entries);
    }
    if let Err(err) = histories::clean_up(&hosts, &plan).await {
        eprintln!("warning: the check's keys were not all deleted: {err}");
    }
    let verdict = verdict_of(&history, &limits, args.strict);
    let report = CheckReport::new(
        &args.provider,
        &setup.backend,
        &plan,
        args.hosts,
        args.processes,
        recorded.elapsed,
        &history,
        recorded.events,
        verdict,
    );
    if let Some(dir) = &args.report_dir {
        report
            .write_dir(dir, &history)
            .with_context(|| format!("writing the report into {}", dir.display()))?;
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_markdown());
    }
    eprintln!("{}", report.summary_line());
    Ok(report.is_valid())
}

fn verdict_of(history: &History, limits: &kv_core::Limits, strict: bool) -> kv_check::Verdict {
    if strict {
        histories::strict(history, limits)
    } else {
        histories::check(history, limits)
    }
}

/// `--history FILE`: the verdict on a recorded history, with the limits a run uses.
fn recheck(path: &std::path::Path, strict: bool) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the history {}", path.display()))?;
    let history = History::from_jsonl(&text)
        .with_context(|| format!("parsing the history {}", path.display()))?;
    let verdict = verdict_of(&history, &histories::limits(), strict);
    print!("{verdict}");
    eprintln!(
        "{}: {} operations: {}",
        path.display(),
        history.entries.len(),
        histories::verdict_word(verdict.valid)
    );
    Ok(verdict.valid == kv_check::Validity::Valid)
}

/// Host processes: `wasi-kv run` of the workload component, each a client with its own host
/// (own connections, own request ids), reporting its operations as a progress log on stdout.
struct HostProcesses {
    children: Mutex<Vec<(u32, tokio::process::Child)>>,
    logs: Mutex<Vec<tokio::task::JoinHandle<String>>>,
    _component: tempfile::TempDir,
}

impl HostProcesses {
    async fn start(
        args: &CheckArgs,
        plan: &Plan,
        url: &str,
        namespace: &str,
    ) -> anyhow::Result<Arc<HostProcesses>> {
        let dir = tempfile::tempdir().context("a directory for the workload component")?;
        let component = dir.path().join("kv_history_guest.wasm");
        std::fs::write(&component, kv_conformance::guests::HISTORY_GUEST)
            .context("writing the workload component")?;
        let exe = std::env::current_exe().context("finding the wasi-kv executable")?;
        // The in-process hosts' operation timeout: the checker's horizon assumes it for all.
        let config = dir.path().join("check.toml");
        std::fs::write(
            &config,
            format!(
                "[limits]\noperation_timeout_ms = {}\n",
                histories::limits().operation_timeout.as_millis()
            ),
        )
        .context("writing the host processes' configuration")?;
        // Each process is one client with its share of the rate, over the run's time.
        let clients = args.hosts * args.clients + args.processes;
        let pace = Duration::from_secs_f64(f64::from(clients) / f64::from(plan.rate.max(1)));
        let ops = plan.max_ops / u64::from(clients).max(1) + 1;
        let mut children = Vec::new();
        let mut logs = Vec::new();
        for i in 0..args.processes {
            let host = args.hosts + i;
            let mut child = tokio::process::Command::new(&exe)
                .arg("run")
                .arg("--config")
                .arg(&config)
                .arg("--store")
                .arg(format!("default={}", with_namespace(url, namespace)))
                .arg("--time-limit")
                .arg(format!("{}s", plan.time.as_secs() + 60))
                .arg(&component)
                .args([
                    plan.workload.name().to_string(),
                    plan.keys.to_string(),
                    plan.seed.to_string(),
                    host.to_string(),
                    ops.to_string(),
                    plan.time.as_millis().to_string(),
                    pace.as_micros().to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting a host process")?;
            let mut stdout = child.stdout.take().context("the host process's stdout")?;
            logs.push(tokio::spawn(async move {
                let mut text = String::new();
                let _ = stdout.read_to_string(&mut text).await;
                text
            }));
            children.push((host, child));
        }
        Ok(Arc::new(HostProcesses {
            children: Mutex::new(children),
            logs: Mutex::new(logs),
            _component: dir,
        }))
    }

    /// Waits for every process and reads their histories.
    async fn finish(&self) -> anyhow::Result<History> {
        let children = std::mem::take(&mut *lock(&self.children));
        for (_, mut child) in children {
            let _ = child.wait().await;
        }
        let logs = std::mem::take(&mut *lock(&self.logs));
        let mut history = History::default();
        for log in logs {
            let text = log.await.unwrap_or_default();
            let theirs =
                History::from_progress_jsonl(&text).context("reading a host process's history")?;
            history.entries.extend(theirs.entries);
        }
        Ok(history)
    }
}

impl Crashable for HostProcesses {
    fn crash(&self) -> Result<String, String> {
        let mut children = lock(&self.children);
        for (host, child) in children.iter_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                child
                    .start_kill()
                    .map_err(|err| format!("killing host {host}: {err}"))?;
                return Ok(format!("host process h{host} killed (SIGKILL)"));
            }
        }
        Err("no host process is still running".to_string())
    }

    fn recover(&self) -> Result<String, String> {
        Ok("the killed host stays down".to_string())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `url` with `namespace=` set, so host processes use the namespace of this run's hosts.
fn with_namespace(url: &str, namespace: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}namespace={namespace}")
}
