//! `current_system`: this process's CPU, memory, threads and file descriptors.
//!
//! Read from `/proc` (Linux) rather than through a crate such as sysinfo: we need five numbers
//! about our own process, which are three small files, and sysinfo would refresh far more. Sampled
//! lazily when an endpoint asks, cached for one second; no thread of its own. On other systems
//! every figure is 0.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The `current_system` object of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct SystemStats {
    /// CPU used by this process since the previous sample, in percent of one core.
    pub cpu_percent: f64,
    /// Resident set size, MiB.
    pub memory_mb: f64,
    /// Resident set size as a percent of the machine's memory.
    pub memory_percent: f64,
    /// Threads of this process.
    pub num_threads: u64,
    /// Open file descriptors of this process.
    pub num_fds: u64,
}

const CACHE_FOR: Duration = Duration::from_secs(1);

struct Sample {
    at: Instant,
    cpu_ticks: u64,
    /// False for the first sample, which has no interval to measure CPU over.
    cpu_ticks_valid: bool,
    stats: SystemStats,
}

pub(crate) struct SystemSampler {
    last: Mutex<Option<Sample>>,
}

impl SystemSampler {
    pub(crate) fn new() -> Self {
        Self {
            last: Mutex::new(None),
        }
    }

    pub(crate) fn sample(&self) -> SystemStats {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(s) = last.as_ref() {
            if now.duration_since(s.at) < CACHE_FOR && s.cpu_ticks_valid {
                return s.stats;
            }
        }
        let raw = read_proc();
        let cpu_percent = match (last.as_ref(), raw.cpu_ticks) {
            (Some(prev), Some(ticks)) if ticks >= prev.cpu_ticks => {
                let secs = now.duration_since(prev.at).as_secs_f64();
                let used = (ticks - prev.cpu_ticks) as f64 / clock_ticks_per_second();
                if secs > 0.0 { used / secs * 100.0 } else { 0.0 }
            }
            _ => 0.0,
        };
        let stats = SystemStats {
            cpu_percent,
            memory_mb: raw.rss_bytes as f64 / (1024.0 * 1024.0),
            memory_percent: if raw.total_bytes > 0 {
                raw.rss_bytes as f64 * 100.0 / raw.total_bytes as f64
            } else {
                0.0
            },
            num_threads: raw.threads,
            num_fds: raw.fds,
        };
        *last = Some(Sample {
            at: now,
            cpu_ticks: raw.cpu_ticks.unwrap_or(0),
            cpu_ticks_valid: last.is_some(),
            stats,
        });
        stats
    }
}

#[derive(Default)]
struct Raw {
    cpu_ticks: Option<u64>,
    rss_bytes: u64,
    total_bytes: u64,
    threads: u64,
    fds: u64,
}

/// `sysconf(_SC_CLK_TCK)` is 100 on every Linux architecture in use.
fn clock_ticks_per_second() -> f64 {
    100.0
}

#[cfg(target_os = "linux")]
fn read_proc() -> Raw {
    let mut raw = Raw::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may contain spaces) start after the last ')'.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
            let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
            if let (Some(u), Some(s)) = (tick(11), tick(12)) {
                raw.cpu_ticks = Some(u + s);
            }
            raw.threads = tick(17).unwrap_or(0);
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        raw.rss_bytes = kib_field(&status, "VmRSS:") * 1024;
    }
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        raw.total_bytes = kib_field(&meminfo, "MemTotal:") * 1024;
    }
    raw.fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    raw
}

#[cfg(not(target_os = "linux"))]
fn read_proc() -> Raw {
    Raw::default()
}

#[cfg(target_os = "linux")]
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = SystemSampler::new().sample();
        assert!(s.memory_mb > 1.0, "{s:?}");
        assert!(s.memory_percent > 0.0 && s.memory_percent < 100.0);
        assert!(s.num_threads >= 1 && s.num_fds >= 3, "{s:?}");
    }
}
