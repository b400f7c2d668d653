//! Clock reads, ours against what we used before (quanta) and std, side by
//! side in one run: why `rampart::clock` is its own code.
//!
//! `cargo bench -p rampart --bench clock`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart::clock::Clock;

fn clock_reads(c: &mut Criterion) {
    let ours_coarse = Clock::coarse();
    let ours_precise = Clock::new();
    let quanta = quanta::Clock::new();
    let _upkeep = quanta::Upkeep::new(Duration::from_millis(1))
        .start()
        .expect("quanta upkeep thread");
    let mut group = c.benchmark_group("clock_read");
    group.measurement_time(Duration::from_secs(2));
    group.bench_function("rampart_coarse", |b| {
        b.iter(|| black_box(black_box(&ours_coarse).now()))
    });
    group.bench_function("quanta_recent", |b| {
        b.iter(|| black_box(black_box(&quanta).recent()))
    });
    group.bench_function("rampart_precise", |b| {
        b.iter(|| black_box(black_box(&ours_precise).now()))
    });
    group.bench_function("quanta_now", |b| {
        b.iter(|| black_box(black_box(&quanta).now()))
    });
    group.bench_function("std_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).sample_size(20);
    targets = clock_reads
}
criterion_main!(benches);
