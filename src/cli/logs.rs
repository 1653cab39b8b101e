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

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::commands::Ctx;
use super::error::ExpectedError;
use super::slot::{self, ConsolePlace};
use crate::exit::ExitStatus;
use crate::model::names::{console_log_generation, console_log_name};
use crate::providers::libvirt::serial::{self, SlotDomain};
use crate::providers::libvirt::HostConfig;

type Result<T> = std::result::Result<T, ExpectedError>;

pub struct LogsArgs {
    pub slot: String,
    pub follow: bool,
    pub generation: Option<u64>,
}

/// How often `--follow` looks for more output and a newer generation.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

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
    let found = newest_log(&dirs, &slot.name, args.generation)?;
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
            return Err(ExpectedError::NoConsoleLog(format!(
                "no console log of {want} in {dirs_text}: its VM has not started here (yet), \
                 or the log was removed with it"
            )));
        }
        eprintln!("waiting for the console log of {want} in {dirs_text}");
        return follow(&dirs, &slot.name, args.generation, None, &mut out).await;
    };
    if args.follow {
        return follow(&dirs, &slot.name, args.generation, Some(log), &mut out).await;
    }
    let mut reader = LogReader::new(log.path.clone());
    reader
        .read_new(&mut out)
        .map_err(|e| unreadable(&log.path, e))?;
    out.finish();
    Ok(ExitStatus::Ok)
}

fn unreadable(path: &Path, e: std::io::Error) -> ExpectedError {
    ExpectedError::NoConsoleLog(format!("console log {}: {e}", path.display()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FoundLog {
    generation: u64,
    path: PathBuf,
}

/// The log of generation `want` of `slot`, or its newest, in `dirs`.
fn newest_log(dirs: &[PathBuf], slot: &str, want: Option<u64>) -> Result<Option<FoundLog>> {
    let mut best: Option<FoundLog> = None;
    for dir in dirs {
        if let Some(g) = want {
            let path = dir.join(console_log_name(slot, g));
            if path.is_file() {
                return Ok(Some(FoundLog {
                    generation: g,
                    path,
                }));
            }
            continue;
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(unreadable(dir, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(g) = name.to_str().and_then(|n| console_log_generation(slot, n)) else {
                continue;
            };
            if best.as_ref().is_none_or(|b| g > b.generation) {
                best = Some(FoundLog {
                    generation: g,
                    path: entry.path(),
                });
            }
        }
    }
    Ok(best)
}

/// `tail -f`, across generations: when a newer generation's log appears
/// (the slot's VM was replaced), the rest of the old one is printed, then
/// the new one from its start. Ends on SIGTERM or Ctrl-C.
async fn follow(
    dirs: &[PathBuf],
    slot: &str,
    want: Option<u64>,
    mut current: Option<FoundLog>,
    out: &mut Sink,
) -> Result<ExitStatus> {
    let stop = super::commands::stop_signal();
    let mut reader = current.as_ref().map(|l| LogReader::new(l.path.clone()));
    let mut tick = tokio::time::interval(FOLLOW_POLL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Some(r) = reader.as_mut() {
            r.read_new(out).map_err(|e| unreadable(&r.path, e))?;
        }
        let newest = newest_log(dirs, slot, want)?;
        if let Some(log) = newest {
            if current.as_ref() != Some(&log) {
                out.flush();
                eprintln!(
                    "--- {slot} generation {}: {} ---",
                    log.generation,
                    log.path.display()
                );
                let mut r = LogReader::new(log.path.clone());
                r.read_new(out).map_err(|e| unreadable(&r.path, e))?;
                reader = Some(r);
                current = Some(log);
            }
        }
        if out.closed {
            break;
        }
    }
    out.finish();
    Ok(ExitStatus::Ok)
}

/// Reads what was appended to one log since the last call; a log that got
/// shorter or was replaced (libvirt's virtlogd rotates at 2 MiB) is read
/// again from its start.
struct LogReader {
    path: PathBuf,
    offset: u64,
    inode: Option<u64>,
}

impl LogReader {
    fn new(path: PathBuf) -> Self {
        LogReader {
            path,
            offset: 0,
            inode: None,
        }
    }

    fn read_new(&mut self, out: &mut Sink) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            // Removed (the VM was deleted, its leftovers cleaned): nothing new.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if self.inode != Some(meta.ino()) || meta.len() < self.offset {
            self.offset = 0;
            self.inode = Some(meta.ino());
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            out.write(&buf[..n]);
        }
        out.flush();
        Ok(())
    }
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
    let (fleet, name) = (fleet.to_string(), slot.to_string());
    let found = tokio::task::spawn_blocking(move || find_on(&hosts, &fleet, &name))
        .await
        .map_err(|e| ExpectedError::Usage(format!("console lookup: {e}")))??;
    let log = found
        .console_log
        .clone()
        .unwrap_or_else(|| "(the domain has no console log)".into());
    let host = found.host().to_string();
    let generation = found.owner.generation;
    if args.generation.is_some_and(|g| g != generation) {
        return Err(ExpectedError::NoConsoleLog(format!(
            "{slot} on host {host} is generation {generation}; the log of another generation \
             is read on {host} itself, in the directory of {log}"
        )));
    }
    let where_ =
        format!("the console log of {slot} (generation {generation}) is on host {host}: {log}");
    if !args.follow {
        return Err(ExpectedError::NoConsoleLog(format!(
            "{where_}; read it there, or follow the live console from here with \
             `hangar logs {slot} --follow` (or attach with `hangar console {slot}`)"
        )));
    }
    if !found.running {
        return Err(ExpectedError::NoConsoleLog(format!(
            "{where_}; its VM is not running, so there is no live console to follow"
        )));
    }
    eprintln!("{where_}\nfollowing the live console of {slot} on {host} (Ctrl-C to stop)");
    let stream = found.open_console(false)?;
    let stop = super::commands::stop_signal();
    let reader = stream.clone();
    let pump = tokio::task::spawn_blocking(move || -> std::result::Result<(), ExpectedError> {
        let mut out = Sink::stdout();
        let mut buf = [0u8; 4096];
        loop {
            let n = reader.recv(&mut buf)?;
            if n == 0 || out.closed {
                out.finish();
                return Ok(());
            }
            out.write(&buf[..n]);
            out.flush();
        }
    });
    tokio::select! {
        r = pump => {
            r.map_err(|e| ExpectedError::Usage(format!("console: {e}")))??;
        }
        _ = stop.cancelled() => stream.abort(),
    }
    Ok(ExitStatus::Ok)
}

/// The slot's domain on the first of `hosts` that has it; every host's
/// failure said when none does.
pub(super) fn find_on(hosts: &[HostConfig], fleet: &str, slot: &str) -> Result<SlotDomain> {
    let mut why = Vec::new();
    for config in hosts {
        match serial::find_slot_domain(config, fleet, slot) {
            Ok(Some(d)) => return Ok(d),
            Ok(None) => why.push(format!("{}: no VM {slot}", config.name)),
            Err(e) => why.push(e.to_string()),
        }
    }
    Err(ExpectedError::NoConsoleLog(format!(
        "{slot} is on none of its hosts ({})",
        why.join("; ")
    )))
}

/// Stdout, raw into a pipe or file, sanitised on a terminal. A closed pipe
/// (`| head`) ends the output quietly.
pub(super) struct Sink {
    out: std::io::Stdout,
    sanitizer: Option<Sanitizer>,
    pub closed: bool,
}

impl Sink {
    pub fn stdout() -> Sink {
        let out = std::io::stdout();
        let sanitizer = out.is_terminal().then(Sanitizer::default);
        Sink {
            out,
            sanitizer,
            closed: false,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
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

    pub fn flush(&mut self) {
        if !self.closed && self.out.lock().flush().is_err() {
            self.closed = true;
        }
    }

    /// Flush, and end a sanitised output on a new line.
    pub fn finish(&mut self) {
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

    #[test]
    fn the_newest_generation_or_the_one_asked_for_is_found() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(newest_log(&dirs, "f-p-1", None).unwrap(), None);
        for (dir, name) in [
            (a.path(), "f-p-1-g2.console.log"),
            (b.path(), "f-p-1-g10.console.log"),
            (a.path(), "f-p-10-g99.console.log"),
            (a.path(), "f-p-1-g11.log"),
        ] {
            std::fs::write(dir.join(name), "x\n").unwrap();
        }
        let newest = newest_log(&dirs, "f-p-1", None).unwrap().unwrap();
        assert_eq!(newest.generation, 10);
        assert_eq!(newest.path, b.path().join("f-p-1-g10.console.log"));
        let asked = newest_log(&dirs, "f-p-1", Some(2)).unwrap().unwrap();
        assert_eq!(asked.path, a.path().join("f-p-1-g2.console.log"));
        assert_eq!(newest_log(&dirs, "f-p-1", Some(3)).unwrap(), None);
    }
}
