//! [`Reload`]: the one path every trigger takes — validate, refuse or swap,
//! count, and move the settings version.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts};
use serde::Serialize;

use super::plan::{differs, frozen_differences, live_changes, LiveOverlay};
use crate::config::Config;
use crate::error::Error;
use crate::ops::metrics::Metrics;
use crate::start_error::StartError;
use crate::state::AppState;

/// Re-reads the config the process started from (the file with the same
/// flags and environment applied), for SIGHUP and `POST /v1/admin/reload`.
pub type ConfigSource = Box<dyn Fn() -> Result<Config, StartError> + Send + Sync>;

/// Where a new config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The config file (SIGHUP or the admin route).
    File,
    /// A version of a config-center namespace.
    Namespace { name: String, version: u64 },
}

impl Origin {
    /// The `source` label and the answer's `source` field.
    pub fn label(&self) -> &'static str {
        match self {
            Origin::File => "file",
            Origin::Namespace { .. } => "namespace",
        }
    }
}

/// What a reload did (the admin route's 200 body).
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// The settings version now in force (1 = as started).
    pub version: u64,
    /// `file` or `namespace`.
    pub source: &'static str,
    /// The namespace's version, when the source is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_version: Option<u64>,
    /// The live settings that changed, e.g. `resource.users.cache`; empty
    /// when the new config equals the running one.
    pub changed: Vec<String>,
}

/// What a reload starts from, under one lock held for a whole apply (so
/// reloads never interleave).
struct Running {
    /// The config in force: the file's, with the namespace's live
    /// settings over it when there are any.
    config: Arc<Config>,
    /// The file's config as last read (as started, then as last reloaded):
    /// the base a namespace version applies over.
    file: Arc<Config>,
    /// The namespace version in force (its JSON text and number), applied
    /// again over each file reload so a SIGHUP does not undo it.
    overlay: Option<(String, u64, String)>,
}

/// The settings in force and how they change.
pub struct Reload {
    running: Mutex<Running>,
    source: OnceLock<ConfigSource>,
    /// `server.max_concurrent_requests` as the shed check reads it (one
    /// relaxed load per request, as before it was a plain field).
    max_in_flight: AtomicUsize,
    version: AtomicU64,
    reloads: IntCounterVec,
    version_gauge: IntGaugeVec,
    namespace_version: IntGauge,
}

impl Reload {
    /// The settings `config` starts with (version 1, from the file), its
    /// metrics registered in `metrics`.
    pub fn new(config: &Config, metrics: &Metrics) -> Reload {
        let registry = metrics.registry();
        let reloads = IntCounterVec::new(
            Opts::new(
                "rampart_config_reload_total",
                "Reloads of the live settings, by result (ok, refused).",
            ),
            &["result"],
        )
        .expect("valid metric definition");
        let version_gauge = IntGaugeVec::new(
            Opts::new(
                "rampart_settings_version",
                "The live settings' version in force (1 = as started), labelled by where it came from (file or namespace).",
            ),
            &["source"],
        )
        .expect("valid metric definition");
        let namespace_version = IntGauge::new(
            "rampart_settings_namespace_version",
            "The config-center namespace version the live settings came from (0 = none).",
        )
        .expect("valid metric definition");
        for collector in [
            Box::new(reloads.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(version_gauge.clone()),
            Box::new(namespace_version.clone()),
        ] {
            // A second server in one test process has its own registry;
            // registering twice in one is a bug this crate cannot cause.
            let _ = registry.register(collector);
        }
        for result in ["ok", "refused"] {
            reloads.with_label_values(&[result]);
        }
        version_gauge.with_label_values(&["file"]).set(1);
        Reload {
            running: Mutex::new(Running {
                config: Arc::new(config.clone()),
                file: Arc::new(config.clone()),
                overlay: None,
            }),
            source: OnceLock::new(),
            max_in_flight: AtomicUsize::new(config.server.max_concurrent_requests),
            version: AtomicU64::new(1),
            reloads,
            version_gauge,
            namespace_version,
        }
    }

    /// Sets where the file is re-read from (once; later calls are ignored).
    pub fn set_source(&self, source: ConfigSource) {
        let _ = self.source.set(source);
    }

    /// The shed limit in force.
    #[inline]
    pub fn max_in_flight(&self) -> usize {
        // Relaxed: a limit read on its own; no other memory hangs on it.
        self.max_in_flight.load(Ordering::Relaxed)
    }

    /// The settings version in force.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// The config in force.
    pub fn running(&self) -> Arc<Config> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&running.config)
    }

    /// Re-reads the file and applies it, with the namespace version in
    /// force (if any) over it again. Without a source (a server started
    /// from a config built in code) the config it started with is the file.
    pub fn reload_file(&self, state: &AppState) -> Result<Applied, Error> {
        let origin = Origin::File;
        let file = match self.source.get() {
            Some(source) => {
                source().map_err(|e| self.refuse(&origin, Error::ReloadRefused(e.to_string())))?
            }
            // Started from a config built in code (an embedding, a test):
            // there is no file, so the config it started with is re-applied.
            None => Config::clone(
                &self
                    .running
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .file,
            ),
        };
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let new = match &running.overlay {
            Some((name, version, text)) => overlay(name, *version, text)
                .and_then(|o| o.over(&file))
                .map_err(|message| self.refuse(&origin, Error::ReloadRefused(message)))?,
            None => file.clone(),
        };
        let applied = self.apply(&mut running, state, new, origin)?;
        running.file = Arc::new(file);
        Ok(applied)
    }

    /// Applies version `version` of namespace `name` (its JSON `text`: a
    /// [`LiveOverlay`]) over the file's settings.
    pub fn apply_namespace(
        &self,
        state: &AppState,
        name: &str,
        version: u64,
        text: &str,
    ) -> Result<Applied, Error> {
        let origin = Origin::Namespace {
            name: name.to_owned(),
            version,
        };
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let new = overlay(name, version, text)
            .and_then(|o| o.over(&running.file))
            .map_err(|message| self.refuse(&origin, Error::ReloadRefused(message)))?;
        let applied = self.apply(&mut running, state, new, origin)?;
        running.overlay = Some((name.to_owned(), version, text.to_owned()));
        Ok(applied)
    }

    /// Validates `new` as a start would, refuses it if a setting that
    /// only a restart can change differs, else swaps every live setting
    /// that changed. A refusal changes nothing, is logged and counted.
    fn apply(
        &self,
        running: &mut Running,
        state: &AppState,
        new: Config,
        origin: Origin,
    ) -> Result<Applied, Error> {
        if let Err(message) = new.validate() {
            return Err(self.refuse(&origin, Error::ReloadRefused(message)));
        }
        let frozen = frozen_differences(&running.config, &new);
        if !frozen.is_empty() {
            return Err(self.refuse(
                &origin,
                Error::ReloadRefused(format!("only a restart can change: {}", frozen.join(", "))),
            ));
        }
        if state.redis.is_some() {
            // The Redis tier's bookkeeping keys were given the longest
            // entry life of the settings it was built with.
            for (before, after) in running.config.resources.iter().zip(&new.resources) {
                let life = rampart_redis::bounds::max_entry_life;
                if life(&after.cache) > life(&before.cache) {
                    return Err(self.refuse(
                        &origin,
                        Error::ReloadRefused(format!(
                            "resource.{}.cache: with Redis, the longest entry life (ttl × (1 + jitter) + stale_if_error + load_timeout) cannot grow live ({:?} → {:?}); only a restart can change it",
                            after.name,
                            life(&before.cache),
                            life(&after.cache)
                        )),
                    ));
                }
            }
        }
        let changed = live_changes(&running.config, &new);
        for after in &new.resources {
            let (Some(before), Some(resource)) = (
                running
                    .config
                    .resources
                    .iter()
                    .find(|r| r.name == after.name),
                state.resources.get(&after.name),
            ) else {
                continue;
            };
            // `new.validate()` ran the same checks as these setters: none
            // can refuse now, so no change is ever half applied.
            let set = || -> Result<(), rampart::Error> {
                if differs(&before.cache, &after.cache) {
                    resource.cache.set_config(after.cache.clone())?;
                }
                if before.breaker != after.breaker {
                    if let Some(breaker) = resource.cache.breaker() {
                        breaker.set_config(after.breaker.clone())?;
                    }
                }
                if before.bulkhead != after.bulkhead {
                    if let Some(bulkhead) = resource.cache.bulkhead() {
                        bulkhead.set_limits(after.bulkhead.clone())?;
                    }
                }
                Ok(())
            };
            if let Err(e) = set() {
                tracing::error!(resource = %after.name, error = %e, "a validated setting was refused by its guard");
                return Err(self.refuse(&origin, Error::ReloadRefused(e.to_string())));
            }
        }
        self.max_in_flight
            .store(new.server.max_concurrent_requests, Ordering::Relaxed);
        // The warm-up's limits: a running warm-up takes them from its next
        // batch. `new.validate()` checked them as `set` does.
        let warm = new.warmup.warm_config();
        if let Err(e) = state
            .warm_limits
            .set(warm.max_concurrency, warm.max_keys_per_sec)
        {
            tracing::error!(error = %e, "a validated warm-up limit was refused");
            return Err(self.refuse(&origin, Error::ReloadRefused(format!("warmup: {e}"))));
        }
        running.config = Arc::new(new);
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        let namespace_version = match &origin {
            Origin::Namespace { version, .. } => Some(*version),
            Origin::File => None,
        };
        self.version_gauge.reset();
        self.version_gauge
            .with_label_values(&[origin.label()])
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        self.namespace_version
            .set(namespace_version.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX)));
        self.reloads.with_label_values(&["ok"]).inc();
        tracing::info!(
            version,
            source = origin.label(),
            ?namespace_version,
            ?changed,
            "live settings reloaded"
        );
        Ok(Applied {
            version,
            source: origin.label(),
            namespace_version,
            changed,
        })
    }

    /// Logs and counts a refusal; the running settings stay.
    fn refuse(&self, origin: &Origin, error: Error) -> Error {
        self.reloads.with_label_values(&["refused"]).inc();
        tracing::warn!(source = origin.label(), ?origin, error = %error, "reload refused; the running settings stay");
        error
    }
}

/// A namespace version's text as live settings, or a message naming it.
fn overlay(name: &str, version: u64, text: &str) -> Result<LiveOverlay, String> {
    serde_json::from_str(text)
        .map_err(|e| format!("namespace {name:?} version {version}: not live settings: {e}"))
}
