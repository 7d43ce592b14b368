//! Store configuration (README, "Configuration"): which store identifier is which provider, namespace and
//! access mode. Two spellings: a TOML file with one `[stores.NAME]` table per store, and the
//! command-line short form `NAME=URL`.
//!
//! ```toml
//! [limits]
//! max_batch_entries = 10000
//! max_batch_bytes = 67108864
//! operation_timeout_ms = 30000
//!
//! [stores.cache]
//! provider = "redis"
//! url = "redis://127.0.0.1:6379/0"
//! namespace = "cache"
//! access = "read-write"
//! password = "${REDIS_PASSWORD}"
//! ```
//!
//! Each table is a serde struct that refuses unknown keys. The exception is a store's
//! provider-specific fields, kept in [`StoreSpec::options`]: the provider's factory validates
//! them and rejects unknown ones, so a typo is still an error, not a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, DeserializeOwned};
use serde::{Deserialize, Deserializer};
use url::Url;

use crate::limits::{
    Limits, MAX_LIST_PAGE, MAX_OPERATION_TIMEOUT, REQUEST_RECORD_TTL, RetryPolicy,
};
use crate::secret::Secret;
use crate::store::{Access, CursorSecret};

/// A configuration problem, reported as one line naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// An error about `place` (`stores.cache.url`, `--store cache=...`).
    pub fn at(place: impl fmt::Display, problem: impl fmt::Display) -> Self {
        ConfigError(format!("{place}: {problem}"))
    }
}

/// Looks up the variable of a `${NAME}` reference.
pub type Env<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// One configured store.
#[derive(Clone, PartialEq)]
pub struct StoreSpec {
    /// Provider name (`memory`, `redis`, `dynamodb`, `cosmos`, `gcs`).
    pub provider: String,
    /// The namespace isolating this store inside the backend; defaults to the store name.
    pub namespace: String,
    /// What the component may do.
    pub access: Access,
    /// The connection URL, when given (the short form always has one).
    pub url: Option<Url>,
    /// Provider-specific fields, `${ENV}` already expanded.
    pub options: toml::Table,
}

impl StoreSpec {
    /// The provider's own fields: the URL's query pairs (as text), then the store table's
    /// fields, in that order, so a table field overrides the URL.
    pub fn provider_fields(&self) -> Vec<ProviderField> {
        let from_url = self.url.iter().flat_map(|url| {
            url.query_pairs().map(|(name, value)| ProviderField {
                name: name.into_owned(),
                value: toml::Value::String(value.into_owned()),
            })
        });
        let from_table = self.options.iter().map(|(name, value)| ProviderField {
            name: name.clone(),
            value: value.clone(),
        });
        from_url.chain(from_table).collect()
    }
}

/// One provider field of a store, with the conversions every provider needs. Its `Debug`
/// redacts the value of secret-looking fields ([`is_secret_field`]).
#[derive(Clone)]
pub struct ProviderField {
    /// The field's name.
    pub name: String,
    value: toml::Value,
}

impl fmt::Debug for ProviderField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = f.debug_struct("ProviderField");
        shown.field("name", &self.name);
        if is_secret_field(&self.name) {
            shown.field("value", &"<redacted>");
        } else {
            shown.field("value", &self.value);
        }
        shown.finish()
    }
}

impl ProviderField {
    /// The error for a field `provider` does not know: a typo is an error, never ignored.
    pub fn unknown(&self, provider: &str) -> ConfigError {
        ConfigError(format!(
            "unknown field `{}` for the {provider} provider",
            self.name
        ))
    }

    /// The value as a [`Secret`], which no `Debug` or error message prints.
    pub fn secret(&self) -> Result<Secret, ConfigError> {
        self.text().map(Secret::new)
    }

    /// A positive number of milliseconds up to `max_ms`, as a duration.
    pub fn millis(&self, max_ms: i64) -> Result<Duration, ConfigError> {
        self.integer(1..=max_ms)
            .map(|ms| Duration::from_millis(ms.unsigned_abs()))
    }

    /// The value as a string.
    pub fn text(&self) -> Result<String, ConfigError> {
        match &self.value {
            toml::Value::String(text) => Ok(text.clone()),
            _ => Err(ConfigError(format!("`{}` must be a string", self.name))),
        }
    }

    /// A list of strings: a TOML array of strings, or comma-separated text (URL queries are
    /// text); empty items are errors.
    pub fn list(&self) -> Result<Vec<String>, ConfigError> {
        let items: Option<Vec<String>> = match &self.value {
            toml::Value::String(text) => Some(
                text.split(',')
                    .map(|item| item.trim().to_string())
                    .collect(),
            ),
            toml::Value::Array(values) => values
                .iter()
                .map(|value| value.as_str().map(|item| item.trim().to_string()))
                .collect(),
            _ => None,
        };
        items
            .filter(|items| items.iter().all(|item| !item.is_empty()))
            .ok_or_else(|| {
                ConfigError(format!(
                    "`{}` must be a list of strings (an array, or text separated by commas)",
                    self.name
                ))
            })
    }

    /// `true` or `false`, as a TOML boolean or as text (URL queries are text).
    pub fn flag(&self) -> Result<bool, ConfigError> {
        match &self.value {
            toml::Value::Boolean(flag) => Ok(*flag),
            toml::Value::String(text) if text == "true" => Ok(true),
            toml::Value::String(text) if text == "false" => Ok(false),
            _ => Err(ConfigError(format!(
                "`{}` must be true or false",
                self.name
            ))),
        }
    }

    /// An integer in `range`, as a TOML integer or as decimal text.
    pub fn integer(&self, range: std::ops::RangeInclusive<i64>) -> Result<i64, ConfigError> {
        let number = match &self.value {
            toml::Value::Integer(n) => Some(*n),
            toml::Value::String(text) => text.parse().ok(),
            _ => None,
        };
        number.filter(|n| range.contains(n)).ok_or_else(|| {
            ConfigError(format!(
                "`{}` must be {} to {}",
                self.name,
                range.start(),
                range.end()
            ))
        })
    }
}

impl fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options: BTreeMap<&String, String> = self
            .options
            .iter()
            .map(|(key, value)| {
                let shown = if is_secret_field(key) {
                    "<redacted>".to_string()
                } else {
                    value.to_string()
                };
                (key, shown)
            })
            .collect();
        f.debug_struct("StoreSpec")
            .field("provider", &self.provider)
            .field("namespace", &self.namespace)
            .field("access", &self.access)
            .field("url", &self.url.as_ref().map(redact_url))
            .field("options", &options)
            .finish()
    }
}

/// Whether a configuration field holds a secret that must never be printed.
pub fn is_secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "key", "token", "credential"]
        .iter()
        .any(|marker| name.contains(marker))
}

/// The URL with its password and secret-looking query values replaced, for logs and errors.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("<redacted>"));
    }
    if shown.query().is_some() {
        let pairs: Vec<(String, String)> = shown
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret_field(&name) {
                    "<redacted>".to_string()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// The whole configuration: stores and host limits.
#[derive(Debug, Clone, Default)]
pub struct KvConfig {
    /// Stores by identifier.
    pub stores: BTreeMap<String, StoreSpec>,
    /// Host limits shared by every store.
    pub limits: Limits,
    /// `[cursors] secret`: list cursors signed with it are accepted by every host that has it.
    pub cursor_secret: Option<CursorSecret>,
    /// Keys preset before the component starts (`[stores.NAME.seed]`, `--seed`).
    pub seeds: Vec<Seed>,
}

/// A key written into a store before the component starts: test data, demo data, the state
/// a component expects (wasmtime's `-S keyvalue-in-memory-data=KEY=VALUE`).
#[derive(Clone, PartialEq, Eq)]
pub struct Seed {
    /// The store identifier (`""` reaches `default` unless configured).
    pub store: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Seed values may be credentials a component reads: never printed.
        f.debug_struct("Seed")
            .field("store", &self.store)
            .field("key", &self.key)
            .field("value_bytes", &self.value.len())
            .finish()
    }
}

/// Reads a seed file, relative to `base` (the config file's folder) when not absolute.
fn read_seed_file(place: &str, base: Option<&Path>, path: &str) -> Result<Vec<u8>, ConfigError> {
    let path = Path::new(path);
    let full = match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    };
    std::fs::read(&full)
        .map_err(|err| ConfigError::at(place, format!("cannot read {}: {err}", full.display())))
}

/// A value given on a command line: the text itself, or with `@PATH` that file's bytes (`@@`
/// for a literal `@`).
pub fn value_argument(place: &str, text: &str) -> Result<Vec<u8>, ConfigError> {
    Ok(match text.strip_prefix('@') {
        Some(literal) if literal.starts_with('@') => literal.as_bytes().to_vec(),
        Some(path) => read_seed_file(place, None, path)?,
        None => text.as_bytes().to_vec(),
    })
}

impl KvConfig {
    /// Parses a TOML configuration file's text. `env` looks up `${NAME}` references; seed
    /// files are relative to the current directory.
    pub fn from_toml(text: &str, env: &Env) -> Result<KvConfig, ConfigError> {
        Self::from_toml_in(text, env, None)
    }

    /// [`KvConfig::from_toml`], with seed files relative to `base`.
    pub fn from_toml_in(
        text: &str,
        env: &Env,
        base: Option<&Path>,
    ) -> Result<KvConfig, ConfigError> {
        parse_toml::<ConfigFile>(text)?.resolve(env, base)
    }

    /// Reads and parses a configuration file, expanding `${NAME}` from the process environment.
    pub fn from_file(path: &Path) -> Result<KvConfig, ConfigError> {
        read_toml::<ConfigFile>(path)?
            .resolve(&|name| std::env::var(name).ok(), path.parent())
            .map_err(|err| ConfigError::at(path.display(), err))
    }

    /// Adds a seed given as `[STORE::]KEY=VALUE`: the store defaults to `""` (the default
    /// store), and a value `@PATH` is the contents of that file (`@@` for a literal `@`).
    pub fn add_seed(&mut self, arg: &str) -> Result<(), ConfigError> {
        let place = "--seed";
        let (target, value) = arg
            .split_once('=')
            .ok_or_else(|| ConfigError::at(place, "expected [STORE::]KEY=VALUE or KEY=@FILE"))?;
        let (store, key) = target.split_once("::").unwrap_or(("", target));
        let value = value_argument(&format!("--seed {target}"), value)?;
        self.seeds.push(Seed {
            store: store.to_string(),
            key: key.to_string(),
            value,
        });
        Ok(())
    }

    /// Adds a store given as `NAME=URL`; a later definition of the same name replaces it.
    pub fn add_short_form(&mut self, arg: &str) -> Result<(), ConfigError> {
        let (name, spec) = parse_short_form(arg)?;
        self.stores.insert(name, spec);
        Ok(())
    }
}

/// Reads a TOML file into `T`; every error starts with the file's path.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::at(path.display(), err))?;
    parse_toml(&text).map_err(|err| ConfigError::at(path.display(), err))
}

/// Parses TOML text into `T`. An error is one line: `invalid TOML at line L, column C: …` for
/// syntax, `TABLE.KEY: what was wrong (line L, column C)` for content. Never the line itself
/// nor a string value: either may hold a secret (an unterminated `password = "…`).
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let document = toml::Deserializer::parse(text).map_err(|err| {
        let at = line_column(text, err.span())
            .map(|(line, column)| format!(" at line {line}, column {column}"))
            .unwrap_or_default();
        ConfigError(format!("invalid TOML{at}: {}", one_line(err.message())))
    })?;
    serde_path_to_error::deserialize(document).map_err(|err| {
        let path = match err.path().to_string() {
            root if root == "." => "top level".to_string(),
            path => path,
        };
        let err = err.into_inner();
        let at = line_column(text, err.span())
            .map(|(line, column)| format!(" (line {line}, column {column})"))
            .unwrap_or_default();
        ConfigError::at(
            path,
            format!("{}{at}", without_strings(&one_line(err.message()))),
        )
    })
}

/// The 1-based line and column of a span's start.
fn line_column(text: &str, span: Option<std::ops::Range<usize>>) -> Option<(usize, usize)> {
    let before = text.get(..span?.start.min(text.len()))?;
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    Some((line, column))
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// serde quotes a misplaced string (`invalid type: string "…", expected …`): it may be a
/// secret (`cursors = "…"`), so it becomes `a string`.
fn without_strings(message: &str) -> String {
    match (
        message.split_once(": string \""),
        message.rfind("\", expected "),
    ) {
        (Some((head, _)), Some(end)) => format!("{head}: a string{}", &message[end + 1..]),
        _ => message.to_string(),
    }
}

/// The tables kv-core reads: `[limits]`, `[cursors]` and `[stores.NAME]`. A host with tables
/// of its own declares its own file with these three fields beside its own (kv-cli adds serve's
/// `[outbound]`), so one document is read once and every unknown top-level key refused.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct ConfigFile {
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsTable,
    /// `[cursors]`.
    pub cursors: Option<CursorsTable>,
    /// `[stores.NAME]`.
    #[serde(default)]
    pub stores: BTreeMap<String, StoreTable>,
}

impl ConfigFile {
    /// The configuration the file describes: `${NAME}` in the strings of `[cursors]` and
    /// `[stores]` expanded through `env`, seed files read relative to `base`.
    pub fn resolve(self, env: &Env, base: Option<&Path>) -> Result<KvConfig, ConfigError> {
        let mut config = KvConfig {
            limits: self.limits.resolve()?,
            ..KvConfig::default()
        };
        if let Some(cursors) = self.cursors {
            let secret = expand_env("cursors.secret", cursors.secret.expose(), env)?;
            let secret = CursorSecret::new(secret).ok_or_else(|| {
                ConfigError::at(
                    "cursors.secret",
                    format!("must be at least {} bytes", CursorSecret::MIN_BYTES),
                )
            })?;
            config.cursor_secret = Some(secret);
        }
        for (name, table) in self.stores {
            let place = format!("stores.{name}");
            let (spec, seeds) = table.resolve(&place, &name, env, base)?;
            config.seeds.extend(seeds);
            config.stores.insert(name, spec);
        }
        Ok(config)
    }
}

/// `[limits]`: positive integers; absent ones keep [`Limits::default`].
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of limits")]
pub struct LimitsTable {
    max_value_bytes: Option<Positive>,
    max_batch_entries: Option<Positive>,
    max_batch_bytes: Option<Positive>,
    max_held_bytes: Option<Positive>,
    list_page_size: Option<Positive>,
    operation_timeout_ms: Option<Positive>,
    retry_max_attempts: Option<Positive>,
    retry_initial_backoff_ms: Option<Positive>,
    retry_max_backoff_ms: Option<Positive>,
}

impl LimitsTable {
    fn resolve(self) -> Result<Limits, ConfigError> {
        let defaults = Limits::default();
        let limits = Limits {
            max_value_bytes: Positive::size(self.max_value_bytes, defaults.max_value_bytes),
            max_batch_entries: Positive::size(self.max_batch_entries, defaults.max_batch_entries),
            max_batch_bytes: Positive::size(self.max_batch_bytes, defaults.max_batch_bytes),
            max_held_bytes: Positive::size(self.max_held_bytes, defaults.max_held_bytes),
            list_page_size: Positive::size(self.list_page_size, defaults.list_page_size),
            operation_timeout: Positive::millis(
                self.operation_timeout_ms,
                defaults.operation_timeout,
            ),
            retry: RetryPolicy {
                max_attempts: self
                    .retry_max_attempts
                    .map_or(defaults.retry.max_attempts, |Positive(n)| n.min(100) as u32),
                initial_backoff: Positive::millis(
                    self.retry_initial_backoff_ms,
                    defaults.retry.initial_backoff,
                ),
                max_backoff: Positive::millis(
                    self.retry_max_backoff_ms,
                    defaults.retry.max_backoff,
                ),
            },
        };
        if limits.list_page_size > MAX_LIST_PAGE {
            return Err(ConfigError::at(
                "limits.list_page_size",
                format!("must be at most {MAX_LIST_PAGE}"),
            ));
        }
        if limits.operation_timeout > MAX_OPERATION_TIMEOUT {
            return Err(ConfigError::at(
                "limits.operation_timeout_ms",
                format!(
                    "must be at most {} ms: a retry must end before the record of an applied \
                     increment or swap expires ({} s), or it could apply it twice",
                    MAX_OPERATION_TIMEOUT.as_millis(),
                    REQUEST_RECORD_TTL.as_secs()
                ),
            ));
        }
        Ok(limits)
    }
}

/// A limit's value: an integer above zero.
#[derive(Clone, Copy, Deserialize)]
#[serde(try_from = "i64")]
struct Positive(u64);

impl TryFrom<i64> for Positive {
    type Error = &'static str;
    fn try_from(n: i64) -> Result<Positive, &'static str> {
        u64::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .map(Positive)
            .ok_or("must be a positive integer")
    }
}

impl Positive {
    fn size(value: Option<Positive>, default: usize) -> usize {
        value.map_or(default, |Positive(n)| {
            usize::try_from(n).unwrap_or(usize::MAX)
        })
    }

    fn millis(value: Option<Positive>, default: Duration) -> Duration {
        value.map_or(default, |Positive(n)| Duration::from_millis(n))
    }
}

/// `[cursors] secret = "${WASI_KV_CURSOR_SECRET}"`, at least 16 bytes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with `secret`")]
pub struct CursorsTable {
    secret: Secret,
}

/// `[stores.NAME]`: the fields every store has, its seed table, and the provider's own fields
/// (serde cannot refuse unknown keys beside `flatten`; the provider's factory refuses them).
#[derive(Deserialize)]
#[serde(expecting = "a table")]
pub struct StoreTable {
    provider: Option<String>,
    url: Option<String>,
    namespace: Option<String>,
    access: Option<String>,
    #[serde(default)]
    seed: BTreeMap<String, SeedValue>,
    #[serde(flatten)]
    options: toml::Table,
}

impl StoreTable {
    fn resolve(
        self,
        place: &str,
        name: &str,
        env: &Env,
        base: Option<&Path>,
    ) -> Result<(StoreSpec, Vec<Seed>), ConfigError> {
        check_store_name(place, name)?;
        let expand = |field: &str, text: Option<String>| {
            text.map(|text| expand_env(&format!("{place}.{field}"), &text, env))
                .transpose()
        };
        let url = expand("url", self.url)?
            .map(|text| parse_url(&format!("{place}.url"), &text))
            .transpose()?;
        let provider = match (expand("provider", self.provider)?, &url) {
            (Some(provider), _) => provider,
            (None, Some(url)) => url.scheme().to_string(),
            (None, None) => return Err(ConfigError::at(place, "missing field `provider`")),
        };
        let namespace =
            expand("namespace", self.namespace)?.unwrap_or_else(|| default_namespace(name));
        let access = match expand("access", self.access)? {
            None => Access::ReadWrite,
            Some(text) => Access::parse(&text).ok_or_else(|| {
                ConfigError::at(
                    format!("{place}.access"),
                    format!(
                        "unknown access mode {text:?} (expected read-write, read-only or none)"
                    ),
                )
            })?,
        };
        check_namespace(&format!("{place}.namespace"), &namespace)?;
        let mut options = self.options;
        for (key, value) in &mut options {
            expand_env_in_value(&format!("{place}.{key}"), value, env)?;
        }
        let mut seeds = Vec::with_capacity(self.seed.len());
        for (key, value) in self.seed {
            let at = format!("{place}.seed.{key}");
            let value = match value {
                SeedValue::Text(text) => expand_env(&at, &text, env)?.into_bytes(),
                SeedValue::File { file } => {
                    read_seed_file(&at, base, &expand_env(&at, &file, env)?)?
                }
            };
            seeds.push(Seed {
                store: name.to_string(),
                key,
                value,
            });
        }
        let spec = StoreSpec {
            provider,
            namespace,
            access,
            url,
            options,
        };
        Ok((spec, seeds))
    }
}

/// `[stores.NAME.seed]`: `KEY = "text"` or `KEY = { file = "PATH" }`.
enum SeedValue {
    Text(String),
    File { file: String },
}

/// `{ file = "PATH" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    file: String,
}

impl<'de> Deserialize<'de> for SeedValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = SeedValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or { file = \"PATH\" }")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<SeedValue, E> {
                Ok(SeedValue::Text(text.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<SeedValue, A::Error> {
                let SeedFile { file } =
                    SeedFile::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(SeedValue::File { file })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A store name is at most 256 bytes. The empty name is the identifier wasmtime's keyvalue
/// host knows (`open("")`); it may be configured like any other.
fn check_store_name(place: &str, name: &str) -> Result<(), ConfigError> {
    if name.len() > 256 {
        return Err(ConfigError::at(
            place,
            "a store name must be at most 256 bytes",
        ));
    }
    Ok(())
}

/// The namespace of a store configured without one: its name, or `default` for `""` (so the
/// empty identifier and `default` share data unless told otherwise).
fn default_namespace(name: &str) -> String {
    if name.is_empty() {
        DEFAULT_STORE.to_string()
    } else {
        name.to_string()
    }
}

/// The store a host offers when none is configured, and the one `open("")` reaches unless
/// `""` is configured itself.
pub const DEFAULT_STORE: &str = "default";

fn check_namespace(place: &str, namespace: &str) -> Result<(), ConfigError> {
    if namespace.is_empty() || namespace.len() > 256 {
        return Err(ConfigError::at(place, "a namespace must be 1 to 256 bytes"));
    }
    if namespace.chars().any(char::is_control) {
        return Err(ConfigError::at(
            place,
            "a namespace must not contain control characters",
        ));
    }
    Ok(())
}

/// Parses a store URL. A comma-separated host list (`redis+cluster://h1:p1,h2:p2/…`, as cluster
/// clients write their seed nodes) keeps the first host in the URL and passes the others as the
/// provider field `nodes`.
fn parse_url(place: &str, text: &str) -> Result<Url, ConfigError> {
    let malformed = |err: url::ParseError| ConfigError::at(place, format!("malformed URL: {err}"));
    let Some((head, more_hosts)) = split_host_list(text) else {
        return Url::parse(text).map_err(malformed);
    };
    let mut url = Url::parse(&head).map_err(malformed)?;
    url.query_pairs_mut().append_pair("nodes", &more_hosts);
    Ok(url)
}

/// `scheme://[userinfo@]first,more…/rest` → (`scheme://[userinfo@]first/rest`, `more…`).
fn split_host_list(text: &str) -> Option<(String, String)> {
    let (scheme, rest) = text.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let hosts_start = authority.rfind('@').map_or(0, |at| at + 1);
    let (userinfo, hosts) = authority.split_at(hosts_start);
    let (first, more) = hosts.split_once(',')?;
    Some((
        format!("{scheme}://{userinfo}{first}{path}"),
        more.to_string(),
    ))
}

/// Parses `NAME=URL`; `namespace` and `access` may be given as query parameters.
pub fn parse_short_form(arg: &str) -> Result<(String, StoreSpec), ConfigError> {
    let place = format!("--store {arg}");
    let (name, url_text) = arg
        .split_once('=')
        .ok_or_else(|| ConfigError::at(&place, "expected NAME=URL, e.g. cache=memory:"))?;
    check_store_name(&place, name)?;
    let mut url = parse_url(&place, url_text).map_err(|err| {
        // Do not echo a URL that may carry a password.
        let _ = err;
        ConfigError::at(format!("--store {name}=..."), "malformed URL")
    })?;
    let place = format!("--store {name}={}", redact_url(&url));
    let mut namespace = default_namespace(name);
    let mut access = Access::ReadWrite;
    let mut rest = Vec::new();
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "namespace" => namespace = value.into_owned(),
            "access" => {
                access = Access::parse(&value).ok_or_else(|| {
                    ConfigError::at(
                        &place,
                        format!(
                            "unknown access mode {value:?} (expected read-write, read-only or none)"
                        ),
                    )
                })?
            }
            _ => rest.push((key.into_owned(), value.into_owned())),
        }
    }
    if rest.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(rest);
    }
    check_namespace(&place, &namespace)?;
    Ok((
        name.to_string(),
        StoreSpec {
            provider: url.scheme().to_string(),
            namespace,
            access,
            url: Some(url),
            options: toml::Table::new(),
        },
    ))
}

/// Expands `${NAME}` in every string of a provider field (arrays and tables included).
fn expand_env_in_value(place: &str, value: &mut toml::Value, env: &Env) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(text) => *text = expand_env(place, text, env)?,
        toml::Value::Array(items) => {
            for item in items {
                expand_env_in_value(place, item, env)?;
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table {
                expand_env_in_value(&format!("{place}.{key}"), item, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Replaces `${NAME}` with the variable's value (`${NAME:-default}` when unset); `$$` is a
/// literal `$`. An unset variable without a default is an error. Only the braced form is a
/// reference (README, "Configuration"): a bare `$` stays text, so a password like `pa$word` is
/// never looked up.
pub fn expand_env(place: &str, text: &str, env: &Env) -> Result<String, ConfigError> {
    // shellexpand also reads `$NAME`: double every `$` that does not open `${` or `$$`.
    let mut braced_only = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        braced_only.push(c);
        if c == '$' {
            match chars.next_if(|next| *next == '$') {
                Some(_) => braced_only.push('$'),
                None if chars.peek() != Some(&'{') => braced_only.push('$'),
                None => {}
            }
        }
    }
    check_references(place, text)?;
    shellexpand::env_with_context(&braced_only, |name| env(name).map(Some).ok_or(()))
        .map(|expanded| expanded.into_owned())
        .map_err(|err| match err.var_name.as_str() {
            "" => ConfigError::at(place, "empty `${}`"),
            name => ConfigError::at(place, format!("environment variable {name} is not set")),
        })
}

/// Refuses what shellexpand would take silently: an unterminated `${`, and a reference that is
/// not `${NAME}` or `${NAME:-default}` with a plain default (shellexpand copies a default
/// as it stands, so a `$`, `{` or `}` in it would end up in the value unexpanded).
fn check_references(place: &str, text: &str) -> Result<(), ConfigError> {
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            rest = after;
            continue;
        }
        let Some(inner) = rest.strip_prefix('{') else {
            continue;
        };
        let Some(end) = inner.find('}') else {
            return Err(ConfigError::at(
                place,
                "unterminated `${` (write `$$` for a literal `$`)",
            ));
        };
        let reference = &inner[..end];
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        let plain_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name.is_empty() && !plain_name {
            return Err(ConfigError::at(
                place,
                "`${…}` must name an environment variable (letters, digits, `_`), optionally \
                 with `:-default`; write `$$` for a literal `$`",
            ));
        }
        if default.is_some_and(|default| default.contains(['$', '{', '}'])) {
            return Err(ConfigError::at(
                place,
                "the default in `${NAME:-default}` may not contain `$`, `{` or `}`",
            ));
        }
        rest = &inner[end + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PASS" => Some("s3cret".to_string()),
            "NS" => Some("team-a".to_string()),
            _ => None,
        }
    }

    #[test]
    fn host_lists_become_the_nodes_field() {
        let (_, spec) = parse_short_form(
            "c=redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001,h3:7002/?wait_replicas=1",
        )
        .unwrap();
        assert_eq!(spec.provider, "redis+cluster");
        let url = spec.url.as_ref().unwrap();
        assert_eq!((url.host_str(), url.port()), (Some("10.0.0.1"), Some(7000)));
        assert_eq!(url.password(), Some("pw"));
        let fields = spec.provider_fields();
        let nodes = fields.iter().find(|field| field.name == "nodes").unwrap();
        assert_eq!(nodes.list().unwrap(), ["10.0.0.2:7001", "h3:7002"]);
        assert!(fields.iter().any(|field| field.name == "wait_replicas"));
        assert_eq!(split_host_list("redis://h:1/0"), None);
        assert_eq!(
            split_host_list("redis+cluster://a:1,b:2").unwrap(),
            ("redis+cluster://a:1".to_string(), "b:2".to_string())
        );
    }

    #[test]
    fn lists_from_arrays_or_text() {
        let field = |value: toml::Value| ProviderField {
            name: "nodes".into(),
            value,
        };
        let array = toml::Value::Array(vec!["a:1".into(), "b:2".into()]);
        assert_eq!(field(array).list().unwrap(), ["a:1", "b:2"]);
        assert_eq!(field("a:1, b:2".into()).list().unwrap(), ["a:1", "b:2"]);
        assert!(field("a:1,,b:2".into()).list().is_err());
        assert!(field(toml::Value::Array(vec![1.into()])).list().is_err());
        assert!(field(5.into()).list().is_err());
    }

    #[test]
    fn cursor_secret_from_file() {
        let env = |name: &str| (name == "CURSORS").then(|| "a shared replica secret".to_string());
        let config = KvConfig::from_toml("[cursors]\nsecret = \"${CURSORS}\"\n", &env).unwrap();
        assert!(config.cursor_secret.is_some());
        assert!(!format!("{config:?}").contains("replica"));
        for bad in [
            "[cursors]\nsecret = \"short\"\n",
            "[cursors]\n",
            "[cursors]\nsecret = 5\n",
            "[cursors]\nsecret = \"0123456789abcdef\"\nextra = 1\n",
            "[cursors]\nsecret = \"${UNSET}\"\n",
        ] {
            assert!(KvConfig::from_toml(bad, &env).is_err(), "{bad}");
        }
    }

    /// A timeout longer than the request records live could let a retry apply twice.
    #[test]
    fn operation_timeout_is_bounded_by_the_request_records() {
        let at_max = format!(
            "[limits]\noperation_timeout_ms = {}\n",
            MAX_OPERATION_TIMEOUT.as_millis()
        );
        assert!(KvConfig::from_toml(&at_max, &env).is_ok());
        let over = format!(
            "[limits]\noperation_timeout_ms = {}\n",
            MAX_OPERATION_TIMEOUT.as_millis() + 1
        );
        let err = KvConfig::from_toml(&over, &env).unwrap_err().to_string();
        assert!(err.contains("limits.operation_timeout_ms"), "{err}");
    }

    #[test]
    fn parses_file_form() {
        let config = KvConfig::from_toml(
            r#"
            [limits]
            max_batch_entries = 500
            operation_timeout_ms = 2000

            [stores.cache]
            provider = "memory"
            namespace = "${NS}-cache"
            access = "read-only"

            [stores.users]
            url = "redis://127.0.0.1:6379/0"
            password = "${PASS}"
            "#,
            &env,
        )
        .unwrap();
        assert_eq!(config.limits.max_batch_entries, 500);
        assert_eq!(config.limits.operation_timeout, Duration::from_secs(2));
        let cache = &config.stores["cache"];
        assert_eq!(cache.provider, "memory");
        assert_eq!(cache.namespace, "team-a-cache");
        assert_eq!(cache.access, Access::ReadOnly);
        let users = &config.stores["users"];
        assert_eq!(users.provider, "redis");
        assert_eq!(users.namespace, "users");
        assert_eq!(users.options["password"].as_str(), Some("s3cret"));
        let shown = format!("{users:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn seeds_from_the_command_line_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("logo.bin"), [0u8, 255, 1]).unwrap();
        let text = "[stores.cache]\nurl = \"memory:\"\n[stores.cache.seed]\n\
                    greeting = \"hello ${WHO}\"\nlogo = { file = \"logo.bin\" }\n";
        let mut config = KvConfig::from_toml_in(
            text,
            &|name| (name == "WHO").then(|| "world".to_string()),
            Some(dir.path()),
        )
        .unwrap();
        assert!(!config.stores["cache"].options.contains_key("seed"));
        let file = dir.path().join("logo.bin");
        config.add_seed("n=41").unwrap();
        config.add_seed("cache::mail=@@home").unwrap();
        config
            .add_seed(&format!("cache::copy=@{}", file.display()))
            .unwrap();
        let seeds: Vec<(&str, &str, &[u8])> = config
            .seeds
            .iter()
            .map(|seed| {
                (
                    seed.store.as_str(),
                    seed.key.as_str(),
                    seed.value.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            seeds,
            vec![
                ("cache", "greeting", b"hello world".as_slice()),
                ("cache", "logo", &[0, 255, 1]),
                ("", "n", b"41"),
                ("cache", "mail", b"@home"),
                ("cache", "copy", &[0, 255, 1]),
            ]
        );
        assert!(!format!("{:?}", config.seeds).contains("hello"));
        for bad in ["novalue", "k=@/does/not/exist"] {
            assert!(config.add_seed(bad).is_err(), "{bad}");
        }
        let bad = "[stores.c]\nurl = \"memory:\"\n[stores.c.seed]\nk = 1\n";
        assert!(KvConfig::from_toml(bad, &|_| None).is_err());
    }

    #[test]
    fn toml_errors_never_echo_the_line() {
        let text = "[stores.cache]\nurl = \"redis://h\"\npassword = \"hunter2\n";
        let err = KvConfig::from_toml(text, &|_| None)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn the_empty_store_name_is_accepted() {
        let (name, spec) = parse_short_form("=memory:").unwrap();
        assert_eq!((name.as_str(), spec.namespace.as_str()), ("", "default"));
        let config = KvConfig::from_toml("[stores.\"\"]\nurl = \"memory:\"\n", &|_| None).unwrap();
        assert_eq!(config.stores[""].namespace, "default");
        assert!(parse_short_form(&format!("{}=memory:", "x".repeat(257))).is_err());
    }

    #[test]
    fn reports_problems_in_one_line() {
        let cases = [
            (
                "[stores.a]\nnamespace = \"x\"",
                "stores.a: missing field `provider`",
            ),
            (
                "[stores.a]\nprovider = \"memory\"\naccess = \"rw\"",
                "stores.a.access: unknown access mode",
            ),
            (
                "[stores.a]\nprovider = \"memory\"\nx = \"${NOPE}\"",
                "stores.a.x: environment variable NOPE is not set",
            ),
            (
                "[stores.a]\nurl = \"not a url\"",
                "stores.a.url: malformed URL",
            ),
            (
                "[limits]\nmax_batch = 3",
                "limits.max_batch: unknown field `max_batch`",
            ),
            ("[stor]\n", "stor: unknown field `stor`"),
            ("[stores.a\n", "invalid TOML"),
        ];
        for (text, expected) in cases {
            let err = KvConfig::from_toml(text, &env).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{text:?} gave {err:?}");
            assert!(!err.contains('\n'), "{err:?}");
        }
    }

    #[test]
    fn parses_short_form() {
        let (name, spec) = parse_short_form(
            "users=redis://:pw@127.0.0.1:6379/2?namespace=u&access=read-only&tls=1",
        )
        .unwrap();
        assert_eq!(name, "users");
        assert_eq!(spec.provider, "redis");
        assert_eq!(spec.namespace, "u");
        assert_eq!(spec.access, Access::ReadOnly);
        assert_eq!(spec.url.as_ref().unwrap().query(), Some("tls=1"));
        assert!(!format!("{spec:?}").contains("pw@"));
        let (_, memory) = parse_short_form("default=memory:").unwrap();
        assert_eq!(memory.provider, "memory");
        assert_eq!(memory.namespace, "default");
        for bad in ["nourl", "a=::", "a=memory:?access=all"] {
            assert!(parse_short_form(bad).is_err(), "{bad}");
        }
        let err = parse_short_form("a=redis://:hunter2@h:1/?access=all").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn expands_env() {
        assert_eq!(
            expand_env("p", "a${NS}b$$c$d", &env).unwrap(),
            "ateam-ab$c$d"
        );
        assert!(expand_env("p", "${NS", &env).is_err());
        assert_eq!(expand_env("p", "$${NS", &env).unwrap(), "${NS");
        assert_eq!(expand_env("p", "${UNSET:-x}$", &env).unwrap(), "x$");
        let unset = expand_env("p", "a${UNSET}", &env).unwrap_err().to_string();
        assert_eq!(unset, "p: environment variable UNSET is not set");
        assert_eq!(
            expand_env("p", "${}", &env).unwrap_err().to_string(),
            "p: empty `${}`"
        );
        // A default is copied as it stands: one that would need expanding is refused, never
        // written into the value half-expanded.
        assert_eq!(expand_env("p", "${UNSET:-pa ss}", &env).unwrap(), "pa ss");
        assert_eq!(expand_env("p", "${NS:-x}", &env).unwrap(), "team-a");
        for refused in [
            "${UNSET:-pa$word}",
            "${UNSET:-x$$y}",
            "${UNSET:-${NS}}",
            "${NS:-${NS}}",
            "${UNSET:-x ${NS}",
            "${A-B}",
            "${1X}",
        ] {
            assert!(
                expand_env("p", refused, &env).is_err(),
                "{refused} was accepted"
            );
        }
    }

    /// Every table refuses a key it does not know, and the error names it and where it is.
    #[test]
    fn unknown_keys_are_refused_in_every_table() {
        let cases = [
            ("colour = 1\n", "colour: unknown field `colour`", 1),
            (
                "[limits]\nmax_batchentries = 1\n",
                "limits.max_batchentries: unknown field",
                2,
            ),
            (
                "[cursors]\nsecret = \"0123456789abcdef\"\nextra = 1\n",
                "cursors.extra: unknown field `extra`",
                3,
            ),
            (
                "[stores.c]\nurl = \"memory:\"\nseed = { k = { file = \"f\", mode = 1 } }\n",
                "stores.c.seed.k.mode: unknown field `mode`",
                3,
            ),
        ];
        for (text, expected, line) in cases {
            let err = KvConfig::from_toml(text, &env).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{text:?} gave {err:?}");
            assert!(
                err.contains(&format!("(line {line}, ")),
                "{text:?} gave {err:?}"
            );
        }
    }

    /// A store's own keys are the provider's: its factory refuses those it does not know.
    #[tokio::test]
    async fn unknown_store_keys_are_refused_by_the_provider() {
        let config =
            KvConfig::from_toml("[stores.c]\nurl = \"memory:\"\ncolour = 1\n", &env).unwrap();
        let err = crate::ProviderRegistry::new()
            .build(&config)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    /// A misplaced string is named by its type, never quoted: it may be a secret.
    #[test]
    fn misplaced_strings_are_not_echoed() {
        for text in [
            "cursors = \"hunter2-hunter2-hunter2\"\n",
            "[stores]\nc = \"redis://:hunter2@h\"\n",
            "[limits]\nmax_batch_bytes = \"hunter2\"\n",
        ] {
            let err = KvConfig::from_toml(text, &env).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("invalid type: a string, expected"), "{err}");
        }
        // A secret of the wrong type is not quoted either (serde quotes numbers and booleans).
        for secret in ["1234567890123456789", "12345678.9012345", "true"] {
            let text = format!("[cursors]\nsecret = {secret}\n");
            let err = KvConfig::from_toml(&text, &env).unwrap_err().to_string();
            assert!(!err.contains(secret), "{err}");
            assert!(err.contains("cursors.secret: must be a string"), "{err}");
        }
    }
}
