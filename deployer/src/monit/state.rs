//! What the dashboard shows, as one value: every host's last answer, the requests per second
//! derived from two readings of the front's counter, the selection, the log tail and the last
//! action's result. Changed only by the methods here, drawn by [`super::render`]; no I/O, no
//! clock (the caller passes the time of each reading), so every case is a unit test.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use deployer_wire::{AppStatus, LogLine, WorkerState};

/// How many log lines of the selected app are kept (more than any terminal shows).
pub const LOG_LINES: usize = 200;

/// Which app: the host's index in [`Dashboard::hosts`] and the app's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppKey {
    pub host: usize,
    pub app: String,
}

/// Whether a host answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reach {
    /// No answer yet (the first request is under way).
    Waiting,
    Up,
    /// The last request got no answer: why, in a few words. The apps of its last answer stay
    /// listed.
    Unreachable(String),
    /// The last request was answered with an error (a token refused): its message.
    Refused(String),
}

/// Why a host gave no list of apps.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Whether it answered at all (with an error of its API), or could not be reached.
    pub answered: bool,
    pub why: String,
}

impl Failure {
    pub fn unreachable(why: impl Into<String>) -> Failure {
        Failure { answered: false, why: why.into() }
    }
}

/// One app as last seen, with its request rate.
#[derive(Debug, Clone)]
pub struct AppView {
    pub status: AppStatus,
    /// Requests per second through the front between the last two readings; `None` for the
    /// first reading, an app without a front, an agent without the counter, or a counter that
    /// went back (the agent restarted).
    pub rps: Option<f64>,
    /// The front's counter and when it was read.
    reading: Option<(u64, Instant)>,
}

impl AppView {
    /// Workers online (in rotation), to compare with the instances the app is set to run.
    pub fn running(&self) -> u32 {
        self.status.workers.iter().filter(|w| w.state == WorkerState::Online).count() as u32
    }

    /// The sha of the release the workers run: from the app's `release` (`12-1a2b3c4`), else,
    /// from an agent that does not send it, from the workers' release when it is such a name.
    pub fn sha(&self) -> Option<&str> {
        let release =
            self.status.release.as_deref().or_else(|| {
                self.status.workers.iter().map(|w| w.release.as_str()).find(|r| sha_of_release(r).is_some())
            })?;
        sha_of_release(release).or(Some(release))
    }

    pub fn cpu_percent(&self) -> f32 {
        self.status.workers.iter().map(|w| w.cpu_percent).sum()
    }

    pub fn rss_bytes(&self) -> u64 {
        self.status.workers.iter().map(|w| w.rss_bytes).sum()
    }

    pub fn restarts(&self) -> u32 {
        self.status.workers.iter().map(|w| w.restarts).sum()
    }
}

/// `1a2b3c4` of a release directory name `12-1a2b3c4`; `None` for anything else (a `cwd`).
fn sha_of_release(name: &str) -> Option<&str> {
    let (seq, sha) = name.split_once('-')?;
    let digits = |s: &str, hex: bool| {
        !s.is_empty() && s.chars().all(|c| if hex { c.is_ascii_hexdigit() } else { c.is_ascii_digit() })
    };
    (digits(seq, false) && digits(sha, true)).then_some(sha)
}

/// One agent.
#[derive(Debug, Clone)]
pub struct HostView {
    /// The agent's URL (one agent) or its label in deployer.yaml.
    pub label: String,
    pub reach: Reach,
    pub apps: Vec<AppView>,
    /// When it last answered with its apps, and when it was last asked (answered or not): how
    /// old what is shown of an unreachable host is.
    pub answered_at: Option<Instant>,
    pub asked_at: Option<Instant>,
}

impl HostView {
    /// How long before the last request the host last answered; `None` if it never did.
    pub fn silent_for(&self) -> Option<Duration> {
        Some(self.asked_at?.saturating_duration_since(self.answered_at?))
    }
}

/// The selected app's last lines, as its log stream sends them.
#[derive(Debug, Clone, Default)]
pub struct LogTail {
    /// The app the lines are of.
    pub of: Option<AppKey>,
    pub lines: VecDeque<LogLine>,
    /// Why the stream is down (it is opened again).
    pub error: Option<String>,
}

/// The status line: the last action and how it went.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Nothing asked yet.
    Idle,
    /// Asked, no answer yet: `reloading web…`.
    Pending(String),
    Done(String),
    Failed(String),
}

/// Everything the screen shows.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// `http://127.0.0.1:7070`, or `prod (3 hosts)`.
    pub title: String,
    pub interval: Duration,
    pub hosts: Vec<HostView>,
    /// The app the keys act on and the log tail shows. Kept by name, so it survives apps that
    /// come, go and come back (an agent that restarts).
    pub selected: Option<AppKey>,
    /// Whether a person moved the selection: until then it is the first app shown, whichever
    /// host answers first.
    chosen: bool,
    pub logs: LogTail,
    pub status: Status,
    /// Only this app, when `--app` names one.
    pub only: Option<String>,
}

impl Dashboard {
    pub fn new(title: String, interval: Duration, hosts: Vec<String>, only: Option<String>) -> Dashboard {
        Dashboard {
            title,
            interval,
            hosts: hosts
                .into_iter()
                .map(|label| HostView {
                    label,
                    reach: Reach::Waiting,
                    apps: Vec::new(),
                    answered_at: None,
                    asked_at: None,
                })
                .collect(),
            selected: None,
            chosen: false,
            logs: LogTail::default(),
            status: Status::Idle,
            only,
        }
    }

    /// A host's answer to `GET /v1/apps` (or why there was none), read at `at`.
    pub fn apply(&mut self, host: usize, answer: Result<Vec<AppStatus>, Failure>, at: Instant) {
        let Some(view) = self.hosts.get_mut(host) else { return };
        view.asked_at = Some(at);
        match answer {
            Err(failure) => {
                view.reach =
                    if failure.answered { Reach::Refused(failure.why) } else { Reach::Unreachable(failure.why) };
                // A rate needs two readings in a row: the next answer starts again.
                for app in &mut view.apps {
                    app.rps = None;
                    app.reading = None;
                }
            }
            Ok(apps) => {
                view.reach = Reach::Up;
                view.answered_at = Some(at);
                let apps = apps.into_iter().filter(|a| self.only.as_ref().is_none_or(|only| *only == a.name));
                view.apps = apps
                    .map(|status| {
                        let before = view.apps.iter().find(|a| a.status.name == status.name).and_then(|a| a.reading);
                        let reading = status.requests_total.map(|n| (n, at));
                        AppView { rps: rate(before, reading), reading, status }
                    })
                    .collect();
            }
        }
        let gone = self.selected.as_ref().is_none_or(|s| self.position(s).is_none());
        if (!self.chosen || gone) && self.hosts[host].reach == Reach::Up {
            // Nothing chosen yet, or the chosen app is gone: the first app there is.
            self.selected = self.keys().into_iter().next().or(self.selected.take());
        }
    }

    /// Every app, in the order shown.
    pub fn keys(&self) -> Vec<AppKey> {
        self.hosts
            .iter()
            .enumerate()
            .flat_map(|(host, h)| h.apps.iter().map(move |a| AppKey { host, app: a.status.name.clone() }))
            .collect()
    }

    fn position(&self, key: &AppKey) -> Option<usize> {
        self.keys().iter().position(|k| k == key)
    }

    /// Moves the selection `by` apps down (negative: up), stopping at the ends.
    pub fn select(&mut self, by: isize) {
        let keys = self.keys();
        if keys.is_empty() {
            return;
        }
        let at = self.selected.as_ref().and_then(|s| keys.iter().position(|k| k == s));
        let next = match at {
            Some(i) => i.saturating_add_signed(by).min(keys.len() - 1),
            None => 0,
        };
        self.selected = Some(keys[next].clone());
        self.chosen = true;
    }

    /// The selected app as last seen.
    pub fn selected_app(&self) -> Option<(&AppKey, &AppView)> {
        let key = self.selected.as_ref()?;
        let app = self.hosts.get(key.host)?.apps.iter().find(|a| a.status.name == key.app)?;
        Some((key, app))
    }

    /// The log stream of `of` (re)opened: the lines it replays replace the ones kept.
    pub fn logs_opened(&mut self, of: &AppKey) {
        self.logs = LogTail { of: Some(of.clone()), lines: VecDeque::new(), error: None };
    }

    /// A line of `of`'s stream; lines of an app no longer selected are dropped.
    pub fn log_line(&mut self, of: &AppKey, line: LogLine) {
        if self.logs.of.as_ref() != Some(of) {
            return;
        }
        if self.logs.lines.len() == LOG_LINES {
            self.logs.lines.pop_front();
        }
        self.logs.lines.push_back(line);
        self.logs.error = None;
    }

    /// `of`'s stream broke or could not be opened.
    pub fn logs_failed(&mut self, of: &AppKey, why: String) {
        if self.logs.of.as_ref() == Some(of) {
            self.logs.error = Some(why);
        }
    }
}

/// Requests per second between two readings of a counter.
fn rate(before: Option<(u64, Instant)>, now: Option<(u64, Instant)>) -> Option<f64> {
    let ((n0, t0), (n1, t1)) = (before?, now?);
    let secs = t1.checked_duration_since(t0)?.as_secs_f64();
    (secs > 0.0 && n1 >= n0).then(|| (n1 - n0) as f64 / secs)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use deployer_wire::{AppMode, AppState, LogStream, WorkerStatus};

    pub fn worker(id: u32, state: WorkerState, pid: u32) -> WorkerStatus {
        let running = state == WorkerState::Online;
        WorkerStatus {
            id,
            pid: running.then_some(pid),
            port: Some(9000 + id as u16),
            state,
            restarts: if running { 0 } else { 3 },
            uptime_ms: if running { 125_000 } else { 0 },
            cpu_percent: if running { 1.5 } else { 0.0 },
            rss_bytes: if running { 40 * 1024 * 1024 } else { 0 },
            inflight: 0,
            env_hash: "3fa1c2".into(),
            release: "7-1a2b3c4".into(),
            exit_code: None,
        }
    }

    pub fn app(name: &str, instances: u32, workers: Vec<WorkerStatus>, requests: Option<u64>) -> AppStatus {
        AppStatus {
            name: name.into(),
            mode: if requests.is_some() { AppMode::Http } else { AppMode::None },
            port: requests.map(|_| 8080),
            instances,
            configured: None,
            state: AppState::Running,
            workers,
            release: requests.map(|_| "7-1a2b3c4".into()),
            requests_total: requests,
        }
    }

    pub fn line(worker: u32, text: &str) -> LogLine {
        LogLine { ts_ms: 0, worker, stream: LogStream::Out, line: text.into() }
    }

    fn key(host: usize, app: &str) -> AppKey {
        AppKey { host, app: app.into() }
    }

    #[test]
    fn requests_per_second_come_from_two_readings_of_the_counter() {
        let mut d = Dashboard::new("t".into(), Duration::from_secs(1), vec!["h".into()], None);
        let t0 = Instant::now();
        d.apply(0, Ok(vec![app("web", 1, vec![], Some(100))]), t0);
        assert_eq!(d.hosts[0].apps[0].rps, None, "one reading is no rate");
        d.apply(0, Ok(vec![app("web", 1, vec![], Some(150))]), t0 + Duration::from_secs(2));
        assert_eq!(d.hosts[0].apps[0].rps, Some(25.0));
        d.apply(0, Ok(vec![app("web", 1, vec![], Some(3))]), t0 + Duration::from_secs(3));
        assert_eq!(d.hosts[0].apps[0].rps, None, "a counter that went back (agent restarted) is no rate");
        d.apply(0, Err(Failure::unreachable("connection refused")), t0 + Duration::from_secs(4));
        assert_eq!(d.hosts[0].silent_for(), Some(Duration::from_secs(1)), "how old what is shown is");
        d.apply(0, Ok(vec![app("web", 1, vec![], Some(10))]), t0 + Duration::from_secs(5));
        assert_eq!(d.hosts[0].apps[0].rps, None, "no rate across a gap");
    }

    #[test]
    fn the_selection_follows_apps_by_name_and_stops_at_the_ends() {
        let mut d = Dashboard::new("t".into(), Duration::from_secs(1), vec!["a".into(), "b".into()], None);
        let now = Instant::now();
        d.apply(1, Ok(vec![app("web", 1, vec![], None)]), now);
        assert_eq!(d.selected, Some(key(1, "web")), "the first app shown is selected");
        d.apply(0, Ok(vec![app("web", 1, vec![], None), app("api", 1, vec![], None)]), now);
        assert_eq!(d.selected, Some(key(0, "web")), "until a key moves it, the first app shown is selected");
        d.select(1);
        d.select(1);
        assert_eq!(d.selected, Some(key(1, "web")));
        d.select(5);
        assert_eq!(d.selected, Some(key(1, "web")), "stops at the last");
        d.select(-9);
        assert_eq!(d.selected, Some(key(0, "web")), "stops at the first");
        d.select(1);
        d.apply(0, Err(Failure::unreachable("connection refused")), now);
        assert_eq!(d.selected, Some(key(0, "api")), "an unreachable host keeps its apps, and the selection");
        d.apply(0, Ok(vec![app("web", 1, vec![], None)]), now);
        assert_eq!(d.selected, Some(key(0, "web")), "a selected app that is gone moves to the first");
    }

    #[test]
    fn the_log_tail_keeps_the_last_lines_of_the_selected_app() {
        let mut d = Dashboard::new("t".into(), Duration::from_secs(1), vec!["h".into()], None);
        d.logs_opened(&key(0, "web"));
        for i in 0..LOG_LINES + 5 {
            d.log_line(&key(0, "web"), line(0, &i.to_string()));
        }
        d.log_line(&key(0, "api"), line(0, "of another app"));
        assert_eq!(d.logs.lines.len(), LOG_LINES);
        assert_eq!(d.logs.lines.front().map(|l| l.line.as_str()), Some("5"));
        assert!(d.logs.lines.iter().all(|l| l.line != "of another app"));
    }

    #[test]
    fn the_sha_is_read_from_the_release_name() {
        let mut d = Dashboard::new("t".into(), Duration::from_secs(1), vec!["h".into()], Some("web".into()));
        let mut old_agent = app("web", 1, vec![worker(0, WorkerState::Online, 1)], Some(1));
        old_agent.release = None;
        d.apply(0, Ok(vec![old_agent, app("api", 1, vec![], None)]), Instant::now());
        assert_eq!(d.hosts[0].apps.len(), 1, "--app shows one app");
        assert_eq!(d.hosts[0].apps[0].sha(), Some("1a2b3c4"));
        assert_eq!(sha_of_release("/srv/web"), None);
        assert_eq!(sha_of_release("12-"), None);
    }
}
