//! `wasi:keyvalue@0.2.0-draft2` and `wasi-kv:ttl@0.1.0` on top of [`KvStore`].

use wasmtime::component::Resource;

use super::wit_draft2::{atomics, batch, store};
use super::wit_spin_batch as spin_batch;
use super::wit_ttl as ttl;
use super::{BucketHandle, CasHandle, HostError, KvView};
use kv_core::error::KvError;
use kv_core::provider::SwapOutcome;
use kv_core::store::KvStore;

/// A host function's result: the value, or what `convert_error` turns into the guest's `error`.
type HostResult<T> = Result<T, HostError>;

impl KvView<'_> {
    /// The store behind `bucket`, borrowed for the call (no reference count is touched).
    fn bucket(&self, bucket: &Resource<BucketHandle>) -> wasmtime::Result<&KvStore> {
        Ok(&self.table.get(bucket)?.store)
    }

    /// `swap`'s `cas-error` is not the store's `error`: it carries one.
    fn cas_store_error(&mut self, err: KvError) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let err = store::Host::convert_error(self, err.into())?;
        Ok(Err(atomics::CasError::StoreError(err)))
    }
}

impl store::Host for KvView<'_> {
    crate::convert_error!(store::Error);

    async fn open(&mut self, identifier: String) -> HostResult<Resource<BucketHandle>> {
        let store = self.ctx.stores.open(&identifier).await?;
        Ok(self.table.push(BucketHandle { store })?)
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> HostResult<Option<Vec<u8>>> {
        Ok(self.bucket(&bucket)?.get(&key).await?)
    }

    async fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> HostResult<()> {
        Ok(self.bucket(&bucket)?.set_owned(key, value).await?)
    }

    async fn delete(&mut self, bucket: Resource<BucketHandle>, key: String) -> HostResult<()> {
        Ok(self.bucket(&bucket)?.delete(&key).await?)
    }

    async fn exists(&mut self, bucket: Resource<BucketHandle>, key: String) -> HostResult<bool> {
        Ok(self.bucket(&bucket)?.exists(&key).await?)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> HostResult<store::KeyResponse> {
        let page = self.bucket(&bucket)?.list_keys(cursor.as_deref()).await?;
        Ok(store::KeyResponse {
            keys: page.keys,
            cursor: page.cursor,
        })
    }

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        delta: i64,
    ) -> HostResult<i64> {
        Ok(self.bucket(&bucket)?.increment(&key, delta).await?)
    }

    async fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let handle = self.table.delete(cas)?;
        self.ctx.release(handle.held());
        match handle.store.swap(&handle.key, &handle.version, value).await {
            Ok(SwapOutcome::Swapped) => Ok(Ok(())),
            Ok(SwapOutcome::Conflict) => {
                // The spec requires a handle updated to the latest version.
                match handle.store.read_versioned(&handle.key).await {
                    Ok(latest) => {
                        let fresh = CasHandle {
                            store: handle.store,
                            key: handle.key,
                            current: latest.value,
                            version: latest.version,
                        };
                        if let Err(err) = self.ctx.hold(fresh.held()) {
                            return self.cas_store_error(err);
                        }
                        let fresh = self.table.push(fresh)?;
                        Ok(Err(atomics::CasError::CasFailed(fresh)))
                    }
                    Err(err) => self.cas_store_error(err),
                }
            }
            Err(err) => self.cas_store_error(err),
        }
    }
}

impl atomics::HostCas for KvView<'_> {
    async fn new(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> HostResult<Resource<CasHandle>> {
        let store = self.bucket(&bucket)?.clone();
        let read = store.read_versioned(&key).await?;
        let handle = CasHandle {
            store,
            key,
            current: read.value,
            version: read.version,
        };
        self.ctx.hold(handle.held())?;
        Ok(self.table.push(handle)?)
    }

    async fn current(&mut self, cas: Resource<CasHandle>) -> HostResult<Option<Vec<u8>>> {
        Ok(self.table.get(&cas)?.current.clone())
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        let handle = self.table.delete(cas)?;
        self.ctx.release(handle.held());
        Ok(())
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> HostResult<Vec<Option<(String, Vec<u8>)>>> {
        let values = self.bucket(&bucket)?.get_many(&keys).await?;
        Ok(super::present_entries(keys, values))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> HostResult<()> {
        Ok(self.bucket(&bucket)?.set_many(key_values).await?)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> HostResult<()> {
        Ok(self.bucket(&bucket)?.delete_many(&keys).await?)
    }
}

/// The Spin / PR #55 shape of the same interface: every key with an optional value.
impl spin_batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> HostResult<Vec<(String, Option<Vec<u8>>)>> {
        let values = self.bucket(&bucket)?.get_many(&keys).await?;
        Ok(keys.into_iter().zip(values).collect())
    }

    async fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> HostResult<()> {
        batch::Host::set_many(self, bucket, key_values).await
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> HostResult<()> {
        batch::Host::delete_many(self, bucket, keys).await
    }
}

impl ttl::Host for KvView<'_> {
    async fn set_with_ttl(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> HostResult<()> {
        Ok(self
            .bucket(&bucket)?
            .set_with_ttl(&key, value, ttl_ms)
            .await?)
    }
}
