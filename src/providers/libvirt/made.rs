//! hangar's own record of the volumes it made on a host, the proof of
//! ownership a volume cannot carry (libvirt volumes have no metadata): a
//! name is not ownership, since anyone can make `<slot>-cache.qcow2`.
//!
//! A volume is hangar's to adopt, reuse or delete only when one of the
//! fleet's domains references it, or when this record says hangar made it.
//! The record is written *before* the volume is made (an intent: a crash
//! between the two leaves a name whose volume never came, harmless) and a
//! name leaves it once its volume is deleted. Volumes that one of our
//! domains references are added when the domain is first read, so that a
//! fleet made before the record existed keeps its caches.
//!
//! It lives in the state directory ([`crate::files::state`]) when the
//! host has one configured, else in memory (what this process made).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

use super::Inner;
use crate::files::state;
use crate::providers::{ErrorKind, ProviderError};

/// One host's record; keys are `<pool>/<volume>`.
#[derive(Debug)]
pub(super) struct MadeVolumes {
    path: Option<PathBuf>,
    memory: Mutex<BTreeSet<String>>,
    /// Held across each read-change-write: concurrent creates on one host
    /// would otherwise write over each other's names.
    changing: Mutex<()>,
}

fn key(pool: &str, volume: &str) -> String {
    format!("{pool}/{volume}")
}

impl MadeVolumes {
    pub(super) fn new(path: Option<PathBuf>) -> Self {
        MadeVolumes {
            path,
            memory: Mutex::new(BTreeSet::new()),
            changing: Mutex::new(()),
        }
    }

    /// The record as it is now (another hangar process may have changed
    /// it: the fleet lock orders their changes, so it is read each time).
    fn load(&self) -> Result<BTreeSet<String>, String> {
        let Some(path) = &self.path else {
            return Ok(self.memory.lock().expect("made volumes lock").clone());
        };
        match state::read(path, state::MAX_STATE_BYTES).map_err(|e| e.to_string())? {
            None => Ok(BTreeSet::new()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("volume record {}: {e}", path.display())),
        }
    }

    fn store(&self, set: &BTreeSet<String>) -> Result<(), String> {
        let Some(path) = &self.path else {
            *self.memory.lock().expect("made volumes lock") = set.clone();
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(set).expect("a set of strings serializes");
        state::write_atomic(path, &bytes).map_err(|e| format!("volume record: {e}"))
    }

    /// The names of `pool` that hangar made.
    pub(super) fn in_pool(&self, pool: &str) -> Result<BTreeSet<String>, String> {
        let prefix = key(pool, "");
        Ok(self
            .load()?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect())
    }

    pub(super) fn contains(&self, pool: &str, volume: &str) -> Result<bool, String> {
        Ok(self.load()?.contains(&key(pool, volume)))
    }

    /// Record `volumes` of `pool` as hangar's (before they are made).
    pub(super) fn record<'a>(
        &self,
        pool: &str,
        volumes: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut set = self.load()?;
        let before = set.len();
        set.extend(volumes.into_iter().map(|v| key(pool, v)));
        if set.len() == before {
            return Ok(());
        }
        self.store(&set)
    }

    /// `volumes` of `pool` are gone.
    pub(super) fn forget<'a>(
        &self,
        pool: &str,
        volumes: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut set = self.load()?;
        let before = set.len();
        for v in volumes {
            set.remove(&key(pool, v));
        }
        if set.len() != before {
            self.store(&set)?;
        }
        Ok(())
    }
}

impl Inner {
    fn record_error(&self, e: String) -> ProviderError {
        self.err(ErrorKind::Refused, e)
    }

    /// Whether hangar made `volume` of this host's pool.
    pub(super) fn made_here(&self, volume: &str) -> Result<bool, ProviderError> {
        self.made
            .contains(&self.config.storage_pool, volume)
            .map_err(|e| self.record_error(e))
    }

    /// The volumes of this host's pool that hangar made.
    pub(super) fn made_in_pool(&self) -> Result<BTreeSet<String>, ProviderError> {
        self.made
            .in_pool(&self.config.storage_pool)
            .map_err(|e| self.record_error(e))
    }

    /// Record `volumes` as hangar's before making them.
    pub(super) fn record_made<'a>(
        &self,
        volumes: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ProviderError> {
        self.made
            .record(&self.config.storage_pool, volumes)
            .map_err(|e| self.record_error(e))
    }

    pub(super) fn forget_made<'a>(
        &self,
        volumes: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ProviderError> {
        self.made
            .forget(&self.config.storage_pool, volumes)
            .map_err(|e| self.record_error(e))
    }

    /// The refusal for a volume that is named like ours but is not.
    pub(super) fn not_made_here(&self, volume: &str) -> ProviderError {
        self.err(
            ErrorKind::Refused,
            format!(
                "volume {volume} exists but hangar did not make it (no domain of the fleet uses it, and hangar's record of what it made does not name it): left alone"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_records_keep_every_name() {
        let dir = tempfile::tempdir().unwrap();
        let record = MadeVolumes::new(Some(dir.path().join("h.volumes.json")));
        std::thread::scope(|s| {
            for i in 0..16 {
                let record = &record;
                s.spawn(move || {
                    for k in 0..8 {
                        let name = format!("s{i}-v{k}");
                        record.record("p", [name.as_str()]).unwrap();
                    }
                });
            }
        });
        assert_eq!(record.in_pool("p").unwrap().len(), 16 * 8);
        // A VM's volumes forgotten in one write, the others kept.
        let one: Vec<String> = (0..8).map(|k| format!("s3-v{k}")).collect();
        record.forget("p", one.iter().map(String::as_str)).unwrap();
        let left = record.in_pool("p").unwrap();
        assert_eq!(left.len(), 15 * 8);
        assert!(one.iter().all(|n| !left.contains(n)));
    }

    #[test]
    fn the_record_survives_the_process_and_forgets_what_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.volumes.json");
        let a = MadeVolumes::new(Some(path.clone()));
        a.record("p", ["x-cache.qcow2", "x-g1-root.qcow2"]).unwrap();
        let b = MadeVolumes::new(Some(path));
        assert!(b.contains("p", "x-cache.qcow2").unwrap());
        assert!(!b.contains("q", "x-cache.qcow2").unwrap(), "pools apart");
        b.forget("p", ["x-cache.qcow2"]).unwrap();
        assert_eq!(
            a.in_pool("p").unwrap().into_iter().collect::<Vec<_>>(),
            vec!["x-g1-root.qcow2".to_string()]
        );
    }
}
