//! `wasi-kv store` as an operator runs it: every command on every provider's real backend, bad
//! input refused with exit code 2 and nothing written, and copies between providers killed
//! half-way, resumed and verified.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

use kv_testkit::emulator::{Emulator, Started};
use kv_testkit::provider_tests::{TestResult, awkward_keys, check};
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{Value, json};

const WASI_KV: &str = env!("CARGO_BIN_EXE_wasi-kv");

/// Keys in the copy tests.
const COPY_KEYS: usize = 10_000;

/// `wasi-kv store ARGS`, with no cloud reachable by accident.
fn store_command(args: &[&str]) -> Command {
    let mut command = Command::new(WASI_KV);
    command
        .arg("store")
        .args(args)
        .env("COSMOS_DISABLE_IMDS", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("WASI_KV_LOG", "warn");
    command
}

fn run(args: &[&str]) -> Result<Output, Failed> {
    store_command(args)
        .output()
        .map_err(|err| Failed::from(format!("cannot run wasi-kv: {err}")))
}

/// Runs and expects exit code 0; returns stdout.
fn ok(args: &[&str]) -> Result<Vec<u8>, Failed> {
    let output = run(args)?;
    check(
        output.status.success(),
        format!(
            "wasi-kv store {args:?}: {}\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )?;
    Ok(output.stdout)
}

fn ok_text(args: &[&str]) -> Result<String, Failed> {
    Ok(String::from_utf8_lossy(&ok(args)?).into_owned())
}

/// Runs and expects exit code `code` with `message` on stderr.
fn fails(args: &[&str], code: i32, message: &str) -> TestResult {
    let output = run(args)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    check(
        output.status.code() == Some(code) && stderr.contains(message),
        format!(
            "wasi-kv store {args:?}: expected exit code {code} and {message:?}, got {} and {stderr:?}",
            output.status
        ),
    )
}

/// An export file's records by key.
fn records(text: &str) -> Result<BTreeMap<String, Value>, Failed> {
    text.lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line)
                .map_err(|err| Failed::from(format!("{line:?}: {err}")))?;
            let key = record["key"].as_str().ok_or("a record without a key")?;
            Ok((key.to_string(), record))
        })
        .collect()
}

fn write_lines(path: &Path, records: impl IntoIterator<Item = Value>) -> TestResult {
    let text: String = records
        .into_iter()
        .map(|record| format!("{record}\n"))
        .collect();
    std::fs::write(path, text).map_err(|err| Failed::from(err.to_string()))
}

/// Every command on store `s` of `config` (and `s2`, another namespace of the same backend).
fn commands(config: &Path, dir: &Path) -> TestResult {
    let config = config.to_str().ok_or("config path")?;
    let on = |store: &str, args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        all.splice(
            1..1,
            ["--config", config, "--bucket", store].map(String::from),
        );
        all
    };
    let refs = |args: &[String]| -> Vec<String> { args.to_vec() };
    let call = |store: &str, args: &[&str]| -> Result<Vec<u8>, Failed> {
        let args = refs(&on(store, args));
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let call_fails = |store: &str, args: &[&str], code: i32, message: &str| -> TestResult {
        let args = refs(&on(store, args));
        fails(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            code,
            message,
        )
    };

    let binary = dir.join("binary");
    std::fs::write(&binary, [0xff, 0x00, 0xfe]).map_err(|err| Failed::from(err.to_string()))?;
    let at_binary = format!("@{}", binary.display());
    call("s", &["set", "text", "héllo wörld"])?;
    call("s", &["set", "bytes", &at_binary])?;
    call("s", &["set", "at", "@@literal"])?;
    call("s", &["set", "expiring", "soon", "--ttl", "1h"])?;
    check(call("s", &["incr", "n", "5"])? == b"5\n", "incr 5")?;
    check(call("s", &["incr", "n", "-2"])? == b"3\n", "incr -2")?;
    check(
        call("s", &["get", "text"])? == "héllo wörld".as_bytes(),
        "get text",
    )?;
    check(
        call("s", &["get", "bytes"])? == [0xff, 0x00, 0xfe],
        "get bytes",
    )?;
    check(call("s", &["get", "at"])? == b"@literal", "get @@")?;
    call_fails("s", &["get", "missing"], 1, "no such key")?;

    let listed = String::from_utf8_lossy(&call("s", &["list"])?).into_owned();
    let mut keys: Vec<&str> = listed.lines().collect();
    keys.sort_unstable();
    check(
        keys == ["at", "bytes", "expiring", "n", "text"],
        format!("list: {keys:?}"),
    )?;
    check(
        call("s", &["list", "--prefix", "te"])? == b"text\n",
        "list --prefix",
    )?;
    check(
        String::from_utf8_lossy(&call("s", &["list", "--limit", "2"])?)
            .lines()
            .count()
            == 2,
        "list --limit 2",
    )?;

    // Export, then import into s2: the same keys, values and TTLs.
    let exported = dir.join("s.jsonl");
    let exported_arg = exported.to_str().ok_or("path")?;
    call("s", &["export", "--output", exported_arg])?;
    let text = std::fs::read_to_string(&exported).map_err(|err| Failed::from(err.to_string()))?;
    let first = records(&text)?;
    check(first.len() == 5, format!("export: {text}"))?;
    check(first["text"]["value"] == "héllo wörld", "text as text")?;
    check(first["bytes"]["value_base64"] == "/wD+", "bytes as base64")?;
    let ttl = first["expiring"]["ttl_ms"].as_u64().unwrap_or(0);
    check(
        ttl > 3_500_000 && ttl <= 3_600_000,
        format!("the TTL left: {ttl} ms"),
    )?;
    check(
        first["text"].get("ttl_ms").is_none(),
        "no TTL on a key without one",
    )?;
    let imported = String::from_utf8_lossy(&call("s2", &["import", exported_arg])?).into_owned();
    check(imported.contains("imported 5 keys"), imported)?;
    let second = records(&String::from_utf8_lossy(&call("s2", &["export"])?))?;
    check(
        second.keys().eq(first.keys())
            && second.iter().all(|(key, record)| {
                record.get("value") == first[key].get("value")
                    && record.get("value_base64") == first[key].get("value_base64")
                    && record.get("ttl_ms").is_some() == first[key].get("ttl_ms").is_some()
            }),
        format!("imported {second:?}, exported {first:?}"),
    )?;
    let verified =
        String::from_utf8_lossy(&ok(&["verify", "--config", config, "s", "s2"])?).into_owned();
    check(verified.contains("verify: equal"), verified)?;

    // Awkward keys and every byte value survive an export and an import.
    let awkward = dir.join("awkward.jsonl");
    write_lines(
        &awkward,
        awkward_keys().into_iter().enumerate().map(|(index, key)| {
            json!({"key": key, "value_base64": base64_of(&[index as u8, 0, 0xff, b'\n'])})
        }),
    )?;
    call("s2", &["import", awkward.to_str().ok_or("path")?])?;
    let round = records(&String::from_utf8_lossy(&call("s2", &["export"])?))?;
    for (index, key) in awkward_keys().into_iter().enumerate() {
        check(
            round
                .get(&key)
                .and_then(|record| record["value_base64"].as_str())
                == Some(base64_of(&[index as u8, 0, 0xff, b'\n']).as_str()),
            format!("awkward key {key:?} after export: {:?}", round.get(&key)),
        )?;
    }

    call("s", &["delete", "text"])?;
    call("s", &["delete", "text"])?;
    call_fails("s", &["get", "text"], 1, "no such key")?;

    // Bad input: exit code 2, a classified reason, nothing written.
    let long_key = "k".repeat(1025);
    call_fails("s", &["set", &long_key, "v"], 2, "invalid-key")?;
    call_fails("s", &["set", "k", "v", "--ttl", "0s"], 2, "more than zero")?;
    call_fails("s", &["set", "k", "@/nonexistent/file"], 2, "cannot read")?;
    call_fails("s", &["incr", "bytes"], 2, "not-an-integer")?;
    call_fails("ro", &["set", "k", "v"], 2, "access-denied")?;
    call_fails("nope", &["get", "k"], 2, "no-such-store")?;
    let bad = dir.join("bad.jsonl");
    write_lines(
        &bad,
        [
            json!({"key": "fine-1", "value": "1"}),
            json!({"key": "fine-2", "value": "2"}),
            json!({"key": "k".repeat(1025), "value": "3"}),
        ],
    )?;
    call_fails(
        "s",
        &["import", bad.to_str().ok_or("path")?],
        2,
        "bad.jsonl:3: ",
    )?;
    call_fails("s", &["get", "fine-1"], 1, "no such key")?;
    Ok(())
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A config with stores `s`, `s2` (another namespace) and `ro` (read-only) at `url`.
fn write_config(dir: &Path, url: &str) -> Result<std::path::PathBuf, Failed> {
    let path = dir.join("wasi-kv.toml");
    let text = format!(
        "[stores.s]\nurl = {url:?}\n[stores.s2]\nurl = {url:?}\n\
         [stores.ro]\nurl = {url:?}\naccess = \"read-only\"\n"
    );
    std::fs::write(&path, text).map_err(|err| Failed::from(err.to_string()))?;
    Ok(path)
}

fn tempdir() -> Result<tempfile::TempDir, Failed> {
    tempfile::tempdir().map_err(|err| Failed::from(err.to_string()))
}

fn commands_on(emulator: Emulator) -> TestResult {
    let started = emulator.start()?;
    let dir = tempdir()?;
    let config = write_config(dir.path(), &started.store_url)?;
    commands(&config, dir.path())
}

fn commands_on_sqlite() -> TestResult {
    let dir = tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("kv.db").display());
    let config = write_config(dir.path(), &url)?;
    commands(&config, dir.path())
}

/// Memory stores live as long as the process: seeds and a read in one command.
fn commands_on_memory() -> TestResult {
    let got = ok(&["get", "--seed", "k=v", "k"])?;
    check(got == b"v", "get of a seeded key")?;
    let exported = ok_text(&["export", "--seed", "a=1", "--seed", "b=2"])?;
    check(
        exported == "{\"key\":\"a\",\"value\":\"1\"}\n{\"key\":\"b\",\"value\":\"2\"}\n",
        exported,
    )?;
    let copied = ok_text(&[
        "copy",
        "--store",
        "x=memory:",
        "--store",
        "y=memory:",
        "--seed",
        "x::a=1",
        "--seed",
        "x::b=2",
        "x",
        "y",
    ])?;
    check(
        copied.contains("copied 2 keys") && copied.contains("verify: equal"),
        copied,
    )?;
    fails(
        &["get", "--store", "a=memory:", "--store", "b=memory:", "k"],
        2,
        "choose one with --bucket",
    )?;
    fails(&["verify", "a", "b"], 2, "no store named \"a\"")
}

/// Writes `COPY_KEYS` keys into `src` of `config` (every other one with a TTL of an hour),
/// copies them to `dst` and kills the copy half-way; the resumed copy finishes the rest, the
/// verification passes, and every key arrives with its value and its TTL.
fn copy_killed_and_resumed(source_url: &str, destination_url: &str) -> TestResult {
    let dir = tempdir()?;
    let seed_config = dir.path().join("seed.toml");
    std::fs::write(
        &seed_config,
        format!("[stores.src]\nurl = {source_url:?}\n"),
    )
    .map_err(|err| Failed::from(err.to_string()))?;
    // The source is read-only to the copy: it is never written.
    let config = dir.path().join("copy.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nlist_page_size = 250\n[stores.src]\nurl = {source_url:?}\n\
             access = \"read-only\"\n[stores.dst]\nurl = {destination_url:?}\n"
        ),
    )
    .map_err(|err| Failed::from(err.to_string()))?;
    let seed = dir.path().join("seed.jsonl");
    let value_of = |index: usize| format!("value {index} {}", "x".repeat(index % 200));
    write_lines(
        &seed,
        (0..COPY_KEYS).map(|index| {
            let mut record = json!({"key": format!("key-{index:05}"), "value": value_of(index)});
            if index % 2 == 1 {
                record["ttl_ms"] = json!(3_600_000);
            }
            record
        }),
    )?;
    let seed_config = seed_config.to_str().ok_or("path")?;
    let config = config.to_str().ok_or("path")?;
    let state = dir.path().join("copy.state");
    let state = state.to_str().ok_or("path")?;
    ok(&[
        "import",
        "--config",
        seed_config,
        seed.to_str().ok_or("path")?,
    ])?;

    // The first copy: killed once a fifth of the keys are written.
    let mut child = store_command(&["copy", "--config", config, "--state", state, "src", "dst"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| Failed::from(format!("cannot run wasi-kv: {err}")))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut killed_at = None;
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.map_err(|err| Failed::from(err.to_string()))?;
        let copied = line
            .strip_prefix("copy: ")
            .and_then(|rest| rest.strip_suffix(" keys copied"))
            .and_then(|count| count.parse::<usize>().ok());
        lines.push(line);
        if let Some(copied) = copied.filter(|copied| *copied >= COPY_KEYS / 5) {
            child.kill().map_err(|err| Failed::from(err.to_string()))?;
            killed_at = Some(copied);
            break;
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let status = child.wait().map_err(|err| Failed::from(err.to_string()))?;
    let killed_at = killed_at.ok_or_else(|| format!("no progress to kill at: {lines:?}"))?;
    check(
        !status.success() && killed_at < COPY_KEYS,
        format!("the copy ended before the kill ({status}, {killed_at} keys): {lines:?}"),
    )?;

    // The resumed copy writes only what was left, and verifies.
    let output = run(&[
        "copy", "--config", config, "--state", state, "--resume", "src", "dst",
    ])?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    check(
        output.status.success(),
        format!("resumed copy: {}\n{stdout}\n{stderr}", output.status),
    )?;
    let resumed_after: usize = stderr
        .lines()
        .find_map(|line| line.strip_prefix("copy: resuming after "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .ok_or_else(|| format!("the copy did not resume: {stderr}"))?;
    let written: usize = stdout
        .split('(')
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .ok_or_else(|| format!("no count written: {stdout}"))?;
    check(
        resumed_after >= killed_at && written < COPY_KEYS && resumed_after + written >= COPY_KEYS,
        format!("killed at {killed_at}, resumed after {resumed_after}, wrote {written}: {stdout}"),
    )?;
    check(
        stdout.contains(&format!("copied {COPY_KEYS} keys")) && stdout.contains("verify: equal"),
        format!("{stdout}\n{stderr}"),
    )?;
    check(
        !Path::new(state).exists(),
        "the checkpoint is removed once verified",
    )?;

    // Every key with its value, and the TTL where the source had one.
    let exported = records(&ok_text(&[
        "export", "--config", config, "--bucket", "dst",
    ])?)?;
    check(
        exported.len() == COPY_KEYS,
        format!("{} keys in the destination", exported.len()),
    )?;
    for index in 0..COPY_KEYS {
        let key = format!("key-{index:05}");
        let record = exported.get(&key).ok_or_else(|| format!("{key} missing"))?;
        check(
            record["value"] == value_of(index).as_str(),
            format!("{key}: {record}"),
        )?;
        let ttl = record.get("ttl_ms").and_then(Value::as_u64);
        let expected = if index % 2 == 1 {
            ttl.is_some_and(|ttl| ttl > 3_000_000 && ttl <= 3_600_000)
        } else {
            ttl.is_none()
        };
        check(expected, format!("{key}: TTL {ttl:?}"))?;
    }

    // A difference is found: one value changed in the destination.
    ok(&[
        "set",
        "--config",
        config,
        "--bucket",
        "dst",
        "key-00007",
        "changed",
    ])?;
    let output = run(&["verify", "--config", config, "src", "dst"])?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    check(
        output.status.code() == Some(1)
            && stdout.contains("1 differ in value or TTL or are missing, 0 only in")
            && stdout.contains("\"key-00007\": another value"),
        format!("verify after a change: {}\n{stdout}", output.status),
    )
}

/// The paths an adversarial reading found, each tried: a checkpoint resumed against another
/// backend, a TTL lost in the destination, a key only the destination holds, an old export
/// whose keys have expired, and an export whose reader stops early.
fn adversarial_paths_on_sqlite() -> TestResult {
    use sha2::Digest as _;
    let dir = tempdir()?;
    let path = |name: &str| dir.path().join(name).display().to_string();
    let write = |name: &str, text: String| {
        std::fs::write(dir.path().join(name), text).map_err(|err| Failed::from(err.to_string()))
    };
    write(
        "a.toml",
        format!(
            "[stores.src]\nurl = \"sqlite:{}\"\n[stores.dst]\nurl = \"sqlite:{}\"\n",
            path("src.db"),
            path("dst.db")
        ),
    )?;
    // The same store names on another database file.
    write(
        "b.toml",
        format!(
            "[stores.src]\nurl = \"sqlite:{}\"\n[stores.dst]\nurl = \"sqlite:{}\"\n",
            path("src.db"),
            path("other.db")
        ),
    )?;
    let (a, b, state) = (path("a.toml"), path("b.toml"), path("copy.state"));
    let seed: String = (0..3000)
        .map(|n| {
            let ttl = if n % 2 == 0 {
                r#","ttl_ms":3600000"#
            } else {
                ""
            };
            format!("{{\"key\":\"k{n:04}\",\"value\":\"v{n}\"{ttl}}}\n")
        })
        .collect();
    write("seed.jsonl", seed.clone())?;
    ok(&[
        "import",
        "--config",
        &a,
        "--bucket",
        "src",
        &path("seed.jsonl"),
    ])?;

    // A key only the destination holds: named, exit 1.
    ok(&["set", "--config", &a, "--bucket", "dst", "stray", "x"])?;
    let output = run(&["copy", "--config", &a, "--state", &state, "src", "dst"])?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    check(
        output.status.code() == Some(1) && stdout.contains("\"stray\": only in \"dst\""),
        format!("copy with a stray key: {}\n{stdout}", output.status),
    )?;
    ok(&["delete", "--config", &a, "--bucket", "dst", "stray"])?;
    let again = ok_text(&["copy", "--config", &a, "--state", &state, "src", "dst"])?;
    check(again.contains("verify: equal"), again)?;
    // A copy checkpoint written for other databases under the same names does not resume.
    write(
        "copy.state",
        r#"{"from":"src","to":"dst","identities":["one","two"],"cursor_secret":"0123456789abcdef0123456789abcdef","cursor":null,"copied":1000,"done":false}"#
            .to_string(),
    )?;
    fails(
        &[
            "copy", "--config", &b, "--state", &state, "--resume", "src", "dst",
        ],
        2,
        "with other backends or settings",
    )?;
    // One store under two names is not copied onto itself.
    write(
        "same.toml",
        format!(
            "[stores.x]\nurl = \"sqlite:{}\"\nnamespace = \"n\"\n\
             [stores.y]\nurl = \"sqlite:{}\"\nnamespace = \"n\"\n",
            path("src.db"),
            path("src.db")
        ),
    )?;
    fails(
        &["copy", "--config", &path("same.toml"), "x", "y"],
        2,
        "are the same store",
    )?;

    // A TTL lost in the destination is a difference.
    ok(&["set", "--config", &a, "--bucket", "dst", "k0002", "v2"])?;
    let output = run(&["verify", "--config", &a, "src", "dst"])?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    check(
        output.status.code() == Some(1) && stdout.contains("\"k0002\": no TTL"),
        format!(
            "verify after a TTL was dropped: {}\n{stdout}",
            output.status
        ),
    )?;

    // An import checkpoint of another store is refused.
    let sha = sha2::Sha256::digest(seed.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<String>();
    write(
        "seed.jsonl.import-state",
        format!(
            r#"{{"file_sha256":"{sha}","store":"dst","store_identity":"another","lines_done":500,"keys_done":500}}"#
        ),
    )?;
    fails(
        &[
            "import",
            "--config",
            &a,
            "--bucket",
            "dst",
            "--resume",
            &path("seed.jsonl"),
        ],
        2,
        "checkpoint of another file or another store",
    )?;

    // A line the check would refuse writes nothing, wherever it is: a byte-order mark past the
    // first line, an expiry beyond the longest TTL.
    for (name, bad) in [
        (
            "bom.jsonl",
            "\u{feff}{\"key\":\"late\",\"value\":\"v\"}".to_string(),
        ),
        (
            "far.jsonl",
            r#"{"key":"late","value":"v","expires_at_ms":9223372036854775808}"#.to_string(),
        ),
    ] {
        let good: String = (0..600)
            .map(|n| format!("{{\"key\":\"{name}-{n}\",\"value\":\"v\"}}\n"))
            .collect();
        write(name, format!("{good}{bad}\n"))?;
        fails(
            &["import", "--config", &a, "--bucket", "dst", &path(name)],
            2,
            &format!("{name}:601: "),
        )?;
        fails(
            &[
                "get",
                "--config",
                &a,
                "--bucket",
                "dst",
                &format!("{name}-0"),
            ],
            1,
            "no such key",
        )?;
    }

    // An old export: the key that expired since is not brought back.
    write(
        "old.jsonl",
        concat!(
            r#"{"key":"gone","value":"v","ttl_ms":1000,"expires_at_ms":1}"#,
            "\n",
            r#"{"key":"kept","value":"v","ttl_ms":60000}"#,
            "\n"
        )
        .to_string(),
    )?;
    let imported = ok_text(&[
        "import",
        "--config",
        &a,
        "--bucket",
        "dst",
        &path("old.jsonl"),
    ])?;
    check(imported.contains("1 skipped: expired"), imported)?;
    fails(
        &["get", "--config", &a, "--bucket", "dst", "gone"],
        1,
        "no such key",
    )?;
    check(
        ok(&["get", "--config", &a, "--bucket", "dst", "kept"])? == b"v",
        "the live key is imported",
    )?;

    // A reader that stops after one line is no failure.
    let mut child = store_command(&["export", "--config", &a, "--bucket", "src"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| Failed::from(err.to_string()))?;
    let mut first = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?)
        .read_line(&mut first)
        .map_err(|err| Failed::from(err.to_string()))?;
    let output = child
        .wait_with_output()
        .map_err(|err| Failed::from(err.to_string()))?;
    check(
        first.starts_with("{\"key\"") && output.status.success(),
        format!(
            "export into a closed pipe: {} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn copy_redis_to_dynamodb() -> TestResult {
    let redis = Emulator::Redis.start()?;
    let dynamodb = Emulator::DynamoDb.start()?;
    copy_killed_and_resumed(&redis.store_url, &dynamodb.store_url)
}

fn copy_sqlite_to_gcs() -> TestResult {
    let dir = tempdir()?;
    let gcs: Started = Emulator::Gcs.start()?;
    let sqlite = format!("sqlite:{}", dir.path().join("source.db").display());
    copy_killed_and_resumed(&sqlite, &gcs.store_url)
}

fn main() -> ExitCode {
    kv_testkit::stay_on_loopback();
    let args = Arguments::from_args();
    let required = kv_testkit::required_targets();
    let needs = |providers: &[Emulator]| -> Option<String> {
        let missing: Vec<&str> = providers
            .iter()
            .filter(|emulator| {
                !emulator.installed() && !required.iter().any(|r| r == emulator.provider())
            })
            .map(|emulator| emulator.provider())
            .collect();
        (!missing.is_empty()).then(|| format!("not installed: {}", missing.join(", ")))
    };
    let trial =
        |name: String, providers: &[Emulator], test: Box<dyn FnOnce() -> TestResult + Send>| {
            let trial = Trial::test(name, test);
            match needs(providers) {
                Some(kind) => trial.with_ignored_flag(true).with_kind(kind),
                None => trial,
            }
        };
    let mut trials = vec![
        trial(
            "commands_on_memory".into(),
            &[],
            Box::new(commands_on_memory),
        ),
        trial(
            "commands_on_sqlite".into(),
            &[],
            Box::new(commands_on_sqlite),
        ),
        trial(
            "adversarial_paths_on_sqlite".into(),
            &[],
            Box::new(adversarial_paths_on_sqlite),
        ),
        trial(
            "copy_redis_to_dynamodb_killed_and_resumed".into(),
            &[Emulator::Redis, Emulator::DynamoDb],
            Box::new(copy_redis_to_dynamodb),
        ),
        trial(
            "copy_sqlite_to_gcs_killed_and_resumed".into(),
            &[Emulator::Gcs],
            Box::new(copy_sqlite_to_gcs),
        ),
    ];
    for emulator in Emulator::ALL {
        trials.push(trial(
            format!("commands_on_{}", emulator.provider()),
            &[emulator],
            Box::new(move || commands_on(emulator)),
        ));
    }
    libtest_mimic::run(&args, trials).exit_code()
}
