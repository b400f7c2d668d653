//! One connection type for a single Redis node or a Redis Cluster, so the
//! tier and the lease are written once. Both variants are multiplexed and
//! reconnect on their own: cheap to clone, no pool needed (nothing here
//! uses blocking commands).

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use std::time::Duration;

use rampart::Error;

use crate::breakers::NodeBreakers;

/// A connection to a node or a cluster.
#[derive(Clone)]
pub enum RedisConn {
    /// One node, behind a reconnecting manager.
    Single(ConnectionManager),
    /// A cluster; commands are routed by key slot.
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Connects to `urls`: one URL is a single node, several are cluster
    /// seed nodes. A single node is connected lazily, so a process starts
    /// (and serves from its source) while Redis is down, and picks Redis up
    /// when it comes.
    pub async fn connect(urls: &[String]) -> Result<RedisConn, Error> {
        match urls {
            [] => Err(Error::invalid_config("redis: no URL given")),
            [url] => {
                let client = redis::Client::open(url.as_str()).map_err(Error::tier)?;
                // The client's default reconnect back-off doubles from
                // 100 ms to 6.4 s: after an outage of a few seconds, writes
                // kept failing for seconds after Redis was back (measured
                // 1.7 s after a 12 s outage, 5.7 s in a review). A cap of
                // 250 ms costs a dead Redis four connect attempts a second
                // per process, which is nothing, and the breaker in front
                // keeps callers from waiting on them.
                let reconnect = redis::aio::ConnectionManagerConfig::new()
                    .set_min_delay(Duration::from_millis(25))
                    .set_max_delay(Duration::from_millis(250))
                    .set_connection_timeout(Some(Duration::from_secs(1)));
                let manager = client
                    .get_connection_manager_lazy(reconnect)
                    .map_err(Error::tier)?;
                Ok(RedisConn::Single(manager))
            }
            nodes => {
                let client = redis::cluster::ClusterClient::new(nodes.iter().map(String::as_str))
                    .map_err(Error::tier)?;
                let connection = client.get_async_connection().await.map_err(Error::tier)?;
                Ok(RedisConn::Cluster(connection))
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// A connection with the two defences every Redis call here gets: a
/// timeout, and a circuit breaker per node (see [`NodeBreakers`]) so that
/// a dead or stalled node costs the callers of its slots nothing but a
/// fast `ErrorKind::Tier` until it is back, and the other nodes' callers
/// nothing at all.
#[derive(Clone)]
pub struct GuardedRedis {
    conn: RedisConn,
    breakers: NodeBreakers,
    timeout: std::time::Duration,
}

impl GuardedRedis {
    /// Guards `conn` with a per-call `timeout` and `breaker`: for a single
    /// node, `breaker` is the one breaker; for a Cluster, every node gets a
    /// breaker of its own with `breaker`'s settings (named
    /// `<name>@<host:port>`), following the slot map (needs a tokio
    /// runtime for that; without one, `breaker` judges every call).
    pub fn new(
        conn: RedisConn,
        breaker: rampart::breaker::CircuitBreaker,
        timeout: std::time::Duration,
    ) -> GuardedRedis {
        let breakers = NodeBreakers::new(breaker);
        breakers.watch(conn.clone(), timeout);
        GuardedRedis {
            conn,
            breakers,
            timeout,
        }
    }

    /// The breakers (for metrics and operators).
    pub fn breakers(&self) -> &NodeBreakers {
        &self.breakers
    }

    /// Runs one Redis call on the keys of `slot` (see
    /// [`slot_of`](crate::breakers::slot_of)) through the breaker of the
    /// node that serves it, bounded by the timeout: the library's
    /// [`Guarded`](rampart::guarded::Guarded) call, as the cache's loads
    /// are, so both count failures the same way.
    pub async fn call<T, F, Fut>(&self, slot: u16, call: F) -> Result<T, Error>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn.clone();
        let breaker = self.breakers.for_slot(slot);
        rampart::guarded::Guarded::new(self.timeout)
            .breaker(&breaker)
            .call(
                async move { call(conn).await.map_err(Error::tier) },
                |waited| Error::tier(format!("redis did not answer within {waited:?}")),
            )
            .await
    }
}
