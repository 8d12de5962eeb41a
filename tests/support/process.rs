//! Facts about processes and ports, read from the kernel.

use std::net::TcpListener;

/// Whether `pid` names a live process. A zombie (exited, not yet reaped by whoever inherited it)
/// counts as gone: it runs nothing and holds no socket.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the state follows the last `)`, since `comm` may contain one.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Whether a new listener could bind `127.0.0.1:port` right now.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port for an agent to bind, free a moment ago, and never handed out before in this process.
///
/// Picked below the kernel's ephemeral range: workers get their private ports by binding port 0
/// and clients' sockets get ephemeral ports, so neither can take this port between the pick and
/// the agent's bind (another test's pick still could: [`crate::Agent`] retries that at startup).
/// The ports already given are remembered: two random picks of one test (its API and an app's
/// port) would otherwise meet about once in 4,000 tests, and the agent refuses a port used twice.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static STATE: AtomicU64 = AtomicU64::new(0);
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let span = u64::from(low.saturating_sub(1024).min(12_000));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let _ = STATE.compare_exchange(0, nanos ^ (u64::from(std::process::id()) << 32) | 1, Relaxed, Relaxed); // set once
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..200 {
        // xorshift64 (no crate needed for a few random numbers), one step per pick even when
        // threads of `cargo test` pick at once.
        let step = |mut x: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let Ok(previous) = STATE.fetch_update(Relaxed, Relaxed, |x| Some(step(x))) else { continue };
        let port = low - 1 - (step(previous) % span.max(1)) as u16;
        if span > 0 && !given.contains(&port) && port_is_free(port) {
            given.push(port);
            return port;
        }
    }
    let port = TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).expect("a free port").port();
    given.push(port);
    port
}

/// The environment a process started with (`/proc/<pid>/environ`).
pub fn environ(pid: u32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// What a command that ran to its end did.
#[derive(Debug)]
pub struct CliOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Assert that it exited 0; answers itself for more checks.
    #[track_caller]
    pub fn success(self) -> Self {
        assert!(self.status.success(), "expected success, got {}\n{self}", self.status);
        self
    }

    /// Assert that it exited with `code`; answers itself for more checks.
    #[track_caller]
    pub fn failure(self, code: i32) -> Self {
        assert_eq!(self.code(), Some(code), "expected exit code {code}\n{self}");
        self
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--- stdout ---\n{}--- stderr ---\n{}--- ({}) ---", self.stdout, self.stderr, self.status)
    }
}

/// Run `cmd` to its end, capturing stdout and stderr; kill it and panic after `timeout`.
pub fn run_to_end(mut cmd: std::process::Command, timeout: std::time::Duration) -> CliOutput {
    use std::io::Read;
    use std::process::Stdio;
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let status = crate::poll(timeout, || child.try_wait().expect("wait for a child"));
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{shown} did not finish within {timeout:?}");
    };
    CliOutput { status, stdout: out.join().expect("stdout reader"), stderr: err.join().expect("stderr reader") }
}
