//! Expectation profiles: what one provider on one backend flavour (an emulator, a real cloud)
//! supports and where it knowingly diverges, with the reason. Cases listed as divergences are
//! reported as ignored with that reason, never as passed; there are no `if emulator` branches
//! in the cases themselves.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A parsed profile.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Provider name (`memory`, `redis`, ...).
    pub provider: String,
    /// Backend flavour (`memory`, `redis-server`, `dynamodb-local`, `aws`, ...).
    pub flavour: String,
    /// Human-readable backend description, with its version where known.
    pub backend: String,
    /// Overrides the provider's declared maximum value size for the suite.
    #[serde(default)]
    pub max_value_bytes: Option<usize>,
    /// Case name -> why this backend cannot pass it.
    #[serde(default)]
    pub divergences: BTreeMap<String, String>,
}

impl Profile {
    /// Parses a profile from TOML.
    pub fn from_toml(text: &str) -> anyhow::Result<Profile> {
        Ok(toml::from_str(text)?)
    }

    /// The built-in profile of the in-memory provider.
    pub fn memory() -> Profile {
        Self::from_toml(include_str!("../profiles/memory.toml"))
            .expect("the bundled memory profile parses")
    }

    /// The built-in profile of the Redis provider on redis-server.
    pub fn redis() -> Profile {
        Self::from_toml(include_str!("../profiles/redis.toml"))
            .expect("the bundled redis profile parses")
    }

    /// The bundled profile for a provider and backend flavour, if there is one
    /// (`memory`, `redis`, `dynamodb-local`, `azurite`, …: every file in `profiles/`).
    pub fn bundled(flavour: &str) -> Option<Profile> {
        let text = match flavour {
            "memory" => include_str!("../profiles/memory.toml"),
            "redis" => include_str!("../profiles/redis.toml"),
            "redis-cluster" => include_str!("../profiles/redis-cluster.toml"),
            "dynamodb-local" => include_str!("../profiles/dynamodb-local.toml"),
            "dynamodb" => include_str!("../profiles/dynamodb.toml"),
            "fake-gcs" => include_str!("../profiles/fake-gcs.toml"),
            "gcs" => include_str!("../profiles/gcs.toml"),
            "cosmos-local" => include_str!("../profiles/cosmos-local.toml"),
            "cosmos" => include_str!("../profiles/cosmos.toml"),
            "localstack" => include_str!("../profiles/localstack.toml"),
            "moto" => include_str!("../profiles/moto.toml"),
            "s3" => include_str!("../profiles/s3.toml"),
            "azurite" => include_str!("../profiles/azurite.toml"),
            "azblob" => include_str!("../profiles/azblob.toml"),
            _ => return None,
        };
        Some(Self::from_toml(text).expect("bundled profiles parse"))
    }

    /// A profile with no divergences, for providers under development and tests.
    pub fn plain(provider: &str) -> Profile {
        Profile {
            provider: provider.to_string(),
            flavour: provider.to_string(),
            backend: provider.to_string(),
            max_value_bytes: None,
            divergences: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_profiles_parse() {
        let memory = Profile::memory();
        assert_eq!(memory.provider, "memory");
        assert!(memory.divergences.is_empty());
        assert!(
            Profile::redis()
                .divergences
                .contains_key("cas_detects_rewrite_of_same_value")
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(Profile::from_toml("provider='x'\nflavour='y'\nbackend='z'\nttl=true").is_err());
    }
}
