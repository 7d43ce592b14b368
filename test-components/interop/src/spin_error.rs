//! Spin's key-value error as the Spin SDK fixtures answer it (`store-table-full`,
//! `no-such-store`, `access-denied`, `other: …`), the text the tests expect. Included by each
//! (`#[path]`): every SDK from 2.x to 7.x names the type `spin_sdk::key_value::Error`, with
//! the same variants.

use spin_sdk::key_value::Error;

pub(crate) fn describe(err: &Error) -> String {
    match err {
        Error::StoreTableFull => "store-table-full".into(),
        Error::NoSuchStore => "no-such-store".into(),
        Error::AccessDenied => "access-denied".into(),
        Error::Other(message) => format!("other: {message}"),
    }
}
