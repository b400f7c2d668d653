//! What a reload would change: the live settings that differ, and the
//! settings that differ but only change by a restart.
//!
//! Live: per resource `cache`, `breaker` and `bulkhead`; the server's shed
//! limit `server.max_concurrent_requests`; the warm-up's
//! `warmup.concurrency` and `warmup.max_keys_per_sec`. Everything else (the listen
//! address, the database, Redis, the resource list and each resource's
//! SQL, key type, filter, the timeouts the connections were built with…)
//! is fixed for the process's life.

use std::collections::BTreeMap;
use std::fmt::Debug;

use rampart::breaker::BreakerConfig;
use rampart::cache::CacheConfig;
use rampart::limit::BulkheadConfig;
use serde::Deserialize;

use crate::config::Config;

/// The names of the live settings that differ between `old` and `new`
/// (same resources assumed: see [`frozen_differences`]).
pub fn live_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    if old.server.max_concurrent_requests != new.server.max_concurrent_requests {
        changed.push("server.max_concurrent_requests".to_owned());
    }
    if old.warmup.concurrency != new.warmup.concurrency {
        changed.push("warmup.concurrency".to_owned());
    }
    if old.warmup.max_keys_per_sec != new.warmup.max_keys_per_sec {
        changed.push("warmup.max_keys_per_sec".to_owned());
    }
    for resource in &new.resources {
        let Some(before) = old.resources.iter().find(|r| r.name == resource.name) else {
            continue;
        };
        let name = &resource.name;
        if differs(&before.cache, &resource.cache) {
            changed.push(format!("resource.{name}.cache"));
        }
        if before.breaker != resource.breaker {
            changed.push(format!("resource.{name}.breaker"));
        }
        if before.bulkhead != resource.bulkhead {
            changed.push(format!("resource.{name}.bulkhead"));
        }
    }
    changed
}

/// The settings that differ between `old` and `new` but cannot change
/// while the process runs, each named; empty when a reload may proceed.
///
/// Why compare `Debug` renderings: every section of [`Config`] derives
/// `Debug` (it must, for the start-up log), not `PartialEq`; comparing
/// renderings covers a section added later without its type, or the
/// library types inside it, having to grow an equality.
pub fn frozen_differences(old: &Config, new: &Config) -> Vec<String> {
    // `new` with the live settings taken from `old`: what must then be
    // identical to `old`.
    let mut fixed = new.clone();
    fixed.server.max_concurrent_requests = old.server.max_concurrent_requests;
    fixed.warmup.concurrency = old.warmup.concurrency;
    fixed.warmup.max_keys_per_sec = old.warmup.max_keys_per_sec;
    for resource in &mut fixed.resources {
        if let Some(before) = old.resources.iter().find(|r| r.name == resource.name) {
            resource.cache = before.cache.clone();
            resource.breaker = before.breaker.clone();
            resource.bulkhead = before.bulkhead.clone();
        }
    }
    if !differs(old, &fixed) {
        return Vec::new();
    }
    let mut frozen = Vec::new();
    let mut check = |name: &str, a: &dyn Debug, b: &dyn Debug| {
        if differs(a, b) {
            frozen.push(name.to_owned());
        }
    };
    check("listen", &old.listen, &fixed.listen);
    check("data_dir", &old.data_dir, &fixed.data_dir);
    check("database", &old.database, &fixed.database);
    check(
        "server (only server.max_concurrent_requests changes live)",
        &old.server,
        &fixed.server,
    );
    // The warm-up's concurrency and rate are live (`rampart::warm`
    // re-reads its `WarmLimits` between batches: how hard it leans on the
    // source is what an operator adjusts mid-run). The rest of `[warmup]`
    // shapes the run itself (batch size, the readiness gate, the pressure
    // thresholds its controller was built with) and is read once at start.
    check(
        "warmup (only warmup.concurrency and warmup.max_keys_per_sec change live)",
        &old.warmup,
        &fixed.warmup,
    );
    check("demo_rows", &old.demo_rows, &fixed.demo_rows);
    check("redis", &old.redis, &fixed.redis);
    check("config_center", &old.config_center, &fixed.config_center);
    check("reload", &old.reload, &fixed.reload);
    let names = |c: &Config| {
        c.resources
            .iter()
            .map(|r| r.name.clone())
            .collect::<Vec<_>>()
    };
    if names(old) != names(&fixed) {
        frozen.push(format!(
            "the resource list ({:?} → {:?})",
            names(old),
            names(&fixed)
        ));
    } else {
        for (before, after) in old.resources.iter().zip(&fixed.resources) {
            check(
                &format!(
                    "resource.{} (only its cache, breaker and bulkhead change live)",
                    before.name
                ),
                before,
                after,
            );
        }
    }
    if frozen.is_empty() {
        // A field outside the sections named above (one added later).
        frozen.push("other settings".to_owned());
    }
    frozen
}

/// Whether two values render differently (see [`frozen_differences`]).
pub fn differs(a: &dyn Debug, b: &dyn Debug) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// Live settings as a config-center namespace holds them (JSON): the
/// file's field names, only the live ones. A section given replaces the
/// file's section whole, as a TOML table would: the fields it leaves out
/// take their defaults. Sections not given keep the file's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveOverlay {
    #[serde(default)]
    pub server: Option<ServerOverlay>,
    #[serde(default)]
    pub warmup: Option<WarmupOverlay>,
    /// By resource name.
    #[serde(default)]
    pub resource: BTreeMap<String, ResourceOverlay>,
}

/// The live part of `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerOverlay {
    pub max_concurrent_requests: Option<usize>,
}

/// The live part of `[warmup]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupOverlay {
    pub concurrency: Option<usize>,
    pub max_keys_per_sec: Option<u32>,
}

/// The live sections of one `[[resource]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceOverlay {
    pub cache: Option<CacheConfig>,
    pub breaker: Option<BreakerConfig>,
    pub bulkhead: Option<BulkheadConfig>,
}

impl LiveOverlay {
    /// `base` with this overlay's sections in place of the file's; a
    /// resource the base does not serve is an error naming it.
    pub fn over(self, base: &Config) -> Result<Config, String> {
        let mut config = base.clone();
        if let Some(limit) = self.server.and_then(|s| s.max_concurrent_requests) {
            config.server.max_concurrent_requests = limit;
        }
        if let Some(warmup) = self.warmup {
            if let Some(concurrency) = warmup.concurrency {
                config.warmup.concurrency = concurrency;
            }
            if let Some(rate) = warmup.max_keys_per_sec {
                config.warmup.max_keys_per_sec = rate;
            }
        }
        for (name, overlay) in self.resource {
            let Some(resource) = config.resources.iter_mut().find(|r| r.name == name) else {
                return Err(format!(
                    "resource.{name}: no such resource is served (resources change only by a restart)"
                ));
            };
            if let Some(cache) = overlay.cache {
                resource.cache = cache;
            }
            if let Some(breaker) = overlay.breaker {
                resource.breaker = breaker;
            }
            if let Some(bulkhead) = overlay.bulkhead {
                resource.bulkhead = bulkhead;
            }
        }
        Ok(config)
    }
}
