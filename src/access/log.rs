//! A slot's console logs on this machine (found by name,
//! `<slot>-g<N>.console.log`, without asking libvirt), read as they grow
//! and across generations; and, for a slot on a remote host, its domain
//! there and its live console, read only.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{AccessError, Output, SlotDomain};
use crate::model::names::{console_log_generation, console_log_name};
use crate::providers::libvirt::serial;
use crate::providers::libvirt::HostConfig;

type Result<T> = std::result::Result<T, AccessError>;

/// How often [`follow`] looks for more output and a newer generation.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// One generation's console log of a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundLog {
    pub generation: u64,
    pub path: PathBuf,
}

pub fn unreadable(path: &Path, e: std::io::Error) -> AccessError {
    AccessError::Unavailable(format!("console log {}: {e}", path.display()))
}

/// The log of generation `want` of `slot`, or its newest, in `dirs`.
pub fn newest_log(dirs: &[PathBuf], slot: &str, want: Option<u64>) -> Result<Option<FoundLog>> {
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
/// (the slot's VM was replaced), the rest of the old one is written, then
/// `switched` is told, then the new one is written from its start. Ends
/// when `stop` is cancelled or `out` closes.
pub async fn follow(
    dirs: &[PathBuf],
    slot: &str,
    want: Option<u64>,
    mut current: Option<FoundLog>,
    out: &mut dyn Output,
    switched: &mut dyn FnMut(&FoundLog),
    stop: &CancellationToken,
) -> Result<()> {
    let mut reader = current.as_ref().map(|l| LogReader::new(l.path.clone()));
    let mut tick = tokio::time::interval(FOLLOW_POLL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Some(r) = reader.as_mut() {
            r.read_new(out)?;
        }
        if let Some(log) = newest_log(dirs, slot, want)? {
            if current.as_ref() != Some(&log) {
                out.flush();
                switched(&log);
                let mut r = LogReader::new(log.path.clone());
                r.read_new(out)?;
                reader = Some(r);
                current = Some(log);
            }
        }
        if out.closed() {
            break;
        }
    }
    Ok(())
}

/// Reads what was appended to one log since the last call; a log that got
/// shorter or was replaced (libvirt's virtlogd rotates at 2 MiB) is read
/// again from its start.
pub struct LogReader {
    path: PathBuf,
    offset: u64,
    inode: Option<u64>,
}

impl LogReader {
    pub fn new(path: PathBuf) -> Self {
        LogReader {
            path,
            offset: 0,
            inode: None,
        }
    }

    pub fn read_new(&mut self, out: &mut dyn Output) -> Result<()> {
        self.read_into(out).map_err(|e| unreadable(&self.path, e))
    }

    fn read_into(&mut self, out: &mut dyn Output) -> std::io::Result<()> {
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

/// The slot's domain on the first of `hosts` that has it; every host's
/// failure said when none does. Blocking (libvirt calls).
pub fn find_on(hosts: &[HostConfig], fleet: &str, slot: &str) -> Result<SlotDomain> {
    let mut why = Vec::new();
    for config in hosts {
        match serial::find_slot_domain(config, fleet, slot) {
            Ok(Some(d)) => return Ok(d),
            Ok(None) => why.push(format!("{}: no VM {slot}", config.name)),
            Err(e) => why.push(e.to_string()),
        }
    }
    Err(AccessError::Unavailable(format!(
        "{slot} is on none of its hosts ({})",
        why.join("; ")
    )))
}

/// [`find_on`], off the async runtime's threads.
pub async fn find(hosts: Vec<HostConfig>, fleet: &str, slot: &str) -> Result<SlotDomain> {
    let (fleet, slot) = (fleet.to_string(), slot.to_string());
    tokio::task::spawn_blocking(move || find_on(&hosts, &fleet, &slot))
        .await
        .map_err(|e| AccessError::Unavailable(format!("console lookup: {e}")))?
}

/// The live console of `domain`, read only (nothing is sent to the
/// guest), written into `out` until the console closes, `out` closes, or
/// `stop` is cancelled.
pub async fn stream_live<O: Output + Send + 'static>(
    domain: &SlotDomain,
    mut out: O,
    stop: &CancellationToken,
) -> Result<()> {
    let stream = domain.open_console(false)?;
    let reader = stream.clone();
    let pump = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let n = reader.recv(&mut buf)?;
            if n == 0 || out.closed() {
                out.finish();
                return Ok(());
            }
            out.write(&buf[..n]);
            out.flush();
        }
    });
    tokio::select! {
        r = pump => {
            r.map_err(|e| AccessError::Unavailable(format!("console: {e}")))??;
        }
        _ = stop.cancelled() => stream.abort(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
