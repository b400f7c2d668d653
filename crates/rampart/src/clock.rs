//! One time source for every guard.
//!
//! Why not `std::time::Instant` everywhere: the cache's hit path reads the
//! clock on every call, and `clock_gettime` costs a noticeable fraction of
//! an L1 hit. A *coarse* clock is one atomic load of a time that an upkeep
//! thread refreshes every millisecond.
//!
//! Why our own and not `quanta` (which this module wrapped at first): its
//! `Clock::recent` is not inlinable across crates, so every coarse read was
//! a call and a match on the clock's kind, where this is a null test and a
//! load (0.9 ns vs 2.2 ns a read; BENCHMARKS.md, "Clock reads"). quanta's
//! precise reads are faster than `std`'s where it can use the TSC (23 vs 46
//! ns here), but precise reads only time loads, off the hit path, so `std`
//! is enough for them. Why not `tokio::time::Instant`: the guards also run
//! outside a runtime.
//!
//! The mock clock lets tests move time by hand, so TTLs, breaker windows and
//! budgets are tested without sleeping.

use std::ops::{Add, AddAssign, Sub};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How often the coarse clock's upkeep thread refreshes the time.
const COARSE_RESOLUTION: Duration = Duration::from_millis(1);

/// A moment on a [`Clock`]: nanoseconds since the process's time origin
/// (precise and coarse clocks), or since a mock clock was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The clock's origin: no reading is earlier.
    pub const ORIGIN: Instant = Instant(0);

    /// Time since `earlier`, or zero if `earlier` is later (a coarse read
    /// may lag a precise one by up to a millisecond).
    #[inline]
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Time since `earlier`, or `None` if `earlier` is later.
    pub fn checked_duration_since(self, earlier: Instant) -> Option<Duration> {
        self.0.checked_sub(earlier.0).map(Duration::from_nanos)
    }

    /// `self + d`, or `None` past the end of time (~584 years).
    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        u64::try_from(d.as_nanos())
            .ok()
            .and_then(|d| self.0.checked_add(d))
            .map(Instant)
    }

    /// `self - d`, or `None` before the clock's origin.
    pub fn checked_sub(self, d: Duration) -> Option<Instant> {
        u64::try_from(d.as_nanos())
            .ok()
            .and_then(|d| self.0.checked_sub(d))
            .map(Instant)
    }

    /// Nanoseconds since the clock's origin.
    pub fn as_nanos(self) -> u64 {
        self.0
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturates at the end of time rather than panicking: a deadline that
    /// far away means "never".
    #[inline]
    fn add(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;

    /// Saturates at the clock's origin.
    fn sub(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;

    /// Saturates at zero, like [`Instant::saturating_duration_since`].
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// The precise time: nanoseconds since the process's time origin (its
/// first reading).
fn precise() -> Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    Instant(u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// A shared time value, alone in its cache line: every hit reads the coarse
/// clock's, and a neighbour written by other threads would make each of
/// those reads a cache miss (false sharing).
#[derive(Debug, Default)]
#[repr(align(64))]
struct TimeCell(AtomicU64);

/// The hand-moved time of a [`Clock::mock`].
#[derive(Debug, Default)]
pub struct Mock {
    nanos: Arc<TimeCell>,
}

impl Mock {
    /// Moves the mock's time forward.
    pub fn increment(&self, by: Duration) {
        self.shift(by, u64::saturating_add);
    }

    /// Moves the mock's time back (to test clocks that step backwards).
    pub fn decrement(&self, by: Duration) {
        self.shift(by, u64::saturating_sub);
    }

    fn shift(&self, by: Duration, op: fn(u64, u64) -> u64) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed: tests move time from one thread and read it anywhere;
        // nothing else is published through this value.
        let _ = self
            .nanos
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(op(n, by)));
    }

    /// The mock's time, in nanoseconds since it was made.
    pub fn value(&self) -> u64 {
        self.nanos.0.load(Ordering::Relaxed)
    }
}

/// A cheap monotonic clock: precise, coarse (≤ 1 ms behind, one atomic
/// load) or mocked. Cloning is cheap; clones share a mock.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Where `now()` reads the time: the coarse clock's shared cell or a
    /// mock's; `None` reads the precise clock. One pointer, so the hit
    /// path's read is a null test and a load.
    cell: Option<Arc<TimeCell>>,
    /// The cell is the coarse clock's (not a mock's): precise reads go to
    /// the precise clock.
    coarse: bool,
}

impl Clock {
    /// A precise clock (`std::time::Instant` underneath).
    pub fn new() -> Self {
        Clock {
            cell: None,
            coarse: false,
        }
    }

    /// A clock whose [`now`](Self::now) is at most ~1 ms behind, read with
    /// one atomic load. Starts the process-wide upkeep thread
    /// (`rampart-clock`) on first use; if that thread cannot be started,
    /// falls back to a precise clock.
    pub fn coarse() -> Self {
        static COARSE: OnceLock<Option<Arc<TimeCell>>> = OnceLock::new();
        let cell = COARSE.get_or_init(|| {
            let cell = Arc::new(TimeCell(AtomicU64::new(precise().0)));
            let upkeep = Arc::clone(&cell);
            std::thread::Builder::new()
                .name("rampart-clock".into())
                .spawn(move || loop {
                    // Relaxed: readers want a recent time, not ordering
                    // with other memory.
                    upkeep.0.store(precise().0, Ordering::Relaxed);
                    std::thread::sleep(COARSE_RESOLUTION);
                })
                .ok()
                .map(|_| cell)
        });
        Clock {
            cell: cell.clone(),
            coarse: cell.is_some(),
        }
    }

    /// A clock that only moves when the returned [`Mock`] is moved. It
    /// starts at zero.
    pub fn mock() -> (Self, Arc<Mock>) {
        let mock = Arc::new(Mock::default());
        (
            Clock {
                cell: Some(Arc::clone(&mock.nanos)),
                coarse: false,
            },
            mock,
        )
    }

    /// Whether this clock is a [`mock`](Self::mock).
    pub fn is_mock(&self) -> bool {
        self.cell.is_some() && !self.coarse
    }

    /// The current time (coarse or precise, as this clock was built).
    #[inline]
    pub fn now(&self) -> Instant {
        match &self.cell {
            Some(cell) => Instant(cell.0.load(Ordering::Relaxed)),
            None => precise(),
        }
    }

    /// The current time, precise unless mocked: for measuring how long a
    /// call took.
    #[inline]
    pub fn precise_now(&self) -> Instant {
        match &self.cell {
            Some(mock) if !self.coarse => Instant(mock.0.load(Ordering::Relaxed)),
            _ => precise(),
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch, for times that must mean
/// the same thing in several processes (entries in a shared L2).
///
/// With a real clock every read asks the system clock: an anchor taken at
/// start-up and moved by the monotonic clock would keep a process started
/// before an NTP step wrong by the size of the step for its whole life, and
/// every entry it wrote to a shared tier would carry the skew to every other
/// instance. Reads happen on the slow path only (fills and L2 reads), where a
/// system-clock read (a vDSO call, tens of ns) is nothing. With a mock clock
/// the anchor is kept, so mocked time moves wall time too.
#[derive(Clone, Debug)]
pub struct WallClock {
    clock: Clock,
    base: Instant,
    base_unix_ms: u64,
}

fn system_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl WallClock {
    /// Wall time for `clock`: the system clock, or for a mock, the system
    /// clock now moved by the mock from here on.
    pub fn new(clock: Clock) -> Self {
        let base = clock.precise_now();
        WallClock {
            clock,
            base,
            base_unix_ms: system_unix_ms(),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> u64 {
        if !self.clock.is_mock() {
            return system_unix_ms();
        }
        let elapsed = self.clock.now().saturating_duration_since(self.base);
        self.base_unix_ms
            .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }

    /// The clock underneath.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_moves_only_by_hand() {
        let (clock, mock) = Clock::mock();
        let start = clock.now();
        assert_eq!(clock.precise_now(), start);
        mock.increment(Duration::from_millis(1_500));
        assert_eq!(
            clock.now().saturating_duration_since(start),
            Duration::from_millis(1_500)
        );
        mock.decrement(Duration::from_millis(500));
        assert_eq!(mock.value(), 1_000_000_000);
        let clone = clock.clone();
        mock.increment(Duration::from_secs(1));
        assert_eq!(clone.now(), clock.now());
    }

    #[test]
    fn coarse_follows_precise_within_its_resolution() {
        let coarse = Clock::coarse();
        let precise = Clock::new();
        let before = precise.now();
        std::thread::sleep(Duration::from_millis(20));
        let read = coarse.now();
        let after = precise.now();
        // The upkeep ran at least once during the sleep (generous bound: a
        // loaded 2-core CI box may delay it), and never runs ahead.
        assert!(read > before, "coarse clock did not move");
        assert!(read <= after, "coarse clock ahead of the precise one");
        // A coarse clock still measures precisely.
        assert!(coarse.precise_now() >= after);
    }

    #[test]
    fn wall_time_of_a_real_clock_is_the_system_clock_now() {
        // An anchored wall clock would stay wherever the system clock was at
        // start; this one must track it. A real NTP step cannot be made in a
        // test, so compare with the system clock read around it, for both
        // real clocks, after the anchor has aged.
        for clock in [Clock::new(), Clock::coarse()] {
            let wall = WallClock::new(clock);
            std::thread::sleep(Duration::from_millis(30));
            let before = system_unix_ms();
            let read = wall.unix_ms();
            let after = system_unix_ms();
            assert!(
                before <= read && read <= after,
                "{before} <= {read} <= {after}"
            );
        }
        let (clock, mock) = Clock::mock();
        let wall = WallClock::new(clock);
        let start = wall.unix_ms();
        mock.increment(Duration::from_secs(3600));
        assert_eq!(wall.unix_ms() - start, 3_600_000);
    }

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        let t = Instant(5);
        assert_eq!(t - Duration::from_nanos(10), Instant(0));
        assert_eq!(t.checked_sub(Duration::from_nanos(10)), None);
        assert_eq!(t + Duration::MAX, Instant(u64::MAX));
        assert_eq!(t.checked_add(Duration::MAX), None);
        assert_eq!(Instant(3) - t, Duration::ZERO);
        assert_eq!(t.checked_duration_since(Instant(7)), None);
        assert_eq!(
            t.saturating_duration_since(Instant(2)),
            Duration::from_nanos(3)
        );
    }
}
