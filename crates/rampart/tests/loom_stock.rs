//! Loom models of the stock gate: reserve, cancel, confirm and expire
//! racing on one SKU.
//!
//! Run with:
//! `RUSTFLAGS="--cfg rampart_loom" cargo test --release -p rampart --test loom_stock`
//! (`scripts/test.sh` does). Whatever the interleaving: the counts always
//! add up to the total, a reservation leaves `Held` once, and its units
//! come back (or are sold) exactly once.
#![cfg(rampart_loom)]

use std::time::Duration;

use loom::sync::Arc;
use loom::thread;
use rampart::stock::{
    Counts, IdempotencyConfig, ReservationState, StockConfig, StockError, StockGate,
};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

fn gate(total: u64) -> Arc<StockGate> {
    let gate = StockGate::new(StockConfig {
        hold_for: Duration::from_millis(10),
        idempotency: IdempotencyConfig {
            keep_for: Duration::from_secs(60),
            max_keys: 16,
        },
    });
    gate.set_total("A", total).expect("set total");
    Arc::new(gate)
}

fn balanced(c: Counts) {
    assert_eq!(c.available + c.held + c.sold, c.total, "{c:?}");
}

/// A cancel and the reaper race on one expired-or-not hold while another
/// caller tries to reserve the unit: the unit is returned once, and the
/// second caller gets it only after it was returned.
#[test]
fn cancel_races_expiry_and_a_reserve() {
    model(|| {
        let gate = gate(1);
        let held = gate
            .reserve("A", 1, "first", 0)
            .expect("reserve")
            .reservation;
        let canceller = {
            let gate = gate.clone();
            thread::spawn(move || gate.cancel(held.id, 10))
        };
        let reaper = {
            let gate = gate.clone();
            thread::spawn(move || gate.expire(10))
        };
        let buyer = gate.reserve("A", 1, "second", 10);
        let cancelled = canceller.join().expect("thread");
        let expired = reaper.join().expect("thread");
        // At `now = 10` the hold's time is up: the cancel finds it expired
        // (whether it or the reaper marked it), the reaper expires it at
        // most once.
        assert_eq!(cancelled, Err(StockError::Expired(held.id)));
        assert!(expired <= 1);
        let (_, state) = gate.reservation(held.id).expect("kept");
        assert_eq!(state, ReservationState::Expired);
        let counts = gate.counts("A").expect("sku");
        balanced(counts);
        match buyer {
            Ok(_) => assert_eq!((counts.available, counts.held), (0, 1)),
            Err(StockError::SoldOut { .. }) => assert_eq!((counts.available, counts.held), (1, 0)),
            Err(other) => panic!("{other}"),
        }
    });
}

/// Confirm and cancel race on a live hold: exactly one wins, and the unit
/// is sold or returned accordingly, never both.
#[test]
fn confirm_races_cancel() {
    model(|| {
        let gate = gate(1);
        let held = gate.reserve("A", 1, "k", 0).expect("reserve").reservation;
        let confirmer = {
            let gate = gate.clone();
            thread::spawn(move || gate.confirm(held.id, 1))
        };
        let cancelled = gate.cancel(held.id, 1);
        let confirmed = confirmer.join().expect("thread");
        let counts = gate.counts("A").expect("sku");
        balanced(counts);
        match (confirmed.is_ok(), cancelled.is_ok()) {
            (true, false) => assert_eq!((counts.sold, counts.available), (1, 0)),
            (false, true) => assert_eq!((counts.sold, counts.available), (0, 1)),
            outcome => panic!("both or neither won: {outcome:?}"),
        }
        assert_eq!(counts.held, 0);
    });
}

/// Two callers retry one key at once: one reservation at most, the other
/// caller is told it is in flight or replayed the same reservation.
#[test]
fn the_same_key_twice_at_once_reserves_once() {
    model(|| {
        let gate = gate(2);
        let other = {
            let gate = gate.clone();
            thread::spawn(move || gate.reserve("A", 1, "k", 0))
        };
        let mine = gate.reserve("A", 1, "k", 0);
        let theirs = other.join().expect("thread");
        let counts = gate.counts("A").expect("sku");
        balanced(counts);
        assert_eq!(counts.held, 1, "one reservation: {mine:?} {theirs:?}");
        match (mine, theirs) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.reservation, b.reservation);
                assert!(a.replayed != b.replayed);
            }
            (Ok(_), Err(StockError::InFlight(_))) | (Err(StockError::InFlight(_)), Ok(_)) => {}
            outcome => panic!("{outcome:?}"),
        }
    });
}
