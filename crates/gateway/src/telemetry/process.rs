//! CPU time and resident memory of a process, from Linux's `/proc`: the gateway exports
//! its own (`process_*` on `/metrics`) and the load generator samples the gateway's.

use std::io;

/// One reading of a process's resource use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// User + system CPU time since the process started.
    pub cpu_seconds: f64,
    /// Resident set size.
    pub rss_bytes: u64,
}

/// Reads `/proc/PID/stat` (CPU) and `/proc/PID/status` (`VmRSS`); `None` is this process.
/// Fails where there is no `/proc` (not Linux) or no such process.
pub fn sample(pid: Option<u32>) -> io::Result<ProcessSample> {
    let dir = pid.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"));
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    parse(&stat, &status, clock_ticks()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{dir}: unexpected format"),
        )
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// `stat`: the command name is in parentheses and may hold spaces, so fields are counted
/// after the last `)`: state is field 3, utime 14, stime 15 (in clock ticks).
fn parse(stat: &str, status: &str, ticks_per_second: f64) -> Option<ProcessSample> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(ProcessSample {
        cpu_seconds: (utime + stime) / ticks_per_second,
        rss_bytes: rss_kib * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "4242 (speech gw) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 100 1000000 3000 18446744073709551615";
        let status = "Name:\tspeech\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n";
        let s = parse(stat, status, 100.0).unwrap();
        assert!((s.cpu_seconds - 3.0).abs() < 1e-9);
        assert_eq!(s.rss_bytes, 12345 * 1024);
        assert_eq!(parse("garbage", status, 100.0), None);
        assert_eq!(parse(stat, "Name:\tx\n", 100.0), None);
    }

    #[test]
    fn reads_this_process() {
        let s = sample(None).unwrap();
        assert!(s.rss_bytes > 0);
    }
}
