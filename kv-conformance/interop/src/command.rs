//! An interop command component: prints [`report::report`], or fails with exit code 1.

#[cfg(feature = "spin")]
mod bindings {
    wit_bindgen::generate!({
        path: [
            "../../../wit/keyvalue-spin",
            "../../../wit/keyvalue-draft",
            "../../../wit/ttl",
            "../../../wit/http-handler",
            "../../../wit/interop",
        ],
        world: "wasi-kv:interop/spin-command@0.1.0",
        generate_all,
    });
}

#[cfg(feature = "draft")]
mod bindings {
    wit_bindgen::generate!({
        path: [
            "../../../wit/keyvalue-spin",
            "../../../wit/keyvalue-draft",
            "../../../wit/ttl",
            "../../../wit/http-handler",
            "../../../wit/interop",
        ],
        world: "wasi-kv:interop/draft-command@0.1.0",
        generate_all,
    });
}

mod report;

fn main() {
    match report::report() {
        Ok(text) => print!("{text}"),
        Err(err) => {
            eprintln!("interop: {err}");
            std::process::exit(1);
        }
    }
}
