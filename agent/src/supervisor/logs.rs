//! Worker output: every line goes to the app's log file (rotated by size) and to a ring buffer
//! that `GET /v1/apps/{app}/logs` reads without touching the disk.

use deployer_wire::LogLine;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::broadcast;

const RING_LINES: usize = 2000;
const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
        }
    }
}

#[derive(Debug)]
pub struct LogSink {
    app: String,
    file: Mutex<LogFile>,
    ring: Mutex<VecDeque<LogLine>>,
    /// Every new line, for `logs --follow`; a follower that lags skips lines rather than slow
    /// the workers down.
    live: broadcast::Sender<LogLine>,
}

#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    keep: u32,
}

impl LogSink {
    pub fn new(app: &str, dir: PathBuf, max_size: u64, keep: u32) -> LogSink {
        let path = dir.join(format!("{app}.log"));
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        LogSink {
            app: app.to_string(),
            file: Mutex::new(LogFile { path, file: None, size, max_size, keep }),
            ring: Mutex::new(VecDeque::with_capacity(RING_LINES)),
            live: broadcast::channel(1024).0,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).path.clone()
    }

    pub fn write(&self, worker: u32, stream: Stream, line: &str) {
        let ts_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let stamp = humantime::format_rfc3339_millis(SystemTime::now());
        let text = format!("{stamp} {}-{worker} {}| {line}\n", self.app, stream.as_str());
        self.file.lock().unwrap_or_else(|e| e.into_inner()).append(text.as_bytes());
        let entry = LogLine { ts_ms, worker, stream: stream.as_str().to_string(), line: line.to_string() };
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == RING_LINES {
            ring.pop_front();
        }
        ring.push_back(entry.clone());
        // Sent under the ring's lock, so a follower's tail and its stream neither overlap nor gap.
        let _ = self.live.send(entry);
    }

    /// The last `n` lines, and every line written after them.
    pub fn follow(&self, n: usize) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let tail = ring.iter().skip(ring.len().saturating_sub(n)).cloned().collect();
        (tail, self.live.subscribe())
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().skip(ring.len().saturating_sub(n)).cloned().collect()
    }

    /// Copy a worker's stdout or stderr into the sink, line by line, until it closes.
    pub async fn capture(&self, worker: u32, stream: Stream, pipe: impl AsyncRead + Unpin) {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::with_capacity(256);
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    buf.truncate(MAX_LINE);
                    let line = String::from_utf8_lossy(&buf);
                    self.write(worker, stream, line.trim_end_matches(['\n', '\r']));
                }
            }
        }
    }
}

impl LogFile {
    fn append(&mut self, bytes: &[u8]) {
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
    fn rotate(&mut self) {
        self.file = None;
        let name = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(name(self.keep));
            for i in (1..self.keep).rev() {
                let _ = std::fs::rename(name(i), name(i + 1));
            }
            let _ = std::fs::rename(&self.path, name(1));
        }
        self.size = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = std::env::temp_dir().join(format!("deployer-logs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sink = LogSink::new("web", dir.clone(), 200, 2);
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
