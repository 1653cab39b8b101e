//! Printing: diagnostics, progress, tables. Everything here writes to the
//! terminal only; no decision is made here.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use super::args::ColorChoice;
use crate::plan::render;
use crate::reconcile::event::{Event, Events};
use crate::reconcile::execute::Outcome;

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

/// How the engine's events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStyle {
    /// A progress bar on stderr (a terminal), lines printed above it.
    Bar,
    /// One line per event on stderr (cron, systemd, a pipe).
    Lines,
    /// One JSON object per event on stdout (`-o json`).
    Json,
}

/// Which plans a command shows as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plans {
    /// `apply`: the first pass's plan, in full.
    First,
    /// `destroy`: every plan that changes something.
    Changing,
    /// The daemon: none (each pass gets one summary line).
    None,
}

/// Renders the engine's [`Event`] stream.
pub struct EventView {
    style: EventStyle,
    plans: Plans,
    color: bool,
    /// One summary line per pass (the daemon's log).
    pass_lines: bool,
    bar: Mutex<Option<ProgressBar>>,
    plans_shown: AtomicU64,
}

impl EventView {
    pub fn new(json: bool, plans: Plans, color: bool, pass_lines: bool) -> Self {
        let style = if json {
            EventStyle::Json
        } else if std::io::stderr().is_terminal() {
            EventStyle::Bar
        } else {
            EventStyle::Lines
        };
        EventView {
            style,
            plans,
            color,
            pass_lines,
            bar: Mutex::new(None),
            plans_shown: AtomicU64::new(0),
        }
    }

    pub fn style(&self) -> EventStyle {
        self.style
    }

    /// Print a line on stderr without tearing the bar.
    fn say(&self, line: &str) {
        match self.bar.lock().ok().as_ref().and_then(|b| b.as_ref()) {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if self.style != EventStyle::Bar {
            return;
        }
        let Ok(mut bar) = self.bar.lock() else {
            return;
        };
        let b = bar.get_or_insert_with(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b
        });
        f(b);
    }

    /// Take the bar off the screen (at the end of a pass, and for good).
    pub fn finish(&self) {
        if let Ok(mut bar) = self.bar.lock() {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
        }
    }

    /// A JSON line on stdout (`-o json`), for what is not an engine event:
    /// the end of a run and its status.
    pub fn json_line(&self, value: &serde_json::Value) {
        crate::outln!("{value}");
    }

    fn human(&self, event: &Event) {
        match event {
            Event::PassStarted { .. } | Event::Stopping => {
                if matches!(event, Event::Stopping) {
                    self.say("stopping: the actions under way finish, no other starts");
                }
            }
            Event::ObservationFailed { what, error } => self.say(&format!(
                "warning: could not observe {what}: {}; nothing destructive is planned there",
                error.message
            )),
            Event::RunnerVersionWarning { pool, message } => {
                self.say(&format!("warning: pool {pool}: {message}"))
            }
            Event::Planned { plan } => {
                let show = match self.plans {
                    Plans::First => self.plans_shown.fetch_add(1, Ordering::Relaxed) == 0,
                    Plans::Changing => plan.has_changes(),
                    Plans::None => false,
                };
                if show {
                    self.finish();
                    crate::out!("{}", render::human(plan, self.color));
                }
            }
            Event::ActionStarted { action } => self.with_bar(|b| {
                b.inc_length(1);
                b.set_message(format!("{} {}", render::verb(action), action.subject()));
            }),
            Event::ActionFinished { outcome: o } => {
                let (verb, subject) = (render::verb(&o.action), o.action.subject());
                let line = match &o.outcome {
                    Outcome::Done => format!(
                        "  done     {verb} {subject} ({:.1}s)",
                        o.millis as f64 / 1000.0
                    ),
                    Outcome::Skipped { why } => format!("  skipped  {verb} {subject}: {why}"),
                    Outcome::Failed { error } => {
                        format!("  failed   {verb} {subject}: {}", error.message)
                    }
                };
                self.with_bar(|b| b.inc(1));
                self.say(&line);
            }
            Event::GuestPlayed { line } => self.say(&format!("  sandbox  {line}")),
            Event::PassFinished {
                pass: _,
                planned,
                done,
                failed,
                waiting,
                next,
            } => {
                self.finish();
                if self.pass_lines {
                    self.say(&format!(
                        "pass: {planned} planned, {done} done, {failed} failed, \
                         {waiting} waiting; next pass in {} ({})",
                        render::duration(next.after),
                        next.because.describe()
                    ));
                }
            }
            Event::FileChanged { file } => {
                self.say(&format!("{file}: changed; using the new file"))
            }
            Event::FileRejected { file, error } => self.say(&format!(
                "error: {file}: {error}\nthe last good version of the file stays in use"
            )),
            Event::WaitingForLock { fleet, holder } => self.say(&format!(
                "waiting for fleet {fleet}'s lock{}",
                holder
                    .map(|p| format!(" (held by pid {p})"))
                    .unwrap_or_default()
            )),
        }
    }
}

impl Events for EventView {
    fn emit(&self, event: Event) {
        match self.style {
            EventStyle::Json => match serde_json::to_string(&event) {
                Ok(line) => crate::outln!("{line}"),
                Err(e) => tracing::warn!(error = %e, "event not serializable"),
            },
            EventStyle::Bar | EventStyle::Lines => self.human(&event),
        }
    }
}
