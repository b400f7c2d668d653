//! Assembling the service: the source pool (with the demo data on the
//! embedded default), Redis when configured, a guarded cache per resource,
//! and the router over every capability's routes. Runs once at start-up;
//! what requests use at run time is `state.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{Method, Uri};
use axum::middleware;
use axum::routing::{get, post, put};
use axum::Router;
use rampart::breaker::{CircuitBreaker, Transition};
use rampart::cache::{Admission, LocalLease, MemoryTier, TieredCache};
use rampart::existence::ExistenceFilter;
use rampart::limit::Bulkhead;
use rampart::warm::WarmProgress;
use sqlx::AnyPool;

use crate::cache::filter::rebuild;
use crate::cache::keys::Key;
use crate::cache::miss_budget::MissBudget;
use crate::cache::pressure::{ForegroundLatency, SourcePressure};
use crate::cache::routes::{get_batch, get_one, invalidate};
use crate::cache::source::{PoolWait, SqlLoader};
use crate::config::Config;
use crate::error::{echo, Error};
use crate::http::auth::{self, AdminToken};
use crate::http::write_limit;
use crate::ops::metrics::Metrics;
use crate::ops::readiness::Readiness;
use crate::ops::routes::{healthz, metrics, openapi_json, readyz};
#[cfg(feature = "test-routes")]
use crate::ops::routes::{test_panic, test_slow};
use crate::start_error::StartError;
use crate::state::{AppState, Resource, Shared};
use rampart_redis::deploy::{local_cache, LocalCache, RedisDeployment, TierOptions};

/// The Redis side shared by every resource of a process: the guarded
/// connection, the notice subscriber (over every configured URL) and the
/// namespace, all set up by [`RedisDeployment`].
#[derive(Clone)]
pub struct SharedRedis(pub(crate) RedisDeployment);

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
        if !config.redis.breaker_enabled {
            // Disabled lets every call through and records nothing.
            breaker.disable();
        }
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

impl AppState {
    /// Everything `serve` and `warm` start from: the source pool (with the
    /// demo data when the database is the embedded one), Redis if
    /// configured, and a cache per resource.
    pub async fn open(config: Config) -> Result<Self, StartError> {
        let pool = crate::cache::source::connect(&config).await?;
        if config.is_embedded_database() && config.demo_rows > 0 {
            crate::cache::demo::ensure(&pool, &config.database_url(), config.demo_rows, false)
                .await?;
        }
        if config.stock.enabled {
            let demo = config.is_embedded_database() && config.demo_rows > 0;
            crate::stock::Stock::prepare(&pool, &config.stock, demo).await?;
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
            config.warmup.pressure_foreground_ratio,
        ));
        let pressure = Arc::new(SourcePressure {
            pool_wait: Arc::clone(&pool_wait),
            pool_wait_limit: config.warmup.pressure_pool_wait,
            foreground,
        });
        let miss_budget = (config.server.misses_per_client > 0).then(|| {
            let per_sec = config.server.misses_per_client;
            Arc::new(MissBudget::new(
                per_sec,
                config.server.miss_burst.unwrap_or(per_sec),
            ))
        });
        let mut resources = HashMap::new();
        for resource in &config.resources {
            let breaker = CircuitBreaker::new(resource.name.as_str(), resource.breaker.clone());
            breaker.on_transition(transition_counter(&metrics));
            let bulkhead = Bulkhead::new(resource.name.as_str(), resource.bulkhead.clone());
            let loader = SqlLoader::new(
                resource,
                pool.clone(),
                Arc::clone(&metrics),
                Arc::clone(&pool_wait),
            );
            let mut builder = TieredCache::builder(resource.name.as_str(), loader)
                .config(resource.cache.clone())
                .breaker(resource.guards.breaker.then_some(breaker))
                .bulkhead(resource.guards.bulkhead.then_some(bulkhead))
                .single_flight(resource.guards.single_flight);
            if let Some(shared) = &redis {
                // The tier's bookkeeping keys expire after the longest
                // life these settings give an entry.
                builder = shared.attach(
                    builder,
                    &resource.name,
                    &resource.cache,
                    TierOptions {
                        replicas: resource.replicas,
                        lease_ttl: (config.redis.leases && resource.guards.single_flight)
                            .then_some(config.redis.lease_ttl),
                    },
                );
            } else if resource.l2_capacity > 0 && !resource.guards.single_flight {
                // No lease: it would coalesce the loads single-flight off
                // is there to show.
                builder = builder.tier(Arc::new(MemoryTier::new(resource.l2_capacity)));
            } else if resource.l2_capacity > 0 {
                // In-process L2 and lease: the embedded deployment's stand-ins
                // for Redis, with the same contracts.
                builder = builder
                    .tier(Arc::new(MemoryTier::new(resource.l2_capacity)))
                    .lease(Arc::new(LocalLease::<Key>::new(
                        resource.cache.load_timeout * 2,
                    )));
            }
            if resource.filter.as_ref().is_some_and(|f| f.enabled) {
                builder = builder.existence(ExistenceFilter::new());
            }
            if let Some(budget) = &miss_budget {
                builder = builder.admission(Arc::clone(budget) as Arc<dyn Admission>);
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
            shared
                .redis()
                .breakers()
                .on_transition(transition_counter(&metrics));
        }
        let readiness = Arc::new(Readiness::new(
            config.warmup.ready_fraction,
            config.warmup.ready_deadline,
        ));
        let stock = config.stock.enabled.then(|| {
            let gate = redis
                .as_ref()
                .filter(|_| config.stock.redis_gate)
                .map(|shared| {
                    let key_ttl_ms =
                        u64::try_from(config.stock.key_ttl.as_millis()).unwrap_or(u64::MAX);
                    rampart_redis::stock::RedisStock::new(
                        shared.redis().clone(),
                        shared.namespace(),
                        key_ttl_ms,
                    )
                });
            Arc::new(crate::stock::Stock::new(
                pool.clone(),
                config.stock.clone(),
                gate,
            ))
        });
        let config_center = Arc::new(crate::config_center::ConfigCenter::new(
            &config,
            pool.clone(),
        ));
        // A second server in one test process has its own registry;
        // registering twice in one is a bug this crate cannot cause.
        let _ = crate::config_center::metrics::CenterCollector::new(Arc::clone(&config_center))
            .and_then(|c| metrics.registry().register(Box::new(c)));
        let reload = Arc::new(crate::reload::Reload::new(&config, &metrics));
        let warm_limits = Arc::new(rampart::warm::WarmLimits::new(&config.warmup.warm_config()));
        Ok(AppState(Arc::new(Shared {
            warm_limits,
            stock,
            config: Arc::new(config),
            resources: Arc::new(resources),
            metrics,
            pool,
            pressure,
            readiness,
            redis,
            miss_budget,
            config_center,
            reload,
        })))
    }
}

/// Counts a breaker's state changes in `rampart_breaker_transitions_total`.
fn transition_counter(metrics: &Metrics) -> impl Fn(&Transition) + Send + Sync + 'static {
    let transitions = metrics.breaker_transitions.clone();
    move |t| {
        transitions
            .with_label_values(&[&*t.name, t.from.as_str(), t.to.as_str()])
            .inc();
    }
}

/// The routes, without the defence layers (see `layers::wrap`). Write
/// routes require `admin_token` (see `auth.rs`).
pub fn routes(state: AppState, admin_token: Arc<AdminToken>) -> Router {
    let admin = middleware::from_fn_with_state(admin_token, auth::require_admin);
    // Writes: the admin check outside, the write bulkhead inside it.
    let writes = Router::new()
        .route("/v1/r/{resource}/{key}/invalidate", post(invalidate))
        .route("/v1/filter/{resource}/rebuild", post(rebuild))
        .route("/v1/stock/{sku}", put(crate::stock::routes::put_stock))
        .merge(crate::config_center::routes::writes())
        .merge(crate::reload::routes::writes());
    let writes =
        write_limit::limit_writes(writes, write_limit::write_bulkhead()).route_layer(admin.clone());
    // Profiling: admin only (see `ops/profile.rs`).
    let profiling = Router::new()
        .route("/debug/pprof/profile", get(crate::ops::profile::cpu_pprof))
        .route(
            "/debug/pprof/flamegraph",
            get(crate::ops::profile::cpu_flamegraph),
        )
        .route_layer(admin);
    let router = Router::new()
        .route("/v1/r/{resource}/{key}", get(get_one))
        .route("/v1/r/{resource}", get(get_batch))
        .route("/v1/stock/{sku}", get(crate::stock::routes::get_stock))
        .route(
            "/v1/stock/{sku}/reservations",
            post(crate::stock::routes::reserve),
        )
        .route(
            "/v1/reservations/{id}/confirm",
            post(crate::stock::routes::confirm),
        )
        .route(
            "/v1/reservations/{id}/cancel",
            post(crate::stock::routes::cancel),
        )
        .merge(writes)
        .merge(profiling)
        .merge(crate::ops::dashboard::routes(&state))
        .merge(crate::config_center::routes::reads())
        .merge(crate::sessions::routes(&state))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json));
    #[cfg(feature = "test-routes")]
    let router = router
        .route("/v1/test/panic", get(test_panic))
        .route("/v1/test/slow", get(test_slow));
    router
        // After every route: it applies to the routes present.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(unknown_route)
        .with_state(state)
}

/// Any path no route matches.
async fn unknown_route(method: Method, uri: Uri) -> Error {
    Error::UnknownRoute {
        method: method.to_string(),
        path: echo(uri.path()),
    }
}

/// A route's path with a method it does not have (axum adds `Allow`).
async fn method_not_allowed(method: Method, uri: Uri) -> Error {
    Error::MethodNotAllowed {
        method: method.to_string(),
        path: echo(uri.path()),
    }
}
