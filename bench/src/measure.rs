//! Measuring instruments: percentile summaries, process CPU time and
//! resident memory (sampled while a run is going), and a progress line.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Percentiles of a sample (milliseconds unless the field says otherwise).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dist {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Dist {
    /// Nearest-rank percentiles of `values` (sorted in place).
    pub fn of(values: &mut [f64]) -> Dist {
        if values.is_empty() {
            return Dist::default();
        }
        values.sort_by(|a, b| a.total_cmp(b));
        let rank = |p: f64| {
            let i = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values[i.clamp(1, values.len()) - 1]
        };
        Dist {
            count: values.len(),
            p50: round2(rank(50.0)),
            p95: round2(rank(95.0)),
            p99: round2(rank(99.0)),
            max: round2(values[values.len() - 1]),
            mean: round2(values.iter().sum::<f64>() / values.len() as f64),
        }
    }
}

/// Two decimals: enough for milliseconds, and JSON stays readable.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// CPU time used by this process so far (user, system), in seconds.
pub fn cpu_times() -> (f64, f64) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes into the struct we hand it, and a
    // zeroed rusage is a valid value should it fail.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

/// CPU seconds (user + system) used so far by another process, from
/// `/proc/<pid>/stat`; `None` when it cannot be read.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line (1-based),
    // 12 and 13 counted from the state field after ')' (1-based).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf reads a constant and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) / ticks)
}

/// CPU seconds used so far by the processes named `postgres` on this
/// machine (the local database server); backends that exited are missed.
pub fn postgres_cpu_seconds() -> Option<f64> {
    let mut total = 0.0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim() == "postgres");
        if is_postgres {
            if let Some(cpu) = cpu_seconds_of(pid) {
                total += cpu;
                found = true;
            }
        }
    }
    found.then_some(total)
}

/// A `Vm*` line of `/proc/self/status`, in KiB (0 when unavailable).
fn status_kib(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// Resident set size now, KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS")
}

/// Peak resident set size of the process so far (`VmHWM`), KiB.
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM")
}

/// Hands freed heap pages back to the OS (glibc keeps them otherwise), so a
/// following RSS baseline reflects live memory only.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// CPU and memory used over one measured section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Wall time of the section, seconds.
    pub wall_s: f64,
    /// CPU seconds used by the bench process (user + system).
    pub cpu_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    /// CPU seconds used by the target server process (when it runs apart).
    pub target_cpu_s: Option<f64>,
    /// CPU seconds used by local Postgres processes (approximate).
    #[serde(default)]
    pub postgres_cpu_s: Option<f64>,
    /// RSS when the section began, MiB.
    pub rss_start_mib: f64,
    /// Highest RSS sampled during the section (every 20 ms), MiB.
    pub rss_max_mib: f64,
    /// Peak RSS of the whole process so far (`VmHWM`), MiB.
    pub peak_rss_mib: f64,
}

/// Measures a section: CPU time, wall time, and RSS sampled in the
/// background until [`Meter::finish`].
pub struct Meter {
    started: Instant,
    cpu: (f64, f64),
    target_pid: Option<u32>,
    target_cpu: Option<f64>,
    postgres_cpu: Option<f64>,
    rss_start_kib: u64,
    rss_max_kib: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Meter {
    /// Starts measuring; `target_pid` is the target server's process, if
    /// it runs apart, so its CPU time can be reported alongside.
    pub fn start(target_pid: Option<u32>) -> Meter {
        let rss_start_kib = rss_kib();
        let rss_max_kib = Arc::new(AtomicU64::new(rss_start_kib));
        let max = rss_max_kib.clone();
        let sampler = tokio::spawn(async move {
            loop {
                max.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Meter {
            started: Instant::now(),
            cpu: cpu_times(),
            target_pid,
            target_cpu: target_pid.and_then(cpu_seconds_of),
            postgres_cpu: postgres_cpu_seconds(),
            rss_start_kib,
            rss_max_kib,
            sampler,
        }
    }

    /// Highest RSS sampled so far, KiB.
    pub fn rss_max_kib(&self) -> u64 {
        self.rss_max_kib.load(Ordering::Relaxed).max(rss_kib())
    }

    /// Stops the sampler and reports without Postgres CPU (for spans in
    /// which scratch databases come and go: their backends' CPU is lost).
    pub fn finish_without_postgres(self) -> Resources {
        Resources {
            postgres_cpu_s: None,
            ..self.finish()
        }
    }

    /// Stops the sampler and reports.
    pub fn finish(self) -> Resources {
        let rss_max_kib = self.rss_max_kib();
        self.sampler.abort();
        let (user, sys) = cpu_times();
        let user = user - self.cpu.0;
        let sys = sys - self.cpu.1;
        let target_cpu_s = match (self.target_pid.and_then(cpu_seconds_of), self.target_cpu) {
            (Some(end), Some(start)) => Some(round2(end - start)),
            _ => None,
        };
        let postgres_cpu_s = match (postgres_cpu_seconds(), self.postgres_cpu) {
            (Some(end), Some(start)) if end >= start => Some(round2(end - start)),
            _ => None,
        };
        Resources {
            wall_s: round3(self.started.elapsed().as_secs_f64()),
            cpu_s: round3(user + sys),
            cpu_user_s: round3(user),
            cpu_sys_s: round3(sys),
            target_cpu_s,
            postgres_cpu_s,
            rss_start_mib: mib(self.rss_start_kib),
            rss_max_mib: mib(rss_max_kib),
            peak_rss_mib: mib(peak_rss_kib()),
        }
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn mib(kib: u64) -> f64 {
    round2(kib as f64 / 1024.0)
}

/// A progress line on stderr: rewritten in place on a terminal, printed
/// every few seconds otherwise (CI logs).
pub struct Progress {
    label: String,
    tty: bool,
    last: Option<Instant>,
}

impl Progress {
    pub fn new(label: impl Into<String>) -> Progress {
        Progress {
            label: label.into(),
            tty: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    /// Shows `message` if enough time passed since the last one.
    pub fn update(&mut self, message: impl FnOnce() -> String) {
        let every = if self.tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(5)
        };
        if self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let line = format!("[{}] {}", self.label, message());
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the line (on a terminal) with a final message.
    pub fn done(&mut self, message: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = writeln!(err, "\r\x1b[K[{}] {message}", self.label);
        } else {
            let _ = writeln!(err, "[{}] {message}", self.label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let d = Dist::of(&mut v);
        assert_eq!((d.p50, d.p95, d.p99, d.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(Dist::of(&mut []), Dist::default());
        let d = Dist::of(&mut [7.0]);
        assert_eq!((d.p50, d.p99, d.count), (7.0, 7.0, 1));
    }

    #[test]
    fn reads_own_process_figures() {
        assert!(rss_kib() > 0);
        assert!(peak_rss_kib() >= rss_kib() / 2);
        assert!(cpu_seconds_of(std::process::id()).is_some());
    }
}
