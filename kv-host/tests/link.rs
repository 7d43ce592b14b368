//! A component importing either keyvalue version, or both, or the TTL extension, links
//! against `add_to_linker`.

use kv_core::{KvConfig, ProviderRegistry};
use kv_host::{KvCtx, KvView, WasiKvView};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};

struct Host {
    table: ResourceTable,
    kv: KvCtx,
}

impl WasiKvView for Host {
    fn kv(&mut self) -> KvView<'_> {
        KvView::new(&self.kv, &mut self.table)
    }
}

fn import(interface: &str, export: &str) -> String {
    format!("(import \"{interface}\" (instance {export}))")
}

async fn instantiate(imports: &[String]) -> wasmtime::Result<()> {
    let engine = Engine::default();
    let wat = format!("(component {})", imports.join(" "));
    let component = Component::new(&engine, wat)?;
    let mut linker = Linker::<Host>::new(&engine);
    kv_host::add_to_linker(&mut linker)?;
    let stores = ProviderRegistry::new()
        .build(&KvConfig::default())
        .await
        .unwrap();
    let host = Host {
        table: ResourceTable::new(),
        kv: KvCtx::new(std::sync::Arc::new(stores)),
    };
    let mut store = Store::new(&engine, host);
    linker.instantiate_async(&mut store, &component).await?;
    Ok(())
}

const BUCKET: &str = "(export \"bucket\" (type (sub resource)))";

#[tokio::test]
async fn either_version_or_both_link() {
    let draft = import("wasi:keyvalue/store@0.2.0-draft", BUCKET);
    let draft2 = import("wasi:keyvalue/store@0.2.0-draft2", BUCKET);
    instantiate(std::slice::from_ref(&draft))
        .await
        .expect("draft only");
    instantiate(std::slice::from_ref(&draft2))
        .await
        .expect("draft2 only");
    instantiate(&[draft, draft2]).await.expect("both");
}

#[tokio::test]
async fn atomics_batch_and_ttl_link() {
    for interface in [
        "wasi:keyvalue/atomics@0.2.0-draft2",
        "wasi:keyvalue/batch@0.2.0-draft2",
        "wasi:keyvalue/atomics@0.2.0-draft",
        "wasi:keyvalue/batch@0.2.0-draft",
        "wasi-kv:ttl/ttl@0.1.0",
    ] {
        instantiate(&[import(interface, "")])
            .await
            .unwrap_or_else(|err| panic!("{interface}: {err:?}"));
    }
}

#[tokio::test]
async fn an_unknown_version_does_not_link() {
    let err = instantiate(&[import("wasi:keyvalue/store@0.3.0", BUCKET)])
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("wasi:keyvalue/store@0.3.0"),
        "{err:?}"
    );
}
