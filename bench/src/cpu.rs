//! CPU used by the broker (or, for a cluster, all its nodes together) and by this process (the
//! client, librdkafka's threads included) over a measured interval, in cores, from
//! `/proc/<pid>/stat`. On a 2-core machine that the brokers and the client share, this says
//! which side a throughput figure was bound by.

use std::time::Duration;

/// Clock ticks per second in `/proc/<pid>/stat`: Linux's `USER_HZ`, fixed at 100 in the
/// kernel's user-space ABI whatever the kernel's own tick rate.
const USER_HZ: u64 = 100;

/// Average cores used over an interval.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    /// The broker processes, summed.
    pub broker_cores: f64,
    /// This process: the benchmark client and librdkafka.
    pub client_cores: f64,
}

/// Marks the start of an interval.
pub struct CpuMeter {
    broker_pids: Vec<u32>,
    broker_start: Option<Duration>,
    client_start: Option<Duration>,
}

impl CpuMeter {
    /// Starts an interval for the broker processes `broker_pids` and this process.
    pub fn start(broker_pids: &[u32]) -> CpuMeter {
        CpuMeter {
            broker_pids: broker_pids.to_vec(),
            broker_start: total_cpu_time(broker_pids),
            client_start: cpu_time(std::process::id()),
        }
    }

    /// CPU used since `start` divided by `interval` (the measured part of what ran since
    /// then; set-up before it is small next to the measurement), or `None` if `/proc` could
    /// not be read (a broker that exited meanwhile included).
    pub fn stop(&self, interval: Duration) -> Option<CpuUse> {
        let wall = interval.as_secs_f64().max(1e-9);
        let used = |start: Option<Duration>, now: Option<Duration>| -> Option<f64> {
            Some((now?.checked_sub(start?)?).as_secs_f64() / wall)
        };
        Some(CpuUse {
            broker_cores: used(self.broker_start, total_cpu_time(&self.broker_pids))?,
            client_cores: used(self.client_start, cpu_time(std::process::id()))?,
        })
    }
}

/// User plus system CPU time of several processes, summed; `None` if any is unreadable.
fn total_cpu_time(pids: &[u32]) -> Option<Duration> {
    pids.iter().map(|&pid| cpu_time(pid)).sum()
}

/// User plus system CPU time of a process so far.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// `utime + stime` from a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted from the last `)`: state is field 3,
/// utime 14 and stime 15.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_ticks_past_a_name_with_spaces() {
        let stat = "1234 (tokio rt) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 40 0 0 20 0 9 0 1 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(290));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn measures_this_process() {
        let meter = CpuMeter::start(&[std::process::id()]);
        let used = meter
            .stop(Duration::from_secs(1))
            .expect("this process's /proc/self/stat is readable");
        assert!(used.client_cores >= 0.0, "{used:?}");
    }
}
