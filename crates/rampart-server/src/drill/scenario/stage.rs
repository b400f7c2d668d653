//! A scenario's private world: a PostgreSQL schema of its own filled with
//! the demo data, a [`FaultProxy`] between rampart and PostgreSQL, and
//! the SQL-level faults (the table taken away and given back) a proxy
//! cannot make; and, for the scenarios that ask for one, a private
//! `redis-server` as rampart's L2 that the timeline kills and restarts
//! ([`PrivateRedis`]). rampart itself runs in this process
//! ([`Server::start`]), once per half, over the proxy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

use crate::cache::{ceiling, demo, source};
use crate::config::Config;
use crate::drill::config::DrillError;
use crate::drill::fault_proxy::FaultProxy;
use crate::drill::private_redis::PrivateRedis;

/// Where scenarios find PostgreSQL unless `--pg-url` says otherwise.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fault at the source itself, below the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFault {
    /// The `users` table is renamed away: every load fails at once with
    /// "relation does not exist", as a broken source answers.
    Break,
    /// The table is back.
    Restore,
}

/// What happens to the stage's private Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisFault {
    /// SIGKILL: a crash, connections broken, new ones refused.
    Kill,
    /// Started again on the same port, empty (no persistence).
    Restart,
}

/// The schema, the proxy, and the URLs through and around it.
pub struct Stage {
    schema: String,
    /// The base URL, without search path.
    base: String,
    admin: AnyPool,
    /// Between rampart and PostgreSQL.
    pub proxy: FaultProxy,
    broken: bool,
    /// rampart's L2, when the scenario has one.
    redis: Option<PrivateRedis>,
    /// The source's batch-read ceiling, measured once per stage.
    ceiling: Option<f64>,
}

fn redis_failed(e: std::io::Error) -> DrillError {
    DrillError::InvalidConfig(format!("private Redis: {e}"))
}

fn fail(what: &str) -> impl Fn(sqlx::Error) -> DrillError + '_ {
    move |e| DrillError::InvalidConfig(format!("PostgreSQL: {what}: {e}"))
}

/// `host:port` of a `postgres://[user@]host[:port]/db` URL, loopback only.
fn pg_addr(url: &str) -> Result<SocketAddr, DrillError> {
    let bad = |why: &str| DrillError::InvalidConfig(format!("--pg-url `{url}`: {why}"));
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| bad("expected postgres://user@127.0.0.1:5432/db"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    let host_port = host_port.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = host_port
        .parse()
        .map_err(|_| bad("the host must be a literal loopback address"))?;
    if !addr.ip().is_loopback() {
        return Err(bad("scenarios only run against loopback PostgreSQL"));
    }
    Ok(addr)
}

/// `url` with `host:port` replaced by `addr` and the search path set.
fn through(url: &str, addr: SocketAddr, schema: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let user = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    let path = if path.is_empty() { "/" } else { path };
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{scheme}://{user}{addr}{path}{sep}options=-c%20search_path%3D{schema}")
}

impl Stage {
    /// A fresh schema on `pg_url` with `rows` demo users, and a proxy in
    /// front of that server.
    pub async fn create(pg_url: &str, rows: u64) -> Result<Stage, DrillError> {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        sqlx::any::install_default_drivers();
        let addr = pg_addr(pg_url)?;
        let schema = format!(
            "rampart_drill_{}_{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let admin = AnyPoolOptions::new()
            .max_connections(2)
            .connect(pg_url)
            .await
            .map_err(fail("connect"))?;
        for sql in [
            format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
            format!("CREATE SCHEMA {schema}"),
        ] {
            sqlx::query(&sql)
                .execute(&admin)
                .await
                .map_err(fail("create the scenario's schema"))?;
        }
        let direct = through(pg_url, addr, &schema);
        let filler = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&direct)
            .await
            .map_err(fail("connect to the scenario's schema"))?;
        demo::ensure(&filler, &direct, rows, true)
            .await
            .map_err(|e| DrillError::InvalidConfig(format!("demo data: {e}")))?;
        filler.close().await;
        let proxy = FaultProxy::start(addr)
            .await
            .map_err(|e| DrillError::Internal(format!("fault proxy: {e}")))?;
        Ok(Stage {
            schema,
            base: pg_url.to_owned(),
            admin,
            proxy,
            broken: false,
            redis: None,
            ceiling: None,
        })
    }

    /// Gives the stage a private Redis, rampart's L2 from the next half on.
    pub async fn start_redis(&mut self) -> Result<(), DrillError> {
        let redis = PrivateRedis::start().await.map_err(redis_failed)?;
        self.redis = Some(redis);
        Ok(())
    }

    /// Applies a fault to the private Redis now (none: nothing to do).
    pub async fn redis(&mut self, fault: RedisFault) -> Result<(), DrillError> {
        let Some(redis) = &mut self.redis else {
            return Ok(());
        };
        match fault {
            RedisFault::Kill => redis.kill(),
            RedisFault::Restart => redis.restart().await.map_err(redis_failed)?,
        }
        Ok(())
    }

    /// The database URL rampart gets: through the proxy, in the schema.
    pub fn server_url(&self) -> String {
        through(&self.base, self.proxy.addr(), &self.schema)
    }

    /// A config for rampart over this stage: the embedded defaults, port
    /// 0, no warm-up, no existence filter (not the guard under test), and
    /// a private data directory.
    pub fn config(&self, data_dir: std::path::PathBuf) -> Result<Config, DrillError> {
        let mut config =
            Config::embedded().map_err(|e| DrillError::Internal(format!("config: {e}")))?;
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.data_dir = data_dir;
        config.database.url = self.server_url();
        config.demo_rows = 0;
        config.warmup.enabled = false;
        for resource in &mut config.resources {
            resource.filter = None;
        }
        if let Some(redis) = &self.redis {
            config.redis.urls = vec![redis.url()];
        }
        Ok(config)
    }

    /// The source's batch-read ceiling for `resource`, rows/s: a plain
    /// client on one connection through the proxy, in `IN` lists of the
    /// default warm-up batch ([`ceiling::measure`]). Measured on the first
    /// call and kept, so both halves are compared with the same figure
    /// from the same run.
    pub async fn ceiling(
        &mut self,
        resource: &crate::config::ResourceConfig,
    ) -> Result<Option<f64>, DrillError> {
        if self.ceiling.is_none() {
            let pool = AnyPoolOptions::new()
                .max_connections(1)
                .connect(&self.server_url())
                .await
                .map_err(fail("connect for the ceiling"))?;
            let batch = crate::config::WarmupConfig::default().batch_size;
            let failed = |e| DrillError::InvalidConfig(format!("source ceiling: {e}"));
            let shape = source::warm_shape(&pool, resource).await.map_err(failed)?;
            let measured = ceiling::measure(&pool, resource, &shape, batch)
                .await
                .map_err(failed)?;
            pool.close().await;
            self.ceiling = measured.map(|c| c.rows_per_sec());
        }
        Ok(self.ceiling)
    }

    /// Applies a source fault now.
    pub async fn source(&mut self, fault: SourceFault) -> Result<(), DrillError> {
        let schema = &self.schema;
        let sql = match (fault, self.broken) {
            (SourceFault::Break, false) => {
                format!("ALTER TABLE {schema}.users RENAME TO users_offline")
            }
            (SourceFault::Restore, true) => {
                format!("ALTER TABLE {schema}.users_offline RENAME TO users")
            }
            _ => return Ok(()),
        };
        sqlx::query(&sql)
            .execute(&self.admin)
            .await
            .map_err(fail("source fault"))?;
        self.broken = fault == SourceFault::Break;
        Ok(())
    }

    /// Restores the source and drops the schema (the private Redis, if
    /// any, is killed and its directory removed as it drops).
    pub async fn remove(mut self) {
        let _ = self.source(SourceFault::Restore).await;
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .execute(&self.admin)
            .await;
        self.admin.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_urls_are_parsed_and_rewritten() {
        let addr = pg_addr("postgres://postgres@127.0.0.1:5432/test").unwrap();
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 5432)));
        assert_eq!(
            pg_addr("postgres://u@localhost/db").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 5432))
        );
        assert!(pg_addr("postgres://u@db.example.com:5432/x").is_err());
        assert!(pg_addr("mysql://u@127.0.0.1/x").is_err());
        let proxy = SocketAddr::from(([127, 0, 0, 1], 40000));
        assert_eq!(
            through("postgres://postgres@127.0.0.1:5432/test", proxy, "s1"),
            "postgres://postgres@127.0.0.1:40000/test?options=-c%20search_path%3Ds1"
        );
        assert_eq!(
            through(
                "postgres://127.0.0.1:5432/test?sslmode=disable",
                proxy,
                "s1"
            ),
            "postgres://127.0.0.1:40000/test?sslmode=disable&options=-c%20search_path%3Ds1"
        );
    }
}
