//! Per-call overhead of each tower layer vs the bare inner service, in the
//! same run, single-threaded, uncontended.
//!
//! `cargo bench -p rampart --bench layers -- --warm-up-time 1 --measurement-time 2`
//!
//! Every case does what a caller of a tower service does: `poll_ready`,
//! `call`, and poll the response future to completion (the inner service
//! answers at once, so one poll; no runtime is needed). The inner service
//! is a `service_fn` adding one to its request: the floor is the cost of
//! tower's plumbing, and each case's surplus over it is the layer.
//!
//! * `bare`: the inner service alone.
//! * `breaker_guard_only`, `bulkhead_guard_only`: the guard's own work
//!   without tower (`try_acquire` + `success`; `try_acquire` + drop), so the
//!   layer's own share is the difference to the layered case.
//! * `breaker_closed`: `CircuitBreakerLayer`, breaker closed (permit from
//!   one atomic load and a coarse clock read; success recorded under the
//!   window mutex).
//! * `bulkhead_uncontended`: `BulkheadLayer` with free slots (a semaphore
//!   `try_acquire` and release).
//! * `breaker_bulkhead`: both, breaker outside.
//! * `retry_success`: tower's `Retry` with `RetryPolicy`, first attempt
//!   succeeds (a budget deposit under its mutex, a request clone, tower
//!   cloning the policy into the response future).
//! * `single_flight_uncontended`: `SingleFlightLayer`, no other caller for
//!   the key (map insert and remove under the mutex, boxed future).

use std::future::Future;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use rampart::breaker::{BreakerConfig, CircuitBreaker};
use rampart::layer::{BulkheadLayer, CircuitBreakerLayer, RetryPolicy, SingleFlightLayer};
use rampart::limit::{Backoff, Bulkhead, BulkheadConfig, RetryBudget, RetryBudgetConfig};
use tower::retry::RetryLayer;
use tower::{service_fn, Layer, Service, ServiceBuilder};

type Inner = tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, std::io::Error>>>;

fn inner() -> Inner {
    fn add_one(x: u64) -> std::future::Ready<Result<u64, std::io::Error>> {
        std::future::ready(Ok(x.wrapping_add(1)))
    }
    service_fn(add_one as fn(u64) -> _)
}

/// `poll_ready`, `call`, one poll of the response future.
fn one_call<S>(svc: &mut S, cx: &mut Context<'_>, req: u64) -> u64
where
    S: Service<u64, Response = u64>,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("the inner service is always ready"),
    }
    let mut future = std::pin::pin!(svc.call(req));
    match future.as_mut().poll(cx) {
        Poll::Ready(Ok(answer)) => answer,
        _ => panic!("the inner service answers at once"),
    }
}

fn bench_layers(c: &mut Criterion) {
    let mut group = c.benchmark_group("layers");
    let mut cx = Context::from_waker(Waker::noop());

    let mut bare = inner();
    group.bench_function("bare", |b| {
        b.iter(|| black_box(one_call(&mut bare, &mut cx, black_box(7))))
    });

    let breaker = CircuitBreaker::new("bench", BreakerConfig::default());
    group.bench_function("breaker_guard_only", |b| {
        b.iter(|| match breaker.try_acquire() {
            Ok(permit) => permit.success(),
            Err(_) => panic!("the breaker stays closed"),
        })
    });
    let mut with_breaker = CircuitBreakerLayer::new(breaker.clone()).layer(inner());
    group.bench_function("breaker_closed", |b| {
        b.iter(|| black_box(one_call(&mut with_breaker, &mut cx, black_box(7))))
    });

    let bulkhead = Bulkhead::new("bench", BulkheadConfig::default());
    group.bench_function("bulkhead_guard_only", |b| {
        b.iter(|| black_box(bulkhead.try_acquire().is_ok()))
    });
    let mut with_bulkhead = BulkheadLayer::new(bulkhead.clone()).layer(inner());
    group.bench_function("bulkhead_uncontended", |b| {
        b.iter(|| black_box(one_call(&mut with_bulkhead, &mut cx, black_box(7))))
    });

    let mut both = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .layer(BulkheadLayer::new(bulkhead.clone()))
        .service(inner());
    group.bench_function("breaker_bulkhead", |b| {
        b.iter(|| black_box(one_call(&mut both, &mut cx, black_box(7))))
    });

    let policy = RetryPolicy::new(
        RetryBudget::new(RetryBudgetConfig::default()),
        Backoff::default(),
    );
    let mut with_retry = RetryLayer::new(policy).layer(inner());
    group.bench_function("retry_success", |b| {
        b.iter(|| black_box(one_call(&mut with_retry, &mut cx, black_box(7))))
    });

    let mut with_flight = SingleFlightLayer::new(|req: &u64| Some(*req)).layer(inner());
    group.bench_function("single_flight_uncontended", |b| {
        b.iter(|| black_box(one_call(&mut with_flight, &mut cx, black_box(7))))
    });

    group.finish();
    // Every call above succeeded and was recorded.
    assert_eq!(breaker.state(), rampart::breaker::State::Closed);
    assert_eq!(bulkhead.in_flight(), 0);
}

criterion_group!(benches, bench_layers);
criterion_main!(benches);
