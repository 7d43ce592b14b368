//! End-to-end tests of the `wasi-kv` binary and of `run` in-process.

use std::process::Command;
use std::sync::Arc;

use kv_cli::run::{Output, RunOptions};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

mod common;

const WASI_KV: &str = env!("CARGO_BIN_EXE_wasi-kv");
const COUNTER: &str = kv_test_artifacts::COUNTER_EXAMPLE;

fn wasi_kv(args: &[&str]) -> std::process::Output {
    Command::new(WASI_KV)
        .args(args)
        .output()
        .expect("wasi-kv runs")
}

/// `run` options for the counter example: no arguments, no time limit.
fn counter_options() -> RunOptions {
    RunOptions {
        component: COUNTER.into(),
        args: vec![],
        envs: vec![],
        dirs: vec![],
        time_limit: None,
        memory_limit: kv_cli::run::DEFAULT_RUN_MEMORY_LIMIT,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn counter_example_counts_runs_on_one_store() {
    let config = kv_cli::load_config(None, &["default=memory:".to_string()]).unwrap();
    let stores = Arc::new(kv_cli::registry().build(&config).await.unwrap());
    let options = counter_options();
    for expected in [
        "this component has run 1 time\n",
        "this component has run 2 times\n",
    ] {
        let stdout = MemoryOutputPipe::new(4096);
        let code = kv_cli::run::run(&options, stores.clone(), Output::Capture(stdout.clone()))
            .await
            .unwrap();
        assert_eq!(code, 0);
        assert_eq!(String::from_utf8_lossy(&stdout.contents()), expected);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runner_compiles_once_and_runs_side_by_side() {
    let config = kv_cli::load_config(None, &["default=memory:".to_string()]).unwrap();
    let stores = Arc::new(kv_cli::registry().build(&config).await.unwrap());
    let runner = Arc::new(kv_cli::run::Runner::new(COUNTER.as_ref(), None).unwrap());
    let mut options = counter_options();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (runner, options, stores) = (runner.clone(), options.clone(), stores.clone());
            async move {
                let stdout = MemoryOutputPipe::new(4096);
                let code = runner
                    .run(&options, stores, Output::Capture(stdout.clone()))
                    .await
                    .unwrap();
                assert_eq!(code, 0);
                String::from_utf8_lossy(&stdout.contents()).into_owned()
            }
        })
        .collect();
    let mut outputs = futures::future::join_all(runs).await;
    outputs.sort();
    // Four instances of one compiled component, one store: each run saw its own count.
    assert_eq!(
        outputs,
        [1, 2, 3, 4].map(|n| format!(
            "this component has run {n} time{}\n",
            if n == 1 { "" } else { "s" }
        ))
    );
    // A runner compiled without epoch checks cannot enforce a time limit: refused, not ignored.
    options.time_limit = Some(std::time::Duration::from_secs(5));
    let err = runner
        .run(
            &options,
            stores.clone(),
            Output::Capture(MemoryOutputPipe::new(64)),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("without a time limit"), "{err:#}");
    // A runner compiled with a time limit applies it to a run that names none.
    let limited = Arc::new(
        kv_cli::run::Runner::new(COUNTER.as_ref(), Some(std::time::Duration::from_secs(30)))
            .unwrap(),
    );
    options.time_limit = None;
    let stdout = MemoryOutputPipe::new(4096);
    let code = limited
        .run(&options, stores, Output::Capture(stdout.clone()))
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        String::from_utf8_lossy(&stdout.contents()),
        "this component has run 5 times\n"
    );
}

#[test]
fn run_prints_the_count_and_passes_env() {
    let out = wasi_kv(&["run", COUNTER]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "this component has run 1 time\n"
    );
    // The store named by KV_STORE must exist: `other` is not configured.
    let out = wasi_kv(&["run", "--env", "KV_STORE=other", COUNTER]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NoSuchStore"));
    let out = wasi_kv(&[
        "run",
        "--store",
        "other=memory:",
        "--env",
        "KV_STORE=other",
        COUNTER,
    ]);
    assert!(out.status.success(), "{out:?}");
}

/// `--seed` presets keys before the component runs: wasmtime's
/// `-S keyvalue-in-memory-data=KEY=VALUE`, for any store.
#[test]
fn seeds_are_written_before_the_component_starts() {
    let out = wasi_kv(&["run", "--seed", "runs=41", COUNTER]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "this component has run 42 times\n"
    );
    let out = wasi_kv(&[
        "run",
        "--store",
        "other=memory:?access=read-only",
        "--seed",
        "other::runs=9",
        "--env",
        "KV_STORE=other",
        COUNTER,
    ]);
    // Seeded into a read-only store, which the component itself may not write.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("AccessDenied"));
    for bad in [["--seed", "nowhere::k=v"], ["--seed", "k=@/does/not/exist"]] {
        let out = wasi_kv(&["run", bad[0], bad[1], COUNTER]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
}

/// A SQLite file keeps the count across processes, with nothing to install; so does
/// `wasi-kv conformance --provider sqlite`, on a temporary file.
#[test]
fn sqlite_keeps_data_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("default=sqlite:{}", dir.path().join("kv.db").display());
    for expected in [
        "this component has run 1 time\n",
        "this component has run 2 times\n",
    ] {
        let out = wasi_kv(&["run", "--store", &store, COUNTER]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    }
    let out = wasi_kv(&[
        "conformance",
        "--provider",
        "sqlite",
        "--case",
        "list_keys",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Spin application's runtime config opens here unchanged: its `type = "spin"` default
/// store is a SQLite file beside the config, so the count persists across runs.
#[test]
fn spin_runtime_config_stores_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runtime-config.toml");
    std::fs::write(
        &config,
        "[key_value_store.default]\ntype = \"spin\"\npath = \".spin/sqlite_key_value.db\"\n",
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    for expected in [
        "this component has run 1 time\n",
        "this component has run 2 times\n",
    ] {
        let out = wasi_kv(&["run", "--spin-runtime-config", &config, COUNTER]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    }
    assert!(dir.path().join(".spin/sqlite_key_value.db").exists());
    // `wasi-kv store` reads the same store through Spin's file.
    let out = wasi_kv(&["store", "get", "--spin-runtime-config", &config, "runs"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"2");
    // A `type = "redis"` store reaches the real server.
    let required = std::env::var("KV_REQUIRE").unwrap_or_default();
    if required.split(',').any(|name| name.trim() == "redis")
        || kv_testkit::emulator::installed("redis")
    {
        let server = kv_testkit::emulator::RedisServer::start().expect("redis-server starts");
        let redis_config = dir.path().join("redis.toml");
        std::fs::write(
            &redis_config,
            format!(
                "[key_value_store.cache]\ntype = \"redis\"\nurl = \"{}\"\n",
                server.url()
            ),
        )
        .unwrap();
        let redis_config = redis_config.to_string_lossy().into_owned();
        for expected in [
            "this component has run 1 time\n",
            "this component has run 2 times\n",
        ] {
            let out = wasi_kv(&[
                "run",
                "--spin-runtime-config",
                &redis_config,
                "--env",
                "KV_STORE=cache",
                COUNTER,
            ]);
            assert!(out.status.success(), "{out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
        }
    }
    std::fs::write(
        dir.path().join("bad.toml"),
        "[key_value_store.x]\ntype = \"etcd\"\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.toml").to_string_lossy().into_owned();
    let out = wasi_kv(&["run", "--spin-runtime-config", &bad, COUNTER]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn bad_configuration_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let unknown_key = write(
        "unknown-key.toml",
        "[stores.a]\nprovider = \"memory\"\ncolour = \"blue\"\n",
    );
    let missing = write("missing.toml", "[stores.a]\nnamespace = \"x\"\n");
    let bad_limit = write("limit.toml", "[limits]\nmax_batch_entries = -1\n");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--store", "a=nosuch://x"],
            "unknown provider \"nosuch\"",
        ),
        (vec!["--store", "a=::not a url"], "malformed URL"),
        (vec!["--store", "justaname"], "expected NAME=URL"),
        (vec!["--config", &unknown_key], "unknown field `colour`"),
        (vec!["--config", &missing], "missing field `provider`"),
        (
            vec!["--config", &bad_limit],
            "limits.max_batch_entries: must be a positive integer",
        ),
        (vec!["--config", "/does/not/exist.toml"], "No such file"),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["run"];
        args.extend(flags.iter().copied());
        args.push(COUNTER);
        let out = wasi_kv(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// `serve` takes `[outbound]` from the same `--config` file as the stores: an entry it cannot
/// parse, or a key `[outbound]` does not have, stops it before it listens.
#[test]
fn serve_reads_outbound_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        (
            "[outbound]\nallowed_hosts = [\"ftp://x\"]\n",
            "allowed outbound host \"ftp://x\"",
        ),
        (
            "[outbound]\nallow = []\n",
            "outbound.allow: unknown field `allow`",
        ),
    ] {
        let path = dir.path().join("wasi-kv.toml");
        std::fs::write(&path, text).unwrap();
        let config = path.to_string_lossy().into_owned();
        let out = wasi_kv(&[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--config",
            &config,
            COUNTER,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
}

#[test]
fn conformance_json_matches_the_documented_format() {
    let dir = tempfile::tempdir().unwrap();
    let report_dir = dir.path().to_string_lossy().into_owned();
    let out = wasi_kv(&[
        "conformance",
        "--provider",
        "memory",
        "--format",
        "json",
        "--report-dir",
        &report_dir,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    for field in [
        "wasmtime_version",
        "wit_version",
        "os",
        "arch",
        "commit",
        "started_at",
    ] {
        assert!(
            json[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}"
        );
    }
    let results = json["results"].as_array().unwrap();
    assert!(results.len() >= 50, "{} cases", results.len());
    for result in results {
        assert_eq!(result["provider"], "memory");
        assert!(result["case"].is_string());
        assert_eq!(result["outcome"], "passed", "{result}");
        assert!(result["duration_ms"].is_u64());
    }
    for file in ["report.json", "report.xml", "report.md"] {
        assert!(dir.path().join(file).exists(), "{file}");
    }
    let markdown = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(markdown.contains("| wasmtime | 48."), "{markdown}");
}

/// `--emulator` starts each provider's emulator, runs the selected cases and stops it. The
/// whole suite runs once per provider in the conformance harness; here the CLI path is
/// checked with two cases (one of them a concurrent worker case). Providers in `KV_REQUIRE`
/// must run; others are skipped when their emulator is not installed.
#[test]
fn conformance_emulator_runs_selected_cases() {
    let required = std::env::var("KV_REQUIRE").unwrap_or_default();
    for emulator in kv_testkit::emulator::Emulator::ALL {
        let provider = emulator.provider();
        let is_required = required.split(',').any(|name| name.trim() == provider);
        if !is_required && !emulator.installed() {
            eprintln!("skipping {provider}: its emulator is not installed");
            continue;
        }
        let out = wasi_kv(&[
            "conformance",
            "--provider",
            provider,
            "--emulator",
            "--case",
            "increment_concurrent_exact",
            "--case",
            "isolation_listing",
            "--format",
            "json",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{provider}: {stderr}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let results = json["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "{provider}: {json}");
        assert!(
            results.iter().all(|r| r["outcome"] == "passed"),
            "{provider}: {json}"
        );
    }
    let out = wasi_kv(&["conformance", "--provider", "memory", "--case", "no-such"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `wasi-kv conformance --faults lossy` on `provider` (its emulator unless memory) for
/// `cases`: the JSON results, each asserted passed; `None` when the emulator is not installed
/// and `KV_REQUIRE` does not name it.
fn lossy_conformance(provider: &str, cases: &[&str]) -> Option<Vec<serde_json::Value>> {
    let required = std::env::var("KV_REQUIRE").unwrap_or_default();
    let is_required = required.split(',').any(|name| name.trim() == provider);
    if provider != "memory" && !is_required && !kv_testkit::emulator::installed(provider) {
        return None;
    }
    let mut args = vec!["conformance", "--provider", provider, "--faults", "lossy"];
    if provider != "memory" {
        args.push("--emulator");
    }
    for case in cases {
        args.extend(["--case", case]);
    }
    args.extend(["--format", "json"]);
    let out = wasi_kv(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{provider}: {stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = json["results"].as_array().unwrap().clone();
    assert!(
        results.iter().all(|r| r["outcome"] == "passed"),
        "{provider}: {json}"
    );
    Some(results)
}

/// `--faults lossy` runs the suite while every 10th reply is lost after the backend executed
/// the request; the concurrent increment and CAS cases still end exact.
#[test]
fn conformance_runs_through_the_lossy_fault_profile() {
    for provider in ["memory", "redis"] {
        let Some(results) = lossy_conformance(
            provider,
            &[
                "increment_concurrent_exact",
                "cas_concurrent_loops_exact",
                "set_many_above_native_limits",
            ],
        ) else {
            continue;
        };
        // The batch case runs a second time, built against Spin's `get-many` shape.
        assert_eq!(results.len(), 4, "{provider}: {results:?}");
        assert!(
            results
                .iter()
                .any(|r| r["case"] == "spin-shape/set_many_above_native_limits"),
            "{results:?}"
        );
    }
    // A configured (remote) store cannot be put behind the proxy.
    let out = wasi_kv(&[
        "conformance",
        "--provider",
        "redis",
        "--store",
        "r=redis://127.0.0.1:1/0",
        "--faults",
        "lossy",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// The watch cases under `--faults lossy`: every 10th reply lost, of the runner's writes and of
/// the watcher's feed reads alike (on memory in process, on Cloud Storage and DynamoDB through
/// the fault proxy). A lost reply of a listing's read-back failed every listing on Cloud
/// Storage and the watcher stopped; one of DescribeStream failed a watcher's start; a write
/// applied twice after a lost reply is two changes, not a redelivery.
#[test]
fn watch_cases_run_through_the_lossy_fault_profile() {
    for provider in ["memory", "gcs", "dynamodb"] {
        let cases = [
            "watch/every_change_is_delivered_in_order",
            "watch/a_watcher_stopped_abruptly_resumes_from_its_checkpoint",
        ];
        if let Some(results) = lossy_conformance(provider, &cases) {
            assert_eq!(results.len(), 2, "{provider}: {results:?}");
        }
    }
}

/// draft2's `get-many` exists in two shapes under one version string. A component built
/// against either links: the host inspects its imports. The tagged linker alone refuses the
/// Spin-shaped component, which is what users of other hosts hit.
#[test]
fn both_draft2_get_many_shapes_link() {
    use kv_host::BatchShape;
    use wasmtime::component::{Component, Linker};
    let engine = wasmtime::Engine::default();
    let tagged = Component::new(&engine, kv_conformance::guests::CONFORMANCE_GUEST).unwrap();
    let spin = Component::new(&engine, kv_conformance::guests::CONFORMANCE_GUEST_SPIN).unwrap();
    assert_eq!(BatchShape::of(&engine, &tagged), BatchShape::Tagged);
    assert_eq!(BatchShape::of(&engine, &spin), BatchShape::Spin);
    struct State {
        table: wasmtime::component::ResourceTable,
        wasi: wasmtime_wasi::WasiCtx,
        kv: kv_host::KvCtx,
    }
    impl wasmtime_wasi::WasiView for State {
        fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
            wasmtime_wasi::WasiCtxView {
                ctx: &mut self.wasi,
                table: &mut self.table,
            }
        }
    }
    impl kv_host::WasiKvView for State {
        fn kv(&mut self) -> kv_host::KvView<'_> {
            kv_host::KvView::new(&self.kv, &mut self.table)
        }
    }
    for (component, shape) in [(&tagged, "tagged"), (&spin, "spin")] {
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        kv_host::add_to_linker_for(&mut linker, component).unwrap();
        linker
            .instantiate_pre(component)
            .unwrap_or_else(|err| panic!("{shape}: {err:?}"));
    }
    let mut tagged_only = Linker::<State>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut tagged_only).unwrap();
    kv_host::add_to_linker(&mut tagged_only).unwrap();
    let err = tagged_only
        .instantiate_pre(&spin)
        .err()
        .expect("the shapes differ");
    assert!(format!("{err:?}").contains("get-many"), "{err:?}");
}

/// Command components built the way other runtimes' users build them run unchanged, with
/// seeded data: one against Spin's draft2 WIT (the PR #55 `get-many` shape, opening
/// `default`), one against wasmtime's `0.2.0-draft` (opening `""`).
#[test]
fn commands_built_for_spin_and_wasmtime_run_unchanged() {
    use kv_test_artifacts::{INTEROP_DRAFT_COMMAND, INTEROP_SPIN_COMMAND};
    for component in [INTEROP_SPIN_COMMAND, INTEROP_DRAFT_COMMAND] {
        let out = wasi_kv(&[
            "run",
            "--seed",
            "greeting=hello",
            "--seed",
            "runs=6",
            component,
        ]);
        assert!(out.status.success(), "{component}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "greeting: hello\nmissing: <none>\nruns: 7\n",
            "{component}"
        );
    }
}

/// A WASIp3 command (`wasi:cli/run@0.3.0`, an async `run`, built with wit-bindgen's async
/// support) runs on `wasi-kv run` with wasi:keyvalue, on memory and on Redis, with seeded data:
/// every operation answers as on WASIp2. It used to be refused at load ("`task.return`
/// requires the component model async feature").
#[test]
fn a_wasip3_command_runs_with_keyvalue() {
    let (_redis, backends) = common::memory_and_redis();
    for (provider, url) in backends {
        let namespace = format!("p3-{:08x}", rand::random::<u32>());
        let store = common::namespaced("default", &url, &namespace);
        let out = wasi_kv(&[
            "run",
            "--store",
            &store,
            "--seed",
            "greeting=hello",
            kv_test_artifacts::P3_COMMAND,
        ]);
        assert!(out.status.success(), "{provider}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "greeting: hello\nanswer: 42\nexists: true\ncounter: 5\n\
             get-many: answer=42 <none>\nkeys: answer,counter,greeting\nafter delete: false\n",
            "{provider}"
        );
    }
}

/// A WASIp3 command built with the current Spin SDK (spin-sdk 6.0.0, whose key-value API
/// imports Spin 4's `spin:key-value@3.0.0`: async calls, `get-keys` as a stream) runs on
/// `wasi-kv run` on memory and Redis with seeded data, and gets Spin's errors: `no-such-store`,
/// `access-denied` (a store with access none; a write to a read-only one) and
/// `store-table-full`. It used to fail to instantiate: "component imports instance
/// `spin:key-value/key-value@3.0.0`, but a matching implementation was not found".
#[test]
fn a_spin_sdk_6_command_runs_with_spin_4_key_value() {
    use kv_test_artifacts::INTEROP_SPIN_SDK6_COMMAND as COMMAND;
    let (_redis, backends) = common::memory_and_redis();
    for (provider, url) in backends {
        let namespace = format!("spin6-{:08x}", rand::random::<u32>());
        let store = common::namespaced("default", &url, &namespace);
        let run = |args: &[&str]| {
            let mut all = vec!["run", "--store", &store];
            all.extend_from_slice(&common::SPIN_FIXTURE_STORES);
            all.push(COMMAND);
            all.extend_from_slice(args);
            let out = wasi_kv(&all);
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        assert_eq!(
            run(&[]),
            (
                true,
                "greeting: hello\nanswer: 42\nexists: true\nkeys: answer,greeting\n\
                 after delete: false\nmissing: <none>\n"
                    .to_string()
            ),
            "{provider}"
        );
        assert_eq!(
            run(&["open", "nope"]),
            (false, "error: no-such-store\n".into())
        );
        assert_eq!(
            run(&["open", "locked"]),
            (false, "error: access-denied\n".into())
        );
        assert_eq!(run(&["open", "reference"]), (true, "opened\n".into()));
        assert_eq!(
            run(&["set", "reference"]),
            (false, "error: access-denied\n".into())
        );
        assert_eq!(
            run(&["open-all"]),
            (false, "error: store-table-full\n".into())
        );
    }
    // Unread key streams stay charged to the instance's `max_held_bytes`: with 64 KiB and 200
    // keys, one answer is listed, and asking 100 times without reading fails once the
    // unread answers fill the budget (instead of holding host memory without limit).
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from(
        "[limits]\nmax_held_bytes = 65536\n[stores.default]\nurl = \"memory:\"\n\
         [stores.default.seed]\n",
    );
    for index in 0..200 {
        config.push_str(&format!("\"key-{index:05}\" = \"v\"\n"));
    }
    let path = dir.path().join("wasi-kv.toml");
    std::fs::write(&path, config).unwrap();
    let path = path.to_string_lossy().into_owned();
    let out = wasi_kv(&["run", "--config", &path, COMMAND, "hoard", "1"]);
    assert_eq!(
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
        ),
        (true, "hoarded 1; the last lists 200 keys\n".to_string())
    );
    let out = wasi_kv(&["run", "--config", &path, COMMAND, "hoard", "100"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && stdout.starts_with("error: other: batch-too-large: get-keys"),
        "100 unread answers: {out:?}"
    );
}

/// The suite as a `wasi:cli` command runs through `wasi-kv run` like through any other host:
/// every case that needs no host orchestration passes on memory and on Redis, and the summary
/// line is the last one.
#[test]
fn the_portable_suite_passes_through_run() {
    let (_redis, backends) = common::memory_and_redis();
    let dir = tempfile::tempdir().unwrap();
    for (provider, url) in backends {
        let config = dir.path().join(format!("{provider}.toml"));
        let namespace = |name: &str| format!("portable-{provider}-{name}");
        std::fs::write(
            &config,
            format!(
                "[limits]\nmax_value_bytes = 4194304\n\
                 [stores.default]\nurl = \"{url}\"\nnamespace = \"{}\"\n\
                 [stores.peer]\nurl = \"{url}\"\nnamespace = \"{}\"\n\
                 [stores.ro]\nurl = \"{url}\"\nnamespace = \"{}\"\naccess = \"read-only\"\n\
                 [stores.none]\nurl = \"{url}\"\naccess = \"none\"\n",
                namespace("main"),
                namespace("peer"),
                namespace("main"),
            ),
        )
        .unwrap();
        let config = config.to_string_lossy().into_owned();
        // The full portable suite, and its build for hosts that link only Spin's draft2.
        for suite in [
            kv_test_artifacts::PORTABLE_SUITE,
            kv_test_artifacts::PORTABLE_SPIN_SUITE,
        ] {
            let mut args = vec![
                "run",
                "--config",
                &config,
                suite,
                "--peer",
                "peer",
                "--read-only",
                "ro",
                "--denied",
                "none",
                "--max-value-bytes",
                "4194304",
                "--max-batch-entries",
                "10000",
            ];
            let mut skipped = 3;
            if provider == "redis" {
                // Declared in the redis profile: SCAN may repeat keys, and neither a rewrite
                // with the same bytes nor a write and delete of a missing key is a change to
                // Redis (no per-key version).
                args.extend([
                    "--list-may-repeat",
                    "--skip",
                    "cas_detects_rewrite_of_same_value",
                    "--skip",
                    "cas_missing_key_set_and_deleted_meanwhile_fails",
                ]);
                skipped += 2;
            }
            let out = wasi_kv(&args);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{provider} {suite}: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let summary = stdout.lines().last().unwrap_or_default();
            assert!(
                summary.ends_with(&format!(" 0 failed, {skipped} skipped")),
                "{provider} {suite}: {summary}"
            );
            assert!(!stdout.contains("FAIL"), "{provider} {suite}: {stdout}");
        }

        // The draft-only variant, for hosts that link only 0.2.0-draft: it opens `""`.
        let store = format!("default={url}?namespace=portable-draft-{provider}");
        let out = wasi_kv(&[
            "run",
            "--store",
            &store,
            kv_test_artifacts::PORTABLE_DRAFT_SUITE,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{provider} draft: {stdout}");
        assert_eq!(
            stdout.lines().last(),
            Some("22 passed, 0 failed, 0 skipped"),
            "{provider} draft: {stdout}"
        );
    }
    // A failing case makes the command fail: here the value limit it is told is wrong.
    let out = wasi_kv(&[
        "run",
        kv_test_artifacts::PORTABLE_SUITE,
        "--max-value-bytes",
        "1000",
        "--case",
        "value_over_maximum_rejected",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 passed, 1 failed, 0 skipped"));
}

#[test]
fn conformance_rejects_unknown_provider() {
    let out = wasi_kv(&["conformance", "--provider", "etcd"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown provider \"etcd\""));
}

/// The counter example through the real binary on Redis: separate processes share the count,
/// with the store given on the command line and in a config file. Needs redis-server
/// (scripts/setup.sh installs it); a missing server is a failure, not a skip.
#[test]
fn counter_example_on_redis_across_processes() {
    let server = kv_testkit::emulator::RedisServer::start()
        .unwrap_or_else(|err| panic!("{err}; install redis-server (scripts/setup.sh)"));
    let store = format!("default={}?namespace=counter-test", server.url());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasi-kv.toml");
    std::fs::write(
        &config,
        format!(
            "[stores.default]\nurl = \"{}\"\nnamespace = \"counter-test\"\nresponse_timeout_ms = 2000\n",
            server.url()
        ),
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let runs = [
        (
            vec!["run", "--store", &store, COUNTER],
            "this component has run 1 time\n",
        ),
        (
            vec!["run", "--store", &store, COUNTER],
            "this component has run 2 times\n",
        ),
        (
            vec!["run", "--config", &config, COUNTER],
            "this component has run 3 times\n",
        ),
    ];
    for (args, expected) in runs {
        let out = wasi_kv(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    }
}

/// The evidence page as a reader sees it: a real conformance run and a real history check
/// merged by `wasi-kv report`, rendered by headless Chromium. The DOM has one passing cell per
/// case, links to the rules, the history verdict; the screenshot is not blank and shows the
/// green of passing cells. Chromium runs with its network off (a proxy on a dead loopback
/// port, background services disabled) on a file:// page with no external resource.
#[test]
fn report_page_renders_in_chromium() {
    if !kv_testkit::tool_required_or_installed("chromium") {
        eprintln!("skipping: chromium is not installed");
        return;
    }
    let succeed = |args: &[&str]| {
        let out = wasi_kv(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");
    let memory = reports.join("memory");
    succeed(&[
        "conformance",
        "--provider",
        "memory",
        "--report-dir",
        memory.to_str().unwrap(),
    ]);
    assert!(
        memory.join("report.html").is_file(),
        "conformance writes report.html"
    );
    let cases = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(memory.join("report.json")).unwrap(),
    )
    .unwrap()["results"]
        .as_array()
        .unwrap()
        .len();
    let history = reports.join("histories").join("memory");
    succeed(&[
        "check",
        "--provider",
        "memory",
        "--time",
        "2s",
        "--report-dir",
        history.to_str().unwrap(),
    ]);
    succeed(&["report", reports.to_str().unwrap()]);
    let page = reports.join("index.html");
    let url = format!("file://{}", page.display());

    let chromium = |extra: &[&str]| {
        let profile = tempfile::tempdir().unwrap();
        let output = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--proxy-server=127.0.0.1:9",
                "--window-size=1280,1600",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs");
        assert!(
            output.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    let dom = String::from_utf8(chromium(&["--dump-dom"])).unwrap();
    assert_eq!(
        dom.matches("<td class=\"pass\">✓</td>").count(),
        cases,
        "one passing cell per case"
    );
    assert!(dom.contains("docs/semantics.md#s1-keys"), "rule links");
    assert!(dom.contains("<h2 id=\"histories\">"), "the history checks");
    assert!(
        dom.contains("class=\"pass\">valid</td>"),
        "the history verdict"
    );

    let shot = dir.path().join("page.png");
    chromium(&[&format!("--screenshot={}", shot.display())]);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let channels = frame.color_type.samples();
    let rgb = pixels[..frame.buffer_size()].chunks(channels);
    let (mut inked, mut green, mut total) = (0usize, 0usize, 0usize);
    for pixel in rgb {
        total += 1;
        if pixel[..3].iter().any(|&c| c < 200) {
            inked += 1;
        }
        // The passing cells' background, #d9f2d9.
        if pixel[..3] == [0xd9, 0xf2, 0xd9] {
            green += 1;
        }
    }
    assert!(
        inked * 100 > total,
        "the screenshot is blank: {inked} of {total} pixels inked"
    );
    assert!(
        green * 100 > total,
        "no passing cells visible: {green} of {total} pixels"
    );
}
