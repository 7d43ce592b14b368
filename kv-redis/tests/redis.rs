//! Provider-level tests against a real redis-server started on a free loopback port. Without
//! redis-server they are ignored, unless `KV_REQUIRE` names `redis`, where that is a failure.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kv_core::{
    Access, Attempt, Bytes, CounterRange, ErrorKind, Limits, ProviderFactory, Stores, SwapOutcome,
};
use kv_testkit::emulator::RedisServer;
use kv_testkit::provider_tests::{self, TestResult, check};
use libtest_mimic::Failed;

async fn provider(server: &RedisServer) -> Arc<dyn kv_core::Provider> {
    let (_, spec) =
        kv_core::config::parse_short_form(&format!("r={}", server.url())).expect("url parses");
    kv_redis::RedisFactory
        .connect(&spec)
        .await
        .expect("provider builds")
}

fn limits() -> Limits {
    provider_tests::limits(Duration::from_secs(3), 4)
}

/// Namespaces and keys full of glob characters must not match each other's SCAN patterns.
async fn glob_characters_stay_isolated(server: RedisServer) -> TestResult {
    let provider = provider(&server).await;
    let namespaces = ["a", "a*", "a?", "[a]", "a\\", "*", "a]", "\\*"];
    let mut builder = Stores::builder(limits());
    for namespace in namespaces {
        builder = builder.store(namespace, provider.clone(), namespace, Access::ReadWrite);
    }
    let stores = builder.build();
    for namespace in namespaces {
        let store = stores.open(namespace).await?;
        for key in ["*", "?", "[a]", "k", "\\"] {
            store.set(key, namespace.as_bytes().to_vec()).await?;
        }
    }
    for namespace in namespaces {
        let store = stores.open(namespace).await?;
        let mut keys = provider_tests::list_all(&store).await?;
        keys.sort();
        keys.dedup();
        check(
            keys == ["*", "?", "[a]", "\\", "k"],
            format!("namespace {namespace:?} listed {keys:?}"),
        )?;
        for key in ["*", "?", "[a]", "k", "\\"] {
            let value = store.get(key).await?;
            check(
                value.as_deref() == Some(namespace.as_bytes()),
                format!("{namespace:?}/{key:?} = {value:?}"),
            )?;
        }
    }
    Ok(())
}

/// A non-decimal value written by another Redis client is `not-an-integer` and stays as is.
async fn foreign_non_decimal_value(server: RedisServer) -> TestResult {
    let stores = Stores::builder(limits())
        .store("s", provider(&server).await, "ns", Access::ReadWrite)
        .build();
    let store = stores.open("s").await?;
    let client = redis::Client::open(server.url())?;
    let mut raw = client.get_multiplexed_async_connection().await?;
    let mut key = kv_redis::key_prefix("ns");
    key.extend_from_slice(b"counter");
    for value in [&b"12abc"[..], b"1.5", b" 7", b"\xff"] {
        redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .query_async::<()>(&mut raw)
            .await?;
        let err = store
            .increment("counter", 1)
            .await
            .expect_err("increment must fail");
        check(
            err.kind() == ErrorKind::NotAnInteger,
            format!("{value:?}: {err}"),
        )?;
        check(
            err.to_string().starts_with("not-an-integer: "),
            err.to_string(),
        )?;
        let stored: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut raw).await?;
        check(stored == value, format!("value changed to {stored:?}"))?;
    }
    redis::cmd("SET")
        .arg(&key)
        .arg("41")
        .query_async::<()>(&mut raw)
        .await?;
    check(store.increment("counter", 1).await? == 42, "41 + 1")?;
    Ok(())
}

/// Stopping the server mid-run gives `unavailable` within the time limit (no hang, no panic);
/// after a restart the same host and store serve again.
async fn server_restart(mut server: RedisServer) -> TestResult {
    let stores = Stores::builder(limits())
        .store("s", provider(&server).await, "ns", Access::ReadWrite)
        .build();
    let store = stores.open("s").await?;
    store.set("k", b"before".to_vec()).await?;
    server.stop();
    provider_tests::expect_outage(&store, Duration::from_secs(4)).await?;
    server.restart().map_err(Failed::from)?;
    store.set("k", b"after".to_vec()).await?;
    check(
        store.get("k").await?.as_deref() == Some(&b"after"[..]),
        "read after restart",
    )?;
    check(
        store.increment("n", 2).await? == 2,
        "increment after restart",
    )?;
    Ok(())
}

/// `wait_replicas = 1` on a server with no replica: every write fails once `wait_timeout_ms`
/// passes (the primary applied it, no replica has it), as `timeout`, or for an increment as
/// `unavailable: outcome unknown`, on plain commands and exactly-once scripts alike; reads are
/// unaffected.
async fn wait_replicas_without_a_replica_is_timeout(server: RedisServer) -> TestResult {
    let (_, spec) = kv_core::config::parse_short_form(&format!(
        "r={}?wait_replicas=1&wait_timeout_ms=100",
        server.url()
    ))
    .map_err(|err| Failed::from(err.to_string()))?;
    let provider = kv_redis::RedisFactory.connect(&spec).await?;
    let stores = Stores::builder(provider_tests::limits(Duration::from_secs(3), 1))
        .store("s", provider, "ns", Access::ReadWrite)
        .build();
    let store = stores.open("s").await?;
    for (op, result) in [
        ("set", store.set("k", b"v".to_vec()).await),
        ("increment", store.increment("n", 1).await.map(drop)),
        (
            "set-many",
            store.set_many(vec![("a".to_string(), b"1".to_vec())]).await,
        ),
    ] {
        let err = result
            .err()
            .ok_or_else(|| Failed::from(format!("{op} was acknowledged without a replica")))?;
        // An increment's timeout reaches the guest as `unavailable: outcome unknown`.
        let expected = if op == "increment" {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Timeout
        };
        check(
            err.kind() == expected && err.to_string().contains("replicas"),
            format!("{op}: {err}"),
        )?;
    }
    check(
        store.get("k").await?.as_deref() == Some(&b"v"[..]),
        "the primary applied the write; reads see it",
    )
}

/// S5 under churn: 5,000 keys that exist for the whole listing are all listed, pages of 50,
/// while a writer sets and deletes 5,000 other keys of the same namespace (deletes shift a
/// re-issued SCAN reply, and the keyspace grows past a rehash). 100 listings.
async fn listing_under_churn_misses_no_stable_key(server: RedisServer) -> TestResult {
    const LISTINGS: usize = 100;
    let stores = Stores::builder(Limits {
        list_page_size: 50,
        ..limits()
    })
    .store("s", provider(&server).await, "ns", Access::ReadWrite)
    .build();
    let store = stores.open("s").await?;
    let stable: Vec<String> = (0..5000).map(|i| format!("stable-{i:04}")).collect();
    for chunk in stable.chunks(1000) {
        let entries = chunk.iter().map(|key| (key.clone(), b"s".to_vec()));
        store.set_many(entries.collect()).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let churn: Vec<String> = (0..5000).map(|i| format!("churn-{i:04}")).collect();
            let blocks: Vec<&[String]> = churn.chunks(250).collect();
            let mut present = vec![false; blocks.len()];
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut rounds = 0usize;
            // Each round flips one block of 250 keys: written if absent, deleted if present.
            while !stop.load(Ordering::Relaxed) && rounds < 1_000_000 && Instant::now() < deadline {
                let block = (rounds * 7) % blocks.len();
                if present[block] {
                    store.delete_many(blocks[block]).await?;
                } else {
                    let entries = blocks[block].iter().map(|key| (key.clone(), b"c".to_vec()));
                    store.set_many(entries.collect()).await?;
                }
                present[block] = !present[block];
                rounds += 1;
            }
            Ok::<usize, kv_core::KvError>(rounds)
        })
    };
    let started = Instant::now();
    let mut outcome = Ok(());
    let mut listings = 0;
    for listing in 0..LISTINGS {
        let listed: HashSet<String> = provider_tests::list_all(&store)
            .await?
            .into_iter()
            .collect();
        let missing: Vec<&String> = stable.iter().filter(|key| !listed.contains(*key)).collect();
        if !missing.is_empty() {
            outcome = Err(Failed::from(format!(
                "listing {listing}: {} of 5000 stable keys missing, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            )));
            break;
        }
        listings += 1;
        if started.elapsed() > Duration::from_secs(90) {
            outcome = Err(Failed::from(format!(
                "only {} listings in 90 s",
                listing + 1
            )));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = writer
        .await
        .map_err(|err| Failed::from(err.to_string()))??;
    eprintln!(
        "{listings} complete listings with {rounds} churn rounds of 250 keys in {:?}",
        started.elapsed()
    );
    outcome?;
    check(
        rounds > LISTINGS,
        format!("the writer ran only {rounds} rounds"),
    )
}

/// Bytes the server has sent to all its clients (`INFO stats`).
async fn bytes_sent(raw: &mut redis::aio::MultiplexedConnection) -> Result<u64, Failed> {
    let info: String = redis::cmd("INFO").arg("stats").query_async(raw).await?;
    info.lines()
        .find_map(|line| line.trim().strip_prefix("total_net_output_bytes:"))
        .and_then(|bytes| bytes.parse().ok())
        .ok_or_else(|| Failed::from("INFO stats has no total_net_output_bytes"))
}

/// `get_many_within` checks the byte budget on the server: over it, the call fails with
/// `batch-too-large` and no value leaves Redis (the server's output bytes show it); within it,
/// values come back in order, duplicates and missing keys included, also across several
/// batches (more than 500 keys).
async fn get_many_within_checks_the_budget_before_transfer(server: RedisServer) -> TestResult {
    let bucket = provider(&server).await.open("ns").await?;
    let client = redis::Client::open(server.url())?;
    let mut raw = client.get_multiplexed_async_connection().await?;
    let full = |key: &str| {
        let mut full = kv_redis::key_prefix("ns");
        full.extend_from_slice(key.as_bytes());
        full
    };
    const MIB: usize = 1 << 20;
    let value = vec![b'v'; MIB];
    let keys: Vec<String> = (0..10).map(|i| format!("big-{i}")).collect();
    for key in &keys {
        redis::cmd("SET")
            .arg(full(key))
            .arg(&value)
            .query_async::<()>(&mut raw)
            .await?;
    }
    let before = bytes_sent(&mut raw).await?;
    let err = bucket
        .get_many_within(&keys, 4 * MIB)
        .await
        .err()
        .ok_or_else(|| Failed::from("10 MiB within a budget of 4 MiB"))?;
    check(err.kind() == ErrorKind::BatchTooLarge, err.to_string())?;
    let sent = bytes_sent(&mut raw).await? - before;
    check(
        sent < MIB as u64,
        format!("over the budget, the server still sent {sent} bytes"),
    )?;
    let asked: Vec<String> = [&keys[0], &keys[1], "missing", &keys[0]]
        .into_iter()
        .map(str::to_string)
        .collect();
    let got = bucket.get_many_within(&asked, 3 * MIB).await?;
    check(
        got == [
            Some(value.clone()),
            Some(value.clone()),
            None,
            Some(value.clone()),
        ],
        "values in order, the duplicate twice, the missing key as none",
    )?;
    check(
        bucket.get_many_within(&keys[..4], 4 * MIB).await?.len() == 4,
        "exactly the budget is within it",
    )?;
    let err = bucket.get_many_within(&keys[..4], 4 * MIB - 1).await;
    check(
        err.as_ref().err().map(|err| err.kind()) == Some(ErrorKind::BatchTooLarge),
        format!(
            "one byte over the budget: {:?}",
            err.map(|values| values.len())
        ),
    )?;
    // 1,200 keys of 1 KiB are three batches: measured first, then fetched.
    let small: Vec<String> = (0..1200).map(|i| format!("small-{i}")).collect();
    let mut mset = redis::cmd("MSET");
    for key in &small {
        mset.arg(full(key)).arg(vec![b's'; 1024]);
    }
    mset.query_async::<()>(&mut raw).await?;
    let got = bucket.get_many_within(&small, 1200 * 1024).await?;
    check(
        got.len() == 1200
            && got
                .iter()
                .all(|value| value.as_deref() == Some(&[b's'; 1024][..])),
        "1,200 values across batches",
    )?;
    let before = bytes_sent(&mut raw).await?;
    let err = bucket.get_many_within(&small, 1200 * 1024 - 1).await;
    check(
        err.as_ref().err().map(|err| err.kind()) == Some(ErrorKind::BatchTooLarge),
        format!(
            "1,200 KiB in a budget one byte short: {:?}",
            err.map(|values| values.len())
        ),
    )?;
    let sent = bytes_sent(&mut raw).await? - before;
    check(
        sent < 64 * 1024,
        format!("over the budget across batches, the server still sent {sent} bytes"),
    )
}

/// A number from `INFO <section>`.
async fn info_number(
    raw: &mut redis::aio::MultiplexedConnection,
    section: &str,
    field: &str,
) -> Result<u64, Failed> {
    let info: String = redis::cmd("INFO").arg(section).query_async(raw).await?;
    info.lines()
        .find_map(|line| line.trim().strip_prefix(&format!("{field}:")))
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| Failed::from(format!("INFO {section} has no {field}")))
}

/// Exactly once under memory pressure (S6). Managed Redis defaults to a `volatile-*`
/// maxmemory policy, which evicts keys that have a TTL. For each such policy: an increment and
/// a swap are applied, then keys with a TTL worth 20 times the free memory are written (most
/// volatile keys are evicted), then each call is made again with the same request id, as the
/// host's retry after a lost reply does. The retry must find the record of the first attempt:
/// the increment returns its first total and the counter moved once; the swap reports
/// `Swapped`, not a conflict with its own write.
async fn request_records_survive_volatile_eviction(server: RedisServer) -> TestResult {
    const FREE: u64 = 4 << 20;
    const FILLER: usize = 4096;
    let client = redis::Client::open(server.url())?;
    let mut raw = client.get_multiplexed_async_connection().await?;
    let bucket = provider(&server).await.open("ns").await?;
    let stored = |key: &str| {
        let mut full = kv_redis::key_prefix("ns");
        full.extend_from_slice(key.as_bytes());
        full
    };
    for policy in [
        "volatile-random",
        "volatile-lru",
        "volatile-lfu",
        "volatile-ttl",
    ] {
        redis::cmd("FLUSHALL").query_async::<()>(&mut raw).await?;
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(0)
            .query_async::<()>(&mut raw)
            .await?;
        let used = info_number(&mut raw, "memory", "used_memory").await?;
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(used + FREE)
            .arg("maxmemory-policy")
            .arg(policy)
            .query_async::<()>(&mut raw)
            .await?;
        let mut increment = Attempt::new();
        let first = bucket
            .increment("counter", 5, CounterRange::Signed, &mut increment)
            .await?;
        check(
            first == 5,
            format!("{policy}: first increment gave {first}"),
        )?;
        let read = bucket.read_versioned("cas").await?;
        let mut swap = Attempt::new();
        let swapped = bucket
            .swap("cas", &read.version, Bytes::from_static(b"one"), &mut swap)
            .await?;
        check(
            swapped == SwapOutcome::Swapped,
            format!("{policy}: first swap {swapped:?}"),
        )?;

        let evicted_before = info_number(&mut raw, "stats", "evicted_keys").await?;
        let fillers = 20 * FREE as usize / FILLER;
        for round in 0..fillers / 256 {
            let mut pipe = redis::pipe();
            for i in 0..256 {
                pipe.cmd("SET")
                    .arg(format!("filler-{}", round * 256 + i))
                    .arg(vec![b'f'; FILLER])
                    .arg("PX")
                    .arg(3_600_000)
                    .ignore();
            }
            pipe.query_async::<()>(&mut raw).await?;
        }
        let evicted = info_number(&mut raw, "stats", "evicted_keys").await? - evicted_before;
        check(
            evicted as usize > fillers / 2,
            format!("{policy}: only {evicted} of {fillers} volatile keys were evicted"),
        )?;

        // The lost replies: each call again, under its first request id.
        let again = bucket
            .increment("counter", 5, CounterRange::Signed, &mut increment)
            .await?;
        let counter: Option<Vec<u8>> = redis::cmd("GET")
            .arg(stored("counter"))
            .query_async(&mut raw)
            .await?;
        check(
            again == 5 && counter.as_deref() == Some(&b"5"[..]),
            format!(
                "{policy}: the retried increment returned {again} and the counter is {:?} \
                 (applied twice: its record was evicted)",
                counter.map(|value| String::from_utf8_lossy(&value).into_owned())
            ),
        )?;
        let again = bucket
            .swap("cas", &read.version, Bytes::from_static(b"one"), &mut swap)
            .await?;
        check(
            again == SwapOutcome::Swapped,
            format!("{policy}: the retried swap reported {again:?} (its record was evicted)"),
        )?;
    }
    Ok(())
}

/// The request records of a slot are one hash and one sorted set, without a TTL; each
/// increment or swap in the slot prunes at most 16 + 2N records older than ten minutes (N records
/// written by the script: batched increments write several).
async fn request_records_are_pruned_in_bounded_steps(server: RedisServer) -> TestResult {
    let client = redis::Client::open(server.url())?;
    let mut raw = client.get_multiplexed_async_connection().await?;
    let bucket = provider(&server).await.open("ns").await?;
    let mut data_key = kv_redis::key_prefix("ns");
    data_key.extend_from_slice(b"counter");
    let tag = kv_redis::slot::slot_tag(kv_redis::slot::key_slot(&data_key));
    let (records, times) = (
        format!("wasi-kv-requests/{{{tag}}}"),
        format!("wasi-kv-requests/{{{tag}}}/times"),
    );
    // 20 records from long ago (time 0) and one from now.
    for i in 0..20 {
        redis::pipe()
            .cmd("HSET")
            .arg(&records)
            .arg(format!("old-{i}"))
            .arg("1")
            .cmd("ZADD")
            .arg(&times)
            .arg(0)
            .arg(format!("old-{i}"))
            .query_async::<()>(&mut raw)
            .await?;
    }
    let count = |raw: &mut redis::aio::MultiplexedConnection| {
        let mut raw = raw.clone();
        let (records, times) = (records.clone(), times.clone());
        async move {
            let (hashed, timed): (u64, u64) = redis::pipe()
                .cmd("HLEN")
                .arg(&records)
                .cmd("ZCARD")
                .arg(&times)
                .query_async(&mut raw)
                .await?;
            Ok::<_, Failed>((hashed, timed))
        }
    };
    bucket
        .increment("counter", 1, CounterRange::Signed, &mut Attempt::new())
        .await?;
    let after_one = count(&mut raw).await?;
    // A script that records N requests prunes up to 16 + 2N old ones: 18 here.
    check(
        after_one == (3, 3),
        format!("after one increment: {after_one:?} records, expected 2 old + 1 new"),
    )?;
    bucket
        .increment("counter", 1, CounterRange::Signed, &mut Attempt::new())
        .await?;
    let after_two = count(&mut raw).await?;
    check(
        after_two == (2, 2),
        format!("after two increments: {after_two:?} records, expected the 2 new"),
    )?;
    for key in [&records, &times] {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut raw).await?;
        check(ttl == -1, format!("{key} has a TTL ({ttl} ms): evictable"))?;
    }
    Ok(())
}

/// A server whose maxmemory policy may evict any key (`allkeys-*`) is refused when the
/// provider connects, with a configuration error that says why and how to accept it
/// (`allow_eviction`); the policy is read from `INFO memory` where `CONFIG` is denied.
/// `noeviction` and `volatile-*` are accepted.
async fn allkeys_policy_is_refused_at_connect(server: RedisServer) -> TestResult {
    let client = redis::Client::open(server.url())?;
    let mut raw = client.get_multiplexed_async_connection().await?;
    let connect = |url: String| async move {
        let (_, spec) = kv_core::config::parse_short_form(&format!("r={url}"))
            .map_err(|err| Failed::from(err.to_string()))?;
        Ok::<_, Failed>(kv_redis::RedisFactory.connect(&spec).await.map(drop))
    };
    let set_policy = |policy: &'static str| {
        let mut command = redis::cmd("CONFIG");
        command.arg("SET").arg("maxmemory-policy").arg(policy);
        command
    };
    set_policy("allkeys-lru")
        .query_async::<()>(&mut raw)
        .await?;
    let refused = connect(server.url()).await?;
    let message = refused
        .err()
        .map(|err| err.to_string())
        .ok_or_else(|| Failed::from("a server with maxmemory-policy allkeys-lru was accepted"))?;
    check(
        message.contains("allkeys-lru") && message.contains("allow_eviction"),
        format!("refusal: {message}"),
    )?;
    connect(format!("{}?allow_eviction=true", server.url()))
        .await?
        .map_err(|err| Failed::from(format!("allow_eviction = true: {err}")))?;
    // A user that may not run CONFIG: the policy comes from INFO memory.
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("limited")
        .arg("on")
        .arg(">limited-secret")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-config")
        .query_async::<()>(&mut raw)
        .await?;
    let limited = server
        .url()
        .replace("redis://", "redis://limited:limited-secret@");
    let message = connect(limited.clone())
        .await?
        .err()
        .map(|err| err.to_string())
        .ok_or_else(|| Failed::from("allkeys-lru accepted for a user without CONFIG"))?;
    check(
        message.contains("allkeys-lru") && !message.contains("limited-secret"),
        format!("refusal without CONFIG: {message}"),
    )?;
    for policy in ["volatile-lru", "noeviction"] {
        set_policy(policy).query_async::<()>(&mut raw).await?;
        for url in [server.url(), limited.clone()] {
            connect(url)
                .await?
                .map_err(|err| Failed::from(format!("{policy}: {err}")))?;
        }
    }
    Ok(())
}

/// A store on `server` through a loopback fault proxy, with `query` added to its URL.
async fn behind_a_proxy(
    server: &RedisServer,
    query: &str,
    limits: Limits,
) -> Result<(kv_testkit::faults::FaultProxy, kv_core::KvStore), Failed> {
    use kv_testkit::faults::{FaultProxy, Protocol};
    let addr: std::net::SocketAddr = server
        .url()
        .trim_start_matches("redis://")
        .trim_end_matches("/0")
        .parse()?;
    let proxy = FaultProxy::start(addr, Protocol::Tcp).await?;
    let url = format!("r=redis://{}/0{query}", proxy.addr());
    let (_, spec) = kv_core::config::parse_short_form(&url)?;
    let provider = kv_redis::RedisFactory.connect(&spec).await?;
    let stores = Stores::builder(limits)
        .store("s", provider, "stall", Access::ReadWrite)
        .build();
    Ok((proxy, stores.open("s").await?))
}

/// A connection whose replies stop (a half-open TCP connection, a partition swallowing the
/// request) is replaced after a command times out: the retry goes out on a new connection.
/// Before, every later command rode the stuck connection and timed out too (here for the 120 s
/// the proxy holds a stalled request).
async fn a_connection_that_stops_answering_is_replaced(server: RedisServer) -> TestResult {
    use kv_testkit::faults::Fault;
    let (proxy, store) = behind_a_proxy(&server, "?response_timeout_ms=300", limits()).await?;
    store.set("k", b"v".to_vec()).await?;
    proxy.next(Fault::Stall, 1);
    let started = Instant::now();
    let value = store.get("k").await;
    check(
        matches!(&value, Ok(Some(v)) if v.as_slice() == b"v"),
        format!("a read after one stalled request: {value:?}"),
    )?;
    check(
        started.elapsed() < Duration::from_secs(2),
        format!("took {:?}", started.elapsed()),
    )?;
    for _ in 0..5 {
        store.set("k", b"w".to_vec()).await?;
    }
    Ok(())
}

/// The same, when the host's operation timeout (here 1.5 s) gives up before redis-rs's
/// response timeout (5 s by default) would: the dropped command marks its connection stuck.
/// Before, the next command rode the stuck connection and timed out too.
async fn a_command_given_up_by_the_host_replaces_its_connection(server: RedisServer) -> TestResult {
    let limits = provider_tests::limits(Duration::from_millis(1500), 4);
    use kv_testkit::faults::Fault;
    let (proxy, store) = behind_a_proxy(&server, "", limits).await?;
    store.set("k", b"v".to_vec()).await?;
    proxy.next(Fault::Stall, 1);
    let stalled = store.get("k").await;
    check(
        stalled.is_err(),
        format!("a stalled read answered: {stalled:?}"),
    )?;
    let started = Instant::now();
    let value = store.get("k").await;
    check(
        matches!(&value, Ok(Some(v)) if v.as_slice() == b"v"),
        format!("the read after the given-up one: {value:?}"),
    )?;
    check(
        started.elapsed() < Duration::from_secs(1),
        format!("took {:?}", started.elapsed()),
    )
}

/// An increment whose batch was sent by a caller that then gave up is applied by that copy of
/// the script whenever it arrives: its own next script failing, even in a way that applies
/// nothing (here the server out of memory: `OOM`, which is not retried), must not tell its
/// caller "failed", or a guest that retries applies it twice. It is "outcome unknown".
///
/// B's script is held 400 ms by the proxy, so L and X queue behind it; L takes the turn and
/// sends one script for both, which the proxy holds 4 s; L's caller gives up after 1.8 s
/// (the connection is replaced), and X sends its own script, which meets `OOM`. Then memory
/// is freed, and L's copy arrives and applies both.
async fn an_increment_sent_by_a_caller_that_gave_up_is_never_told_failed(
    server: RedisServer,
) -> TestResult {
    use kv_testkit::faults::Fault;
    let limits = provider_tests::limits(Duration::from_secs(3), 4);
    let (proxy, store) = behind_a_proxy(&server, "", limits).await?;
    let client = redis::Client::open(server.url())?;
    let mut raw = client.get_multiplexed_async_connection().await?;
    let config = |maxmemory: u64| {
        let mut raw = raw.clone();
        async move {
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory")
                .arg(maxmemory)
                .query_async::<()>(&mut raw)
                .await
        }
    };
    store.increment("warm", 1).await?;
    proxy.next(Fault::Latency(Duration::from_millis(400)), 1);
    proxy.next(Fault::Latency(Duration::from_secs(4)), 1);
    let started = Instant::now();
    let blocker = {
        let store = store.clone();
        tokio::spawn(async move { store.increment("n", 1).await })
    };
    while proxy.pending() == 2 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Polled in this order, L waits for the turn before X: L sends the script for both.
    let leader = tokio::time::timeout(Duration::from_millis(1800), store.increment("n", 1));
    let other = async {
        let answer = store.increment("n", 1).await;
        // Answered: memory back, before L's copy arrives.
        config(0).await.map(|()| answer)
    };
    let out_of_memory = async {
        let total = blocker.await?;
        check(total.as_ref().ok() == Some(&1), format!("B: {total:?}"))?;
        config(1).await?;
        Ok::<(), Failed>(())
    };
    let (leader, other, out_of_memory) = tokio::join!(leader, other, out_of_memory);
    out_of_memory?;
    let other = other?;
    check(leader.is_err(), format!("L was not given up: {leader:?}"))?;
    check(
        proxy.pending() == 0,
        "the script of L and X never reached the proxy",
    )?;
    // Outcome unknown, and because of the out-of-memory refusal (on a fresh connection), not
    // because X timed out behind L's held script: that would not reach the sent mark.
    check(
        matches!(&other, Err(err) if err.to_string().contains(kv_core::store::OUTCOME_UNKNOWN)
            && err.to_string().contains("out of memory")),
        format!("X, sent by L, was told {other:?}"),
    )?;
    // L's copy arrives about 4.4 s after the start and applies L and X.
    let mut key = kv_redis::key_prefix("stall");
    key.extend_from_slice(b"n");
    let mut total: Option<String> = None;
    while started.elapsed() < Duration::from_secs(15) {
        total = redis::cmd("GET").arg(&key).query_async(&mut raw).await?;
        if total.as_deref() == Some("3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check(
        total.as_deref() == Some("3"),
        format!("counter {total:?}: L's copy did not apply B, L and X"),
    )
}

/// A listing resumed after the server restarted at the same address (its data kept in an
/// append-only file) misses no key: the restarted process rebuilt its table with a new hash
/// seed, so the old `SCAN` cursor means nothing to it, and the listing starts over (S5:
/// repeats, never misses).
async fn a_listing_resumed_after_a_restart_misses_no_key(_server: RedisServer) -> TestResult {
    let mut server = RedisServer::start_durable().map_err(Failed::from)?;
    let bucket = provider(&server).await.open("restart").await?;
    let keys: Vec<String> = (0..3000).map(|i| format!("key-{i:04}")).collect();
    let entries: Vec<(String, kv_core::Bytes)> = keys
        .iter()
        .map(|key| (key.clone(), kv_core::Bytes::from_static(b"v")))
        .collect();
    bucket.set_many(&entries).await?;
    let first = bucket.list_keys(None, 300).await?;
    let mut listed: std::collections::HashSet<String> = first.keys.into_iter().collect();
    let mut cursor = first.cursor;
    server.stop();
    server.restart().map_err(Failed::from)?;
    for _ in 0..100 {
        let Some(resume) = cursor.clone() else {
            break;
        };
        // The first command after the restart may meet the dropped connection.
        let page = match bucket.list_keys(Some(&resume), 300).await {
            Ok(page) => page,
            Err(err) if err.is_transient() => continue,
            Err(err) => return Err(err.into()),
        };
        listed.extend(page.keys);
        cursor = page.cursor;
    }
    check(cursor.is_none(), "the listing did not end")?;
    let missed: Vec<&String> = keys.iter().filter(|key| !listed.contains(*key)).collect();
    check(
        missed.is_empty(),
        format!(
            "{} of 3000 keys missed, e.g. {:?}",
            missed.len(),
            &missed[..missed.len().min(3)]
        ),
    )
}

/// A user whose ACL denies `INFO` (least privilege: no `@dangerous`) still lists keys: the
/// server process is then named by its address alone.
async fn listing_works_for_a_user_denied_info(server: RedisServer) -> TestResult {
    let client = redis::Client::open(server.url())?;
    let mut raw = client.get_multiplexed_async_connection().await?;
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("lister")
        .arg("on")
        .arg(">secret-pw")
        .arg("~*")
        .arg("+@all")
        .arg("-@dangerous")
        .arg("+config|get")
        .query_async::<()>(&mut raw)
        .await?;
    let url = server
        .url()
        .replace("redis://", "redis://lister:secret-pw@");
    let (_, spec) = kv_core::config::parse_short_form(&format!("r={url}")).expect("url parses");
    let provider = kv_redis::RedisFactory
        .connect(&spec)
        .await
        .map_err(|err| Failed::from(err.to_string()))?;
    let bucket = provider.open("acl").await?;
    for i in 0..500 {
        bucket
            .set(&format!("k{i}"), kv_core::Bytes::from_static(b"v"))
            .await?;
    }
    let mut listed = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let page = bucket.list_keys(cursor.as_deref(), 100).await?;
        listed.extend(page.keys);
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    check(
        cursor.is_none() && listed.len() == 500,
        format!("{} of 500 listed", listed.len()),
    )
}

/// An unsigned increment that would go below zero writes nothing: a counter that did not exist
/// still does not (it was left at `0`, and a watcher saw a write for a call that wrote nothing).
async fn an_unsigned_increment_below_zero_leaves_a_missing_counter_missing(
    server: RedisServer,
) -> TestResult {
    let bucket = provider(&server).await.open("ns").await?;
    let refused = bucket
        .increment(
            "missing",
            -1,
            kv_core::CounterRange::Unsigned,
            &mut kv_core::Attempt::new(),
        )
        .await
        .expect_err("below zero in the unsigned range");
    check(refused.kind() == ErrorKind::Overflow, refused.to_string())?;
    check(
        !bucket.exists("missing").await?,
        "the refused increment left the counter existing",
    )?;
    bucket
        .set("present", kv_core::Bytes::from_static(b"3"))
        .await?;
    let refused = bucket
        .increment(
            "present",
            -4,
            kv_core::CounterRange::Unsigned,
            &mut kv_core::Attempt::new(),
        )
        .await
        .expect_err("below zero in the unsigned range");
    check(refused.kind() == ErrorKind::Overflow, refused.to_string())?;
    check(
        bucket.get("present").await?.as_deref() == Some(&b"3"[..]),
        "the refused increment changed an existing counter",
    )
}

/// A watcher holding another log's position (a restart) gets a gap at once, from a feed
/// whose subscription may still be opening: the position that gap hands out must be of the
/// log that follows the subscription, not of one about to start again (a second resync).
async fn a_gap_answered_while_subscribing_names_the_subscribed_log(
    server: RedisServer,
) -> TestResult {
    let provider = provider(&server).await;
    let stores = Stores::builder(limits())
        .store(
            "watched",
            provider,
            "gap-while-subscribing",
            Access::ReadWrite,
        )
        .build();
    let store = stores.open("watched").await?;
    let feed = store.change_feed().map_err(Failed::from)?;
    let elsewhere = kv_core::watch::Position::numbered(&kv_core::watch::new_log_id(), 7);
    let wait = Duration::from_millis(200);
    let kv_core::watch::Changes::Gap { position, .. } =
        feed.changes_after(&elsewhere, 10, 1 << 20, wait).await?
    else {
        return Err("a position of another log is not a gap".into());
    };
    store.set("after", b"1".to_vec()).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match feed.changes_after(&position, 10, 1 << 20, wait).await? {
            kv_core::watch::Changes::Next { changes, .. } if !changes.is_empty() => {
                let keys: Vec<&str> = changes.iter().map(|c| c.change.key()).collect();
                return check(
                    keys == ["after"],
                    format!("changes after the gap: {keys:?}"),
                );
            }
            kv_core::watch::Changes::Next { .. } => {}
            kv_core::watch::Changes::Gap { why, .. } => {
                return Err(format!("a second gap right after the first: {why}").into());
            }
        }
        check(
            Instant::now() < deadline,
            "the write after the gap did not arrive within 10 s",
        )?;
    }
}

fn main() -> ExitCode {
    let installed = kv_testkit::emulator::find_program("redis-server").is_some();
    provider_tests::main::<RedisServer>(
        "redis",
        installed,
        RedisServer::start,
        vec![
            (
                "glob_characters_in_namespaces_and_keys_stay_isolated",
                |s| Box::pin(glob_characters_stay_isolated(s)),
            ),
            (
                "an_unsigned_increment_below_zero_leaves_a_missing_counter_missing",
                |s| Box::pin(an_unsigned_increment_below_zero_leaves_a_missing_counter_missing(s)),
            ),
            (
                "non_decimal_value_from_another_client_is_not_an_integer",
                |s| Box::pin(foreign_non_decimal_value(s)),
            ),
            ("server_stop_gives_unavailable_and_restart_recovers", |s| {
                Box::pin(server_restart(s))
            }),
            ("wait_replicas_without_a_replica_is_timeout", |s| {
                Box::pin(wait_replicas_without_a_replica_is_timeout(s))
            }),
            ("a_listing_resumed_after_a_restart_misses_no_key", |s| {
                Box::pin(a_listing_resumed_after_a_restart_misses_no_key(s))
            }),
            ("listing_works_for_a_user_denied_info", |s| {
                Box::pin(listing_works_for_a_user_denied_info(s))
            }),
            ("listing_under_churn_misses_no_stable_key", |s| {
                Box::pin(listing_under_churn_misses_no_stable_key(s))
            }),
            ("get_many_within_checks_the_budget_before_transfer", |s| {
                Box::pin(get_many_within_checks_the_budget_before_transfer(s))
            }),
            ("request_records_survive_volatile_eviction", |s| {
                Box::pin(request_records_survive_volatile_eviction(s))
            }),
            ("request_records_are_pruned_in_bounded_steps", |s| {
                Box::pin(request_records_are_pruned_in_bounded_steps(s))
            }),
            ("allkeys_policy_is_refused_at_connect", |s| {
                Box::pin(allkeys_policy_is_refused_at_connect(s))
            }),
            ("a_connection_that_stops_answering_is_replaced", |s| {
                Box::pin(a_connection_that_stops_answering_is_replaced(s))
            }),
            (
                "a_command_given_up_by_the_host_replaces_its_connection",
                |s| Box::pin(a_command_given_up_by_the_host_replaces_its_connection(s)),
            ),
            (
                "a_gap_answered_while_subscribing_names_the_subscribed_log",
                |s| Box::pin(a_gap_answered_while_subscribing_names_the_subscribed_log(s)),
            ),
            (
                "an_increment_sent_by_a_caller_that_gave_up_is_never_told_failed",
                |s| Box::pin(an_increment_sent_by_a_caller_that_gave_up_is_never_told_failed(s)),
            ),
        ],
    )
}
