//! One line per host while a rollout runs: an indicatif spinner with the host's current step on a
//! terminal; plain `host  state  message` lines otherwise (CI logs); nothing with `--json`.

use std::time::Duration;

use anstyle::Style;
use deployer_wire::{DeployEvent, EventState};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::rollout::HostState;
use crate::output::{self, DIM, deploys, fleet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bars,
    Lines,
    Quiet,
}

/// All hosts' lines.
pub struct Board {
    mode: Mode,
    multi: MultiProgress,
    width: usize,
}

impl Board {
    /// Bars on a terminal stderr, plain lines on stdout otherwise, nothing when `json`.
    pub fn new(json: bool, labels: &[String]) -> Board {
        let mode = if json {
            Mode::Quiet
        } else if output::stderr_is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        let multi = MultiProgress::with_draw_target(if mode == Mode::Bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let width = labels.iter().map(String::len).max().unwrap_or(0);
        Board { mode, multi, width }
    }

    /// The line of one host, waiting to start.
    pub fn host(&self, label: &str) -> HostLine {
        let bar = (self.mode == Mode::Bars).then(|| {
            let style = ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {msg} {elapsed:.dim}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let bar = self.multi.add(ProgressBar::new_spinner().with_style(style));
            bar.set_prefix(format!("{label:<w$}", w = self.width));
            bar.set_message(format!("{DIM}waiting{DIM:#}"));
            bar
        });
        HostLine { bar, label: format!("{label:<w$}", w = self.width), mode: self.mode }
    }

    /// A line about the rollout itself (halting, rolling back), above the bars.
    pub fn note(&self, line: &str) {
        match self.mode {
            Mode::Bars => {
                let _ = self.multi.println(anstream::adapter::strip_str(line).to_string());
            }
            Mode::Lines => anstream::println!("{line}"),
            Mode::Quiet => {}
        }
    }
}

/// One host's line.
pub struct HostLine {
    bar: Option<ProgressBar>,
    label: String,
    mode: Mode,
}

impl HostLine {
    /// The host started (`connecting`, `deploying 1a2b3c4`...).
    pub fn start(&self, what: &str) {
        if let Some(bar) = &self.bar {
            bar.reset_elapsed();
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        self.say(what, Style::new());
    }

    /// A step of the host's deploy.
    pub fn event(&self, event: &DeployEvent) {
        let (state, style) = match event.state {
            EventState::Log => ("", Style::new()),
            EventState::Entered(s) => (s.as_str(), deploys::state_style(s)),
        };
        let text = format!("{style}{state:<11}{style:#} {}", output::one_line(&event.message, 100));
        match &self.bar {
            Some(bar) => bar.set_message(text),
            None => self.say(&text, Style::new()),
        }
    }

    /// The host is done: the spinner stops on its last words.
    pub fn finish(&self, state: HostState, words: &str) {
        let style = fleet::host_style(state);
        let mark = if state.is_live() { "✓" } else { "✗" };
        let text = format!("{style}{mark} {state}{style:#} {words}");
        match &self.bar {
            Some(bar) => bar.finish_with_message(text),
            None => self.say(&text, Style::new()),
        }
    }

    fn say(&self, text: &str, style: Style) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.set_message(format!("{style}{text}{style:#}")),
            (None, Mode::Lines) => anstream::println!("{DIM}{}{DIM:#}  {style}{text}{style:#}", self.label),
            _ => {}
        }
    }
}
