//! Building the connection: one `ConnectionManager` (multiplexed, reconnecting) per server, or
//! one cluster connection (a multiplexed connection per node, slots discovered from the seed
//! nodes and refreshed on `MOVED`) per cluster.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisConnectionInfo,
    RedisFuture, RedisResult, Value,
};

use std::sync::{Arc, RwLock};

use crate::config::RedisConfig;
use kv_core::ConfigError;

/// Redirections (`MOVED`, `ASK`) and reconnections the cluster client follows within one
/// call; longer outages are the host's retry layer's to handle.
const CLUSTER_RETRIES: u32 = 4;

/// A connection to one server or to a cluster; commands are routed by their first key.
#[derive(Clone)]
pub enum RedisConnection {
    /// One server.
    Server(Arc<ServerConnection>),
    /// A Redis Cluster, and how to reach one of its nodes on its own (keyspace notifications
    /// are each node's).
    Cluster(ClusterConnection, Arc<RedisConfig>),
}

/// One server's multiplexed connection, replaced by a new one when a command gets no reply in
/// time. redis-rs reconnects on I/O errors but keeps a connection whose replies stopped (a
/// half-open TCP connection, a partition that swallows requests): every later command on it
/// would time out too, for as long as the connection stays open (found by `wasi-kv check`'s
/// partition nemesis: 115 s of timeouts after the partition healed).
pub struct ServerConnection {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// How long a command may wait before its connection counts as stuck when the command is
    /// given up (dropped by the host's operation timeout, which may fire before redis-rs's).
    stuck_after: std::time::Duration,
    /// The connection and its generation (how many times it was replaced).
    current: RwLock<(u64, ConnectionManager)>,
}

impl ServerConnection {
    fn current(&self) -> (u64, ConnectionManager) {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces generation `seen` after one of its commands timed out (once: commands that
    /// timed out on the same connection do not replace its successor).
    fn replace_after_timeout(&self, seen: u64) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.0 != seen {
            return;
        }
        if let Ok(fresh) =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
        {
            *current = (seen + 1, fresh);
        }
    }

    async fn run<T>(
        &self,
        send: impl AsyncFnOnce(&mut ConnectionManager) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let (generation, mut manager) = self.current();
        let watch = GivenUp {
            server: self,
            generation,
            since: std::time::Instant::now(),
        };
        let result = send(&mut manager).await;
        std::mem::forget(watch);
        if let Err(err) = &result
            && err.is_timeout()
        {
            self.replace_after_timeout(generation);
        }
        result
    }
}

/// Replaces the connection when its command is dropped unanswered after waiting
/// [`ServerConnection::stuck_after`]: the host's operation timeout gave up first.
struct GivenUp<'a> {
    server: &'a ServerConnection,
    generation: u64,
    since: std::time::Instant,
}

impl Drop for GivenUp<'_> {
    fn drop(&mut self) {
        if self.since.elapsed() >= self.server.stuck_after {
            self.server.replace_after_timeout(self.generation);
        }
    }
}

/// A healthy server answers in milliseconds; a command unanswered this long and given up means
/// the connection is not worth keeping.
const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Lazily connecting: an unreachable server shows up as `unavailable` on the first operation,
/// and a restarted server (or a promoted replica) is reconnected to transparently.
pub fn connect(config: &RedisConfig) -> Result<RedisConnection, ConfigError> {
    let error = |err: redis::RedisError| ConfigError(format!("redis: {err}"));
    if config.cluster {
        let mut builder = ClusterClientBuilder::new(
            config
                .seed_nodes()
                .into_iter()
                .map(|(host, port)| node_info(config, host, port))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(10)
        .max_retry_wait(250)
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.response_timeout);
        if let Some(username) = &config.username {
            builder = builder.username(username);
        }
        if let Some(password) = &config.password {
            builder = builder.password(password.expose());
        }
        let client = builder.build().map_err(error)?;
        let cluster_config = ClusterConfig::new()
            .set_connection_timeout(config.connect_timeout)
            .set_response_timeout(config.response_timeout);
        return Ok(RedisConnection::Cluster(
            client.get_pending_async_connection_with_config(cluster_config),
            Arc::new(config.clone()),
        ));
    }
    let info = node_info(config, config.host.clone(), config.port)?;
    let client = redis::Client::open(info).map_err(error)?;
    let manager_config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout));
    let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
        .map_err(error)?;
    Ok(RedisConnection::Server(Arc::new(ServerConnection {
        client,
        config: manager_config,
        stuck_after: STUCK_AFTER.min(config.response_timeout),
        current: RwLock::new((0, manager)),
    })))
}

fn node_info(config: &RedisConfig, host: String, port: u16) -> Result<ConnectionInfo, ConfigError> {
    let addr = if config.tls {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    };
    let mut redis = RedisConnectionInfo::default().set_db(config.db);
    if let Some(username) = &config.username {
        redis = redis.set_username(username.clone());
    }
    if let Some(password) = &config.password {
        redis = redis.set_password(password.expose());
    }
    Ok(addr
        .into_connection_info()
        .map_err(|err| ConfigError(format!("redis: {err}")))?
        .set_redis_settings(redis))
}

impl RedisConnection {
    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConnection::Cluster(..))
    }

    /// Sends `command` to the primary serving `slot` (on one server: to the server).
    pub async fn send_to_slot(&self, slot: u16, command: Cmd) -> RedisResult<Value> {
        match self {
            RedisConnection::Server(server) => {
                server
                    .run(async |manager| command.query_async(manager).await)
                    .await
            }
            RedisConnection::Cluster(cluster, _) => {
                let route = Route::new(slot, SlotAddr::Master);
                cluster
                    .clone()
                    .route_command(
                        command,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await
            }
        }
    }

    /// Sends `pipeline` (of `count` commands) to the node at `host:port` and only to it (on one
    /// server: to the server), in order on one connection: every command of it reaches the
    /// same server process, since a process that restarts drops its connections. What answers
    /// for the node it reaches (`SCAN`) must not fall back to another one while that node is
    /// down, as slot routing does (to a replica, then to any node).
    pub async fn pipeline_to_node(
        &self,
        node: Option<(&str, u16)>,
        pipeline: Pipeline,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match (self, node) {
            (RedisConnection::Server(server), _) => {
                server
                    .run(async |manager| pipeline.query_async(manager).await)
                    .await
            }
            (RedisConnection::Cluster(cluster, _), Some((host, port))) => {
                cluster
                    .clone()
                    .route_pipeline(
                        pipeline,
                        0,
                        count,
                        SingleNodeRoutingInfo::ByAddress {
                            host: host.to_string(),
                            port,
                        },
                    )
                    .await
            }
            (RedisConnection::Cluster(..), None) => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "a cluster pipeline needs a node",
            ))),
        }
    }

    /// The cluster's shards, each named by the lowest slot its primary serves, in slot order
    /// (`CLUSTER SLOTS`); empty on one server.
    pub async fn shards(&self) -> RedisResult<Vec<Shard>> {
        let RedisConnection::Cluster(cluster, _) = self else {
            return Ok(Vec::new());
        };
        let reply = cluster
            .clone()
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        Ok(shard_starts(reply))
    }
}

impl RedisConnection {
    /// The clients to subscribe with for keyspace notifications, each node's own: the one
    /// server, or every primary of a cluster now (`CLUSTER SLOTS`), named by address.
    pub async fn subscribers(&self) -> RedisResult<Vec<(String, redis::Client)>> {
        match self {
            RedisConnection::Server(server) => {
                Ok(vec![("server".to_string(), server.client.clone())])
            }
            RedisConnection::Cluster(_, config) => {
                let mut clients = Vec::new();
                for shard in self.shards().await? {
                    let info =
                        node_info(config, shard.host.clone(), shard.port).map_err(|err| {
                            redis::RedisError::from((
                                redis::ErrorKind::Client,
                                "node address",
                                err.0,
                            ))
                        })?;
                    let client = redis::Client::open(info)?;
                    clients.push((format!("{}:{}", shard.host, shard.port), client));
                }
                if clients.is_empty() {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "the cluster lists no primaries",
                    )));
                }
                Ok(clients)
            }
        }
    }

    /// The `maxmemory-policy` of the server, or of every primary of a cluster: by
    /// `CONFIG GET`, or, where `CONFIG` is denied or renamed (as on managed services), from
    /// `INFO memory`.
    pub async fn eviction_policies(&self) -> RedisResult<Vec<String>> {
        let targets = match self {
            RedisConnection::Server(_) => vec![0],
            RedisConnection::Cluster(..) => self
                .shards()
                .await?
                .into_iter()
                .map(|shard| shard.slot)
                .collect(),
        };
        let mut policies = Vec::with_capacity(targets.len());
        for slot in targets {
            let mut config = redis::cmd("CONFIG");
            config.arg("GET").arg("maxmemory-policy");
            let from_config = self.send_to_slot(slot, config).await.ok();
            let policy = match from_config.and_then(config_policy) {
                Some(policy) => policy,
                None => {
                    let mut info = redis::cmd("INFO");
                    info.arg("memory");
                    let reply = self.send_to_slot(slot, info).await?;
                    redis::from_redis_value::<String>(reply)
                        .ok()
                        .and_then(|text| info_policy(&text))
                        .ok_or_else(|| {
                            redis::RedisError::from((
                                redis::ErrorKind::Parse,
                                "INFO memory has no maxmemory_policy",
                            ))
                        })?
                }
            };
            policies.push(policy);
        }
        Ok(policies)
    }
}

/// The policy in a `CONFIG GET maxmemory-policy` reply (a name-value array, or a map).
fn config_policy(reply: Value) -> Option<String> {
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    };
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Map(pairs) => pairs,
        Value::Array(items) => {
            let mut items = items.into_iter();
            std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
        }
        _ => return None,
    };
    pairs
        .iter()
        .find(|(name, _)| text(name).as_deref() == Some("maxmemory-policy"))
        .and_then(|(_, policy)| text(policy))
}

/// The `maxmemory_policy:` line of an `INFO memory` reply.
fn info_policy(info: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("maxmemory_policy:"))
        .map(|policy| policy.trim().to_string())
        .filter(|policy| !policy.is_empty())
}

/// One primary of a cluster: named by the lowest slot it serves, reached at its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The lowest slot the primary serves.
    pub slot: u16,
    /// Its host, as the cluster announces it.
    pub host: String,
    /// Its port.
    pub port: u16,
}

/// From a `CLUSTER SLOTS` reply (`[start, end, [host, port, id, …], replicas…]` per range),
/// each primary with the lowest slot it serves, sorted by that slot.
fn shard_starts(reply: Value) -> Vec<Shard> {
    let mut lowest: std::collections::BTreeMap<(Vec<u8>, i64), u16> = Default::default();
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    for range in ranges {
        let Value::Array(fields) = range else {
            continue;
        };
        let (Some(Value::Int(start)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(2))
        else {
            continue;
        };
        let (Some(Value::BulkString(host)), Some(Value::Int(port))) =
            (primary.first(), primary.get(1))
        else {
            continue;
        };
        let Ok(start) = u16::try_from(*start) else {
            continue;
        };
        let slot = lowest.entry((host.clone(), *port)).or_insert(start);
        *slot = (*slot).min(start);
    }
    let mut shards: Vec<Shard> = lowest
        .into_iter()
        .filter_map(|((host, port), slot)| {
            Some(Shard {
                slot,
                host: String::from_utf8(host).ok()?,
                port: u16::try_from(port).ok()?,
            })
        })
        .collect();
    shards.sort_by_key(|shard| shard.slot);
    shards
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Server(server) => Box::pin(async move {
                server
                    .run(async |manager| manager.req_packed_command(cmd).await)
                    .await
            }),
            RedisConnection::Cluster(cluster, _) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Server(server) => Box::pin(async move {
                server
                    .run(async |manager| manager.req_packed_commands(pipeline, offset, count).await)
                    .await
            }),
            RedisConnection::Cluster(cluster, _) => {
                cluster.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Server(server) => server.current().1.get_db(),
            RedisConnection::Cluster(cluster, _) => cluster.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.into()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn eviction_policies_are_read_from_config_or_info() {
        let bulk = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        let array = Value::Array(vec![bulk("maxmemory-policy"), bulk("volatile-lru")]);
        assert_eq!(config_policy(array).as_deref(), Some("volatile-lru"));
        let map = Value::Map(vec![(bulk("maxmemory-policy"), bulk("allkeys-lfu"))]);
        assert_eq!(config_policy(map).as_deref(), Some("allkeys-lfu"));
        assert_eq!(config_policy(Value::Array(vec![])), None);
        assert_eq!(config_policy(Value::Nil), None);
        let info = "# Memory\r\nused_memory:1\r\nmaxmemory_policy:noeviction\r\n";
        assert_eq!(info_policy(info).as_deref(), Some("noeviction"));
        assert_eq!(info_policy("# Memory\r\nused_memory:1\r\n"), None);
    }

    #[test]
    fn shards_are_named_by_their_lowest_slot() {
        let range = |start: i64, end: i64, primary: Value| {
            Value::Array(vec![
                Value::Int(start),
                Value::Int(end),
                primary,
                node("r", 1),
            ])
        };
        let reply = Value::Array(vec![
            range(10923, 16383, node("c", 3)),
            range(0, 5460, node("a", 1)),
            range(5461, 10000, node("b", 2)),
            range(10001, 10922, node("a", 1)),
        ]);
        let shards = shard_starts(reply);
        let named: Vec<(u16, &str, u16)> = shards
            .iter()
            .map(|s| (s.slot, s.host.as_str(), s.port))
            .collect();
        assert_eq!(named, [(0, "a", 1), (5461, "b", 2), (10923, "c", 3)]);
        assert!(shard_starts(Value::Nil).is_empty());
    }
}
