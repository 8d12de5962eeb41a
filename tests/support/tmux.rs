//! A real terminal for full-screen commands (`deployer monit`): a detached `tmux` session of a
//! given size, on a tmux server of the test's own (its socket in a temp dir, so parallel tests
//! and a person's tmux never meet). The test reads the screen as text (`capture-pane`) and types
//! keys (`send-keys`); dropping it ends the server and whatever still runs in it.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

/// A tmux server with one session, `main`, running one shell command.
pub struct Tmux {
    /// Holds the server's socket.
    dir: TempDir,
}

impl Tmux {
    /// Starts `command` (run by `sh -c`) in a `width`×`height` terminal, with `env` added to the
    /// environment the server passes on.
    #[track_caller]
    pub fn start(width: u16, height: u16, env: &[(&str, &str)], command: &str) -> Tmux {
        let tmux = Tmux { dir: tempfile::tempdir().expect("a temp dir for the tmux socket") };
        let mut args: Vec<String> =
            ["new-session", "-d", "-s", "main", "-x", &width.to_string(), "-y", &height.to_string()]
                .map(String::from)
                .to_vec();
        for (k, v) in env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        args.push(command.into());
        let out = tmux.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "tmux new-session failed: {}", String::from_utf8_lossy(&out.stderr));
        tmux
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("tmux.sock")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(self.socket())
            // No user config: the test's terminal is the same on every machine.
            .args(["-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap_or_else(|e| panic!("cannot run `tmux` ({e}); install it (`apt-get install tmux`)"))
    }

    /// The screen as it is now, one line per row (trailing blanks trimmed); empty once the
    /// session ended.
    pub fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "main"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A value of the pane, as tmux formats it (`#{alternate_on}`, `#{cursor_flag}`).
    pub fn pane(&self, format: &str) -> String {
        let out = self.run(&["display-message", "-p", "-t", "main", format]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Types `keys` as tmux names them (`q`, `Down`, `C-c`, `+`).
    #[track_caller]
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend(keys);
        let out = self.run(&args);
        assert!(out.status.success(), "tmux send-keys failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Ends the server at once: the terminal hangs up under whatever runs in it, as when a person
    /// closes the window.
    pub fn hang_up(&self) {
        let out = self.run(&["kill-server"]);
        assert!(out.status.success(), "tmux kill-server failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Polls the screen until `cond` holds; answers that screen, or panics with the last one.
    #[track_caller]
    pub fn wait_for(&self, timeout: Duration, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let seen = crate::poll(timeout, || {
            last = self.screen();
            cond(&last).then(|| last.clone())
        });
        seen.unwrap_or_else(|| panic!("the screen did not show {what} within {timeout:?}; it shows:\n{last}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // The server may be gone already; nothing else to clean up then.
        let _ = self.run(&["kill-server"]);
    }
}
