//! `wasi:keyvalue@0.2.0-draft` (what wasmtime's `-S keyvalue` hosts) on top of [`KvStore`]:
//! `u64` cursors and `u64` increments.

use wasmtime::component::Resource;

use super::wit_draft::{atomics, batch, store};
use super::{DraftBucketHandle, GuestError, KvView};
use crate::error::KvError;
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
    fn draft_bucket(&self, bucket: &Resource<DraftBucketHandle>) -> wasmtime::Result<&KvStore> {
        Ok(&self.table.get(bucket)?.store)
    }
}

impl store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> GuestResult<Resource<DraftBucketHandle>> {
        match self.ctx.stores.open(&identifier).await {
            Ok(store) => Ok(Ok(self.table.push(DraftBucketHandle::new(store))?)),
            Err(err) => reply(Err(err)),
        }
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        key: String,
    ) -> GuestResult<Option<Vec<u8>>> {
        reply(self.draft_bucket(&bucket)?.get(&key).await)
    }

    async fn set(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> GuestResult<()> {
        reply(self.draft_bucket(&bucket)?.set(&key, value).await)
    }

    async fn delete(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        key: String,
    ) -> GuestResult<()> {
        reply(self.draft_bucket(&bucket)?.delete(&key).await)
    }

    async fn exists(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        key: String,
    ) -> GuestResult<bool> {
        reply(self.draft_bucket(&bucket)?.exists(&key).await)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        cursor: Option<u64>,
    ) -> GuestResult<store::KeyResponse> {
        let handle = self.table.get(&bucket)?;
        // Position n (1-based) is the n-th cursor this handle issued.
        let string_cursor = match cursor {
            None => None,
            Some(position) => match handle.cursor_at(position) {
                Some(cursor) => Some(cursor.clone()),
                None => {
                    return reply(Err(KvError::invalid_cursor(format!(
                        "cursor {position} was not issued by this bucket handle, or is \
                             older than the last {} it keeps",
                        super::MAX_DRAFT_CURSORS
                    ))));
                }
            },
        };
        let store = handle.store.clone();
        let page = match store.list_keys(string_cursor.as_deref()).await {
            Ok(page) => page,
            Err(err) => return reply(Err(err)),
        };
        let next = match page.cursor {
            None => None,
            Some(cursor) => Some(self.table.get_mut(&bucket)?.issue(cursor)),
        };
        Ok(Ok(store::KeyResponse {
            keys: page.keys,
            cursor: next,
        }))
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
    ) -> GuestResult<u64> {
        reply(
            self.draft_bucket(&bucket)?
                .increment_unsigned(&key, delta)
                .await,
        )
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        keys: Vec<String>,
    ) -> GuestResult<Vec<Option<(String, Vec<u8>)>>> {
        let values = self.draft_bucket(&bucket)?.get_many(&keys).await;
        reply(values.map(|values| {
            keys.into_iter()
                .zip(values)
                .map(|(key, value)| value.map(|value| (key, value)))
                .collect()
        }))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> GuestResult<()> {
        reply(self.draft_bucket(&bucket)?.set_many(key_values).await)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<DraftBucketHandle>,
        keys: Vec<String>,
    ) -> GuestResult<()> {
        reply(self.draft_bucket(&bucket)?.delete_many(&keys).await)
    }
}
