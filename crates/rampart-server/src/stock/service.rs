//! The stock capability's one entry point for handlers: the request-key
//! table in front, then the store (grouped or one transaction a request).
//!
//! Request keys are checked twice. In process ([`Idempotency`]): a retry
//! while its first request is still running is told so (409) instead of
//! queueing a second attempt, and a replay is answered without a query. In
//! the database (`reservations.idem_key UNIQUE`): the truth, across
//! instances and restarts. A refusal (sold out, unknown SKU) is not
//! remembered: the key may be retried and may succeed once stock returns.

use std::time::Duration;

use rampart::clock::{Clock, WallClock};
use rampart::stock::{request_digest, Begin, Idempotency, IdempotencyConfig};
use sqlx::AnyPool;

use super::config::StockSettings;
use super::group_commit::{GroupCommit, GroupSettings};
use super::store::{Ask, Counts, Outcome, Precondition, PutOutcome, ReservationRow, Settle, Store};
use crate::error::Error;
use crate::start_error::StartError;

/// A reservation as answered.
#[derive(Debug, Clone)]
pub struct Reserved {
    pub reservation: ReservationRow,
    /// True when the key had been answered before.
    pub replayed: bool,
}

/// The stock service of one process.
pub struct Stock {
    store: Store,
    group: Option<GroupCommit>,
    keys: Idempotency<ReservationRow>,
    settings: StockSettings,
    clock: WallClock,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn store_error(e: sqlx::Error) -> Error {
    Error::StockStore(e.to_string())
}

impl Stock {
    /// Creates the tables (and the demo stock when `demo`); run once at
    /// start, before [`Stock::new`]'s first request.
    pub async fn prepare(
        pool: &AnyPool,
        settings: &StockSettings,
        demo: bool,
    ) -> Result<(), StartError> {
        let store = Store::new(pool.clone());
        store.migrate().await?;
        if demo && settings.demo_skus > 0 {
            store.seed_demo(settings.demo_skus).await?;
        }
        Ok(())
    }

    /// The service over `pool`.
    pub fn new(pool: AnyPool, settings: StockSettings) -> Stock {
        let store = Store::new(pool);
        let group = settings.group_commit.then(|| {
            GroupCommit::new(
                store.clone(),
                GroupSettings {
                    window: settings.group_window,
                    max: settings.group_max,
                    hold_ms: millis(settings.hold_for),
                },
            )
        });
        Stock {
            keys: Idempotency::new(IdempotencyConfig {
                keep_for: settings.key_ttl,
                max_keys: settings.max_keys,
            }),
            store,
            group,
            settings,
            clock: WallClock::new(Clock::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &StockSettings {
        &self.settings
    }

    /// The store, for the reaper and tests.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Wall-clock Unix ms.
    pub fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.unix_ms()).unwrap_or(i64::MAX)
    }

    /// A SKU's counts.
    pub async fn counts(&self, sku: &str) -> Result<Counts, Error> {
        self.store
            .counts(sku)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Error::UnknownSku(sku.to_owned()))
    }

    /// Reserves `qty` of `sku` under the request key `key`.
    pub async fn reserve(&self, sku: &str, qty: i64, key: &str) -> Result<Reserved, Error> {
        let now_ms = self.now_ms();
        // The digest is stored as i64 (same bits): SQL has no u64.
        let digest = request_digest(&[sku.as_bytes(), &qty.to_le_bytes()]) as i64;
        let ticket = match self.keys.begin(key, digest as u64, now_ms as u64) {
            Ok(Begin::Started(ticket)) => ticket,
            Ok(Begin::Replay(reservation)) => {
                return Ok(Reserved {
                    reservation,
                    replayed: true,
                })
            }
            Ok(Begin::InFlight) => return Err(Error::IdempotencyInFlight(key.to_owned())),
            Ok(Begin::Conflict) => return Err(Error::IdempotencyKeyReused(key.to_owned())),
            Err(_) => return Err(Error::Overloaded),
        };
        let ask = Ask {
            sku: sku.to_owned(),
            qty,
            key: key.to_owned(),
            digest,
        };
        let outcome = match &self.group {
            Some(group) => group.reserve(ask, now_ms).await?,
            None => self
                .store
                .reserve_one(&ask, now_ms, millis(self.settings.hold_for))
                .await
                .map_err(store_error)?,
        };
        // Dropping the ticket unfinished (every refusal) forgets the key.
        match outcome {
            Outcome::Reserved(reservation) => {
                ticket.finish(reservation.clone(), now_ms as u64);
                Ok(Reserved {
                    reservation,
                    replayed: false,
                })
            }
            Outcome::Replayed(reservation) => {
                ticket.finish(reservation.clone(), now_ms as u64);
                Ok(Reserved {
                    reservation,
                    replayed: true,
                })
            }
            Outcome::KeyReused => Err(Error::IdempotencyKeyReused(key.to_owned())),
            Outcome::SoldOut { available } => Err(Error::SoldOut {
                sku: sku.to_owned(),
                available,
                asked: qty,
            }),
            Outcome::UnknownSku => Err(Error::UnknownSku(sku.to_owned())),
        }
    }

    /// Confirms (`confirm = true`) or cancels a reservation.
    pub async fn settle(&self, id: &str, confirm: bool) -> Result<ReservationRow, Error> {
        let to = if confirm { "confirmed" } else { "cancelled" };
        match self
            .store
            .settle(id, to, self.now_ms())
            .await
            .map_err(store_error)?
        {
            Settle::Done(row) => Ok(row),
            Settle::Unknown => Err(Error::UnknownReservation(id.to_owned())),
            Settle::Expired => Err(Error::ReservationExpired(id.to_owned())),
            Settle::Settled(state) => Err(Error::ReservationSettled {
                id: id.to_owned(),
                state,
            }),
        }
    }

    /// Sets a SKU's total; `Ok((counts, created))`.
    pub async fn put_total(
        &self,
        sku: &str,
        total: i64,
        precondition: Precondition,
    ) -> Result<(Counts, bool), Error> {
        match self
            .store
            .put_total(sku, total, precondition)
            .await
            .map_err(store_error)?
        {
            PutOutcome::Created(c) => Ok((c, true)),
            PutOutcome::Changed(c) => Ok((c, false)),
            PutOutcome::BelowCommitted { committed } => {
                Err(Error::TotalBelowCommitted { total, committed })
            }
            PutOutcome::PreconditionFailed(now) => Err(Error::PreconditionFailed(match now {
                Some(c) => format!("{sku:?} is at version \"{}\"", c.version),
                None => format!("{sku:?} has no stock yet (create it with If-None-Match: *)"),
            })),
        }
    }

    /// One pass of the reaper: expired holds back into stock, keys past
    /// their time forgotten. The number of holds expired.
    pub async fn reap(&self) -> Result<u64, sqlx::Error> {
        let now_ms = self.now_ms();
        let expired = self.store.reap(now_ms).await?;
        self.store
            .forget(now_ms.saturating_sub(millis(self.settings.key_ttl)))
            .await?;
        self.keys.expire(now_ms as u64);
        Ok(expired)
    }
}
