//! The stock capability's one entry point for handlers: the request-key
//! table in front, then the store (grouped or one transaction a request).
//!
//! With Redis (`stock.redis_gate`), a Redis gate (`rampart_redis::stock`)
//! checks and holds first: a refusal there costs the database one indexed
//! read (is the key already a reservation, made while Redis was down?)
//! instead of a write transaction on the hot row, and refusals are most of
//! a sale's traffic once it is sold out. Whoever the gate
//! lets through still reserves in SQL; when SQL refuses, the gate gets the
//! units back. Redis down (its breaker open): straight to SQL, exact.
//!
//! Request keys are checked twice. In process ([`Idempotency`]): a retry
//! while its first request is still running is told so (409) instead of
//! queueing a second attempt, and a replay is answered without a query. In
//! the database (`reservations.idem_key UNIQUE`): the truth, across
//! instances and restarts. A refusal (sold out, unknown SKU) is not
//! remembered: the key may be retried and may succeed once stock returns.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use rampart::clock::{Clock, WallClock};
use rampart::stock::{request_digest, Begin, Idempotency, IdempotencyConfig};
use rampart_redis::stock::{GateAnswer, RedisStock};
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
    gate: Option<RedisStock>,
    /// SKUs this process reserved through the gate: the ones its reaper
    /// and reconcile look after.
    touched: Mutex<HashSet<String>>,
    /// SKUs whose gate missed a give-back (a release that failed: Redis
    /// timed out, or its breaker was open): the gate reads low, refusing
    /// units SQL could sell, so they are rebuilt from SQL at the reaper's
    /// next tick instead of waiting for the periodic reconcile.
    drifted: Mutex<HashSet<String>>,
}

/// What the Redis gate decided for one reservation.
enum Gate {
    /// Go to SQL; `held` when the gate holds units that SQL must take or
    /// the gate must get back.
    Pass {
        held: bool,
    },
    SoldOut(i64),
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The SKUs in one of the gate's bookkeeping sets, copied out (the lock is
/// not held across the Redis calls made for each).
fn listed(set: &Mutex<HashSet<String>>) -> Vec<String> {
    let set = set
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    set.iter().cloned().collect()
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

    /// The service over `pool`, with the Redis gate when given.
    pub fn new(pool: AnyPool, settings: StockSettings, gate: Option<RedisStock>) -> Stock {
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
            gate,
            touched: Mutex::new(HashSet::new()),
            drifted: Mutex::new(HashSet::new()),
        }
    }

    /// The Redis gate, if any.
    pub fn gate(&self) -> Option<&RedisStock> {
        self.gate.as_ref()
    }

    /// Rebuilds the gate's view of `sku` from SQL; false if it has no stock.
    pub async fn reconcile(&self, sku: &str) -> Result<bool, Error> {
        let Some(gate) = &self.gate else {
            return Ok(true);
        };
        let Some((available, holds)) = self.store.gate_view(sku).await.map_err(store_error)? else {
            return Ok(false);
        };
        gate.load(sku, available, &holds).await?;
        Ok(true)
    }

    /// Rebuilds the gate for every SKU in SQL (at start).
    pub async fn reconcile_all(&self) -> Result<(), Error> {
        if self.gate.is_none() {
            return Ok(());
        }
        for sku in self.store.skus().await.map_err(store_error)? {
            self.reconcile(&sku).await?;
        }
        Ok(())
    }

    /// One pass of the gate's upkeep for the SKUs this process sold:
    /// expired holds back (`reconcile` false), or rebuilt from SQL; a SKU
    /// whose gate missed a give-back is rebuilt either way.
    pub async fn gate_upkeep(&self, reconcile: bool) -> Result<(), Error> {
        let Some(gate) = &self.gate else {
            return Ok(());
        };
        let now_ms = self.now_ms();
        // A give-back this instance failed may be for a SKU another
        // instance sold (a cancel of its reservation): rebuilt here too.
        let mut skus = listed(&self.touched);
        for sku in listed(&self.drifted) {
            if !skus.contains(&sku) {
                skus.push(sku);
            }
        }
        for sku in skus {
            // Taken out before the rebuild: a release failing during it
            // marks the SKU again, for the next tick.
            let drifted = self
                .drifted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&sku);
            if reconcile || drifted {
                if let Err(e) = self.reconcile(&sku).await {
                    if drifted {
                        self.mark_drifted(&sku);
                    }
                    return Err(e);
                }
            } else {
                gate.reap(&sku, now_ms).await?;
            }
        }
        Ok(())
    }

    /// Gives `key`'s units back to the gate; when Redis cannot be told,
    /// the SKU is marked for a rebuild at the reaper's next tick.
    async fn gate_release(
        &self,
        gate: &RedisStock,
        sku: &str,
        key: &str,
        qty: i64,
        credit: bool,
        forget: bool,
    ) {
        if let Err(e) = gate.release(sku, key, qty, credit, forget).await {
            tracing::debug!("stock: Redis gate release: {e}; rebuilding {sku:?} from SQL soon");
            if credit {
                self.mark_drifted(sku);
            }
        }
    }

    fn mark_drifted(&self, sku: &str) {
        self.drifted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(sku.to_owned());
    }

    async fn ask_gate(
        &self,
        gate: &RedisStock,
        sku: &str,
        qty: i64,
        key: &str,
        expires_ms: i64,
    ) -> Result<Gate, Error> {
        {
            let mut touched = self
                .touched
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !touched.contains(sku) {
                touched.insert(sku.to_owned());
            }
        }
        for _ in 0..2 {
            let answer = match gate.reserve(sku, key, qty, expires_ms).await {
                Ok(answer) => answer,
                // Redis down or its breaker open: SQL alone, still exact.
                Err(e) => {
                    tracing::debug!("stock: Redis gate skipped: {e}");
                    return Ok(Gate::Pass { held: false });
                }
            };
            match answer {
                GateAnswer::Held { .. } => return Ok(Gate::Pass { held: true }),
                GateAnswer::Seen => return Ok(Gate::Pass { held: false }),
                GateAnswer::SoldOut { available } => return Ok(Gate::SoldOut(available)),
                GateAnswer::NotLoaded => {
                    if !self.reconcile(sku).await.unwrap_or(true) {
                        return Err(Error::UnknownSku(sku.to_owned()));
                    }
                }
            }
        }
        Ok(Gate::Pass { held: false })
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
        let hold_ms = millis(self.settings.hold_for);
        let held_in_gate = match &self.gate {
            None => false,
            Some(gate) => match self
                .ask_gate(gate, sku, qty, key, now_ms.saturating_add(hold_ms))
                .await?
            {
                Gate::Pass { held } => held,
                Gate::SoldOut(available) => {
                    // A key answered while Redis was down is only in SQL.
                    return match self.store.by_key(key).await.map_err(store_error)? {
                        Some(row) if row.digest == digest => {
                            ticket.finish(row.clone(), now_ms as u64);
                            Ok(Reserved {
                                reservation: row,
                                replayed: true,
                            })
                        }
                        Some(_) => Err(Error::IdempotencyKeyReused(key.to_owned())),
                        None => Err(Error::SoldOut {
                            sku: sku.to_owned(),
                            available,
                            asked: qty,
                        }),
                    };
                }
            },
        };
        let ask = Ask {
            sku: sku.to_owned(),
            qty,
            key: key.to_owned(),
            digest,
        };
        let outcome = match &self.group {
            // The drill's naive half: the oversell on purpose (config.rs).
            _ if self.settings.naive_read_then_write => self
                .store
                .reserve_read_then_write(&ask, now_ms, hold_ms)
                .await
                .map_err(store_error),
            Some(group) => group.reserve(ask, now_ms).await,
            None => self
                .store
                .reserve_one(&ask, now_ms, hold_ms)
                .await
                .map_err(store_error),
        };
        if held_in_gate && !matches!(outcome, Ok(Outcome::Reserved(_))) {
            // SQL did not take what the gate held: give it back (a failure
            // here leaves the gate short until the reaper's next tick).
            if let Some(gate) = &self.gate {
                self.gate_release(gate, sku, key, qty, true, true).await;
            }
        }
        let outcome = outcome?;
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
            Settle::Done(row) => {
                if let Some(gate) = &self.gate {
                    // Sold: the hold goes; cancelled: the units come back.
                    // A failed give-back leaves the gate short until the
                    // reaper's next tick rebuilds it.
                    self.gate_release(gate, &row.sku, &row.key, row.qty, !confirm, false)
                        .await;
                }
                Ok(row)
            }
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
