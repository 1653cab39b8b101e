//! `hangar logs SLOT [--follow] [--generation N]`: what the slot's guest
//! printed on its serial console, from the console log on this machine
//! (found by name, `<slot>-g<N>.console.log`, without asking libvirt).
//! For a slot on a remote host it says where the log is and, with
//! `--follow`, streams the live console over the libvirt connection.
//!
//! The guest is not trusted (a fork's pull request runs in it): on a
//! terminal, control characters it printed are shown as `^X`, never passed
//! to the terminal to interpret. Into a pipe or file the bytes go as they
//! are.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::commands::Ctx;
use super::error::ExpectedError;
use crate::access::log::{self as console_log, LogReader};
use crate::access::slot::{self, ConsolePlace};
use crate::access::{AccessError, HostConfig, Output};
use crate::exit::ExitStatus;

type Result<T> = std::result::Result<T, ExpectedError>;

pub struct LogsArgs {
    pub slot: String,
    pub follow: bool,
    pub generation: Option<u64>,
}

pub async fn logs(ctx: &Ctx, file: &Path, args: LogsArgs) -> Result<ExitStatus> {
    let fleet = crate::files::fleet::load(file)?;
    let slot = slot::find(&fleet, &args.slot)?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut remote: Vec<HostConfig> = Vec::new();
    for host in &slot.hosts {
        match slot::console_place(host, &fleet, &ctx.state_dir) {
            ConsolePlace::Here(dir) if !dirs.contains(&dir) => dirs.push(dir),
            ConsolePlace::Here(_) => {}
            ConsolePlace::Remote(config) => remote.push(config),
        }
    }
    let mut out = Sink::stdout();
    let found = console_log::newest_log(&dirs, &slot.name, args.generation)?;
    let Some(log) = found else {
        if !remote.is_empty() {
            return remote_logs(fleet.name(), &slot.name, remote, args).await;
        }
        let want = match args.generation {
            Some(g) => format!("generation {g} of {}", slot.name),
            None => slot.name.clone(),
        };
        let dirs_text = dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if !args.follow {
            return Err(AccessError::Unavailable(format!(
                "no console log of {want} in {dirs_text}: its VM has not started here (yet), \
                 or the log was removed with it"
            ))
            .into());
        }
        eprintln!("waiting for the console log of {want} in {dirs_text}");
        return follow(&dirs, &slot.name, args.generation, None, &mut out).await;
    };
    if args.follow {
        return follow(&dirs, &slot.name, args.generation, Some(log), &mut out).await;
    }
    LogReader::new(log.path.clone()).read_new(&mut out)?;
    out.finish();
    Ok(ExitStatus::Ok)
}

/// `tail -f` across generations, each new one announced on stderr. Ends
/// on SIGTERM or Ctrl-C.
async fn follow(
    dirs: &[PathBuf],
    slot: &str,
    want: Option<u64>,
    current: Option<console_log::FoundLog>,
    out: &mut Sink,
) -> Result<ExitStatus> {
    let stop = super::commands::stop_signal();
    let mut switched = |log: &console_log::FoundLog| {
        eprintln!(
            "--- {slot} generation {}: {} ---",
            log.generation,
            log.path.display()
        )
    };
    console_log::follow(dirs, slot, want, current, out, &mut switched, &stop).await?;
    out.finish();
    Ok(ExitStatus::Ok)
}

/// A slot on a remote host: find its domain there (the first host that has
/// it), say where its console log is, and with `--follow` stream its live
/// console (read only: nothing is sent to the guest).
async fn remote_logs(
    fleet: &str,
    slot: &str,
    hosts: Vec<HostConfig>,
    args: LogsArgs,
) -> Result<ExitStatus> {
    let found = console_log::find(hosts, fleet, slot).await?;
    let log = found
        .console_log
        .clone()
        .unwrap_or_else(|| "(the domain has no console log)".into());
    let host = found.host().to_string();
    let generation = found.owner.generation;
    if args.generation.is_some_and(|g| g != generation) {
        return Err(AccessError::Unavailable(format!(
            "{slot} on host {host} is generation {generation}; the log of another generation \
             is read on {host} itself, in the directory of {log}"
        ))
        .into());
    }
    let where_ =
        format!("the console log of {slot} (generation {generation}) is on host {host}: {log}");
    if !args.follow {
        return Err(AccessError::Unavailable(format!(
            "{where_}; read it there, or follow the live console from here with \
             `hangar logs {slot} --follow` (or attach with `hangar console {slot}`)"
        ))
        .into());
    }
    if !found.running {
        return Err(AccessError::Unavailable(format!(
            "{where_}; its VM is not running, so there is no live console to follow"
        ))
        .into());
    }
    eprintln!("{where_}\nfollowing the live console of {slot} on {host} (Ctrl-C to stop)");
    let stop = super::commands::stop_signal();
    console_log::stream_live(&found, Sink::stdout(), &stop).await?;
    Ok(ExitStatus::Ok)
}

/// Stdout, raw into a pipe or file, sanitised on a terminal. A closed pipe
/// (`| head`) ends the output quietly.
struct Sink {
    out: std::io::Stdout,
    sanitizer: Option<Sanitizer>,
    closed: bool,
}

impl Sink {
    fn stdout() -> Sink {
        let out = std::io::stdout();
        let sanitizer = out.is_terminal().then(Sanitizer::default);
        Sink {
            out,
            sanitizer,
            closed: false,
        }
    }
}

impl Output for Sink {
    fn write(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        let r = match self.sanitizer.as_mut() {
            Some(s) => {
                let text = s.push(bytes);
                self.out.lock().write_all(text.as_bytes())
            }
            None => self.out.lock().write_all(bytes),
        };
        if r.is_err() {
            self.closed = true;
        }
    }

    fn flush(&mut self) {
        if !self.closed && self.out.lock().flush().is_err() {
            self.closed = true;
        }
    }

    fn closed(&self) -> bool {
        self.closed
    }

    /// Flush, and end a sanitised output on a new line.
    fn finish(&mut self) {
        if let Some(s) = self.sanitizer.as_mut() {
            let rest = s.finish();
            if !self.closed {
                let _ = self.out.lock().write_all(rest.as_bytes());
            }
        }
        self.flush();
    }
}

/// Guest bytes as text a terminal shows without interpreting: newlines and
/// tabs stay, carriage returns go, every other control character (C0, DEL,
/// C1) becomes caret notation or `<U+XXXX>`; invalid UTF-8 becomes U+FFFD. A
/// UTF-8 sequence split between two reads is completed by the next.
#[derive(Default)]
struct Sanitizer {
    pending: Vec<u8>,
}

impl Sanitizer {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::with_capacity(self.pending.len());
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    escape_into(s, &mut out);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    escape_into(std::str::from_utf8(good).unwrap_or_default(), &mut out);
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &bad[n..];
                        }
                        // Incomplete at the end: wait for the next read.
                        None => {
                            rest = bad;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    fn finish(&mut self) -> String {
        let mut out = String::new();
        if !std::mem::take(&mut self.pending).is_empty() {
            out.push('\u{FFFD}');
        }
        out
    }
}

fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => {}
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            '\u{7f}' => out.push_str("^?"),
            c if ('\u{80}'..='\u{9f}').contains(&c) => {
                out.push_str(&format!("<U+{:04X}>", c as u32));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_cannot_send_escapes_to_the_operators_terminal() {
        let mut s = Sanitizer::default();
        let out = s.push(b"\x1b]52;c;cHduZWQ=\x07ok\r\n\x1bc\x7f \xc2\x9b2J\ttab");
        assert_eq!(out, "^[]52;c;cHduZWQ=^Gok\n^[c^? <U+009B>2J\ttab");
        assert!(!out
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'));
    }

    #[test]
    fn utf8_split_between_reads_is_kept_whole() {
        let mut s = Sanitizer::default();
        let bytes = "grüße\n".as_bytes();
        let a = s.push(&bytes[..3]);
        let b = s.push(&bytes[3..]);
        assert_eq!(format!("{a}{b}"), "grüße\n");
        assert_eq!(s.push(b"\xff!"), "\u{FFFD}!");
        assert_eq!(s.push(b"\xc3"), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }
}
