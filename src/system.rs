//! `current_system`: this process's CPU, memory, threads and file descriptors.
//!
//! Read through [sysinfo], which covers Linux, macOS, Windows, FreeBSD and Android, refreshing
//! only this process (CPU time and memory, nothing else) and the machine's total RAM: never the
//! process list as a whole, the CPUs, disks or networks. sysinfo has no thread count, so on Linux
//! and Android that one figure is read from `/proc/self/stat`. A figure this platform cannot give
//! is `None` (`null` in JSON), never a made-up 0.
//!
//! Sampled lazily when an endpoint asks (the [`System`] is only created then), cached for one
//! second; no thread of its own.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use sysinfo::{MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// The `current_system` object of `/metrics`: this process, as the operating system sees it.
///
/// Every field is `None` (`null` in JSON) when this platform, or this run, cannot give it; the
/// JSON keys are always present.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct SystemStats {
    /// CPU time (user + system, all threads) used by this process since the previous sample,
    /// in percent of one core over the wall time between the two samples: above 100 when more
    /// than one core is busy. `None` where this process's CPU time cannot be read, and until 200 ms
    /// after a monitor's first sample, which has no interval long enough to measure over yet
    /// (the requests until then sample again rather than being served from the cache).
    pub cpu_percent: Option<f64>,
    /// Resident set size (physical memory in use by this process; the working set on Windows),
    /// in MiB. `None` where it cannot be read.
    pub memory_mb: Option<f64>,
    /// Resident set size as a percent of the machine's physical memory (not of a cgroup or
    /// container limit). `None` where either figure cannot be read.
    pub memory_percent: Option<f64>,
    /// Threads (tasks) of this process. Linux and Android only (`/proc/self/stat`); `None`
    /// elsewhere.
    pub num_threads: Option<u64>,
    /// Open file descriptors of this process, sockets and pipes included. Linux, Android and
    /// FreeBSD; `None` elsewhere: macOS only reports the size of the descriptor table, not how
    /// many are open, and Windows has handles (of every kind), not descriptors. On Linux one of
    /// them is sysinfo's, which keeps `/proc/self/stat` open between samples.
    pub num_fds: Option<u64>,
}

const CACHE_FOR: Duration = Duration::from_secs(1);
/// The shortest interval CPU use is measured over: CPU time comes in 10 ms ticks, so a tick
/// over a moment's gap would read as many cores.
const MIN_CPU_INTERVAL: Duration = Duration::from_millis(200);

/// Where sysinfo's open-file count is a count of open descriptors.
const COUNTS_FDS: bool = cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd"
));

pub(crate) struct SystemSampler {
    /// `None` until the first sample.
    state: Mutex<Option<State>>,
}

struct State {
    sys: System,
    /// `None` where sysinfo cannot name this process (an unsupported platform).
    pid: Option<Pid>,
    last: Option<Sample>,
}

struct Sample {
    at: Instant,
    /// Accumulated CPU time of this process, milliseconds.
    cpu_ms: Option<u64>,
    /// False for a first sample whose CPU figure had no interval to measure over: the next call
    /// samples again instead of serving it from the cache.
    complete: bool,
    stats: SystemStats,
}

/// One reading of the operating system's figures.
#[derive(Default)]
struct Reading {
    cpu_ms: Option<u64>,
    rss_bytes: Option<u64>,
    total_bytes: Option<u64>,
    threads: Option<u64>,
    fds: Option<u64>,
}

impl SystemSampler {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(None),
        }
    }

    pub(crate) fn sample(&self) -> SystemStats {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = guard.get_or_insert_with(State::new);
        let now = Instant::now();
        if let Some(s) = &state.last {
            if s.complete && now.duration_since(s.at) < CACHE_FOR {
                return s.stats;
            }
        }
        let raw = state.read();
        // The first sample stays the baseline until the interval is long enough to measure.
        let too_soon = state
            .last
            .as_ref()
            .is_some_and(|s| now.duration_since(s.at) < MIN_CPU_INTERVAL);
        let prev = state
            .last
            .as_ref()
            .filter(|_| !too_soon)
            .map(|s| (s.at, s.cpu_ms));
        let cpu_percent = match (prev, raw.cpu_ms) {
            (_, None) => None,
            (Some((at, Some(before))), Some(after)) => {
                let secs = now.duration_since(at).as_secs_f64();
                match after.checked_sub(before) {
                    Some(used) if secs > 0.0 => Some(used as f64 / 1000.0 / secs * 100.0),
                    _ => None,
                }
            }
            // No previous CPU time to measure from: unknown, not a false 0.
            (_, Some(_)) => None,
        };
        let stats = SystemStats {
            cpu_percent,
            memory_mb: raw.rss_bytes.map(|b| b as f64 / (1024.0 * 1024.0)),
            memory_percent: match (raw.rss_bytes, raw.total_bytes) {
                (Some(rss), Some(total)) => Some(rss as f64 * 100.0 / total as f64),
                _ => None,
            },
            num_threads: raw.threads,
            num_fds: raw.fds,
        };
        if too_soon {
            return stats;
        }
        state.last = Some(Sample {
            at: now,
            cpu_ms: raw.cpu_ms,
            // Complete when measured over an interval, or when there is nothing to wait for.
            complete: prev.is_some() || raw.cpu_ms.is_none(),
            stats,
        });
        stats
    }
}

impl State {
    fn new() -> Self {
        Self {
            sys: System::new(),
            pid: sysinfo::get_current_pid().ok(),
            last: None,
        }
    }

    fn read(&mut self) -> Reading {
        let Some(pid) = self.pid else {
            return Reading {
                threads: read_threads(),
                ..Reading::default()
            };
        };
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        self.sys
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let process = self.sys.process(pid);
        Reading {
            // Accumulated CPU time over our own wall-clock interval rather than sysinfo's
            // `cpu_usage`, which is measured against the CPUs' own times (on Windows it reads 0
            // unless every CPU is refreshed too): the same figure on every platform.
            cpu_ms: process.map(|p| p.accumulated_cpu_time()),
            // A running process always has resident pages: 0 means sysinfo could not read it.
            rss_bytes: process.map(|p| p.memory()).filter(|&b| b > 0),
            total_bytes: Some(self.sys.total_memory()).filter(|&b| b > 0),
            threads: read_threads(),
            fds: process
                .filter(|_| COUNTS_FDS)
                .and_then(|p| p.open_files())
                .map(|n| n as u64),
        }
    }
}

/// `num_threads`, field 20 of `/proc/self/stat`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_threads() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')':
    // field 3 (state) is the first there, so field 20 is the 18th.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace()
        .nth(17)?
        .parse()
        .ok()
        .filter(|&n| n > 0)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn read_threads() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Burns about `ms` milliseconds of CPU on this thread.
    fn spin(ms: u64) {
        let until = Instant::now() + Duration::from_millis(ms);
        let mut x = 0u64;
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }

    #[test]
    fn this_process_figures_are_plausible() {
        let sampler = SystemSampler::new();
        let first = sampler.sample();
        spin(MIN_CPU_INTERVAL.as_millis() as u64 + 50);
        // The first sample had no interval, so this one samples again.
        let s = sampler.sample();
        if sysinfo::IS_SUPPORTED_SYSTEM {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            for stats in [first, s] {
                let mb = stats.memory_mb.expect("memory_mb");
                assert!(mb > 1.0 && mb.is_finite(), "{stats:?}");
                let pct = stats.memory_percent.expect("memory_percent");
                assert!(pct > 0.0 && pct < 100.0, "{stats:?}");
            }
            assert_eq!(first.cpu_percent, None, "first sample: no interval yet");
            let cpu = s.cpu_percent.expect("cpu_percent over the interval");
            // Generous: CPU time is counted in ticks (10 ms on Linux).
            assert!(
                cpu.is_finite() && cpu >= 0.0 && cpu <= cores * 100.0 * 2.0 + 50.0,
                "{s:?}"
            );
        }
        if cfg!(target_os = "linux") {
            let (threads, fds) = (s.num_threads.expect("threads"), s.num_fds.expect("fds"));
            assert!(threads >= 1 && fds >= 3, "{s:?}");
        }
        if cfg!(any(target_os = "macos", target_os = "windows")) {
            assert_eq!((s.num_threads, s.num_fds), (None, None), "{s:?}");
        }
    }

    #[test]
    fn a_complete_sample_is_cached_for_a_second() {
        let sampler = SystemSampler::new();
        sampler.sample();
        spin(MIN_CPU_INTERVAL.as_millis() as u64 + 10);
        let s = sampler.sample();
        spin(20);
        assert_eq!(sampler.sample(), s);
    }

    /// CPU use is never measured over a moment's gap: a 10 ms tick over a fraction of a
    /// millisecond read as twenty cores. Until the interval is long enough the figure is
    /// unknown, and the first sample stays the baseline.
    #[test]
    fn cpu_use_waits_for_an_interval_long_enough_to_measure() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        for _ in 0..50 {
            let sampler = SystemSampler::new();
            let started = Instant::now();
            sampler.sample();
            spin(15);
            let soon = sampler.sample();
            if started.elapsed() < MIN_CPU_INTERVAL {
                assert_eq!(soon.cpu_percent, None, "{soon:?}");
            }
            assert!(
                soon.cpu_percent
                    .is_none_or(|cpu| cpu <= cores * 100.0 * 1.5),
                "{soon:?}"
            );
        }
    }

    #[test]
    fn unknown_figures_are_null_and_keys_stay() {
        let json = serde_json::to_value(SystemStats {
            cpu_percent: Some(1.5),
            memory_mb: Some(20.0),
            memory_percent: Some(0.5),
            num_threads: None,
            num_fds: None,
        })
        .expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"cpu_percent": 1.5, "memory_mb": 20.0, "memory_percent": 0.5,
                               "num_threads": null, "num_fds": null})
        );
    }
}
