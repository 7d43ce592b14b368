//! `wasi-kv check` end to end: host processes running the workload component beside the
//! in-process hosts, a host killed mid-run, and the refusals that keep faults on loopback.

use std::process::{Command, Output};

const WASI_KV: &str = env!("CARGO_BIN_EXE_wasi-kv");

fn wasi_kv(args: &[&str]) -> Output {
    Command::new(WASI_KV)
        .args(args)
        .env("WASI_KV_LOG", "error")
        .output()
        .expect("wasi-kv runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Two `wasi-kv run` processes of the workload component share a SQLite file with an
/// in-process host; one of them is killed with SIGKILL; the merged history is valid, and the
/// processes' operations are in it.
#[test]
fn host_processes_and_a_killed_host() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let report = dir.path().join("report");
    let output = wasi_kv(&[
        "check",
        "--provider",
        "sqlite",
        "--hosts",
        "1",
        "--clients",
        "2",
        "--processes",
        "2",
        "--nemesis",
        "kill-host",
        "--time",
        "6s",
        "--rate",
        "300",
        "--seed",
        "5",
        "--json",
        "--report-dir",
        report.to_str().expect("utf-8 path"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the report is JSON");
    assert_eq!(json["processes"], 2, "{json}");
    let events = json["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["action"] == "inject"
            && e["nemesis"] == "kill-host"
            && e["detail"].as_str().is_some_and(|d| d.contains("killed"))),
        "{events:?}"
    );
    let history = std::fs::read_to_string(report.join("history.jsonl")).expect("history");
    let hosts: std::collections::BTreeSet<u64> = history
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|entry| entry["process"]["host"].as_u64())
        .collect();
    assert_eq!(
        hosts.into_iter().collect::<Vec<_>>(),
        [0, 1, 2],
        "operations of the in-process host and both host processes"
    );

    // The recorded history checks again from its file; with one read changed to a value no one
    // wrote, it is invalid (exit code 1).
    let path = report.join("history.jsonl");
    let recheck = |file: &std::path::Path| {
        wasi_kv(&[
            "check",
            "--provider",
            "sqlite",
            "--history",
            file.to_str().expect("utf-8 path"),
        ])
    };
    let again = recheck(&path);
    assert!(again.status.success(), "{}", stderr(&again));
    let mut lines: Vec<String> = history.lines().map(str::to_string).collect();
    let read = lines
        .iter()
        .position(|line| line.contains("\"get\"") && line.contains("\"ok\":{\"value\":\""))
        .expect("a read that returned a value");
    let mut entry: serde_json::Value = serde_json::from_str(&lines[read]).expect("an entry");
    entry["outcome"]["ok"]["value"] = serde_json::Value::from("6e6f626f6479"); // "nobody"
    lines[read] = entry.to_string();
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n")).expect("write");
    let caught = recheck(&tampered);
    assert_eq!(caught.status.code(), Some(1), "{}", stderr(&caught));
    assert!(
        String::from_utf8_lossy(&caught.stdout).contains("never written"),
        "{}",
        String::from_utf8_lossy(&caught.stdout)
    );
}

/// Faults are injected only into backends `check` started on loopback: a store given by URL
/// gets `--nemesis none` or a refusal before anything connects.
#[test]
fn faults_are_refused_on_a_store_given_by_url() {
    for nemesis in ["partition", "crash", "drop-reply", "all"] {
        let output = wasi_kv(&[
            "check",
            "--provider",
            "redis",
            "--store",
            "redis://127.0.0.1:1/0",
            "--nemesis",
            nemesis,
        ]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{nemesis}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("fault proxy"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn bad_input_is_exit_code_2_with_a_reason() {
    for (args, says) in [
        (&["--provider", "nope"][..], "unknown provider"),
        (&["--provider", "memory", "--clients", "0"], "--clients"),
        (&["--provider", "memory", "--rate", "0"], "--rate"),
        (&["--provider", "memory", "--time", "2h"], "--time"),
        (
            &["--provider", "memory", "--processes", "1"],
            "in-memory store",
        ),
        (&["--provider", "memory", "--nemesis", "crash"], "crash"),
        (&["--provider", "redis"], "--emulator"),
        (
            &["--provider", "memory", "--workload", "bank"],
            "unknown workload",
        ),
    ] {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        let output = wasi_kv(&all);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}
