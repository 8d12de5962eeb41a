//! Worker output: every line goes to the app's log files (rotated by size, gzipped when
//! `logs.compress`) and to a ring buffer that `GET /v1/apps/{app}/logs` reads without touching
//! the disk. Which file a line goes to (`<app>.log`, or `logs.out` / `logs.err`, per worker
//! unless `logs.merge`) and how it is written (`text` or PM2's `json` lines) is [`LogsConfig`]'s.
//!
//! Lines are read in bounded memory (see [`super::lines`]: longer than 16 KiB, cut and marked)
//! and every secret value the agent knows is masked before a line is kept anywhere. The ring and
//! the followers' channel are bounded in bytes as well as in lines, so a worker printing long
//! lines fast costs the agent a few MiB per app at most.

use super::lines;
use crate::config::{LogFormat, LogsConfig};
use crate::secrets::Secrets;
use deployer_wire::{LogLine, LogStream};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncRead;
use tokio::sync::broadcast;

/// The ring buffer keeps the last this many lines...
const RING_LINES: usize = 2000;
/// ...and no more than this many bytes of them.
const RING_BYTES: usize = 4 << 20;
/// Lines a follower may lag behind before it skips some (each up to 16 KiB).
const LIVE_LINES: usize = 256;
/// How often an open log file is checked to still be the one at its path. One moved away or
/// removed (logrotate without `copytruncate`, an operator's `rm`) would otherwise take every line
/// until the next rotation by size, where no one looks; within this long a new one takes over.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

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
    files: Mutex<Files>,
    ring: Mutex<Ring>,
    /// Every new line, for `logs --follow`; a follower that lags skips lines rather than slow
    /// the workers down.
    live: broadcast::Sender<LogLine>,
    secrets: Secrets,
}

/// The app's log files, opened as lines come.
#[derive(Debug)]
struct Files {
    dir: PathBuf,
    settings: LogsConfig,
    open: BTreeMap<PathBuf, LogFile>,
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
    settings: &LogsConfig,
    tracker: &tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::sync::mpsc::Sender<String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4096);
    let mut file = LogFile::new(path, settings);
    tracker.spawn(async move {
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
    /// When `file` was last found at `path` (or opened).
    checked: Instant,
    /// Lines dropped since the file last took one (it cannot be opened or written: a directory
    /// or a symlink at its path, a full disk). The first is logged, and the count once it works.
    dropped: u64,
    /// The last write stopped in the middle of a line (a full disk, a full pipe): the next line
    /// ends it first, so that it starts on a line of its own instead of glued to the torn one.
    torn: bool,
    size: u64,
    max_size: u64,
    keep: u32,
    compress: bool,
}

impl LogSink {
    pub fn new(app: &str, dir: PathBuf, settings: &LogsConfig, secrets: Secrets) -> LogSink {
        LogSink {
            app: app.to_string(),
            files: Mutex::new(Files { dir, settings: settings.clone(), open: BTreeMap::new() }),
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
        let now = SystemTime::now();
        let ts_ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let text = files.render(&self.app, now, worker, stream, line);
        files.append(&self.app, worker, stream, text.as_bytes());
        drop(files);
        let entry = LogLine { ts_ms, worker, stream: stream.to_wire(), line: line.to_string() };
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.push(entry.clone());
        // Sent under the ring's lock, so a follower's tail and its stream neither overlap nor gap.
        let _ = self.live.send(entry);
    }

    /// The last `n` lines (of stream `only`, or of both), and every line written after them.
    pub fn follow(&self, n: usize, only: Option<LogStream>) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        (ring.tail(n, only), self.live.subscribe())
    }

    /// The last `n` lines (of stream `only`, or of both), oldest first.
    pub fn tail(&self, n: usize, only: Option<LogStream>) -> Vec<LogLine> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).tail(n, only)
    }

    /// `deployer flush`: empty the app's log files, remove their rotated copies and forget the
    /// lines kept in memory. Answers the files emptied or removed.
    pub fn flush(&self) -> Vec<PathBuf> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let flushed = files.flush(&self.app);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        *ring = Ring::default();
        flushed
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

    /// The last `n` lines of stream `only` (of both when `None`), oldest first.
    fn tail(&self, n: usize, only: Option<LogStream>) -> Vec<LogLine> {
        let mut tail: Vec<LogLine> =
            self.lines.iter().rev().filter(|l| only.is_none_or(|s| l.stream == s)).take(n).cloned().collect();
        tail.reverse();
        tail
    }
}

impl Files {
    /// One line as the file holds it, with its line ending.
    fn render(&self, app: &str, now: SystemTime, worker: u32, stream: Stream, line: &str) -> String {
        let stamp = match &self.settings.date_format {
            // Checked when the config was read: formatting cannot fail.
            Some(f) => chrono::DateTime::<chrono::Local>::from(now).format(&f.0).to_string(),
            None => humantime::format_rfc3339_millis(now).to_string(),
        };
        match self.settings.format {
            LogFormat::Text => format!("{stamp} {app}-{worker} {}| {line}\n", stream.to_wire()),
            // PM2's keys, for the log shippers PM2 users already point at these files.
            LogFormat::Json => {
                let obj = serde_json::json!({
                    "message": line,
                    "timestamp": stamp,
                    "type": stream.to_wire().as_str(),
                    "process_id": worker,
                    "app_name": app,
                });
                format!("{obj}\n")
            }
        }
    }

    /// The file a line of `worker` on `stream` goes to.
    fn path(&self, app: &str, worker: u32, stream: Stream) -> PathBuf {
        let base = self.base(app, stream);
        if self.settings.merge { base } else { per_worker(&base, worker) }
    }

    /// The file of `stream` for every worker (`logs.merge`), or the name each worker's is made from.
    fn base(&self, app: &str, stream: Stream) -> PathBuf {
        let own = match stream {
            Stream::Out => &self.settings.out,
            Stream::Err => &self.settings.err,
        };
        match own {
            Some(p) => self.dir.join(p),
            None => self.dir.join(format!("{app}.log")),
        }
    }

    fn append(&mut self, app: &str, worker: u32, stream: Stream, bytes: &[u8]) {
        let path = self.path(app, worker, stream);
        let settings = &self.settings;
        self.open.entry(path.clone()).or_insert_with(|| LogFile::new(path, settings)).append(bytes);
    }

    /// Empty every file of the app (the ones written since the agent started, and the merged
    /// ones) and remove their rotated copies.
    fn flush(&mut self, app: &str) -> Vec<PathBuf> {
        let mut paths: BTreeSet<PathBuf> = self.open.keys().cloned().collect();
        paths.extend([self.base(app, Stream::Out), self.base(app, Stream::Err)]);
        let mut flushed = Vec::new();
        for path in paths {
            match empty(&path) {
                Ok(true) => flushed.push(path.clone()),
                Ok(false) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot empty a log file"),
            }
            if let Some(f) = self.open.get_mut(&path) {
                f.size = 0;
            }
            for i in 1..=self.settings.keep.max(1) {
                for rotated in [rotated_name(&path, i, false), rotated_name(&path, i, true)] {
                    match std::fs::remove_file(&rotated) {
                        Ok(()) => flushed.push(rotated),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => tracing::warn!(path = %rotated.display(), error = %e, "cannot remove a rotated log"),
                    }
                }
            }
        }
        flushed
    }
}

/// Open a log file (or its rotated copy) to write, never through a symlink: the log's directory
/// may be writable by the app's user, who could point the name at a file only root may write.
/// Never waiting either: a FIFO put in its place would hold `open` (and every line of the app)
/// until someone reads it, and a full one each write; a file or a device is not concerned.
fn open_log(path: &Path, options: &mut OpenOptions) -> std::io::Result<File> {
    options.mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK).open(path)
}

/// Write all of `bytes` to `file` as `write_all` does, and say how many went in when it fails
/// part way (a disk that fills, a pipe that does).
fn write_counting(file: &mut File, bytes: &[u8]) -> (usize, std::io::Result<()>) {
    let mut written = 0;
    while written < bytes.len() {
        match file.write(&bytes[written..]) {
            Ok(0) => return (written, Err(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

/// Whether the open `file` is still the one at `path`: not moved away, removed or replaced.
fn still_at(path: &Path, file: &File) -> bool {
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(at), Ok(open)) => at.dev() == open.dev() && at.ino() == open.ino(),
        (Err(_), _) => false,
        // Nothing known of the open file: it is kept, as it was before this check.
        (Ok(_), Err(_)) => true,
    }
}

/// Whether `path` is a file of its own (not a device such as `/dev/null`, a pipe or a symlink):
/// only those are rotated, emptied and compressed.
fn is_regular(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// Empty the regular file `path` (`deployer flush`); `false` for anything else, left alone.
fn empty(path: &Path) -> std::io::Result<bool> {
    if !is_regular(path) {
        // Not opened at all: a FIFO nobody reads refuses a writer.
        return Ok(false);
    }
    let file = open_log(path, OpenOptions::new().write(true))?;
    if !file.metadata()?.file_type().is_file() {
        return Ok(false);
    }
    file.set_len(0)?;
    Ok(true)
}

/// `web.log` -> `web-0.log`: one worker's file when the app's are not merged.
fn per_worker(base: &Path, worker: u32) -> PathBuf {
    let stem = base.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match base.extension() {
        Some(ext) => format!("{stem}-{worker}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{worker}"),
    };
    base.with_file_name(name)
}

/// `web.log.3`, or `web.log.3.gz` when rotated files are compressed.
fn rotated_name(path: &Path, i: u32, gz: bool) -> PathBuf {
    PathBuf::from(format!("{}.{i}{}", path.display(), if gz { ".gz" } else { "" }))
}

/// Gzip `from` into `to` (the rotated copy); `from` is left for the caller to remove.
fn gzip(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut input = open_log(from, OpenOptions::new().read(true))?;
    let out = open_log(to, OpenOptions::new().create(true).write(true).truncate(true))?;
    // Fast: a rotation holds up this app's output while it runs (10 MiB in about 50 ms).
    let mut gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(out), flate2::Compression::fast());
    std::io::copy(&mut input, &mut gz)?;
    gz.finish()?.flush()
}

impl LogFile {
    pub(super) fn new(path: PathBuf, settings: &LogsConfig) -> LogFile {
        let size = std::fs::symlink_metadata(&path).map_or(0, |m| m.len());
        LogFile {
            path,
            file: None,
            checked: Instant::now(),
            dropped: 0,
            torn: false,
            size,
            max_size: settings.max_size.0,
            keep: settings.keep,
            compress: settings.compress,
        }
    }

    pub(super) fn append(&mut self, bytes: &[u8]) {
        if let Some(file) = &self.file
            && self.checked.elapsed() >= REOPEN_AFTER
        {
            self.checked = Instant::now();
            if !still_at(&self.path, file) {
                self.file = None;
                self.size = std::fs::symlink_metadata(&self.path).map_or(0, |m| m.len());
            }
        }
        if self.size + bytes.len() as u64 > self.max_size && self.size > 0 {
            // A device (`out: /dev/null`) is never renamed away: it is written without end.
            if is_regular(&self.path) {
                self.rotate();
            } else {
                self.size = 0;
            }
        }
        let mut failure = None;
        if self.file.is_none() {
            // Not opened (a symlink in its place): the line is dropped, the next one tries again.
            match open_log(&self.path, OpenOptions::new().create(true).append(true)) {
                Ok(f) => {
                    self.file = Some(f);
                    self.torn = false;
                }
                Err(e) => failure = Some(e),
            }
            self.checked = Instant::now();
        }
        if let Some(f) = &mut self.file {
            let ended;
            let out = if self.torn {
                ended = [b"\n", bytes].concat();
                &ended[..]
            } else {
                bytes
            };
            let (written, result) = write_counting(f, out);
            self.size += written as u64;
            if written > 0 {
                self.torn = out[written - 1] != b'\n';
            }
            match result {
                Ok(()) => {
                    if self.dropped > 0 {
                        tracing::warn!(path = %self.path.display(), dropped = self.dropped, "log file written again; lines were lost meanwhile");
                        self.dropped = 0;
                    }
                    return;
                }
                Err(e) => failure = Some(e),
            }
        }
        if self.dropped == 0 {
            let error = failure.map_or_else(|| "not open".to_string(), |e| e.to_string());
            tracing::warn!(path = %self.path.display(), %error, "cannot write a log file; its lines are lost until it can be");
        }
        self.dropped += 1;
    }

    /// `web.log` -> `web.log.1` -> ... -> `web.log.<keep>` (dropped beyond); with `compress`,
    /// `web.log.1.gz` ... instead.
    ///
    /// A step that fails is logged and the rest goes on: the worker's output is never held up by
    /// its log file, and the next rotation tries again. A copy that cannot be compressed is kept
    /// as `web.log.1`.
    fn rotate(&mut self) {
        self.file = None;
        let name = |i: u32| rotated_name(&self.path, i, self.compress);
        if self.keep == 0 {
            rotation_step("remove", &self.path, std::fs::remove_file(&self.path));
        } else {
            rotation_step("remove", &name(self.keep), std::fs::remove_file(name(self.keep)));
            for i in (1..self.keep).rev() {
                rotation_step("rename", &name(i), std::fs::rename(name(i), name(i + 1)));
            }
            if self.compress {
                match gzip(&self.path, &name(1)) {
                    Ok(()) => rotation_step("remove", &self.path, std::fs::remove_file(&self.path)),
                    Err(e) => {
                        tracing::warn!(path = %self.path.display(), error = %e, "cannot compress a rotated log; kept as it is");
                        rotation_step("remove", &name(1), std::fs::remove_file(name(1)));
                        let plain = rotated_name(&self.path, 1, false);
                        rotation_step("rename", &self.path, std::fs::rename(&self.path, plain));
                    }
                }
            } else {
                rotation_step("rename", &self.path, std::fs::rename(&self.path, name(1)));
            }
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
        let settings = LogsConfig { max_size: crate::config::units::Size(1 << 30), keep: 1, ..LogsConfig::default() };
        let sink = LogSink::new("web", dir.path().to_path_buf(), &settings, secrets);
        let (_, mut follower) = sink.follow(0, None);
        sink.write(0, Stream::Out, "the secret is hook-secret-value");
        assert_eq!(sink.tail(1, None)[0].line, "the secret is ***");
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
        let settings = LogsConfig { max_size: crate::config::units::Size(200), keep: 2, ..LogsConfig::default() };
        let sink = LogSink::new("web", dir.clone(), &settings, Secrets::default());
        for i in 0..20 {
            sink.write(0, Stream::Out, &format!("line number {i}"));
        }
        assert!(dir.join("web.log").exists());
        assert!(dir.join("web.log.1").exists());
        assert!(dir.join("web.log.2").exists());
        assert!(!dir.join("web.log.3").exists());
        assert!(std::fs::metadata(dir.join("web.log")).unwrap().len() <= 200);
        let tail = sink.tail(3, None);
        assert_eq!(
            tail.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["line number 17", "line number 18", "line number 19"]
        );
    }

    fn settings(yaml: &str) -> LogsConfig {
        serde_yaml_ng::from_str(yaml).expect("logs settings")
    }

    #[test]
    fn out_and_err_files_json_lines_and_a_date_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = settings("{ out: web.out.log, err: errors/web.err.log, format: json, date_format: '%Y/%m/%d' }");
        std::fs::create_dir_all(dir.path().join("errors")).unwrap();
        let sink = LogSink::new("web", dir.path().to_path_buf(), &s, Secrets::default());
        sink.write(0, Stream::Out, "to stdout");
        sink.write(1, Stream::Err, "to \"stderr\"");
        let out = std::fs::read_to_string(dir.path().join("web.out.log")).unwrap();
        let err = std::fs::read_to_string(dir.path().join("errors/web.err.log")).unwrap();
        assert!(!dir.path().join("web.log").exists());
        let out: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(out["message"], "to stdout");
        assert_eq!(
            (out["type"].as_str(), out["process_id"].as_u64(), out["app_name"].as_str()),
            (Some("out"), Some(0), Some("web"))
        );
        let today = chrono::Local::now().format("%Y/%m/%d").to_string();
        assert_eq!(out["timestamp"].as_str(), Some(today.as_str()));
        let err: serde_json::Value = serde_json::from_str(err.trim_end()).unwrap();
        assert_eq!((err["message"].as_str(), err["type"].as_str()), (Some("to \"stderr\""), Some("err")));
        // `--out` and `--err` read one stream from the ring.
        assert_eq!(sink.tail(10, Some(LogStream::Err)).len(), 1);
        assert_eq!(sink.tail(10, Some(LogStream::Err))[0].worker, 1);
    }

    #[test]
    fn unmerged_workers_write_files_of_their_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = LogSink::new("web", dir.path().to_path_buf(), &settings("{ merge: false }"), Secrets::default());
        sink.write(0, Stream::Out, "zero");
        sink.write(1, Stream::Err, "one");
        let zero = std::fs::read_to_string(dir.path().join("web-0.log")).unwrap();
        let one = std::fs::read_to_string(dir.path().join("web-1.log")).unwrap();
        assert!(zero.ends_with(" web-0 out| zero\n") && one.ends_with(" web-1 err| one\n"), "{zero}{one}");
    }

    #[test]
    fn rotated_files_are_gzipped_and_flush_empties_everything() {
        use std::io::Read;
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = LogSink::new(
            "web",
            dir.path().to_path_buf(),
            &settings("{ max_size: 300, keep: 2, compress: true }"),
            Secrets::default(),
        );
        for i in 0..30 {
            sink.write(0, Stream::Out, &format!("line number {i}"));
        }
        let log = dir.path().join("web.log");
        assert!(!dir.path().join("web.log.1").exists(), "the rotated copy is compressed");
        assert!(!dir.path().join("web.log.3.gz").exists(), "`keep: 2`");
        let mut text = String::new();
        let gz = std::fs::File::open(dir.path().join("web.log.1.gz")).expect("web.log.1.gz");
        flate2::read::GzDecoder::new(gz).read_to_string(&mut text).expect("gzip");
        assert!(text.contains("web-0 out| line number") && text.lines().count() > 1, "{text}");
        assert!(dir.path().join("web.log.2.gz").exists());

        let flushed = sink.flush();
        assert_eq!(flushed.len(), 3, "{flushed:?}");
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        assert!(!dir.path().join("web.log.1.gz").exists() && !dir.path().join("web.log.2.gz").exists());
        assert!(sink.tail(10, None).is_empty());
        sink.write(0, Stream::Out, "after the flush");
        let after = std::fs::read_to_string(&log).unwrap();
        assert!(after.ends_with("web-0 out| after the flush\n") && after.lines().count() == 1, "{after}");
    }

    /// logrotate without `copytruncate` moves the file away (and may leave nothing at its path);
    /// an operator may just `rm` it. Lines went on into the moved or removed file until the next
    /// rotation by size: an access log or worker log that seemed to stop for good.
    #[test]
    fn a_log_file_moved_away_or_removed_is_written_again_at_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("web.access.log");
        let mut log = LogFile::new(path.clone(), &LogsConfig::default());
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let a_check_is_due =
            |log: &mut LogFile| log.checked = Instant::now().checked_sub(REOPEN_AFTER).expect("uptime");
        log.append(b"one\n");
        std::fs::rename(&path, dir.path().join("moved")).expect("move the log away");
        log.append(b"two\n");
        a_check_is_due(&mut log);
        log.append(b"three\n");
        assert_eq!((read(&dir.path().join("moved")), read(&path)), ("one\ntwo\n".into(), "three\n".into()));
        std::fs::remove_file(&path).expect("rm the log");
        a_check_is_due(&mut log);
        log.append(b"four\n");
        assert_eq!(read(&path), "four\n");
        a_check_is_due(&mut log);
        log.append(b"five\n");
        assert_eq!(read(&path), "four\nfive\n", "a file still in place is kept");
    }

    #[test]
    fn a_log_path_that_cannot_be_written_counts_its_lost_lines_and_is_written_once_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.log");
        std::fs::create_dir(&path).unwrap();
        let mut file = LogFile::new(path.clone(), &LogsConfig::default());
        file.append(b"lost 1\n");
        file.append(b"lost 2\n");
        assert_eq!(file.dropped, 2);
        std::fs::remove_dir(&path).unwrap();
        file.append(b"kept\n");
        assert_eq!(file.dropped, 0, "counted afresh once a line is written");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept\n");
    }

    /// A write that fails part way (a disk that fills, a pipe to a log shipper that does) tore its
    /// line; the next line written was glued to the torn one, so a JSON-lines reader lost that
    /// one too and a text one saw two lines as one.
    #[test]
    fn a_line_torn_by_a_failed_write_does_not_swallow_the_next_one() {
        use std::io::Read as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("web.log");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let mut reader =
            OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path).expect("open the reader");
        let mut log = LogFile::new(path.clone(), &LogsConfig::default());
        // More than a pipe holds: written in part, then the pipe is full.
        let long = [vec![b'x'; 1 << 20], b"\n".to_vec()].concat();
        log.append(&long);
        assert_eq!(log.dropped, 1, "the long line could not be written whole");
        let mut got = Vec::new();
        let _ = reader.read_to_end(&mut got); // WouldBlock once the pipe is drained
        assert!(!got.is_empty() && got.len() < long.len(), "torn: {} bytes", got.len());
        log.append(b"next\n");
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest); // WouldBlock once the pipe is drained
        assert_eq!(String::from_utf8_lossy(&rest), "\nnext\n", "the next line starts on a line of its own");
        assert_eq!(log.dropped, 0);
    }

    /// The log's directory may be writable by the app's user, who can put a FIFO where the log
    /// was (`rm web.log; mkfifo web.log`): the agent, reopening the file it found gone, blocked
    /// in `open` until someone read the FIFO, holding every line of the app (and its workers,
    /// once their pipes filled) for ever.
    #[test]
    fn a_fifo_put_in_place_of_a_log_does_not_block_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("web.log");
        let mut log = LogFile::new(path.clone(), &LogsConfig::default());
        log.append(b"one\n");
        std::fs::remove_file(&path).expect("rm the log");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        log.checked = Instant::now().checked_sub(REOPEN_AFTER).expect("uptime");
        let (done, appended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            log.append(b"two\n");
            let _ = done.send(());
        });
        let returned = appended.recv_timeout(Duration::from_secs(5)).is_ok();
        if !returned {
            // Let the blocked writer go before failing.
            let _ = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path);
        }
        assert!(returned, "the writer is stuck opening a FIFO nobody reads");
        assert!(!empty(&path).expect("a FIFO is left alone"), "only regular files are emptied");
    }

    /// PM2 configs write `out_file: /dev/null` (and `deployer-agent import` keeps it): the agent
    /// (root) must write to the device, never rename or remove it when the size is reached.
    #[test]
    fn a_device_as_log_file_is_written_but_never_rotated_away() {
        let dir = tempfile::tempdir().expect("tempdir");
        let null = dir.path().join("null");
        let dev = nix::sys::stat::makedev(1, 3);
        if nix::sys::stat::mknod(
            &null,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            dev,
        )
        .is_err()
        {
            eprintln!("skipped: cannot make a device node here (not root)");
            return;
        }
        let s = settings(&format!("{{ out: {}, max_size: 100, keep: 2, compress: true }}", null.display()));
        let sink = LogSink::new("web", dir.path().to_path_buf(), &s, Secrets::default());
        for i in 0..20 {
            sink.write(0, Stream::Out, &format!("line number {i}"));
        }
        let kind =
            std::fs::symlink_metadata(&null).map(|m| std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()));
        assert!(matches!(kind, Ok(true)), "the device was replaced: {kind:?}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["null"], "rotated copies of a device: {names:?}");
        sink.flush();
        assert!(matches!(kind, Ok(true)));
    }

    /// A log file's name replaced by a symlink (by a worker running as `user:` that can write the
    /// log's directory): the agent neither writes, empties nor compresses through it.
    #[test]
    fn a_symlink_planted_as_log_file_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let precious = dir.path().join("precious");
        std::fs::write(&precious, "keep me\n").unwrap();
        std::os::unix::fs::symlink(&precious, dir.path().join("web.log")).unwrap();
        std::os::unix::fs::symlink(&precious, dir.path().join("web.log.1.gz")).unwrap();
        let sink = LogSink::new(
            "web",
            dir.path().to_path_buf(),
            &settings("{ max_size: 100, keep: 2, compress: true }"),
            Secrets::default(),
        );
        for i in 0..20 {
            sink.write(0, Stream::Out, &format!("line number {i}"));
        }
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
        std::os::unix::fs::symlink(&precious, dir.path().join("web.log.x")).unwrap();
        std::fs::rename(dir.path().join("web.log.x"), dir.path().join("web.log")).unwrap();
        sink.flush();
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
    }

    #[test]
    fn a_bad_date_format_is_refused_when_read() {
        let e = serde_yaml_ng::from_str::<LogsConfig>("{ date_format: '%Q' }").unwrap_err();
        assert!(e.to_string().contains("invalid `date_format: %Q`"), "{e}");
    }
}
