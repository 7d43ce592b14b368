//! The `watch-service` world: a component exporting `watcher`, called by the host for each
//! change of a watched store (`wasi-kv watch`, docs/watch.md), in either keyvalue version.

use wasmtime::Store;
use wasmtime::component::{Component, Linker};

use crate::{BucketHandle, DraftBucketHandle, WasiKvView};
use kv_core::store::KvStore;

#[allow(missing_docs)]
mod draft2 {
    wasmtime::component::bindgen!({
        path: ["../wit/keyvalue"],
        world: "wasi:keyvalue/watch-service@0.2.0-draft2",
        exports: { default: async },
        with: {
            "wasi:keyvalue/store@0.2.0-draft2": crate::bindings::wasi::keyvalue0_2_0_draft2::store,
            "wasi:keyvalue/atomics@0.2.0-draft2": crate::bindings::wasi::keyvalue0_2_0_draft2::atomics,
            "wasi:keyvalue/batch@0.2.0-draft2": crate::bindings::wasi::keyvalue0_2_0_draft2::batch,
        },
        require_store_data_send: true,
    });
}

#[allow(missing_docs)]
mod draft {
    wasmtime::component::bindgen!({
        path: ["../wit/keyvalue-draft"],
        world: "wasi:keyvalue/watch-service@0.2.0-draft",
        exports: { default: async },
        with: {
            "wasi:keyvalue/store@0.2.0-draft": crate::bindings::wasi::keyvalue0_2_0_draft::store,
            "wasi:keyvalue/atomics@0.2.0-draft": crate::bindings::wasi::keyvalue0_2_0_draft::atomics,
            "wasi:keyvalue/batch@0.2.0-draft": crate::bindings::wasi::keyvalue0_2_0_draft::batch,
        },
        require_store_data_send: true,
    });
}

/// Which `watcher` a component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchVersion {
    /// `wasi:keyvalue/watcher@0.2.0-draft2`.
    Draft2,
    /// `wasi:keyvalue/watcher@0.2.0-draft` (wasmtime's and Spin's older draft).
    Draft,
}

impl WatchVersion {
    /// The export's name.
    pub fn interface(self) -> &'static str {
        match self {
            WatchVersion::Draft2 => "wasi:keyvalue/watcher@0.2.0-draft2",
            WatchVersion::Draft => "wasi:keyvalue/watcher@0.2.0-draft",
        }
    }

    /// The version `component` exports, if it exports a `watcher`.
    pub fn of(engine: &wasmtime::Engine, component: &Component) -> Option<WatchVersion> {
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        [WatchVersion::Draft2, WatchVersion::Draft]
            .into_iter()
            .find(|version| exports.iter().any(|name| name == version.interface()))
    }
}

/// One instance of a `watch-service` component.
pub enum WatcherInstance {
    /// The draft2 world.
    Draft2(draft2::WatchService),
    /// The draft world.
    Draft(draft::WatchService),
}

impl WatcherInstance {
    /// Instantiates `component` (which exports `version`'s watcher) with `linker`.
    pub async fn instantiate<T: WasiKvView + 'static>(
        store: &mut Store<T>,
        linker: &Linker<T>,
        component: &Component,
        version: WatchVersion,
    ) -> wasmtime::Result<WatcherInstance> {
        Ok(match version {
            WatchVersion::Draft2 => WatcherInstance::Draft2(
                draft2::WatchService::instantiate_async(&mut *store, component, linker).await?,
            ),
            WatchVersion::Draft => WatcherInstance::Draft(
                draft::WatchService::instantiate_async(&mut *store, component, linker).await?,
            ),
        })
    }

    /// `on-set(bucket, key, value)`, with a fresh handle to `bucket` the guest owns.
    pub async fn on_set<T: WasiKvView + 'static>(
        &self,
        store: &mut Store<T>,
        bucket: &KvStore,
        key: &str,
        value: &[u8],
    ) -> wasmtime::Result<()> {
        match self {
            WatcherInstance::Draft2(guest) => {
                let handle = store.data_mut().kv().table.push(BucketHandle {
                    store: bucket.clone(),
                })?;
                guest
                    .wasi_keyvalue_watcher()
                    .call_on_set(&mut *store, handle, key, value)
                    .await
            }
            WatcherInstance::Draft(guest) => {
                let handle = store
                    .data_mut()
                    .kv()
                    .table
                    .push(DraftBucketHandle::new(bucket.clone()))?;
                guest
                    .wasi_keyvalue_watcher()
                    .call_on_set(&mut *store, handle, key, value)
                    .await
            }
        }
    }

    /// `on-delete(bucket, key)`, with a fresh handle to `bucket` the guest owns.
    pub async fn on_delete<T: WasiKvView + 'static>(
        &self,
        store: &mut Store<T>,
        bucket: &KvStore,
        key: &str,
    ) -> wasmtime::Result<()> {
        match self {
            WatcherInstance::Draft2(guest) => {
                let handle = store.data_mut().kv().table.push(BucketHandle {
                    store: bucket.clone(),
                })?;
                guest
                    .wasi_keyvalue_watcher()
                    .call_on_delete(&mut *store, handle, key)
                    .await
            }
            WatcherInstance::Draft(guest) => {
                let handle = store
                    .data_mut()
                    .kv()
                    .table
                    .push(DraftBucketHandle::new(bucket.clone()))?;
                guest
                    .wasi_keyvalue_watcher()
                    .call_on_delete(&mut *store, handle, key)
                    .await
            }
        }
    }
}
