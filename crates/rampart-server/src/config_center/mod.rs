//! The config center: versioned JSON namespaces that services read,
//! watch (long-poll) and change by compare-and-set, with history,
//! rollback and canary releases.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | `[config_center]` settings |
//! | [`model`] | a namespace in memory: versions, canary, who sees which |
//! | [`schema`] | JSON Schema checks, violations as JSON pointers |
//! | [`store`] | the SQL tables; every change one conditional transaction |
//! | [`registry`] | the served namespaces, one `Snapshot` each; watchers park on them |
//! | [`metrics`] | parked watchers and each namespace's version, read at scrape |
//! | [`propagation`] | other instances' writes: LISTEN/NOTIFY and the periodic reconcile |
//! | [`routes`] | `/v1/config/...` and its route table |

pub mod config;
pub mod metrics;
pub mod model;
pub mod propagation;
pub mod registry;
pub mod routes;
pub mod schema;
pub mod store;

use sqlx::AnyPool;

pub use config::ConfigCenterConfig;
use registry::Registry;
use store::Store;

use crate::config::Config;
use crate::error::Error;
use crate::start_error::StartError;

/// The config center of one instance.
pub struct ConfigCenter {
    pub settings: ConfigCenterConfig,
    pub store: Store,
    pub registry: Registry,
    /// The database URL, for the notice listener's own connection.
    pub(crate) database_url: String,
}

impl ConfigCenter {
    /// Over the service's pool; nothing is read until [`ConfigCenter::open`].
    pub fn new(config: &Config, pool: AnyPool) -> ConfigCenter {
        let url = config.database_url();
        let postgres = url.starts_with("postgres");
        ConfigCenter {
            settings: config.config_center.clone(),
            store: Store::new(pool, postgres),
            registry: Registry::new(config.config_center.max_watchers),
            database_url: url,
        }
    }

    /// Creates the tables (idempotent) and loads every namespace.
    pub async fn open(&self) -> Result<(), StartError> {
        if !self.settings.enabled {
            return Ok(());
        }
        self.store
            .create_tables()
            .await
            .map_err(|e| StartError::Database(format!("config center tables: {e}")))?;
        self.reconcile()
            .await
            .map(|_| ())
            .map_err(|e| StartError::Database(format!("config center: {e}")))
    }

    /// Reads `name` from the database and serves it if newer.
    pub async fn refresh(&self, name: &str) -> Result<(), Error> {
        if let Some(state) = self.store.load(name).await? {
            self.registry.publish(state);
        }
        Ok(())
    }

    /// Reads every namespace's revision and refreshes those ahead of what
    /// is served. Returns how many were refreshed.
    pub async fn reconcile(&self) -> Result<usize, Error> {
        let mut refreshed = 0;
        for (name, revision) in self.store.revisions().await? {
            if revision > self.registry.revision(&name) {
                self.refresh(&name).await?;
                refreshed += 1;
            }
        }
        Ok(refreshed)
    }
}
