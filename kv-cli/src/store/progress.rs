//! Progress of a long store command on stderr: a live counter on a terminal (`indicatif`), a
//! plain line per listing page otherwise, so logs and scripts can follow it.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Keys done so far, for one command.
pub struct Progress {
    bar: Option<ProgressBar>,
    command: &'static str,
    verb: &'static str,
}

impl Progress {
    /// Progress of `command` ("copy"), counting keys `verb` ("copied").
    pub fn new(command: &'static str, verb: &'static str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            let template =
                format!("{{spinner}} {command}: {{pos}} keys {verb} ({{per_sec}}, {{elapsed}})");
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar, command, verb }
    }

    /// `done` keys so far.
    pub fn set(&self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None => eprintln!("{}: {done} keys {}", self.command, self.verb),
        }
    }

    /// The command finished with `done` keys.
    pub fn finish(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.finish_and_clear();
        }
    }
}
