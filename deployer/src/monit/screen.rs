//! The terminal, taken over and always given back: raw mode and the alternate screen while the
//! dashboard runs; the shell's screen, cooked mode and the cursor again when it ends, whether by
//! `q`, by an error (the guard's `Drop`), or by a panic (ratatui's panic hook restores first).
//!
//! Keys are read on a thread of their own (crossterm's reading blocks), and sent to the
//! dashboard's loop as [`Input`]s.

use std::io::{IsTerminal, Stdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ratatui::Terminal;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::prelude::CrosstermBackend;
use tokio::sync::mpsc::UnboundedSender;

/// How often the key thread looks whether the dashboard ended.
const KEY_POLL: Duration = Duration::from_millis(100);

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Up,
    Down,
    Reload,
    Restart,
    /// Scale the selected app by this many instances.
    Scale(i32),
    Quit,
    /// The terminal changed size: draw again.
    Redraw,
}

/// The key a person pressed, as an [`Input`]; `None` for keys that do nothing.
pub fn input(key: KeyEvent) -> Option<Input> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match key.code {
        KeyCode::Char('c') if ctrl => Input::Quit,
        KeyCode::Char('q') | KeyCode::Esc => Input::Quit,
        KeyCode::Up | KeyCode::Char('k') => Input::Up,
        KeyCode::Down | KeyCode::Char('j') => Input::Down,
        KeyCode::Char('r') => Input::Reload,
        KeyCode::Char('R') => Input::Restart,
        KeyCode::Char('+') | KeyCode::Char('=') => Input::Scale(1),
        KeyCode::Char('-') | KeyCode::Char('_') => Input::Scale(-1),
        _ => return None,
    })
}

/// Whether both ends of the terminal are one (a pipe cannot show a dashboard, nor take keys).
pub fn is_terminal() -> bool {
    std::io::stdout().is_terminal() && std::io::stdin().is_terminal()
}

/// The terminal while the dashboard owns it; given back when dropped.
pub struct Screen {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    /// Raw mode, the alternate screen, and a panic hook that gives the terminal back before the
    /// panic's message is printed.
    pub fn enter() -> std::io::Result<Screen> {
        match ratatui::try_init() {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                // Half entered (raw mode without the alternate screen): undo what was done.
                ratatui::restore();
                Err(e)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        // Shows the cursor the drawing hid; nothing more to do if the terminal is gone.
        let _ = self.terminal.show_cursor();
        ratatui::restore();
    }
}

/// The thread that reads keys; stopped and joined when dropped, so no read is under way when
/// the terminal is given back.
pub struct Keys {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Closed when the thread ends.
    ended: std::sync::mpsc::Receiver<()>,
}

/// How long giving the terminal back waits for the key thread. A terminal that hung up (its
/// window closed, tmux killed) can keep crossterm's read from ever returning: then the thread is
/// left to end with the process.
const KEYS_STOP: Duration = Duration::from_millis(500);

impl Keys {
    pub fn spawn(tx: UnboundedSender<super::Update>) -> Keys {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (ended_tx, ended) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _ended = ended_tx;
            while !flag.load(Ordering::Relaxed) {
                let got = match event::poll(KEY_POLL) {
                    Ok(false) => continue,
                    Ok(true) => event::read(),
                    Err(e) => Err(e),
                };
                let sent = match got {
                    Ok(Event::Key(key)) => match input(key) {
                        Some(i) => tx.send(super::Update::Input(i)),
                        None => Ok(()),
                    },
                    Ok(Event::Resize(..)) => tx.send(super::Update::Input(Input::Redraw)),
                    Ok(_) => Ok(()),
                    Err(e) => {
                        // The terminal is gone (closed, hung up): the dashboard ends with it.
                        let _ = tx.send(super::Update::InputFailed(e.to_string()));
                        return;
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        Keys { stop, thread: Some(thread), ended }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Disconnected when the thread ended; a timeout leaves it to end with the process.
        if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) = self.ended.recv_timeout(KEYS_STOP)
            && let Some(thread) = self.thread.take()
        {
            // A panic of the key thread was reported by the hook already.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> Option<Input> {
        input(KeyEvent::new(code, modifiers))
    }

    #[test]
    fn keys_say_what_pm2_users_expect() {
        assert_eq!(key(KeyCode::Char('q'), KeyModifiers::NONE), Some(Input::Quit));
        assert_eq!(key(KeyCode::Char('c'), KeyModifiers::CONTROL), Some(Input::Quit));
        assert_eq!(key(KeyCode::Char('c'), KeyModifiers::NONE), None);
        assert_eq!(key(KeyCode::Char('r'), KeyModifiers::NONE), Some(Input::Reload));
        assert_eq!(key(KeyCode::Char('R'), KeyModifiers::SHIFT), Some(Input::Restart));
        assert_eq!(key(KeyCode::Char('+'), KeyModifiers::SHIFT), Some(Input::Scale(1)));
        assert_eq!(key(KeyCode::Char('-'), KeyModifiers::NONE), Some(Input::Scale(-1)));
        assert_eq!(key(KeyCode::Down, KeyModifiers::NONE), Some(Input::Down));
        let release = KeyEvent { kind: KeyEventKind::Release, ..KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE) };
        assert_eq!(input(release), None);
    }
}
