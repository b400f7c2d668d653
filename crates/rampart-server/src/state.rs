//! What every handler shares: the resources and their caches, metrics, the
//! pressure signals and readiness. Passed explicitly as axum state; no
//! handler touches raw shared maps.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use rampart::breaker::{CircuitBreaker, State as BreakerState};
use rampart::cache::{LocalLease, MemoryTier, TieredCache};
use rampart::limit::Bulkhead;
use rampart::warm::WarmProgress;
use sqlx::AnyPool;

use crate::config::{Config, ResourceConfig};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::pressure::{ForegroundLatency, SourcePressure};
use crate::readiness::Readiness;
use crate::source::{Key, PoolWait, SqlLoader};
use crate::start_error::StartError;
use rampart_redis::deploy::{local_cache, LocalCache, RedisDeployment, TierOptions};

/// The Redis side shared by every resource of a process: the guarded
/// connection, the notice subscriber (over every configured URL) and the
/// namespace, all set up by [`RedisDeployment`].
#[derive(Clone)]
pub struct SharedRedis(RedisDeployment);

impl std::ops::Deref for SharedRedis {
    type Target = RedisDeployment;

    fn deref(&self) -> &RedisDeployment {
        &self.0
    }
}

impl SharedRedis {
    /// Connects per `config.redis` (None when no URL is configured).
    pub async fn connect(config: &Config) -> Result<Option<SharedRedis>, StartError> {
        if config.redis.urls.is_empty() {
            return Ok(None);
        }
        let breaker = CircuitBreaker::new("redis", config.redis.breaker.clone());
        let deployment = RedisDeployment::connect(
            &config.redis.urls,
            config.redis.timeout,
            breaker,
            config.redis.namespace.clone(),
        )
        .await?;
        Ok(Some(SharedRedis(deployment)))
    }

    /// Invalidations heard on the bus drop the key from this process's L1;
    /// after a gap in the subscription every L1 is suspect and cleared
    /// (keys are then revalidated against Redis).
    fn wire_notices(&self, resources: &HashMap<String, Arc<Resource>>) {
        self.0.wire_notices(resources.iter().map(|(name, r)| {
            let key_type = r.config.key_type;
            let cache: Arc<dyn LocalCache> =
                local_cache(r.cache.clone(), move |raw| Key::parse(key_type, raw).ok());
            (name.clone(), cache)
        }));
    }
}

/// One served resource.
pub struct Resource {
    pub config: ResourceConfig,
    pub cache: TieredCache<Key, Bytes>,
    pub warm: Arc<WarmProgress>,
}

/// The service's shared state. One `Arc` around it all: axum clones the
/// state for every request, and each clone is an atomic increment on a
/// shared cache line — one, not seven (measured: BENCHMARKS.md, HTTP).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares.
pub struct Shared {
    pub config: Arc<Config>,
    pub resources: Arc<HashMap<String, Arc<Resource>>>,
    pub metrics: Arc<Metrics>,
    pub pool: AnyPool,
    pub pressure: Arc<SourcePressure>,
    pub readiness: Arc<Readiness>,
    /// The shared tier's connection, when Redis is configured.
    pub redis: Option<SharedRedis>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Everything `serve` and `warm` start from: the source pool (with the
    /// demo data when the database is the embedded one), Redis if
    /// configured, and a cache per resource.
    pub async fn open(config: Config) -> Result<Self, StartError> {
        let pool = crate::source::connect(&config).await?;
        if config.is_embedded_database() && config.demo_rows > 0 {
            crate::demo::ensure(&pool, &config.database_url(), config.demo_rows, false).await?;
        }
        let redis = SharedRedis::connect(&config).await?;
        Self::new(config, pool, redis)
    }

    /// Builds a cache per resource over `pool`, sharing `redis` (the L2
    /// tier, leases and notices) when given.
    pub fn new(
        config: Config,
        pool: AnyPool,
        redis: Option<SharedRedis>,
    ) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::default());
        let pool_wait = Arc::new(PoolWait::default());
        let foreground = Arc::new(ForegroundLatency::new(
            config.warmup.pressure_foreground_p99,
        ));
        let pressure = Arc::new(SourcePressure {
            pool_wait: Arc::clone(&pool_wait),
            pool_wait_limit: config.warmup.pressure_pool_wait,
            foreground,
        });
        let mut resources = HashMap::new();
        for resource in &config.resources {
            let breaker = CircuitBreaker::new(resource.name.as_str(), resource.breaker.clone());
            count_transitions(&breaker, &metrics);
            let bulkhead = Bulkhead::new(resource.name.as_str(), resource.bulkhead.clone());
            let loader = SqlLoader::new(
                resource,
                pool.clone(),
                Arc::clone(&metrics),
                Arc::clone(&pool_wait),
            );
            let mut builder = TieredCache::builder(resource.name.as_str(), loader)
                .config(resource.cache.clone())
                .breaker(Some(breaker))
                .bulkhead(Some(bulkhead));
            if let Some(shared) = &redis {
                // The tier's bookkeeping keys expire after the longest
                // life these settings give an entry.
                builder = shared.attach(
                    builder,
                    &resource.name,
                    &resource.cache,
                    TierOptions {
                        replicas: resource.replicas,
                        lease_ttl: config.redis.leases.then_some(config.redis.lease_ttl),
                    },
                );
            } else if resource.l2_capacity > 0 {
                // In-process L2 and lease: the embedded deployment's stand-ins
                // for Redis, with the same contracts.
                builder = builder
                    .tier(Arc::new(MemoryTier::new(resource.l2_capacity)))
                    .lease(Arc::new(LocalLease::<Key>::new(
                        resource.cache.load_timeout * 2,
                    )));
            }
            let cache = builder.build()?;
            resources.insert(
                resource.name.clone(),
                Arc::new(Resource {
                    config: resource.clone(),
                    cache,
                    warm: Arc::new(WarmProgress::default()),
                }),
            );
        }
        if let Some(shared) = &redis {
            shared.wire_notices(&resources);
            count_transitions(shared.redis().breaker(), &metrics);
        }
        let readiness = Arc::new(Readiness::new(
            config.warmup.ready_fraction,
            config.warmup.ready_deadline,
        ));
        Ok(AppState(Arc::new(Shared {
            config: Arc::new(config),
            resources: Arc::new(resources),
            metrics,
            pool,
            pressure,
            readiness,
            redis,
        })))
    }

    /// The resource named `name`, or a 404-mapped error.
    pub fn resource(&self, name: &str) -> Result<&Arc<Resource>, Error> {
        self.resources
            .get(name)
            .ok_or_else(|| Error::UnknownResource(name.to_owned()))
    }

    /// Whether `/readyz` answers ready now.
    pub fn is_ready(&self) -> bool {
        // Resources without a warm query have nothing to wait for.
        self.readiness.is_ready(
            self.resources
                .values()
                .filter(|r| r.config.warm.is_some())
                .map(|r| &*r.warm),
            self.redis_subscribed(),
        )
    }

    /// Whether this process hears other instances' invalidations: true
    /// without Redis (nothing to hear), else while the notice subscription
    /// is up.
    pub fn redis_subscribed(&self) -> bool {
        self.redis
            .as_ref()
            .is_none_or(|shared| shared.notices().is_subscribed())
    }

    /// Refreshes the gauges that mirror live state, before a scrape.
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        let size = i64::from(self.pool.size());
        let idle = i64::try_from(self.pool.num_idle()).unwrap_or(i64::MAX);
        m.pool_size.set(i64::from(self.config.database.pool_size));
        m.pool_connections.with_label_values(&["idle"]).set(idle);
        m.pool_connections
            .with_label_values(&["in_use"])
            .set((size - idle).max(0));
        for (name, resource) in self.resources.iter() {
            let stats = resource.cache.stats();
            m.loads_in_flight
                .with_label_values(&[name])
                .set(i64::try_from(stats.in_flight).unwrap_or(i64::MAX));
            if let Some(breaker) = resource.cache.breaker() {
                m.breaker_state
                    .with_label_values(&[name])
                    .set(breaker_state_value(breaker));
            }
            let warm = &resource.warm;
            let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            m.warm_keys
                .with_label_values(&[name, "done"])
                .set(as_i64(warm.keys_done()));
            m.warm_keys
                .with_label_values(&[name, "failed"])
                .set(as_i64(warm.keys_failed()));
            m.warm_keys
                .with_label_values(&[name, "expected"])
                .set(as_i64(warm.expected().unwrap_or(0)));
            m.warm_concurrency
                .with_label_values(&[name])
                .set(i64::try_from(warm.concurrency()).unwrap_or(i64::MAX));
        }
        if let Some(shared) = &self.redis {
            m.breaker_state
                .with_label_values(&["redis"])
                .set(breaker_state_value(shared.redis().breaker()));
            let notices = shared.notices();
            m.redis_subscribed.set(i64::from(notices.is_subscribed()));
            m.redis_subscription_gaps
                .set(i64::try_from(notices.gaps()).unwrap_or(i64::MAX));
        }
        m.ready.set(i64::from(self.is_ready()));
    }
}

/// Counts `breaker`'s state changes in `rampart_breaker_transitions_total`.
fn count_transitions(breaker: &CircuitBreaker, metrics: &Metrics) {
    let transitions = metrics.breaker_transitions.clone();
    breaker.on_transition(move |t| {
        transitions
            .with_label_values(&[&*t.name, t.from.as_str(), t.to.as_str()])
            .inc();
    });
}

fn breaker_state_value(breaker: &CircuitBreaker) -> i64 {
    match breaker.state() {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
        BreakerState::ForcedOpen => 3,
        BreakerState::Disabled => 4,
    }
}
