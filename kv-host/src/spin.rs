//! `fermyon:spin/key-value@2.0.0`, the interface components built with the Spin SDKs of the
//! Spin 2 and 3 era import (the Rust `spin-sdk` up to 5.x), on top of [`KvStore`]: a label is
//! a store name, and Spin's four errors carry ours.

use wasmtime::component::{Resource, ResourceTableError};

use super::{Budget, HostError, KvView};
use kv_core::error::{ErrorKind, KvError};
use kv_core::store::KvStore;

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: ["../wit/spin-kv"],
        world: "fermyon:spin/key-value-imports@2.0.0",
        imports: { default: async | trappable },
        trappable_error_type: {
            "fermyon:spin/key-value@2.0.0.error" => crate::HostError,
        },
        with: {
            "fermyon:spin/key-value@2.0.0.store": super::SpinStoreHandle,
        },
        require_store_data_send: true,
    });
}

pub use bindings::fermyon::spin::key_value;

/// A Spin `store` resource.
pub struct SpinStoreHandle {
    store: KvStore,
}

type HostResult<T> = Result<T, HostError>;

/// Bytes charged to an instance's budget, returned when dropped: by the call that built an
/// answer, or by whatever holds the answer until it is delivered (a stream).
pub(crate) struct Charge {
    budget: Budget,
    bytes: usize,
}

impl Charge {
    pub(crate) fn new(budget: Budget) -> Charge {
        Charge { budget, bytes: 0 }
    }

    pub(crate) fn add(&mut self, bytes: usize) -> kv_core::Result<()> {
        self.budget.hold(bytes)?;
        self.bytes += bytes;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

impl KvView<'_> {
    fn spin_store(&self, store: &Resource<SpinStoreHandle>) -> wasmtime::Result<&KvStore> {
        Ok(&self.table.get(store)?.store)
    }
}

impl key_value::Host for KvView<'_> {
    fn convert_error(&mut self, err: HostError) -> wasmtime::Result<key_value::Error> {
        use key_value::Error;
        Ok(match guest_error(err)? {
            SpinError::StoreTableFull => Error::StoreTableFull,
            SpinError::NoSuchStore => Error::NoSuchStore,
            SpinError::AccessDenied => Error::AccessDenied,
            SpinError::Other(message) => Error::Other(message),
        })
    }
}

/// Spin's error, the same in both versions of its interface.
pub(crate) enum SpinError {
    StoreTableFull,
    NoSuchStore,
    AccessDenied,
    Other(String),
}

/// The error a guest of Spin's interface sees, or the trap.
pub(crate) fn guest_error(err: HostError) -> wasmtime::Result<SpinError> {
    Ok(match err {
        HostError::Trap(trap) => {
            // A full resource table is Spin's `store-table-full`, not a trap: the guest can
            // close stores and try again.
            match trap.downcast_ref::<ResourceTableError>() {
                Some(ResourceTableError::Full) => SpinError::StoreTableFull,
                _ => return Err(trap),
            }
        }
        HostError::Store(err) => match err.kind() {
            ErrorKind::NoSuchStore => SpinError::NoSuchStore,
            ErrorKind::AccessDenied => SpinError::AccessDenied,
            // Spin's `other` carries a message only: the class leads it (S11), so a guest
            // and its logs can still tell a missing store from a timeout.
            _ => SpinError::Other(err.to_string()),
        },
    })
}

impl key_value::HostStore for KvView<'_> {
    async fn open(&mut self, label: String) -> HostResult<Resource<SpinStoreHandle>> {
        let store = self.ctx.stores.open(&label).await?;
        Ok(self.table.push(SpinStoreHandle { store })?)
    }

    async fn get(
        &mut self,
        store: Resource<SpinStoreHandle>,
        key: String,
    ) -> HostResult<Option<Vec<u8>>> {
        Ok(self.spin_store(&store)?.get(&key).await?)
    }

    async fn set(
        &mut self,
        store: Resource<SpinStoreHandle>,
        key: String,
        value: Vec<u8>,
    ) -> HostResult<()> {
        Ok(self.spin_store(&store)?.set_owned(key, value).await?)
    }

    async fn delete(&mut self, store: Resource<SpinStoreHandle>, key: String) -> HostResult<()> {
        Ok(self.spin_store(&store)?.delete(&key).await?)
    }

    async fn exists(&mut self, store: Resource<SpinStoreHandle>, key: String) -> HostResult<bool> {
        Ok(self.spin_store(&store)?.exists(&key).await?)
    }

    async fn get_keys(&mut self, store: Resource<SpinStoreHandle>) -> HostResult<Vec<String>> {
        let store = self.spin_store(&store)?.clone();
        // The charge ends with the call: the list is lowered into the guest as it returns.
        Ok(all_keys(self.ctx.budget(), &store).await?.0)
    }

    async fn drop(&mut self, store: Resource<SpinStoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

/// Every key of `store`, page by page, for Spin's `get-keys` (both versions). The answer is
/// one list, so while it is built it is charged to the bytes the instance may hold
/// (`limits.max_held_bytes`, shared with its CAS handles): a store larger than that is
/// `batch-too-large` naming the way out, not unbounded host memory. Each key is charged what
/// it costs here, not its length: its allocation (rounded up, 32 bytes at least) and twice its
/// slot in the list (which grows by doubling). The charge comes back with the keys, for the
/// caller to hold until they are delivered.
pub(crate) async fn all_keys(budget: Budget, store: &KvStore) -> HostResult<(Vec<String>, Charge)> {
    let max = budget.max;
    let mut held = Charge::new(budget);
    // Only a provider whose listing may repeat a key pays for the set that drops repeats
    // (S5: Redis's SCAN); Spin's answer has each key once.
    let mut seen = store
        .capabilities()
        .list_may_repeat
        .then(std::collections::HashSet::new);
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list_keys(cursor.as_deref()).await?;
        for key in page.keys {
            if let Some(seen) = &mut seen
                && !seen.insert(key.clone())
            {
                continue;
            }
            let cost = key.len().next_multiple_of(16).max(32)
                + 2 * std::mem::size_of::<String>()
                + if seen.is_some() {
                    key.len().max(32) + 32
                } else {
                    0
                };
            held.add(cost).map_err(|_| {
                HostError::Store(KvError::new(
                    ErrorKind::BatchTooLarge,
                    format!(
                        "get-keys: the store's keys need more host memory than the {max} bytes \
                         an instance may hold (limits.max_held_bytes, shared with its CAS \
                         handles and unread key streams); list them page by page with \
                         wasi:keyvalue's list-keys"
                    ),
                ))
            })?;
            keys.push(key);
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok((keys, held)),
        }
    }
}
