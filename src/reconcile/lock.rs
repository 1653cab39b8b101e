//! One pass at a time per fleet: an advisory file lock in the state directory.
//!
//! The lock is held by an open file descriptor, so a crashed or killed run
//! releases it with its process; there is no stale lock to clean up.

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::files::state::{self, StateError};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("fleet {fleet} is locked by another hangar run{} ({})", holder.map(|p| format!(" (pid {p})")).unwrap_or_default(), path.display())]
    Held {
        fleet: String,
        path: PathBuf,
        /// The pid the holder wrote into the lock file, if it could be read.
        holder: Option<u32>,
    },
    #[error("cannot open lock file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lock file {0}")]
    Unsafe(#[from] StateError),
}

/// A held fleet lock; released on drop.
#[derive(Debug)]
pub struct FleetLock {
    _file: File,
    path: PathBuf,
}

impl FleetLock {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Take the lock or fail at once with [`LockError::Held`].
    pub fn try_acquire(state_dir: &Path, fleet: &str) -> Result<FleetLock, LockError> {
        let path = state_dir.join(format!("{fleet}.lock"));
        match lock_with_pid(state_dir, &path)? {
            Some(file) => Ok(FleetLock { _file: file, path }),
            None => Err(LockError::Held {
                fleet: fleet.to_string(),
                holder: Some(read_pid(&path)).filter(|p| *p != 0),
                path,
            }),
        }
    }
}

/// Open `path` (in `state_dir`, made if missing), take its flock and write
/// this process's pid into it; `None` when another open file holds it. The
/// pid is for humans and for messages; the lock itself is the flock.
fn lock_with_pid(state_dir: &Path, path: &Path) -> Result<Option<File>, LockError> {
    let io = |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    };
    state::ensure_dir(state_dir)?;
    // Never through a symlink: hangar runs as root, and a planted link
    // would have it truncate and write any file.
    let mut file = state::open_lock(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(Some(file))
}

/// The daemon's record of itself in the state directory: a file it holds
/// locked (and names its pid in) for as long as it runs, so that `destroy`
/// can tell that something would rebuild what it removes. Like the fleet
/// lock, a killed daemon leaves no stale record: its lock goes with it.
#[derive(Debug)]
pub struct DaemonRecord {
    _file: File,
}

fn daemon_path(state_dir: &Path, fleet: &str) -> PathBuf {
    state_dir.join(format!("{fleet}.daemon"))
}

impl DaemonRecord {
    /// Record this process as the fleet's daemon. Fails with the other's
    /// pid when another daemon already runs the fleet.
    pub fn claim(state_dir: &Path, fleet: &str) -> Result<Result<DaemonRecord, u32>, LockError> {
        let path = daemon_path(state_dir, fleet);
        Ok(match lock_with_pid(state_dir, &path)? {
            Some(file) => Ok(DaemonRecord { _file: file }),
            None => Err(read_pid(&path)),
        })
    }

    /// The pid of the daemon that runs `fleet` now, if one does.
    pub fn running(state_dir: &Path, fleet: &str) -> Result<Option<u32>, LockError> {
        let path = daemon_path(state_dir, fleet);
        let Some(file) = state::open_existing_lock(&path)? else {
            return Ok(None);
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(Some(read_pid(&path))),
            Err(TryLockError::Error(source)) => Err(LockError::Io { path, source }),
        }
    }
}

fn read_pid(path: &Path) -> u32 {
    state::read(path, 64)
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_same_fleet_is_refused_until_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = FleetLock::try_acquire(dir.path(), "f").unwrap();
        match FleetLock::try_acquire(dir.path(), "f") {
            Err(LockError::Held { fleet, .. }) => assert_eq!(fleet, "f"),
            other => panic!("expected Held, got {other:?}"),
        }
        // Another fleet is independent.
        let _other = FleetLock::try_acquire(dir.path(), "g").unwrap();
        drop(first);
        FleetLock::try_acquire(dir.path(), "f").unwrap();
    }

    #[test]
    fn a_running_daemon_is_seen_until_its_record_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DaemonRecord::running(dir.path(), "f").unwrap(), None);
        let record = DaemonRecord::claim(dir.path(), "f").unwrap().unwrap();
        assert_eq!(
            DaemonRecord::running(dir.path(), "f").unwrap(),
            Some(std::process::id())
        );
        assert_eq!(
            DaemonRecord::claim(dir.path(), "f").unwrap().unwrap_err(),
            std::process::id(),
            "a second daemon of the fleet is told who runs it"
        );
        assert_eq!(DaemonRecord::running(dir.path(), "g").unwrap(), None);
        drop(record);
        assert_eq!(DaemonRecord::running(dir.path(), "f").unwrap(), None);
    }
}
