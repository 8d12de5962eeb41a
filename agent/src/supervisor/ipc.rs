//! The IPC channel Node gives a forked child, as PM2 gives it to every Node worker: one end of a
//! unix socket pair as `NODE_CHANNEL_FD`, newline-delimited JSON (`NODE_CHANNEL_SERIALIZATION_MODE=json`).
//!
//! Node's own child side (`setupChildProcessIpcChannel`, `internal/child_process`'s `setupChannel`)
//! makes `process.send` and `process.on('message')` work on it, so an app written for PM2 runs
//! unchanged: `process.send('ready')` marks the worker ready (`ready: { message: true }`), and the
//! agent sends `'shutdown'` before the stop signal (PM2's `shutdown_with_message`).
//!
//! What a worker sends is read in bounded memory ([`super::lines`]): `"ready"` is readiness;
//! Node's internal messages (`{"cmd": "NODE_..."}`) and PM2 metrics (`{"type": "axm:..."}`) are
//! ignored; anything else is logged, at most [`LOGGED_PER_MINUTE`] messages a minute. A handle
//! sent with `process.send(msg, handle)` (`NODE_HANDLE`) is acknowledged (`NODE_HANDLE_ACK`) and
//! dropped: its fd never reaches the agent (no control buffer is read, so the kernel closes it),
//! and without the acknowledgement Node would queue every later message, `'ready'` included.

use super::lines;
use super::logs::{LogSink, Stream};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

/// Messages of one worker logged per minute at most; the rest are counted and said once.
pub const LOGGED_PER_MINUTE: u32 = 60;

/// A logged message is cut to this many bytes.
const LOGGED_BYTES: usize = 512;

/// The worker's end, until the worker is spawned with it: `NODE_CHANNEL_FD` names it. Close-on-exec
/// like every fd of the agent, so no other child (another worker, an install step) inherits it;
/// only this worker's spawn clears the flag, between fork and exec.
pub struct ChildEnd(OwnedFd);

impl ChildEnd {
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// The variables that tell Node where its channel is.
    pub fn env(&self) -> [(String, String); 2] {
        [("NODE_CHANNEL_FD".into(), self.raw().to_string()), ("NODE_CHANNEL_SERIALIZATION_MODE".into(), "json".into())]
    }
}

/// The agent's end of one worker run's channel.
pub struct Channel {
    writer: Arc<Mutex<OwnedWriteHalf>>,
    ready: watch::Receiver<bool>,
    /// Ends the reader when the run ends (a grandchild may still hold the worker's end open).
    done: CancellationToken,
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

/// A socket pair: the agent's end reads in a task of `tasks` (logging to `logs` as worker `id`),
/// the child's end is handed to the spawn.
pub fn pair(id: u32, logs: Arc<LogSink>, tasks: &tokio_util::task::TaskTracker) -> io::Result<(Channel, ChildEnd)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    let ours = UnixStream::from_std(ours)?;
    let theirs = above_listener_fd(OwnedFd::from(theirs))?;
    let (read, write) = ours.into_split();
    let writer = Arc::new(Mutex::new(write));
    let (ready_tx, ready) = watch::channel(false);
    let done = CancellationToken::new();
    let stop = done.clone();
    let acks = writer.clone();
    tasks.spawn(async move {
        let mut seen = Seen::default();
        // Handles to acknowledge; more than this many unacknowledged are the worker's problem.
        let (handle_tx, mut handles) = tokio::sync::mpsc::channel::<()>(16);
        let read_all = lines::read(read, |line| {
            if line.is_cut() {
                seen.log(&logs, id, "a message over 16 KiB (not read)");
                return;
            }
            match classify(line.text()) {
                Message::Ready => {
                    ready_tx.send_replace(true);
                }
                Message::Handle => {
                    // full: acknowledgements are pending already, the worker waits for those
                    let _ = handle_tx.try_send(());
                }
                Message::Ignored => {}
                Message::Other(text) => seen.log(&logs, id, &text),
            }
        });
        tokio::pin!(read_all);
        loop {
            tokio::select! {
                _ = &mut read_all => return,
                _ = stop.cancelled() => return,
                Some(()) = handles.recv() => {
                    if let Err(e) = write_frame(&acks, &serde_json::json!({ "cmd": "NODE_HANDLE_ACK" })).await {
                        tracing::debug!(worker = id, error = %e, "cannot acknowledge a handle");
                    }
                }
            }
        }
    });
    Ok((Channel { writer, ready, done }, ChildEnd(theirs)))
}

/// The worker's end on fd 4 or above: in `fd` mode the listener goes onto fd 3 between fork and
/// exec, which must not replace the channel.
fn above_listener_fd(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 3 {
        return Ok(fd);
    }
    // SAFETY: fcntl on an fd we own; the result is a new fd we own.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 4) };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `moved` is a fresh fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

impl Channel {
    /// Resolves once the worker sent `'ready'` (pending for ever if it never does).
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.clone();
        if ready.wait_for(|r| *r).await.is_err() {
            // The reader ended (the worker closed its end): no `ready` can come any more.
            std::future::pending::<()>().await;
        }
    }

    /// Send `message` as Node's JSON serialization frames it. A worker that closed its end (or
    /// died) cannot be told: the signals that follow still reach it.
    pub async fn send(&self, message: &serde_json::Value) -> io::Result<()> {
        write_frame(&self.writer, message).await
    }
}

/// One message as Node's JSON serialization frames it: the JSON and a newline.
async fn write_frame(writer: &Mutex<OwnedWriteHalf>, message: &serde_json::Value) -> io::Result<()> {
    let mut frame = message.to_string().into_bytes();
    frame.push(b'\n');
    let mut w = writer.lock().await;
    // A worker that stopped reading must not hold the stop up: the kill path follows anyway.
    match tokio::time::timeout(Duration::from_secs(1), w.write_all(&frame)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the worker does not read its IPC channel")),
    }
}

/// What one message from a worker means to the agent.
#[derive(Debug, PartialEq)]
enum Message {
    /// `process.send('ready')`.
    Ready,
    /// `process.send(msg, handle)`: acknowledged, the handle dropped.
    Handle,
    /// Node's internal messages and PM2's metrics: nothing for the agent.
    Ignored,
    /// Anything else, as text for the log.
    Other(String),
}

fn classify(line: &str) -> Message {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
        return Message::Other(format!("not JSON: {line}"));
    };
    let tag = |key: &str| value.get(key).and_then(serde_json::Value::as_str).map(str::to_owned);
    match &value {
        serde_json::Value::String(s) if s == "ready" => Message::Ready,
        serde_json::Value::Object(_) if tag("cmd").as_deref() == Some("NODE_HANDLE") => Message::Handle,
        serde_json::Value::Object(_)
            if tag("cmd").is_some_and(|c| c.starts_with("NODE_"))
                || tag("type").is_some_and(|t| t.starts_with("axm:")) =>
        {
            Message::Ignored
        }
        _ => Message::Other(line.to_string()),
    }
}

/// The log of one worker's messages, [`LOGGED_PER_MINUTE`] at most.
#[derive(Default)]
struct Seen {
    window: Option<Instant>,
    logged: u32,
    dropped: u32,
}

impl Seen {
    fn log(&mut self, logs: &LogSink, id: u32, text: &str) {
        let now = Instant::now();
        if self.window.is_none_or(|w| now.duration_since(w) >= Duration::from_secs(60)) {
            if self.dropped > 0 {
                logs.write(id, Stream::Out, &format!("[deployer] {} more IPC messages were not logged", self.dropped));
            }
            *self = Seen { window: Some(now), logged: 0, dropped: 0 };
        }
        if self.logged >= LOGGED_PER_MINUTE {
            self.dropped += 1;
            return;
        }
        self.logged += 1;
        let mut end = text.len().min(LOGGED_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let more = if end < text.len() { "…" } else { "" };
        logs.write(id, Stream::Out, &format!("[ipc] {}{more}", &text[..end]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_ready_ignored_or_logged() {
        assert_eq!(classify(r#""ready""#), Message::Ready);
        assert_eq!(classify(r#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{}}"#), Message::Handle);
        assert_eq!(classify(r#"{"cmd":"NODE_HANDLE_ACK"}"#), Message::Ignored);
        assert_eq!(classify(r#"{"type":"axm:monitor","data":{}}"#), Message::Ignored);
        assert_eq!(
            classify(r#"{"type":"process:msg","data":1}"#),
            Message::Other(r#"{"type":"process:msg","data":1}"#.into())
        );
        assert_eq!(classify(r#""readyy""#), Message::Other(r#""readyy""#.into()));
        assert_eq!(classify("{oops"), Message::Other("not JSON: {oops".into()));
        // `{ready: true}` is not PM2's ready.
        assert!(matches!(classify(r#"{"ready":true}"#), Message::Other(_)));
    }

    #[tokio::test]
    async fn ready_comes_over_the_socket_and_shutdown_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Arc::new(LogSink::new("t", dir.path().to_path_buf(), &Default::default(), Default::default()));
        let tasks = tokio_util::task::TaskTracker::new();
        let (channel, child) = pair(0, logs.clone(), &tasks).unwrap();
        assert!(child.raw() > 3);
        let flags = unsafe { libc::fcntl(child.raw(), libc::F_GETFD) };
        assert!(flags & libc::FD_CLOEXEC != 0, "the child's end is close-on-exec until its spawn");
        let mut theirs = std::os::unix::net::UnixStream::from(child.0);
        use std::io::{BufRead, Write};
        theirs.write_all(b"{\"type\":\"process:msg\",\"data\":\"hi\"}\n\"rea").unwrap();
        let early = tokio::time::timeout(Duration::from_millis(100), channel.wait_ready()).await;
        assert!(early.is_err(), "half a message is not ready");
        theirs.write_all(b"dy\"\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), channel.wait_ready()).await.expect("ready");
        channel.send(&serde_json::json!("shutdown")).await.unwrap();
        let mut got = String::new();
        std::io::BufReader::new(&theirs).read_line(&mut got).unwrap();
        assert_eq!(got, "\"shutdown\"\n");
        let tail: Vec<String> = logs.tail(10, None).into_iter().map(|l| l.line).collect();
        assert!(tail.iter().any(|l| l.contains(r#"[ipc] {"type":"process:msg","data":"hi"}"#)), "{tail:?}");
        drop(channel);
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await.expect("the reader ends with the channel");
    }

    /// A real Node child sends a handle, then `'ready'`: the handle is acknowledged (else Node
    /// would hold `'ready'` back for ever) and its fd never reaches the agent.
    #[tokio::test]
    async fn a_node_worker_that_sends_a_handle_still_gets_ready() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Arc::new(LogSink::new("t", dir.path().to_path_buf(), &Default::default(), Default::default()));
        let tasks = tokio_util::task::TaskTracker::new();
        let (channel, end) = pair(0, logs, &tasks).unwrap();
        let script = "const s = require('net').createServer(); \
                      s.listen(0, '127.0.0.1', () => { process.send('here', s); process.send('ready'); }); \
                      process.on('message', (m) => m === 'shutdown' && process.exit(0));";
        let argv: Vec<String> = vec!["node".into(), "-e".into(), script.into()];
        let mut env: std::collections::BTreeMap<String, String> =
            std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME").collect();
        env.extend(end.env());
        let launch = super::super::spawn::Launch {
            argv: &argv,
            cwd: dir.path(),
            env: &env,
            listen_fd: None,
            fd_name: "",
            run_as: None,
            cgroup_procs: None,
            ipc_fd: Some(end.raw()),
        };
        let mut child = super::super::spawn::spawn(&launch).expect("node starts");
        drop(end);
        tokio::time::timeout(Duration::from_secs(20), channel.wait_ready()).await.expect("ready after the handle");
        // The handle is the child's listening socket: had its fd been passed, this process would
        // hold the same socket. (Counting this process's fds would race the tests beside it.)
        let sockets = |pid: String| -> std::collections::HashSet<String> {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|target| target.to_string_lossy().into_owned())
                .filter(|target| target.starts_with("socket:"))
                .collect()
        };
        let theirs = sockets(child.id().expect("running").to_string());
        assert!(!theirs.is_empty(), "the child's sockets are visible");
        assert!(sockets("self".into()).is_disjoint(&theirs), "a handle's fd reached the agent");
        channel.send(&serde_json::json!("shutdown")).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("exits").unwrap();
        assert!(status.success(), "{status}");
    }
}
