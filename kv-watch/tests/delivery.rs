//! The delivery loop against the in-memory provider, with a watcher written in Rust: what
//! the guarantees of docs/semantics.md S13 rest on, without a component in the way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kv_core::{Access, KvStore, Limits, MemoryProvider, Stores};
use kv_watch::{Delivery, WatchOptions, Watcher};

/// Records what it is given (shared, so a test sees it while delivery runs); fails the keys
/// named in `failing`.
#[derive(Default, Clone)]
struct Recording {
    seen: Arc<Mutex<Vec<String>>>,
    failing: Vec<String>,
}

impl Recording {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl Watcher for Recording {
    async fn on_set(&mut self, _: &KvStore, key: &str, value: &[u8]) -> Result<(), String> {
        if self.failing.iter().any(|failing| failing == key) {
            return Err(format!("refusing {key}"));
        }
        self.seen
            .lock()
            .unwrap()
            .push(format!("set {key} {}", String::from_utf8_lossy(value)));
        Ok(())
    }

    async fn on_delete(&mut self, _: &KvStore, key: &str) -> Result<(), String> {
        self.seen.lock().unwrap().push(format!("delete {key}"));
        Ok(())
    }
}

fn stores() -> Stores {
    let provider = Arc::new(MemoryProvider::new());
    Stores::builder(Limits::default())
        .store("data", provider.clone(), "data", Access::ReadWrite)
        .store("state", provider.clone(), "state", Access::ReadWrite)
        .store("dead", provider, "dead", Access::ReadOnly)
        .build()
}

fn options() -> WatchOptions {
    WatchOptions {
        wait: Duration::from_millis(20),
        max_attempts: 2,
        backoff: kv_core::Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
        },
        ..WatchOptions::default()
    }
}

/// Runs `delivery` until `watcher` has seen `count` events, then 200 ms more (to catch any
/// extra), then stops it; at most 20 s.
async fn deliver_until(
    delivery: &Delivery,
    watcher: &Recording,
    from: kv_watch::Position,
    count: usize,
) -> kv_core::Result<kv_watch::Delivered> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut running = watcher.clone();
    let run = delivery.run(&mut running, from, stopped);
    tokio::pin!(run);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut enough_at = None;
    loop {
        tokio::select! {
            result = &mut run => return result,
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        let now = tokio::time::Instant::now();
        if watcher.seen().len() >= count {
            enough_at.get_or_insert(now);
        }
        if now > deadline || enough_at.is_some_and(|at| now - at > Duration::from_millis(200)) {
            let _ = stop.send(true);
        }
    }
}

#[tokio::test]
async fn a_restart_resumes_from_the_checkpoint() {
    let stores = stores();
    let data = stores.open("data").await.unwrap();
    let state = stores.open("state").await.unwrap();
    let delivery =
        Delivery::new("w", data.clone(), state.clone(), state.clone(), options()).unwrap();
    let from = delivery.start().await.unwrap();
    data.set("a", b"1".to_vec()).await.unwrap();
    data.delete("a").await.unwrap();
    let first = Recording::default();
    deliver_until(&delivery, &first, from, 2).await.unwrap();
    assert_eq!(first.seen(), ["set a 1", "delete a"]);
    drop(delivery);
    // A new delivery (a restarted host) takes the checkpoint, not the head.
    data.set("b", b"2".to_vec()).await.unwrap();
    let again = Delivery::new("w", data.clone(), state.clone(), state.clone(), options()).unwrap();
    let from = again.start().await.unwrap();
    assert!(
        state.get(&again.checkpoint_key()).await.unwrap().is_some(),
        "the checkpoint is in the state store"
    );
    // More changes in the new log than the old checkpoint's number: read as a number of this
    // log, the checkpoint would skip the first two.
    data.set("c", b"3".to_vec()).await.unwrap();
    data.set("d", b"4".to_vec()).await.unwrap();
    data.set("e", b"5".to_vec()).await.unwrap();
    let second = Recording::default();
    let delivered = deliver_until(&again, &second, from, 4).await.unwrap();
    // The in-memory log started again with the new follower, so the checkpoint is a gap:
    // the resync delivers every live key instead.
    assert_eq!(delivered.resyncs, 1);
    let mut seen = second.seen();
    seen.sort();
    assert_eq!(seen, ["set b 2", "set c 3", "set d 4", "set e 5"]);
}

#[tokio::test]
async fn a_watcher_too_far_behind_is_resynchronised_from_a_listing() {
    let stores = stores();
    let data = stores.open("data").await.unwrap();
    let state = stores.open("state").await.unwrap();
    let delivery =
        Delivery::new("w", data.clone(), state.clone(), state.clone(), options()).unwrap();
    let from = delivery.start().await.unwrap();
    // More changes than the in-memory log keeps, over three keys, before delivery starts.
    for n in 0..100_002u32 {
        data.set(&format!("k{}", n % 3), n.to_string().into_bytes())
            .await
            .unwrap();
    }
    data.delete("k2").await.unwrap();
    let watcher = Recording::default();
    let delivered = deliver_until(&delivery, &watcher, from, 2).await.unwrap();
    assert_eq!(delivered.resyncs, 1);
    let mut seen = watcher.seen();
    seen.sort();
    assert_eq!(seen, ["set k0 99999", "set k1 100000"]);
}

#[tokio::test]
async fn a_dead_letter_that_cannot_be_written_stops_delivery_before_the_change() {
    let stores = stores();
    let data = stores.open("data").await.unwrap();
    let state = stores.open("state").await.unwrap();
    let dead = stores.open("dead").await.unwrap();
    let delivery = Delivery::new("w", data.clone(), state.clone(), dead, options()).unwrap();
    let from = delivery.start().await.unwrap();
    data.set("poison", b"x".to_vec()).await.unwrap();
    let watcher = Recording {
        failing: vec!["poison".into()],
        ..Recording::default()
    };
    let err = deliver_until(&delivery, &watcher, from.clone(), usize::MAX)
        .await
        .expect_err("the dead-letter store is read-only");
    assert_eq!(err.kind(), kv_core::ErrorKind::AccessDenied, "{err}");
    let checkpoint = state
        .get(&delivery.checkpoint_key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        checkpoint,
        from.0.as_bytes(),
        "the checkpoint did not move past the change"
    );
}

#[tokio::test]
async fn a_stop_during_retries_leaves_the_change_to_the_next_run() {
    let stores = stores();
    let data = stores.open("data").await.unwrap();
    let state = stores.open("state").await.unwrap();
    let mut slow_retries = options();
    slow_retries.max_attempts = 5;
    slow_retries.backoff = kv_core::Backoff {
        initial: Duration::from_secs(60),
        max: Duration::from_secs(60),
    };
    let delivery = Delivery::new(
        "w",
        data.clone(),
        state.clone(),
        state.clone(),
        slow_retries,
    )
    .unwrap();
    let from = delivery.start().await.unwrap();
    data.set("ok", b"1".to_vec()).await.unwrap();
    data.set("poison", b"x".to_vec()).await.unwrap();
    let watcher = Recording {
        failing: vec!["poison".into()],
        ..Recording::default()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut running = watcher.clone();
    let started = tokio::time::Instant::now();
    let run = delivery.run(&mut running, from, stopped);
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => panic!("stopped by itself: {result:?}"),
        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    let _ = stop.send(true);
    let delivered = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("a stop ends the backoff at once")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(watcher.seen(), ["set ok 1"]);
    assert_eq!(delivered.dead_letters, 0, "a stop is not a give-up");
    // The checkpoint is after `ok`, before `poison`: the next run delivers `poison` again.
    let again = Recording::default();
    let from = delivery.start().await.unwrap();
    deliver_until(&delivery, &again, from, 1).await.unwrap();
    assert_eq!(again.seen(), ["set poison x"]);
}

#[tokio::test]
async fn a_dead_letter_too_large_for_its_store_names_the_value_instead() {
    let provider = Arc::new(MemoryProvider::new());
    let stores = stores();
    let small = Stores::builder(Limits {
        max_value_bytes: 1024,
        ..Limits::default()
    })
    .store("dead", provider, "dead", Access::ReadWrite)
    .build();
    let data = stores.open("data").await.unwrap();
    let state = stores.open("state").await.unwrap();
    let dead = small.open("dead").await.unwrap();
    let delivery = Delivery::new("w", data.clone(), state, dead.clone(), options()).unwrap();
    let from = delivery.start().await.unwrap();
    data.set("big", vec![7u8; 2_000]).await.unwrap();
    let watcher = Recording {
        failing: vec!["big".into()],
        ..Recording::default()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut running = watcher.clone();
    let run = delivery.run(&mut running, from, stopped);
    tokio::pin!(run);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::select! {
            result = &mut run => panic!("stopped by itself: {result:?}"),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        let written = !dead.list_keys(None).await.unwrap().keys.is_empty();
        if written || tokio::time::Instant::now() > deadline {
            break;
        }
    }
    let _ = stop.send(true);
    run.await.unwrap();
    let page = dead.list_keys(None).await.unwrap();
    assert_eq!(page.keys.len(), 1, "one dead letter");
    let letter: serde_json::Value =
        serde_json::from_slice(&dead.get(&page.keys[0]).await.unwrap().unwrap()).unwrap();
    assert_eq!(letter["key"], "big");
    assert_eq!(letter["value_bytes"], 2_000);
    assert!(letter.get("value_base64").is_none(), "{letter}");
    assert_eq!(letter["value_sha256"].as_str().unwrap().len(), 64);
}

/// A checkpoint that cannot be saved (the state store refuses every write) stops delivery
/// with the error rather than go on without one, and the change delivered before it is
/// delivered again by the next run: at least once, never skipped.
#[tokio::test]
async fn a_checkpoint_that_cannot_be_saved_stops_delivery_and_the_change_comes_again() {
    let (state_provider, faults) =
        kv_testkit::faults::Lossy::provider(Arc::new(MemoryProvider::new()));
    let mut limits = Limits::default();
    limits.retry.max_attempts = 2;
    let stores = Stores::builder(limits)
        .store(
            "data",
            Arc::new(MemoryProvider::new()),
            "data",
            Access::ReadWrite,
        )
        .store("state", state_provider, "state", Access::ReadWrite)
        .build();
    let data = stores.open("data").await.unwrap();
    let state = stores.open("state").await.unwrap();
    let delivery =
        Delivery::new("w", data.clone(), state.clone(), state.clone(), options()).unwrap();
    let from = delivery.start().await.unwrap();
    data.set("a", b"1".to_vec()).await.unwrap();
    faults.refuse_every(1);
    let first = Recording::default();
    let err = deliver_until(&delivery, &first, from.clone(), usize::MAX)
        .await
        .expect_err("the state store refuses every write");
    assert_eq!(err.kind(), kv_core::ErrorKind::Unavailable, "{err}");
    assert_eq!(
        first.seen(),
        ["set a 1"],
        "delivered before the save failed"
    );
    faults.refuse_every(0);
    let checkpoint = state
        .get(&delivery.checkpoint_key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint, from.0.as_bytes(), "the checkpoint did not move");
    let resumed = delivery.start().await.unwrap();
    let second = Recording::default();
    deliver_until(&delivery, &second, resumed, 1).await.unwrap();
    assert_eq!(second.seen(), ["set a 1"], "the next run delivers it again");
}

/// A watcher without a checkpoint asks the feed for its head: a lost reply there is retried
/// (as a read of the feed is), not a failed start; and lost replies of the feed's reads
/// while delivering lose and repeat nothing.
#[tokio::test]
async fn lost_replies_of_the_feed_are_retried_at_start_and_while_delivering() {
    let (data_provider, faults) =
        kv_testkit::faults::Lossy::provider(Arc::new(MemoryProvider::new()));
    let state_provider = Arc::new(MemoryProvider::new());
    let stores = Stores::builder(Limits::default())
        .store("data", data_provider, "data", Access::ReadWrite)
        .store("state", state_provider, "state", Access::ReadWrite)
        .build();
    let data = stores.open("data").await.unwrap();
    let state = stores.open("state").await.unwrap();
    let delivery =
        Delivery::new("w", data.clone(), state.clone(), state.clone(), options()).unwrap();
    faults.lose_next(2);
    let from = delivery
        .start()
        .await
        .expect("the head asked again after two lost replies");
    for n in 0..20 {
        data.set(&format!("k{n:02}"), format!("v{n}").into_bytes())
            .await
            .unwrap();
    }
    // Every third call loses its reply: here only the feed's reads are made.
    faults.lose_every(3);
    let watcher = Recording::default();
    deliver_until(&delivery, &watcher, from, 20).await.unwrap();
    faults.lose_every(0);
    let expected: Vec<String> = (0..20).map(|n| format!("set k{n:02} v{n}")).collect();
    assert_eq!(watcher.seen(), expected, "each change once, in order");
}
