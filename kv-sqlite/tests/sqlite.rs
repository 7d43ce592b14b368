//! Provider-level tests for SQLite: several processes on one file, persistence across opens,
//! and the expiry sweep. The conformance suite runs on SQLite in kv-conformance's harness.

use std::process::{Command, ExitCode};
use std::time::Duration;

use kv_core::{Access, Bytes, KvStore, Limits, ProviderFactory, Stores};
use kv_sqlite::SqliteFactory;
use libtest_mimic::{Arguments, Failed, Trial};

/// When set, this binary is a worker process: it increments `n` in the file it names.
const WORKER_ENV: &str = "KV_SQLITE_TEST_WORKER";
/// Set in a worker that only opens the file.
const OPEN_ONLY_ENV: &str = "KV_SQLITE_TEST_OPEN_ONLY";
const PROCESSES: usize = 4;
const INCREMENTS: usize = 50;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn store(path: &std::path::Path) -> Result<KvStore, String> {
    let url = format!("s=sqlite:{}", path.display());
    let (_, spec) = kv_core::config::parse_short_form(&url).map_err(|err| err.to_string())?;
    let provider = SqliteFactory
        .connect(&spec)
        .await
        .map_err(|err| err.to_string())?;
    let stores = Stores::builder(Limits::default())
        .store("s", provider, "ns", Access::ReadWrite)
        .build();
    stores.open("s").await.map_err(|err| err.to_string())
}

/// A worker process: `INCREMENTS` increments of `n` (with [`OPEN_ONLY_ENV`]: none, it only
/// opens the file).
fn worker(path: &str) -> ExitCode {
    let result = runtime().block_on(async {
        let store = store(std::path::Path::new(path)).await?;
        if std::env::var_os(OPEN_ONLY_ENV).is_some() {
            return Ok(());
        }
        for _ in 0..INCREMENTS {
            store
                .increment("n", 1)
                .await
                .map_err(|err| err.to_string())?;
        }
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("worker: {err}");
            ExitCode::FAILURE
        }
    }
}

/// N processes x M increments on one file end at exactly N*M.
fn processes_share_one_file_exactly() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
    let path = dir.path().join("shared.db");
    let exe = std::env::current_exe().map_err(|err| err.to_string())?;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .env(WORKER_ENV, &path)
                .spawn()
                .map_err(|err| Failed::from(err.to_string()))
        })
        .collect::<Result<_, _>>()?;
    // Every worker is waited for before the file is removed.
    let statuses: Vec<_> = children
        .into_iter()
        .map(|mut child| child.wait().map_err(|err| err.to_string()))
        .collect::<Result<_, _>>()?;
    if let Some(failed) = statuses.iter().find(|status| !status.success()) {
        return Err(format!("a worker failed: {failed}").into());
    }
    let total = runtime().block_on(async {
        store(&path)
            .await?
            .get("n")
            .await
            .map_err(|e| e.to_string())
    })?;
    let expected = (PROCESSES * INCREMENTS).to_string();
    if total.as_deref() != Some(expected.as_bytes()) {
        return Err(format!("{PROCESSES} x {INCREMENTS} increments gave {total:?}").into());
    }
    Ok(())
}

/// Host processes started together on one new file all open it: switching a new file to WAL
/// takes an exclusive lock, and SQLite answers a connection that meets the switch with
/// `SQLITE_BUSY` at once, without waiting out its busy timeout. CI saw a worker of
/// `processes_share_one_file_exactly` fail to start that way. 30 rounds of 6 processes.
fn processes_open_one_new_file_together() -> Result<(), Failed> {
    let exe = std::env::current_exe().map_err(|err| err.to_string())?;
    for round in 0..30 {
        let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
        let path = dir.path().join("new.db");
        let children: Vec<_> = (0..6)
            .map(|_| {
                Command::new(&exe)
                    .env(WORKER_ENV, &path)
                    .env(OPEN_ONLY_ENV, "1")
                    .spawn()
                    .map_err(|err| Failed::from(err.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let statuses: Vec<_> = children
            .into_iter()
            .map(|mut child| child.wait().map_err(|err| err.to_string()))
            .collect::<Result<_, _>>()?;
        let failed = statuses.iter().filter(|status| !status.success()).count();
        if failed > 0 {
            return Err(format!("round {round}: {failed} of 6 processes could not open").into());
        }
    }
    Ok(())
}

/// Data survives closing and reopening the file.
fn data_persists_across_opens() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
    let path = dir.path().join("persist.db");
    runtime().block_on(async {
        let first = store(&path).await?;
        first
            .set("k", b"kept".to_vec())
            .await
            .map_err(|e| e.to_string())?;
        first
            .increment("runs", 1)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    })?;
    let (value, runs) = runtime().block_on(async {
        let second = store(&path).await?;
        let value = second.get("k").await.map_err(|e| e.to_string())?;
        let runs = second
            .increment("runs", 1)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((value, runs))
    })?;
    if value.as_deref() != Some(b"kept") || runs != 2 {
        return Err(format!("after reopening: {value:?}, runs {runs}").into());
    }
    Ok(())
}

/// Expired keys are invisible at once and deleted by the sweep.
fn expired_keys_are_swept() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
    let path = dir.path().join("ttl.db");
    runtime().block_on(async {
        let store = store(&path).await?;
        store
            .set_with_ttl("gone", b"v".to_vec(), 1)
            .await
            .map_err(|e| e.to_string())?;
        store
            .set("kept", b"v".to_vec())
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if store
            .get("gone")
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Err("an expired key is visible".to_string());
        }
        Ok(())
    })?;
    let mut connection = rusqlite_connection(&path)?;
    let rows = |connection: &rusqlite::Connection| -> Result<i64, Failed> {
        connection
            .query_row("SELECT count(*) FROM kv", [], |row| row.get(0))
            .map_err(|err| Failed::from(err.to_string()))
    };
    if rows(&connection)? != 2 {
        return Err("the expired row should still be stored before the sweep".into());
    }
    kv_sqlite::store::sweep(&mut connection).map_err(|err| err.to_string())?;
    if rows(&connection)? != 1 {
        return Err("the sweep did not delete the expired row".into());
    }
    Ok(())
}

/// S7 without ABA from absence, across the paths that remove a row: a handle captured on a
/// missing key fails once the key was written and removed (by `delete`, `delete-many`, or the
/// sweep of an expired row), though it is missing again; other keys' deletions do not
/// disturb it; a capture older than forgotten tombstones conflicts rather than guess.
fn absence_has_a_version() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
    let path = dir.path().join("aba.db");
    let swaps_after = |remove: &'static str| {
        let path = path.clone();
        runtime().block_on(async move {
            let store = store(&path).await?;
            let key = format!("k-{remove}");
            let missing = store
                .read_versioned(&key)
                .await
                .map_err(|e| e.to_string())?;
            match remove {
                "delete" => {
                    store
                        .set(&key, b"x".to_vec())
                        .await
                        .map_err(|e| e.to_string())?;
                    store.delete(&key).await.map_err(|e| e.to_string())?;
                }
                "delete-many" => {
                    store
                        .set(&key, b"x".to_vec())
                        .await
                        .map_err(|e| e.to_string())?;
                    store
                        .delete_many(std::slice::from_ref(&key))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                "sweep" => {
                    store
                        .set_with_ttl(&key, b"x".to_vec(), 1)
                        .await
                        .map_err(|e| e.to_string())?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let mut connection = rusqlite_connection(&path)?;
                    kv_sqlite::store::sweep(&mut connection).map_err(|e| e.to_string())?;
                }
                _ => {
                    // Unrelated churn only.
                    store
                        .set("other", b"x".to_vec())
                        .await
                        .map_err(|e| e.to_string())?;
                    store.delete("other").await.map_err(|e| e.to_string())?;
                    store.delete(&key).await.map_err(|e| e.to_string())?;
                }
            }
            let outcome = store
                .swap(&key, &missing.version, b"v".to_vec())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, Failed>(outcome)
        })
    };
    for remove in ["delete", "delete-many", "sweep"] {
        let outcome = swaps_after(remove)?;
        if outcome != kv_core::SwapOutcome::Conflict {
            return Err(format!("swap from absence after set + {remove}: {outcome:?}").into());
        }
    }
    let outcome = swaps_after("unrelated")?;
    if outcome != kv_core::SwapOutcome::Swapped {
        return Err(format!("swap from absence after unrelated deletes: {outcome:?}").into());
    }
    // Tombstones past their time are forgotten; a capture from before then conflicts.
    runtime().block_on(async {
        let store = store(&path).await?;
        let missing = store
            .read_versioned("late")
            .await
            .map_err(|e| e.to_string())?;
        store
            .set("x", b"x".to_vec())
            .await
            .map_err(|e| e.to_string())?;
        store.delete("x").await.map_err(|e| e.to_string())?;
        let mut connection = rusqlite_connection(&path)?;
        connection
            .execute("UPDATE kv_deleted SET at = 0", [])
            .map_err(|e| e.to_string())?;
        kv_sqlite::store::sweep(&mut connection).map_err(|e| e.to_string())?;
        let outcome = store
            .swap("late", &missing.version, b"v".to_vec())
            .await
            .map_err(|e| e.to_string())?;
        if outcome != kv_core::SwapOutcome::Conflict {
            return Err(format!("a capture older than forgotten tombstones: {outcome:?}").into());
        }
        Ok::<_, Failed>(())
    })
}

/// Another process holds the file's write lock; a write waiting for it is given up by its
/// caller (the operation timeout dropped it). Once the lock is free the write must not land:
/// its caller was told the outcome is unknown and the history checkers stop waiting for it
/// after the timeout. Before, the write waited out SQLite's busy timeout (5 s) and committed
/// after the lock was released.
fn a_write_given_up_by_its_caller_is_never_committed() -> Result<(), Failed> {
    runtime().block_on(async {
        let dir = tempfile::tempdir().map_err(|err| Failed::from(err.to_string()))?;
        let path = dir.path().join("kv.db");
        let url = format!("s=sqlite:{}", path.display());
        let (_, spec) = kv_core::config::parse_short_form(&url)?;
        let provider = SqliteFactory.connect(&spec).await?;
        let bucket = provider.open("ns").await?;
        bucket.set("warm", Bytes::from_static(b"1")).await?;
        let held = path.clone();
        let (locked, is_locked) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || -> Result<(), String> {
            let other = rusqlite::Connection::open(&held).map_err(|err| err.to_string())?;
            other
                .execute_batch("BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS hold (x);")
                .map_err(|err| err.to_string())?;
            let _ = locked.send(());
            std::thread::sleep(Duration::from_millis(1500));
            other.execute_batch("COMMIT").map_err(|err| err.to_string())
        });
        is_locked
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| Failed::from("the other connection did not take the lock"))?;
        let gave_up = tokio::time::timeout(
            Duration::from_millis(300),
            bucket.set("k", Bytes::from_static(b"late")),
        )
        .await;
        if gave_up.is_ok() {
            return Err(format!("the write did not wait for the lock: {gave_up:?}").into());
        }
        holder
            .join()
            .map_err(|_| Failed::from("the lock holder panicked"))??;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let value = bucket.get("k").await?;
        if value.is_some() {
            return Err(format!("a write given up by its caller was committed: {value:?}").into());
        }
        // The connection still works.
        bucket.set("k", Bytes::from_static(b"now")).await?;
        Ok(())
    })
}

/// The change feed (`wasi-kv watch`): what one namespace's watcher reads back, in order; an
/// overwrite is one change, other namespaces are skipped, an expiry is a delete (also when
/// the expired key is written again before anything deleted it), and a checkpoint older than
/// the trimmed log, past its end or of another file's log is a gap.
fn the_change_feed_reads_one_namespace_in_order() -> Result<(), Failed> {
    use kv_core::watch::{Change, Changes};
    runtime().block_on(async {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("kv.db");
        let store = store(&path).await?;
        let feed = store.change_feed()?;
        let start = feed.head().await.map_err(|err| err.chain())?;
        // Another namespace of the same file: logged, but not this watcher's.
        let url = format!("o=sqlite:{}?namespace=other", path.display());
        let (_, spec) = kv_core::config::parse_short_form(&url)?;
        let other = Stores::builder(Limits::default())
            .store(
                "o",
                SqliteFactory.connect(&spec).await?,
                "other",
                Access::ReadWrite,
            )
            .build()
            .open("o")
            .await?;
        store.set("a", b"1".to_vec()).await?;
        other.set("x", b"elsewhere".to_vec()).await?;
        store.set("a", b"2".to_vec()).await?;
        store.increment("n", 3).await?;
        store.delete("a").await?;
        store.delete("a").await?;
        store.set_with_ttl("t", b"soon".to_vec(), 100).await?;
        store.set_with_ttl("r", b"old".to_vec(), 100).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Overwritten after it expired, before anything deleted it: its expiry is a change.
        store.set("r", b"new".to_vec()).await?;
        let mut got = Vec::new();
        let mut position = start.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got.len() < 9 && std::time::Instant::now() < deadline {
            match feed
                .changes_after(&position, 2, 1 << 20, Duration::from_millis(200))
                .await
                .map_err(|err| err.chain())?
            {
                Changes::Next {
                    changes,
                    position: next,
                } => {
                    assert!(changes.len() <= 2, "at most `max` changes");
                    got.extend(changes.into_iter().map(|logged| logged.change));
                    position = next;
                }
                gap => return Err(format!("unexpected {gap:?}").into()),
            }
        }
        let set = |key: &str, value: &[u8]| Change::Set {
            key: key.into(),
            value: value.to_vec(),
        };
        let delete = |key: &str| Change::Delete { key: key.into() };
        let expected = vec![
            set("a", b"1"),
            set("a", b"2"),
            set("n", b"3"),
            delete("a"),
            set("t", b"soon"),
            set("r", b"old"),
            delete("r"),
            set("r", b"new"),
            delete("t"),
        ];
        if got != expected {
            return Err(format!("the feed read {got:?}, expected {expected:?}").into());
        }
        // A position past this file's last change, and one of another file's log (a
        // re-created file, whose numbers would otherwise be read as this one's).
        let (log, _) = start.0.rsplit_once(':').ok_or("a position names its log")?;
        for elsewhere in [
            kv_core::watch::Position::numbered(log, 1_000_000),
            kv_core::watch::Position::numbered("0123456789abcdef", 1),
            kv_core::watch::Position("not a position".into()),
        ] {
            let read = feed
                .changes_after(&elsewhere, 10, 1 << 20, Duration::ZERO)
                .await?;
            if !matches!(read, Changes::Gap { .. }) {
                return Err(format!("{elsewhere:?} read {read:?}").into());
            }
        }
        // Trimmed past the checkpoint (as the sweeper does after the retention): a gap,
        // and the position it gives reads on.
        let connection = rusqlite_connection(&path)?;
        connection.execute(
            "UPDATE kv_changes_trimmed SET through = (SELECT MAX(seq) FROM kv_changes)",
            [],
        )?;
        connection.execute("DELETE FROM kv_changes", [])?;
        match feed
            .changes_after(&start, 10, 1 << 20, Duration::ZERO)
            .await?
        {
            Changes::Gap { position, why } => {
                if !why.contains("trimmed") {
                    return Err(format!("the gap says {why:?}").into());
                }
                store.set("after", b"gap".to_vec()).await?;
                let read = feed
                    .changes_after(&position, 10, 1 << 20, Duration::from_secs(2))
                    .await?;
                let Changes::Next { changes, .. } = read else {
                    return Err(format!("after the gap: {read:?}").into());
                };
                let changes: Vec<Change> =
                    changes.into_iter().map(|logged| logged.change).collect();
                if changes != [set("after", b"gap")] {
                    return Err(format!("after the gap: {changes:?}").into());
                }
            }
            read => return Err(format!("a trimmed checkpoint read {read:?}").into()),
        }
        Ok(())
    })
}

fn rusqlite_connection(path: &std::path::Path) -> Result<rusqlite::Connection, Failed> {
    rusqlite::Connection::open(path).map_err(|err| Failed::from(err.to_string()))
}

fn main() -> ExitCode {
    if let Ok(path) = std::env::var(WORKER_ENV) {
        return worker(&path);
    }
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test(
            "processes_share_one_file_exactly",
            processes_share_one_file_exactly,
        ),
        Trial::test(
            "processes_open_one_new_file_together",
            processes_open_one_new_file_together,
        ),
        Trial::test("data_persists_across_opens", data_persists_across_opens),
        Trial::test("expired_keys_are_swept", expired_keys_are_swept),
        Trial::test("absence_has_a_version", absence_has_a_version),
        Trial::test(
            "a_write_given_up_by_its_caller_is_never_committed",
            a_write_given_up_by_its_caller_is_never_committed,
        ),
        Trial::test(
            "the_change_feed_reads_one_namespace_in_order",
            the_change_feed_reads_one_namespace_in_order,
        ),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}
