//! The database is the truth: `stock` (one row per SKU) and
//! `reservations` (one row per request key), on SQLite or PostgreSQL
//! through sqlx's `Any` driver.
//!
//! Two ways to reserve, both exact:
//! - [`Store::reserve_one`]: one transaction per request, a conditional
//!   decrement (`… WHERE available >= qty`) and the reservation row; zero
//!   rows changed means sold out.
//! - [`Store::reserve_batch`]: one transaction for many requests of one SKU
//!   (the group commit, `group_commit.rs`): the row is locked once, outcomes
//!   are decided in arrival order against what it holds, the rows inserted
//!   and the counts moved by the sum.
//!
//! The table's `CHECK` holds `available + held + sold = total` with no
//! count below zero, so even a bug here could not commit an oversell.
//!
//! A third way, for the drill's naive half only and off by default:
//! [`Store::reserve_read_then_write`], the incident's read-then-write that
//! does oversell (its lost updates keep the `CHECK`; the reservations
//! outnumber what left `available`).

use std::collections::HashMap;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::start_error::StartError;

/// One SKU's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub total: i64,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    pub version: i64,
}

/// One reservation's row, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReservationRow {
    pub id: String,
    pub sku: String,
    pub qty: i64,
    /// `held`, `confirmed`, `cancelled` or `expired`.
    pub state: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms; a hold not confirmed by then goes back into stock.
    pub expires_at: i64,
    #[serde(skip)]
    pub digest: i64,
    /// The request key it was made under (never served: a key is the
    /// buyer's, and only they should be able to replay it).
    #[serde(skip)]
    pub key: String,
}

/// One reservation request.
#[derive(Debug, Clone)]
pub struct Ask {
    pub sku: String,
    pub qty: i64,
    pub key: String,
    /// `rampart::stock::request_digest` of (sku, qty), as stored.
    pub digest: i64,
}

/// What became of one [`Ask`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reserved(ReservationRow),
    /// The key was answered before with this reservation.
    Replayed(ReservationRow),
    /// The key was used for another request.
    KeyReused,
    SoldOut {
        available: i64,
    },
    UnknownSku,
}

/// What a confirm or cancel found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Moved out of `held` now, or already in the state asked for.
    Done(ReservationRow),
    Unknown,
    /// Its time ran out (now or before); its units are back in stock.
    Expired,
    /// Already settled another way (`confirmed` / `cancelled`).
    Settled(String),
}

/// What a `PUT /v1/stock/{sku}` is conditional on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// `If-None-Match: *`: only if the SKU has no stock yet.
    Absent,
    /// `If-Match: "version"`: only if the row is at this version.
    Version(i64),
}

/// What a `PUT` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    Created(Counts),
    Changed(Counts),
    /// The precondition did not hold; the current row, if any.
    PreconditionFailed(Option<Counts>),
    /// The total is below what is held and sold.
    BelowCommitted {
        committed: i64,
    },
}

const RESERVATION_COLUMNS: &str = "id, sku, qty, state, created_at, expires_at, digest, idem_key";

/// The stock tables over a pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

fn db(e: sqlx::Error) -> StartError {
    StartError::Database(format!("stock tables: {e}"))
}

impl Store {
    /// The store over `pool` (tables made by [`Store::migrate`]).
    pub fn new(pool: AnyPool) -> Store {
        Store { pool }
    }

    /// Creates the tables if missing.
    pub async fn migrate(&self) -> Result<(), StartError> {
        for ddl in [
            "CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, total BIGINT NOT NULL, \
             available BIGINT NOT NULL, held BIGINT NOT NULL, sold BIGINT NOT NULL, \
             version BIGINT NOT NULL, \
             CHECK (available >= 0 AND held >= 0 AND sold >= 0 \
                    AND available + held + sold = total))",
            "CREATE TABLE IF NOT EXISTS reservations (id TEXT PRIMARY KEY, sku TEXT NOT NULL, \
             qty BIGINT NOT NULL, idem_key TEXT NOT NULL UNIQUE, digest BIGINT NOT NULL, \
             state TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS reservations_by_state ON reservations (state, expires_at)",
        ] {
            sqlx::query(ddl).execute(&self.pool).await.map_err(db)?;
        }
        Ok(())
    }

    /// Gives the first `skus` demo products (by SKU) their `products.stock`
    /// as stock, once: rows already there are kept.
    pub async fn seed_demo(&self, skus: u64) -> Result<(), StartError> {
        let limit = i64::try_from(skus).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO stock (sku, total, available, held, sold, version) \
             SELECT sku, stock, stock, 0, 0, 1 FROM products ORDER BY sku LIMIT $1 \
             ON CONFLICT DO NOTHING",
        )
        .bind(limit)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// The SKU's counts.
    pub async fn counts(&self, sku: &str) -> Result<Option<Counts>, sqlx::Error> {
        let row =
            sqlx::query("SELECT total, available, held, sold, version FROM stock WHERE sku = $1")
                .bind(sku)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| counts(&r)).transpose()
    }

    /// The reservation made under `key`.
    pub async fn by_key(&self, key: &str) -> Result<Option<ReservationRow>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE idem_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| reservation(&r)).transpose()
    }

    /// Sets a SKU's total under `precondition`; held and sold are kept.
    pub async fn put_total(
        &self,
        sku: &str,
        total: i64,
        precondition: Precondition,
    ) -> Result<PutOutcome, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        match precondition {
            Precondition::Absent => {
                let inserted = sqlx::query(
                    "INSERT INTO stock (sku, total, available, held, sold, version) \
                     VALUES ($1, $2, $2, 0, 0, 1) ON CONFLICT DO NOTHING",
                )
                .bind(sku)
                .bind(total)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let now = locked_counts(&mut tx, sku).await?;
                tx.commit().await?;
                Ok(match (inserted, now) {
                    (1, Some(c)) => PutOutcome::Created(c),
                    (_, now) => PutOutcome::PreconditionFailed(now),
                })
            }
            Precondition::Version(version) => {
                let Some(now) = locked_counts(&mut tx, sku).await? else {
                    return Ok(PutOutcome::PreconditionFailed(None));
                };
                if now.version != version {
                    return Ok(PutOutcome::PreconditionFailed(Some(now)));
                }
                let committed = now.held + now.sold;
                if total < committed {
                    return Ok(PutOutcome::BelowCommitted { committed });
                }
                sqlx::query(
                    "UPDATE stock SET total = $2, available = $2 - held - sold, \
                     version = version + 1 WHERE sku = $1",
                )
                .bind(sku)
                .bind(total)
                .execute(&mut *tx)
                .await?;
                let changed = locked_counts(&mut tx, sku).await?;
                tx.commit().await?;
                Ok(changed.map_or(PutOutcome::PreconditionFailed(None), PutOutcome::Changed))
            }
        }
    }

    /// One request, one transaction: the conditional decrement and the row.
    pub async fn reserve_one(
        &self,
        ask: &Ask,
        now_ms: i64,
        hold_ms: i64,
    ) -> Result<Outcome, sqlx::Error> {
        if let Some(found) = self.by_key(&ask.key).await? {
            return Ok(replay(found, ask));
        }
        let mut tx = self.pool.begin().await?;
        let decremented = sqlx::query(
            "UPDATE stock SET available = available - $2, held = held + $2, \
             version = version + 1 WHERE sku = $1 AND available >= $2",
        )
        .bind(&ask.sku)
        .bind(ask.qty)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if decremented == 0 {
            tx.rollback().await?;
            return Ok(match self.counts(&ask.sku).await? {
                Some(c) => Outcome::SoldOut {
                    available: c.available,
                },
                None => Outcome::UnknownSku,
            });
        }
        let row = new_row(ask, now_ms, hold_ms);
        let inserted = insert_rows(&mut tx, std::slice::from_ref(&(ask, &row))).await;
        match inserted {
            Ok(()) => {
                tx.commit().await?;
                Ok(Outcome::Reserved(row))
            }
            Err(e) if is_unique_violation(&e) => {
                // The same key committed by another request meanwhile: the
                // decrement is rolled back, the first answer stands.
                tx.rollback().await?;
                match self.by_key(&ask.key).await? {
                    Some(found) => Ok(replay(found, ask)),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// **The drill's naive half only** (`[stock] naive_read_then_write`):
    /// the read-then-write that oversells. The counts are read, then
    /// written back from what was read, in separate statements outside any
    /// transaction, so two buyers who read the same `available` both sell
    /// the same unit. Kept beside the exact paths so the drill replays the
    /// incident on the real service, not on a fake.
    pub async fn reserve_read_then_write(
        &self,
        ask: &Ask,
        now_ms: i64,
        hold_ms: i64,
    ) -> Result<Outcome, sqlx::Error> {
        if let Some(found) = self.by_key(&ask.key).await? {
            return Ok(replay(found, ask));
        }
        let Some(read) = self.counts(&ask.sku).await? else {
            return Ok(Outcome::UnknownSku);
        };
        if read.available < ask.qty {
            return Ok(Outcome::SoldOut {
                available: read.available,
            });
        }
        // No `WHERE available >= qty`, no lock since the read: the write
        // sets what this buyer saw, minus its own units (the lost update).
        sqlx::query(
            "UPDATE stock SET available = $2, held = $3, version = version + 1 WHERE sku = $1",
        )
        .bind(&ask.sku)
        .bind(read.available - ask.qty)
        .bind(read.held + ask.qty)
        .execute(&self.pool)
        .await?;
        let row = new_row(ask, now_ms, hold_ms);
        let mut tx = self.pool.begin().await?;
        insert_rows(&mut tx, std::slice::from_ref(&(ask, &row))).await?;
        tx.commit().await?;
        Ok(Outcome::Reserved(row))
    }

    /// Many requests for one SKU (`asks` all name `sku`), one transaction,
    /// outcomes in the order asked.
    pub async fn reserve_batch(
        &self,
        sku: &str,
        asks: &[Ask],
        now_ms: i64,
        hold_ms: i64,
    ) -> Result<Vec<Outcome>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Locks the row (PostgreSQL) or the database (SQLite) for the
        // transaction: no other writer sees `available` until commit.
        let Some(mut left) = sqlx::query(
            "UPDATE stock SET available = available WHERE sku = $1 RETURNING available",
        )
        .bind(sku)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get::<i64, _>(0))
        .transpose()?
        else {
            tx.rollback().await?;
            return Ok(vec![Outcome::UnknownSku; asks.len()]);
        };
        let mut known: HashMap<String, ReservationRow> = HashMap::new();
        for chunk in asks.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE idem_key IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for ask in chunk {
                query = query.bind(&ask.key);
            }
            for row in query.fetch_all(&mut *tx).await? {
                known.insert(row.try_get("idem_key")?, reservation(&row)?);
            }
        }
        let mut outcomes = Vec::with_capacity(asks.len());
        let mut fresh: Vec<(usize, ReservationRow)> = Vec::new();
        let mut taken = 0i64;
        for ask in asks {
            if let Some(found) = known.get(&ask.key) {
                outcomes.push(replay(found.clone(), ask));
            } else if ask.qty <= left {
                left -= ask.qty;
                taken += ask.qty;
                let row = new_row(ask, now_ms, hold_ms);
                known.insert(ask.key.clone(), row.clone());
                fresh.push((outcomes.len(), row.clone()));
                outcomes.push(Outcome::Reserved(row));
            } else {
                outcomes.push(Outcome::SoldOut { available: left });
            }
        }
        if taken > 0 {
            let pairs: Vec<(&Ask, &ReservationRow)> =
                fresh.iter().map(|(i, row)| (&asks[*i], row)).collect();
            for chunk in pairs.chunks(100) {
                insert_rows(&mut tx, chunk).await?;
            }
            sqlx::query(
                "UPDATE stock SET available = available - $2, held = held + $2, \
                 version = version + 1 WHERE sku = $1",
            )
            .bind(sku)
            .bind(taken)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Confirms (`to = "confirmed"`) or cancels (`"cancelled"`) a held
    /// reservation; one past its time expires instead.
    pub async fn settle(&self, id: &str, to: &str, now_ms: i64) -> Result<Settle, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(&format!(
            "UPDATE reservations SET state = $2 WHERE id = $1 AND state = 'held' \
             AND expires_at > $3 RETURNING {RESERVATION_COLUMNS}"
        ))
        .bind(id)
        .bind(to)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = moved {
            let row = reservation(&row)?;
            let counts = if to == "confirmed" {
                "held = held - $2, sold = sold + $2"
            } else {
                "held = held - $2, available = available + $2"
            };
            sqlx::query(&format!(
                "UPDATE stock SET {counts}, version = version + 1 WHERE sku = $1"
            ))
            .bind(&row.sku)
            .bind(row.qty)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Settle::Done(row));
        }
        tx.rollback().await?;
        let found = sqlx::query(&format!(
            "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(found) = found.map(|r| reservation(&r)).transpose()? else {
            return Ok(Settle::Unknown);
        };
        Ok(match found.state.as_str() {
            state if state == to => Settle::Done(found),
            "held" | "expired" => {
                // Held past its time: expire it (and everything else due).
                self.reap(now_ms).await?;
                Settle::Expired
            }
            other => Settle::Settled(other.to_owned()),
        })
    }

    /// Returns every hold past its time into stock, in one transaction;
    /// the number of reservations expired.
    pub async fn reap(&self, now_ms: i64) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "UPDATE reservations SET state = 'expired' WHERE state = 'held' \
             AND expires_at <= $1 RETURNING sku, qty",
        )
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut per_sku: HashMap<String, i64> = HashMap::new();
        for row in &rows {
            *per_sku.entry(row.try_get("sku")?).or_default() += row.try_get::<i64, _>("qty")?;
        }
        for (sku, qty) in &per_sku {
            sqlx::query(
                "UPDATE stock SET held = held - $2, available = available + $2, \
                 version = version + 1 WHERE sku = $1",
            )
            .bind(sku)
            .bind(qty)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Every SKU with stock.
    pub async fn skus(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT sku FROM stock")
            .fetch_all(&self.pool)
            .await
    }

    /// A SKU's available units and live holds (request key, expiry, qty),
    /// read in one transaction: what the Redis gate is rebuilt from.
    pub async fn gate_view(
        &self,
        sku: &str,
    ) -> Result<Option<(i64, Vec<(String, i64, i64)>)>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let Some(counts) = locked_counts(&mut tx, sku).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let holds = sqlx::query(
            "SELECT idem_key, expires_at, qty FROM reservations WHERE sku = $1 AND state = 'held'",
        )
        .bind(sku)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        tx.commit().await?;
        Ok(Some((counts.available, holds)))
    }

    /// Deletes settled reservations created before `before_ms`: their keys
    /// are forgotten (a retry after that is a new request).
    pub async fn forget(&self, before_ms: i64) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM reservations WHERE state <> 'held' AND created_at < $1")
                .bind(before_ms)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}

async fn locked_counts(
    tx: &mut Transaction<'static, Any>,
    sku: &str,
) -> Result<Option<Counts>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE stock SET version = version WHERE sku = $1 \
         RETURNING total, available, held, sold, version",
    )
    .bind(sku)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| counts(&r)).transpose()
}

fn replay(found: ReservationRow, ask: &Ask) -> Outcome {
    if found.digest == ask.digest {
        Outcome::Replayed(found)
    } else {
        Outcome::KeyReused
    }
}

fn new_row(ask: &Ask, now_ms: i64, hold_ms: i64) -> ReservationRow {
    ReservationRow {
        id: new_id(),
        sku: ask.sku.clone(),
        qty: ask.qty,
        state: "held".to_owned(),
        created_at: now_ms,
        expires_at: now_ms.saturating_add(hold_ms),
        digest: ask.digest,
        key: ask.key.clone(),
    }
}

/// `r` and 128 random bits in hex: unguessable, so one buyer cannot
/// confirm or cancel another's reservation by counting.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No OS randomness (never seen on a supported platform): still
        // unique, from the clock and a counter.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (t ^ (u128::from(n) << 64)).to_le_bytes();
    }
    let mut id = String::with_capacity(33);
    id.push('r');
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

async fn insert_rows(
    tx: &mut Transaction<'static, Any>,
    rows: &[(&Ask, &ReservationRow)],
) -> Result<(), sqlx::Error> {
    let values: Vec<String> = (0..rows.len())
        .map(|i| {
            let b = i * 7;
            format!(
                "(${}, ${}, ${}, ${}, ${}, 'held', ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO reservations (id, sku, qty, idem_key, digest, state, created_at, expires_at) \
         VALUES {}",
        values.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for (ask, row) in rows {
        query = query
            .bind(&row.id)
            .bind(&row.sku)
            .bind(row.qty)
            .bind(&ask.key)
            .bind(row.digest)
            .bind(row.created_at)
            .bind(row.expires_at);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

fn counts(row: &AnyRow) -> Result<Counts, sqlx::Error> {
    Ok(Counts {
        total: row.try_get("total")?,
        available: row.try_get("available")?,
        held: row.try_get("held")?,
        sold: row.try_get("sold")?,
        version: row.try_get("version")?,
    })
}

fn reservation(row: &AnyRow) -> Result<ReservationRow, sqlx::Error> {
    Ok(ReservationRow {
        id: row.try_get("id")?,
        sku: row.try_get("sku")?,
        qty: row.try_get("qty")?,
        state: row.try_get("state")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        digest: row.try_get("digest")?,
        key: row.try_get("idem_key")?,
    })
}
