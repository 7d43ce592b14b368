//! The cases, one file per rule of docs/semantics.md (`s01_keys` … `s11_errors`, and the older
//! draft interface apart). Each file opens with its `CASES` table and has the case bodies right
//! below, so a case's name, rules, needs and summary sit beside its code. Helpers used by
//! several rules live here.

use crate::bindings::exports::wasi_kv::conformance::suite::{Capability, Phase};
#[cfg(not(feature = "draft2-only"))]
use crate::bindings::wasi::keyvalue0_2_0_draft as draft;
use crate::bindings::wasi::keyvalue0_2_0_draft2::atomics::{self, Cas, CasError};
use crate::bindings::wasi::keyvalue0_2_0_draft2::batch;
use crate::bindings::wasi::keyvalue0_2_0_draft2::store::{self, Bucket, Error};
#[cfg(not(feature = "draft2-only"))]
use crate::bindings::wasi_kv::ttl::ttl;
use crate::check::*;

pub struct Case {
    pub name: &'static str,
    pub rules: &'static [&'static str],
    pub summary: &'static str,
    pub needs: &'static [Capability],
    pub workers: u32,
    pub run: fn(&Ctx, Phase) -> Outcome,
}

const NONE: &[Capability] = &[];
#[cfg(not(feature = "draft2-only"))]
const TTL: &[Capability] = &[Capability::Ttl];
const CAS: &[Capability] = &[Capability::Cas];

macro_rules! case {
    ($name:ident, $rules:expr, $needs:expr, $summary:literal) => {
        case!($name, $rules, $needs, 0, $summary)
    };
    ($name:ident, $rules:expr, $needs:expr, $workers:expr, $summary:literal) => {
        Case {
            name: stringify!($name),
            rules: &$rules,
            summary: $summary,
            needs: $needs,
            workers: $workers,
            run: $name,
        }
    };
}

#[cfg(not(feature = "draft2-only"))]
mod draft_interface;
mod s01_keys;
mod s02_values;
mod s03_missing;
mod s04_read_your_writes;
mod s05_listing;
mod s06_increment;
mod s07_cas;
mod s08_batches;
#[cfg(not(feature = "draft2-only"))]
mod s09_ttl;
mod s10_stores;
mod s11_errors;

/// Every case, grouped by rule, in report order.
const GROUPS: &[&[Case]] = &[
    s01_keys::CASES,
    s02_values::CASES,
    s03_missing::CASES,
    s04_read_your_writes::CASES,
    s05_listing::CASES,
    s06_increment::CASES,
    s07_cas::CASES,
    s08_batches::CASES,
    #[cfg(not(feature = "draft2-only"))]
    s09_ttl::CASES,
    s10_stores::CASES,
    s11_errors::CASES,
    #[cfg(not(feature = "draft2-only"))]
    draft_interface::CASES,
];

/// Every case, in report order.
pub fn all() -> impl Iterator<Item = &'static Case> {
    GROUPS.iter().flat_map(|group| group.iter())
}

// ---------- helpers ----------

fn set(bucket: &Bucket, key: &str, value: &[u8]) -> Outcome {
    bucket
        .set(key, value)
        .or_fail(&format!("set {}", short(&key)))
}

fn get(bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, String> {
    bucket.get(key).or_fail(&format!("get {}", short(&key)))
}

fn expect_value(bucket: &Bucket, key: &str, expected: Option<&[u8]>) -> Outcome {
    let actual = get(bucket, key)?;
    ensure_eq(
        actual.as_deref(),
        expected,
        &format!("value of {}", short(&key)),
    )
}

fn set_all(bucket: &Bucket, entries: &[(String, Vec<u8>)]) -> Outcome {
    for chunk in entries.chunks(500) {
        batch::set_many(bucket, chunk).or_fail("set-many")?;
    }
    Ok(())
}

fn keys_numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i:05}")).collect()
}

fn edge_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "a",
        " a",
        "a ",
        "a/",
        "/a",
        "a//b",
        "a/b",
        "/",
        "//",
        "%2F",
        "%2f",
        "%41",
        "A",
        ".",
        "..",
        "./a",
        "a/./b",
        "a/../b",
        "'",
        "\"",
        "#",
        "?",
        "\\",
        "+",
        "a+b",
        "a b",
        "*",
        "[a]",
        "a?b",
        "a*",
        "{}",
        "~",
        ";",
        ":",
        "@",
        "&",
        "=",
        "$x",
        "!",
        ",",
        "<>",
        "|",
        "`",
        "^",
        "\t",
        "a\nb",
        "a\rb",
        "\u{0}",
        "a\u{0}b",
        "\u{7f}",
        "é",
        "e\u{301}",
        "日本語",
        "🦀",
        "a\u{200b}b",
        "__",
        "-",
        "_a",
        "key:with:colons",
        "CON",
        "nul",
    ]
    .iter()
    .map(|key| key.to_string())
    .collect();
    keys.push("x".repeat(1024));
    keys.push("🦀".repeat(256));
    keys
}

// ---------- S1 keys ----------

fn patterned(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

/// One position of a tagged `get-many` answer.
type Entry = Option<(String, Vec<u8>)>;

/// `get-many` as the tagged draft2 text returns it, whichever shape this build imports. In
/// the Spin / PR #55 shape every key comes back with its name, in order: checked here, so
/// both builds of the suite hold both shapes to the same rules.
fn get_many(bucket: &Bucket, keys: &[String]) -> Result<Vec<Entry>, Error> {
    #[cfg(not(feature = "spin-batch"))]
    {
        batch::get_many(bucket, keys)
    }
    #[cfg(feature = "spin-batch")]
    {
        let entries = batch::get_many(bucket, keys)?;
        if entries.len() != keys.len() || entries.iter().zip(keys).any(|((got, _), key)| got != key)
        {
            return Err(Error::Other(format!(
                "spin-shaped get-many must return every key in order: asked {} keys, got {:?}",
                keys.len(),
                entries.iter().map(|(key, _)| key).collect::<Vec<_>>()
            )));
        }
        Ok(entries
            .into_iter()
            .map(|(key, value)| value.map(|value| (key, value)))
            .collect())
    }
}
