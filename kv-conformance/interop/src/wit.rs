//! The WIT every interop fixture is generated from: the `wasi-kv:interop` worlds and the
//! packages they use, Spin's draft2 and the older `0.2.0-draft` among them.

/// `mod bindings` for one `wasi-kv:interop` world.
macro_rules! interop_bindings {
    ($world:tt) => {
        mod bindings {
            wit_bindgen::generate!({
                path: [
                    "../../../wit/keyvalue-spin",
                    "../../../wit/keyvalue-draft",
                    "../../../wit/ttl",
                    "../../../wit/http-handler",
                    "../../../wit/interop",
                ],
                world: $world,
                generate_all,
            });
        }
    };
}
