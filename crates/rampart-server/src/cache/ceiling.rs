//! The source's batch-read ceiling: how fast a plain client reads the rows a
//! warm-up reads, on one connection, in `IN` lists of the warm-up's batch
//! size, with no cache around it. `rampart warm --measure` prints it beside
//! the warm-up's own rate, in the same run, so the ratio means something on
//! a loaded machine (issue 15's goal is ≥ 0.8 of it). A `warm` query that
//! returns whole rows is read by the warm-up in one pass instead of batch
//! reads; its own plain read is then a second ceiling, printed beside.

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row, ValueRef};

use crate::cache::keys::Key;
use crate::cache::source::{warm_query_keys, WarmShape};
use crate::config::ResourceConfig;
use crate::start_error::StartError;

/// One resource's plain batch read.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    /// Rows the batch queries returned.
    pub rows: u64,
    /// Time spent in the batch queries (the key stream is read first and
    /// not counted).
    pub elapsed: Duration,
}

impl Ceiling {
    /// Rows per second.
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Reads every row `resource`'s warm query names, `batch_size` keys per
/// `load_many` query, on one pooled connection; each column of each row is
/// touched (its raw value and null flag) so that nothing is skipped that a
/// real client would decode. `shape` is the warm query's
/// ([`warm_shape`](crate::cache::source::warm_shape)). `None` when the
/// resource has no `warm` or no `load_many` query.
pub async fn measure(
    pool: &AnyPool,
    resource: &ResourceConfig,
    shape: &WarmShape,
    batch_size: usize,
) -> Result<Option<Ceiling>, StartError> {
    let (Some(warm), Some(template)) = (&resource.warm, &resource.load_many) else {
        return Ok(None);
    };
    let db = |e: sqlx::Error| StartError::Database(e.to_string());
    let keys: Vec<Key> = warm_query_keys(pool, warm, resource, shape)
        .try_collect()
        .await
        .map_err(|e| StartError::Database(e.to_string()))?;
    let mut connection = pool.acquire().await.map_err(db)?;
    let (mut rows, mut touched) = (0u64, 0u64);
    let started = Instant::now();
    for batch in keys.chunks(batch_size.max(1)) {
        let placeholders: Vec<String> = (1..=batch.len()).map(|i| format!("${i}")).collect();
        let sql = template.replace("{keys}", &placeholders.join(", "));
        let mut query = sqlx::query(&sql);
        for key in batch {
            query = key.bind(query);
        }
        for row in query.fetch_all(&mut *connection).await.map_err(db)? {
            rows += 1;
            touched += touch(&row).map_err(db)?;
        }
    }
    let elapsed = started.elapsed();
    // Keeps the column reads from being optimised away.
    std::hint::black_box(touched);
    Ok(Some(Ceiling { rows, elapsed }))
}

/// The other ceiling, for a `warm` query that returns whole rows (what the
/// warm-up then does instead of batch reads): the same query read by a
/// plain client on one connection, every column touched. `None` when the
/// warm query returns keys.
pub async fn measure_scan(
    pool: &AnyPool,
    resource: &ResourceConfig,
    shape: &WarmShape,
) -> Result<Option<Ceiling>, StartError> {
    let (Some(warm), WarmShape::Rows) = (&resource.warm, shape) else {
        return Ok(None);
    };
    let db = |e: sqlx::Error| StartError::Database(e.to_string());
    let mut connection = pool.acquire().await.map_err(db)?;
    let (mut rows, mut touched) = (0u64, 0u64);
    let started = Instant::now();
    let mut scan = sqlx::query(warm).fetch(&mut *connection);
    while let Some(row) = scan.try_next().await.map_err(db)? {
        rows += 1;
        touched += touch(&row).map_err(db)?;
    }
    let elapsed = started.elapsed();
    std::hint::black_box(touched);
    Ok(Some(Ceiling { rows, elapsed }))
}

/// Reads each column of `row` (its raw value and null flag), as a real
/// client would decode it; the count of non-null ones keeps the reads
/// from being optimised away.
fn touch(row: &AnyRow) -> Result<u64, sqlx::Error> {
    let mut present = 0;
    for i in 0..row.len() {
        present += u64::from(!row.try_get_raw(i)?.is_null());
    }
    Ok(present)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use sqlx::any::AnyPoolOptions;

    /// Every row the warm query names is read, in batches, and counted;
    /// a resource without a warm query has no ceiling.
    #[tokio::test]
    async fn the_ceiling_reads_every_warm_row_in_batches() {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT, \
             country TEXT, balance_cents INTEGER, created_at TEXT)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1234) \
             INSERT INTO users SELECT i, 'u' || i, i || '@x', 'FR', i, '2026' FROM n",
        )
        .execute(&pool)
        .await
        .unwrap();
        let config = Config::embedded().unwrap();
        let mut users = config
            .resources
            .iter()
            .find(|r| r.name == "users")
            .unwrap()
            .clone();
        users.warm = Some("SELECT id FROM users WHERE id > 34 ORDER BY id".into());
        let ceiling = measure(&pool, &users, &WarmShape::Keys, 500)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ceiling.rows, 1200);
        assert!(ceiling.rows_per_sec() > 0.0);
        users.warm = None;
        assert!(measure(&pool, &users, &WarmShape::Keys, 500)
            .await
            .unwrap()
            .is_none());
    }
}
