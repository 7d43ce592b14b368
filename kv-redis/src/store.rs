//! The mapping of the contract onto Redis commands (README.md has the table).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kv_core::naming::namespace_prefix;
use kv_core::{
    Bucket, Capabilities, KeyPage, KvError, Provider, RequestId, Result, SwapOutcome, Version,
    Versioned,
};
use redis::Script;
use redis::aio::ConnectionManager;

use crate::error::map_error;

/// Redis refuses bulk strings above 512 MiB (`proto-max-bulk-len`).
pub const REDIS_MAX_VALUE_BYTES: usize = 512 * 1024 * 1024;
/// Keys per MGET / DEL and commands per pipeline.
const CHUNK: usize = 500;
/// SCAN COUNT hint per round trip.
const SCAN_COUNT: usize = 200;
/// SCAN round trips per `list-keys` page at most (bounds latency on sparse keyspaces).
const SCAN_ROUNDS: usize = 32;

/// The Redis key prefix of `namespace`: `wasi-kv/` and the prefix-free
/// [`namespace_prefix`] (`<namespace length>/<namespace>/`).
pub fn key_prefix(namespace: &str) -> Vec<u8> {
    format!("wasi-kv/{}", namespace_prefix(namespace)).into_bytes()
}

/// A SCAN MATCH pattern matching exactly the keys that start with `prefix`.
fn match_pattern(prefix: &[u8]) -> Vec<u8> {
    let mut pattern = Vec::with_capacity(prefix.len() + 8);
    for &byte in prefix {
        if matches!(byte, b'*' | b'?' | b'[' | b']' | b'\\') {
            pattern.push(b'\\');
        }
        pattern.push(byte);
    }
    pattern.push(b'*');
    pattern
}

/// A provider over one Redis server and database.
#[derive(Clone)]
pub struct RedisProvider {
    connection: ConnectionManager,
}

impl RedisProvider {
    /// A provider over an existing connection manager.
    pub fn new(connection: ConnectionManager) -> Self {
        RedisProvider { connection }
    }
}

#[async_trait]
impl Provider for RedisProvider {
    fn name(&self) -> &str {
        "redis"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            cas: true,
            list_may_repeat: true,
            max_value_bytes: REDIS_MAX_VALUE_BYTES,
        }
    }

    async fn open(&self, namespace: &str) -> Result<Arc<dyn Bucket>> {
        let prefix = key_prefix(namespace);
        Ok(Arc::new(RedisBucket {
            connection: self.connection.clone(),
            pattern: match_pattern(&prefix),
            prefix,
            read_script: Script::new(READ_VERSIONED),
            swap_script: Script::new(SWAP),
            increment_script: Script::new(INCREMENT),
        }))
    }
}

/// Reads a value with its version: the SHA-1 of the value. Redis has no per-key version, so a
/// rewrite with identical bytes is not seen as a change (the profile declares this).
const READ_VERSIONED: &str = r"
local value = redis.call('GET', KEYS[1])
if value then return {value, redis.sha1hex(value)} end
return false
";

/// Writes ARGV[2] if the key still has version ARGV[1] ('' = still missing), exactly once per
/// request: the request key KEYS[2] is set in the same script, and a retry that finds it
/// reports the swap. Atomic: a script runs without interleaving.
const SWAP: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
local value = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if value then return 0 end
elseif (not value) or redis.sha1hex(value) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], 's', 'PX', ARGV[3])
return 1
";

/// `INCRBY` exactly once per request: the result is kept under the request key KEYS[2] in the
/// same script, and a retry that finds it returns it. The result is read back with GET, as
/// text: Lua numbers are doubles and would round counters beyond 2^53.
const INCREMENT: &str = r"
local done = redis.call('GET', KEYS[2])
if done then return done end
local added = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(added) == 'table' and added.err then return redis.error_reply(added.err) end
local total = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[2], total, 'PX', ARGV[2])
return total
";

/// How long a request key is kept: far longer than any operation's retries.
const REQUEST_KEY_TTL_MS: u64 = 600_000;

/// The key that records an applied increment or swap. Outside every namespace's prefix
/// (`wasi-kv/<length>/…`), so listing never sees it.
fn request_key(request: &RequestId) -> String {
    format!("wasi-kv-request/{}", request.hex())
}

struct RedisBucket {
    connection: ConnectionManager,
    prefix: Vec<u8>,
    pattern: Vec<u8>,
    read_script: Script,
    swap_script: Script,
    increment_script: Script,
}

impl RedisBucket {
    fn key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key.as_bytes());
        full
    }

    fn conn(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Parses our cursor: `<scan cursor>` or `<scan cursor>+<keys of that reply already returned>`.
    fn parse_cursor(cursor: &str) -> Result<(u64, usize)> {
        let invalid = || KvError::invalid_cursor("not a redis listing cursor");
        let (scan, skip) = cursor.split_once('+').unwrap_or((cursor, "0"));
        Ok((
            scan.parse().map_err(|_| invalid())?,
            skip.parse().map_err(|_| invalid())?,
        ))
    }
}

#[async_trait]
impl Bucket for RedisBucket {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut self.conn())
            .await
            .map_err(|err| map_error("GET", err))
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .query_async(&mut self.conn())
            .await
            .map_err(|err| map_error("SET", err))
    }

    async fn set_with_ttl(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<()> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(millis)
            .query_async(&mut self.conn())
            .await
            .map_err(|err| map_error("SET PX", err))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        redis::cmd("DEL")
            .arg(self.key(key))
            .query_async::<i64>(&mut self.conn())
            .await
            .map(drop)
            .map_err(|err| map_error("DEL", err))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        redis::cmd("EXISTS")
            .arg(self.key(key))
            .query_async::<i64>(&mut self.conn())
            .await
            .map(|count| count > 0)
            .map_err(|err| map_error("EXISTS", err))
    }

    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage> {
        let (mut scan, mut skip) = match cursor {
            Some(cursor) => Self::parse_cursor(cursor)?,
            None => (0, 0),
        };
        let mut keys = Vec::new();
        let mut conn = self.conn();
        for _ in 0..SCAN_ROUNDS {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(scan)
                .arg("MATCH")
                .arg(&self.pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await
                .map_err(|err| map_error("SCAN", err))?;
            let fresh = batch.len().saturating_sub(skip);
            let room = limit - keys.len();
            for raw in batch.iter().skip(skip).take(room) {
                let Some(rest) = raw.strip_prefix(self.prefix.as_slice()) else {
                    continue;
                };
                match String::from_utf8(rest.to_vec()) {
                    Ok(key) => keys.push(key),
                    Err(_) => tracing::warn!("skipping a non-UTF-8 key written by another client"),
                }
            }
            if fresh > room {
                // The reply does not fit: come back to the same SCAN cursor and skip what we took.
                return Ok(KeyPage {
                    keys,
                    cursor: Some(format!("{scan}+{}", skip + room)),
                });
            }
            skip = 0;
            scan = next;
            if scan == 0 {
                return Ok(KeyPage { keys, cursor: None });
            }
            if keys.len() + SCAN_COUNT * 2 > limit {
                break;
            }
        }
        Ok(KeyPage {
            keys,
            cursor: Some(scan.to_string()),
        })
    }

    async fn increment(&self, key: &str, delta: i64, request: &RequestId) -> Result<i64> {
        let total: String = self
            .increment_script
            .key(self.key(key))
            .key(request_key(request))
            .arg(delta)
            .arg(REQUEST_KEY_TTL_MS)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|err| map_error("INCRBY", err))?;
        total
            .parse()
            .map_err(|_| KvError::internal("redis INCRBY: the counter did not read back as an i64"))
    }

    async fn read_versioned(&self, key: &str) -> Result<Versioned> {
        let read: Option<(Vec<u8>, String)> = self
            .read_script
            .key(self.key(key))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|err| map_error("CAS read", err))?;
        Ok(match read {
            Some((value, digest)) => Versioned {
                value: Some(value),
                version: Version::Tag(digest),
            },
            None => Versioned {
                value: None,
                version: Version::Absent,
            },
        })
    }

    async fn swap(
        &self,
        key: &str,
        expected: &Version,
        value: Vec<u8>,
        request: &RequestId,
    ) -> Result<SwapOutcome> {
        let expected = match expected {
            Version::Absent => "",
            Version::Tag(digest) => digest.as_str(),
        };
        let swapped: i64 = self
            .swap_script
            .key(self.key(key))
            .key(request_key(request))
            .arg(expected)
            .arg(value)
            .arg(REQUEST_KEY_TTL_MS)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|err| map_error("CAS swap", err))?;
        Ok(if swapped == 1 {
            SwapOutcome::Swapped
        } else {
            SwapOutcome::Conflict
        })
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut values = Vec::with_capacity(keys.len());
        let mut conn = self.conn();
        for chunk in keys.chunks(CHUNK) {
            let mut command = redis::cmd("MGET");
            for key in chunk {
                command.arg(self.key(key));
            }
            let part: Vec<Option<Vec<u8>>> = command
                .query_async(&mut conn)
                .await
                .map_err(|err| map_error("MGET", err))?;
            values.extend(part);
        }
        Ok(values)
    }

    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<()> {
        let mut conn = self.conn();
        for chunk in entries.chunks(CHUNK) {
            // A pipeline keeps order, so for duplicate keys the last entry wins.
            let mut pipe = redis::pipe();
            for (key, value) in chunk {
                pipe.cmd("SET")
                    .arg(self.key(key))
                    .arg(value.as_slice())
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|err| map_error("SET pipeline", err))?;
        }
        Ok(())
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        let mut conn = self.conn();
        for chunk in keys.chunks(CHUNK) {
            let mut command = redis::cmd("DEL");
            for key in chunk {
                command.arg(self.key(key));
            }
            command
                .query_async::<i64>(&mut conn)
                .await
                .map_err(|err| map_error("DEL", err))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_never_nest() {
        assert_eq!(key_prefix("a"), b"wasi-kv/1/a/".to_vec());
        let a = key_prefix("a");
        let ab = key_prefix("a/1/b");
        assert!(!ab.starts_with(&a) && !a.starts_with(&ab));
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(
            match_pattern(b"wasi-kv/3/a*[/"),
            b"wasi-kv/3/a\\*\\[/*".to_vec()
        );
        assert_eq!(match_pattern(b"?\\]"), b"\\?\\\\\\]*".to_vec());
    }

    #[test]
    fn cursors_parse() {
        assert_eq!(RedisBucket::parse_cursor("17").unwrap(), (17, 0));
        assert_eq!(RedisBucket::parse_cursor("17+40").unwrap(), (17, 40));
        assert!(RedisBucket::parse_cursor("x").is_err());
    }
}
