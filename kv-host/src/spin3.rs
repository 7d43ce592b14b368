//! `spin:key-value@3.0.0`, Spin 4's key-value interface (the Rust `spin-sdk` 6.x): the calls
//! of [`crate::spin`]'s `fermyon:spin/key-value@2.0.0`, each `async`, with `get-keys` as a
//! stream. Only WASIp3 components import it; they run on wasmtime's event loop, so the host
//! functions take an [`Accessor`] and reach the instance's state only between awaits.

use std::pin::Pin;
use std::task::{Context, Poll};

use wasmtime::StoreContextMut;
use wasmtime::component::{
    Accessor, Destination, FutureReader, Resource, StreamProducer, StreamReader, StreamResult,
    VecBuffer,
};

use super::{HasKv, HostError, KvView};
use kv_core::store::KvStore;

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: ["../wit/spin-kv-3"],
        world: "spin:key-value/key-value-imports@3.0.0",
        imports: { default: trappable },
        trappable_error_type: {
            "spin:key-value/key-value@3.0.0.error" => crate::HostError,
        },
        with: {
            "spin:key-value/key-value@3.0.0.store": super::Spin3StoreHandle,
        },
        require_store_data_send: true,
    });
}

pub use bindings::spin::key_value::key_value;

/// A Spin 4 `store` resource.
pub struct Spin3StoreHandle {
    store: KvStore,
}

type HostResult<T> = Result<T, HostError>;

impl key_value::Host for KvView<'_> {
    fn convert_error(&mut self, err: HostError) -> wasmtime::Result<key_value::Error> {
        use key_value::Error;
        Ok(match crate::spin::guest_error(err)? {
            crate::spin::SpinError::StoreTableFull => Error::StoreTableFull,
            crate::spin::SpinError::NoSuchStore => Error::NoSuchStore,
            crate::spin::SpinError::AccessDenied => Error::AccessDenied,
            crate::spin::SpinError::Other(message) => Error::Other(message),
        })
    }
}

impl key_value::HostStore for KvView<'_> {
    fn drop(&mut self, store: Resource<Spin3StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

/// The instance's budget of held bytes, owned, to charge across awaits.
fn budget<U>(accessor: &Accessor<U, HasKv>) -> crate::Budget {
    accessor.with(|mut access| access.get().ctx.budget())
}

/// The store behind `store`, cloned out of the instance's table (a cheap handle), so the call
/// can await without holding the instance.
fn store_of<U>(
    accessor: &Accessor<U, HasKv>,
    store: &Resource<Spin3StoreHandle>,
) -> HostResult<KvStore> {
    accessor.with(|mut access| Ok(access.get().table.get(store)?.store.clone()))
}

impl<U> key_value::HostStoreWithStore<U> for HasKv {
    async fn open(
        accessor: &Accessor<U, Self>,
        label: String,
    ) -> HostResult<Resource<Spin3StoreHandle>> {
        let stores = accessor.with(|mut access| access.get().ctx.stores.clone());
        let store = stores.open(&label).await?;
        accessor.with(|mut access| Ok(access.get().table.push(Spin3StoreHandle { store })?))
    }

    /// Calls of one instance run concurrently here, so a value in the host is charged to the
    /// instance's budget while the call holds it: many `get`s at once cannot pile up values.
    async fn get(
        accessor: &Accessor<U, Self>,
        store: Resource<Spin3StoreHandle>,
        key: String,
    ) -> HostResult<Option<Vec<u8>>> {
        let kv = store_of(accessor, &store)?;
        let value = kv.get(&key).await?;
        let mut charge = crate::spin::Charge::new(budget(accessor));
        charge.add(value.as_ref().map_or(0, Vec::len))?;
        Ok(value)
    }

    /// The value is charged to the instance's budget until it is written, as for `get`.
    async fn set(
        accessor: &Accessor<U, Self>,
        store: Resource<Spin3StoreHandle>,
        key: String,
        value: Vec<u8>,
    ) -> HostResult<()> {
        let kv = store_of(accessor, &store)?;
        // A refused write (access, key, or an oversized value: S11) is refused as `set` would
        // refuse it, whatever the instance holds: checked before the value is charged, or a
        // value over the budget would be `batch-too-large`.
        kv.check_set(&key, &value)?;
        let mut charge = crate::spin::Charge::new(budget(accessor));
        charge.add(value.len())?;
        Ok(kv.set_owned(key, value).await?)
    }

    async fn delete(
        accessor: &Accessor<U, Self>,
        store: Resource<Spin3StoreHandle>,
        key: String,
    ) -> HostResult<()> {
        Ok(store_of(accessor, &store)?.delete(&key).await?)
    }

    async fn exists(
        accessor: &Accessor<U, Self>,
        store: Resource<Spin3StoreHandle>,
        key: String,
    ) -> HostResult<bool> {
        Ok(store_of(accessor, &store)?.exists(&key).await?)
    }

    /// Every key, collected within the instance's `max_held_bytes` as for Spin 2's
    /// `get-keys`, then streamed; an error ends the stream early and is the future's value.
    async fn get_keys(
        accessor: &Accessor<U, Self>,
        store: Resource<Spin3StoreHandle>,
    ) -> wasmtime::Result<(
        StreamReader<String>,
        FutureReader<Result<(), key_value::Error>>,
    )> {
        let (keys, outcome) = match store_of(accessor, &store) {
            Ok(kv) => {
                let budget = accessor.with(|mut access| access.get().ctx.budget());
                match crate::spin::all_keys(budget, &kv).await {
                    Ok((keys, charge)) => (
                        HeldKeys {
                            keys,
                            _charge: Some(charge),
                        },
                        Ok(()),
                    ),
                    Err(err) => (HeldKeys::default(), Err(err)),
                }
            }
            Err(err) => (HeldKeys::default(), Err(err)),
        };
        let outcome = match outcome {
            Ok(()) => Ok(()),
            Err(err) => Err(accessor.with(|mut access| access.get().convert_spin3(err))?),
        };
        accessor.with(|mut access| {
            let stream = StreamReader::new(&mut access, keys)?;
            let future =
                FutureReader::new(
                    &mut access,
                    async move { Ok::<_, wasmtime::Error>(outcome) },
                )?;
            Ok((stream, future))
        })
    }
}

/// The keys of one `get-keys`, still charged to the instance's budget until the guest reads
/// them (or drops the stream): a guest that asks again and again without reading holds no
/// more than `max_held_bytes`.
#[derive(Default)]
struct HeldKeys {
    keys: Vec<String>,
    _charge: Option<crate::spin::Charge>,
}

impl<D> StreamProducer<D> for HeldKeys {
    type Item = String;
    type Buffer = VecBuffer<String>;

    fn poll_produce<'a>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        store: StoreContextMut<'a, D>,
        dst: Destination<'a, String, VecBuffer<String>>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        let this = self.get_mut();
        <Vec<String> as StreamProducer<D>>::poll_produce(
            Pin::new(&mut this.keys),
            cx,
            store,
            dst,
            finish,
        )
    }
}

impl KvView<'_> {
    fn convert_spin3(&mut self, err: HostError) -> wasmtime::Result<key_value::Error> {
        key_value::Host::convert_error(self, err)
    }
}
