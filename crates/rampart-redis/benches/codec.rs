//! The L2 value encoding, chosen by measurement: the binary varint codec
//! against the JSON envelope a user would reach for first, on a typical
//! demo row. Prints the sizes; criterion times encode and decode.
//!
//! `cargo bench -p rampart-redis --bench codec`

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use rampart::cache::Stored;
use rampart_redis::codec;
use serde::{Deserialize, Serialize};

/// The same entry as a JSON envelope, the row embedded as a string.
#[derive(Serialize, Deserialize)]
struct Envelope {
    value: Option<String>,
    loaded_at_ms: u64,
    fresh_until_ms: u64,
    grace_until_ms: u64,
    error_until_ms: u64,
    load_micros: u64,
}

fn entry() -> Stored<Bytes> {
    let row = r#"{"balance_cents":332598,"country":"DE","created_at":1600000042,"email":"user42@example.com","id":42,"name":"User 42"}"#;
    Stored {
        value: Some(Bytes::from_static(row.as_bytes())),
        loaded_at_ms: 1_764_150_000_123,
        fresh_until_ms: 1_764_150_060_123,
        grace_until_ms: 1_764_150_070_123,
        error_until_ms: 1_764_150_360_123,
        load_micros: 812,
    }
}

fn envelope(s: &Stored<Bytes>) -> Envelope {
    Envelope {
        value: s
            .value
            .as_ref()
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        loaded_at_ms: s.loaded_at_ms,
        fresh_until_ms: s.fresh_until_ms,
        grace_until_ms: s.grace_until_ms,
        error_until_ms: s.error_until_ms,
        load_micros: s.load_micros,
    }
}

fn codecs(c: &mut Criterion) {
    let stored = entry();
    let row_len = stored.value.as_ref().map_or(0, Bytes::len);
    let binary = codec::encode(&stored);
    let json = serde_json::to_vec(&envelope(&stored)).expect("json");
    println!(
        "encoded size for a {row_len}-byte row: binary {} bytes (+{} overhead), JSON envelope {} bytes (+{} overhead)",
        binary.len(),
        binary.len() - row_len,
        json.len(),
        json.len() - row_len
    );
    let mut group = c.benchmark_group("codec");
    group.measurement_time(Duration::from_secs(2));
    group.bench_function("binary_encode", |b| {
        b.iter(|| black_box(codec::encode(black_box(&stored))))
    });
    group.bench_function("binary_decode", |b| {
        b.iter(|| black_box(codec::decode(black_box(&binary))))
    });
    group.bench_function("json_encode", |b| {
        b.iter(|| black_box(serde_json::to_vec(&envelope(black_box(&stored))).expect("json")))
    });
    group.bench_function("json_decode", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Envelope>(black_box(&json)).expect("json")))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).sample_size(20);
    targets = codecs
}
criterion_main!(benches);
