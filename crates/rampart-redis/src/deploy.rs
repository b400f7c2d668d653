//! The Redis half of a deployment, set up in one place: connect, guard
//! every call, subscribe to notices over every node, and attach the tier
//! and lease to each cache under a namespace. The server and the tests
//! build their caches through this, so they run what production runs.
//!
//! ```no_run
//! # async fn demo(loader: impl rampart::Loader<u64, bytes::Bytes>) -> Result<(), rampart::Error> {
//! use std::time::Duration;
//! use rampart::breaker::{BreakerConfig, CircuitBreaker};
//! use rampart::cache::{CacheConfig, TieredCache};
//! use rampart_redis::deploy::{local_cache, RedisDeployment, TierOptions};
//!
//! let urls = vec!["redis://127.0.0.1:6379/".to_owned()];
//! let breaker = CircuitBreaker::new("redis", BreakerConfig::default());
//! let redis = RedisDeployment::connect(&urls, Duration::from_millis(250), breaker, "prod").await?;
//! let config = CacheConfig::default();
//! let users = redis
//!     .attach(TieredCache::builder("users", loader).config(config.clone()), "users", &config, TierOptions::default())
//!     .build()?;
//! redis.wire_notices([("users".to_owned(), local_cache(users.clone(), |raw| raw.parse().ok()))]);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rampart::breaker::CircuitBreaker;
use rampart::cache::{CacheConfig, TieredCache, TieredCacheBuilder};
use rampart::Error;

use crate::bounds::max_entry_life;
use crate::conn::{GuardedRedis, RedisConn};
use crate::lease::RedisLease;
use crate::notices::Notices;
use crate::tier::RedisTier;

/// How a cache uses the shared tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierOptions {
    /// Copies of every entry (hot-key splitting); at least 1.
    pub replicas: u32,
    /// The cross-process lease's length, or `None` for no lease (each
    /// process then loads a cold key once on its own).
    pub lease_ttl: Option<Duration>,
}

impl Default for TierOptions {
    fn default() -> Self {
        TierOptions {
            replicas: 1,
            lease_ttl: Some(Duration::from_secs(10)),
        }
    }
}

/// A process's connection to Redis, its notice subscriber and the
/// namespace its resources live under. Cheap to clone.
#[derive(Clone)]
pub struct RedisDeployment {
    redis: GuardedRedis,
    notices: Notices,
    namespace: String,
}

impl RedisDeployment {
    /// Connects to `urls` (one node, or Cluster seed nodes), with every
    /// call bounded by `timeout` and guarded by `breaker`, and starts the
    /// notice subscriber over all of `urls`. Resources are named
    /// `<namespace>:<resource>` in Redis.
    pub async fn connect(
        urls: &[String],
        timeout: Duration,
        breaker: CircuitBreaker,
        namespace: impl Into<String>,
    ) -> Result<RedisDeployment, Error> {
        let conn = RedisConn::connect(urls).await?;
        Ok(RedisDeployment {
            redis: GuardedRedis::new(conn, breaker, timeout),
            notices: Notices::start(urls, timeout)?,
            namespace: namespace.into(),
        })
    }

    /// The guarded connection.
    pub fn redis(&self) -> &GuardedRedis {
        &self.redis
    }

    /// The notice subscriber (its state is for metrics and readiness).
    pub fn notices(&self) -> &Notices {
        &self.notices
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A resource's name in Redis: `<namespace>:<resource>`.
    pub fn scoped(&self, resource: &str) -> String {
        format!("{}:{resource}", self.namespace)
    }

    /// Puts `resource`'s Redis tier (and lease, per `options`) on
    /// `builder`. `config` must be the settings the cache is built with:
    /// the tier's bookkeeping keys expire after the longest entry life they
    /// imply.
    pub fn attach<K>(
        &self,
        builder: TieredCacheBuilder<K, Bytes>,
        resource: &str,
        config: &CacheConfig,
        options: TierOptions,
    ) -> TieredCacheBuilder<K, Bytes>
    where
        K: Hash + Eq + Clone + Display + Send + Sync + 'static,
    {
        let name = self.scoped(resource);
        let life = max_entry_life(config);
        let builder = builder.tier(Arc::new(
            RedisTier::<K>::new(self.redis.clone(), name.clone(), life).replicas(options.replicas),
        ));
        match options.lease_ttl {
            Some(ttl) => builder.lease(Arc::new(RedisLease::<K>::new(
                self.redis.clone(),
                name,
                ttl,
                life,
                self.notices.clone(),
            ))),
            None => builder,
        }
    }

    /// Routes the notices to the caches' L1: an invalidation heard drops
    /// the key from the cache of its resource (by unscoped name, as given
    /// to [`attach`](Self::attach)); a gap clears every L1 (its entries
    /// may have missed an invalidation, and are revalidated against
    /// Redis). Call once with every cache: a later call replaces the
    /// routes.
    pub fn wire_notices(&self, caches: impl IntoIterator<Item = (String, Arc<dyn LocalCache>)>) {
        let by_name: Arc<HashMap<String, Arc<dyn LocalCache>>> = Arc::new(
            caches
                .into_iter()
                .map(|(resource, cache)| (self.scoped(&resource), cache))
                .collect(),
        );
        let routes = Arc::clone(&by_name);
        self.notices.on_invalidate(move |resource, raw| {
            if let Some(cache) = routes.get(resource) {
                cache.invalidate_raw(raw);
            }
        });
        self.notices.on_gap(move || {
            tracing::warn!("redis notices may have been missed; clearing L1 so keys revalidate");
            for cache in by_name.values() {
                cache.clear();
            }
        });
    }
}

/// A cache's L1 as the notices reach it: keys arrive as text.
pub trait LocalCache: Send + Sync {
    /// Drops the key written as `raw` (ignored if it does not parse).
    fn invalidate_raw(&self, raw: &str);
    /// Drops every key.
    fn clear(&self);
}

/// `cache` as a [`LocalCache`], its keys parsed by `parse`.
pub fn local_cache<K, V>(
    cache: TieredCache<K, V>,
    parse: impl Fn(&str) -> Option<K> + Send + Sync + 'static,
) -> Arc<dyn LocalCache>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Arc::new(Parsed { cache, parse })
}

struct Parsed<K, V, P> {
    cache: TieredCache<K, V>,
    parse: P,
}

impl<K, V, P> LocalCache for Parsed<K, V, P>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    P: Fn(&str) -> Option<K> + Send + Sync,
{
    fn invalidate_raw(&self, raw: &str) {
        if let Some(key) = (self.parse)(raw) {
            self.cache.invalidate_local(&key);
        }
    }

    fn clear(&self) {
        self.cache.clear_local();
    }
}
