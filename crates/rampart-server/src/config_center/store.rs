//! The config center's tables in the service's SQL pool (SQLite or
//! PostgreSQL, through sqlx's `Any` driver): namespaces, their immutable
//! versions with a change record each, and at most one canary a namespace.
//!
//! Every change is one transaction that starts with a conditional write
//! of the namespace's row (`UPDATE … WHERE version = N AND canary = 0`,
//! or an insert that does nothing if the namespace exists): of writers
//! racing on the same base version exactly one changes the row, the
//! others change none and are answered 412 (or 409 while a canary is
//! pending). Every condition is on that one row, so PostgreSQL re-checks
//! it against the winner's update (a subquery on another table would be
//! judged on the statement's older snapshot). Taking the write first also
//! takes SQLite's write lock first, so a transaction never has to upgrade
//! a read lock (which SQLite may refuse at once).
//!
//! Times are Unix milliseconds (`BIGINT`): the `Any` driver has no portable
//! timestamp type.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use super::model::{now_ms, Canary, Change, NsState, Version};
use super::schema;
use crate::error::Error;

/// The PostgreSQL channel writes are announced on (payload: the namespace).
pub const CHANNEL: &str = "rampart_config";

const TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS config_namespaces (
        name TEXT PRIMARY KEY,
        schema TEXT,
        version BIGINT NOT NULL,
        revision BIGINT NOT NULL,
        canary BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS config_versions (
        namespace TEXT NOT NULL,
        version BIGINT NOT NULL,
        content TEXT NOT NULL,
        digest TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        author TEXT NOT NULL,
        reason TEXT NOT NULL,
        rollback_plan TEXT NOT NULL,
        PRIMARY KEY (namespace, version)
    )",
    "CREATE TABLE IF NOT EXISTS config_canaries (
        namespace TEXT PRIMARY KEY,
        base_version BIGINT NOT NULL,
        content TEXT NOT NULL,
        clients TEXT NOT NULL,
        percent BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        author TEXT NOT NULL,
        reason TEXT NOT NULL,
        rollback_plan TEXT NOT NULL
    )",
];

/// How a write names the version it expects.
#[derive(Debug, Clone, Copy)]
pub enum Precondition {
    /// `If-None-Match: *`: the namespace must not exist.
    Create,
    /// `If-Match: "N"`: the current version must be N.
    Match(u64),
}

/// One row of a namespace's history.
pub struct HistoryRow {
    pub version: u64,
    pub digest: String,
    pub created_at: i64,
    pub change: Change,
    /// Only when asked for.
    pub content: Option<String>,
}

/// A canary to start.
pub struct NewCanary<'a> {
    pub base: u64,
    pub content: &'a str,
    pub change: &'a Change,
    pub clients: &'a [String],
    pub percent: u8,
}

/// The tables, over the service's pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    postgres: bool,
}

fn db(err: sqlx::Error) -> Error {
    Error::ConfigStore(err.to_string())
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn as_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Store {
    /// A store over `pool`; `postgres` when its URL is PostgreSQL's.
    pub fn new(pool: AnyPool, postgres: bool) -> Store {
        Store { pool, postgres }
    }

    /// Whether the pool is PostgreSQL (notices can be sent and heard).
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// Creates the tables if they are missing (idempotent).
    pub async fn create_tables(&self) -> Result<(), sqlx::Error> {
        for ddl in TABLES {
            // Two instances starting at once on PostgreSQL can race on
            // the catalog (a unique violation on pg_type); the second try
            // finds the table.
            if sqlx::query(ddl).execute(&self.pool).await.is_err() {
                sqlx::query(ddl).execute(&self.pool).await?;
            }
        }
        Ok(())
    }

    /// Every namespace's name and revision.
    pub async fn revisions(&self) -> Result<Vec<(String, u64)>, Error> {
        let rows = sqlx::query("SELECT name, revision FROM config_namespaces")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(db)?,
                    as_u64(row.try_get(1).map_err(db)?),
                ))
            })
            .collect()
    }

    /// The namespace as served now, read in one statement (one consistent
    /// view on PostgreSQL too), or None if it does not exist.
    pub async fn load(&self, name: &str) -> Result<Option<NsState>, Error> {
        let row = sqlx::query(
            "SELECT n.revision, n.version, n.schema, n.updated_at,
                    v.content, v.created_at, v.author, v.reason, v.rollback_plan,
                    c.base_version, c.content, c.clients, c.percent, c.created_at,
                    c.author, c.reason, c.rollback_plan
             FROM config_namespaces n
             JOIN config_versions v ON v.namespace = n.name AND v.version = n.version
             LEFT JOIN config_canaries c ON c.namespace = n.name
             WHERE n.name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|row| state_from_row(name, &row)).transpose()
    }

    /// Writes a new version under `pre`; returns the version written.
    /// `schema` replaces the namespace's schema (the content is checked
    /// against the schema in force after the write).
    pub async fn put(
        &self,
        name: &str,
        pre: Precondition,
        content: &Value,
        change: &Change,
        schema: Option<&str>,
    ) -> Result<u64, Error> {
        let text = content.to_string();
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let version = match pre {
            Precondition::Create => {
                let created = sqlx::query(
                    "INSERT INTO config_namespaces
                     (name, schema, version, revision, canary, created_at, updated_at)
                     VALUES ($1, $2, 1, 1, 0, $3, $4) ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(schema)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                if created.rows_affected() == 0 {
                    let current = current_version(&mut tx, name).await?.map_or(0, |(v, _)| v);
                    return Err(Error::NamespaceExists(current));
                }
                1
            }
            Precondition::Match(expected) => {
                self.advance(&mut tx, name, expected, schema, now).await?;
                expected + 1
            }
        };
        self.check_schema(&mut tx, name, content).await?;
        insert_version(&mut tx, name, version, &text, now, change).await?;
        self.notify(&mut tx, name).await?;
        tx.commit().await.map_err(db)?;
        Ok(version)
    }

    /// Moves `name` from version `expected` to `expected + 1` (revision
    /// too), or explains why not: 404, 412 with the current version, or
    /// 409 while a canary is pending.
    async fn advance(
        &self,
        tx: &mut Transaction<'static, Any>,
        name: &str,
        expected: u64,
        schema: Option<&str>,
        now: i64,
    ) -> Result<(), Error> {
        let moved = sqlx::query(
            "UPDATE config_namespaces
             SET version = version + 1, revision = revision + 1, updated_at = $1,
                 schema = COALESCE($2, schema)
             WHERE name = $3 AND version = $4 AND canary = 0",
        )
        .bind(now)
        .bind(schema)
        .bind(name)
        .bind(as_i64(expected))
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        if moved.rows_affected() == 1 {
            return Ok(());
        }
        Err(refusal(tx, name, expected).await?)
    }

    /// The content against the namespace's schema as it stands in this
    /// transaction.
    async fn check_schema(
        &self,
        tx: &mut Transaction<'static, Any>,
        name: &str,
        content: &Value,
    ) -> Result<(), Error> {
        let row = sqlx::query("SELECT schema FROM config_namespaces WHERE name = $1")
            .bind(name)
            .fetch_one(&mut **tx)
            .await
            .map_err(db)?;
        let stored: Option<String> = row.try_get(0).map_err(db)?;
        match stored {
            Some(text) => schema::check(&text, content),
            None => Ok(()),
        }
    }

    /// Announces a change of `name` to the other instances, on commit.
    async fn notify(&self, tx: &mut Transaction<'static, Any>, name: &str) -> Result<(), Error> {
        if !self.postgres {
            return Ok(());
        }
        // NOTIFY takes no parameters; namespace names are checked to be
        // `[A-Za-z0-9._-]` at the edge, so the literal needs no escaping
        // (quotes doubled anyway).
        let sql = format!("NOTIFY {CHANNEL}, '{}'", name.replace('\'', "''"));
        sqlx::query(&sql).execute(&mut **tx).await.map_err(db)?;
        Ok(())
    }

    /// A page of `name`'s history, newest first, below `before`.
    pub async fn history(
        &self,
        name: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<(Vec<HistoryRow>, Option<u64>), Error> {
        let rows = sqlx::query(
            "SELECT version, digest, created_at, author, reason, rollback_plan
             FROM config_versions WHERE namespace = $1 AND version < $2
             ORDER BY version DESC LIMIT $3",
        )
        .bind(name)
        .bind(as_i64(before.unwrap_or(u64::MAX / 2)))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out = rows
            .iter()
            .map(|row| history_row(row, false))
            .collect::<Result<Vec<_>, _>>()?;
        let next = if out.len() > limit as usize {
            out.truncate(limit as usize);
            out.last().map(|row| row.version)
        } else {
            None
        };
        Ok((out, next))
    }

    /// One version of `name`, with its content.
    pub async fn version(&self, name: &str, version: u64) -> Result<Option<HistoryRow>, Error> {
        let row = sqlx::query(
            "SELECT version, digest, created_at, author, reason, rollback_plan, content
             FROM config_versions WHERE namespace = $1 AND version = $2",
        )
        .bind(name)
        .bind(as_i64(version))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|row| history_row(&row, true)).transpose()
    }

    /// Starts a canary of `name` on top of version `canary.base`.
    pub async fn start_canary(&self, name: &str, canary: &NewCanary<'_>) -> Result<(), Error> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let moved = sqlx::query(
            "UPDATE config_namespaces SET revision = revision + 1, canary = 1, updated_at = $1
             WHERE name = $2 AND version = $3 AND canary = 0",
        )
        .bind(now)
        .bind(name)
        .bind(as_i64(canary.base))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if moved.rows_affected() == 0 {
            return Err(refusal(&mut tx, name, canary.base).await?);
        }
        let content: Value = serde_json::from_str(canary.content)
            .map_err(|e| Error::ConfigStore(format!("canary content: {e}")))?;
        self.check_schema(&mut tx, name, &content).await?;
        let clients = serde_json::to_string(canary.clients).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO config_canaries
             (namespace, base_version, content, clients, percent, created_at, author, reason, rollback_plan)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(name)
        .bind(as_i64(canary.base))
        .bind(canary.content)
        .bind(clients)
        .bind(i64::from(canary.percent))
        .bind(now)
        .bind(&canary.change.author)
        .bind(&canary.change.reason)
        .bind(&canary.change.rollback_plan)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        self.notify(&mut tx, name).await?;
        tx.commit().await.map_err(db)
    }

    /// Ends `name`'s canary: promoted (its content becomes version
    /// base + 1, with its change record) or aborted. Returns the current
    /// version after.
    pub async fn end_canary(&self, name: &str, promote: bool) -> Result<u64, Error> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The namespace's row first (see the module doc): whoever clears
        // its canary flag is the one who ends it.
        let moved = sqlx::query(
            "UPDATE config_namespaces
             SET canary = 0, version = version + $1, revision = revision + 1, updated_at = $2
             WHERE name = $3 AND canary = 1",
        )
        .bind(i64::from(promote))
        .bind(now)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if moved.rows_affected() == 0 {
            return Err(match current_version(&mut tx, name).await? {
                None => Error::UnknownNamespace(name.to_owned()),
                Some(_) => Error::NoCanary(name.to_owned()),
            });
        }
        let row = sqlx::query(
            "DELETE FROM config_canaries WHERE namespace = $1
             RETURNING base_version, content, author, reason, rollback_plan",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| {
            Error::ConfigStore(format!("{name}: canary flag set without a canary row"))
        })?;
        let base = as_u64(row.try_get(0).map_err(db)?);
        let version = if promote {
            let change = Change {
                author: row.try_get(2).map_err(db)?,
                reason: row.try_get(3).map_err(db)?,
                rollback_plan: row.try_get(4).map_err(db)?,
            };
            let content: String = row.try_get(1).map_err(db)?;
            insert_version(&mut tx, name, base + 1, &content, now, &change).await?;
            base + 1
        } else {
            base
        };
        self.notify(&mut tx, name).await?;
        tx.commit().await.map_err(db)?;
        Ok(version)
    }
}

/// The namespace's current version and whether a canary is pending.
async fn current_version(
    tx: &mut Transaction<'static, Any>,
    name: &str,
) -> Result<Option<(u64, bool)>, Error> {
    let row = sqlx::query("SELECT version, canary FROM config_namespaces WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?;
    row.map(|row| {
        let version = row.try_get::<i64, _>(0).map_err(db)?;
        let canary = row.try_get::<i64, _>(1).map_err(db)?;
        Ok((as_u64(version), canary != 0))
    })
    .transpose()
}

/// Why a conditional write at `expected` changed no row: 404, 412 with
/// the current version, or 409 while a canary is pending.
async fn refusal(
    tx: &mut Transaction<'static, Any>,
    name: &str,
    expected: u64,
) -> Result<Error, Error> {
    Ok(match current_version(tx, name).await? {
        None => Error::UnknownNamespace(name.to_owned()),
        Some((current, _)) if current != expected => Error::VersionMismatch(current),
        Some(_) => Error::CanaryActive(name.to_owned()),
    })
}

async fn insert_version(
    tx: &mut Transaction<'static, Any>,
    name: &str,
    version: u64,
    content: &str,
    now: i64,
    change: &Change,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO config_versions
         (namespace, version, content, digest, created_at, author, reason, rollback_plan)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(name)
    .bind(as_i64(version))
    .bind(content)
    .bind(super::model::digest(content))
    .bind(now)
    .bind(&change.author)
    .bind(&change.reason)
    .bind(&change.rollback_plan)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

fn raw(text: String) -> Result<Box<RawValue>, Error> {
    RawValue::from_string(text).map_err(|e| Error::ConfigStore(format!("stored content: {e}")))
}

fn state_from_row(name: &str, row: &AnyRow) -> Result<NsState, Error> {
    let get_i64 = |i: usize| row.try_get::<i64, _>(i).map_err(db);
    let get_str = |i: usize| row.try_get::<String, _>(i).map_err(db);
    let version = as_u64(get_i64(1)?);
    let stable = Version::new(
        name,
        version,
        get_i64(5)?,
        raw(get_str(4)?)?,
        Change {
            author: get_str(6)?,
            reason: get_str(7)?,
            rollback_plan: get_str(8)?,
        },
        false,
    );
    let canary = match row.try_get::<Option<i64>, _>(9).map_err(db)? {
        None => None,
        Some(base) => {
            let clients: Vec<String> = serde_json::from_str(&get_str(11)?).unwrap_or_default();
            Some(Canary {
                version: Arc::new(Version::new(
                    name,
                    as_u64(base) + 1,
                    get_i64(13)?,
                    raw(get_str(10)?)?,
                    Change {
                        author: get_str(14)?,
                        reason: get_str(15)?,
                        rollback_plan: get_str(16)?,
                    },
                    true,
                )),
                clients: clients.into_iter().collect::<HashSet<_>>(),
                percent: u8::try_from(get_i64(12)?.clamp(0, 100)).unwrap_or(0),
            })
        }
    };
    Ok(NsState {
        name: name.to_owned(),
        revision: as_u64(get_i64(0)?),
        stable: Arc::new(stable),
        canary,
        schema: row.try_get::<Option<String>, _>(2).map_err(db)?,
        updated_at: get_i64(3)?,
    })
}

fn history_row(row: &AnyRow, content: bool) -> Result<HistoryRow, Error> {
    Ok(HistoryRow {
        version: as_u64(row.try_get(0).map_err(db)?),
        digest: row.try_get(1).map_err(db)?,
        created_at: row.try_get(2).map_err(db)?,
        change: Change {
            author: row.try_get(3).map_err(db)?,
            reason: row.try_get(4).map_err(db)?,
            rollback_plan: row.try_get(5).map_err(db)?,
        },
        content: if content {
            Some(row.try_get(6).map_err(db)?)
        } else {
            None
        },
    })
}
