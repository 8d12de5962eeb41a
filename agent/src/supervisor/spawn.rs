//! Starting one worker process: its own session and process group, death with the agent, the
//! environment built here and nowhere else, and (in `fd` mode) the shared listener as fd 3.

use crate::config::RunAs;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, Command};

/// What one worker process is started with.
pub struct Launch<'a> {
    pub argv: &'a [String],
    pub cwd: &'a Path,
    /// The complete environment (nothing is inherited beyond it).
    pub env: &'a BTreeMap<String, String>,
    /// `fd` mode: the listening socket, passed as fd 3 with `LISTEN_FDS=1` and `LISTEN_PID`.
    pub listen_fd: Option<RawFd>,
    /// The name in `LISTEN_FDNAMES`.
    pub fd_name: &'a str,
    /// The account to start the process as (the agent must be root); `None`: the agent's own.
    pub run_as: Option<&'a RunAs>,
    /// `cgroup.procs` of the process tree's cgroup (`crate::cgroup`), joined before exec.
    pub cgroup_procs: Option<RawFd>,
    /// The worker's end of its IPC channel (`super::ipc`): close-on-exec in the agent, inherited
    /// by this child only (its number is in `env` already).
    pub ipc_fd: Option<RawFd>,
}

/// Start the process; stdout and stderr are piped for the log sink.
pub fn spawn(l: &Launch) -> io::Result<Child> {
    let program = resolve_program(&l.argv[0], l.env.get("PATH").map(String::as_str), l.cwd)?;
    let mut cmd = Command::new(&program);
    cmd.args(&l.argv[1..])
        .current_dir(l.cwd)
        .env_clear()
        .envs(l.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    if let Some(r) = l.run_as {
        // std drops the supplementary groups when root switches user, before our pre_exec runs;
        // PR_SET_PDEATHSIG is set after the switch, which would otherwise clear it.
        cmd.uid(r.uid).gid(r.gid);
    }
    let parent = std::process::id() as libc::pid_t;
    let cgroup = l.cgroup_procs;
    if let Some(fd) = l.ipc_fd {
        // SAFETY: fcntl only, between fork and exec, on an fd the agent keeps open until the
        // spawn returns.
        unsafe {
            cmd.pre_exec(move || inherit(fd));
        }
    }
    match l.listen_fd {
        None => {
            // SAFETY: only async-signal-safe calls (setsid, prctl, getppid, write) between fork
            // and exec.
            unsafe {
                cmd.pre_exec(move || detach_with_parent_death(parent, cgroup));
            }
        }
        Some(fd) => {
            let exec = FdExec::new(&program, l, fd)?;
            // SAFETY: as above, plus dup2/fcntl/execve on memory prepared before the fork; the
            // LISTEN_PID digits are written into the child's own copy of that memory.
            unsafe {
                cmd.pre_exec(move || {
                    detach_with_parent_death(parent, cgroup)?;
                    exec.exec()
                });
            }
        }
    }
    cmd.spawn()
}

/// New session (so signals reach the whole group, never the agent), SIGKILL when the agent dies,
/// and into the tree's cgroup before anything can be forked. A failed cgroup write is not fatal:
/// the agent moves the process after the spawn (`cgroup::Tree::adopt`).
pub(crate) fn detach_with_parent_death(parent: libc::pid_t, cgroup: Option<RawFd>) -> io::Result<()> {
    // SAFETY: plain syscalls.
    unsafe {
        if let Some(fd) = cgroup {
            libc::write(fd, b"0".as_ptr().cast(), 1);
        }
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        // The agent died between fork and prctl: the death signal will never come.
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// Let `fd` through the exec (it is close-on-exec in the agent, so no other child gets it).
fn inherit(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscalls.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `LISTEN_PID` must be the worker's own pid, known only after the fork, and the environment can't
/// be changed there safely. So the exec is done here, on argv and envp prepared beforehand, with
/// room for the pid digits.
struct FdExec {
    program: CString,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    listen_pid: Vec<u8>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    pid_slot: usize,
    fd: RawFd,
}

// SAFETY: the raw pointers point into the CStrings and buffer owned by the same value; they are
// only read in the forked child.
unsafe impl Send for FdExec {}
unsafe impl Sync for FdExec {}

const PID_PREFIX: &[u8] = b"LISTEN_PID=";

impl FdExec {
    fn new(program: &Path, l: &Launch, fd: RawFd) -> io::Result<FdExec> {
        let c = |s: &[u8]| {
            CString::new(s)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a command or env value"))
        };
        let program = c(program.as_os_str().as_bytes())?;
        let argv: Vec<CString> = l.argv.iter().map(|a| c(a.as_bytes())).collect::<io::Result<_>>()?;
        let mut envp: Vec<CString> = l
            .env
            .iter()
            .filter(|(k, _)| !k.starts_with("LISTEN_"))
            .map(|(k, v)| c(format!("{k}={v}").as_bytes()))
            .collect::<io::Result<_>>()?;
        envp.push(c(b"LISTEN_FDS=1")?);
        envp.push(c(format!("LISTEN_FDNAMES={}", l.fd_name).as_bytes())?);
        let mut listen_pid = PID_PREFIX.to_vec();
        listen_pid.extend_from_slice(&[0u8; 12]);
        let argv_ptrs = argv.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
        let pid_slot = envp_ptrs.len();
        envp_ptrs.push(listen_pid.as_ptr().cast());
        envp_ptrs.push(std::ptr::null());
        Ok(FdExec { program, _argv: argv, _envp: envp, listen_pid, argv_ptrs, envp_ptrs, pid_slot, fd })
    }

    /// In the child: put the listener on fd 3, write `LISTEN_PID`, exec. Returns only on failure.
    fn exec(&self) -> io::Result<()> {
        // SAFETY: async-signal-safe calls only; the buffer writes touch the child's copy.
        unsafe {
            if self.fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(self.fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            let buf = self.listen_pid.as_ptr() as *mut u8;
            let mut pid = libc::getpid() as u32;
            let mut digits = [0u8; 10];
            let mut n = 0;
            loop {
                digits[n] = b'0' + (pid % 10) as u8;
                n += 1;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            for i in 0..n {
                *buf.add(PID_PREFIX.len() + i) = digits[n - 1 - i];
            }
            *buf.add(PID_PREFIX.len() + n) = 0;
            debug_assert_eq!(self.envp_ptrs[self.pid_slot], self.listen_pid.as_ptr().cast());
            libc::execve(self.program.as_ptr(), self.argv_ptrs.as_ptr(), self.envp_ptrs.as_ptr());
        }
        Err(io::Error::last_os_error())
    }
}

/// Find the program like a shell would: a path with `/` is taken relative to `cwd`, a bare name
/// is looked up in the worker's `PATH`.
pub fn resolve_program(name: &str, path_var: Option<&str>, cwd: &Path) -> io::Result<PathBuf> {
    if name.contains('/') {
        return Ok(cwd.join(name));
    }
    let path_var = path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    for dir in std::env::split_paths(OsStr::new(path_var)) {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, format!("`{name}` not found in PATH")))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
