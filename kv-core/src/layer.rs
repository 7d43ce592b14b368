//! Layers: a [`Bucket`] wrapped in another, in the manner of OpenDAL's `Layer` and
//! `LayeredAccess`.
//!
//! A [`Layer`] turns a bucket into a wrapped one; [`LayeredProvider`] applies it to every bucket
//! a provider opens. A layer's bucket implements [`LayeredBucket`] rather than [`Bucket`]: every
//! call it does not override is forwarded to [`LayeredBucket::inner`], through two hooks that
//! see every forwarded call ([`LayeredBucket::before`] and [`LayeredBucket::after`]). So a
//! layer that loses replies writes one `after`, a layer that counts or delays calls one
//! `before`, and a deliberately broken provider overrides only the calls it breaks.
//!
//! Tests use layers for fault injection over any provider's bucket. The checked store's own
//! concerns (validation, cursors, retries, logging) sit above the bucket in
//! [`KvStore`](crate::KvStore), so a layer sees each provider call, retries included.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! use kv_core::layer::{Layer, LayeredBucket, LayeredProvider, Op};
//! use kv_core::{Access, Bucket, Limits, MemoryProvider, Result, Stores};
//!
//! /// Counts the calls that reach the provider.
//! struct Counting(Arc<AtomicUsize>);
//!
//! struct CountingBucket {
//!     inner: Arc<dyn Bucket>,
//!     calls: Arc<AtomicUsize>,
//! }
//!
//! impl Layer for Counting {
//!     fn layer(&self, inner: Arc<dyn Bucket>) -> Arc<dyn Bucket> {
//!         Arc::new(CountingBucket { inner, calls: self.0.clone() })
//!     }
//! }
//!
//! #[async_trait::async_trait]
//! impl LayeredBucket for CountingBucket {
//!     fn inner(&self) -> &dyn Bucket {
//!         &*self.inner
//!     }
//!     async fn before(&self, _: Op) -> Result<()> {
//!         self.calls.fetch_add(1, Ordering::Relaxed);
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let provider = LayeredProvider::new(Arc::new(MemoryProvider::new()), Counting(calls.clone()));
//! let stores = Stores::builder(Limits::default())
//!     .store("s", Arc::new(provider), "ns", Access::ReadWrite)
//!     .build();
//! let store = stores.open("s").await?;
//! store.set("k", b"v".to_vec()).await?;
//! assert_eq!(store.get("k").await?, Some(b"v".to_vec()));
//! assert_eq!(calls.load(Ordering::Relaxed), 2);
//! # Ok::<(), kv_core::KvError>(())
//! # }).unwrap();
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::capabilities::Capabilities;
use crate::counter::CounterRange;
use crate::error::Result;
use crate::provider::{
    Attempt, Bucket, Bytes, ImmediateBucket, KeyPage, Provider, StoredValue, SwapOutcome, Version,
    Versioned,
};

/// Wraps a bucket in another.
pub trait Layer: Send + Sync + 'static {
    /// `inner`, wrapped.
    fn layer(&self, inner: Arc<dyn Bucket>) -> Arc<dyn Bucket>;
}

/// A provider whose every bucket is wrapped by a [`Layer`].
pub struct LayeredProvider {
    inner: Arc<dyn Provider>,
    layer: Box<dyn Layer>,
}

impl LayeredProvider {
    /// `inner`, with `layer` around each bucket it opens.
    pub fn new(inner: Arc<dyn Provider>, layer: impl Layer) -> LayeredProvider {
        LayeredProvider {
            inner,
            layer: Box::new(layer),
        }
    }
}

#[async_trait]
impl Provider for LayeredProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn open(&self, namespace: &str) -> Result<Arc<dyn Bucket>> {
        Ok(self.layer.layer(self.inner.open(namespace).await?))
    }
}

/// A [`Bucket`] call, as a layer's hooks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// [`Bucket::get`].
    Get,
    /// [`Bucket::set`].
    Set,
    /// [`Bucket::set_with_ttl`].
    SetWithTtl,
    /// [`Bucket::delete`].
    Delete,
    /// [`Bucket::exists`].
    Exists,
    /// [`Bucket::list_keys`].
    ListKeys,
    /// [`Bucket::get_with_ttl`].
    GetWithTtl,
    /// [`Bucket::increment`].
    Increment,
    /// [`Bucket::read_versioned`].
    ReadVersioned,
    /// [`Bucket::swap`].
    Swap,
    /// [`Bucket::get_many`] (and [`Bucket::get_many_within`], which goes through it).
    GetMany,
    /// [`Bucket::set_many`].
    SetMany,
    /// [`Bucket::delete_many`].
    DeleteMany,
}

impl Op {
    /// The name the host's log gives the call.
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::SetWithTtl => "set-with-ttl",
            Op::Delete => "delete",
            Op::Exists => "exists",
            Op::ListKeys => "list-keys",
            Op::GetWithTtl => "get-with-ttl",
            Op::Increment => "increment",
            Op::ReadVersioned => "cas-read",
            Op::Swap => "swap",
            Op::GetMany => "get-many",
            Op::SetMany => "set-many",
            Op::DeleteMany => "delete-many",
        }
    }
}

/// The bucket of a [`Layer`]: every [`Bucket`] call it does not override goes to
/// [`Self::inner`], after [`Self::before`] and through [`Self::after`]. Every `LayeredBucket`
/// is a [`Bucket`].
///
/// An overridden call runs the hooks only if it calls them. A layered bucket has no
/// [`ImmediateBucket`] face unless it offers one ([`Self::immediate`]): the host then makes
/// every call through the async methods, so the hooks see them all.
#[async_trait]
pub trait LayeredBucket: Send + Sync + 'static {
    /// The wrapped bucket.
    fn inner(&self) -> &dyn Bucket;

    /// Runs before each forwarded call; an error is the call's result, and the inner bucket is
    /// not called (a request refused before it reached the backend).
    async fn before(&self, _op: Op) -> Result<()> {
        Ok(())
    }

    /// Sees each forwarded call's result and returns the one the caller gets (a lost reply:
    /// `Ok` turned into an error after the inner bucket applied the call).
    fn after<T: Send>(&self, _op: Op, result: Result<T>) -> Result<T> {
        result
    }

    /// [`Bucket::immediate`]; none by default.
    fn immediate(&self) -> Option<&dyn ImmediateBucket> {
        None
    }

    /// [`Bucket::change_feed`]: the inner bucket's (a layer shapes calls, not changes).
    fn change_feed(&self) -> Option<Arc<dyn crate::watch::ChangeFeed>> {
        self.inner().change_feed()
    }

    /// [`Bucket::get`].
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.before(Op::Get).await?;
        self.after(Op::Get, self.inner().get(key).await)
    }

    /// [`Bucket::set`].
    async fn set(&self, key: &str, value: Bytes) -> Result<()> {
        self.before(Op::Set).await?;
        self.after(Op::Set, self.inner().set(key, value).await)
    }

    /// [`Bucket::set_with_ttl`].
    async fn set_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()> {
        self.before(Op::SetWithTtl).await?;
        let result = self.inner().set_with_ttl(key, value, ttl).await;
        self.after(Op::SetWithTtl, result)
    }

    /// [`Bucket::delete`].
    async fn delete(&self, key: &str) -> Result<()> {
        self.before(Op::Delete).await?;
        self.after(Op::Delete, self.inner().delete(key).await)
    }

    /// [`Bucket::exists`].
    async fn exists(&self, key: &str) -> Result<bool> {
        self.before(Op::Exists).await?;
        self.after(Op::Exists, self.inner().exists(key).await)
    }

    /// [`Bucket::list_keys`].
    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage> {
        self.before(Op::ListKeys).await?;
        self.after(Op::ListKeys, self.inner().list_keys(cursor, limit).await)
    }

    /// [`Bucket::get_with_ttl`].
    async fn get_with_ttl(&self, key: &str) -> Result<Option<StoredValue>> {
        self.before(Op::GetWithTtl).await?;
        self.after(Op::GetWithTtl, self.inner().get_with_ttl(key).await)
    }

    /// [`Bucket::increment`].
    async fn increment(
        &self,
        key: &str,
        delta: i64,
        range: CounterRange,
        attempt: &mut Attempt,
    ) -> Result<i64> {
        self.before(Op::Increment).await?;
        let result = self.inner().increment(key, delta, range, attempt).await;
        self.after(Op::Increment, result)
    }

    /// [`Bucket::read_versioned`].
    async fn read_versioned(&self, key: &str) -> Result<Versioned> {
        self.before(Op::ReadVersioned).await?;
        self.after(Op::ReadVersioned, self.inner().read_versioned(key).await)
    }

    /// [`Bucket::swap`].
    async fn swap(
        &self,
        key: &str,
        expected: &Version,
        value: Bytes,
        attempt: &mut Attempt,
    ) -> Result<SwapOutcome> {
        self.before(Op::Swap).await?;
        let result = self.inner().swap(key, expected, value, attempt).await;
        self.after(Op::Swap, result)
    }

    /// [`Bucket::get_many`].
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        self.before(Op::GetMany).await?;
        self.after(Op::GetMany, self.inner().get_many(keys).await)
    }

    /// [`Bucket::get_many_within`], forwarded like the rest, so the inner bucket's own budget
    /// check runs (Redis counts the bytes on the server before sending any). A layer that
    /// overrides [`Self::get_many`] overrides this too if the budgeted reads must change.
    async fn get_many_within(
        &self,
        keys: &[String],
        max_bytes: usize,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        self.before(Op::GetMany).await?;
        let result = self.inner().get_many_within(keys, max_bytes).await;
        self.after(Op::GetMany, result)
    }

    /// [`Bucket::set_many`].
    async fn set_many(&self, entries: &[(String, Bytes)]) -> Result<()> {
        self.before(Op::SetMany).await?;
        self.after(Op::SetMany, self.inner().set_many(entries).await)
    }

    /// [`Bucket::delete_many`].
    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        self.before(Op::DeleteMany).await?;
        self.after(Op::DeleteMany, self.inner().delete_many(keys).await)
    }
}

#[async_trait]
impl<L: LayeredBucket> Bucket for L {
    fn immediate(&self) -> Option<&dyn ImmediateBucket> {
        LayeredBucket::immediate(self)
    }

    fn change_feed(&self) -> Option<Arc<dyn crate::watch::ChangeFeed>> {
        LayeredBucket::change_feed(self)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        LayeredBucket::get(self, key).await
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<()> {
        LayeredBucket::set(self, key, value).await
    }

    async fn set_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()> {
        LayeredBucket::set_with_ttl(self, key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        LayeredBucket::delete(self, key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        LayeredBucket::exists(self, key).await
    }

    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage> {
        LayeredBucket::list_keys(self, cursor, limit).await
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<StoredValue>> {
        LayeredBucket::get_with_ttl(self, key).await
    }

    async fn increment(
        &self,
        key: &str,
        delta: i64,
        range: CounterRange,
        attempt: &mut Attempt,
    ) -> Result<i64> {
        LayeredBucket::increment(self, key, delta, range, attempt).await
    }

    async fn read_versioned(&self, key: &str) -> Result<Versioned> {
        LayeredBucket::read_versioned(self, key).await
    }

    async fn swap(
        &self,
        key: &str,
        expected: &Version,
        value: Bytes,
        attempt: &mut Attempt,
    ) -> Result<SwapOutcome> {
        LayeredBucket::swap(self, key, expected, value, attempt).await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        LayeredBucket::get_many(self, keys).await
    }

    async fn get_many_within(
        &self,
        keys: &[String],
        max_bytes: usize,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        LayeredBucket::get_many_within(self, keys, max_bytes).await
    }

    async fn set_many(&self, entries: &[(String, Bytes)]) -> Result<()> {
        LayeredBucket::set_many(self, entries).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        LayeredBucket::delete_many(self, keys).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::error::{ErrorKind, KvError};
    use crate::{Access, Limits, MemoryProvider, Stores};

    /// Loses the reply of the next `lose` calls (they apply), and records every call it sees.
    struct Lossy {
        lose: Arc<AtomicU32>,
        seen: Arc<Mutex<Vec<Op>>>,
    }

    struct LossyBucket {
        inner: Arc<dyn Bucket>,
        lose: Arc<AtomicU32>,
        seen: Arc<Mutex<Vec<Op>>>,
    }

    impl Layer for Lossy {
        fn layer(&self, inner: Arc<dyn Bucket>) -> Arc<dyn Bucket> {
            Arc::new(LossyBucket {
                inner,
                lose: self.lose.clone(),
                seen: self.seen.clone(),
            })
        }
    }

    #[async_trait]
    impl LayeredBucket for LossyBucket {
        fn inner(&self) -> &dyn Bucket {
            &*self.inner
        }

        async fn before(&self, op: Op) -> Result<()> {
            self.seen.lock().unwrap().push(op);
            Ok(())
        }

        fn after<T: Send>(&self, _: Op, result: Result<T>) -> Result<T> {
            let lose = self
                .lose
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            match result {
                Ok(_) if lose => Err(KvError::unavailable("the reply was lost (injected)")),
                other => other,
            }
        }
    }

    /// Refuses every `set` before it reaches the provider; everything else passes.
    struct RefusesSets;

    struct RefusesSetsBucket(Arc<dyn Bucket>);

    impl Layer for RefusesSets {
        fn layer(&self, inner: Arc<dyn Bucket>) -> Arc<dyn Bucket> {
            Arc::new(RefusesSetsBucket(inner))
        }
    }

    #[async_trait]
    impl LayeredBucket for RefusesSetsBucket {
        fn inner(&self) -> &dyn Bucket {
            &*self.0
        }

        async fn set(&self, _: &str, _: Bytes) -> Result<()> {
            Err(KvError::new(ErrorKind::AccessDenied, "no sets (injected)"))
        }
    }

    /// Records whether a budgeted batch read reached it as `get_many_within` (the bucket's own
    /// budget check, as Redis does it on the server) or as a plain `get_many`.
    struct RecordsBatchReads(Arc<Mutex<Vec<&'static str>>>);

    struct RecordsBatchReadsBucket(Arc<dyn Bucket>, Arc<Mutex<Vec<&'static str>>>);

    impl Layer for RecordsBatchReads {
        fn layer(&self, inner: Arc<dyn Bucket>) -> Arc<dyn Bucket> {
            Arc::new(RecordsBatchReadsBucket(inner, self.0.clone()))
        }
    }

    #[async_trait]
    impl LayeredBucket for RecordsBatchReadsBucket {
        fn inner(&self) -> &dyn Bucket {
            &*self.0
        }

        async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
            self.1.lock().unwrap().push("get_many");
            self.0.get_many(keys).await
        }

        async fn get_many_within(
            &self,
            keys: &[String],
            max_bytes: usize,
        ) -> Result<Vec<Option<Vec<u8>>>> {
            self.1.lock().unwrap().push("get_many_within");
            self.0.get_many_within(keys, max_bytes).await
        }
    }

    #[tokio::test]
    async fn a_layer_forwards_budgeted_batch_reads_as_they_are() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recording: Arc<dyn crate::Provider> = Arc::new(LayeredProvider::new(
            Arc::new(MemoryProvider::new()),
            RecordsBatchReads(seen.clone()),
        ));
        // A pass-through layer for reads above the recording one.
        let provider = LayeredProvider::new(recording, RefusesSets);
        let store = Stores::builder(Limits::default())
            .store("s", Arc::new(provider), "ns", Access::ReadWrite)
            .build()
            .open("s")
            .await
            .unwrap();
        store.get_many(&["k".to_string()]).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["get_many_within"]);
    }

    async fn store_over(layer: impl Layer) -> crate::KvStore {
        let provider = LayeredProvider::new(Arc::new(MemoryProvider::new()), layer);
        Stores::builder(Limits::default())
            .store("s", Arc::new(provider), "ns", Access::ReadWrite)
            .build()
            .open("s")
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn hooks_see_every_call_and_retries_go_through_the_layer() {
        let lose = Arc::new(AtomicU32::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let store = store_over(Lossy {
            lose: lose.clone(),
            seen: seen.clone(),
        })
        .await;
        // The in-memory fast path is off under a layer: the hooks see these calls.
        store.set("k", b"v".to_vec()).await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(b"v".to_vec()));
        let keys = ["k".to_string(), "k".to_string()];
        assert_eq!(store.get_many(&keys).await.unwrap().len(), 2);
        assert_eq!(*seen.lock().unwrap(), [Op::Set, Op::Get, Op::GetMany]);
        // A lost reply is transient: the store retries through the layer.
        seen.lock().unwrap().clear();
        lose.store(1, Ordering::Relaxed);
        store.set("k", b"w".to_vec()).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), [Op::Set, Op::Set]);
        // An increment whose reply was lost is retried under its request id: applied once.
        lose.store(1, Ordering::Relaxed);
        assert_eq!(store.increment("n", 5).await.unwrap(), 5);
        assert_eq!(store.get("n").await.unwrap(), Some(b"5".to_vec()));
    }

    #[tokio::test]
    async fn a_layer_overrides_only_what_it_breaks() {
        let store = store_over(RefusesSets).await;
        let err = store.set("k", b"v".to_vec()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccessDenied);
        assert_eq!(store.get("k").await.unwrap(), None);
        store
            .set_many(vec![("k".to_string(), b"v".to_vec())])
            .await
            .unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(Op::ReadVersioned.name(), "cas-read");
    }
}
