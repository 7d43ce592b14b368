//! An interop command component: prints [`report::report`], or fails with exit code 1.

#[macro_use]
mod wit;

#[cfg(feature = "spin")]
interop_bindings!("wasi-kv:interop/spin-command@0.1.0");
#[cfg(feature = "draft")]
interop_bindings!("wasi-kv:interop/draft-command@0.1.0");

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
