//! `deployer monit` in a real terminal: tmux runs it against a real agent with two apps; the
//! test reads the screen as a person would and types keys.

use std::time::Duration;

use std::path::Path;

use deployer_tests::{AppSpec, Load, TestEnv, TestFleet, TestRepo, Tmux};

/// How long the screen may take to show a change (a poll every 300 ms, a worker starting).
const SHOWN: Duration = Duration::from_secs(30);

/// The cells of the row of the apps pane whose name column starts with `name`, split on blanks
/// (empty cells vanish: an app row reads `web running 1.2% 80.0mb 0 9.8 2 -`).
fn row(screen: &str, name: &str) -> Option<Vec<String>> {
    screen.lines().find_map(|line| {
        // The selected app's row starts with `▸`.
        let inner = line.trim_start_matches(['│', '▸', ' ']);
        inner.starts_with(name).then(|| inner.trim_end_matches('│').split_whitespace().map(String::from).collect())
    })
}

/// The WORKERS cell of an app's row: `2`, or `1/3` while fewer run than it is set to (then, after
/// a runtime scale, ` (cfg 1)`).
fn workers(screen: &str, app: &str) -> Option<String> {
    row(screen, &format!("{app} ")).and_then(|cells| cells.get(6).cloned())
}

/// `deployer <args>` run in `dir` in a 160×40 terminal; when it ends, the shell prints its exit
/// code and the terminal's modes (`stty -a`), then waits.
fn monit_in_tmux(dir: &Path, args: &str, env: &[(&str, &str)]) -> Tmux {
    let command = format!(
        "cd '{}' && '{}' {args}; echo \"monit exited $?\"; stty -a; exec cat",
        dir.display(),
        deployer_tests::bin("deployer").display()
    );
    Tmux::start(160, 40, env, &command)
}

/// Whether the row of worker `name` (`├ web-0`) shows `state` and `pid`.
fn worker_is(screen: &str, name: &str, state: &str, pid: u32) -> bool {
    // `├`, `web-0`, state, pid...
    row(screen, name).is_some_and(|cells| cells.get(2..4).is_some_and(|c| c[0] == state && c[1] == pid.to_string()))
}

#[test]
fn monit_shows_both_apps_follows_changes_and_gives_the_terminal_back() {
    let mut agent = TestEnv::new().app(AppSpec::new("api").instances(1)).start();
    let api_url = format!("http://127.0.0.1:{}", agent.api_port());
    let args = format!("--agent {api_url} monit --interval 300ms");
    let tmux = monit_in_tmux(agent.dir(), &args, &[("DEPLOYER_TOKEN", &agent.token("admin"))]);
    let load = Load::start(agent.port("web"), 2, true);

    // Both apps, each worker under its app with its pid.
    let pids = agent.pids("web");
    tmux.wait_for(SHOWN, "both apps and their workers", |s| {
        s.contains(&format!("● {api_url}  2 apps"))
            && workers(s, "web").as_deref() == Some("2")
            && workers(s, "api").as_deref() == Some("1")
            && worker_is(s, "├ web-0", "online", pids[0])
            && worker_is(s, "└ web-1", "online", pids[1])
            && row(s, "└ api-0").is_some_and(|cells| cells.len() > 4)
    });
    // Requests per second through web's front, from the agent's counter.
    tmux.wait_for(SHOWN, "web's requests per second", |s| {
        row(s, "web ").and_then(|cells| cells.get(5)?.parse::<f64>().ok()).is_some_and(|rps| rps > 0.0)
    });
    assert!(load.stop().ok > 0);
    // An agent that stops answering is marked, and comes back.
    agent.stop();
    tmux.wait_for(SHOWN, "the agent unreachable", |s| s.contains(&format!("✗ {api_url}  unreachable: ")));
    agent.start_again();
    tmux.wait_for(SHOWN, "the agent back", |s| s.contains(&format!("● {api_url}  2 apps")));

    // The apps come in the agent's order (by name): `api` is selected first, its log tail shown.
    tmux.wait_for(SHOWN, "api's log tail", |s| s.contains("logs · api") && s.contains("│ Server listening on port"));

    // A change made elsewhere shows at the next poll.
    agent.cli(&["scale", "api", "3"]).success();
    tmux.wait_for(SHOWN, "api scaled to 3 by the CLI", |s| {
        workers(s, "api").as_deref() == Some("3") && s.contains(" 3 (cfg 1) ") && row(s, "└ api-2").is_some()
    });

    // Keys act on the selected app: `-` scales api down by one; down to web, `r` reloads it.
    tmux.keys(&["-"]);
    tmux.wait_for(SHOWN, "api scaled down by `-`", |s| {
        s.contains("✓ scaled api to 2 instances") && row(s, "└ api-1").is_some() && row(s, "├ api-1").is_none()
    });
    assert_eq!(agent.app("api").instances, 2);
    tmux.keys(&["-"]);
    tmux.wait_for(SHOWN, "api scaled to 1", |s| {
        s.contains("✓ scaled api to 1 instance") && workers(s, "api").as_deref() == Some("1")
    });
    // The agent's refusal is the status line; the dashboard goes on.
    tmux.keys(&["-"]);
    tmux.wait_for(SHOWN, "the agent's refusal of 0 instances", |s| {
        s.contains("✗ scale of api to 0 failed: instances must be 1 to 1024, not 0 (hint: use `stop` to run none)")
    });
    let before = agent.pids("web");
    tmux.keys(&["Down"]);
    tmux.wait_for(SHOWN, "the log tail following the selection", |s| s.contains("logs · web"));
    tmux.keys(&["r"]);
    tmux.wait_for(SHOWN, "web reloaded by `r`", |s| s.contains("✓ reloaded web: 2 workers replaced"));
    assert!(agent.pids("web").iter().all(|p| !before.contains(p)), "the reload replaced every worker");

    // `q` ends it: exit 0, the shell's screen back, the terminal in cooked mode with echo.
    tmux.keys(&["q"]);
    // `stty -a` ends with the local modes (`... -flusho -extproc`).
    let screen = tmux.wait_for(SHOWN, "monit's exit and the terminal's modes", |s| {
        s.contains("monit exited") && s.contains("flusho")
    });
    assert!(screen.contains("monit exited 0"), "{screen}");
    assert!(!screen.contains("deployer monit"), "the alternate screen is gone: {screen}");
    let modes: Vec<&str> = screen.split_whitespace().collect();
    assert!(modes.contains(&"icanon") && modes.contains(&"echo"), "raw mode is off: {screen}");
    assert_eq!(tmux.pane("#{alternate_on}"), "0");
    assert_eq!(tmux.pane("#{cursor_flag}"), "1", "the cursor shows again");
}

#[test]
fn monit_of_an_environment_shows_every_host_and_the_live_sha() {
    let mut fleet = TestFleet::start(TestRepo::with_example_app(), 2, |_, app| app);
    fleet.write_file("prod", &fleet.hosts(), "{}");
    let sha = fleet.repo.head();
    let token = fleet.token().to_owned();
    let tmux = monit_in_tmux(
        fleet.repo.path(),
        "monit prod --interval 300ms",
        &[("DEPLOYER_FLEET_TOKEN", &token), ("DEPLOYER_AGENT", "http://127.0.0.1:9")],
    );
    // Hosts are shown as deployer.yaml's labels: `127.0.0.1:7070`.
    let labels: Vec<String> = fleet.agents.iter().map(|a| format!("127.0.0.1:{}", a.api_port())).collect();
    let label = |i: usize| labels[i].clone();

    let short = &sha[..7];
    // Each condition waits for a whole screen: tmux may show one half drawn.
    tmux.wait_for(SHOWN, "both hosts, each with web at the live sha", |s| {
        s.contains("prod (2 hosts)")
            && s.contains(&format!("● {}  1 app", label(0)))
            && s.contains(&format!("● {}  1 app", label(1)))
            && s.lines()
                .filter(|l| row(l, "web ").is_some_and(|cells| cells.last().map(String::as_str) == Some(short)))
                .count()
                == 2
            && s.contains(&format!("logs · web on {}", label(0)))
    });

    // One host down: it says so, the other goes on.
    fleet.agents[1].stop();
    tmux.wait_for(SHOWN, "the second host unreachable", |s| {
        s.contains(&format!("✗ {}  unreachable: ", label(1))) && s.contains(&format!("● {}  1 app", label(0)))
    });

    tmux.keys(&["C-c"]);
    let screen = tmux.wait_for(SHOWN, "monit's exit", |s| s.contains("monit exited"));
    assert!(screen.contains("monit exited 0"), "Ctrl-C quits: {screen}");
    assert_eq!(tmux.pane("#{alternate_on}"), "0");
}

#[test]
fn monit_needs_a_terminal_and_says_what_scripts_use() {
    let deployer = |args: &[&str]| {
        let mut cmd = std::process::Command::new(deployer_tests::bin("deployer"));
        cmd.args(["--agent", "http://127.0.0.1:9"]).args(args).env("NO_COLOR", "1");
        deployer_tests::run_to_end(cmd, SHOWN)
    };
    // run_to_end gives it no terminal: stdin is /dev/null, stdout a pipe.
    let out = deployer(&["monit"]).failure(1);
    assert!(out.stderr.contains("`monit` needs a terminal"), "{out}");
    assert!(out.stderr.contains("hint: run it in a terminal; for scripts: `deployer ls --json`"), "{out}");
    let out = deployer(&["monit", "--json"]).failure(1);
    assert!(out.stderr.contains("it has no --json"), "{out}");
    let help = deployer(&["monit", "--help"]).success();
    for taught in ["r reloads it", "deployer monit prod", "--interval <DURATION>", "unreachable"] {
        assert!(help.stdout.contains(taught), "--help lacks `{taught}`: {help}");
    }
}

#[test]
fn monit_ends_when_its_terminal_hangs_up() {
    // A name in the environment of this test's monit alone.
    let mark = format!("monit-hang-up-{}", std::process::id());
    let command = format!("'{}' --agent http://127.0.0.1:9 monit", deployer_tests::bin("deployer").display());
    let tmux = Tmux::start(100, 30, &[("DEPLOYER_TEST_MARK", &mark)], &command);
    tmux.wait_for(SHOWN, "the agent unreachable", |s| s.contains("unreachable"));
    let running = || {
        let entry = format!("DEPLOYER_TEST_MARK={mark}");
        std::fs::read_dir("/proc")
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|pid| {
                        std::fs::read(format!("/proc/{pid}/environ"))
                            .is_ok_and(|env| env.split(|b| *b == 0).any(|e| e == entry.as_bytes()))
                    })
                    .filter(|pid| deployer_tests::pid_alive(*pid))
                    .collect::<Vec<u32>>()
            })
            .unwrap_or_default()
    };
    assert!(!running().is_empty(), "monit is not found by its mark: the test proves nothing");
    tmux.hang_up();
    assert!(
        deployer_tests::wait_until(Duration::from_secs(5), || running().is_empty()),
        "monit outlived its terminal: {:?}",
        running()
    );
}
