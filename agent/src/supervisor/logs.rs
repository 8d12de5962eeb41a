//! Worker output: every line goes to the app's log file (rotated by size) and to a ring buffer
//! that `GET /v1/apps/{app}/logs` reads without touching the disk.
//!
//! Lines are read in bounded memory (see [`super::lines`]: longer than 16 KiB, cut and marked)
//! and every secret value the agent knows is masked before a line is kept anywhere. The ring and
//! the followers' channel are bounded in bytes as well as in lines, so a worker printing long
//! lines fast costs the agent a few MiB per app at most.

use super::lines;
use crate::secrets::Secrets;
use deployer_wire::LogLine;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::AsyncRead;
use tokio::sync::broadcast;

/// The ring buffer keeps the last this many lines...
const RING_LINES: usize = 2000;
/// ...and no more than this many bytes of them.
const RING_BYTES: usize = 4 << 20;
/// Lines a follower may lag behind before it skips some (each up to 16 KiB).
const LIVE_LINES: usize = 256;

#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    /// As the API and the log file name it.
    fn to_wire(self) -> deployer_wire::LogStream {
        match self {
            Stream::Out => deployer_wire::LogStream::Out,
            Stream::Err => deployer_wire::LogStream::Err,
        }
    }
}

#[derive(Debug)]
pub struct LogSink {
    app: String,
    file: Mutex<LogFile>,
    ring: Mutex<Ring>,
    /// Every new line, for `logs --follow`; a follower that lags skips lines rather than slow
    /// the workers down.
    live: broadcast::Sender<LogLine>,
    secrets: Secrets,
}

/// The last lines, bounded in count and in bytes.
#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
}

/// The writer of an app's access log (`<app>.access.log`, rotated like its worker log): one
/// task owns the file and appends the lines the front sends, until `stop`. The channel is
/// bounded: the front drops a line rather than wait for the disk.
pub fn access_log(
    path: PathBuf,
    max_size: u64,
    keep: u32,
    tracker: &tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::sync::mpsc::Sender<String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4096);
    tracker.spawn(async move {
        let mut file = LogFile::new(path, max_size, keep);
        loop {
            let line = tokio::select! {
                l = rx.recv() => l,
                _ = stop.cancelled() => {
                    // The app stops: what was already sent still goes in.
                    rx.close();
                    while let Ok(mut line) = rx.try_recv() {
                        line.push('\n');
                        file.append(line.as_bytes());
                    }
                    None
                }
            };
            let Some(mut line) = line else { return };
            line.push('\n');
            file.append(line.as_bytes());
        }
    });
    tx
}

/// A log file rotated by size (`web.log` -> `web.log.1` ...): worker output and access logs.
#[derive(Debug)]
pub(super) struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    keep: u32,
}

impl LogSink {
    pub fn new(app: &str, dir: PathBuf, max_size: u64, keep: u32, secrets: Secrets) -> LogSink {
        let path = dir.join(format!("{app}.log"));
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        LogSink {
            app: app.to_string(),
            file: Mutex::new(LogFile { path, file: None, size, max_size, keep }),
            ring: Mutex::new(Ring::default()),
            live: broadcast::channel(LIVE_LINES).0,
            secrets,
        }
    }

    /// Keep one line, its secrets masked.
    pub fn write(&self, worker: u32, stream: Stream, line: &str) {
        self.keep(worker, stream, &self.secrets.mask(line));
    }

    /// Keep one line as it is (masked and cut already).
    fn keep(&self, worker: u32, stream: Stream, line: &str) {
        let ts_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let stamp = humantime::format_rfc3339_millis(SystemTime::now());
        let text = format!("{stamp} {}-{worker} {}| {line}\n", self.app, stream.to_wire());
        self.file.lock().unwrap_or_else(|e| e.into_inner()).append(text.as_bytes());
        let entry = LogLine { ts_ms, worker, stream: stream.to_wire(), line: line.to_string() };
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.push(entry.clone());
        // Sent under the ring's lock, so a follower's tail and its stream neither overlap nor gap.
        let _ = self.live.send(entry);
    }

    /// The last `n` lines, and every line written after them.
    pub fn follow(&self, n: usize) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        (ring.tail(n), self.live.subscribe())
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).tail(n)
    }

    /// Copy a worker's stdout or stderr into the sink, line by line, until it closes.
    pub async fn capture(&self, worker: u32, stream: Stream, pipe: impl AsyncRead + Unpin) {
        lines::read(pipe, |line| self.keep(worker, stream, &line.finish(&self.secrets))).await;
    }
}

impl Ring {
    fn push(&mut self, line: LogLine) {
        self.bytes += line.line.len();
        self.lines.push_back(line);
        while self.lines.len() > RING_LINES || (self.bytes > RING_BYTES && self.lines.len() > 1) {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.line.len();
            }
        }
    }

    /// The last `n` lines, oldest first.
    fn tail(&self, n: usize) -> Vec<LogLine> {
        self.lines.iter().skip(self.lines.len().saturating_sub(n)).cloned().collect()
    }
}

impl LogFile {
    pub(super) fn new(path: PathBuf, max_size: u64, keep: u32) -> LogFile {
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        LogFile { path, file: None, size, max_size, keep }
    }

    pub(super) fn append(&mut self, bytes: &[u8]) {
        if self.size + bytes.len() as u64 > self.max_size && self.size > 0 {
            self.rotate();
        }
        if self.file.is_none() {
            self.file = OpenOptions::new().create(true).append(true).mode(0o600).open(&self.path).ok();
        }
        if let Some(f) = &mut self.file
            && f.write_all(bytes).is_ok()
        {
            self.size += bytes.len() as u64;
        }
    }

    /// `web.log` -> `web.log.1` -> ... -> `web.log.<keep>` (dropped beyond).
    ///
    /// A step that fails is logged and the rest goes on: the worker's output is never held up by
    /// its log file, and the next rotation tries again.
    fn rotate(&mut self) {
        self.file = None;
        let name = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        if self.keep == 0 {
            rotation_step("remove", &self.path, std::fs::remove_file(&self.path));
        } else {
            rotation_step("remove", &name(self.keep), std::fs::remove_file(name(self.keep)));
            for i in (1..self.keep).rev() {
                rotation_step("rename", &name(i), std::fs::rename(name(i), name(i + 1)));
            }
            rotation_step("rename", &self.path, std::fs::rename(&self.path, name(1)));
        }
        self.size = 0;
    }
}

/// A missing file is normal in a rotation (fewer old logs than `keep` so far); any other failure
/// is logged with the file it concerns.
fn rotation_step(action: &str, path: &Path, result: std::io::Result<()>) {
    if let Err(e) = result
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot {action} a log file while rotating");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_masked_and_the_ring_is_bounded_in_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secrets = Secrets::for_test(&[("HOOK", "hook-secret-value")]);
        let sink = LogSink::new("web", dir.path().to_path_buf(), 1 << 30, 1, secrets);
        let (_, mut follower) = sink.follow(0);
        sink.write(0, Stream::Out, "the secret is hook-secret-value");
        assert_eq!(sink.tail(1)[0].line, "the secret is ***");
        assert_eq!(follower.try_recv().expect("a line").line, "the secret is ***");
        let file = std::fs::read_to_string(dir.path().join("web.log")).expect("web.log");
        assert!(file.contains("the secret is ***") && !file.contains("hook-secret-value"), "{file}");

        let long = "y".repeat(16 * 1024);
        for _ in 0..RING_LINES {
            sink.write(0, Stream::Out, &long);
        }
        let ring = sink.ring.lock().unwrap();
        assert!(ring.bytes <= RING_BYTES && ring.lines.len() == RING_BYTES / long.len(), "{}", ring.lines.len());
        assert_eq!(ring.bytes, ring.lines.iter().map(|l| l.line.len()).sum::<usize>());
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = std::env::temp_dir().join(format!("deployer-logs-test-{}", std::process::id()));
        // a leftover of an earlier run may not exist
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sink = LogSink::new("web", dir.clone(), 200, 2, Secrets::default());
        for i in 0..20 {
            sink.write(0, Stream::Out, &format!("line number {i}"));
        }
        assert!(dir.join("web.log").exists());
        assert!(dir.join("web.log.1").exists());
        assert!(dir.join("web.log.2").exists());
        assert!(!dir.join("web.log.3").exists());
        assert!(std::fs::metadata(dir.join("web.log")).unwrap().len() <= 200);
        let tail = sink.tail(3);
        assert_eq!(
            tail.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["line number 17", "line number 18", "line number 19"]
        );
    }
}
