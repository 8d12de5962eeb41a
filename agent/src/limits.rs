//! The agent's file descriptors. Fronts, the API, webhooks, worker pipes, git and SQLite share
//! one fd table, so the fronts get a budget and the rest a reserve they can always count on: a
//! flood of connections on a public port never makes `/healthz` or a reload fail.

use std::io;

/// How the fd table is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// `RLIMIT_NOFILE` as the agent runs with it.
    pub nofile: u64,
    /// Client connections all fronts together may hold (each one is two fds: the client and
    /// its upstream connection).
    pub front_connections: usize,
    /// Connections the API serves at once.
    pub api_connections: usize,
}

impl FdBudget {
    /// Half the table, at most 1024 fds, is kept back for everything but the fronts' clients;
    /// a quarter of that reserve (at most 128) serves API connections.
    pub fn for_limit(nofile: u64) -> FdBudget {
        let reserve = (nofile / 2).min(1024);
        let front_connections = (nofile.saturating_sub(reserve) / 2).max(1);
        let api_connections = (reserve / 4).clamp(4, 128);
        FdBudget {
            nofile,
            front_connections: usize::try_from(front_connections).unwrap_or(usize::MAX),
            api_connections: api_connections as usize,
        }
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (a default soft limit of 1024 is far below
/// what a proxy needs) and answer the limit in force.
pub fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Ok(lim.rlim_cur);
            }
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_kept_whatever_the_limit() {
        let small = FdBudget::for_limit(160);
        assert_eq!(small.front_connections, 40, "{small:?}");
        assert_eq!(small.api_connections, 20);
        assert!(small.front_connections * 2 + small.api_connections < 160);
        let usual = FdBudget::for_limit(1 << 20);
        assert_eq!(usual.api_connections, 128);
        assert_eq!(usual.front_connections, ((1 << 20) - 1024) / 2);
        assert!(FdBudget::for_limit(0).front_connections >= 1);
    }
}
