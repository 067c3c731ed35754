//! Broker memory, read from `/proc/<pid>/status` by a sampling thread: the largest `VmRSS`
//! seen (overall and since the last scenario boundary) and the kernel's own peak, `VmHWM`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the sampler reads the broker's status.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Memory figures in KiB, as `/proc` reports them.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryPeak {
    /// Largest `VmRSS` sampled.
    pub rss_max_kib: u64,
    /// `VmHWM` at the last successful read: the peak resident set since the process started.
    pub hwm_kib: Option<u64>,
}

impl MemoryPeak {
    /// The figure to compare against the RSS target: the kernel's peak when known (it sees
    /// spikes between samples), else the sampled maximum.
    pub fn peak_kib(&self) -> u64 {
        self.hwm_kib.unwrap_or(0).max(self.rss_max_kib)
    }

    /// One line for the command-line subcommands.
    pub fn describe(&self) -> String {
        format!(
            "peak RSS {:.1} MiB (VmHWM {}, max sampled VmRSS {:.1} MiB)",
            kib_to_mib(self.peak_kib()),
            self.hwm_kib.map_or("unknown".to_string(), |k| format!(
                "{:.1} MiB",
                kib_to_mib(k)
            )),
            kib_to_mib(self.rss_max_kib)
        )
    }
}

/// KiB to MiB.
pub fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Samples one process's memory on a background thread until finished.
pub struct RssSampler {
    pid: u32,
    stop: Arc<AtomicBool>,
    shared: Arc<Maxima>,
    thread: Option<JoinHandle<()>>,
}

/// The sampler thread's findings.
#[derive(Default)]
struct Maxima {
    run_kib: AtomicU64,
    since_mark_kib: AtomicU64,
    hwm_kib: AtomicU64,
}

impl RssSampler {
    /// Starts sampling `pid` every `SAMPLE_INTERVAL`.
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Maxima::default());
        let thread = {
            let (stop, shared) = (Arc::clone(&stop), Arc::clone(&shared));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    shared.record(pid);
                    std::thread::sleep(SAMPLE_INTERVAL);
                }
            })
        };
        RssSampler {
            pid,
            stop,
            shared,
            thread: Some(thread),
        }
    }

    /// The largest `VmRSS` since the previous call (or the start), then starts a new interval.
    pub fn take_interval_max_kib(&self) -> u64 {
        self.shared.record(self.pid);
        self.shared.since_mark_kib.swap(0, Ordering::Relaxed)
    }

    /// Stops sampling and returns the figures for the whole run.
    pub fn finish(mut self) -> MemoryPeak {
        self.shared.record(self.pid);
        self.stop_thread();
        let hwm = self.shared.hwm_kib.load(Ordering::Relaxed);
        MemoryPeak {
            rss_max_kib: self.shared.run_kib.load(Ordering::Relaxed),
            hwm_kib: (hwm > 0).then_some(hwm),
        }
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread only reads a file and sleeps; a panic there would be a bug here.
            thread.join().expect("RSS sampler thread panicked");
        }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

impl Maxima {
    /// Reads the status once; a process that has exited leaves the figures as they were.
    fn record(&self, pid: u32) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return;
        };
        if let Some(rss) = status_field_kib(&status, "VmRSS") {
            self.run_kib.fetch_max(rss, Ordering::Relaxed);
            self.since_mark_kib.fetch_max(rss, Ordering::Relaxed);
        }
        if let Some(hwm) = status_field_kib(&status, "VmHWM") {
            self.hwm_kib.fetch_max(hwm, Ordering::Relaxed);
        }
    }
}

/// The value of a `Name:   1234 kB` line of `/proc/<pid>/status`, in KiB.
fn status_field_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        let number = rest.trim().strip_suffix("kB")?.trim();
        number.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields_from_proc_status() {
        let status = "Name:\tferrymq\nVmHWM:\t  51200 kB\nVmRSS:\t   40960 kB\nThreads:\t9\n";
        assert_eq!(status_field_kib(status, "VmHWM"), Some(51_200));
        assert_eq!(status_field_kib(status, "VmRSS"), Some(40_960));
        assert_eq!(status_field_kib(status, "VmSwap"), None);
        assert_eq!(status_field_kib(status, "Threads"), None);
    }

    #[test]
    fn samples_this_process() {
        let sampler = RssSampler::start(std::process::id());
        let peak = sampler.finish();
        assert!(peak.rss_max_kib > 0, "{peak:?}");
        assert!(peak.hwm_kib.is_some(), "{peak:?}");
    }
}
