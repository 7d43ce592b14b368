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
//! Provider-specific fields stay in [`StoreSpec::options`]; the provider's factory validates
//! them and rejects unknown ones, so a typo is an error, not a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use url::Url;

use crate::limits::{Limits, MAX_LIST_PAGE, MAX_OPERATION_TIMEOUT, REQUEST_RECORD_TTL};
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
    /// `[outbound] allowed_hosts`: where a component's outbound HTTP may go
    /// (`SCHEME://HOST[:PORT]` patterns, checked by the server that uses them).
    pub allowed_outbound_hosts: Vec<String>,
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
fn read_seed_file(
    place: &str,
    base: Option<&std::path::Path>,
    path: &str,
) -> Result<Vec<u8>, ConfigError> {
    let path = std::path::Path::new(path);
    let full = match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    };
    std::fs::read(&full)
        .map_err(|err| ConfigError::at(place, format!("cannot read {}: {err}", full.display())))
}

impl KvConfig {
    /// Parses a TOML configuration file's text. `env` looks up `${NAME}` references; seed
    /// files are relative to the current directory.
    pub fn from_toml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<KvConfig, ConfigError> {
        Self::from_toml_in(text, env, None)
    }

    /// [`KvConfig::from_toml`], with seed files relative to `base`.
    pub fn from_toml_in(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        base: Option<&std::path::Path>,
    ) -> Result<KvConfig, ConfigError> {
        let mut root: toml::Table = text
            .parse()
            .map_err(|err: toml::de::Error| toml_error(text, &err))?;
        let mut config = KvConfig::default();
        if let Some(limits) = root.remove("limits") {
            config.limits = parse_limits(limits)?;
        }
        if let Some(cursors) = root.remove("cursors") {
            config.cursor_secret = Some(parse_cursors(cursors, env)?);
        }
        if let Some(outbound) = root.remove("outbound") {
            config.allowed_outbound_hosts = parse_outbound(outbound)?;
        }
        if let Some(stores) = root.remove("stores") {
            let toml::Value::Table(stores) = stores else {
                return Err(ConfigError::at("stores", "must be a table of stores"));
            };
            for (name, table) in stores {
                let place = format!("stores.{name}");
                let toml::Value::Table(table) = table else {
                    return Err(ConfigError::at(place, "must be a table"));
                };
                let mut table = table;
                if let Some(seed) = table.remove("seed") {
                    let seeds = parse_seed_table(&format!("{place}.seed"), &name, seed, env, base)?;
                    config.seeds.extend(seeds);
                }
                let spec = parse_store_table(&place, &name, table, env)?;
                config.stores.insert(name, spec);
            }
        }
        if let Some(unknown) = root.keys().next() {
            return Err(ConfigError::at(
                unknown,
                "unknown top-level key (expected `stores`, `limits`, `cursors` or `outbound`)",
            ));
        }
        Ok(config)
    }

    /// Reads and parses a configuration file, expanding `${NAME}` from the process environment.
    pub fn from_file(path: &std::path::Path) -> Result<KvConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|err| ConfigError::at(path.display(), err))?;
        Self::from_toml_in(&text, &|name| std::env::var(name).ok(), path.parent())
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
        let value = match value.strip_prefix('@') {
            Some(literal) if literal.starts_with('@') => literal.as_bytes().to_vec(),
            Some(path) => read_seed_file(&format!("--seed {target}"), None, path)?,
            None => value.as_bytes().to_vec(),
        };
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

/// `[cursors] secret = "${WASI_KV_CURSOR_SECRET}"`, at least 16 bytes.
fn parse_cursors(
    value: toml::Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CursorSecret, ConfigError> {
    let toml::Value::Table(mut table) = value else {
        return Err(ConfigError::at("cursors", "must be a table"));
    };
    let secret = match table.remove("secret") {
        Some(toml::Value::String(text)) => expand_env("cursors.secret", &text, env)?,
        Some(_) => return Err(ConfigError::at("cursors.secret", "must be a string")),
        None => return Err(ConfigError::at("cursors", "needs `secret`")),
    };
    if let Some(unknown) = table.keys().next() {
        return Err(ConfigError::at(
            format!("cursors.{unknown}"),
            "unknown key (expected `secret`)",
        ));
    }
    CursorSecret::new(secret).ok_or_else(|| {
        ConfigError::at(
            "cursors.secret",
            format!("must be at least {} bytes", CursorSecret::MIN_BYTES),
        )
    })
}

/// A TOML error as its line, column and message, never the offending line itself: the line
/// may hold a secret (an unterminated `password = "…`).
fn toml_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let at = err.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(" at line {line}, column {column}")
    });
    let message = err
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    ConfigError(format!("invalid TOML{}: {message}", at.unwrap_or_default()))
}

/// `[outbound] allowed_hosts = ["https://api.example.com", …]`.
fn parse_outbound(value: toml::Value) -> Result<Vec<String>, ConfigError> {
    let toml::Value::Table(mut table) = value else {
        return Err(ConfigError::at("outbound", "must be a table"));
    };
    let hosts = match table.remove("allowed_hosts") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                toml::Value::String(text) => Ok(text),
                _ => Err(ConfigError::at(
                    "outbound.allowed_hosts",
                    "must be an array of strings",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ConfigError::at(
                "outbound.allowed_hosts",
                "must be an array of strings",
            ));
        }
    };
    if let Some(unknown) = table.keys().next() {
        return Err(ConfigError::at(
            format!("outbound.{unknown}"),
            "unknown key (expected `allowed_hosts`)",
        ));
    }
    Ok(hosts)
}

fn parse_limits(value: toml::Value) -> Result<Limits, ConfigError> {
    let toml::Value::Table(table) = value else {
        return Err(ConfigError::at("limits", "must be a table"));
    };
    let mut limits = Limits::default();
    for (key, value) in table {
        let place = format!("limits.{key}");
        let number = value
            .as_integer()
            .filter(|n| *n > 0)
            .ok_or_else(|| ConfigError::at(&place, "must be a positive integer"))?;
        let number = number as u64;
        match key.as_str() {
            "max_value_bytes" => limits.max_value_bytes = number as usize,
            "max_batch_entries" => limits.max_batch_entries = number as usize,
            "max_batch_bytes" => limits.max_batch_bytes = number as usize,
            "max_held_bytes" => limits.max_held_bytes = number as usize,
            "list_page_size" => {
                if number as usize > MAX_LIST_PAGE {
                    return Err(ConfigError::at(
                        place,
                        format!("must be at most {MAX_LIST_PAGE}"),
                    ));
                }
                limits.list_page_size = number as usize;
            }
            "operation_timeout_ms" => {
                let timeout = Duration::from_millis(number);
                if timeout > MAX_OPERATION_TIMEOUT {
                    return Err(ConfigError::at(
                        place,
                        format!(
                            "must be at most {} ms: a retry must end before the record of \
                             an applied increment or swap expires ({} s), or it could apply \
                             it twice",
                            MAX_OPERATION_TIMEOUT.as_millis(),
                            REQUEST_RECORD_TTL.as_secs()
                        ),
                    ));
                }
                limits.operation_timeout = timeout;
            }
            "retry_max_attempts" => limits.retry.max_attempts = number.min(100) as u32,
            "retry_initial_backoff_ms" => {
                limits.retry.initial_backoff = Duration::from_millis(number)
            }
            "retry_max_backoff_ms" => limits.retry.max_backoff = Duration::from_millis(number),
            _ => return Err(ConfigError::at(place, "unknown limit")),
        }
    }
    Ok(limits)
}

/// `[stores.NAME.seed]`: `KEY = "text"` or `KEY = { file = "PATH" }`.
fn parse_seed_table(
    place: &str,
    store: &str,
    value: toml::Value,
    env: &dyn Fn(&str) -> Option<String>,
    base: Option<&std::path::Path>,
) -> Result<Vec<Seed>, ConfigError> {
    let toml::Value::Table(mut table) = value else {
        return Err(ConfigError::at(place, "must be a table of KEY = VALUE"));
    };
    expand_env_in_table(place, &mut table, env)?;
    let mut seeds = Vec::with_capacity(table.len());
    for (key, value) in table {
        let at = format!("{place}.{key}");
        let value = match value {
            toml::Value::String(text) => text.into_bytes(),
            toml::Value::Table(mut file) => match (file.remove("file"), file.is_empty()) {
                (Some(toml::Value::String(path)), true) => read_seed_file(&at, base, &path)?,
                _ => {
                    return Err(ConfigError::at(
                        &at,
                        "expected a string or { file = \"PATH\" }",
                    ));
                }
            },
            _ => {
                return Err(ConfigError::at(
                    &at,
                    "expected a string or { file = \"PATH\" }",
                ));
            }
        };
        seeds.push(Seed {
            store: store.to_string(),
            key,
            value,
        });
    }
    Ok(seeds)
}

fn parse_store_table(
    place: &str,
    name: &str,
    mut table: toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StoreSpec, ConfigError> {
    check_store_name(place, name)?;
    expand_env_in_table(place, &mut table, env)?;
    let mut take_string = |field: &str| -> Result<Option<String>, ConfigError> {
        match table.remove(field) {
            None => Ok(None),
            Some(toml::Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(ConfigError::at(
                format!("{place}.{field}"),
                "must be a string",
            )),
        }
    };
    let url = take_string("url")?
        .map(|text| parse_url(&format!("{place}.url"), &text))
        .transpose()?;
    let provider = match (take_string("provider")?, &url) {
        (Some(provider), _) => provider,
        (None, Some(url)) => url.scheme().to_string(),
        (None, None) => {
            return Err(ConfigError::at(place, "missing field `provider`"));
        }
    };
    let namespace = take_string("namespace")?.unwrap_or_else(|| default_namespace(name));
    let access = match take_string("access")? {
        None => Access::ReadWrite,
        Some(text) => Access::parse(&text).ok_or_else(|| {
            ConfigError::at(
                format!("{place}.access"),
                format!("unknown access mode {text:?} (expected read-write, read-only or none)"),
            )
        })?,
    };
    check_namespace(&format!("{place}.namespace"), &namespace)?;
    Ok(StoreSpec {
        provider,
        namespace,
        access,
        url,
        options: table,
    })
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

fn expand_env_in_table(
    place: &str,
    table: &mut toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (key, value) in table.iter_mut() {
        expand_env_in_value(&format!("{place}.{key}"), value, env)?;
    }
    Ok(())
}

fn expand_env_in_value(
    place: &str,
    value: &mut toml::Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(text) => *text = expand_env(place, text, env)?,
        toml::Value::Array(items) => {
            for item in items {
                expand_env_in_value(place, item, env)?;
            }
        }
        toml::Value::Table(table) => expand_env_in_table(place, table, env)?,
        _ => {}
    }
    Ok(())
}

/// Replaces `${NAME}` with the variable's value; `$$` is a literal `$`.
pub fn expand_env(
    place: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| {
                ConfigError::at(place, "unterminated `${` (write `$$` for a literal `$`)")
            })?;
            let name = &body[..end];
            if name.is_empty() {
                return Err(ConfigError::at(place, "empty `${}`"));
            }
            let value = env(name).ok_or_else(|| {
                ConfigError::at(place, format!("environment variable {name} is not set"))
            })?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
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
    fn outbound_allow_list_from_the_file() {
        let config = KvConfig::from_toml(
            "[outbound]\nallowed_hosts = [\"https://api.example.com\", \"http://127.0.0.1:*\"]\n",
            &env,
        )
        .unwrap();
        assert_eq!(
            config.allowed_outbound_hosts,
            ["https://api.example.com", "http://127.0.0.1:*"]
        );
        assert!(KvConfig::default().allowed_outbound_hosts.is_empty());
        for bad in [
            "[outbound]\nallowed_hosts = \"https://x\"\n",
            "[outbound]\nallowed_hosts = [1]\n",
            "[outbound]\nallow = []\n",
            "outbound = 1\n",
        ] {
            assert!(KvConfig::from_toml(bad, &env).is_err(), "{bad}");
        }
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
            ("[limits]\nmax_batch = 3", "limits.max_batch: unknown limit"),
            ("[stor]\n", "stor: unknown top-level key"),
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
    }
}
