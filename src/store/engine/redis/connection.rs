//! One connection type for a single Redis (or Valkey) primary and for a Redis Cluster, so the
//! backend's commands are written once.
//!
//! - `Single`: redis-rs's `ConnectionManager`, one multiplexed connection that reconnects.
//! - `Cluster`: redis-rs's async `ClusterConnection`, which follows the slot map, redirections
//!   and failovers by itself. Every command or script the backend sends names keys of one hash
//!   slot (see the key layout in `redis`), except MGET of metadata, which the client
//!   splits per slot, and SCAN, which has no key: it is sent to every primary in turn
//!   (`primaries` and `scan_node`).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use zeroize::Zeroizing;

#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// Connection-level limits: beyond them a call fails and the backend's own (shorter) timeout
/// has usually given up already.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Connection {
    /// Connects to one primary at `url`.
    pub async fn single(url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        Ok(Self::Single(ConnectionManager::new_with_config(client, config).await?))
    }

    /// Connects to the cluster that `nodes` belong to (any reachable one is enough to learn
    /// the others). Passwords and TLS come from the URLs, as for one primary.
    pub async fn cluster(nodes: &[Zeroizing<String>]) -> redis::RedisResult<Self> {
        let client = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(|n| n.as_str()))
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(2)
            .max_retry_wait(500)
            .build()?;
        Ok(Self::Cluster(client.get_async_connection().await?))
    }

    /// The primaries to SCAN, as `host:port`; `None` for a single primary (the connection's own).
    pub async fn primaries(&mut self) -> redis::RedisResult<Option<Vec<(String, u16)>>> {
        let Self::Cluster(conn) = self else { return Ok(None) };
        // Without a response policy, the client answers a multi-node command with a map of
        // node address to that node's reply.
        let reply = conn
            .route_command(redis::cmd("PING"), RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)))
            .await?;
        let Value::Map(replies) = reply else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the cluster did not say which primaries it has",
            )));
        };
        let mut nodes = Vec::new();
        for (address, _) in replies {
            let address: String = redis::from_redis_value(address)?;
            let node = address.rsplit_once(':').and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)));
            match node {
                Some(node) => nodes.push(node),
                None => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "a cluster node address is not host:port",
                        address,
                    )));
                }
            }
        }
        nodes.sort();
        Ok(Some(nodes))
    }

    /// One SCAN step on `node` (a primary from `primaries`), or on the single primary.
    pub async fn scan_node(
        &mut self,
        node: Option<&(String, u16)>,
        scan: Cmd,
    ) -> redis::RedisResult<(u64, Vec<String>)> {
        match (self, node) {
            (Self::Cluster(conn), Some((host, port))) => {
                let routing =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
                Ok(redis::from_redis_value(conn.route_command(scan, routing).await?)?)
            }
            (conn, _) => scan.query_async(conn).await,
        }
    }

    /// `CONFIG GET <name>` on every primary: each node's value (one for a single primary).
    pub async fn config_get(&mut self, name: &str) -> redis::RedisResult<Vec<String>> {
        let mut get = redis::cmd("CONFIG");
        get.arg("GET").arg(name);
        let pair = |v: Value| -> redis::RedisResult<Option<String>> {
            let reply: Vec<String> = redis::from_redis_value(v)?;
            Ok(reply.get(1).cloned())
        };
        match self {
            Self::Single(conn) => Ok(pair(get.query_async(conn).await?)?.into_iter().collect()),
            Self::Cluster(conn) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let Value::Map(replies) = conn.route_command(get, routing).await? else { return Ok(Vec::new()) };
                let mut values = Vec::new();
                for (_, reply) in replies {
                    values.extend(pair(reply)?);
                }
                Ok(values)
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
