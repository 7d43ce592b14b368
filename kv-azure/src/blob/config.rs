//! Configuration: `azblob://ACCOUNT/CONTAINER[/PREFIX]?key=..&endpoint=..&create_container=true`,
//! or a `[stores.NAME]` table with `account`, `container`, `prefix` and the same fields.

use kv_core::config::{ProviderField, redact_url};
use kv_core::{ConfigError, ConnectionKey, Secret, StoreSpec};

use crate::identity::{Auth, AzureIdentity, check_scheme};

/// The environment variable read for the account key when the config has none (the name the
/// Azure CLI uses).
pub const KEY_ENV: &str = "AZURE_STORAGE_KEY";

/// Where the blobs go and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzblobConfig {
    /// Storage account name (part of every signature).
    pub account: String,
    /// Container name: 3–63 lowercase letters, digits and single hyphens.
    pub container: String,
    /// Blob name prefix for every store of this container ("" or ending in `/`).
    pub prefix: String,
    /// The account's blob endpoint without a trailing `/`: `https://ACCOUNT.blob.core.windows.net`
    /// by default; Azurite's is `http://127.0.0.1:10000/ACCOUNT` (path-style).
    pub endpoint: String,
    /// The account key (`key =` or `$AZURE_STORAGE_KEY`), signed into short-lived account
    /// SAS tokens, or an Entra ID identity.
    pub identity: AzureIdentity,
    /// A SAS token to use as given instead of a key (`sas_token`, without the leading `?`).
    pub sas_token: Option<Secret>,
    /// Create the container if it is missing.
    pub create_container: bool,
}

impl AzblobConfig {
    /// Parses a store spec: URL first, then file fields (unknown fields are errors); the key
    /// falls back to `$AZURE_STORAGE_KEY`.
    pub fn from_spec(spec: &StoreSpec) -> Result<AzblobConfig, ConfigError> {
        Self::from_spec_with_env(spec, &|name| std::env::var(name).ok())
    }

    /// [`AzblobConfig::from_spec`] with an explicit environment (for tests).
    pub fn from_spec_with_env(
        spec: &StoreSpec,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AzblobConfig, ConfigError> {
        let mut config = AzblobConfig {
            account: String::new(),
            container: String::new(),
            prefix: String::new(),
            endpoint: String::new(),
            identity: AzureIdentity::default(),
            sas_token: None,
            create_container: false,
        };
        if let Some(url) = &spec.url {
            let shown = redact_url(url);
            if url.scheme() != "azblob" {
                return Err(ConfigError(format!("{shown}: expected an azblob:// URL")));
            }
            config.account = url.host_str().unwrap_or_default().to_string();
            let path = url.path().trim_start_matches('/');
            let (container, prefix) = path.split_once('/').unwrap_or((path, ""));
            config.container = container.to_string();
            config.prefix = prefix.to_string();
        }
        for field in spec.provider_fields() {
            config.apply(&field)?;
        }
        if config.account.is_empty() || config.container.is_empty() {
            return Err(ConfigError(
                "the azblob provider needs an account and a container: \
                 azblob://ACCOUNT/CONTAINER/PREFIX"
                    .into(),
            ));
        }
        check_account_name(&config.account)?;
        check_container_name(&config.container)?;
        if !config.prefix.is_empty() && !config.prefix.ends_with('/') {
            config.prefix.push('/');
        }
        check_prefix(&config.prefix)?;
        if config.endpoint.is_empty() {
            config.endpoint = format!("https://{}.blob.core.windows.net", config.account);
        }
        config.endpoint = config.endpoint.trim_end_matches('/').to_string();
        check_scheme("azblob", &config.endpoint)?;
        check_endpoint(&config.endpoint)?;
        if config.sas_token.is_none() {
            config.identity.key_from_env(KEY_ENV, env);
        }
        config
            .identity
            .validate("azblob", KEY_ENV, config.sas_token.is_none())?;
        if config.sas_token.is_some()
            && (config.identity.key.is_some() || config.identity.auth == Auth::Entra)
        {
            return Err(ConfigError(
                "azblob: sas_token excludes `key` and auth = \"entra\"".into(),
            ));
        }
        Ok(config)
    }

    fn apply(&mut self, field: &ProviderField) -> Result<(), ConfigError> {
        if self.identity.apply("azblob", field)? {
            return Ok(());
        }
        match field.name.as_str() {
            "account" => self.account = field.text()?,
            "container" => self.container = field.text()?,
            "prefix" => self.prefix = field.text()?,
            "endpoint" => self.endpoint = field.text()?,
            "sas_token" => {
                let token = field.text()?;
                let token = token.trim_start_matches('?');
                self.sas_token =
                    Some(Secret::new(token.to_string())).filter(|t| !t.expose().is_empty());
            }
            "create_container" => self.create_container = field.flag()?,
            _ => return Err(field.unknown("azblob")),
        }
        Ok(())
    }

    /// Identity of the client: every setting that changes it, secrets as fingerprints.
    /// Stores with equal keys share one client.
    pub fn connection_key(&self) -> String {
        self.identity
            .identify(
                ConnectionKey::new("azblob")
                    .field("account", &self.account)
                    .field("container", &self.container)
                    .field("prefix", &self.prefix)
                    .field("endpoint", &self.endpoint),
            )
            .secret("sas_token", self.sas_token.as_ref())
            .field("create_container", self.create_container)
            .finish()
    }
}

/// Azure's account naming rule (3–24 lowercase letters and digits): the name is signed into
/// every SAS, and a default endpoint is made of it.
fn check_account_name(name: &str) -> Result<(), ConfigError> {
    let valid = (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "azblob: account {name:?} is not a valid name (3-24 lowercase letters and digits)"
        )))
    }
}

/// The longest blob name prefix: with the longest namespace (256 bytes, 342 characters of
/// base64url) and a hashed key name (65), a blob name stays within 1,024 characters.
pub const MAX_PREFIX_CHARS: usize = 512;

/// A prefix is a path of plain segments: no leading `/`, no empty segment, none that is or
/// ends in `.` (Azure front ends drop such dots), at most [`MAX_PREFIX_CHARS`].
fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    let segments_ok = prefix.is_empty()
        || prefix.trim_end_matches('/').split('/').all(|segment| {
            !segment.is_empty() && !segment.ends_with('.') && !segment.contains('\\')
        });
    if segments_ok
        && prefix.chars().count() <= MAX_PREFIX_CHARS
        && !prefix.chars().any(char::is_control)
    {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "azblob: prefix {prefix:?} must be at most {MAX_PREFIX_CHARS} characters of \
             `/`-separated segments, none empty, none ending in `.`, no `\\`"
        )))
    }
}

/// The endpoint is a base URL only: a query (a portal "SAS URL" carries its signature there),
/// user info or a fragment would be sent, logged or bypass the `sas_token`/`key` rules.
fn check_endpoint(endpoint: &str) -> Result<(), ConfigError> {
    let url =
        url::Url::parse(endpoint).map_err(|err| ConfigError(format!("azblob endpoint: {err}")))?;
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(ConfigError(
            "azblob endpoint: give the account's base URL only (a SAS goes in `sas_token`, \
             not in the endpoint)"
                .into(),
        ));
    }
    Ok(())
}

/// Azure's container naming rule, checked before any request: 3–63 characters, lowercase
/// letters, digits and hyphens, starting and ending with a letter or digit, no `--`.
fn check_container_name(name: &str) -> Result<(), ConfigError> {
    let valid = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "azblob: container {name:?} is not a valid name (3-63 lowercase letters, digits \
             and single hyphens, starting and ending with a letter or digit)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> StoreSpec {
        kv_core::config::parse_short_form(&format!("s={url}"))
            .unwrap()
            .1
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn parses_short_form_and_endpoint() {
        let config = AzblobConfig::from_spec_with_env(
            &spec("azblob://acct/kvs/app?key=a2V5&create_container=true"),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            (config.account.as_str(), config.container.as_str()),
            ("acct", "kvs")
        );
        assert_eq!(config.prefix, "app/");
        assert_eq!(config.endpoint, "https://acct.blob.core.windows.net");
        assert!(config.create_container);
        let local = AzblobConfig::from_spec_with_env(
            &spec("azblob://devstoreaccount1/kvs?endpoint=http://127.0.0.1:10000/devstoreaccount1/&key=a2V5"),
            &no_env,
        )
        .unwrap();
        assert_eq!(local.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(local.prefix, "");
    }

    #[test]
    fn key_from_environment_sas_and_entra() {
        let env = |name: &str| (name == KEY_ENV).then(|| "ZW52".to_string());
        let config = AzblobConfig::from_spec_with_env(&spec("azblob://acct/kvs"), &env).unwrap();
        assert_eq!(
            config.identity.key.as_ref().map(Secret::expose),
            Some("ZW52")
        );
        let sas = AzblobConfig::from_spec_with_env(
            &spec("azblob://acct/kvs?sas_token=%3Fsv%3D2020-12-06%26sig%3Dhunter2"),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            sas.sas_token.as_ref().map(Secret::expose),
            Some("sv=2020-12-06&sig=hunter2")
        );
        assert!(!format!("{sas:?}").contains("hunter2"));
        assert!(!sas.connection_key().contains("hunter2"));
        let entra =
            AzblobConfig::from_spec_with_env(&spec("azblob://acct/kvs?auth=entra"), &env).unwrap();
        assert_eq!(entra.identity.auth, Auth::Entra);
        assert!(entra.identity.key.is_none());
    }

    #[test]
    fn refuses_what_cannot_work() {
        for bad in [
            "azblob://acct/kvs",
            "azblob://acct/kvs?key=k&colour=red",
            "azblob://ab/kvs?key=k",
            "azblob://MyAcct/kvs?key=k",
            "azblob://acct/kvs/.hidden./x?key=k",
            "azblob://acct/kvs/a//b?key=k",
            "azblob://acct/kvs?key=k&endpoint=https://acct.blob.core.windows.net/%3Fsig%3Dx",
            "azblob://acct/kvs?key=k&endpoint=https://u:p@acct.blob.core.windows.net",
            "azblob://acct?key=k",
            "azblob:///kvs?key=k",
            "azblob://acct/KVS?key=k",
            "azblob://acct/k?key=k",
            "azblob://acct/k--v?key=k",
            "azblob://acct/kvs?key=k&endpoint=http://example.com/a",
            "azblob://acct/kvs?key=k&sas_token=sv%3D1",
            "azblob://acct/kvs?auth=entra&sas_token=sv%3D1",
            "azblob://acct/kvs?key=k&create_container=yes",
            "s3://a/kvs?key=k",
        ] {
            assert!(
                AzblobConfig::from_spec_with_env(&spec(bad), &no_env).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_key_is_redacted() {
        let config =
            AzblobConfig::from_spec_with_env(&spec("azblob://acct/kvs?key=hunter2"), &no_env)
                .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!config.connection_key().contains("hunter2"));
    }
}
