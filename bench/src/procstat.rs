//! CPU time and peak memory of processes, read from `/proc`.
//!
//! CPU time is counted in clock ticks (`utime + stime`, plus `cutime + cstime` for reaped
//! children). A process tree such as PostgreSQL (postmaster plus backends) is measured as the
//! postmaster's own and reaped children's time plus the time of its live children, so a backend
//! that exits between two snapshots is still counted (in the postmaster's `cutime`).

use std::sync::OnceLock;

/// The CPU counters of one process from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z` (zombie: exited, not yet reaped), ...
    pub state: char,
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
}

impl ProcStat {
    /// Own CPU time plus that of reaped children, in ticks.
    pub fn total_ticks(&self) -> u64 {
        self.utime + self.stime + self.cutime + self.cstime
    }

    /// Own CPU time only, in ticks.
    pub fn own_ticks(&self) -> u64 {
        self.utime + self.stime
    }
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5); field n is fields[n - 3].
    let num = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: u32::try_from(num(4)?).ok()?,
        utime: num(14)?,
        stime: num(15)?,
        cutime: num(16)?,
        cstime: num(17)?,
    })
}

/// `/proc/<pid>/stat`, or `None` when the process is gone.
pub fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `/proc/self/stat` of this benchmark process (its writer and poller threads).
pub fn self_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t))
        .map_or(0, |s| s.own_ticks())
}

/// A `kB` field of `/proc/<pid>/status` (e.g. `VmHWM`, `VmRSS`), in KiB.
pub fn parse_status_kib(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Peak resident set size (`VmHWM`) of a running process, in KiB; `None` once it has exited.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&text, "VmHWM")
}

/// Resident set size (`VmRSS`) of a running process, in KiB; `None` once it has exited.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&text, "VmRSS")
}

/// Live children of `pid`, by scanning `/proc`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| read_stat(child).is_some_and(|s| s.ppid == pid))
        .collect()
}

/// CPU ticks of the tree rooted at `pid`: its own and its reaped children's time plus the own
/// time of its live children. `None` when `pid` is gone.
pub fn tree_ticks(pid: u32) -> Option<u64> {
    let root = read_stat(pid)?;
    let children: u64 = children_of(pid)
        .into_iter()
        .filter_map(read_stat)
        .map(|s| s.own_ticks())
        .sum();
    Some(root.total_ticks() + children)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when that fails).
pub fn ticks_per_sec() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// Ticks to seconds.
pub fn secs(ticks: u64) -> f64 {
    ticks as f64 / ticks_per_sec() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "4242 (tokio (rt) x) S 17 4242 4242 0 -1 4194560 1200 0 3 0 \
                    250 75 9 4 20 0 8 0 12345 1000000 500 18446744073709551615";
        let s = parse_stat(text).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 17);
        assert_eq!((s.utime, s.stime, s.cutime, s.cstime), (250, 75, 9, 4));
        assert_eq!(s.total_ticks(), 338);
        assert_eq!(s.own_ticks(), 325);
        assert!(parse_stat("12 (x) S 1").is_none());
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let text = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    5120 kB\nVmRSS:\t4000 kB\n";
        assert_eq!(parse_status_kib(text, "VmHWM"), Some(5120));
        assert_eq!(parse_status_kib(text, "VmRSS"), Some(4000));
        assert_eq!(parse_status_kib(text, "VmSwap"), None);
    }

    #[test]
    fn this_process_is_visible_with_its_parent() {
        let me = std::process::id();
        let s = read_stat(me).unwrap();
        assert_ne!(s.state, 'Z');
        assert!(peak_rss_kib(me).unwrap() > 0);
        assert!(rss_kib(me).unwrap() > 0);
        assert!(tree_ticks(me).is_some());
        assert!(ticks_per_sec() >= 100);
        assert!(children_of(s.ppid).contains(&me));
    }
}
