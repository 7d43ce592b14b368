//! Small assertion helpers: a failing check returns `Err(reason)`, never panics, so the
//! runner reports the reason.

use std::fmt::Debug;

use crate::bindings::exports::wasi_kv::conformance::suite::{Profile, Target};
use crate::bindings::wasi::keyvalue0_2_0_draft2::store::{self, Bucket, Error};

pub type Outcome = Result<(), String>;

pub struct Ctx {
    pub target: Target,
    pub profile: Profile,
}

/// A case result starting with this is a skip, not a failure: the portable runner was not
/// given a store the case needs.
pub const SKIP: &str = "skip: ";

impl Ctx {
    pub fn open(&self) -> Result<Bucket, String> {
        store::open(&self.target.store).or_fail("open the store under test")
    }

    pub fn open_peer(&self) -> Result<Bucket, String> {
        let name = self.named(&self.target.peer, "--peer")?;
        store::open(name).or_fail("open the peer store")
    }

    pub fn open_read_only(&self) -> Result<Bucket, String> {
        let name = self.named(&self.target.read_only, "--read-only")?;
        store::open(name).or_fail("open the read-only store")
    }

    /// The identifier of a store configured with `access = "none"`.
    pub fn denied(&self) -> Result<&str, String> {
        self.named(&self.target.denied, "--denied")
    }

    /// An empty identifier means the portable runner was not given that store.
    fn named<'a>(&self, name: &'a str, flag: &str) -> Result<&'a str, String> {
        if name.is_empty() {
            Err(format!("{SKIP}needs a store named with {flag}"))
        } else {
            Ok(name)
        }
    }
}

pub trait OrFail<T> {
    fn or_fail(self, what: &str) -> Result<T, String>;
}

impl<T, E: Debug> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: &str) -> Result<T, String> {
        self.map_err(|err| format!("{what}: unexpected error {err:?}"))
    }
}

/// The call must fail with `error::other` whose message starts with `class:`.
pub fn expect_class<T: Debug>(result: Result<T, Error>, class: &str, what: &str) -> Outcome {
    match result {
        Err(Error::Other(message)) if message.starts_with(&format!("{class}:")) => Ok(()),
        other => Err(format!(
            "{what}: expected error class `{class}`, got {other:?}"
        )),
    }
}

pub fn expect_access_denied<T: Debug>(result: Result<T, Error>, what: &str) -> Outcome {
    match result {
        Err(Error::AccessDenied) => Ok(()),
        other => Err(format!("{what}: expected access-denied, got {other:?}")),
    }
}

pub fn ensure(condition: bool, what: impl FnOnce() -> String) -> Outcome {
    if condition { Ok(()) } else { Err(what()) }
}

pub fn ensure_eq<T: PartialEq + Debug>(actual: T, expected: T, what: &str) -> Outcome {
    if actual == expected {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected {}, got {}",
            short(&expected),
            short(&actual)
        ))
    }
}

/// Debug output cut to a readable length (values can be megabytes).
pub fn short<T: Debug>(value: &T) -> String {
    let text = format!("{value:?}");
    if text.len() > 200 {
        let mut end = 200;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} chars)", &text[..end], text.len())
    } else {
        text
    }
}

/// Every key of the store, following cursors to the end; fails on a runaway listing.
pub fn list_all(bucket: &Bucket) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let page = bucket.list_keys(cursor.as_deref()).or_fail("list-keys")?;
        ensure(page.keys.len() <= 1000, || {
            format!(
                "a list-keys page held {} keys (at most 1000)",
                page.keys.len()
            )
        })?;
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
    Err("list-keys did not end after 10,000 pages".to_string())
}

/// The listing as a sorted set, checking duplicates unless the provider declares them.
pub fn list_set(ctx: &Ctx, bucket: &Bucket) -> Result<Vec<String>, String> {
    let mut keys = list_all(bucket)?;
    let listed = keys.len();
    keys.sort();
    keys.dedup();
    if !ctx.profile.list_may_repeat {
        ensure_eq(
            keys.len(),
            listed,
            "keys listed (duplicates are not declared)",
        )?;
    }
    Ok(keys)
}

pub fn sorted(keys: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut keys: Vec<String> = keys.into_iter().map(Into::into).collect();
    keys.sort();
    keys
}
