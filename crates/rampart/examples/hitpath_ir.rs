//! Instruction counts of the hit path, for `valgrind --tool=callgrind`
//! (deterministic where wall time on this VM is not):
//! `cargo build --release -p rampart --example hitpath_ir` then
//! `valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/hitpath_ir MODE N`
//! for MODE in none, bare, get, get1, cached; (Ir(mode) - Ir(none)) / N = instructions per get.

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use rampart::cache::{CacheConfig, TieredCache};
use rampart::clock::Clock;
use rampart::{BoxError, Loader};

struct Rows;

#[async_trait]
impl Loader<u64, Arc<str>> for Rows {
    async fn load(&self, key: &u64) -> Result<Option<Arc<str>>, BoxError> {
        Ok(Some(Arc::from(format!("{key}"))))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "none".into());
    let n: u64 = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let cache = TieredCache::builder("b", Rows)
        .config(CacheConfig {
            ttl: Duration::from_secs(3_600),
            ..CacheConfig::default()
        })
        .clock(Clock::coarse())
        .build()
        .expect("cache");
    let bare = quick_cache::sync::Cache::<u64, Arc<str>>::new(2_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        for k in 0..1_000u64 {
            cache.get(&k).await.expect("fill");
            bare.insert(k, Arc::from(format!("{k}")));
        }
    });
    // One loop per mode, chosen outside it, so the dispatch is not counted;
    // each consumes what a handler would: the value's length.
    let total = match mode.as_str() {
        "bare" => bare_loop(&bare, n),
        "get" => get_loop(&cache, n),
        "get1" => get_each_loop(&cache, n),
        "cached" => cached_loop(&cache, n),
        _ => empty_loop(n),
    };
    println!("{mode}: {total}");
}

#[inline(never)]
fn empty_loop(n: u64) -> usize {
    (0..n).map(|i| black_box((i % 1_000) as usize)).sum()
}

#[inline(never)]
fn bare_loop(bare: &quick_cache::sync::Cache<u64, Arc<str>>, n: u64) -> usize {
    (0..n)
        .map(|i| bare.get(&black_box(i % 1_000)).map_or(0, |v| v.len()))
        .sum()
}

#[inline(never)]
fn get_loop(cache: &TieredCache<u64, Arc<str>>, n: u64) -> usize {
    async {
        let mut total = 0;
        for i in 0..n {
            let got = cache.get(&black_box(i % 1_000)).await;
            total += got
                .ok()
                .and_then(|l| l.value().map(|v| v.len()))
                .unwrap_or(0);
        }
        total
    }
    .now_or_never()
    .expect("every key is an L1 hit")
}

/// One future per get, polled once as a runtime polls one request's
/// handler: what each get costs where no loop state lives across its await.
#[inline(never)]
fn get_each_loop(cache: &TieredCache<u64, Arc<str>>, n: u64) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    (0..n)
        .map(|i| {
            let key = black_box(i % 1_000);
            let mut get = std::pin::pin!(cache.get(&key));
            match get.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(lookup)) => lookup.value().map_or(0, |v| v.len()),
                _ => 0,
            }
        })
        .sum()
}

#[inline(never)]
fn cached_loop(cache: &TieredCache<u64, Arc<str>>, n: u64) -> usize {
    (0..n)
        .map(|i| {
            cache
                .get_cached(&black_box(i % 1_000))
                .and_then(|l| l.value().map(|v| v.len()))
                .unwrap_or(0)
        })
        .sum()
}
