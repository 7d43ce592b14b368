//! `wasi:keyvalue@0.2.0-draft` (what wasmtime's `-S keyvalue` hosts) on top of [`KvStore`]:
//! `u64` cursors and `u64` increments.

use wasmtime::component::Resource;

use super::wit_draft::{atomics, batch, store};
use super::{DraftBucketHandle, HostError, KvView};
use kv_core::error::KvError;
use kv_core::store::KvStore;

/// A host function's result: the value, or what `convert_error` turns into the guest's `error`.
type HostResult<T> = Result<T, HostError>;

impl KvView<'_> {
    /// The store behind `bucket`, borrowed for the call (no reference count is touched).
    fn draft_bucket(&self, bucket: &Resource<DraftBucketHandle>) -> wasmtime::Result<&KvStore> {
        Ok(&self.table.get(bucket)?.store)
    }
}

impl store::Host for KvView<'_> {
    crate::convert_error!(store::Error);

    async fn open(&mut self, identifier: String) -> HostResult<Resource<DraftBucketHandle>> {
        let store = self.ctx.stores.open(&identifier).await?;
        Ok(self.table.push(DraftBucketHandle::new(store))?)
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        key: String,
    ) -> HostResult<Option<Vec<u8>>> {
        Ok(self.draft_bucket(&bucket)?.get(&key).await?)
    }

    async fn set(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> HostResult<()> {
        Ok(self.draft_bucket(&bucket)?.set_owned(key, value).await?)
    }

    async fn delete(&mut self, bucket: Resource<DraftBucketHandle>, key: String) -> HostResult<()> {
        Ok(self.draft_bucket(&bucket)?.delete(&key).await?)
    }

    async fn exists(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        key: String,
    ) -> HostResult<bool> {
        Ok(self.draft_bucket(&bucket)?.exists(&key).await?)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        cursor: Option<u64>,
    ) -> HostResult<store::KeyResponse> {
        let handle = self.table.get(&bucket)?;
        // Position n (1-based) is the n-th cursor this handle issued.
        let string_cursor = match cursor {
            None => None,
            Some(position) => match handle.cursor_at(position) {
                Some(cursor) => Some(cursor.clone()),
                None => {
                    return Err(HostError::Store(KvError::invalid_cursor(format!(
                        "cursor {position} was not issued by this bucket handle, or is \
                             older than the last {} it keeps",
                        super::MAX_DRAFT_CURSORS
                    ))));
                }
            },
        };
        let store = handle.store.clone();
        let page = store.list_keys(string_cursor.as_deref()).await?;
        let next = match page.cursor {
            None => None,
            Some(cursor) => Some(self.table.get_mut(&bucket)?.issue(cursor)),
        };
        Ok(store::KeyResponse {
            keys: page.keys,
            cursor: next,
        })
    }

    async fn drop(&mut self, bucket: Resource<DraftBucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        key: String,
        delta: u64,
    ) -> HostResult<u64> {
        Ok(self
            .draft_bucket(&bucket)?
            .increment_unsigned(&key, delta)
            .await?)
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        keys: Vec<String>,
    ) -> HostResult<Vec<Option<(String, Vec<u8>)>>> {
        let values = self.draft_bucket(&bucket)?.get_many(&keys).await?;
        Ok(super::present_entries(keys, values))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> HostResult<()> {
        Ok(self.draft_bucket(&bucket)?.set_many(key_values).await?)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        keys: Vec<String>,
    ) -> HostResult<()> {
        Ok(self.draft_bucket(&bucket)?.delete_many(&keys).await?)
    }
}
