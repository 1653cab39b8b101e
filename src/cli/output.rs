//! Printing: diagnostics, progress, tables. Everything here writes to the
//! terminal only; no decision is made here.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use super::args::ColorChoice;
use crate::plan::model::Action;
use crate::reconcile::execute::{Outcome, Progress};

/// Write to stdout, ignoring a closed pipe (`hangar diff | head`): what
/// hangar is doing must not be cut short because nobody reads its output.
pub fn write_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// `print!` to stdout through [`write_stdout`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(&format!($($arg)*))
    };
}

/// `println!` to stdout through [`write_stdout`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Whether to colour what goes to stdout.
pub fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    }
}

/// Render a diagnostic (a spec error) with its source snippet, as miette
/// does, on stderr.
pub fn diagnostic(d: &dyn miette::Diagnostic, color: bool) -> String {
    let theme = if color {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    if handler.render_report(&mut out, d).is_err() {
        out = d.to_string();
    }
    out
}

/// Progress of an execution: a bar on a terminal, one line per finished
/// action otherwise (cron and systemd logs).
pub struct ProgressView {
    bar: Option<ProgressBar>,
    started: AtomicU64,
    lines: Mutex<Vec<String>>,
}

impl ProgressView {
    /// `total` actions expected; 0 when not known yet (the bar grows as
    /// actions start).
    pub fn new(total: usize) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            Some(b)
        } else {
            None
        };
        ProgressView {
            bar,
            started: AtomicU64::new(0),
            lines: Mutex::new(Vec::new()),
        }
    }

    pub fn event(&self, p: Progress<'_>) {
        match p {
            Progress::Started(a) => {
                if let Some(b) = &self.bar {
                    let started = self.started.fetch_add(1, Ordering::Relaxed) + 1;
                    if started > b.length().unwrap_or(0) {
                        b.set_length(started);
                    }
                    b.set_message(format!("{} {}", verb(a), a.subject()));
                }
            }
            Progress::Finished(o) => {
                let line = match &o.outcome {
                    Outcome::Done => format!(
                        "  done     {} {} ({:.1}s)",
                        verb(&o.action),
                        o.action.subject(),
                        o.millis as f64 / 1000.0
                    ),
                    Outcome::Skipped { why } => {
                        format!(
                            "  skipped  {} {}: {why}",
                            verb(&o.action),
                            o.action.subject()
                        )
                    }
                    Outcome::Failed { error, .. } => {
                        format!(
                            "  failed   {} {}: {error}",
                            verb(&o.action),
                            o.action.subject()
                        )
                    }
                };
                match &self.bar {
                    Some(b) => {
                        b.inc(1);
                        b.println(&line);
                    }
                    None => eprintln!("{line}"),
                }
                if let Ok(mut l) = self.lines.lock() {
                    l.push(line);
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

pub fn verb(a: &Action) -> &'static str {
    match a {
        Action::Create { .. } => "create",
        Action::Start { .. } => "start",
        Action::Replace { .. } => "replace",
        Action::Delete { .. } => "delete",
        Action::RemoveSeed { .. } => "remove seed of",
        Action::RemoveRunner { .. } => "remove runner",
        Action::Wait { .. } => "wait",
    }
}

/// `3m`, `2h5m`, `4d3h`: a compact age.
pub fn age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_compact() {
        assert_eq!(age(chrono::TimeDelta::seconds(5)), "5s");
        assert_eq!(age(chrono::TimeDelta::seconds(125)), "2m");
        assert_eq!(age(chrono::TimeDelta::seconds(3 * 3600 + 65)), "3h1m");
        assert_eq!(age(chrono::TimeDelta::seconds(2 * 86400 + 7200)), "2d2h");
        assert_eq!(age(chrono::TimeDelta::seconds(-3)), "0s");
    }
}
