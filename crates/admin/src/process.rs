//! Process metrics an operator expects from any server: resident memory and open file
//! descriptors (with their limit), read from `/proc/self` on Linux. A few lines of parsing
//! instead of a crate: the three values are all that is needed. Elsewhere they are absent.

/// Resident set size in bytes (`/proc/self/statm`, second field, in pages).
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// Open file descriptors (`/proc/self/fd` entries).
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// The soft limit on open files (`/proc/self/limits`, "Max open files").
pub fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The page size: 4 KiB on the platforms FerryMQ runs on, read from the auxiliary vector
/// where the kernel reports it.
fn page_size() -> u64 {
    // AT_PAGESZ (6) in /proc/self/auxv: pairs of native-endian u64 (key, value).
    if let Ok(auxv) = std::fs::read("/proc/self/auxv") {
        for pair in auxv.chunks_exact(16) {
            let key = u64::from_ne_bytes(pair[..8].try_into().expect("8 bytes"));
            if key == 6 {
                return u64::from_ne_bytes(pair[8..].try_into().expect("8 bytes"));
            }
        }
    }
    4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn reads_this_process() {
        let rss = resident_memory_bytes().unwrap();
        assert!(rss > 1 << 20, "rss {rss}");
        let fds = open_fds().unwrap();
        assert!(fds >= 3, "fds {fds}");
        assert!(max_fds().unwrap() >= fds);
        assert!(page_size().is_power_of_two());
    }
}
