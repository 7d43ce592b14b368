//! `wasi:keyvalue@0.2.0-draft2` and `wasi-kv:ttl@0.1.0` on top of [`KvStore`].

use wasmtime::component::Resource;

use super::wit_draft2::{atomics, batch, store};
use super::wit_spin_batch as spin_batch;
use super::wit_ttl as ttl;
use super::{BucketHandle, CasHandle, GuestError, KvView};
use crate::error::KvError;
use crate::provider::SwapOutcome;
use crate::store::KvStore;

type GuestResult<T> = wasmtime::Result<Result<T, store::Error>>;

fn guest_error(err: KvError) -> store::Error {
    match GuestError::from(err) {
        GuestError::NoSuchStore => store::Error::NoSuchStore,
        GuestError::AccessDenied => store::Error::AccessDenied,
        GuestError::Other(message) => store::Error::Other(message),
    }
}

fn reply<T>(result: Result<T, KvError>) -> GuestResult<T> {
    Ok(result.map_err(guest_error))
}

impl KvView<'_> {
    /// The store behind `bucket`, borrowed for the call (no reference count is touched).
    fn bucket(&self, bucket: &Resource<BucketHandle>) -> wasmtime::Result<&KvStore> {
        Ok(&self.table.get(bucket)?.store)
    }
}

impl store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> GuestResult<Resource<BucketHandle>> {
        match self.ctx.stores.open(&identifier).await {
            Ok(store) => Ok(Ok(self.table.push(BucketHandle { store })?)),
            Err(err) => reply(Err(err)),
        }
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> GuestResult<Option<Vec<u8>>> {
        reply(self.bucket(&bucket)?.get(&key).await)
    }

    async fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> GuestResult<()> {
        reply(self.bucket(&bucket)?.set(&key, value).await)
    }

    async fn delete(&mut self, bucket: Resource<BucketHandle>, key: String) -> GuestResult<()> {
        reply(self.bucket(&bucket)?.delete(&key).await)
    }

    async fn exists(&mut self, bucket: Resource<BucketHandle>, key: String) -> GuestResult<bool> {
        reply(self.bucket(&bucket)?.exists(&key).await)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> GuestResult<store::KeyResponse> {
        let page = self.bucket(&bucket)?.list_keys(cursor.as_deref()).await;
        reply(page.map(|page| store::KeyResponse {
            keys: page.keys,
            cursor: page.cursor,
        }))
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
    ) -> GuestResult<i64> {
        reply(self.bucket(&bucket)?.increment(&key, delta).await)
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
                            return Ok(Err(atomics::CasError::StoreError(guest_error(err))));
                        }
                        let fresh = self.table.push(fresh)?;
                        Ok(Err(atomics::CasError::CasFailed(fresh)))
                    }
                    Err(err) => Ok(Err(atomics::CasError::StoreError(guest_error(err)))),
                }
            }
            Err(err) => Ok(Err(atomics::CasError::StoreError(guest_error(err)))),
        }
    }
}

impl atomics::HostCas for KvView<'_> {
    async fn new(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> GuestResult<Resource<CasHandle>> {
        let store = self.bucket(&bucket)?.clone();
        match store.read_versioned(&key).await {
            Ok(read) => {
                let handle = CasHandle {
                    store,
                    key,
                    current: read.value,
                    version: read.version,
                };
                if let Err(err) = self.ctx.hold(handle.held()) {
                    return reply(Err(err));
                }
                Ok(Ok(self.table.push(handle)?))
            }
            Err(err) => reply(Err(err)),
        }
    }

    async fn current(&mut self, cas: Resource<CasHandle>) -> GuestResult<Option<Vec<u8>>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
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
    ) -> GuestResult<Vec<Option<(String, Vec<u8>)>>> {
        let values = self.bucket(&bucket)?.get_many(&keys).await;
        reply(values.map(|values| {
            keys.into_iter()
                .zip(values)
                .map(|(key, value)| value.map(|value| (key, value)))
                .collect()
        }))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> GuestResult<()> {
        reply(self.bucket(&bucket)?.set_many(key_values).await)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> GuestResult<()> {
        reply(self.bucket(&bucket)?.delete_many(&keys).await)
    }
}

/// The Spin / PR #55 shape of the same interface: every key with an optional value.
impl spin_batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> GuestResult<Vec<(String, Option<Vec<u8>>)>> {
        let values = self.bucket(&bucket)?.get_many(&keys).await;
        reply(values.map(|values| keys.into_iter().zip(values).collect()))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> GuestResult<()> {
        batch::Host::set_many(self, bucket, key_values).await
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> GuestResult<()> {
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
    ) -> GuestResult<()> {
        reply(
            self.bucket(&bucket)?
                .set_with_ttl(&key, value, ttl_ms)
                .await,
        )
    }
}
