//! Building the connection: one `ConnectionManager` (multiplexed, reconnecting) per server.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use crate::config::RedisConfig;
use kv_core::ConfigError;

/// A lazily connecting manager: an unreachable server shows up as `unavailable` on the first
/// operation, and a restarted server is reconnected to transparently.
pub fn connect(config: &RedisConfig) -> Result<ConnectionManager, ConfigError> {
    let addr = if config.tls {
        ConnectionAddr::TcpTls {
            host: config.host.clone(),
            port: config.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(config.host.clone(), config.port)
    };
    let mut redis = RedisConnectionInfo::default().set_db(config.db);
    if let Some(username) = &config.username {
        redis = redis.set_username(username.clone());
    }
    if let Some(password) = &config.password {
        redis = redis.set_password(password.expose());
    }
    let info: ConnectionInfo = addr
        .into_connection_info()
        .map_err(|err| ConfigError(format!("redis: {err}")))?
        .set_redis_settings(redis);
    let client = redis::Client::open(info).map_err(|err| ConfigError(format!("redis: {err}")))?;
    let manager_config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout));
    ConnectionManager::new_lazy_with_config(client, manager_config)
        .map_err(|err| ConfigError(format!("redis: {err}")))
}
