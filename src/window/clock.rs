//! The monitor's time, injectable so tests can move it: a monotonic reading places records in
//! window slots, the wall clock only labels them.

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

/// The system clock (the default): `SystemTime` for display, `Instant` for the windows.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
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
