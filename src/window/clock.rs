//! The monitor's time, injectable so tests can move it: a monotonic reading places records in
//! window slots, the wall clock only labels them.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the monitor reads the time.
///
/// Window slots are placed by [`monotonic`](Self::monotonic), so a wall clock stepped back or
/// forward (NTP, a VM resumed) neither empties a window nor destroys its slots; [`now`](Self::now)
/// only stamps records and answers (`timestamp`, `finished_at`, `since`).
pub trait Clock: Send + Sync + 'static {
    /// The wall-clock time, for display.
    fn now(&self) -> SystemTime;

    /// Time elapsed since a fixed origin of this clock's choosing; never goes backwards.
    fn monotonic(&self) -> Duration;
}

/// `t` as RFC 3339 with microseconds (`2025-11-13T14:56:38.123456Z`), the form every answer
/// shows. A time the format cannot write (before 1970, past 9999: a [`Clock`] of the app's
/// own may say anything) is shown at the nearest it can, never a panic.
pub(crate) fn rfc3339(t: SystemTime) -> humantime::Rfc3339Timestamp {
    // 9999-12-31T23:59:59.999999Z, the last time the format writes.
    const LAST: Duration = Duration::new(253_402_300_799, 999_999_000);
    let t = t.clamp(UNIX_EPOCH, UNIX_EPOCH + LAST);
    humantime::format_rfc3339_micros(t)
}

/// The system clock (the default): `SystemTime` for display, `Instant` for the windows.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Duration {
        system_origin().elapsed()
    }
}

/// The instant the system clock's monotonic readings count from.
fn system_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// A clock that moves only when told: for tests of windows, expiry and health.
///
/// [`advance`](Self::advance) moves time on (both readings); [`set`](Self::set) steps the wall
/// clock alone, as NTP or a resumed VM would, leaving the monotonic reading where it was.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tower_stream_monitor::window::{Clock, ManualClock};
///
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000));
/// clock.advance(Duration::from_secs(301));
/// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1_301));
/// assert_eq!(clock.monotonic(), Duration::from_secs(301));
/// clock.set(UNIX_EPOCH + Duration::from_secs(500));
/// assert_eq!(clock.monotonic(), Duration::from_secs(301));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    wall_nanos: Arc<AtomicU64>,
    mono_nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock showing `start`, its monotonic reading at zero.
    pub fn new(start: SystemTime) -> Self {
        Self {
            wall_nanos: Arc::new(AtomicU64::new(nanos_since_epoch(start))),
            mono_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves time forward: the wall clock and the monotonic reading alike.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.wall_nanos.fetch_add(by, Ordering::SeqCst);
        self.mono_nanos.fetch_add(by, Ordering::SeqCst);
    }

    /// Steps the wall clock to `to` (backwards too); the monotonic reading does not move.
    pub fn set(&self, to: SystemTime) {
        self.wall_nanos
            .store(nanos_since_epoch(to), Ordering::SeqCst);
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualClock").field(&self.now()).finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.wall_nanos.load(Ordering::SeqCst))
    }

    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.mono_nanos.load(Ordering::SeqCst))
    }
}

/// Window time: whole seconds on a scale that starts at the wall clock's reading when the
/// monitor was built and then moves with the monotonic reading only.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowTime {
    wall_origin_secs: u64,
    mono_origin: Duration,
}

impl WindowTime {
    pub(crate) fn new(clock: &dyn Clock) -> Self {
        Self {
            wall_origin_secs: unix_secs(clock.now()),
            mono_origin: clock.monotonic(),
        }
    }

    /// The monotonic reading when the monitor was built.
    pub(crate) fn mono_origin(&self) -> Duration {
        self.mono_origin
    }

    /// The window second now.
    pub(crate) fn secs(&self, clock: &dyn Clock) -> u64 {
        let elapsed = clock.monotonic().saturating_sub(self.mono_origin);
        self.wall_origin_secs.saturating_add(elapsed.as_secs())
    }
}

/// [`WindowTime::secs`] of the [`SystemClock`], with one clock reading and, within the second
/// a thread read last, no arithmetic on it: the second and the instants it spans are kept per
/// thread. The same figures: the window second is the whole seconds since `start`, the instant
/// the monitor's `WindowTime` was taken (its monotonic origin, as an `Instant`), past its wall
/// origin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SystemSecs {
    time: WindowTime,
    start: Instant,
    /// Tells this monitor's second from others' in the per-thread cache.
    id: u64,
}

thread_local! {
    /// (monitor id, end of the second, window second) as a thread read it last. Its start is
    /// not kept: the thread's later readings are not before it (`Instant` never goes back).
    static LAST_SECOND: Cell<Option<(u64, Instant, u64)>> = const { Cell::new(None) };
}

impl SystemSecs {
    /// For a monitor whose clock is the [`SystemClock`] and window time `time`.
    pub(crate) fn new(time: WindowTime) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Self {
            time,
            start: system_origin() + time.mono_origin,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The window second now: `time.secs(&SystemClock)`.
    #[inline]
    pub(crate) fn secs(&self) -> u64 {
        let now = Instant::now();
        if let Some((id, to, secs)) = LAST_SECOND.get() {
            if id == self.id && now < to {
                return secs;
            }
        }
        self.secs_at(now)
    }

    #[inline(never)]
    fn secs_at(&self, now: Instant) -> u64 {
        // As `WindowTime::secs`: the monotonic reading less its origin, in whole seconds.
        let elapsed = now.saturating_duration_since(self.start).as_secs();
        let secs = self.time.wall_origin_secs.saturating_add(elapsed);
        let to = self
            .start
            .checked_add(Duration::from_secs(elapsed))
            .and_then(|from| from.checked_add(Duration::from_secs(1)));
        if let Some(to) = to {
            LAST_SECOND.set(Some((self.id, to, secs)));
        }
        secs
    }
}

fn nanos_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch (0 before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast reading of the system clock's window second agrees with the general one, read
    /// just before and just after it, for two monitors sharing a thread's cache.
    #[test]
    fn system_secs_match_the_window_time() {
        let early = WindowTime::new(&SystemClock);
        std::thread::sleep(Duration::from_millis(30));
        let late = WindowTime::new(&SystemClock);
        let (fast_early, fast_late) = (SystemSecs::new(early), SystemSecs::new(late));
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1_100) {
            for (time, fast) in [(early, fast_early), (late, fast_late)] {
                let before = time.secs(&SystemClock);
                let secs = fast.secs();
                let after = time.secs(&SystemClock);
                assert!(before <= secs && secs <= after, "{before} {secs} {after}");
            }
        }
    }
}
