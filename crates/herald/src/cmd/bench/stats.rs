//! The CPU time and memory of a process, and the open-files limit: what the bench reports about
//! the server and itself. Read from `/proc` and set with `setrlimit` on Linux; elsewhere the
//! figures are unknown (`None`) and the limit is left as it is.

// libc's sysconf/getrlimit/setrlimit: the workspace denies unsafe code everywhere else.
#![allow(unsafe_code)]

/// Seconds of CPU (user + system) a process (`None`: this one) has used, from `/proc/PID/stat`.
pub fn process_cpu_s(pid: Option<u32>) -> Option<f64> {
    process_cpu_split_s(pid).map(|(user, sys)| user + sys)
}

/// Seconds of CPU a process (`None`: this one) has used in user space and in the kernel: a server
/// bound by syscalls and one bound by its own code need different fixes.
#[cfg(target_os = "linux")]
pub fn process_cpu_split_s(pid: Option<u32>) -> Option<(f64, f64)> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime as f64 / ticks, stime as f64 / ticks))
}

/// Unknown without `/proc`.
#[cfg(not(target_os = "linux"))]
pub fn process_cpu_split_s(_pid: Option<u32>) -> Option<(f64, f64)> {
    None
}

/// A process's resident set size in bytes, from `VmRSS` in `/proc/PID/status`.
#[cfg(target_os = "linux")]
pub fn process_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Unknown without `/proc`.
#[cfg(not(target_os = "linux"))]
pub fn process_rss_bytes(_pid: u32) -> Option<u64> {
    None
}

/// Raises the soft open-files limit to `want` (and the hard one too when allowed, e.g. as root);
/// returns the soft limit in force afterwards.
#[cfg(target_os = "linux")]
pub fn raise_fd_limit(want: u64) -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write to / read from a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Some(0);
        }
        if lim.rlim_cur >= want {
            return Some(lim.rlim_cur);
        }
        let raised = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max.max(want) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return Some(want);
        }
        let capped = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &capped) == 0 {
            return Some(lim.rlim_max);
        }
        Some(lim.rlim_cur)
    }
}

/// Unknown, and left as it is, off Linux.
#[cfg(not(target_os = "linux"))]
pub fn raise_fd_limit(_want: u64) -> Option<u64> {
    None
}
