//! The WIT every component built against the `wasi-kv:interop` worlds is generated from: those
//! worlds and the packages they use, Spin's draft2 and the older `0.2.0-draft` among them.
//! Included by the interop fixtures and the benchmark guests.

/// `mod bindings` for one `wasi-kv:interop` world. wit-bindgen reads paths from the crate's
/// manifest directory: `interop_bindings!(WORLD)` is for a crate two levels down
/// (`test-components/interop/<name>`, `test-components/handlers/<name>`),
/// `interop_bindings!(in_commands WORLD)` for `test-components/commands`.
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
    (in_commands $world:tt) => {
        mod bindings {
            wit_bindgen::generate!({
                path: [
                    "../../wit/keyvalue-spin",
                    "../../wit/keyvalue-draft",
                    "../../wit/ttl",
                    "../../wit/http-handler",
                    "../../wit/interop",
                ],
                world: $world,
                generate_all,
            });
        }
    };
}
