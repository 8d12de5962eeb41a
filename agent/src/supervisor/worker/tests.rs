//! `retire` against a live keeper: real `sh` processes, each in its own process group.

use super::*;
use crate::config::units::Dur;

struct Setup {
    dir: tempfile::TempDir,
    ctx: Arc<WorkerCtx>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Arc::new(WorkerCtx {
        app: "t".into(),
        mode: ProxyMode::None,
        rotation: None,
        listener: None,
        app_port: None,
        logs: Arc::new(LogSink::new(
            "t",
            dir.path().to_path_buf(),
            &crate::config::LogsConfig::default(),
            Secrets::default(),
        )),
        pids: Arc::new(PidRecord::new(dir.path().join("workers.pids"))),
        run_dir: dir.path().to_path_buf(),
        secrets: Secrets::default(),
        cgroups: crate::cgroup::Cgroups::none(),
        events: Default::default(),
        tasks: Default::default(),
    });
    Setup { dir, ctx }
}

impl Setup {
    /// A worker running `sh -c script` in the temp dir, ready after 50ms alive.
    fn worker(&self, script: &str, backoff_max: Duration) -> Arc<Worker> {
        let spec = WorkerSpec {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            cwd: self.dir.path().to_path_buf(),
            env: std::env::vars().filter(|(k, _)| k == "PATH").collect(),
            env_hash: String::new(),
            release: String::new(),
            ready: ReadyConfig { check: ReadyCheck::Alive(Duration::from_millis(50)), timeout: Duration::from_secs(5) },
            restart: RestartConfig {
                autorestart: true,
                delay: None,
                stop_exit_codes: Vec::new(),
                max_restarts: u32::MAX,
                min_uptime: Dur(Duration::from_secs(1)),
                backoff_max: Dur(backoff_max),
            },
            run_as: None,
            ipc: false,
        };
        Worker::start(0, Arc::new(spec), self.ctx.clone())
    }

    /// The pids the script wrote to `file`, one a line.
    fn pids(&self, file: &str) -> Vec<i32> {
        let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }
}

fn how(signal: Signal, kill_timeout: Duration) -> Retire {
    Retire { signal, drain_timeout: Duration::from_secs(1), kill_timeout }
}

async fn wait_state(w: &Worker, want: &str) {
    let mut rx = w.status.subscribe();
    let reached = rx.wait_for(|s| s.state.as_str() == want);
    tokio::time::timeout(Duration::from_secs(10), reached).await.expect("state reached in time").expect("worker alive");
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
}

#[tokio::test]
async fn retire_sends_the_signal_to_the_running_process() {
    let s = setup();
    let w = s.worker(
        "echo $$ >> pids; trap 'echo bye >> out; exit 0' USR2; while :; do sleep 0.05; done",
        Duration::from_secs(1),
    );
    wait_state(&w, "online").await;
    let started = Instant::now();
    w.retire(how(Signal::SIGUSR2, Duration::from_secs(10)), None).await;
    assert!(started.elapsed() < Duration::from_secs(5), "waited for kill_timeout: {:?}", started.elapsed());
    assert_eq!(w.status().state, WorkerState::Stopped);
    assert_eq!(w.status().pid, None);
    assert_eq!(std::fs::read_to_string(s.dir.path().join("out")).unwrap(), "bye\n");
    assert!(s.pids("pids").iter().all(|&p| !alive(p)));
}

#[tokio::test]
async fn retire_kills_a_process_that_ignores_the_signal_after_kill_timeout() {
    let s = setup();
    let w = s.worker("echo $$ >> pids; trap '' TERM; while :; do sleep 0.05; done", Duration::from_secs(1));
    wait_state(&w, "online").await;
    let started = Instant::now();
    w.retire(how(Signal::SIGTERM, Duration::from_millis(300)), None).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(w.status().state, WorkerState::Stopped);
    assert!(s.pids("pids").iter().all(|&p| !alive(p)));
}

#[tokio::test]
async fn retire_while_restarting_stops_without_a_new_process() {
    let s = setup();
    // Exits at once; the restart waits up to 10s, so the worker sits in `restarting`.
    let w = s.worker("echo $$ >> pids; exit 1", Duration::from_secs(10));
    wait_state(&w, "restarting").await;
    let runs = s.pids("pids").len();
    let started = Instant::now();
    w.retire(how(Signal::SIGTERM, Duration::from_secs(10)), None).await;
    assert!(started.elapsed() < Duration::from_secs(5), "waited for kill_timeout: {:?}", started.elapsed());
    assert_eq!(w.status().state, WorkerState::Stopped);
    assert_eq!(w.status().pid, None, "a stale pid outlived its process");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.pids("pids").len(), runs, "a process was spawned after retire");
}

#[tokio::test]
async fn retire_racing_a_crash_loop_leaves_no_process_behind() {
    let s = setup();
    // No backoff: the keeper respawns at once, so retire lands anywhere in its loop.
    for round in 0..20u64 {
        let w = s.worker("echo $$ >> pids; sleep 0.01", Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(5 + round * 3)).await;
        let started = Instant::now();
        w.retire(how(Signal::SIGTERM, Duration::from_secs(10)), None).await;
        assert!(started.elapsed() < Duration::from_secs(5), "round {round}: waited for kill_timeout");
        assert_eq!(w.status().state, WorkerState::Stopped, "round {round}");
    }
    let pids = s.pids("pids");
    assert!(pids.len() >= 20);
    // A killed process may be a zombie for a moment, until its parent (init, for a child the
    // shell left) reaps it: give the reaping a deadline, not the kill.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left: Vec<i32> = pids.clone();
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|&p| alive(p) && !zombie(p));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(left.is_empty(), "still running after retire: {left:?}");
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}

/// Every change of a worker is announced, in order, and its keeper and output readers belong to
/// the app's tasks: once retired, waiting for them ends.
#[tokio::test]
async fn a_worker_announces_its_life_and_its_tasks_end_with_it() {
    let s = setup();
    let crashing = s.worker("sleep 0.1; exit 3", Duration::from_millis(10));
    // Given up on after two quick exits.
    let mut spec = WorkerSpec::clone(&crashing.spec);
    crashing.retire(how(Signal::SIGKILL, Duration::from_secs(1)), None).await;
    spec.restart.max_restarts = 2;
    let mut events = s.ctx.events.subscribe();
    let w = Worker::start(1, Arc::new(spec), s.ctx.clone());
    let mut kinds = Vec::new();
    let errored = loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("an event").expect("open");
        assert_eq!(e.app(), "t");
        match e {
            SupervisorEvent::WorkerOnline { .. } => kinds.push("online"),
            SupervisorEvent::WorkerExited { retired, .. } => {
                assert!(!retired, "it exited by itself");
                kinds.push("exited");
            }
            SupervisorEvent::WorkerErrored { worker, restarts, .. } => break (worker, restarts),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!((errored.0.id, errored.0.serial), (1, w.serial));
    assert_eq!(errored.1, 2, "{errored:?}");
    assert_eq!(kinds, ["online", "exited", "online", "exited"]);
    assert!(matches!(w.status().state, WorkerState::Errored(_)), "the state is set before the event is sent");

    let alive = s.worker("while :; do sleep 0.05; done", Duration::from_secs(1));
    wait_state(&alive, "online").await;
    alive.retire(how(Signal::SIGTERM, Duration::from_secs(5)), None).await;
    s.ctx.tasks.close();
    tokio::time::timeout(Duration::from_secs(5), s.ctx.tasks.wait()).await.expect("the keepers and readers ended");
}

/// The sockets among a process's open fds, by number.
fn sockets(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
            out.push(e.file_name().to_string_lossy().parse().unwrap());
        }
    }
    out
}

/// The IPC channel's end reaches its own worker as `NODE_CHANNEL_FD`, and no other child: a
/// worker started meanwhile holds no socket at all.
#[tokio::test]
async fn the_ipc_channel_reaches_its_worker_only() {
    let s = setup();
    let script = "echo $$ >> pids; echo \"$NODE_CHANNEL_FD $NODE_CHANNEL_SERIALIZATION_MODE\" > chan.$INSTANCE_ID; \
                  while :; do sleep 0.05; done";
    let mut spec = WorkerSpec::clone(&s.worker("exit 0", Duration::from_secs(1)).spec);
    spec.argv[2] = script.into();
    spec.ipc = true;
    let with_ipc = Worker::start(1, Arc::new(spec.clone()), s.ctx.clone());
    spec.ipc = false;
    let without = Worker::start(2, Arc::new(spec), s.ctx.clone());
    wait_state(&with_ipc, "online").await;
    wait_state(&without, "online").await;
    let chan = std::fs::read_to_string(s.dir.path().join("chan.1")).unwrap();
    let (fd, mode) = chan.trim().split_once(' ').unwrap();
    assert_eq!(mode, "json");
    let fd: i32 = fd.parse().unwrap();
    assert_eq!(sockets(with_ipc.status().pid.unwrap() as i32), [fd], "its channel, and nothing else");
    assert_eq!(std::fs::read_to_string(s.dir.path().join("chan.2")).unwrap(), " \n");
    assert!(sockets(without.status().pid.unwrap() as i32).is_empty(), "another worker got a socket");
    let stop = how(Signal::SIGTERM, Duration::from_millis(300));
    // `sh` does not read the channel: `'shutdown'`, kill_timeout, then the signal.
    let started = Instant::now();
    with_ipc.retire(stop, None).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "no wait after 'shutdown'");
    without.retire(stop, None).await;
    assert!(s.pids("pids").iter().all(|&p| !alive(p)));
}

/// A worker of `script` under `policy` (its other settings as [`Setup::worker`]'s).
fn with_policy(s: &Setup, script: &str, policy: impl FnOnce(&mut RestartConfig)) -> Arc<Worker> {
    let mut spec = WorkerSpec::clone(&s.worker("exit 0", Duration::from_secs(1)).spec);
    spec.argv[2] = script.into();
    policy(&mut spec.restart);
    Worker::start(3, Arc::new(spec), s.ctx.clone())
}

#[tokio::test]
async fn autorestart_false_leaves_an_exited_worker_stopped_with_its_code() {
    let s = setup();
    let w = with_policy(&s, "echo $$ >> pids; sleep 0.2; exit 3", |p| p.autorestart = false);
    wait_state(&w, "stopped").await;
    assert_eq!(w.status().exit_code, Some(3));
    assert_eq!(w.to_wire().exit_code, Some(3));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.pids("pids").len(), 1, "restarted");
    assert_eq!(w.status().restarts, 0);
}

#[tokio::test]
async fn a_stop_exit_code_ends_the_worker_and_another_code_restarts_it() {
    let s = setup();
    // The first run exits 1 (restarted), the second 0 (done).
    let script = "echo $$ >> pids; sleep 0.2; [ -e ran ] && exit 0; touch ran; exit 1";
    let w = with_policy(&s, script, |p| {
        p.stop_exit_codes = vec![0];
        p.backoff_max = Dur(Duration::from_millis(10));
    });
    wait_state(&w, "stopped").await;
    assert_eq!(w.status().exit_code, Some(0));
    assert_eq!(s.pids("pids").len(), 2);
    assert_eq!(w.status().restarts, 1);
}

#[tokio::test]
async fn restart_delay_is_the_wait_before_each_restart() {
    let s = setup();
    let script = "date +%s%N >> times; sleep 0.1; exit 1";
    let w = with_policy(&s, script, |p| {
        p.delay = Some(Dur(Duration::from_millis(700)));
        p.backoff_max = Dur(Duration::from_millis(10));
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let times = loop {
        let text = std::fs::read_to_string(s.dir.path().join("times")).unwrap_or_default();
        let t: Vec<u128> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if t.len() >= 3 || Instant::now() > deadline {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    w.retire(how(Signal::SIGKILL, Duration::from_secs(1)), None).await;
    assert!(times.len() >= 3, "{times:?}");
    for pair in times.windows(2) {
        let gap_ms = (pair[1] - pair[0]) / 1_000_000;
        assert!(gap_ms >= 750, "restarted {gap_ms} ms after the last start (0.1 s run + 0.7 s delay)");
    }
}
