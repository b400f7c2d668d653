//! The Redis tier and lease plugged into a cache: two cache instances (two
//! processes, in production) share one L2 and load each cold key once
//! between them.
//!
//! `cargo run -p rampart-redis --example redis_tier`
//!
//! Needs a Redis at `redis://127.0.0.1:6379/` (or the URL in `REDIS_URL`).
//! Uses a namespace of its own (`example-<pid>`), so it never touches other
//! keys.
//!
//! What it shows:
//! 1. 20 concurrent gets of one cold key, 10 on each instance: the source
//!    is asked once (single-flight within each instance, the Redis lease
//!    across them; the other instance reads what the holder filled);
//! 2. an invalidation on one instance reaches the other's L1 through
//!    Redis pub/sub (`wire_notices`), so neither serves the old value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rampart::breaker::{BreakerConfig, CircuitBreaker};
use rampart::cache::{CacheConfig, TieredCache};
use rampart::{BoxError, Loader};
use rampart_redis::deploy::{local_cache, RedisDeployment, TierOptions};

/// The source of truth, shared by both instances; counts its loads.
#[derive(Clone, Default)]
struct Prices {
    loads: Arc<AtomicU64>,
    version: Arc<AtomicU64>,
}

#[async_trait]
impl Loader<u64, Bytes> for Prices {
    async fn load(&self, id: &u64) -> Result<Option<Bytes>, BoxError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        // A slow query, so that the concurrent gets really overlap.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let version = self.version.load(Ordering::SeqCst);
        Ok(Some(Bytes::from(format!(
            "price of {id}, version {version}"
        ))))
    }
}

/// One "process": its own connection, notice subscriber and L1.
async fn instance(
    urls: &[String],
    namespace: &str,
    source: Prices,
) -> Result<TieredCache<u64, Bytes>, BoxError> {
    let breaker = CircuitBreaker::new("redis", BreakerConfig::default());
    let redis =
        RedisDeployment::connect(urls, Duration::from_millis(250), breaker, namespace).await?;
    let config = CacheConfig::default();
    let builder = TieredCache::builder("prices", source).config(config.clone());
    let cache = redis
        .attach(builder, "prices", &config, TierOptions::default())
        .build()?;
    redis.wire_notices([(
        "prices".to_owned(),
        local_cache(cache.clone(), |raw| raw.parse().ok()),
    )]);
    Ok(cache)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let urls = vec![url];
    let namespace = format!("example-{}", std::process::id());
    let source = Prices::default();
    let a = instance(&urls, &namespace, source.clone()).await?;
    let b = instance(&urls, &namespace, source.clone()).await?;
    // Let both subscribers connect before the first notice is sent.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut gets = Vec::new();
    for i in 0..20 {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        gets.push(tokio::spawn(async move {
            let lookup = cache.get(&7).await?;
            Ok::<_, rampart::Error>(lookup.status())
        }));
    }
    let mut statuses = Vec::new();
    for get in gets {
        statuses.push(get.await??.as_str());
    }
    statuses.sort_unstable();
    statuses.dedup();
    println!(
        "20 concurrent gets of a cold key on 2 instances: {} load(s) of the source; statuses seen: {statuses:?}",
        source.loads.load(Ordering::SeqCst)
    );

    // The price changes: write the source, then invalidate on instance A.
    source.version.fetch_add(1, Ordering::SeqCst);
    a.invalidate(&7).await?;
    // B heard it over pub/sub and dropped the key from its L1.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let on_b = b.get(&7).await?;
    println!(
        "after invalidating on A, B answers {:?} ({})",
        on_b.value()
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        on_b.status()
    );
    a.invalidate(&7).await?;
    Ok(())
}
