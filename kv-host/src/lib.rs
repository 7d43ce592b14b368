//! wasmtime bindings: `wasi:keyvalue@0.2.0-draft2`, `wasi:keyvalue@0.2.0-draft`,
//! `wasi-kv:ttl@0.1.0` and Spin's `fermyon:spin/key-value@2.0.0`, shaped like wasmtime's own `wasi-*` crates: a [`KvCtx`] held in the
//! store data, a [`KvView`] borrowing it with the resource table, and [`add_to_linker`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use kv_host::{KvCtx, KvView, WasiKvView};
//! use kv_core::{KvConfig, ProviderRegistry};
//! use wasmtime::component::{Linker, ResourceTable};
//! use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
//!
//! struct Host {
//!     table: ResourceTable,
//!     wasi: WasiCtx,
//!     kv: KvCtx,
//! }
//!
//! impl WasiView for Host {
//!     fn ctx(&mut self) -> WasiCtxView<'_> {
//!         WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
//!     }
//! }
//!
//! impl WasiKvView for Host {
//!     fn kv(&mut self) -> KvView<'_> {
//!         KvView::new(&self.kv, &mut self.table)
//!     }
//! }
//!
//! # async fn example() -> anyhow::Result<()> {
//! let engine = wasmtime::Engine::default();
//! let mut linker = Linker::<Host>::new(&engine);
//! wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
//! kv_host::add_to_linker(&mut linker)?;
//!
//! // `default` is the in-memory store; `--store`-style URLs and TOML files configure others.
//! let stores = Arc::new(ProviderRegistry::new().build(&KvConfig::default()).await?);
//! let host = Host {
//!     table: ResourceTable::new(),
//!     wasi: WasiCtx::builder().inherit_stdio().build(),
//!     kv: KvCtx::new(stores),
//! };
//! let mut store = wasmtime::Store::new(&engine, host);
//! // ... instantiate a component with `linker` in `store` ...
//! # let _ = &mut store;
//! # Ok(())
//! # }
//! ```

mod draft;
mod draft2;
pub mod sandbox;
mod spin;
mod spin3;
pub mod watch;

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, ResourceTable};

use kv_core::error::{ErrorKind, KvError};
use kv_core::provider::Version;
use kv_core::store::KvStore;
use kv_core::stores::Stores;

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: ["../wit/keyvalue", "../wit/keyvalue-draft", "../wit/ttl", "../wit/host"],
        world: "wasi-kv:host/imports@0.1.0",
        imports: { default: async | trappable },
        trappable_error_type: {
            "wasi:keyvalue/store@0.2.0-draft2.error" => super::HostError,
            "wasi:keyvalue/store@0.2.0-draft.error" => super::HostError,
        },
        with: {
            "wasi:keyvalue/store@0.2.0-draft2.bucket": super::BucketHandle,
            "wasi:keyvalue/atomics@0.2.0-draft2.cas": super::CasHandle,
            "wasi:keyvalue/store@0.2.0-draft.bucket": super::DraftBucketHandle,
        },
        require_store_data_send: true,
    });
}

/// `wasi:keyvalue/batch@0.2.0-draft2` in the Spin / PR #55 shape (`wit/keyvalue-spin`): the
/// same interface name as the tagged one, so a linker holds one or the other.
#[allow(missing_docs)]
mod spin_bindings {
    wasmtime::component::bindgen!({
        path: ["../wit/keyvalue-spin"],
        world: "wasi:keyvalue/imports@0.2.0-draft2",
        imports: { default: async | trappable },
        trappable_error_type: {
            "wasi:keyvalue/store@0.2.0-draft2.error" => super::HostError,
        },
        with: {
            "wasi:keyvalue/store@0.2.0-draft2": super::bindings::wasi::keyvalue0_2_0_draft2::store,
            "wasi:keyvalue/atomics@0.2.0-draft2": super::bindings::wasi::keyvalue0_2_0_draft2::atomics,
        },
        require_store_data_send: true,
    });
}

pub use bindings::wasi::keyvalue0_2_0_draft as wit_draft;
pub use bindings::wasi::keyvalue0_2_0_draft2 as wit_draft2;
pub use bindings::wasi_kv::ttl::ttl as wit_ttl;
pub use spin::{SpinStoreHandle, key_value as wit_spin_key_value};
pub use spin_bindings::wasi::keyvalue::batch as wit_spin_batch;
pub use spin3::{Spin3StoreHandle, key_value as wit_spin3_key_value};

/// The key-value state of one wasmtime store: the stores this component may open.
#[derive(Debug)]
pub struct KvCtx {
    stores: Arc<Stores>,
    /// Value bytes this instance's handles hold (bounded by `limits.max_held_bytes`); shared
    /// with the calls of the instance that await outside its state (WASIp3).
    held_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

/// A clone is the context of another instance: the same stores, nothing held yet.
impl Clone for KvCtx {
    fn clone(&self) -> Self {
        KvCtx::new(self.stores.clone())
    }
}

impl KvCtx {
    /// A context offering `stores`; share the `Arc` between instances so they share data.
    pub fn new(stores: Arc<Stores>) -> Self {
        KvCtx {
            stores,
            held_bytes: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    /// This instance's budget of held bytes, owned, for a call that awaits outside the
    /// instance's state.
    fn budget(&self) -> Budget {
        Budget {
            held_bytes: self.held_bytes.clone(),
            max: self.stores.limits().max_held_bytes,
        }
    }

    /// Charges `bytes` a new handle holds to this instance, or refuses with
    /// `batch-too-large` past `limits.max_held_bytes`.
    fn hold(&self, bytes: usize) -> kv_core::Result<()> {
        self.budget().hold(bytes)
    }

    /// Returns what a dropped handle held (never below zero).
    fn release(&self, bytes: usize) {
        self.budget().release(bytes)
    }

    /// The stores offered.
    pub fn stores(&self) -> &Arc<Stores> {
        &self.stores
    }
}

/// The bytes one instance may hold (`limits.max_held_bytes`) and what it holds now.
#[derive(Clone)]
struct Budget {
    held_bytes: Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
}

impl Budget {
    /// Charges `bytes`, or refuses with `batch-too-large` past the limit.
    fn hold(&self, bytes: usize) -> kv_core::Result<()> {
        use std::sync::atomic::Ordering;
        let max = self.max;
        self.held_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes).filter(|total| *total <= max)
            })
            .map(drop)
            .map_err(|held| {
                kv_core::KvError::new(
                    kv_core::ErrorKind::BatchTooLarge,
                    format!(
                        "this instance's open handles already hold {held} bytes; {bytes} more \
                         would pass the limit of {max} (limits.max_held_bytes)"
                    ),
                )
            })
    }

    /// Returns what was held (never below zero).
    fn release(&self, bytes: usize) {
        use std::sync::atomic::Ordering;
        let _ = self
            .held_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held.saturating_sub(bytes))
            });
    }
}

/// The borrowed state host functions work with.
pub struct KvView<'a> {
    ctx: &'a KvCtx,
    table: &'a mut ResourceTable,
}

impl<'a> KvView<'a> {
    /// A view of `ctx` with the instance's resource table.
    pub fn new(ctx: &'a KvCtx, table: &'a mut ResourceTable) -> Self {
        KvView { ctx, table }
    }
}

/// Implemented by store data that holds a [`KvCtx`].
pub trait WasiKvView: Send {
    /// The key-value view of this store data.
    fn kv(&mut self) -> KvView<'_>;
}

/// A draft2 `bucket` resource.
pub struct BucketHandle {
    store: KvStore,
}

/// A draft2 `cas` resource: the value and version captured by `cas.new`.
pub struct CasHandle {
    store: KvStore,
    key: String,
    current: Option<Vec<u8>>,
    version: Version,
}

impl CasHandle {
    /// The bytes this handle holds, charged to its instance.
    fn held(&self) -> usize {
        self.current.as_ref().map_or(0, Vec::len)
    }
}

/// A draft `bucket` resource; draft cursors are `u64`, so the handle remembers the string
/// cursors it issued and hands out their positions. It keeps the last
/// [`MAX_DRAFT_CURSORS`]: a guest that lists forever holds bounded host memory, and an evicted
/// cursor is `invalid-cursor`.
pub struct DraftBucketHandle {
    store: KvStore,
    issued_cursors: std::collections::VecDeque<String>,
    /// The position (1-based) of the oldest cursor kept.
    first_position: u64,
}

/// Draft cursors one bucket handle remembers.
pub const MAX_DRAFT_CURSORS: usize = 256;

impl DraftBucketHandle {
    fn new(store: KvStore) -> Self {
        DraftBucketHandle {
            store,
            issued_cursors: std::collections::VecDeque::new(),
            first_position: 1,
        }
    }

    /// The string cursor issued at `position`, if it is still kept.
    fn cursor_at(&self, position: u64) -> Option<&String> {
        let index = position.checked_sub(self.first_position)?;
        self.issued_cursors.get(usize::try_from(index).ok()?)
    }

    /// Remembers `cursor`, evicting the oldest beyond the cap; returns its position.
    fn issue(&mut self, cursor: String) -> u64 {
        if self.issued_cursors.len() == MAX_DRAFT_CURSORS {
            self.issued_cursors.pop_front();
            self.first_position += 1;
        }
        self.issued_cursors.push_back(cursor);
        self.first_position + self.issued_cursors.len() as u64 - 1
    }
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

/// Which shape of draft2's `get-many` a component imports. Both are published under the one
/// version string `wasi:keyvalue/batch@0.2.0-draft2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchShape {
    /// The tagged draft2 text: `list<option<tuple<string, list<u8>>>>`.
    #[default]
    Tagged,
    /// Spin's and upstream PR #55's: `list<tuple<string, option<list<u8>>>>`.
    Spin,
}

/// The interface whose shape differs.
pub const DRAFT2_BATCH: &str = "wasi:keyvalue/batch@0.2.0-draft2";

impl BatchShape {
    /// The shape `component` imports (the tagged one when it imports neither).
    pub fn of(engine: &wasmtime::Engine, component: &wasmtime::component::Component) -> BatchShape {
        use wasmtime::component::types::{ComponentItem, Type};
        let ty = component.component_type();
        for (name, item) in ty.imports(engine) {
            let ComponentItem::ComponentInstance(instance) = item.ty else {
                continue;
            };
            if name != DRAFT2_BATCH {
                continue;
            }
            for (export, item) in instance.exports(engine) {
                let ComponentItem::ComponentFunc(func) = item.ty else {
                    continue;
                };
                if export != "get-many" {
                    continue;
                }
                let element = func.results().next().and_then(|result| match result {
                    Type::Result(result) => match result.ok() {
                        Some(Type::List(list)) => Some(list.ty()),
                        _ => None,
                    },
                    _ => None,
                });
                if let Some(Type::Tuple(_)) = element {
                    return BatchShape::Spin;
                }
            }
        }
        BatchShape::Tagged
    }
}

/// Adds both keyvalue versions and the TTL extension to `linker`, with the tagged draft2
/// `get-many`. Use [`add_to_linker_for`] when the component may be built against Spin's WIT.
pub fn add_to_linker<T: WasiKvView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    add_to_linker_with(linker, T::kv, BatchShape::Tagged)
}

/// Adds every keyvalue interface to `linker` in the shapes `component` imports: the linker
/// then serves components built against the tagged draft2 text or against Spin's WIT alike.
pub fn add_to_linker_for<T: WasiKvView + 'static>(
    linker: &mut Linker<T>,
    component: &wasmtime::component::Component,
) -> wasmtime::Result<()> {
    let shape = BatchShape::of(linker.engine(), component);
    add_to_linker_with(linker, T::kv, shape)
}

/// Like [`add_to_linker`], with an explicit projection from the store data and batch shape.
pub fn add_to_linker_with<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
    shape: BatchShape,
) -> wasmtime::Result<()> {
    wit_draft2::store::add_to_linker::<T, HasKv>(linker, view)?;
    wit_draft2::atomics::add_to_linker::<T, HasKv>(linker, view)?;
    match shape {
        BatchShape::Tagged => wit_draft2::batch::add_to_linker::<T, HasKv>(linker, view)?,
        BatchShape::Spin => wit_spin_batch::add_to_linker::<T, HasKv>(linker, view)?,
    }
    wit_draft::store::add_to_linker::<T, HasKv>(linker, view)?;
    wit_draft::atomics::add_to_linker::<T, HasKv>(linker, view)?;
    wit_draft::batch::add_to_linker::<T, HasKv>(linker, view)?;
    wit_ttl::add_to_linker::<T, HasKv>(linker, view)?;
    Ok(())
}

/// Adds Spin's own `fermyon:spin/key-value@2.0.0` (what components built with spin-sdk up to
/// 5.x import) over the same stores. Separate from [`add_to_linker`], so an embedder that
/// links its own implementation of Spin's interface keeps it.
pub fn add_spin_key_value_to_linker<T: WasiKvView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wit_spin_key_value::add_to_linker::<T, HasKv>(linker, T::kv)
}

/// Adds Spin 4's `spin:key-value@3.0.0` (what components built with spin-sdk 6.x import):
/// async functions and a stream, so only for an engine with
/// `Config::wasm_component_model_async` (WASIp3 components).
pub fn add_spin3_key_value_to_linker<T: WasiKvView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wit_spin3_key_value::add_to_linker::<T, HasKv>(linker, T::kv)
}

/// `get-many`'s answer in the tagged draft shapes (both versions): an entry per key found,
/// `none` where a key is missing, in the order asked.
fn present_entries(
    keys: Vec<String>,
    values: Vec<Option<Vec<u8>>>,
) -> Vec<Option<(String, Vec<u8>)>> {
    keys.into_iter()
        .zip(values)
        .map(|(key, value)| value.map(|value| (key, value)))
        .collect()
}

/// What a host function fails with: a store error the guest sees, or a trap (a handle that is
/// not in the table). bindgen's `trappable_error_type` has every function return it, and each
/// version maps it to its own `error` once, in `convert_error` ([`HostError::into_guest`]).
#[derive(Debug)]
pub enum HostError {
    /// Returned to the guest as the version's `error`.
    Store(KvError),
    /// Ends the instance.
    Trap(wasmtime::Error),
}

impl From<KvError> for HostError {
    fn from(err: KvError) -> Self {
        HostError::Store(err)
    }
}

impl From<wasmtime::Error> for HostError {
    fn from(err: wasmtime::Error) -> Self {
        HostError::Trap(err)
    }
}

impl From<wasmtime::component::ResourceTableError> for HostError {
    fn from(err: wasmtime::component::ResourceTableError) -> Self {
        HostError::Trap(err.into())
    }
}

/// The guest-visible form of an error, the same in both versions.
enum GuestError {
    NoSuchStore,
    AccessDenied,
    Other(String),
}

impl HostError {
    /// The error the guest sees, or the trap.
    fn into_guest(self) -> wasmtime::Result<GuestError> {
        match self {
            HostError::Trap(trap) => Err(trap),
            HostError::Store(err) => Ok(match err.kind() {
                ErrorKind::NoSuchStore => GuestError::NoSuchStore,
                ErrorKind::AccessDenied => GuestError::AccessDenied,
                _ => GuestError::Other(err.to_string()),
            }),
        }
    }
}

/// `convert_error` for one version's `store` interface: the two versions' `error` variants
/// have the same names.
macro_rules! convert_error {
    ($store:path) => {
        fn convert_error(&mut self, err: $crate::HostError) -> wasmtime::Result<$store> {
            use $store as Error;
            Ok(match err.into_guest()? {
                $crate::GuestError::NoSuchStore => Error::NoSuchStore,
                $crate::GuestError::AccessDenied => Error::AccessDenied,
                $crate::GuestError::Other(message) => Error::Other(message),
            })
        }
    };
}
use convert_error;

#[cfg(test)]
mod cursor_tests {
    use super::*;

    #[test]
    fn draft_cursors_are_bounded_and_evicted_oldest_first() {
        let stores = kv_core::Stores::builder(kv_core::Limits::default())
            .store(
                "s",
                std::sync::Arc::new(kv_core::MemoryProvider::new()),
                "ns",
                kv_core::Access::ReadWrite,
            )
            .build();
        let store = futures::executor::block_on(stores.open("s")).unwrap();
        let mut handle = DraftBucketHandle::new(store);
        for n in 1..=(MAX_DRAFT_CURSORS as u64 + 10) {
            assert_eq!(handle.issue(format!("c{n}")), n);
        }
        assert_eq!(handle.issued_cursors.len(), MAX_DRAFT_CURSORS);
        assert!(handle.cursor_at(10).is_none(), "evicted");
        assert!(handle.cursor_at(0).is_none());
        assert_eq!(handle.cursor_at(11).map(String::as_str), Some("c11"));
        let last = MAX_DRAFT_CURSORS as u64 + 10;
        assert_eq!(
            handle.cursor_at(last).map(String::as_str),
            Some(format!("c{last}").as_str())
        );
        assert!(handle.cursor_at(last + 1).is_none());
    }
}

/// The README's Rust examples (embedding wasi-kv in a wasmtime host), compiled as doc tests so
/// they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
