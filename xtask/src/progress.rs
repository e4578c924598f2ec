//! What a long step is doing and for how long. On a terminal (stderr), a spinner with the
//! step, what it is at and the elapsed time (indicatif), replaced by one line when it ends;
//! elsewhere (CI's log) plain lines: one when the step starts, one at most a minute while it
//! runs, one when it ends.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a step not on a terminal may print what it is at.
const PLAIN_EVERY: Duration = Duration::from_secs(60);

/// Whether steps draw spinners: stderr is a terminal that can take them.
pub fn on_terminal() -> bool {
    std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// A step under way (see the module's text). Dropped without [`Step::done`] (an error
/// returned through it), it clears its spinner and prints nothing more.
pub struct Step {
    what: String,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
}

impl Step {
    /// Starts a step, saying `what` (e.g. `lab: fetching X`).
    pub fn start(what: impl Into<String>) -> Step {
        Self::with_style(what.into(), "{spinner} {msg} [{elapsed}]")
    }

    /// A step that moves bytes (a download): the spinner shows how many and how fast.
    pub fn bytes(what: impl Into<String>) -> Step {
        Self::with_style(
            what.into(),
            "{spinner} {msg}: {bytes} at {binary_bytes_per_sec} [{elapsed}]",
        )
    }

    fn with_style(what: String, template: &str) -> Step {
        let bar = on_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_message(what.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            eprintln!("{what} ...");
        }
        let now = Instant::now();
        Step {
            what,
            bar,
            started: now,
            last_line: now,
        }
    }

    /// What the step is at now: the spinner's text on a terminal; elsewhere a line, at most
    /// one a minute.
    pub fn at(&mut self, detail: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(format!("{}: {detail}", self.what)),
            None if self.last_line.elapsed() >= PLAIN_EVERY => {
                self.last_line = Instant::now();
                eprintln!(
                    "{}: {detail}; {} s so far",
                    self.what,
                    self.started.elapsed().as_secs()
                );
            }
            None => {}
        }
    }

    /// Bytes moved so far (for [`Step::bytes`]).
    pub fn moved(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
        }
    }

    /// Ends the step with one line: what it was, `result` (if any) and how long it took.
    pub fn done(self, result: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let sep = if result.is_empty() { "" } else { ", " };
        eprintln!(
            "{}: done{sep}{result} in {:.1} s",
            self.what,
            self.started.elapsed().as_secs_f64()
        );
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not on a terminal, a step prints plain lines and rate-limits what it is at.
    #[test]
    fn plain_steps_rate_limit_their_lines() {
        let now = Instant::now();
        let mut step = Step {
            what: "test: a step".into(),
            bar: None,
            started: now,
            last_line: now,
        };
        let before = step.last_line;
        step.at("first detail");
        assert_eq!(
            step.last_line, before,
            "a detail within the minute prints nothing"
        );
        step.last_line -= PLAIN_EVERY;
        step.at("later detail");
        assert!(step.last_line > before - PLAIN_EVERY);
        step.done("");
    }
}
