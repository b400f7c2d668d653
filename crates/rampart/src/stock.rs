//! Stock that never oversells: an in-process gate per SKU and the
//! idempotency table it (and the service's SQL path) answers retries from.
//!
//! | type | what |
//! |---|---|
//! | [`StockGate`] | per-SKU counts (`available + held + sold = total`), reservations held until confirmed, cancelled or expired back into stock |
//! | [`Idempotency`] | request keys → the first answer: a replay gets it again, another request under the key is a conflict, a key still being answered is "in flight"; bounded, kept for a configurable time (24 h by default) |
//!
//! Times are wall-clock Unix milliseconds passed in by the caller (`now_ms`),
//! so a reservation's expiry means the same thing in every process and in
//! the database, and tests drive time without sleeping.
//!
//! ```
//! use rampart::stock::{StockGate, StockConfig};
//!
//! let gate = StockGate::new(StockConfig::default());
//! gate.set_total("SKU-1", 2).unwrap();
//! let now = 1_700_000_000_000;
//! let first = gate.reserve("SKU-1", 2, "order-17", now).unwrap();
//! assert!(!first.replayed);
//! // A retry under the same key gets the same reservation, not a second one.
//! let again = gate.reserve("SKU-1", 2, "order-17", now).unwrap();
//! assert!(again.replayed);
//! assert_eq!(again.reservation, first.reservation);
//! let reservation = first.reservation;
//! // Nothing is left for anyone else.
//! assert!(gate.reserve("SKU-1", 1, "order-18", now).is_err());
//! gate.confirm(reservation.id, now).unwrap();
//! assert_eq!(gate.counts("SKU-1").unwrap().sold, 2);
//! ```

mod gate;
mod idempotency;

pub use gate::{
    Counts, Reservation, ReservationState, Reserved, StockConfig, StockError, StockGate,
};
pub use idempotency::{
    request_digest, Begin, Idempotency, IdempotencyConfig, IdempotencyFull, Ticket,
};
