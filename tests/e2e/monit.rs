//! `deployer monit` in a real terminal: tmux runs it against a real agent with two apps; the
//! test reads the screen as a person would and types keys.

use std::time::Duration;

use deployer_tests::{AppSpec, Load, TestEnv, Tmux};

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

/// The WORKERS cell of an app's row: `2`, or `1/3` while fewer run than it is set to.
fn workers(screen: &str, app: &str) -> Option<String> {
    row(screen, &format!("{app} ")).and_then(|cells| cells.get(6).cloned())
}

#[test]
fn monit_shows_both_apps_follows_changes_and_gives_the_terminal_back() {
    let mut agent = TestEnv::new().app(AppSpec::new("api").instances(1)).start();
    let api_url = format!("http://127.0.0.1:{}", agent.api_port());
    let command = format!(
        "'{}' --agent {api_url} monit --interval 300ms; echo \"monit exited $?\"; stty -a; exec cat",
        deployer_tests::bin("deployer").display()
    );
    let tmux = Tmux::start(160, 40, &[("DEPLOYER_TOKEN", &agent.token("admin"))], &command);
    let load = Load::start(agent.port("web"), 2, true);

    // Both apps, each worker under its app, the selected app's log tail.
    let screen = tmux.wait_for(SHOWN, "both apps and their workers", |s| {
        workers(s, "web").as_deref() == Some("2")
            && workers(s, "api").as_deref() == Some("1")
            && row(s, "├ web-0").is_some()
            && row(s, "└ web-1").is_some()
            && row(s, "└ api-0").is_some()
    });
    assert!(screen.contains(&format!("● {api_url}  2 apps")), "{screen}");
    let web0 = row(&screen, "├ web-0").unwrap_or_default();
    // `├`, `web-0`, state, pid...
    assert_eq!(web0.get(2).map(String::as_str), Some("online"), "{screen}");
    assert_eq!(web0.get(3), Some(&agent.pids("web")[0].to_string()), "web-0's pid: {screen}");
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
        workers(s, "api").as_deref() == Some("3") && row(s, "└ api-2").is_some()
    });

    // Keys act on the selected app: `-` scales api down by one; down to web, `r` reloads it.
    tmux.keys(&["-"]);
    tmux.wait_for(SHOWN, "api scaled down by `-`", |s| {
        s.contains("✓ scaled api to 2 instances") && row(s, "└ api-1").is_some() && row(s, "├ api-1").is_none()
    });
    assert_eq!(agent.app("api").instances, 2);
    let before = agent.pids("web");
    tmux.keys(&["Down"]);
    tmux.wait_for(SHOWN, "the log tail following the selection", |s| s.contains("logs · web"));
    tmux.keys(&["r"]);
    tmux.wait_for(SHOWN, "web reloaded by `r`", |s| s.contains("✓ reloaded web: 2 workers replaced"));
    assert!(agent.pids("web").iter().all(|p| !before.contains(p)), "the reload replaced every worker");

    // `q` ends it: exit 0, the shell's screen back, the terminal in cooked mode with echo.
    tmux.keys(&["q"]);
    let screen = tmux.wait_for(SHOWN, "monit's exit", |s| s.contains("monit exited"));
    assert!(screen.contains("monit exited 0"), "{screen}");
    assert!(!screen.contains("deployer monit"), "the alternate screen is gone: {screen}");
    let modes: Vec<&str> = screen.split_whitespace().collect();
    assert!(modes.contains(&"icanon") && modes.contains(&"echo"), "raw mode is off: {screen}");
    assert_eq!(tmux.pane("#{alternate_on}"), "0");
    assert_eq!(tmux.pane("#{cursor_flag}"), "1", "the cursor shows again");
}
