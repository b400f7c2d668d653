//! What every request shares at run time: the resources and their caches,
//! metrics, the pressure signals and readiness. Passed explicitly as axum
//! state; no handler touches raw shared maps. Built once by `app.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use rampart::breaker::{CircuitBreaker, State as BreakerState};
use rampart::cache::TieredCache;
use rampart::warm::WarmProgress;
use sqlx::AnyPool;

use crate::app::SharedRedis;
use crate::cache::keys::Key;
use crate::cache::miss_budget::MissBudget;
use crate::cache::pressure::SourcePressure;
use crate::config::{Config, ResourceConfig};
use crate::error::Error;
use crate::ops::metrics::Metrics;
use crate::ops::readiness::Readiness;

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
pub struct AppState(pub(crate) Arc<Shared>);

/// What [`AppState`] shares.
pub struct Shared {
    pub config: Arc<Config>,
    pub resources: Arc<HashMap<String, Arc<Resource>>>,
    pub metrics: Arc<Metrics>,
    pub pool: AnyPool,
    pub pressure: Arc<SourcePressure>,
    /// The warm-up's concurrency and rate in force: `[warmup]
    /// concurrency` and `max_keys_per_sec`, changed live by a reload.
    pub warm_limits: Arc<rampart::warm::WarmLimits>,
    pub readiness: Arc<Readiness>,
    /// The shared tier's connection, when Redis is configured.
    pub redis: Option<SharedRedis>,
    /// The per-client miss budget, when `server.misses_per_client` is set.
    pub miss_budget: Option<Arc<MissBudget>>,
    /// Reservations (`stock/`), when `stock.enabled`.
    pub stock: Option<Arc<crate::stock::Stock>>,
    /// The config center's store and served namespaces.
    pub config_center: Arc<crate::config_center::ConfigCenter>,
    /// The live settings in force and how they change (`reload/`).
    pub reload: Arc<crate::reload::Reload>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
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
            self.filters_built(),
        )
    }

    /// Whether every enabled existence filter has completed its first
    /// build or waited its `ready_wait` out.
    fn filters_built(&self) -> bool {
        let waited = self.readiness.waited();
        self.resources
            .values()
            .all(|r| match (&r.config.filter, r.cache.existence()) {
                (Some(config), Some(filter)) => waited >= config.ready_wait || filter.stats().ready,
                _ => true,
            })
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
            m.loads_waiting
                .with_label_values(&[name])
                .set(i64::try_from(stats.waiting).unwrap_or(i64::MAX));
            if let Some(breaker) = resource.cache.breaker() {
                m.breaker_state
                    .with_label_values(&[name])
                    .set(breaker_state_value(breaker));
            }
            if let Some(bulkhead) = resource.cache.bulkhead() {
                let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
                let gauge = |state| m.bulkhead.with_label_values(&[name.as_str(), state]);
                gauge("in_flight").set(as_i64(bulkhead.in_flight()));
                gauge("queued").set(as_i64(bulkhead.queued()));
                gauge("max").set(as_i64(bulkhead.config().max_concurrent));
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
            if let Some(filter) = resource.cache.existence() {
                let f = filter.stats();
                let label = &[name.as_str()];
                m.filter_keys.with_label_values(label).set(as_i64(f.keys));
                m.filter_bytes.with_label_values(label).set(as_i64(f.bytes));
                m.filter_checks
                    .with_label_values(label)
                    .set(as_i64(f.checks));
                m.filter_rejections
                    .with_label_values(label)
                    .set(as_i64(f.rejections));
                m.filter_false_positive_rate
                    .with_label_values(label)
                    .set(f.estimated_false_positive_rate);
                if let Some(age) = f.age {
                    m.filter_age_seconds
                        .with_label_values(label)
                        .set(age.as_secs_f64());
                }
                m.filter_ready
                    .with_label_values(label)
                    .set(i64::from(f.ready));
                m.filter_build_keys
                    .with_label_values(label)
                    .set(as_i64(f.building_keys.unwrap_or(0)));
            }
        }
        if let Some(shared) = &self.redis {
            // One breaker per Redis node (`redis@host:port`; plain
            // `redis` for a single node and a Cluster's unmapped slots).
            for breaker in shared.redis().breakers().all() {
                m.breaker_state
                    .with_label_values(&[breaker.name()])
                    .set(breaker_state_value(&breaker));
            }
            let notices = shared.notices();
            m.redis_subscribed.set(i64::from(notices.is_subscribed()));
            m.redis_subscription_gaps
                .set(i64::try_from(notices.gaps()).unwrap_or(i64::MAX));
        }
        if let Some(budget) = &self.miss_budget {
            m.misses_refused
                .set(i64::try_from(budget.refused()).unwrap_or(i64::MAX));
        }
        m.ready.set(i64::from(self.is_ready()));
    }
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
