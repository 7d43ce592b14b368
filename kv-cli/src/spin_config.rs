//! Spin's runtime configuration (`spin up --runtime-config-file FILE`): its
//! `[key_value_store.NAME]` tables mapped onto wasi-kv stores, so a Spin application's stores
//! open here unchanged.
//!
//! | Spin `type` | wasi-kv provider | fields |
//! |---|---|---|
//! | `spin` | `sqlite` | `path` (default `.spin/sqlite_key_value.db`), relative to the file's folder |
//! | `redis` | `redis` | `url` |
//! | `azure_cosmos` | `cosmos` | `account`, `database`, `container`, `key` (without a key: Entra ID) |
//! | `aws_dynamo` | `dynamodb` | `table`, `region`, `access_key` + `secret_key`; `consistent_read` is accepted (reads are always consistent here) |
//!
//! Each store's namespace is its name. Other tables of the file (`[llm_compute]`,
//! `[variables_provider]`, …) are not about key-value stores and are ignored.

use std::path::Path;

use kv_core::{ConfigError, KvConfig};

/// Spin's default SQLite file, relative to the runtime config's folder.
const SPIN_DEFAULT_PATH: &str = ".spin/sqlite_key_value.db";

/// Adds every `[key_value_store.NAME]` of a Spin runtime config file to `config`.
pub fn add_spin_runtime_config(config: &mut KvConfig, path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::at(path.display(), err))?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    add_from_text(config, &text, base).map_err(|err| ConfigError::at(path.display(), err))
}

/// [`add_spin_runtime_config`] on the file's text, with relative paths under `base`.
pub fn add_from_text(config: &mut KvConfig, text: &str, base: &Path) -> Result<(), ConfigError> {
    let root: toml::Table = text.parse().map_err(|err: toml::de::Error| {
        let at = err
            .span()
            .map(|span| format!(" at byte {}", span.start))
            .unwrap_or_default();
        ConfigError(format!("invalid TOML{at}"))
    })?;
    let Some(stores) = root.get("key_value_store") else {
        return Ok(());
    };
    let toml::Value::Table(stores) = stores else {
        return Err(ConfigError(
            "`key_value_store` must be a table of stores".into(),
        ));
    };
    let mut file = String::new();
    for (name, table) in stores {
        let place = format!("key_value_store.{name}");
        let toml::Value::Table(table) = table else {
            return Err(ConfigError::at(&place, "must be a table"));
        };
        file.push_str(&translate(&place, name, table, base)?);
    }
    let translated = KvConfig::from_toml(&file, &|_| None)?;
    config.stores.extend(translated.stores);
    Ok(())
}

/// One Spin store as a wasi-kv `[stores.NAME]` table.
fn translate(
    place: &str,
    name: &str,
    table: &toml::Table,
    base: &Path,
) -> Result<String, ConfigError> {
    let text = |field: &str| -> Result<Option<String>, ConfigError> {
        match table.get(field) {
            None => Ok(None),
            Some(toml::Value::String(value)) => Ok(Some(value.clone())),
            Some(_) => Err(ConfigError::at(
                format!("{place}.{field}"),
                "must be a string",
            )),
        }
    };
    let required = |field: &str| {
        text(field)?.ok_or_else(|| ConfigError::at(place, format!("missing field `{field}`")))
    };
    let quoted = |value: &str| toml::Value::String(value.to_string()).to_string();
    let kind = required("type")?;
    let allowed: &[&str] = match kind.as_str() {
        "spin" => &["type", "path"],
        "redis" => &["type", "url"],
        "azure_cosmos" => &["type", "account", "database", "container", "key"],
        "aws_dynamo" => &[
            "type",
            "table",
            "region",
            "access_key",
            "secret_key",
            "token",
            "consistent_read",
        ],
        other => {
            return Err(ConfigError::at(
                place,
                format!(
                    "unknown key-value store type {other:?} (spin, redis, azure_cosmos and \
                     aws_dynamo are supported)"
                ),
            ));
        }
    };
    if let Some(field) = table
        .keys()
        .find(|field| !allowed.contains(&field.as_str()))
    {
        return Err(ConfigError::at(place, format!("unknown field `{field}`")));
    }
    let header = format!("[stores.{}]\nnamespace = {}\n", quoted(name), quoted(name));
    let body = match kind.as_str() {
        "spin" => {
            let path = text("path")?.unwrap_or_else(|| SPIN_DEFAULT_PATH.to_string());
            let full = base.join(path);
            if let Some(folder) = full.parent() {
                std::fs::create_dir_all(folder).map_err(|err| {
                    ConfigError::at(place, format!("{}: {err}", folder.display()))
                })?;
            }
            format!("url = {}\n", quoted(&format!("sqlite:{}", full.display())))
        }
        "redis" => format!("url = {}\n", quoted(&required("url")?)),
        "azure_cosmos" => {
            let account = required("account")?;
            let mut body = format!(
                "provider = \"cosmos\"\nendpoint = {}\ndatabase = {}\ncontainer = {}\n",
                quoted(&format!("https://{account}.documents.azure.com:443/")),
                quoted(&required("database")?),
                quoted(&required("container")?),
            );
            match text("key")? {
                Some(key) => body.push_str(&format!("key = {}\n", quoted(&key))),
                // Spin uses the ambient Azure identity without a key.
                None => body.push_str("auth = \"entra\"\n"),
            }
            body
        }
        "aws_dynamo" => {
            if text("token")?.is_some() {
                return Err(ConfigError::at(
                    place,
                    "session tokens are not supported; use access_key and secret_key, or none \
                     (the standard credential chain)",
                ));
            }
            if let Some(value) = table.get("consistent_read")
                && value.as_bool().is_none()
            {
                return Err(ConfigError::at(
                    place,
                    "`consistent_read` must be true or false",
                ));
            }
            let mut body = format!(
                "provider = \"dynamodb\"\ntable = {}\n",
                quoted(&required("table")?)
            );
            if let Some(region) = text("region")? {
                body.push_str(&format!("region = {}\n", quoted(&region)));
            }
            match (text("access_key")?, text("secret_key")?) {
                (Some(id), Some(secret)) => body.push_str(&format!(
                    "access_key_id = {}\nsecret_access_key = {}\n",
                    quoted(&id),
                    quoted(&secret)
                )),
                (None, None) => {}
                _ => {
                    return Err(ConfigError::at(
                        place,
                        "set both access_key and secret_key, or neither",
                    ));
                }
            }
            body
        }
        _ => unreachable!("the type was checked above"),
    };
    Ok(format!("{header}{body}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime config written the way Spin's documentation shows it.
    const SPIN_DOCS_EXAMPLE: &str = r#"
[key_value_store.default]
type = "spin"
path = ".spin/sqlite_key_value.db"

[key_value_store.user_data]
type = "redis"
url = "redis://localhost"

[key_value_store.other_data]
type = "azure_cosmos"
key = "my-key"
account = "my-cosmos-account"
database = "my-cosmos-database"
container = "my-cosmos-container"

[key_value_store.dynamo_data]
type = "aws_dynamo"
region = "us-east-1"
table = "my-table"
consistent_read = true

[llm_compute]
type = "remote_http"
"#;

    #[test]
    fn spin_documentation_example_maps_onto_providers() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = KvConfig::default();
        add_from_text(&mut config, SPIN_DOCS_EXAMPLE, dir.path()).unwrap();
        let store = |name: &str| &config.stores[name];
        assert_eq!(store("default").provider, "sqlite");
        let url = store("default").url.as_ref().unwrap().to_string();
        assert!(url.ends_with(".spin/sqlite_key_value.db"), "{url}");
        assert!(dir.path().join(".spin").is_dir());
        assert_eq!(store("user_data").provider, "redis");
        assert_eq!(store("other_data").provider, "cosmos");
        assert_eq!(store("dynamo_data").provider, "dynamodb");
        assert_eq!(store("user_data").namespace, "user_data");
        assert!(!format!("{:?}", store("other_data")).contains("my-key"));
    }

    #[test]
    fn mistakes_are_one_clear_line() {
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [
            (
                "[key_value_store.x]\ntype = \"etcd\"\n",
                "unknown key-value store type",
            ),
            (
                "[key_value_store.x]\ntype = \"redis\"\n",
                "missing field `url`",
            ),
            (
                "[key_value_store.x]\ntype = \"redis\"\nurl = \"redis://h\"\ncolour = 1\n",
                "unknown field",
            ),
            (
                "[key_value_store.x]\ntype = \"aws_dynamo\"\ntable = \"t\"\ntoken = \"t\"\n",
                "session tokens",
            ),
            ("[key_value_store.x\n", "invalid TOML"),
        ] {
            let err = add_from_text(&mut KvConfig::default(), text, dir.path()).unwrap_err();
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
    }
}
