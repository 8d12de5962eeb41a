//! Log files as PM2 users know them: stdout and stderr in files of their own, JSON lines,
//! rotated files gzipped, `deployer logs --out/--err` and `deployer flush`.

use deployer_tests::{TestEnv, poll, wait_until};
use std::path::Path;
use std::time::Duration;

/// A worker that writes `n` numbered lines to stdout and, a moment later, one to stderr, then
/// serves. (The agent reads the two pipes apart: written at once, the stderr line could be
/// logged before the stdout lines, and rotated away by them.)
fn chatty(n: u32) -> Vec<String> {
    let script = format!(
        "for (let i = 0; i < {n}; i++) console.log('out line ' + i + ' ' + 'x'.repeat(60)); \
         setTimeout(() => console.error('an error line'), 300); \
         require('http').createServer((q, s) => s.end('ok')).listen(Number(process.env.PORT))"
    );
    vec!["node".into(), "-e".into(), script]
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn stdout_and_stderr_go_to_their_own_files_as_json_lines_and_the_cli_reads_one_stream() {
    let argv = chatty(3);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let agent = TestEnv::new()
        .web(|w| w.start(&argv).instances(1).set("logs", "{ out: web.out.log, err: web.err.log, format: json }"))
        .start();
    let logs = agent.dir().join("state").join("logs");
    let (out, err) = (logs.join("web.out.log"), logs.join("web.err.log"));
    assert!(
        wait_until(Duration::from_secs(10), || read(&out).lines().count() >= 3 && !read(&err).is_empty()),
        "no lines in {}: {:?} / {:?}",
        logs.display(),
        read(&out),
        read(&err)
    );
    assert!(!logs.join("web.log").exists(), "both streams have files of their own");
    let line: serde_json::Value = serde_json::from_str(read(&err).lines().next().expect("a line")).expect("JSON");
    assert_eq!(line["message"], "an error line", "{line}");
    assert_eq!(
        (line["type"].as_str(), line["app_name"].as_str(), line["process_id"].as_u64()),
        (Some("err"), Some("web"), Some(0))
    );
    assert!(line["timestamp"].as_str().is_some_and(|t| t.len() >= 20), "{line}");
    assert!(read(&out).lines().all(|l| !l.contains("an error line")), "stderr in the out file");

    let only_err = agent.cli(&["logs", "web", "--err"]).success();
    assert!(only_err.stdout.contains("an error line") && !only_err.stdout.contains("out line"), "{only_err}");
    let only_out = agent.cli(&["logs", "web", "--out", "-n", "2"]).success();
    assert!(only_out.stdout.contains("out line 2") && !only_out.stdout.contains("an error line"), "{only_out}");
    assert_eq!(only_out.stdout.lines().count(), 2, "{only_out}");
}

#[test]
fn rotated_files_are_gzipped_and_flush_empties_the_files() {
    let argv = chatty(100);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let agent = TestEnv::new()
        .web(|w| w.start(&argv).instances(1).set("logs", "{ max_size: 2K, keep: 3, compress: true }"))
        .start();
    let logs = agent.dir().join("state").join("logs");
    let (log, first) = (logs.join("web.log"), logs.join("web.log.1.gz"));
    let unzipped = poll(Duration::from_secs(10), || {
        let text = std::process::Command::new("gzip").arg("-dc").arg(&first).output().ok()?;
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        text.contains("web-0 out| out line").then_some(text)
    })
    .unwrap_or_else(|| {
        panic!("no gzipped rotation in {}: {:?}", logs.display(), std::fs::read_dir(&logs).map(|d| d.count()))
    });
    assert!(unzipped.len() <= 2048 + 200, "a rotated file holds about `max_size`: {} bytes", unzipped.len());
    assert!(logs.join("web.log.3.gz").exists() && !logs.join("web.log.4.gz").exists(), "`keep: 3`");
    assert!(!logs.join("web.log.1").exists(), "the rotated copy is left uncompressed");
    assert!(wait_until(Duration::from_secs(5), || read(&log).contains("an error line")), "{}", read(&log));

    let flush = agent.cli(&["flush", "web"]).success();
    assert!(flush.stdout.contains("web: flushed 4 log file(s)"), "{flush}");
    assert_eq!(std::fs::metadata(&log).map(|m| m.len()).ok(), Some(0), "web.log is emptied");
    assert!(!first.exists() && !logs.join("web.log.3.gz").exists(), "rotated copies are removed");
    let tail = agent.cli(&["logs", "web"]).success();
    assert!(!tail.stdout.contains("out line"), "{tail}");
    // The worker's next line goes into the emptied file.
    agent.reload("web", false);
    assert!(wait_until(Duration::from_secs(10), || read(&log).contains(" out| out line ")), "{}", read(&log));
}
