//! The mapping of the contract onto Redis commands (README.md has the table).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use kv_core::combine::{self, ApplyBatch, Batch};
use kv_core::naming::namespace_prefix;
use kv_core::provider::{batch_bytes_exceeded, last_entry_per_key};
use kv_core::store::OUTCOME_UNKNOWN;
use kv_core::{
    Attempt, Bucket, Bytes, Capabilities, ErrorKind, KeyPage, KvError, Provider, Result,
    StoredValue, SwapOutcome, Version, Versioned,
};
use redis::{Cmd, FromRedisValue, Script, ServerErrorKind};

use crate::client::RedisConnection;
use crate::error::{map_error, map_script_error};
use crate::slot::{key_slot, slot_tag};

/// Redis refuses bulk strings above 512 MiB (`proto-max-bulk-len`).
pub const REDIS_MAX_VALUE_BYTES: usize = 512 * 1024 * 1024;
/// Keys per MGET / MSET / DEL.
const CHUNK: usize = 500;
/// Batch commands in flight at once (per-slot commands on a cluster).
const BATCH_CONCURRENCY: usize = 16;
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

/// How many replicas must have a write before it is acknowledged (Redis `WAIT`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicaWait {
    /// Replicas (0: the primary's reply suffices).
    pub replicas: u32,
    /// How long to wait for them.
    pub timeout: Duration,
}

/// A provider over one Redis server and database, or over a Redis Cluster.
#[derive(Clone)]
pub struct RedisProvider {
    connection: RedisConnection,
    wait: ReplicaWait,
    scripts: Arc<Scripts>,
}

/// The Lua scripts, hashed once per provider rather than on every `open` (which `serve` does
/// once per request).
struct Scripts {
    read: Script,
    get_with_ttl: Script,
    get_many_within: Script,
    swap: Script,
    increment: Script,
}

impl RedisProvider {
    /// A provider over an existing connection.
    pub fn new(connection: RedisConnection, wait: ReplicaWait) -> Self {
        let scripts = Arc::new(Scripts {
            read: Script::new(READ_VERSIONED),
            get_with_ttl: Script::new(GET_WITH_TTL),
            get_many_within: Script::new(GET_MANY_WITHIN),
            swap: Script::new(SWAP),
            increment: Script::new(INCREMENT),
        });
        RedisProvider {
            connection,
            wait,
            scripts,
        }
    }
}

#[async_trait]
impl Provider for RedisProvider {
    fn name(&self) -> &str {
        if self.connection.is_cluster() {
            "redis+cluster"
        } else {
            "redis"
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            cas: true,
            list_may_repeat: true,
            max_value_bytes: REDIS_MAX_VALUE_BYTES,
            // Keyspace notifications, each node's own: the server's, or every primary's
            // (changes.rs).
            watch: Some(kv_core::watch::WatchSupport {
                durable: false,
                reports_expiry: true,
                every_value: false,
            }),
            ..Capabilities::default()
        }
    }

    async fn open(&self, namespace: &str) -> Result<Arc<dyn Bucket>> {
        let prefix = key_prefix(namespace);
        Ok(Arc::new(RedisBucket {
            connection: self.connection.clone(),
            wait: self.wait,
            pattern: match_pattern(&prefix),
            prefix,
            scripts: self.scripts.clone(),
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

/// Reads a value with the milliseconds it has left (`PTTL`: -1 when it has none), in one step
/// so the two belong to the same write.
const GET_WITH_TTL: &str = r"
local value = redis.call('GET', KEYS[1])
if value then return {value, redis.call('PTTL', KEYS[1])} end
return false
";

/// The first lines of the exactly-once scripts: the time (`ms`, from the server's clock) and
/// the pruning of at most `prune_limit` request records older than ARGV[1] milliseconds from
/// the request hash KEYS[2] and its time index KEYS[3]. Each script adds N records and prunes
/// up to 16 + 2N, so a slot's records shrink back to those of the last ARGV[1] milliseconds as
/// it is written.
macro_rules! prune_request_records {
    () => {
        r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf',
  string.format('%.0f', ms - tonumber(ARGV[1])), 'LIMIT', 0, prune_limit)
if #expired > 0 then
  redis.call('HDEL', KEYS[2], unpack(expired))
  redis.call('ZREM', KEYS[3], unpack(expired))
end
"
    };
}

/// Writes ARGV[4] if the key still has version ARGV[3] ('' = still missing), exactly once per
/// request ARGV[2]: the request is recorded in the same script, and a retry that finds the
/// record reports the swap. Atomic: a script runs without interleaving.
const SWAP: &str = concat!(
    "local prune_limit = 18\n",
    prune_request_records!(),
    r"
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 1 end
local value = redis.call('GET', KEYS[1])
if ARGV[3] == '' then
  if value then return 0 end
elseif (not value) or redis.sha1hex(value) ~= ARGV[3] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[2], 's')
redis.call('ZADD', KEYS[3], string.format('%.0f', ms), ARGV[2])
return 1
"
);

/// A batch of increments of KEYS[1] ([`kv_core::combine`]), each `INCRBY` exactly once per
/// request: ARGV[2..] are triples of request id, delta and range (`s` any i64, `u` no total
/// below zero). Each outcome is recorded as soon as it is known, in the same script: a total,
/// or `E` and the error of an increment that wrote nothing (the counter is not an integer, or
/// the total would leave the range). A request that finds its record gets it again, so a late
/// copy of a script (resent by a client, or sent by a caller that gave up) can neither apply
/// an increment twice nor apply one already answered with an error. Any other error ends the
/// script: the increments before it are recorded, the rest did not happen. Answers come one
/// per increment, in order. Totals are answered as text: `INCRBY`'s reply is a Lua number (a
/// double), exact below 2^53 in magnitude, so beyond that the total is read back with GET.
const INCREMENT: &str = concat!(
    "local prune_limit = 16 + 2 * ((#ARGV - 1) / 3)\n",
    prune_request_records!(),
    r"
local stamp = string.format('%.0f', ms)
local answers = {}
local function record(request, outcome)
  redis.call('HSET', KEYS[2], request, outcome)
  redis.call('ZADD', KEYS[3], stamp, request)
  answers[#answers + 1] = outcome
end
for i = 2, #ARGV, 3 do
  local request, delta = ARGV[i], ARGV[i + 1]
  local done = redis.call('HGET', KEYS[2], request)
  if done then
    answers[#answers + 1] = done
  else
    local existed = ARGV[i + 2] ~= 'u' or redis.call('EXISTS', KEYS[1]) == 1
    local added = redis.pcall('INCRBY', KEYS[1], delta)
    if type(added) == 'table' and added.err then
      local lower = string.lower(added.err)
      if string.find(lower, 'not an integer', 1, true) or string.find(lower, 'overflow', 1, true) then
        record(request, 'E' .. added.err)
      else
        return redis.error_reply(added.err)
      end
    else
      local total
      if added > -9007199254740992 and added < 9007199254740992 then
        total = string.format('%.0f', added)
      else
        total = redis.call('GET', KEYS[1])
      end
      if ARGV[i + 2] == 'u' and string.sub(total, 1, 1) == '-' then
        -- Undone: a counter that did not exist does not exist again (not a `0`).
        if existed then
          redis.call('DECRBY', KEYS[1], delta)
        else
          redis.call('DEL', KEYS[1])
        end
        record(request, 'EERR increment or decrement would overflow: the counter would be ' .. total .. ', which the u64 interface cannot return; nothing was written')
      else
        record(request, total)
      end
    end
  end
end
return answers
"
);

/// What an increment's attempt holds while a script carrying it may run: its outcome is
/// unknown until an answer comes back (the script records it).
const SENT: u32 = 0;

/// The most increments of one key one script applies.
const MAX_BATCH: usize = 32;

/// The values of KEYS (`MGET`), or, when their sizes add up to more than ARGV[1] bytes, only
/// that sum, as an integer: values over the budget never leave the server. Atomic, so the sizes
/// are those of the values returned. `STRLEN` of a key that is not a string counts 0 (`MGET`
/// gives it as missing). An ARGV[1] of -1 measures only.
const GET_MANY_WITHIN: &str = r"
local total = 0
for _, key in ipairs(KEYS) do
  local size = redis.pcall('STRLEN', key)
  if type(size) == 'number' then total = total + size end
end
if total > tonumber(ARGV[1]) then return total end
return redis.call('MGET', unpack(KEYS))
";

/// The increments of one key, applied by one [`INCREMENT`] script.
struct Increments<'a> {
    bucket: &'a RedisBucket,
    key: Vec<u8>,
}

#[async_trait]
impl ApplyBatch for Increments<'_> {
    async fn apply(&self, batch: &mut Batch) {
        let [records, times] = request_keys(&self.key);
        let mut args = vec![REQUEST_RECORD_MS.to_string().into_bytes()];
        for pending in batch.iter() {
            args.push(pending.attempt.request().hex().into_bytes());
            args.push(pending.delta.to_string().into_bytes());
            args.push(match pending.range {
                kv_core::CounterRange::Signed => b"s".to_vec(),
                kv_core::CounterRange::Unsigned => b"u".to_vec(),
            });
        }
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        // Marked as sent before the script goes: an increment sent before (by a caller that
        // gave up, or an earlier attempt of its call) may be applied by that copy, so a failure
        // of this script must not read as "not applied" for it.
        let mut sent_before = Vec::new();
        batch.answer(|pending| {
            sent_before.push(pending.attempt.attempted_base().is_some());
            pending.attempt.set_attempted_base(Some(SENT));
            None
        });
        let answers: Result<Vec<String>> = self
            .bucket
            .eval(
                "INCRBY",
                &self.bucket.scripts.increment,
                &[&self.key, records.as_bytes(), times.as_bytes()],
                &args,
                true,
            )
            .await;
        // A lost reply answers every increment with its error; the host's retry, with the same
        // request ids, finds the records of those that applied.
        // The script ran, so an answer it gave that cannot be read may still stand for a
        // write: such an increment is told its outcome is unknown, never "failed".
        let unreadable = |why: &str| {
            KvError::unavailable(format!("{OUTCOME_UNKNOWN}: redis INCRBY: {why}"))
                .with_transient(false)
        };
        let mut answers = match answers {
            Ok(answers) if answers.len() * 3 + 1 == args.len() => answers.into_iter(),
            Ok(_) => {
                return batch.answer(|_| {
                    Some(Err(unreadable(
                        "the script answered a different number of increments",
                    )))
                });
            }
            Err(err) => {
                // A script that failed before it ran applied nothing; one whose reply was lost
                // may have applied all of it, and the records tell the host's retry.
                let mut sent_before = sent_before.into_iter();
                return batch.answer(|pending| {
                    if !err.may_have_applied() && sent_before.next() == Some(false) {
                        pending.attempt.set_attempted_base(None);
                    }
                    Some(Err(err.duplicate()))
                });
            }
        };
        batch.answer(|pending| {
            // A recorded outcome is final.
            pending.attempt.set_attempted_base(None);
            Some(match answers.next() {
                Some(answer) => match answer.strip_prefix('E') {
                    Some(error) => Err(map_script_error("INCRBY", error)),
                    None => answer
                        .parse()
                        .map_err(|_| unreadable("the counter did not read back as an i64")),
                },
                None => Err(unreadable("an increment had no answer")),
            })
        });
    }
}

/// How long the record of an applied increment or swap is kept: far longer than any
/// operation's retries.
const REQUEST_RECORD_MS: u64 = 600_000;

/// The request records of `data_key`'s slot: a hash (request id → result) and a sorted set
/// (request id by the time it was recorded, for pruning). Neither has a TTL, so no `volatile-*`
/// eviction policy ever picks them (a request key with a TTL would be among the first victims,
/// and a retry after its eviction would apply twice). Outside every namespace's prefix
/// (`wasi-kv/<length>/…`), so listing never sees them, and with a hash tag that puts them in
/// `data_key`'s cluster slot, so one script may touch all three keys.
fn request_keys(data_key: &[u8]) -> [String; 2] {
    let tag = slot_tag(key_slot(data_key));
    [
        format!("wasi-kv-requests/{{{tag}}}"),
        format!("wasi-kv-requests/{{{tag}}}/times"),
    ]
}

#[derive(Clone)]
struct RedisBucket {
    connection: RedisConnection,
    wait: ReplicaWait,
    prefix: Vec<u8>,
    pattern: Vec<u8>,
    scripts: Arc<Scripts>,
}

impl RedisBucket {
    fn key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key.as_bytes());
        full
    }

    fn conn(&self) -> RedisConnection {
        self.connection.clone()
    }

    /// Sends a read.
    async fn read<T: FromRedisValue>(&self, op: &str, command: &Cmd) -> Result<T> {
        self.send(op, command, None, false).await
    }

    /// Sends a write. With `wait_replicas`, the write and a `WAIT` go in one pipeline on the
    /// connection to the key's primary, so the wait covers exactly this write; too few
    /// replicas in time is a `timeout` (the write may or may not survive a failover).
    async fn write<T: FromRedisValue>(&self, op: &str, command: &Cmd) -> Result<T> {
        self.send(op, command, None, true).await
    }

    /// Sends `command`; an `EVALSHA` of `script` that finds the script missing (a restarted
    /// server, a promoted replica) loads it and is sent once more.
    async fn send<T: FromRedisValue>(
        &self,
        op: &str,
        command: &Cmd,
        script: Option<&Script>,
        durable: bool,
    ) -> Result<T> {
        let mut conn = self.conn();
        let wait = durable && self.wait.replicas > 0;
        let mut loaded = false;
        loop {
            let sent: redis::RedisResult<(T, Option<i64>)> = if wait {
                let mut pipe = redis::pipe();
                pipe.add_command(command.clone())
                    .cmd("WAIT")
                    .arg(self.wait.replicas)
                    .arg(u64::try_from(self.wait.timeout.as_millis()).unwrap_or(u64::MAX));
                pipe.query_async::<(T, i64)>(&mut conn)
                    .await
                    .map(|(value, acked)| (value, Some(acked)))
            } else {
                command
                    .query_async::<T>(&mut conn)
                    .await
                    .map(|value| (value, None))
            };
            match sent {
                Ok((value, acked)) => {
                    self.check_replicas(op, acked)?;
                    return Ok(value);
                }
                Err(err)
                    if !loaded
                        && err.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) =>
                {
                    let script = script.ok_or_else(|| map_error(op, err))?;
                    script
                        .load_async(&mut conn)
                        .await
                        .map_err(|err| map_error(op, err))?;
                    loaded = true;
                }
                Err(err) => return Err(map_error(op, err)),
            }
        }
    }

    fn check_replicas(&self, op: &str, acked: Option<i64>) -> Result<()> {
        match acked {
            Some(acked) if acked < i64::from(self.wait.replicas) => Err(KvError::new(
                ErrorKind::Timeout,
                format!(
                    "redis {op}: the primary applied the write but only {acked} of {} replicas \
                     had it within {} ms; it may be lost if the primary fails",
                    self.wait.replicas,
                    self.wait.timeout.as_millis()
                ),
            )
            .with_transient(true)),
            _ => Ok(()),
        }
    }

    /// `EVALSHA` of `script` with `keys` and `args`.
    async fn eval<T: FromRedisValue>(
        &self,
        op: &str,
        script: &Script,
        keys: &[&[u8]],
        args: &[&[u8]],
        durable: bool,
    ) -> Result<T> {
        let mut command = redis::cmd("EVALSHA");
        command.arg(script.get_hash()).arg(keys.len());
        for key in keys {
            command.arg(*key);
        }
        for arg in args {
            command.arg(*arg);
        }
        self.send(op, &command, Some(script), durable).await
    }

    /// Splits `keys` (full Redis keys) into batches of at most [`CHUNK`] whose keys share one
    /// cluster slot (a multi-key command may not cross slots); on one server, in order.
    fn batches(&self, keys: &[Vec<u8>]) -> Vec<Vec<usize>> {
        if !self.connection.is_cluster() {
            let indices: Vec<usize> = (0..keys.len()).collect();
            return indices.chunks(CHUNK).map(<[usize]>::to_vec).collect();
        }
        let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (index, key) in keys.iter().enumerate() {
            by_slot.entry(key_slot(key)).or_default().push(index);
        }
        by_slot
            .into_values()
            .flat_map(|indices| {
                indices
                    .chunks(CHUNK)
                    .map(<[usize]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// One [`GET_MANY_WITHIN`] script over the keys of one batch (one slot on a cluster):
    /// their values if they add up to at most `budget` bytes, else their total size; with no
    /// budget, only the total size.
    async fn fetch_within(
        &self,
        full: &[Vec<u8>],
        batch: &[usize],
        budget: Option<usize>,
    ) -> Result<Fetched> {
        let keys: Vec<&[u8]> = batch.iter().map(|&index| full[index].as_slice()).collect();
        let budget = budget.map_or_else(|| "-1".to_string(), |budget| budget.to_string());
        let reply: redis::Value = self
            .eval(
                "MGET",
                &self.scripts.get_many_within,
                &keys,
                &[budget.as_bytes()],
                false,
            )
            .await?;
        let unexpected = || KvError::internal("redis MGET: unexpected reply to the sized read");
        match reply {
            redis::Value::Int(total) => Ok(Fetched::Total(
                usize::try_from(total).map_err(|_| unexpected())?,
            )),
            redis::Value::Array(_) => {
                let values: Vec<Option<Vec<u8>>> =
                    redis::from_redis_value(reply).map_err(|_| unexpected())?;
                if values.len() != batch.len() {
                    return Err(KvError::internal("redis MGET: reply of the wrong length"));
                }
                Ok(Fetched::Values(values))
            }
            _ => Err(unexpected()),
        }
    }

    /// One `SCAN` round on the shard named by `shard` (its lowest slot), or on the server.
    /// One `SCAN` step on one server, or on one cluster node and never another.
    /// One `SCAN` step on `node` (on one server: the server), and the identity of the server
    /// process that answered it: the node's address and its `run_id`, asked in the same
    /// pipeline. A `SCAN` cursor means something only to the process that issued it (a
    /// restarted server rebuilds its table with a new hash seed).
    async fn scan(
        &self,
        node: Option<&crate::client::Shard>,
        cursor: u64,
    ) -> Result<(u64, Vec<Vec<u8>>, u32)> {
        let mut pipeline = redis::pipe();
        // A server that refuses INFO (an ACL user without @dangerous, a proxy) still lists:
        // its process is then named by its address alone, and a restart is not seen.
        pipeline
            .ignore_errors()
            .cmd("INFO")
            .arg("server")
            .cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let address = node.map(|node| (node.host.as_str(), node.port));
        let replies = self
            .connection
            .pipeline_to_node(address, pipeline, 2)
            .await
            .map_err(|err| map_error("SCAN", err))?;
        let decode = |err: redis::ParsingError| map_error("SCAN", redis::RedisError::from(err));
        let [info, scanned]: [redis::Value; 2] = replies
            .try_into()
            .map_err(|_| KvError::internal("redis SCAN: the pipeline did not answer twice"))?;
        let info: String = redis::from_redis_value(info).unwrap_or_default();
        let run_id = info
            .lines()
            .find_map(|line| line.trim().strip_prefix("run_id:"))
            .unwrap_or_default();
        if let redis::Value::ServerError(err) = scanned {
            return Err(map_error("SCAN", err.into()));
        }
        let (next, keys) = redis::from_redis_value(scanned).map_err(decode)?;
        Ok((next, keys, node_id(address, run_id)))
    }
}

/// What one [`GET_MANY_WITHIN`] script returned.
enum Fetched {
    /// The values, in the batch's order.
    Values(Vec<Option<Vec<u8>>>),
    /// Only the sum of the values' sizes (over the budget, or measured only).
    Total(usize),
}

/// Where a listing stands: the shard (a cluster's primary, named by its lowest slot), the
/// `SCAN` cursor on it, and which keys of that cursor's reply were already returned, by
/// identity: a fingerprint per key. As text: `[<shard>:]<scan cursor>[~<fingerprints>]`, the
/// fingerprints in hex after the 8 hex digits of this process's fingerprint key.
///
/// A page that ends inside a `SCAN` reply comes back to the same `SCAN` cursor. The re-issued
/// reply need not hold the same keys in the same order (deletes and rehashing in between shift
/// it), so the keys already returned are skipped by identity, never by count: every key of the
/// re-issued reply that was not returned yet is returned, and the listing moves past that
/// cursor only once a whole reply has been returned. That is an ordinary SCAN iteration, whose
/// guarantee (every key present for the whole iteration is returned) so carries over to the
/// listing. Keys may repeat, which Redis declares (`list_may_repeat`).
///
/// Fingerprints are keyed with a random key of this process, so no guest can write a key that
/// collides with another; a cursor resumed by another process (a restarted host, another
/// replica sharing the cursor secret) has fingerprints it cannot match and skips nothing:
/// repeats, never misses. So do cursors of the earlier `+<skip>` form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListPosition {
    shard: Option<u16>,
    /// Which server process the `SCAN` cursor belongs to (a keyed fingerprint of its address
    /// and `run_id`): after a failover or a restart, no other process resumes it.
    node: Option<u32>,
    scan: u64,
    /// Fingerprints of the keys of `scan`'s reply already returned, sorted.
    seen: Vec<u64>,
}

/// Most keys of one `SCAN` reply a cursor remembers (16 hex digits each). A reply holds about
/// [`SCAN_COUNT`] keys (more only by a bucket's or a rehash step's worth), so a page that ends
/// inside a reply carries fewer than that; a reply too large to remember fails the listing
/// rather than lose keys.
const MAX_SEEN: usize = 10 * SCAN_COUNT;

/// This process's fingerprint key: SipHash keys drawn at random once per process.
fn fingerprint_key() -> &'static std::hash::RandomState {
    static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    KEY.get_or_init(std::hash::RandomState::new)
}

/// The fingerprint of a key as Redis returned it (64 bits, keyed).
fn fingerprint(raw: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    fingerprint_key().hash_one(raw)
}

/// Names a server process in a cursor: a digest of its address (on a cluster) and its
/// `run_id` (empty where `INFO` is denied), so a cursor says which process's `SCAN` it
/// continues without showing either. The same in every host process (SHA-256, not this
/// process's keyed fingerprint): replicas behind one load balancer each serve pages of one
/// listing, and a cursor that named the server differently in each would start it over on
/// every page.
fn node_id(address: Option<(&str, u16)>, run_id: &str) -> u32 {
    use sha2::{Digest as _, Sha256};
    let name = match address {
        Some((host, port)) => format!("node {host}:{port} {run_id}"),
        None => format!("server {run_id}"),
    };
    let digest = Sha256::digest(name.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Names this process's fingerprint key in a cursor, so another process's fingerprints are
/// recognised as such (and dropped) rather than compared.
fn fingerprint_key_id() -> u32 {
    (fingerprint(b"wasi-kv fingerprint key") >> 32) as u32
}

impl ListPosition {
    fn start(shard: Option<u16>) -> ListPosition {
        ListPosition {
            shard,
            node: None,
            scan: 0,
            seen: Vec::new(),
        }
    }

    fn parse(cursor: &str, cluster: bool) -> Result<ListPosition> {
        let invalid = || KvError::invalid_cursor("not a redis listing cursor");
        let hex = |text: &str| {
            (!text.is_empty() && text.bytes().all(|byte| byte.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(text, 16).ok())
                .flatten()
                .ok_or_else(invalid)
        };
        let node_of =
            |node: &str| -> Result<u32> { u32::try_from(hex(node)?).map_err(|_| invalid()) };
        let (shard, node, rest) = match (cluster, cursor.split_once(':')) {
            (true, Some((shard, rest))) => {
                // `<shard>.<node>` since nodes are named; `<shard>` alone before.
                let (shard, node) = match shard.split_once('.') {
                    Some((shard, node)) => (shard, Some(hex(node)?)),
                    None => (shard, None),
                };
                let node = node
                    .map(|node| u32::try_from(node).map_err(|_| invalid()))
                    .transpose()?;
                (Some(shard.parse().map_err(|_| invalid())?), node, rest)
            }
            // One server: `.<node>:` since servers are named; nothing before.
            (false, Some((node, rest))) => match node.strip_prefix('.') {
                Some(node) => (None, Some(node_of(node)?), rest),
                None => return Err(invalid()),
            },
            (false, None) => (None, None, cursor),
            _ => return Err(invalid()),
        };
        let (scan, seen) = if let Some((scan, seen)) = rest.split_once('~') {
            let count = seen.len().saturating_sub(8) / 16;
            if !seen.is_ascii() || seen.len() != 8 + 16 * count || count == 0 || count > MAX_SEEN {
                return Err(invalid());
            }
            let key = hex(&seen[..8])?;
            let prints = (0..count)
                .map(|index| hex(&seen[8 + 16 * index..][..16]))
                .collect::<Result<Vec<u64>>>()?;
            // Another process's fingerprints cannot be matched: skip nothing.
            let ours = key == u64::from(fingerprint_key_id());
            (scan, if ours { prints } else { Vec::new() })
        } else if let Some((scan, skip)) = rest.split_once('+') {
            // The earlier form: resume at the SCAN cursor, skipping nothing.
            skip.parse::<usize>().map_err(|_| invalid())?;
            (scan, Vec::new())
        } else {
            (rest, Vec::new())
        };
        Ok(ListPosition {
            shard,
            node,
            scan: scan.parse().map_err(|_| invalid())?,
            seen,
        })
    }
}

impl std::fmt::Display for ListPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.shard, self.node) {
            (Some(shard), Some(node)) => write!(f, "{shard}.{node:08x}:")?,
            (Some(shard), None) => write!(f, "{shard}:")?,
            (None, Some(node)) => write!(f, ".{node:08x}:")?,
            (None, None) => {}
        }
        write!(f, "{}", self.scan)?;
        if !self.seen.is_empty() {
            write!(f, "~{:08x}", fingerprint_key_id())?;
            for print in &self.seen {
                write!(f, "{print:016x}")?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Bucket for RedisBucket {
    fn change_feed(&self) -> Option<Arc<dyn kv_core::watch::ChangeFeed>> {
        // The feed follows the subscriptions on a task of the runtime it is created in.
        tokio::runtime::Handle::try_current().ok()?;
        let bucket: Arc<dyn Bucket> = Arc::new(self.clone());
        Some(Arc::new(crate::changes::RedisFeed::follow(
            self.connection.clone(),
            bucket,
            self.prefix.clone(),
            self.pattern.clone(),
        )))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.read("GET", redis::cmd("GET").arg(self.key(key))).await
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<()> {
        self.write("SET", redis::cmd("SET").arg(self.key(key)).arg(&value[..]))
            .await
    }

    async fn set_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.write(
            "SET PX",
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(&value[..])
                .arg("PX")
                .arg(millis),
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.write::<i64>("DEL", redis::cmd("DEL").arg(self.key(key)))
            .await
            .map(drop)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.read::<i64>("EXISTS", redis::cmd("EXISTS").arg(self.key(key)))
            .await
            .map(|count| count > 0)
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<StoredValue>> {
        let read: Option<(Vec<u8>, i64)> = self
            .eval(
                "GET PTTL",
                &self.scripts.get_with_ttl,
                &[&self.key(key)],
                &[],
                false,
            )
            .await?;
        Ok(read.and_then(|(value, ttl_ms)| match ttl_ms {
            -1 => Some(StoredValue { value, ttl: None }),
            // Expired between the two commands of the script: missing, as a GET would say.
            ..=0 => None,
            ms => Some(StoredValue {
                value,
                ttl: Some(Duration::from_millis(ms.unsigned_abs())),
            }),
        }))
    }

    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage> {
        // On a cluster, every primary is scanned in turn, in the order of the slots they serve.
        let shards = self
            .connection
            .shards()
            .await
            .map_err(|err| map_error("CLUSTER SLOTS", err))?;
        let cluster = self.connection.is_cluster();
        let mut position = match cursor {
            Some(cursor) => ListPosition::parse(cursor, cluster)?,
            None => ListPosition::start(match cluster {
                true => Some(
                    shards
                        .first()
                        .ok_or_else(|| KvError::unavailable("redis cluster: no slot is served"))?
                        .slot,
                ),
                false => None,
            }),
        };
        let mut keys = Vec::new();
        for _ in 0..SCAN_ROUNDS {
            // The node serving the shard now.
            let node = match position.shard {
                Some(slot) => {
                    let shard = shards
                        .iter()
                        .rev()
                        .find(|shard| shard.slot <= slot)
                        .ok_or_else(|| KvError::unavailable("redis cluster: no slot is served"))?;
                    if shard.slot != slot {
                        position.scan = 0;
                        position.seen.clear();
                    }
                    position.shard = Some(shard.slot);
                    Some(shard)
                }
                None => None,
            };
            let (next, batch, node_id) = self.scan(node, position.scan).await?;
            if position.node.is_some_and(|seen| seen != node_id) {
                // The cursor is another process's (a failover or a restart since the last
                // page): start this server or shard over. Repeats, never misses.
                position.node = Some(node_id);
                position.scan = 0;
                position.seen.clear();
                continue;
            }
            position.node = Some(node_id);
            // The keys of this SCAN cursor's reply returned so far (on earlier pages, and
            // repeats within the reply).
            let mut seen: HashSet<u64> = position.seen.drain(..).collect();
            let mut full = false;
            for raw in &batch {
                let print = fingerprint(raw);
                if seen.contains(&print) {
                    continue;
                }
                if keys.len() >= limit {
                    full = true;
                    break;
                }
                seen.insert(print);
                let Some(rest) = raw.strip_prefix(self.prefix.as_slice()) else {
                    continue;
                };
                match String::from_utf8(rest.to_vec()) {
                    Ok(key) => keys.push(key),
                    Err(_) => tracing::warn!("skipping a non-UTF-8 key written by another client"),
                }
            }
            if full {
                // The reply does not fit: come back to the same SCAN cursor, and skip there
                // what was returned of it, by identity.
                if seen.len() > MAX_SEEN {
                    return Err(KvError::internal(format!(
                        "redis SCAN: a reply of more than {MAX_SEEN} keys does not fit in \
                         pages of {limit}"
                    )));
                }
                position.seen = seen.into_iter().collect();
                position.seen.sort_unstable();
                return Ok(KeyPage {
                    keys,
                    cursor: Some(position.to_string()),
                });
            }
            position.scan = next;
            if next == 0 {
                // This server or shard is done; a cluster goes on with the next shard.
                let next_shard = position
                    .shard
                    .and_then(|shard| shards.iter().find(|next| next.slot > shard));
                match next_shard {
                    Some(next) => position = ListPosition::start(Some(next.slot)),
                    None => return Ok(KeyPage { keys, cursor: None }),
                }
            }
            if keys.len() + SCAN_COUNT * 2 > limit {
                break;
            }
        }
        Ok(KeyPage {
            keys,
            cursor: Some(position.to_string()),
        })
    }

    /// Concurrent increments of one key through this store are applied together, one script
    /// for the batch ([`INCREMENT`]).
    async fn increment(
        &self,
        key: &str,
        delta: i64,
        range: kv_core::CounterRange,
        attempt: &mut Attempt,
    ) -> Result<i64> {
        let applier = Increments {
            bucket: self,
            key: self.key(key),
        };
        // One script in flight per key and store: two, overlapping in the network, measured
        // 77,000 against 123,000 increments/s for one (16 guests, docs/benchmarks.md). A
        // script is atomic by itself, so stores need not wait for each other: the turn is
        // this store's own (its address in the name), not the item's.
        let name = format!("{:p}\0{key}", self as *const Self);
        combine::increment(self, &name, delta, range, attempt, MAX_BATCH, &applier).await
    }

    async fn read_versioned(&self, key: &str) -> Result<Versioned> {
        let read: Option<(Vec<u8>, String)> = self
            .eval(
                "CAS read",
                &self.scripts.read,
                &[&self.key(key)],
                &[],
                false,
            )
            .await?;
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
        value: Bytes,
        attempt: &mut Attempt,
    ) -> Result<SwapOutcome> {
        let expected = match expected {
            Version::Absent => "",
            Version::Tag(digest) => digest.as_str(),
        };
        let key = self.key(key);
        let [records, times] = request_keys(&key);
        let swapped: i64 = self
            .eval(
                "CAS swap",
                &self.scripts.swap,
                &[&key, records.as_bytes(), times.as_bytes()],
                &[
                    REQUEST_RECORD_MS.to_string().as_bytes(),
                    attempt.request().hex().as_bytes(),
                    expected.as_bytes(),
                    &value,
                ],
                true,
            )
            .await?;
        Ok(if swapped == 1 {
            SwapOutcome::Swapped
        } else {
            SwapOutcome::Conflict
        })
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let full: Vec<Vec<u8>> = keys.iter().map(|key| self.key(key)).collect();
        let parts: Vec<(Vec<usize>, Vec<Option<Vec<u8>>>)> =
            futures::stream::iter(self.batches(&full))
                .map(|batch| async {
                    let mut command = redis::cmd("MGET");
                    for &index in &batch {
                        command.arg(&full[index]);
                    }
                    let values: Vec<Option<Vec<u8>>> = self.read("MGET", &command).await?;
                    if values.len() != batch.len() {
                        return Err(KvError::internal("redis MGET: reply of the wrong length"));
                    }
                    Ok((batch, values))
                })
                .buffer_unordered(BATCH_CONCURRENCY)
                .try_collect()
                .await?;
        let mut values = vec![None; keys.len()];
        for (batch, part) in parts {
            for (index, value) in batch.into_iter().zip(part) {
                values[index] = value;
            }
        }
        Ok(values)
    }

    /// Sizes are checked on the server, before any value is sent: one script per batch sums
    /// the values' `STRLEN`s and returns either the values or only the sum. One batch (up to
    /// 500 keys on one server, the host asks for 100 at a time) is one round trip. Several
    /// batches (several slots on a cluster) are measured first, then each fetched within its
    /// measured size plus an equal part of what is left of the budget, so their sum stays
    /// within it; a value that grew in between fails the call as `batch-too-large`.
    async fn get_many_within(
        &self,
        keys: &[String],
        max_bytes: usize,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let full: Vec<Vec<u8>> = keys.iter().map(|key| self.key(key)).collect();
        let full = &full;
        let batches = self.batches(full);
        let budgets: Vec<usize> = if batches.len() > 1 {
            let sizes: Vec<usize> = futures::stream::iter(batches.clone())
                .map(|batch| async move {
                    match self.fetch_within(full, &batch, None).await? {
                        Fetched::Total(size) => Ok(size),
                        Fetched::Values(_) => Err(KvError::internal(
                            "redis MGET: values where only their size was asked for",
                        )),
                    }
                })
                .buffered(BATCH_CONCURRENCY)
                .try_collect()
                .await?;
            let total = sizes
                .iter()
                .fold(0usize, |sum, size| sum.saturating_add(*size));
            if total > max_bytes {
                return Err(batch_bytes_exceeded(max_bytes));
            }
            let slack = (max_bytes - total) / batches.len();
            sizes.into_iter().map(|size| size + slack).collect()
        } else {
            vec![max_bytes; batches.len()]
        };
        let parts: Vec<(Vec<usize>, Vec<Option<Vec<u8>>>)> =
            futures::stream::iter(batches.into_iter().zip(budgets))
                .map(|(batch, budget)| async move {
                    match self.fetch_within(full, &batch, Some(budget)).await? {
                        Fetched::Values(values) => Ok((batch, values)),
                        Fetched::Total(_) => Err(batch_bytes_exceeded(max_bytes)),
                    }
                })
                .buffer_unordered(BATCH_CONCURRENCY)
                .try_collect()
                .await?;
        let mut values = vec![None; keys.len()];
        for (batch, part) in parts {
            for (index, value) in batch.into_iter().zip(part) {
                values[index] = value;
            }
        }
        Ok(values)
    }

    async fn set_many(&self, entries: &[(String, Bytes)]) -> Result<()> {
        // For duplicate keys the last entry wins: keep only it, so batches never race.
        let kept = last_entry_per_key(entries);
        let full: Vec<Vec<u8>> = kept.iter().map(|(key, _)| self.key(key)).collect();
        futures::stream::iter(self.batches(&full))
            .map(|batch| async {
                let mut command = redis::cmd("MSET");
                for index in batch {
                    command.arg(&full[index]).arg(&kept[index].1[..]);
                }
                self.write::<()>("MSET", &command).await
            })
            .buffer_unordered(BATCH_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        let full: Vec<Vec<u8>> = keys.iter().map(|key| self.key(key)).collect();
        futures::stream::iter(self.batches(&full))
            .map(|batch| async {
                let mut command = redis::cmd("DEL");
                for index in batch {
                    command.arg(&full[index]);
                }
                self.write::<i64>("DEL", &command).await
            })
            .buffer_unordered(BATCH_CONCURRENCY)
            .try_collect::<Vec<i64>>()
            .await
            .map(drop)
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

    /// Every host process names a server the same way (replicas serving pages of one listing
    /// must agree), whatever its own fingerprint key: a fixed digest, the same in every build.
    #[test]
    fn node_ids_are_the_same_in_every_process() {
        assert_eq!(node_id(None, "abc"), 0xf05a_b010);
        assert_eq!(
            node_id(Some(("127.0.0.1", 7000)), "abc"),
            node_id(Some(("127.0.0.1", 7000)), "abc")
        );
        assert_ne!(node_id(None, "abc"), node_id(None, "abd"));
    }

    #[test]
    fn cursors_round_trip() {
        let server = |scan, seen: &[u64]| ListPosition {
            shard: None,
            node: None,
            scan,
            seen: seen.to_vec(),
        };
        assert_eq!(ListPosition::parse("17", false).unwrap(), server(17, &[]));
        let resumed = server(17, &[1, u64::MAX]);
        let text = resumed.to_string();
        assert_eq!(text.len(), "17~".len() + 8 + 2 * 16, "{text}");
        assert_eq!(ListPosition::parse(&text, false).unwrap(), resumed);
        let on_shard = ListPosition {
            shard: Some(5461),
            node: None,
            scan: 17,
            seen: vec![fingerprint(b"a"), fingerprint(b"b")],
        };
        let text = on_shard.to_string();
        assert!(text.starts_with("5461:17~"), "{text}");
        assert_eq!(ListPosition::parse(&text, true).unwrap(), on_shard);
        let on_node = ListPosition {
            node: Some(0xdead_beef),
            ..on_shard
        };
        let text = on_node.to_string();
        assert!(text.starts_with("5461.deadbeef:17~"), "{text}");
        assert_eq!(ListPosition::parse(&text, true).unwrap(), on_node);
        assert_eq!(server(9, &[]).to_string(), "9");
        // One server, named by its process.
        let on_server = ListPosition {
            node: Some(0xdead_beef),
            ..server(17, &[3])
        };
        let text = on_server.to_string();
        assert!(text.starts_with(".deadbeef:17~"), "{text}");
        assert_eq!(ListPosition::parse(&text, false).unwrap(), on_server);
        assert!(ListPosition::parse(".xyz:17", false).is_err());
        // The earlier `+<skip>` form, and another process's fingerprints, skip nothing.
        assert_eq!(
            ListPosition::parse("17+40", false).unwrap(),
            server(17, &[])
        );
        let other_key = format!("{:08x}", fingerprint_key_id() ^ 1);
        let foreign = format!("17~{other_key}{:016x}", 5u64);
        assert_eq!(
            ListPosition::parse(&foreign, false).unwrap(),
            server(17, &[])
        );
        let too_many = format!("17~{other_key}{}", "0".repeat(16 * (MAX_SEEN + 1)));
        let key = format!("{:08x}", fingerprint_key_id());
        for bad in [
            "x",
            "1:2",
            "17+x",
            "17+-1",
            "17~",
            &format!("17~{key}"),
            &format!("17~{key}123"),
            &format!("17~{key}{}", "g".repeat(16)),
            &format!("17~{key}+{}", "0".repeat(15)),
            &format!("x~{key}{}", "0".repeat(16)),
            &format!("17~{}{}", "é".repeat(4), "0".repeat(16)),
            &too_many,
        ] {
            assert!(ListPosition::parse(bad, false).is_err(), "{bad}");
        }
        for bad in ["17", "a:1", "1:x"] {
            assert!(ListPosition::parse(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_keys_share_the_data_keys_slot() {
        for key in [
            &b"wasi-kv/1/a/k"[..],
            b"wasi-kv/1/a/{x}",
            b"wasi-kv/2/{}/}{",
        ] {
            for request_key in request_keys(key) {
                assert_eq!(key_slot(request_key.as_bytes()), key_slot(key));
                assert!(request_key.starts_with("wasi-kv-requests/{"));
                assert!(!request_key.starts_with("wasi-kv/"));
            }
        }
    }
}
