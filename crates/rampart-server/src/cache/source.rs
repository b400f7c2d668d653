//! The SQL source of truth: a connection pool (SQLite or PostgreSQL through
//! sqlx's `Any` driver), rows turned into JSON, and a [`Loader`] per
//! resource that the cache calls on misses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use rampart::{BoxError, Loader};
use serde_json::{Map, Number, Value};
use sqlx::any::{AnyPoolOptions, AnyRow, AnyTypeInfoKind};
use sqlx::{AnyPool, Column, Row, ValueRef};

use crate::cache::faults::FaultsConfig;
use crate::cache::keys::Key;
use crate::config::{Config, KeyType, ResourceConfig};
use crate::ops::metrics::Metrics;
use crate::start_error::StartError;

/// Opens the pool for `config`, creating the data directory for the
/// embedded SQLite database.
pub async fn connect(config: &Config) -> Result<AnyPool, StartError> {
    sqlx::any::install_default_drivers();
    let url = config.database_url();
    if config.is_embedded_database() {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StartError::Database(format!(
                "cannot create data dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
    }
    let pool = AnyPoolOptions::new()
        .max_connections(config.database.pool_size)
        .acquire_timeout(config.database.acquire_timeout)
        .connect(&url)
        .await
        .map_err(|e| StartError::Database(format!("cannot connect to {}: {e}", redact(&url))))?;
    if url.starts_with("sqlite:") {
        // WAL lets readers run while the warm-up or demo data writes.
        sqlx::query("PRAGMA journal_mode=WAL")
            .execute(&pool)
            .await
            .map_err(|e| StartError::Database(e.to_string()))?;
    }
    Ok(pool)
}

/// A URL with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Turns a row into a JSON object, column by column.
pub fn row_to_json(row: &AnyRow) -> Result<Value, sqlx::Error> {
    let mut object = Map::with_capacity(row.columns().len());
    for column in row.columns() {
        let i = column.ordinal();
        let raw = row.try_get_raw(i)?;
        let kind = raw.type_info().kind();
        let value = if raw.is_null() {
            Value::Null
        } else {
            match kind {
                AnyTypeInfoKind::Null => Value::Null,
                AnyTypeInfoKind::Bool => Value::Bool(row.try_get::<bool, _>(i)?),
                AnyTypeInfoKind::SmallInt | AnyTypeInfoKind::Integer | AnyTypeInfoKind::BigInt => {
                    Value::Number(row.try_get::<i64, _>(i)?.into())
                }
                AnyTypeInfoKind::Real | AnyTypeInfoKind::Double => {
                    Number::from_f64(row.try_get::<f64, _>(i)?).map_or(Value::Null, Value::Number)
                }
                AnyTypeInfoKind::Text => Value::String(row.try_get::<String, _>(i)?),
                AnyTypeInfoKind::Blob => {
                    let bytes = row.try_get::<Vec<u8>, _>(i)?;
                    Value::Array(bytes.into_iter().map(Value::from).collect())
                }
            }
        };
        object.insert(column.name().to_owned(), value);
    }
    Ok(Value::Object(object))
}

/// How a query's rows become JSON objects: for each member in output
/// order, the column it comes from and its `"name":` already encoded.
///
/// Why: the warm-up turns hundreds of thousands of rows a second into JSON,
/// and going through `Value` costs a map, a `String` per column name and
/// per text value, and a second pass to serialise (BENCHMARKS.md, warm-up
/// at the source's pace, has the profile). The shape is worked out once per query
/// (per batch of rows) and each row is then written straight into one
/// scratch buffer, copied out at its exact length. Member order and
/// duplicate names follow `row_to_json` exactly (a `serde_json::Map`
/// decides them), so the bytes are the same.
pub struct JsonShape {
    members: Vec<(usize, Vec<u8>)>,
}

impl JsonShape {
    /// The shape of rows with `row`'s columns.
    pub fn of(row: &AnyRow) -> Result<JsonShape, serde_json::Error> {
        let mut order = Map::with_capacity(row.columns().len());
        for column in row.columns() {
            order.insert(column.name().to_owned(), Value::from(column.ordinal()));
        }
        let mut members = Vec::with_capacity(order.len());
        for (name, ordinal) in order {
            let mut prefix = serde_json::to_vec(&name)?;
            prefix.push(b':');
            // Ordinals were stored as unsigned numbers just above.
            let ordinal = ordinal.as_u64().map_or(usize::MAX, |o| o as usize);
            members.push((ordinal, prefix));
        }
        Ok(JsonShape { members })
    }

    /// Writes `row` as a JSON object into `out` (cleared first); the same
    /// bytes as `serde_json::to_vec(&row_to_json(row)?)`.
    pub fn write(&self, row: &AnyRow, out: &mut Vec<u8>) -> Result<(), BoxError> {
        out.clear();
        out.push(b'{');
        for (n, (i, prefix)) in self.members.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(prefix);
            let raw = row.try_get_raw(*i)?;
            if raw.is_null() {
                out.extend_from_slice(b"null");
                continue;
            }
            match raw.type_info().kind() {
                AnyTypeInfoKind::Null => out.extend_from_slice(b"null"),
                AnyTypeInfoKind::Bool => {
                    let b = row.try_get::<bool, _>(*i)?;
                    out.extend_from_slice(if b { b"true" } else { b"false" });
                }
                AnyTypeInfoKind::SmallInt | AnyTypeInfoKind::Integer | AnyTypeInfoKind::BigInt => {
                    serde_json::to_writer(&mut *out, &row.try_get::<i64, _>(*i)?)?;
                }
                AnyTypeInfoKind::Real | AnyTypeInfoKind::Double => {
                    match Number::from_f64(row.try_get::<f64, _>(*i)?) {
                        Some(number) => serde_json::to_writer(&mut *out, &number)?,
                        None => out.extend_from_slice(b"null"),
                    }
                }
                AnyTypeInfoKind::Text => {
                    serde_json::to_writer(&mut *out, row.try_get::<&str, _>(*i)?)?;
                }
                AnyTypeInfoKind::Blob => {
                    serde_json::to_writer(&mut *out, row.try_get::<&[u8], _>(*i)?)?;
                }
            }
        }
        out.push(b'}');
        Ok(())
    }

    /// `row` as JSON bytes of exactly its length (no spare capacity kept
    /// alive by the cache), written through `scratch`.
    pub fn to_bytes(&self, row: &AnyRow, scratch: &mut Vec<u8>) -> Result<Bytes, BoxError> {
        self.write(row, scratch)?;
        Ok(Bytes::copy_from_slice(scratch))
    }
}

/// Loads one resource's rows from the pool, timing pool waits and loads.
pub struct SqlLoader {
    pub resource: Arc<str>,
    pub key_type: KeyType,
    pub key_column: String,
    pub load: String,
    pub load_many: Option<String>,
    pub pool: AnyPool,
    pub metrics: Arc<Metrics>,
    /// Recent pool waits, read by the warm-up's pressure signal.
    pub pool_wait: Arc<PoolWait>,
    /// Drill faults (`[resource.faults]`): off outside drills.
    pub faults: FaultsConfig,
}

impl SqlLoader {
    /// A loader for `resource` over `pool`.
    pub fn new(
        resource: &ResourceConfig,
        pool: AnyPool,
        metrics: Arc<Metrics>,
        pool_wait: Arc<PoolWait>,
    ) -> Self {
        SqlLoader {
            resource: Arc::from(resource.name.as_str()),
            key_type: resource.key_type,
            key_column: resource.key_column.clone(),
            load: resource.load.clone(),
            load_many: resource.load_many.clone(),
            pool,
            metrics,
            pool_wait,
            faults: resource.faults,
        }
    }

    async fn connection(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, BoxError> {
        let start = Instant::now();
        let connection = self.pool.acquire().await?;
        let waited = start.elapsed();
        self.pool_wait.record(waited);
        self.metrics
            .pool_wait
            .with_label_values(&[&self.resource])
            .observe(waited.as_secs_f64());
        Ok(connection)
    }

    fn observe(&self, start: Instant, ok: bool) {
        self.metrics
            .load_duration
            .with_label_values(&[&*self.resource, if ok { "ok" } else { "error" }])
            .observe(start.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl Loader<Key, Bytes> for SqlLoader {
    async fn load(&self, key: &Key) -> Result<Option<Bytes>, BoxError> {
        let start = Instant::now();
        let result = async {
            let mut connection = self.connection().await?;
            let row = key
                .bind(sqlx::query(&self.load))
                .fetch_optional(&mut *connection)
                .await?;
            row.map(|row| JsonShape::of(&row)?.to_bytes(&row, &mut Vec::with_capacity(256)))
                .transpose()
        }
        .await;
        self.observe(start, result.is_ok());
        // After the query and its count: a poison row costs the source
        // its load, then takes the caller down.
        if result.is_ok() {
            self.faults.inject(&self.resource, key);
        }
        result
    }

    async fn load_many(&self, keys: &[Key]) -> Result<HashMap<Key, Bytes>, BoxError> {
        let Some(template) = &self.load_many else {
            // No batch query configured: one by one.
            let mut found = HashMap::with_capacity(keys.len());
            for key in keys {
                if let Some(row) = self.load(key).await? {
                    found.insert(key.clone(), row);
                }
            }
            return Ok(found);
        };
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let start = Instant::now();
        let result = async {
            let placeholders: Vec<String> = (1..=keys.len()).map(|i| format!("${i}")).collect();
            let sql = template.replace("{keys}", &placeholders.join(", "));
            let mut query = sqlx::query(&sql);
            for key in keys {
                query = key.bind(query);
            }
            let mut connection = self.connection().await?;
            let rows = query.fetch_all(&mut *connection).await?;
            let mut found = HashMap::with_capacity(rows.len());
            let Some(first) = rows.first() else {
                return Ok(found);
            };
            let shape = JsonShape::of(first)?;
            let mut scratch = Vec::with_capacity(256);
            for row in rows {
                let key = Key::from_row(self.key_type, &row, self.key_column.as_str())?;
                found.insert(key, shape.to_bytes(&row, &mut scratch)?);
            }
            Ok::<_, BoxError>(found)
        }
        .await;
        self.observe(start, result.is_ok());
        // One poison row takes its whole batch down.
        if result.is_ok() {
            for key in keys {
                self.faults.inject(&self.resource, key);
            }
        }
        result
    }
}

/// An exponentially weighted moving average of pool waits, in µs: the
/// warm-up's "the source is getting busy" signal. Atomics, because every
/// load writes it and the warm-up reads it before each batch.
pub struct PoolWait {
    ewma_micros: std::sync::atomic::AtomicU64,
    /// When the last wait was recorded, in ms since `epoch`.
    last_at_ms: std::sync::atomic::AtomicU64,
    epoch: Instant,
}

/// A pool wait average older than this says nothing of the pool now.
const POOL_WAIT_FRESH_FOR: Duration = Duration::from_secs(1);

impl Default for PoolWait {
    fn default() -> Self {
        PoolWait {
            ewma_micros: Default::default(),
            last_at_ms: Default::default(),
            epoch: Instant::now(),
        }
    }
}

impl PoolWait {
    fn record(&self, waited: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let sample = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        // Relaxed with a CAS loop: a lost update between two loads only
        // nudges an average; no other memory depends on it.
        let _ = self
            .ewma_micros
            .fetch_update(Relaxed, Relaxed, |old| Some((old * 7 + sample) / 8));
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_at_ms.store(now_ms, Relaxed);
    }

    /// The current average wait; zero once no load has waited for a
    /// connection for a second. Only loads record waits: without this a
    /// burst of slow waits would hold the signal high for good once the
    /// loads stop (a warm-up of whole rows makes none).
    pub fn average(&self) -> Duration {
        use std::sync::atomic::Ordering::Relaxed;
        let last = Duration::from_millis(self.last_at_ms.load(Relaxed));
        if self.epoch.elapsed().saturating_sub(last) > POOL_WAIT_FRESH_FOR {
            return Duration::ZERO;
        }
        Duration::from_micros(self.ewma_micros.load(Relaxed))
    }
}

/// Streams the keys a resource's `warm` query returns, first column.
pub fn warm_keys<'a>(
    pool: &'a AnyPool,
    sql: &'a str,
    key_type: KeyType,
) -> impl Stream<Item = Result<Key, rampart::Error>> + Send + 'a {
    sqlx::query(sql)
        .fetch(pool)
        .map_err(rampart::Error::source)
        .map(move |row| Key::from_row(key_type, &row?, 0).map_err(rampart::Error::source))
}

/// What a resource's `warm` query returns, found by preparing it and its
/// `load` query (nothing is run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarmShape {
    /// One key a row, first column: the rows are then loaded in batches.
    Keys,
    /// Whole rows, with `load`'s columns (names and types) in `load`'s
    /// order, the key column among them: each row is
    /// cached as read, with no second query (`TieredCache::fill_loaded`).
    Rows,
    /// Several columns that are not `load`'s: cached as read they would
    /// answer a hit with another shape than a miss, so only the first
    /// column is used, as a key. Says which columns differ, for the log.
    KeysOfOtherColumns(String),
}

/// Prepares `warm` and `load` and compares their columns.
pub async fn warm_shape(
    pool: &AnyPool,
    resource: &ResourceConfig,
) -> Result<WarmShape, StartError> {
    use sqlx::Executor;
    let Some(warm) = &resource.warm else {
        return Ok(WarmShape::Keys);
    };
    let db = |e: sqlx::Error| StartError::Database(e.to_string());
    // Names and types: a column cast to another type in `warm` would
    // give a warmed hit another JSON than a miss.
    let columns = |d: &sqlx::Describe<sqlx::Any>| -> Vec<(String, String)> {
        use sqlx::TypeInfo;
        d.columns()
            .iter()
            .map(|c| (c.name().to_owned(), c.type_info().name().to_owned()))
            .collect()
    };
    let warm_columns = columns(&pool.describe(warm).await.map_err(db)?);
    if warm_columns.len() <= 1 {
        return Ok(WarmShape::Keys);
    }
    let load_columns = columns(&pool.describe(&resource.load).await.map_err(db)?);
    let has_key = warm_columns
        .iter()
        .any(|(name, _)| *name == resource.key_column);
    if warm_columns == load_columns && has_key {
        return Ok(WarmShape::Rows);
    }
    let list = |columns: &[(String, String)]| -> String {
        let named: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
        named.join(", ")
    };
    Ok(WarmShape::KeysOfOtherColumns(format!(
        "warm returns ({}), load returns ({})",
        list(&warm_columns),
        list(&load_columns)
    )))
}

/// Streams the whole rows a resource's `warm` query returns (see
/// [`WarmShape::Rows`]), each as its key and its JSON: the bytes a load of
/// that key gives.
pub fn warm_rows<'a>(
    pool: &'a AnyPool,
    sql: &'a str,
    key_type: KeyType,
    key_column: &'a str,
) -> impl Stream<Item = Result<(Key, Bytes), rampart::Error>> + Send + 'a {
    let mut shape: Option<JsonShape> = None;
    let mut scratch = Vec::with_capacity(256);
    sqlx::query(sql)
        .fetch(pool)
        .map(move |row| -> Result<(Key, Bytes), rampart::Error> {
            let row = row.map_err(rampart::Error::source)?;
            let key = Key::from_row(key_type, &row, key_column).map_err(rampart::Error::source)?;
            // Rows of one query share their shape: worked out once.
            let shape = match &mut shape {
                Some(shape) => shape,
                None => shape.insert(JsonShape::of(&row).map_err(rampart::Error::source)?),
            };
            let json = shape
                .to_bytes(&row, &mut scratch)
                .map_err(rampart::Error::source)?;
            Ok((key, json))
        })
}

/// The keys `sql` (a `warm` query of `shape`) names: the key column of
/// whole rows, else the first column.
pub fn warm_query_keys<'a>(
    pool: &'a AnyPool,
    sql: &'a str,
    resource: &'a ResourceConfig,
    shape: &WarmShape,
) -> impl Stream<Item = Result<Key, rampart::Error>> + Send + 'a {
    if *shape == WarmShape::Rows {
        warm_rows(pool, sql, resource.key_type, &resource.key_column)
            .map_ok(|(key, _)| key)
            .left_stream()
    } else {
        warm_keys(pool, sql, resource.key_type).right_stream()
    }
}

/// Runs a counting query (`warm_count`, the demo tables' sizes).
pub async fn count(pool: &AnyPool, sql: &str) -> Result<u64, StartError> {
    let db = |e: sqlx::Error| StartError::Database(e.to_string());
    let row = sqlx::query(sql).fetch_one(pool).await.map_err(db)?;
    let count: i64 = row.try_get(0).map_err(db)?;
    u64::try_from(count).map_err(|_| StartError::Database(format!("{sql}: negative count {count}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of slow waits reads as pressure, then no longer once no
    /// load has waited for a second.
    #[test]
    fn the_pool_wait_signal_fades_when_no_load_waits() {
        let waits = PoolWait::default();
        for _ in 0..20 {
            waits.record(Duration::from_millis(50));
        }
        assert!(waits.average() > Duration::from_millis(20));
        std::thread::sleep(POOL_WAIT_FRESH_FOR + Duration::from_millis(100));
        assert_eq!(waits.average(), Duration::ZERO);
    }

    /// The direct writer must give exactly the bytes the `Value` route
    /// gives: same member order, escaping, numbers, nulls, blobs, and the
    /// last of duplicate column names.
    #[tokio::test]
    async fn json_shape_writes_the_same_bytes_as_row_to_json() {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let queries = [
            "SELECT 42 AS id, 'Zoë \"quoted\"\n\\tab\u{1}' AS name, NULL AS gone, \
             1.5 AS ratio, -0.25e-3 AS tiny, x'00ff10' AS raw, '' AS empty, \
             9223372036854775807 AS big",
            "SELECT 1 AS a, 2 AS b, 3 AS a",
            "SELECT 'only' AS z",
        ];
        for sql in queries {
            let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
            let row = &rows[0];
            let expected = serde_json::to_vec(&row_to_json(row).unwrap()).unwrap();
            let shape = JsonShape::of(row).unwrap();
            let mut scratch = Vec::new();
            let got = shape.to_bytes(row, &mut scratch).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&expected),
                "{sql}"
            );
            assert_eq!(got.len(), expected.len());
        }
    }
}
