//! One connection type for a single Redis node or a Redis Cluster, so the
//! tier and the lease are written once. Both variants are multiplexed and
//! reconnect on their own: cheap to clone, no pool needed (nothing here
//! uses blocking commands).

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use std::time::Duration;

use rampart::Error;

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
/// timeout, and a circuit breaker so that a dead or stalled Redis costs
/// callers nothing but a fast `ErrorKind::Tier` until it is back.
#[derive(Clone)]
pub struct GuardedRedis {
    conn: RedisConn,
    breaker: rampart::breaker::CircuitBreaker,
    timeout: std::time::Duration,
}

impl GuardedRedis {
    /// Guards `conn` with `breaker` and a per-call `timeout`.
    pub fn new(
        conn: RedisConn,
        breaker: rampart::breaker::CircuitBreaker,
        timeout: std::time::Duration,
    ) -> GuardedRedis {
        GuardedRedis {
            conn,
            breaker,
            timeout,
        }
    }

    /// The breaker (for metrics and operators).
    pub fn breaker(&self) -> &rampart::breaker::CircuitBreaker {
        &self.breaker
    }

    /// Runs one Redis call through the breaker, bounded by the timeout: the
    /// library's [`Guarded`](rampart::guarded::Guarded) call, as the cache's
    /// loads are, so both count failures the same way.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn.clone();
        rampart::guarded::Guarded::new(self.timeout)
            .breaker(&self.breaker)
            .call(
                async move { call(conn).await.map_err(Error::tier) },
                |waited| Error::tier(format!("redis did not answer within {waited:?}")),
            )
            .await
    }
}
