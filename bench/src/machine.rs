//! What the figures were measured on: date, commit, CPUs, memory, kernel and the disk under the
//! data directory, read from `/proc`, `/sys` and git. Anything unreadable is reported as
//! "unknown" rather than failing the run.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// Description of the machine and checkout a run happened on.
#[derive(Clone, Debug)]
pub struct Machine {
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// `git rev-parse --short HEAD`, with a note if the work tree had changes.
    pub commit: String,
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// CPU model name.
    pub cpu_model: String,
    /// Total memory in MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// Filesystem and device holding the data directory.
    pub disk: String,
}

impl Machine {
    /// Describes this machine, with the disk that holds `data_dir`.
    pub fn describe(data_dir: &Path) -> Machine {
        let meminfo = read("/proc/meminfo");
        let cpuinfo = read("/proc/cpuinfo");
        Machine {
            date: utc_date(SystemTime::now()),
            commit: commit(),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: field(&cpuinfo, "model name")
                .unwrap_or("unknown")
                .to_string(),
            memory_mib: field(&meminfo, "MemTotal")
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kib| kib / 1024),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            disk: disk(data_dir),
        }
    }
}

impl Machine {
    /// The `commit` and `machine` rows of a report's settings table.
    pub fn table_rows(&self) -> String {
        format!(
            "| commit | `{}` |\n\
             | machine | {} CPUs ({}), {:.1} GiB memory, Linux {}; data on {} |\n",
            self.commit,
            self.cpus,
            self.cpu_model,
            self.memory_mib as f64 / 1024.0,
            self.kernel,
            self.disk
        )
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The value of the first `name : value` line.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then_some(value.trim())
    })
}

fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".to_string();
    };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(changes) if !changes.is_empty() => {
            format!("{head} (work tree had uncommitted changes)")
        }
        _ => head,
    }
}

/// Filesystem type, device, and whether the kernel calls it rotational, from the mount with
/// the longest prefix of `path`.
fn disk(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = read("/proc/mounts");
    let mount = mounts
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (device, point, fs) = (parts.next()?, parts.next()?, parts.next()?);
            path.starts_with(point).then_some((device, point, fs))
        })
        .max_by_key(|(_, point, _)| point.len());
    let Some((device, point, fs)) = mount else {
        return "unknown".to_string();
    };
    let name = device.trim_start_matches("/dev/");
    let rotational = match read(&format!("/sys/block/{name}/queue/rotational")).trim() {
        "0" => ", non-rotational",
        "1" => ", reported rotational",
        _ => "",
    };
    format!("{fs} on {device} (mounted at {point}{rotational})")
}

/// `YYYY-MM-DD` in UTC.
fn utc_date(now: SystemTime) -> String {
    let days = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!("{year:04}-{month:02}-{day:02}")
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_counts_become_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_418), (2025, 11, 26));
    }

    #[test]
    fn fields_are_read_by_name() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC\n";
        assert_eq!(field(text, "model name"), Some("AMD EPYC"));
        assert_eq!(field(text, "flags"), None);
    }
}
