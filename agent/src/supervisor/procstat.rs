//! What the kernel says about a worker process: CPU time, memory, start time (`/proc/<pid>/stat`).

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
    /// Start time in clock ticks since boot: with the pid, it names one process for good.
    pub start_ticks: u64,
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<ProcSample> {
    // The command name (field 2) may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is f[N - 3].
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start: u64 = f.get(19)?.parse().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    Some(ProcSample { cpu_ticks: utime + stime, rss_bytes: rss_pages * page_size(), start_ticks: start })
}

/// Which process group and session a process is in, and when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub pgrp: u32,
    pub session: u32,
    pub start_ticks: u64,
}

pub fn membership(pid: u32) -> Option<Membership> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_membership(&stat)
}

fn parse_membership(stat: &str) -> Option<Membership> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some(Membership {
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

/// Every process of group `pgrp`, as `/proc` lists them now.
pub fn group_members(pgrp: u32) -> Vec<Membership> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(membership)
        .filter(|m| m.pgrp == pgrp)
        .collect()
}

pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_after_a_tricky_name() {
        let stat = concat!(
            "1234 (node (worker) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 11 0 98765 1000000 2560 ",
            "18446744073709551615"
        );
        let s = parse_stat(stat).unwrap();
        assert_eq!(s.cpu_ticks, 300);
        assert_eq!(s.start_ticks, 98765);
        assert_eq!(s.rss_bytes, 2560 * page_size());
    }

    #[test]
    fn reads_group_and_session() {
        let stat =
            "1234 (node (worker) x) S 1 1230 1229 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 11 0 98765 1000000 2560 1";
        let m = parse_membership(stat).unwrap();
        assert_eq!((m.pgrp, m.session, m.start_ticks), (1230, 1229, 98765));
    }

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
    }
}
