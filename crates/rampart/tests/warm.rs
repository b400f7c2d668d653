//! Tests for `rampart::warm`: one per guarantee in the module docs, plus a
//! seeded stress run.
//!
//! Most tests run on a paused Tokio clock (`start_paused = true`), so batch
//! latencies and rate limits are exact and cost no real time. The "source"
//! is a [`FakeSource`]: it counts the loads running at once (its high-water mark
//! is the concurrency the source actually saw) and logs every dispatch.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt};
use rampart::warm::{
    warm, warm_with_limits, NoPressure, WarmConfig, WarmLimits, WarmProgress, WarmReport,
};
use rampart::{Error, ErrorKind};
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

/// One `load_batch` call, as the source saw it when the call was made.
#[derive(Clone, Debug)]
struct Dispatch {
    keys: Vec<u64>,
    at: Instant,
    /// Loads running at the source, this one included.
    live: usize,
    /// `progress.concurrency()` at the call.
    limit: usize,
    /// Keys pulled from the stream so far.
    pulled: u64,
    /// Loads that had finished at the source before this call.
    completed: u64,
}

/// The batch source: counts live loads (decremented on completion or
/// drop) and logs dispatches.
#[derive(Default)]
struct FakeSource {
    live: AtomicUsize,
    high_water: AtomicUsize,
    completed: AtomicU64,
    log: Mutex<Vec<Dispatch>>,
}

/// A load in progress at the source; finishing or dropping it ends it.
struct LiveLoad(Arc<FakeSource>);

impl Drop for LiveLoad {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, SeqCst);
    }
}

impl FakeSource {
    /// Records a dispatch; returns its index and the guard for the load.
    fn enter(
        self: &Arc<Self>,
        keys: &[u64],
        progress: &WarmProgress,
        pulled: &AtomicU64,
    ) -> (usize, LiveLoad) {
        let live = self.live.fetch_add(1, SeqCst) + 1;
        self.high_water.fetch_max(live, SeqCst);
        let mut log = self.log.lock().unwrap();
        log.push(Dispatch {
            keys: keys.to_vec(),
            at: Instant::now(),
            live,
            limit: progress.concurrency(),
            pulled: pulled.load(SeqCst),
            completed: self.completed.load(SeqCst),
        });
        (log.len() - 1, LiveLoad(Arc::clone(self)))
    }

    /// Marks a load finished (before `warm` learns of it).
    fn exit(&self, load: LiveLoad) {
        self.completed.fetch_add(1, SeqCst);
        drop(load);
    }

    fn log(&self) -> Vec<Dispatch> {
        self.log.lock().unwrap().clone()
    }
}

/// Keys past this are never needed: a stream asked for one was read far
/// ahead of its batches, and it errors out so that such a regression fails
/// a test instead of hanging it on an endless stream.
const READ_AHEAD_TRIPWIRE: u64 = 1_000_000;

/// `range` as a key stream that counts the keys pulled from it.
fn counted_keys(
    range: impl Iterator<Item = u64>,
    pulled: &Arc<AtomicU64>,
) -> impl Stream<Item = Result<u64, Error>> {
    let pulled = Arc::clone(pulled);
    stream::iter(range).map(move |key| {
        if key >= READ_AHEAD_TRIPWIRE {
            return Err(source_error("stream read far ahead of its batches"));
        }
        pulled.fetch_add(1, SeqCst);
        Ok(key)
    })
}

fn source_error(message: impl Into<String>) -> Error {
    Error::source(message.into())
}

fn config(batch_size: usize, max_concurrency: usize) -> WarmConfig {
    WarmConfig {
        batch_size,
        max_concurrency,
        max_keys_per_sec: None,
        max_consecutive_failures: 5,
    }
}

/// Every key pulled is accounted for once, the run is marked finished and
/// nothing is in flight, and the report (if any) matches the counters.
fn assert_accounted(progress: &WarmProgress, pulled: u64, report: Option<&WarmReport>) {
    assert!(progress.is_finished(), "is_finished() after return");
    assert_eq!(progress.in_flight(), 0, "nothing in flight after return");
    assert_eq!(
        progress.keys_done() + progress.keys_failed() + progress.keys_skipped(),
        pulled,
        "done + failed + skipped == pulled: {progress:?}"
    );
    if let Some(report) = report {
        assert_eq!(report.keys_done, progress.keys_done());
        assert_eq!(report.keys_failed, progress.keys_failed());
        assert_eq!(report.keys_skipped, progress.keys_skipped());
        assert_eq!(
            report.batches,
            progress.batches_done() + progress.batches_failed()
        );
        assert_eq!(report.batches_failed, progress.batches_failed());
    }
}

#[test]
fn config_defaults_and_validation() {
    let default = WarmConfig::default();
    assert_eq!(default.batch_size, 500);
    assert_eq!(default.max_concurrency, 2);
    assert_eq!(default.max_keys_per_sec, Some(20_000));
    assert_eq!(default.max_consecutive_failures, 5);
    assert_eq!(default.validate(), Ok(()));

    let bad = |edit: fn(&mut WarmConfig)| {
        let mut config = WarmConfig::default();
        edit(&mut config);
        config.validate().unwrap_err()
    };
    assert_eq!(bad(|c| c.batch_size = 0), "batch_size must be >= 1");
    assert!(bad(|c| c.max_concurrency = 0).starts_with("max_concurrency "));
    assert!(bad(|c| c.max_keys_per_sec = Some(0)).starts_with("max_keys_per_sec "));
    assert!(bad(|c| c.max_consecutive_failures = 0).starts_with("max_consecutive_failures "));
    let unlimited = WarmConfig {
        max_keys_per_sec: None,
        ..WarmConfig::default()
    };
    assert_eq!(unlimited.validate(), Ok(()));
}

#[test]
fn progress_expected_and_fraction() {
    let progress = WarmProgress::default();
    assert_eq!(progress.expected(), None);
    assert_eq!(progress.fraction(), None);
    assert!(!progress.is_finished());
    progress.set_expected(0);
    assert_eq!(progress.expected(), Some(0));
    assert_eq!(progress.fraction(), Some(1.0));
    progress.set_expected(200);
    assert_eq!(progress.fraction(), Some(0.0));
}

/// The future must be `Send` so the server can `tokio::spawn` it.
#[test]
fn warm_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let progress = WarmProgress::default();
    let cancel = CancellationToken::new();
    let config = WarmConfig::default();
    let fut = warm(
        stream::iter((0..10u64).map(Ok)),
        |batch: Vec<u64>| async move { Ok(batch.len() as u64) },
        &config,
        &NoPressure,
        &progress,
        &cancel,
    );
    assert_send(&fut);
}

#[tokio::test(start_paused = true)]
async fn invalid_config_is_rejected_and_finishes() {
    let progress = WarmProgress::default();
    let pulled = Arc::new(AtomicU64::new(0));
    let err = warm(
        counted_keys(0..10, &pulled),
        |batch: Vec<u64>| async move { Ok(batch.len() as u64) },
        &config(0, 2),
        &NoPressure,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidConfig(m) if m.contains("batch_size")),
        "{err}"
    );
    assert_eq!(pulled.load(SeqCst), 0);
    assert_accounted(&progress, 0, None);
}

/// Without a rate limit no timer is needed: the warm-up runs on a runtime
/// with timers disabled (a rate-limited one needs them to sleep).
#[test]
fn runs_without_timers_when_unlimited() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let progress = WarmProgress::default();
    let report = runtime
        .block_on(warm(
            stream::iter((0..1000u64).map(Ok)),
            |batch: Vec<u64>| async move { Ok(batch.len() as u64) },
            &config(64, 2),
            &NoPressure,
            &progress,
            &CancellationToken::new(),
        ))
        .unwrap();
    assert_eq!(report.keys_done, 1000);
    assert_eq!(report.batches, 16);
    assert_accounted(&progress, 1000, Some(&report));
}

/// Keys are pulled lazily (at most one batch ahead of what was dispatched)
/// and grouped, in order, into full batches and one short last batch.
#[tokio::test(start_paused = true)]
async fn keys_are_pulled_lazily_in_full_batches() {
    let source = Arc::new(FakeSource::default());
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    progress.set_expected(1050);
    let report = warm(
        counted_keys(0..1050, &pulled),
        |batch: Vec<u64>| {
            let (_, load) = source.enter(&batch, &progress, &pulled);
            let source = Arc::clone(&source);
            async move {
                sleep(Duration::from_millis(10)).await;
                source.exit(load);
                Ok(batch.len() as u64)
            }
        },
        &config(100, 3),
        &NoPressure,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();

    let log = source.log();
    let sizes: Vec<usize> = log.iter().map(|d| d.keys.len()).collect();
    assert_eq!(sizes, [vec![100; 10], vec![50]].concat());
    let keys: Vec<u64> = log.iter().flat_map(|d| d.keys.clone()).collect();
    assert_eq!(keys, (0..1050).collect::<Vec<_>>(), "stream order kept");
    let mut dispatched = 0;
    for d in &log {
        dispatched += d.keys.len() as u64;
        assert!(
            d.pulled <= dispatched + 100,
            "pulled {} keys with {dispatched} dispatched: more than one batch ahead",
            d.pulled
        );
    }
    assert_eq!(report.keys_done, 1050);
    assert_eq!(report.batches, 11);
    assert_eq!(progress.fraction(), Some(1.0));
    assert_accounted(&progress, 1050, Some(&report));
}

/// An endless stream works: a warm-up that read its keys ahead of its
/// batches would never get to the cancellation (here: would trip
/// `READ_AHEAD_TRIPWIRE`).
#[tokio::test(start_paused = true)]
async fn an_endless_stream_is_never_collected() {
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    let cancel = CancellationToken::new();
    let batches = AtomicU64::new(0);
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        warm(
            counted_keys(0.., &pulled),
            |batch: Vec<u64>| {
                if batches.fetch_add(1, SeqCst) == 4 {
                    cancel.cancel();
                }
                async move { Ok(batch.len() as u64) }
            },
            &config(64, 2),
            &NoPressure,
            &progress,
            &cancel,
        ),
    )
    .await
    .expect("an endless stream must not be collected")
    .unwrap();
    assert!(report.cancelled);
    assert_eq!(report.batches, 5);
    assert!(
        pulled.load(SeqCst) <= 6 * 64,
        "pulled {}",
        pulled.load(SeqCst)
    );
    assert_accounted(&progress, pulled.load(SeqCst), Some(&report));
}

/// At most `max_concurrency` loads run at the source at once, and the
/// limit is used in full.
#[tokio::test(start_paused = true)]
async fn concurrency_never_exceeds_the_limit() {
    let source = Arc::new(FakeSource::default());
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    let mut rng = fastrand::Rng::with_seed(7);
    let latencies: Vec<u64> = (0..100).map(|_| rng.u64(1..=20)).collect();
    let report = warm(
        counted_keys(0..1000, &pulled),
        |batch: Vec<u64>| {
            let (index, load) = source.enter(&batch, &progress, &pulled);
            assert!(
                progress.in_flight() <= 3,
                "in_flight {}",
                progress.in_flight()
            );
            let source = Arc::clone(&source);
            let latency = Duration::from_millis(latencies[index]);
            async move {
                sleep(latency).await;
                source.exit(load);
                Ok(batch.len() as u64)
            }
        },
        &config(10, 3),
        &NoPressure,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        source.high_water.load(SeqCst),
        3,
        "bound reached, never passed"
    );
    assert!(source.log().iter().all(|d| d.limit == 3));
    assert_eq!(report.keys_done, 1000);
    assert_accounted(&progress, 1000, Some(&report));
}

/// Keys dispatched by time t never exceed `max_keys_per_sec × t + one
/// batch`, and the limiter is not needlessly slower than that.
#[tokio::test(start_paused = true)]
async fn rate_limit_bounds_keys_dispatched() {
    const RATE: u32 = 1000;
    const BATCH: usize = 50;
    let source = Arc::new(FakeSource::default());
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    let start = Instant::now();
    let report = warm(
        counted_keys(0..2000, &pulled),
        |batch: Vec<u64>| {
            let (_, load) = source.enter(&batch, &progress, &pulled);
            let source = Arc::clone(&source);
            async move {
                sleep(Duration::from_millis(5)).await;
                source.exit(load);
                Ok(batch.len() as u64)
            }
        },
        &WarmConfig {
            max_keys_per_sec: Some(RATE),
            ..config(BATCH, 4)
        },
        &NoPressure,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();

    let mut dispatched = 0u64;
    for d in source.log() {
        dispatched += d.keys.len() as u64;
        let allowed = f64::from(RATE) * (d.at - start).as_secs_f64() + BATCH as f64;
        assert!(
            dispatched as f64 <= allowed + 1e-6,
            "{dispatched} keys dispatched by {:?}, allowed {allowed}",
            d.at - start
        );
    }
    // 2000 keys at 1000/s: the last batch may start at 1.95 s.
    assert!(report.elapsed >= Duration::from_millis(1950), "{report:?}");
    assert!(report.elapsed < Duration::from_millis(2100), "{report:?}");
    assert_eq!(report.keys_done, 2000);
    assert_accounted(&progress, 2000, Some(&report));
}

/// Live limits: the rate and the concurrency changed while the warm-up
/// runs take effect from the next batch. At 100 keys/s a 20-key batch
/// starts every 200 ms; at 0.5 s the rate goes to 1,000 keys/s and the
/// wait the slow rate had scheduled is lifted (the next batch starts at
/// once, then one every 20 ms); at 1 s the concurrency drops from 4 to 1
/// and the rate limit is removed: batches then run one at a time, back
/// to back. Without the re-read, 2,000 keys at 100/s take 20 s.
#[tokio::test(start_paused = true)]
async fn limits_changed_mid_run_apply_from_the_next_batch() {
    const BATCH: usize = 20;
    let source = Arc::new(FakeSource::default());
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    let config = WarmConfig {
        max_keys_per_sec: Some(100),
        ..config(BATCH, 4)
    };
    let limits = WarmLimits::new(&config);
    assert!(matches!(
        limits.set(0, None).unwrap_err().kind(),
        ErrorKind::InvalidConfig(_)
    ));
    assert!(limits.set(4, Some(0)).is_err());
    assert_eq!(
        (limits.max_concurrency(), limits.max_keys_per_sec()),
        (4, Some(100))
    );
    let start = Instant::now();
    let operator = async {
        sleep(Duration::from_millis(500)).await;
        limits.set(4, Some(1_000)).unwrap();
        sleep(Duration::from_millis(500)).await;
        limits.set(1, None).unwrap();
    };
    let cancel = CancellationToken::new();
    let warming = warm_with_limits(
        counted_keys(0..2000, &pulled),
        |batch: Vec<u64>| {
            let (_, load) = source.enter(&batch, &progress, &pulled);
            let source = Arc::clone(&source);
            async move {
                sleep(Duration::from_millis(10)).await;
                source.exit(load);
                Ok(batch.len() as u64)
            }
        },
        &config,
        &limits,
        &NoPressure,
        &progress,
        &cancel,
    );
    let (report, ()) = tokio::join!(warming, operator);
    let report = report.unwrap();
    assert_eq!(report.keys_done, 2000);

    let log = source.log();
    let at = |d: &Dispatch| (d.at - start).as_millis();
    // Before 0.5 s: the slow rate, one batch every 200 ms (0, 200, 400).
    let slow: Vec<_> = log.iter().filter(|d| at(d) < 500).map(at).collect();
    assert_eq!(slow, vec![0, 200, 400], "{slow:?}");
    // The raise lifted the wait for 600 ms: a batch at 500 ms exactly.
    assert!(
        log.iter().any(|d| at(d) == 500),
        "no batch as the rate rose"
    );
    // Between 0.5 s and 1 s: 1,000 keys/s, one batch every 20 ms.
    let fast = log.iter().filter(|d| (500..1000).contains(&at(d))).count();
    assert!((24..=26).contains(&fast), "{fast} batches at 1,000 keys/s");
    // After 1 s: one at a time (the source never saw two), no rate wait,
    // so each starts as the previous one ends (10 ms apart).
    let last: Vec<_> = log.iter().filter(|d| at(d) >= 1010).collect();
    assert!(
        last.iter().all(|d| d.live == 1 && d.limit == 1),
        "one at a time"
    );
    for pair in last.windows(2) {
        assert_eq!(pair[1].at - pair[0].at, Duration::from_millis(10));
    }
    assert!(report.elapsed < Duration::from_secs(2), "{report:?}");
    assert_accounted(&progress, 2000, Some(&report));
}

/// Under a pressure that never lets up, once the limit is down to one
/// each batch waits `PRESSURE_PAUSE` before it starts, even batches that
/// cost nothing (rows cached as read): slowed, never stopped. Without the
/// pause they would start back to back and the signal would slow nothing.
#[tokio::test(start_paused = true)]
async fn under_constant_pressure_batches_at_one_start_a_pause_apart() {
    let source = Arc::new(FakeSource::default());
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    let report = warm(
        counted_keys(0..12, &pulled),
        |batch: Vec<u64>| {
            let (_, load) = source.enter(&batch, &progress, &pulled);
            source.exit(load);
            async move { Ok(batch.len() as u64) }
        },
        &config(1, 8),
        &|| true,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.keys_done, 12);
    let log = source.log();
    let limits: Vec<usize> = log.iter().map(|d| d.limit).collect();
    assert_eq!(limits[..3], [4, 2, 1], "{limits:?}");
    // 8 → 4 → 2: no pause; from the limit of one on, a pause before each.
    assert_eq!(log[1].at - log[0].at, Duration::ZERO);
    for pair in log[1..].windows(2) {
        assert_eq!(
            pair[1].at - pair[0].at,
            rampart::warm::PRESSURE_PAUSE,
            "{log:?}"
        );
    }
    assert_accounted(&progress, 12, Some(&report));
}

/// AIMD: under pressure the limit halves before each dispatch (min 1);
/// when calm it grows by at most 1 per completed batch, up to the max; and
/// `progress.concurrency()` shows it.
#[tokio::test(start_paused = true)]
async fn pressure_halves_the_limit_and_calm_grows_it_back() {
    let source = Arc::new(FakeSource::default());
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    let high = AtomicBool::new(true);
    // The limit as the warm-up stood each time it read the pressure.
    let seen_by_pressure = Mutex::new(Vec::new());
    let flipped_high_at = AtomicUsize::new(0);
    let pressure = || {
        seen_by_pressure
            .lock()
            .unwrap()
            .push(progress.concurrency());
        high.load(SeqCst)
    };
    let report = warm(
        counted_keys(0..120, &pulled),
        |batch: Vec<u64>| {
            let (index, load) = source.enter(&batch, &progress, &pulled);
            match index {
                20 => high.store(false, SeqCst),
                80 => {
                    high.store(true, SeqCst);
                    flipped_high_at.store(seen_by_pressure.lock().unwrap().len(), SeqCst);
                }
                _ => {}
            }
            let source = Arc::clone(&source);
            async move {
                sleep(Duration::from_millis(10)).await;
                source.exit(load);
                Ok(batch.len() as u64)
            }
        },
        &config(1, 8),
        &pressure,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();

    let log = source.log();
    let limits: Vec<usize> = log.iter().map(|d| d.limit).collect();
    let mut seen = seen_by_pressure.into_inner().unwrap();
    let flipped_high_at = flipped_high_at.into_inner();
    // High from the start: 8 → 4 → 2 → 1 at the first dispatches, then 1.
    assert_eq!(limits[..3], [4, 2, 1], "{limits:?}");
    assert!(limits[2..=20].iter().all(|&l| l == 1), "{limits:?}");
    assert!(log[..=20].iter().all(|d| d.live <= 2), "{log:?}");
    // Calm from dispatch 21 to 80: grows by at most one per completion,
    // up to the max, which the source then sees.
    for pair in log[20..=80].windows(2) {
        assert!(
            pair[1].limit <= pair[0].limit + (pair[1].completed - pair[0].completed) as usize,
            "grew faster than one per completed batch: {pair:?}"
        );
        assert!(
            pair[1].limit >= pair[0].limit,
            "shrank while calm: {pair:?}"
        );
    }
    assert_eq!(log[80].limit, 8, "{limits:?}");
    assert_eq!(log[21..=80].iter().map(|d| d.live).max(), Some(8));
    // High again after dispatch 80: each dispatch attempt halves the limit
    // (8 → 4 → 2 → 1) while the 8 in flight drain, so the next batch
    // starts only once the source is down to the new limit of 1.
    let mut after_flip = seen.split_off(flipped_high_at);
    after_flip.dedup();
    assert_eq!(after_flip, [8, 4, 2, 1]);
    assert_eq!(log[81].live, 1, "{:?}", log[81]);
    assert!(limits[81..].iter().all(|&l| l == 1), "{limits:?}");
    assert!(log[81..].iter().all(|d| d.live == 1), "{log:?}");
    assert_eq!(progress.concurrency(), 1);
    assert_eq!(report.keys_done, 120);
    assert_accounted(&progress, 120, Some(&report));
}

/// A failed batch counts its keys as failed and the warm-up goes on; so
/// does a partly loaded batch for the keys it did not load.
#[tokio::test(start_paused = true)]
async fn failed_batches_are_counted_and_the_warm_up_goes_on() {
    let source = Arc::new(FakeSource::default());
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    // The limit as the warm-up stood each time it read the pressure.
    let seen_by_pressure = Mutex::new(Vec::new());
    let pressure = || {
        seen_by_pressure
            .lock()
            .unwrap()
            .push(progress.concurrency());
        false
    };
    let report = warm(
        counted_keys(0..300, &pulled),
        |batch: Vec<u64>| {
            let (index, load) = source.enter(&batch, &progress, &pulled);
            let source = Arc::clone(&source);
            async move {
                sleep(Duration::from_millis(1)).await;
                source.exit(load);
                match index {
                    // Three failures, never two in a row.
                    3 | 7 | 11 => Err(source_error(format!("batch {index} failed"))),
                    // Loaded 4 of its 10 keys.
                    20 => Ok(4),
                    // Claims more than it was given: taken as the batch.
                    21 => Ok(1_000),
                    _ => Ok(batch.len() as u64),
                }
            }
        },
        &WarmConfig {
            max_consecutive_failures: 2,
            ..config(10, 2)
        },
        &pressure,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.batches, 30);
    assert_eq!(report.batches_failed, 3);
    // The pressure is never high, so only the failures (TCP's "loss")
    // can have lowered the limit from 2; successes grow it back.
    let seen = seen_by_pressure.into_inner().unwrap();
    assert_eq!(seen.iter().min(), Some(&1), "{seen:?}");
    assert_eq!(progress.concurrency(), 2);
    assert_eq!(report.keys_failed, 3 * 10 + 6);
    assert_eq!(report.keys_done, 300 - 36);
    assert!(!report.cancelled);
    assert_accounted(&progress, 300, Some(&report));
}

/// `max_consecutive_failures` failures in a row stop the run with the
/// error that completed the run; a success in between resets the count.
#[tokio::test(start_paused = true)]
async fn consecutive_failures_stop_the_warm_up() {
    let source = Arc::new(FakeSource::default());
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    let err = warm(
        counted_keys(0.., &pulled),
        |batch: Vec<u64>| {
            let (index, load) = source.enter(&batch, &progress, &pulled);
            let source = Arc::clone(&source);
            async move {
                sleep(Duration::from_millis(1)).await;
                source.exit(load);
                // F F S F F S ... for 12 batches (never 3 in a row), then
                // only failures from batch 12.
                if index >= 12 || index % 3 != 2 {
                    Err(source_error(format!("batch {index} failed")))
                } else {
                    Ok(batch.len() as u64)
                }
            }
        },
        &WarmConfig {
            max_consecutive_failures: 3,
            ..config(10, 1)
        },
        &NoPressure,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("batch 14 failed"), "{err}");
    assert_eq!(source.log().len(), 15, "no batch after the third failure");
    assert_eq!(progress.batches_failed(), 8 + 3);
    assert_eq!(progress.batches_done(), 4);
    assert_accounted(&progress, pulled.load(SeqCst), None);
}

/// The failure that stops the run does not abandon the batches in flight:
/// they finish first, and no new batch starts meanwhile.
#[tokio::test(start_paused = true)]
async fn a_failure_stop_waits_for_batches_in_flight() {
    let source = Arc::new(FakeSource::default());
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    let started = Instant::now();
    let err = warm(
        counted_keys(0.., &pulled),
        |batch: Vec<u64>| {
            let (index, load) = source.enter(&batch, &progress, &pulled);
            let source = Arc::clone(&source);
            async move {
                if index == 0 {
                    sleep(Duration::from_millis(1)).await;
                    source.exit(load);
                    Err(source_error("batch 0 failed"))
                } else {
                    sleep(Duration::from_millis(100)).await;
                    source.exit(load);
                    Ok(batch.len() as u64)
                }
            }
        },
        &WarmConfig {
            max_consecutive_failures: 1,
            ..config(10, 2)
        },
        &NoPressure,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("batch 0 failed"), "{err}");
    assert_eq!(source.log().len(), 2);
    assert_eq!(
        source.completed.load(SeqCst),
        2,
        "batch 1 finished, not dropped"
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(progress.batches_done(), 1);
    assert_eq!(progress.batches_failed(), 1);
    assert_accounted(&progress, pulled.load(SeqCst), None);
}

/// A stream error stops the run with that error after the batches in
/// flight finish; the partly filled batch is skipped, not loaded.
#[tokio::test(start_paused = true)]
async fn a_stream_error_stops_the_warm_up() {
    let source = Arc::new(FakeSource::default());
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    let keys = counted_keys(0..250, &pulled)
        .chain(stream::iter([Err(source_error("cursor lost"))]))
        .chain(counted_keys(250..1000, &pulled));
    let err = warm(
        keys,
        |batch: Vec<u64>| {
            let (_, load) = source.enter(&batch, &progress, &pulled);
            let source = Arc::clone(&source);
            async move {
                sleep(Duration::from_millis(50)).await;
                source.exit(load);
                Ok(batch.len() as u64)
            }
        },
        &config(100, 2),
        &NoPressure,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("cursor lost"), "{err}");
    assert_eq!(pulled.load(SeqCst), 250, "nothing pulled past the error");
    assert_eq!(source.log().len(), 2);
    assert_eq!(source.completed.load(SeqCst), 2);
    assert_eq!(progress.keys_done(), 200);
    assert_eq!(progress.keys_skipped(), 50);
    assert_accounted(&progress, 250, None);
}

/// After `cancel()` no batch starts; the ones in flight finish; the run
/// returns `Ok` with `cancelled` within one batch latency.
#[tokio::test(start_paused = true)]
async fn cancellation_stops_new_batches_and_drains() {
    let source = Arc::new(FakeSource::default());
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    let cancel = CancellationToken::new();
    let start = Instant::now();
    let cancel_at = start + Duration::from_millis(2500);
    let canceller = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            tokio::time::sleep_until(cancel_at).await;
            cancel.cancel();
        }
    });
    let report = warm(
        counted_keys(0.., &pulled),
        |batch: Vec<u64>| {
            let (_, load) = source.enter(&batch, &progress, &pulled);
            let source = Arc::clone(&source);
            async move {
                sleep(Duration::from_secs(1)).await;
                source.exit(load);
                Ok(batch.len() as u64)
            }
        },
        &config(10, 2),
        &NoPressure,
        &progress,
        &cancel,
    )
    .await
    .unwrap();
    canceller.await.unwrap();

    assert!(report.cancelled);
    let log = source.log();
    assert!(
        log.iter().all(|d| d.at < cancel_at),
        "a batch started after cancel"
    );
    assert_eq!(log.len(), 6);
    assert_eq!(
        source.completed.load(SeqCst),
        6,
        "in-flight batches finished"
    );
    assert_eq!(source.live.load(SeqCst), 0);
    assert!(report.elapsed <= Duration::from_millis(3500), "{report:?}");
    assert_eq!(report.keys_done, 60);
    assert!(report.keys_skipped <= 10, "{report:?}");
    assert_accounted(&progress, pulled.load(SeqCst), Some(&report));
}

/// Cancelled before it starts: returns at once, pulls nothing.
#[tokio::test(start_paused = true)]
async fn cancelled_before_start_pulls_nothing() {
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let report = warm(
        counted_keys(0.., &pulled),
        |batch: Vec<u64>| async move { Ok(batch.len() as u64) },
        &config(10, 2),
        &NoPressure,
        &progress,
        &cancel,
    )
    .await
    .unwrap();
    assert!(report.cancelled);
    assert_eq!(report.batches, 0);
    assert_eq!(pulled.load(SeqCst), 0);
    assert_accounted(&progress, 0, Some(&report));
}

/// Cancelled while the next batch is being filled: that batch is not
/// dispatched, even though it fills up; its keys count as skipped.
#[tokio::test(start_paused = true)]
async fn cancel_during_fill_dispatches_nothing_more() {
    let source = Arc::new(FakeSource::default());
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    let cancel = CancellationToken::new();
    let keys = counted_keys(0..100, &pulled).map({
        let cancel = cancel.clone();
        move |key| {
            if matches!(key, Ok(25)) {
                cancel.cancel();
            }
            key
        }
    });
    let report = warm(
        keys,
        |batch: Vec<u64>| {
            let (_, load) = source.enter(&batch, &progress, &pulled);
            let source = Arc::clone(&source);
            async move {
                source.exit(load);
                Ok(batch.len() as u64)
            }
        },
        &config(10, 2),
        &NoPressure,
        &progress,
        &cancel,
    )
    .await
    .unwrap();
    assert!(report.cancelled);
    let dispatched: Vec<u64> = source.log().iter().flat_map(|d| d.keys.clone()).collect();
    assert_eq!(dispatched, (0..20).collect::<Vec<_>>());
    assert_eq!(report.keys_done, 20);
    assert_eq!(report.keys_skipped, pulled.load(SeqCst) - 20);
    assert_accounted(&progress, pulled.load(SeqCst), Some(&report));
}

/// The hard stop: dropping the future drops the loads in flight with it
/// (no task left running), and the counters still add up.
#[tokio::test(start_paused = true)]
async fn dropping_the_future_drops_the_batches_in_flight() {
    let source = Arc::new(FakeSource::default());
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    let outcome = tokio::time::timeout(
        Duration::from_millis(2500),
        warm(
            counted_keys(0.., &pulled),
            |batch: Vec<u64>| {
                let (_, load) = source.enter(&batch, &progress, &pulled);
                let source = Arc::clone(&source);
                async move {
                    sleep(Duration::from_secs(1)).await;
                    source.exit(load);
                    Ok(batch.len() as u64)
                }
            },
            &config(10, 2),
            &NoPressure,
            &progress,
            &CancellationToken::new(),
        ),
    )
    .await;
    assert!(outcome.is_err(), "timed out");
    assert_eq!(source.log().len(), 6);
    assert_eq!(source.completed.load(SeqCst), 4);
    assert_eq!(source.live.load(SeqCst), 0, "in-flight loads were dropped");
    assert_eq!(progress.keys_done(), 40);
    assert_accounted(&progress, pulled.load(SeqCst), None);
    assert!(progress.keys_skipped() >= 20);
}

/// A panic in `load_batch` (in the call itself or in its future) is a
/// failed batch; the caller never sees the panic.
#[tokio::test(start_paused = true)]
async fn a_panicking_load_is_a_failed_batch() {
    let pulled = Arc::new(AtomicU64::new(0));
    let progress = WarmProgress::default();
    let calls = AtomicU64::new(0);
    let load = |batch: Vec<u64>| {
        let index = calls.fetch_add(1, SeqCst);
        assert!(index != 2, "boom in the call");
        async move {
            sleep(Duration::from_millis(1)).await;
            assert!(index != 5, "boom in the future");
            Ok(batch.len() as u64)
        }
    };
    let report = warm(
        counted_keys(0..100, &pulled),
        load,
        &config(10, 2),
        &NoPressure,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.batches, 10);
    assert_eq!(report.batches_failed, 2);
    assert_eq!(report.keys_failed, 20);
    assert_eq!(report.keys_done, 80);
    assert_accounted(&progress, 100, Some(&report));

    // And when it stops the run, the panic is the error returned.
    let progress = WarmProgress::default();
    let err = warm(
        counted_keys(0..100, &pulled),
        |_batch: Vec<u64>| async move {
            if true {
                panic!("boom again");
            }
            Ok(0)
        },
        &WarmConfig {
            max_consecutive_failures: 1,
            ..config(10, 2)
        },
        &NoPressure,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::LoadPanicked(m) if m.contains("boom again")),
        "{err}"
    );
    assert!(progress.is_finished());
}

/// Seeded stress: random batch sizes, latencies, failures, panics and
/// pressure flips on a multi-thread runtime; 100k keys. Checks the
/// concurrency bound, exact accounting (every key dispatched exactly once,
/// failures exactly as the source decided) and termination. Then a run
/// cancelled at a random moment. Reproduce with `RAMPART_STRESS_SEED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stress_seeded() {
    const KEYS: u64 = 100_000;
    let seed = support::stress_seed(0x5EED_2024);
    let mut rng = fastrand::Rng::with_seed(seed);

    for round in 0..2 {
        let cancel_run = round == 1;
        let config = WarmConfig {
            batch_size: rng.usize(20..=500),
            max_concurrency: rng.usize(1..=8),
            max_keys_per_sec: rng.bool().then(|| rng.u32(500_000..=2_000_000)),
            max_consecutive_failures: 1_000,
        };
        println!("round {round}: {config:?}");
        let source = Arc::new(FakeSource::default());
        let pulled = Arc::new(AtomicU64::new(0));
        let progress = WarmProgress::default();
        let cancel = CancellationToken::new();
        let high = Arc::new(AtomicBool::new(false));
        let expected_failed = AtomicU64::new(0);
        // Calls that panicked before returning a future: never "completed".
        let panicked_in_call = AtomicU64::new(0);
        let seen: Mutex<Vec<u64>> = Mutex::new(Vec::new());
        let flipper = tokio::spawn({
            let high = Arc::clone(&high);
            let cancel = cancel.clone();
            let mut rng = fastrand::Rng::with_seed(seed ^ 0xF11F);
            let cancel_after = cancel_run.then(|| rng.u64(5..=60));
            async move {
                for tick in 0u64.. {
                    if cancel.is_cancelled() || tick > 20_000 {
                        break;
                    }
                    if cancel_after == Some(tick) {
                        cancel.cancel();
                    }
                    high.store(rng.u8(0..4) == 0, SeqCst);
                    sleep(Duration::from_micros(rng.u64(200..=1500))).await;
                }
            }
        });
        let pressure = {
            let high = Arc::clone(&high);
            move || high.load(SeqCst)
        };
        let max = config.max_concurrency;
        let run = warm(
            counted_keys(0..KEYS, &pulled),
            |batch: Vec<u64>| {
                let (index, load) = source.enter(&batch, &progress, &pulled);
                let (live, limit) = {
                    let log = source.log.lock().unwrap();
                    (log[index].live, log[index].limit)
                };
                assert!(live <= limit && limit <= max, "live {live} limit {limit}");
                seen.lock().unwrap().extend_from_slice(&batch);
                let mut rng = fastrand::Rng::with_seed(
                    seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                let n = batch.len() as u64;
                let outcome = rng.u8(0..100);
                let latency = Duration::from_micros(rng.u64(0..=2_000));
                if outcome == 0 {
                    expected_failed.fetch_add(n, SeqCst);
                    panicked_in_call.fetch_add(1, SeqCst);
                    panic!("stress: panic in call {index}");
                }
                let partial = rng.u64(0..=n);
                let source = Arc::clone(&source);
                let expected_failed = &expected_failed;
                async move {
                    if !latency.is_zero() {
                        sleep(latency).await;
                    }
                    source.exit(load);
                    match outcome {
                        1..=8 => {
                            expected_failed.fetch_add(n, SeqCst);
                            Err(source_error(format!("stress: batch {index} failed")))
                        }
                        9 => {
                            expected_failed.fetch_add(n, SeqCst);
                            panic!("stress: panic in future {index}");
                        }
                        10..=12 => {
                            expected_failed.fetch_add(n - partial, SeqCst);
                            Ok(partial)
                        }
                        _ => Ok(n),
                    }
                }
            },
            &config,
            &pressure,
            &progress,
            &cancel,
        );
        let report = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("stress run did not terminate")
            .unwrap_or_else(|err| panic!("seed {seed}: {err}"));
        cancel.cancel();
        flipper.await.unwrap();

        let log = source.log();
        let pulled = pulled.load(SeqCst);
        println!(
            "round {round}: {report:?}, {} batches, pulled {pulled}",
            log.len()
        );
        assert!(source.high_water.load(SeqCst) <= max);
        assert_eq!(source.live.load(SeqCst), 0);
        assert_eq!(
            source.completed.load(SeqCst) + panicked_in_call.load(SeqCst),
            log.len() as u64
        );
        assert_eq!(report.batches as usize, log.len());
        assert_eq!(report.keys_failed, expected_failed.load(SeqCst));
        assert_accounted(&progress, pulled, Some(&report));
        let seen = seen.into_inner().unwrap();
        let unique: HashSet<u64> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "a key was dispatched twice");
        assert_eq!(seen, (0..seen.len() as u64).collect::<Vec<_>>());
        if cancel_run {
            assert!(report.cancelled || pulled == KEYS, "{report:?}");
            assert!(report.keys_skipped <= config.batch_size as u64);
        } else {
            assert!(!report.cancelled);
            assert_eq!(pulled, KEYS);
            assert_eq!(report.keys_done + report.keys_failed, KEYS);
            assert_eq!(report.keys_skipped, 0);
        }
    }
}
