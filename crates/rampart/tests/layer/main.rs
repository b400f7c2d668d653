//! Tests for `rampart::layer` (feature `tower`): each layer alone on a real
//! tower service, with cancellation and panics inside the inner service,
//! and composed in a `ServiceBuilder`.

#[path = "../support/mod.rs"]
mod support;

mod breaker;
mod bulkhead;
mod retry;
mod single_flight;
mod stress;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rampart::{BoxError, ErrorKind};

/// Counts the calls an inner service received.
#[derive(Clone, Default)]
pub struct Calls(Arc<AtomicUsize>);

impl Calls {
    pub fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// The guard's refusal inside a layer's `BoxError`, or a panic naming what
/// came instead.
pub fn kind(error: &BoxError) -> ErrorKind {
    match error.downcast_ref::<rampart::Error>() {
        Some(e) => e.kind().clone(),
        None => panic!("expected a rampart::Error, got {error}"),
    }
}
