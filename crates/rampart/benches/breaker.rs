//! Circuit-breaker hot paths, single-threaded, on the real (quanta) clock.
//!
//! `cargo bench -p rampart --bench breaker`
//!
//! * `baseline_no_breaker`: a trivial call through `black_box`, the floor.
//! * `rejected_while_open`: `try_acquire` on a forced-open breaker (atomic
//!   load, relaxed counter increment, building the error).
//! * `rejected_while_open_timed`: the same on a breaker that tripped open,
//!   which also reads the clock to compute `retry_after`.
//! * `closed_acquire_success`: `try_acquire` + `success` while closed (two
//!   clock reads, an `Arc` clone, the window mutex).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart::breaker::{BreakerConfig, CircuitBreaker, SlidingWindow};

fn trivial_call(x: u64) -> Result<u64, ()> {
    Ok(x.wrapping_add(1))
}

fn bench_breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    group.bench_function("baseline_no_breaker", |b| {
        b.iter(|| black_box(trivial_call(black_box(7))));
    });

    let forced = CircuitBreaker::new("bench", BreakerConfig::default());
    forced.force_open();
    group.bench_function("rejected_while_open", |b| {
        b.iter(|| {
            let r = forced.try_acquire();
            debug_assert!(r.is_err());
            black_box(r)
        });
    });

    let tripped = CircuitBreaker::new(
        "bench",
        BreakerConfig {
            window: SlidingWindow::Count { calls: 1 },
            minimum_calls: 1,
            open_wait: Duration::from_secs(3600),
            ..BreakerConfig::default()
        },
    );
    if let Ok(p) = tripped.try_acquire() {
        p.failure();
    }
    assert!(tripped.try_acquire().is_err(), "the breaker should be open");
    group.bench_function("rejected_while_open_timed", |b| {
        b.iter(|| black_box(tripped.try_acquire()));
    });

    let closed = CircuitBreaker::new("bench", BreakerConfig::default());
    group.bench_function("closed_acquire_success", |b| {
        b.iter(|| match closed.try_acquire() {
            Ok(permit) => {
                let r = black_box(trivial_call(black_box(7)));
                permit.success();
                r
            }
            Err(e) => panic!("a closed breaker rejected: {e}"),
        });
    });

    group.finish();
}

criterion_group!(benches, bench_breaker);
criterion_main!(benches);
