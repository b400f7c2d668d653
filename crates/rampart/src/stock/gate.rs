//! The in-process gate: per-SKU counts and the reservations held against
//! them.
//!
//! Two locks, never held together: the SKU counts and the reservations.
//! Every change to the counts keeps `available + held + sold = total` at
//! each release of the counts lock; a reservation's state moves out of
//! `Held` exactly once, under the reservations lock, and only the caller
//! that moved it touches the counts afterwards, so a cancel racing an
//! expiry (or a confirm) returns the units once (`tests/loom_stock.rs`).

use std::collections::HashMap;
use std::time::Duration;

use super::idempotency::{request_digest, Begin, Idempotency, IdempotencyConfig};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::Mutex;

/// The gate's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockConfig {
    /// How long a reservation is held before it expires back into stock.
    /// Default 10 minutes.
    pub hold_for: Duration,
    /// Request keys: how long kept, how many at most. A reservation is
    /// remembered (for confirm, cancel and replays) as long as its key.
    pub idempotency: IdempotencyConfig,
}

impl Default for StockConfig {
    fn default() -> Self {
        StockConfig {
            hold_for: Duration::from_secs(10 * 60),
            idempotency: IdempotencyConfig::default(),
        }
    }
}

/// One SKU's counts: `available + held + sold = total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Units set by the owner.
    pub total: u64,
    /// Units anyone may reserve now.
    pub available: u64,
    /// Units reserved, neither confirmed nor returned yet.
    pub held: u64,
    /// Units confirmed.
    pub sold: u64,
    /// Bumped by every change.
    pub version: u64,
}

/// Where a reservation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservationState {
    /// Holding its units until confirmed, cancelled or expired.
    Held,
    /// Sold.
    Confirmed,
    /// Returned by its holder.
    Cancelled,
    /// Returned because its time ran out.
    Expired,
}

impl ReservationState {
    /// The lower-case name (`held`, `confirmed`, …), as stored and served.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationState::Held => "held",
            ReservationState::Confirmed => "confirmed",
            ReservationState::Cancelled => "cancelled",
            ReservationState::Expired => "expired",
        }
    }
}

/// Units of one SKU held for one request key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Unique in this gate.
    pub id: u64,
    /// The SKU.
    pub sku: String,
    /// Units held.
    pub qty: u64,
    /// The request key it was made under.
    pub key: String,
    /// When it expires unless confirmed or cancelled (Unix ms).
    pub expires_ms: u64,
}

/// A reservation as [`StockGate::reserve`] answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// The reservation (the first answer's, for a replay).
    pub reservation: Reservation,
    /// True when the key had been answered before: nothing new was held.
    pub replayed: bool,
}

/// Why the gate refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    /// No stock was ever set for the SKU.
    #[error("no stock for SKU {0:?}")]
    UnknownSku(String),
    /// Fewer units are available than asked for.
    #[error("sold out: {available} available, {asked} asked")]
    SoldOut {
        /// Units available now.
        available: u64,
        /// Units asked for.
        asked: u64,
    },
    /// A quantity of zero.
    #[error("a reservation holds at least one unit")]
    ZeroQuantity,
    /// The key was used for another request.
    #[error("the request key {0:?} was used for another request")]
    KeyReused(String),
    /// The key's first request is still being answered.
    #[error("the request key {0:?} is being answered")]
    InFlight(String),
    /// Every slot of the idempotency table holds a live key.
    #[error("too many live request keys ({0})")]
    KeysFull(usize),
    /// No reservation by that id (never made, or forgotten with its key).
    #[error("no reservation {0}")]
    UnknownReservation(u64),
    /// Its time ran out; its units went back into stock.
    #[error("reservation {0} expired")]
    Expired(u64),
    /// It was already confirmed or cancelled.
    #[error("reservation {id} is already {}", .state.as_str())]
    Settled {
        /// The reservation.
        id: u64,
        /// Its final state.
        state: ReservationState,
    },
    /// A total below what is already held and sold.
    #[error("total {total} is below the {committed} units held or sold")]
    TotalBelowCommitted {
        /// Asked for.
        total: u64,
        /// Held + sold now.
        committed: u64,
    },
}

#[derive(Debug)]
struct Record {
    reservation: Reservation,
    state: ReservationState,
}

/// In-process stock per SKU; see the module docs. Share it with an `Arc`.
#[derive(Debug)]
pub struct StockGate {
    config: StockConfig,
    skus: Mutex<HashMap<String, Counts>>,
    reservations: Mutex<HashMap<u64, Record>>,
    keys: Idempotency<Reservation>,
    next_id: AtomicU64,
}

impl StockGate {
    /// An empty gate.
    pub fn new(config: StockConfig) -> Self {
        StockGate {
            keys: Idempotency::new(config.idempotency.clone()),
            config,
            skus: Mutex::new(HashMap::new()),
            reservations: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// The SKU's counts, if it has stock.
    pub fn counts(&self, sku: &str) -> Option<Counts> {
        self.skus.lock().get(sku).copied()
    }

    /// Sets a SKU's total, creating it; what is held or sold is kept, the
    /// rest is available.
    pub fn set_total(&self, sku: &str, total: u64) -> Result<Counts, StockError> {
        let mut skus = self.skus.lock();
        let counts = skus.entry(sku.to_owned()).or_default();
        let committed = counts.held + counts.sold;
        if total < committed {
            return Err(StockError::TotalBelowCommitted { total, committed });
        }
        counts.total = total;
        counts.available = total - committed;
        counts.version += 1;
        Ok(*counts)
    }

    /// Holds `qty` units of `sku` for the request key `key`, until
    /// `now_ms + hold_for`. The same key and request again answers the
    /// first reservation (`replayed`); a refusal is not remembered, so the
    /// key can be retried.
    pub fn reserve(
        &self,
        sku: &str,
        qty: u64,
        key: &str,
        now_ms: u64,
    ) -> Result<Reserved, StockError> {
        if qty == 0 {
            return Err(StockError::ZeroQuantity);
        }
        let digest = request_digest(&[sku.as_bytes(), &qty.to_le_bytes()]);
        let ticket = match self.keys.begin(key, digest, now_ms) {
            Ok(Begin::Started(ticket)) => ticket,
            Ok(Begin::Replay(reservation)) => {
                return Ok(Reserved {
                    reservation,
                    replayed: true,
                })
            }
            Ok(Begin::InFlight) => return Err(StockError::InFlight(key.to_owned())),
            Ok(Begin::Conflict) => return Err(StockError::KeyReused(key.to_owned())),
            Err(full) => return Err(StockError::KeysFull(full.max_keys)),
        };
        {
            let mut skus = self.skus.lock();
            let counts = skus
                .get_mut(sku)
                .ok_or_else(|| StockError::UnknownSku(sku.to_owned()))?;
            if counts.available < qty {
                return Err(StockError::SoldOut {
                    available: counts.available,
                    asked: qty,
                });
            }
            counts.available -= qty;
            counts.held += qty;
            counts.version += 1;
        }
        let hold_ms = u64::try_from(self.config.hold_for.as_millis()).unwrap_or(u64::MAX);
        let reservation = Reservation {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            sku: sku.to_owned(),
            qty,
            key: key.to_owned(),
            expires_ms: now_ms.saturating_add(hold_ms),
        };
        self.reservations.lock().insert(
            reservation.id,
            Record {
                reservation: reservation.clone(),
                state: ReservationState::Held,
            },
        );
        ticket.finish(reservation.clone(), now_ms);
        Ok(Reserved {
            reservation,
            replayed: false,
        })
    }

    /// Sells a held reservation. Confirming a confirmed one again is fine
    /// (the same answer); an expired one is [`StockError::Expired`].
    pub fn confirm(&self, id: u64, now_ms: u64) -> Result<Reservation, StockError> {
        self.settle(id, now_ms, ReservationState::Confirmed)
    }

    /// Returns a held reservation's units. Cancelling twice is fine.
    pub fn cancel(&self, id: u64, now_ms: u64) -> Result<Reservation, StockError> {
        self.settle(id, now_ms, ReservationState::Cancelled)
    }

    /// The reservation and its state now (an unexpired hold is `Held`).
    pub fn reservation(&self, id: u64) -> Option<(Reservation, ReservationState)> {
        self.reservations
            .lock()
            .get(&id)
            .map(|r| (r.reservation.clone(), r.state))
    }

    fn settle(
        &self,
        id: u64,
        now_ms: u64,
        to: ReservationState,
    ) -> Result<Reservation, StockError> {
        let (reservation, outcome) = {
            let mut reservations = self.reservations.lock();
            let record = reservations
                .get_mut(&id)
                .ok_or(StockError::UnknownReservation(id))?;
            match record.state {
                ReservationState::Held if record.reservation.expires_ms <= now_ms => {
                    // Past its time but not reaped yet: it expires now.
                    record.state = ReservationState::Expired;
                    (record.reservation.clone(), Err(StockError::Expired(id)))
                }
                ReservationState::Held => {
                    record.state = to;
                    (record.reservation.clone(), Ok(()))
                }
                state if state == to => return Ok(record.reservation.clone()),
                ReservationState::Expired => return Err(StockError::Expired(id)),
                state => return Err(StockError::Settled { id, state }),
            }
        };
        // This caller moved it out of Held: it alone moves the units.
        let settled_as = if outcome.is_ok() {
            to
        } else {
            ReservationState::Expired
        };
        self.move_units(&reservation.sku, reservation.qty, settled_as);
        outcome.map(|()| reservation)
    }

    fn move_units(&self, sku: &str, qty: u64, to: ReservationState) {
        let mut skus = self.skus.lock();
        if let Some(counts) = skus.get_mut(sku) {
            counts.held -= qty;
            match to {
                ReservationState::Confirmed => counts.sold += qty,
                _ => counts.available += qty,
            }
            counts.version += 1;
        }
    }

    /// Returns every hold whose time is up by `now_ms` into stock and
    /// forgets settled reservations whose key is forgotten; the number of
    /// holds expired. Call it periodically (the service's reaper does).
    pub fn expire(&self, now_ms: u64) -> usize {
        let keep_ms =
            u64::try_from(self.config.idempotency.keep_for.as_millis()).unwrap_or(u64::MAX);
        let mut returned: Vec<(String, u64)> = Vec::new();
        {
            let mut reservations = self.reservations.lock();
            for record in reservations.values_mut() {
                if record.state == ReservationState::Held && record.reservation.expires_ms <= now_ms
                {
                    record.state = ReservationState::Expired;
                    returned.push((record.reservation.sku.clone(), record.reservation.qty));
                }
            }
            reservations.retain(|_, r| {
                r.state == ReservationState::Held
                    || r.reservation.expires_ms.saturating_add(keep_ms) > now_ms
            });
        }
        for (sku, qty) in &returned {
            self.move_units(sku, *qty, ReservationState::Expired);
        }
        self.keys.expire(now_ms);
        returned.len()
    }
}

#[cfg(all(test, not(rampart_loom)))]
mod tests {
    use super::*;

    fn gate() -> StockGate {
        StockGate::new(StockConfig {
            hold_for: Duration::from_secs(60),
            idempotency: IdempotencyConfig {
                keep_for: Duration::from_secs(3_600),
                max_keys: 100,
            },
        })
    }

    fn balanced(c: Counts) {
        assert_eq!(c.available + c.held + c.sold, c.total, "{c:?}");
    }

    #[test]
    fn never_below_zero_and_keys_are_idempotent() {
        let g = gate();
        g.set_total("A", 3).unwrap();
        let r1 = g.reserve("A", 2, "k1", 0).unwrap();
        assert_eq!(
            g.reserve("A", 2, "k2", 0),
            Err(StockError::SoldOut {
                available: 1,
                asked: 2
            })
        );
        // The refused key was not remembered: it may be retried.
        assert!(g.reserve("A", 1, "k2", 0).is_ok());
        assert_eq!(
            g.reserve("A", 2, "k1", 0).unwrap().reservation,
            r1.reservation
        );
        assert_eq!(
            g.reserve("A", 1, "k1", 0),
            Err(StockError::KeyReused("k1".into()))
        );
        assert_eq!(
            g.reserve("B", 1, "k3", 0),
            Err(StockError::UnknownSku("B".into()))
        );
        assert_eq!(g.reserve("A", 0, "k4", 0), Err(StockError::ZeroQuantity));
        let c = g.counts("A").unwrap();
        assert_eq!((c.available, c.held, c.sold), (0, 3, 0));
        balanced(c);
    }

    #[test]
    fn confirm_cancel_expire() {
        let g = gate();
        g.set_total("A", 10).unwrap();
        let a = g.reserve("A", 1, "a", 0).unwrap().reservation;
        let b = g.reserve("A", 2, "b", 0).unwrap().reservation;
        let c = g.reserve("A", 3, "c", 0).unwrap().reservation;
        assert_eq!(g.confirm(a.id, 1).unwrap(), a);
        assert_eq!(g.confirm(a.id, 2).unwrap(), a, "confirm twice: same answer");
        assert_eq!(g.cancel(b.id, 1).unwrap(), b);
        assert_eq!(
            g.confirm(b.id, 1),
            Err(StockError::Settled {
                id: b.id,
                state: ReservationState::Cancelled
            })
        );
        assert_eq!(g.expire(59_999), 0);
        assert_eq!(g.expire(60_000), 1);
        assert_eq!(g.confirm(c.id, 60_001), Err(StockError::Expired(c.id)));
        let counts = g.counts("A").unwrap();
        assert_eq!((counts.available, counts.held, counts.sold), (9, 0, 1));
        balanced(counts);
    }

    #[test]
    fn confirm_after_the_time_without_a_reaper_expires_it() {
        let g = gate();
        g.set_total("A", 1).unwrap();
        let r = g.reserve("A", 1, "a", 0).unwrap().reservation;
        assert_eq!(g.confirm(r.id, 60_000), Err(StockError::Expired(r.id)));
        assert_eq!(g.counts("A").unwrap().available, 1);
        assert_eq!(g.expire(60_000), 0, "returned once");
        assert_eq!(g.counts("A").unwrap().available, 1);
    }

    #[test]
    fn set_total_keeps_held_and_sold() {
        let g = gate();
        g.set_total("A", 5).unwrap();
        let r = g.reserve("A", 2, "a", 0).unwrap().reservation;
        g.reserve("A", 1, "b", 0).unwrap();
        g.confirm(r.id, 0).unwrap();
        assert_eq!(
            g.set_total("A", 2),
            Err(StockError::TotalBelowCommitted {
                total: 2,
                committed: 3
            })
        );
        let c = g.set_total("A", 7).unwrap();
        assert_eq!((c.total, c.available, c.held, c.sold), (7, 4, 1, 2));
    }

    #[test]
    fn settled_reservations_are_forgotten_with_their_key() {
        let g = gate();
        g.set_total("A", 5).unwrap();
        let r = g.reserve("A", 1, "a", 0).unwrap().reservation;
        g.cancel(r.id, 0).unwrap();
        g.expire(60_000 + 3_600_000);
        assert!(g.reservation(r.id).is_none());
        assert!(g.reserve("A", 1, "a", 60_000 + 3_600_000).is_ok());
    }

    #[test]
    fn threads_never_oversell() {
        let g = std::sync::Arc::new(gate());
        g.set_total("A", 50).unwrap();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let g = g.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .filter(|i| g.reserve("A", 1, &format!("{t}-{i}"), 0).is_ok())
                        .count()
                })
            })
            .collect();
        let won: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(won, 50);
        assert_eq!(g.counts("A").unwrap().available, 0);
    }
}
