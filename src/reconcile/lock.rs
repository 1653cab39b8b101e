//! One pass at a time per fleet: an advisory file lock in the state directory.
//!
//! The lock is held by an open file descriptor, so a crashed or killed run
//! releases it with its process; there is no stale lock to clean up.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("fleet {fleet} is locked by another hangar run ({path})")]
    Held { fleet: String, path: PathBuf },
    #[error("cannot open lock file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    fleet: fleet.to_string(),
                    path,
                })
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // The pid is for humans reading the file; the lock itself is the flock.
        file.set_len(0).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(FleetLock { _file: file, path })
    }

    /// Wait for the lock (the daemon's way), polling every `poll`.
    pub async fn acquire_waiting(
        state_dir: &Path,
        fleet: &str,
        poll: Duration,
    ) -> Result<FleetLock, LockError> {
        loop {
            match FleetLock::try_acquire(state_dir, fleet) {
                Err(LockError::Held { .. }) => tokio::time::sleep(poll).await,
                other => return other,
            }
        }
    }
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
}
