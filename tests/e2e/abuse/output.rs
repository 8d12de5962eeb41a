//! Abuse: output. A worker or an install step (run as `nobody`) that writes a line of 400 MB
//! with no newline, or thousands of long lines, costs the agent a bounded amount of memory: a
//! line is cut at 16 KiB and marked as cut, the rest of it is read and dropped, and what the
//! agent keeps of a log is bounded in bytes.

use deployer_tests::abuse::{is_root, open_to_nobody};
use deployer_tests::{Agent, Bystander, TestEnv, TestRepo, poll};
use std::time::Duration;

/// The agent's memory must stay under this whatever an app writes.
const RSS_LIMIT_KB: u64 = 64 * 1024;
/// How long 400 MB may take to go through the agent (a debug build).
const THROUGH: Duration = Duration::from_secs(180);
/// The marker at the end of a cut line.
const CUT: &str = "… [line cut: 16384 bytes kept]";

/// Writes 4000 lines of 16 KiB (64 MB, more than the agent keeps of a log), then a line of
/// 400 MB (1 MiB chunks, no newline), then a short line. As a worker it first listens on `PORT`,
/// so it is ready and in rotation while it writes.
const LONG_LINE_JS: &str = r#"
const line = 'z'.repeat(16 * 1024) + '\n';
const chunk = 'x'.repeat(1 << 20);
let lines = 4000;
let left = 400;
function more() {
  while (lines > 0) {
    lines--;
    if (!process.stdout.write(line)) return process.stdout.once('drain', more);
  }
  while (left > 0) {
    left--;
    if (!process.stdout.write(chunk)) return process.stdout.once('drain', more);
  }
  process.stdout.write('\nafter the long line\n');
}
if (process.argv[2] === 'worker') {
  require('http').createServer((q, s) => s.end('ok\n')).listen(Number(process.env.PORT), more);
} else {
  more();
}
"#;

fn skip_unless_root() -> bool {
    if !is_root() {
        eprintln!("skipped: the abuse suite runs workers as `nobody`, which needs root");
    }
    !is_root()
}

/// `VmHWM` (peak) and `VmRSS` of a process, in kB.
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn assert_small(agent: &Agent, when: &str) {
    let (hwm, rss) = memory_kb(agent.pid());
    eprintln!("agent memory {when}: VmHWM {hwm} kB, VmRSS {rss} kB");
    assert!(hwm < RSS_LIMIT_KB && rss < RSS_LIMIT_KB, "{when}: VmHWM {hwm} kB, VmRSS {rss} kB");
}

/// A repo whose app starts with `start.sh` and installs with `install.sh` (both harmless at
/// first), and holds the long-line writer.
fn repo() -> TestRepo {
    let repo = TestRepo::with_example_app();
    repo.commit_file("long-line.js", LONG_LINE_JS, "a long-line writer");
    repo.commit_file("start.sh", "exec node app.js\n", "start script");
    repo.commit_file("install.sh", "true\n", "install script");
    repo
}

fn start(repo: &TestRepo) -> (Agent, Bystander) {
    let setup = TestEnv::new()
        .web(|a| {
            a.repo(repo)
                .instances(1)
                .set("user", "nobody")
                .start(&["/bin/sh", "start.sh"])
                .set("install", "\"/bin/sh install.sh\"")
        })
        .app(Bystander::app())
        .setup();
    open_to_nobody(&setup);
    let agent = setup.start();
    let bystander = Bystander::start(&agent);
    (agent, bystander)
}

#[test]
fn a_worker_writing_a_400_mb_line_costs_the_agent_no_memory_and_the_line_shows_cut() {
    if skip_unless_root() {
        return;
    }
    let repo = repo();
    let (agent, bystander) = start(&repo);
    assert_small(&agent, "before");

    repo.commit_file("start.sh", "exec node long-line.js worker\n", "a worker that writes a long line");
    assert_eq!(agent.wait_deploy(agent.deploy("web", "main")).state, "live");
    let lines = poll(THROUGH, || {
        let r = agent.api_get("/v1/apps/web/logs?lines=50");
        let v: serde_json::Value = r.json();
        let lines: Vec<String> =
            v["lines"].as_array()?.iter().filter_map(|l| Some(l["line"].as_str()?.to_string())).collect();
        lines.iter().any(|l| l == "after the long line").then_some(lines)
    })
    .expect("the worker's line after the long one");
    assert_small(&agent, "after a worker wrote a 400 MB line");

    let cut: Vec<&String> = lines.iter().filter(|l| l.ends_with(CUT)).collect();
    assert_eq!(cut.len(), 1, "{:?}", lines.iter().map(|l| &l[..l.len().min(80)]).collect::<Vec<_>>());
    assert_eq!(cut[0].len(), 16384 + CUT.len());
    assert!(cut[0].starts_with("xxxx"));
    let shown = agent.cli(&["logs", "web", "--lines", "50"]).success().stdout;
    assert!(shown.contains(CUT) && shown.contains("after the long line"), "{}", &shown[..shown.len().min(2000)]);
    // Rotated at `logs.max_size` (10M): the long line is in the current file, cut.
    let file = std::fs::read_to_string(agent.dir().join("state/logs/web.log")).expect("web.log");
    assert!(file.len() <= 10 << 20, "the log file got {} bytes", file.len());
    assert!(file.contains(CUT));
    bystander.finish();
}

#[test]
fn an_install_step_writing_a_400_mb_line_costs_the_agent_no_memory_and_the_line_shows_cut() {
    if skip_unless_root() {
        return;
    }
    let repo = repo();
    let (agent, bystander) = start(&repo);
    assert_small(&agent, "before");

    repo.commit_file("install.sh", "node long-line.js install\n", "an install step that writes a long line");
    let id = agent.deploy("web", "main");
    let d = poll(THROUGH, || Some(agent.deploy_status(id)).filter(|d| d.is_final())).expect("the deploy ends");
    assert_eq!(d.state, "live", "{:?}", d.message);
    assert_small(&agent, "after an install step wrote a 400 MB line");

    let cut: Vec<&String> = d.output_tail.iter().filter(|l| l.ends_with(CUT)).collect();
    assert_eq!(cut.len(), 1, "{:?}", d.output_tail.iter().map(|l| &l[..l.len().min(80)]).collect::<Vec<_>>());
    assert_eq!(cut[0].len(), 16384 + CUT.len());
    assert!(d.output_tail.iter().any(|l| l == "after the long line"), "{:?}", d.output_tail);
    let log = agent.app_dir("web").join("logs").join(format!("deploy-{id}.log"));
    // One deploy's log stops at 32 MiB, saying so.
    let size = std::fs::metadata(&log).expect("the deploy log").len();
    assert!(size <= (32 << 20) + 200, "the deploy log got {size} bytes");
    bystander.finish();
}
