//! What a host's observation keeps between passes, kept between processes
//! too, so that `reconcile --once` from cron, `diff` and `status` pay what
//! the daemon pays for a steady pass: the listing, one round trip.
//!
//! The file (`<state dir>/<fleet>.<host>.observed.json`) holds the
//! ownership of every domain by UUID, the node's cpus and memory, the
//! pool's free space and volume names with when they were read, and whether
//! the fleet's network is there: nothing secret (no seed, no token).
//!
//! It is only ever what this process's own caches held at a moment when no
//! change of ours was under way on the host, so it is as good as what a
//! daemon trusts between passes, and no better:
//! - the first change of a pass removes the file before it touches libvirt
//!   and it is written again once the host's last change has returned: a
//!   process killed in between leaves no file, and the next one reads
//!   everything afresh;
//! - it is discarded when it cannot be read, was written by another hangar
//!   version, or names another URI, pool or network, or another libvirtd
//!   than the one the connection reached (its identity is read on every
//!   connection);
//! - ages are kept as wall-clock times, and a cached value past its age
//!   (or from the future) is read again;
//! - nothing destructive trusts it: a delete, replace, seed removal or
//!   start reads the domain's ownership again first
//!   ([`Inner::our_domain`]).
//!
//! Written atomically, and only when something in it changed (a steady
//! pass writes nothing).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::facts::{CachedFacts, POOL_FREE_MAX_AGE};
use super::leftovers::{ListedVolumes, VOLUMES_MAX_AGE};
use super::observe::Known;
use super::Inner;
use crate::files::state;
use crate::model::host::HostIdentity;

/// Bumped when the file's shape changes (so is the hangar version).
const FORMAT: u32 = 1;

/// One host's saved observation.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    format: u32,
    hangar: String,
    uri: String,
    storage_pool: String,
    identity: HostIdentity,
    /// The fleet's isolated network and filter, and whether both were there.
    network: Option<(String, String, bool)>,
    node: Option<Node>,
    pool_free: Option<Aged<u64>>,
    volumes: Option<Aged<Vec<String>>>,
    /// Domain UUID → what it is.
    domains: HashMap<String, Known>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    memory_bytes: u64,
    cpus: u32,
}

/// A value and the wall-clock time it was read.
#[derive(Debug, Serialize, Deserialize)]
struct Aged<T> {
    value: T,
    at: DateTime<Utc>,
}

impl<T> Aged<T> {
    fn new(value: T, read: Instant) -> Self {
        let at = Utc::now() - chrono::Duration::from_std(read.elapsed()).unwrap_or_default();
        Aged { value, at }
    }

    /// The value and when it was read on this process's clock, if it is
    /// younger than `max_age` (a time in the future is not trusted).
    fn fresh(self, max_age: Duration) -> Option<(T, Instant)> {
        let age = (Utc::now() - self.at).to_std().ok()?;
        if age >= max_age {
            return None;
        }
        Some((self.value, Instant::now().checked_sub(age)?))
    }
}

/// The file, and whether a change of ours is under way on the host.
#[derive(Debug)]
pub(super) struct Keeper {
    path: Option<PathBuf>,
    /// Changes under way; the file is written again when this drops to 0.
    changing: AtomicUsize,
    /// Something the file holds changed since it was written.
    dirty: AtomicBool,
    /// Orders writes and removals of the file with the start of a change.
    file: Mutex<()>,
}

impl Keeper {
    pub(super) fn new(path: Option<PathBuf>) -> Self {
        Keeper {
            path,
            changing: AtomicUsize::new(0),
            dirty: AtomicBool::new(false),
            file: Mutex::new(()),
        }
    }
}

/// Held while a change of ours runs on the host (see the module doc).
pub(super) struct Changing<'a> {
    inner: &'a Inner,
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        let keeper = &self.inner.snapshot;
        keeper.dirty.store(true, Ordering::Release);
        // A change that panicked (a fault point) leaves no file: the next
        // process reads everything afresh.
        if keeper.changing.fetch_sub(1, Ordering::AcqRel) == 1 && !std::thread::panicking() {
            self.inner.save_snapshot();
        }
    }
}

/// A cache's lock, even if a panic elsewhere poisoned it: what the caches
/// hold is plain data, whole at every moment, and this runs in `Drop`.
fn held<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    /// Something the snapshot holds was read or changed.
    pub(super) fn snapshot_touched(&self) {
        self.snapshot.dirty.store(true, Ordering::Release);
    }

    /// A change of ours begins on the host: until every change under way
    /// has returned there is no file for another process to trust.
    pub(super) fn changing(&self) -> Changing<'_> {
        let keeper = &self.snapshot;
        let _file = held(&keeper.file);
        if keeper.changing.fetch_add(1, Ordering::AcqRel) == 0 {
            if let Some(path) = &keeper.path {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(host = %self.config.name, path = %path.display(), error = %e,
                            "cannot remove the saved observation")
                    }
                }
            }
        }
        Changing { inner: self }
    }

    /// Write what the caches hold, if it changed and no change is under way.
    /// A failure is logged: the next process reads everything afresh.
    pub(super) fn save_snapshot(&self) {
        let keeper = &self.snapshot;
        let Some(path) = &keeper.path else {
            return;
        };
        let _file = held(&keeper.file);
        if keeper.changing.load(Ordering::Acquire) != 0
            || !keeper.dirty.swap(false, Ordering::AcqRel)
        {
            return;
        }
        let saved = self.snapshot_now();
        let written = serde_json::to_vec(&saved)
            .map_err(|e| e.to_string())
            .and_then(|bytes| state::write_atomic(path, &bytes).map_err(|e| e.to_string()));
        if let Err(e) = written {
            keeper.dirty.store(true, Ordering::Release);
            tracing::warn!(host = %self.config.name, error = %e, "cannot save the observation");
        }
    }

    fn snapshot_now(&self) -> Saved {
        let facts = *held(&self.facts);
        let network_present = *held(&self.network_present);
        Saved {
            format: FORMAT,
            hangar: env!("CARGO_PKG_VERSION").to_string(),
            uri: self.config.uri.clone(),
            storage_pool: self.config.storage_pool.clone(),
            identity: held(&self.identity).clone(),
            network: self
                .isolation
                .as_ref()
                .zip(network_present)
                .map(|(n, p)| (n.network.clone(), n.filter.clone(), p)),
            node: facts.map(|f| Node {
                memory_bytes: f.memory_bytes,
                cpus: f.cpus,
            }),
            pool_free: facts
                .and_then(|f| f.pool_free)
                .map(|(v, at)| Aged::new(v, at)),
            volumes: held(&self.volumes)
                .as_ref()
                .map(|l| Aged::new(l.names.clone(), l.at)),
            domains: held(&self.known).clone(),
        }
    }

    /// Fill the caches from the file, if it is one this connection may
    /// trust (see the module doc). Called once, right after connecting.
    pub(super) fn restore_snapshot(&self) {
        let Some(path) = &self.snapshot.path else {
            return;
        };
        let saved = match state::read(path, state::MAX_STATE_BYTES) {
            Ok(Some(bytes)) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(host = %self.config.name, error = %e,
                        "saved observation unreadable: read afresh");
                    return;
                }
            },
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(host = %self.config.name, error = %e,
                    "saved observation unreadable: read afresh");
                return;
            }
        };
        if let Some(why) = self.foreign_snapshot(&saved) {
            tracing::debug!(host = %self.config.name, why, "saved observation not used");
            return;
        }
        if let Some(node) = saved.node {
            *held(&self.facts) = Some(CachedFacts {
                memory_bytes: node.memory_bytes,
                cpus: node.cpus,
                pool_free: saved.pool_free.and_then(|p| p.fresh(POOL_FREE_MAX_AGE)),
            });
        }
        if let Some((names, at)) = saved.volumes.and_then(|v| v.fresh(VOLUMES_MAX_AGE)) {
            *held(&self.volumes) = Some(ListedVolumes { names, at });
        }
        if let Some((_, _, present)) = saved.network {
            *held(&self.network_present) = Some(present);
        }
        *held(&self.known) = saved.domains;
    }

    /// Why `saved` is not this host's as it is now (`None`: it is).
    fn foreign_snapshot(&self, saved: &Saved) -> Option<&'static str> {
        let network = self
            .isolation
            .as_ref()
            .map(|n| (n.network.as_str(), n.filter.as_str()));
        let saved_network = saved
            .network
            .as_ref()
            .map(|(n, f, _)| (n.as_str(), f.as_str()));
        if saved.format != FORMAT || saved.hangar != env!("CARGO_PKG_VERSION") {
            Some("written by another hangar version")
        } else if saved.uri != self.config.uri || saved.storage_pool != self.config.storage_pool {
            Some("written for another URI or storage pool")
        } else if saved.identity != *held(&self.identity) {
            Some("written for another libvirtd")
        } else if saved_network.is_some() && saved_network != network {
            Some("written for another network")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::host::NetworkAttachment;
    use crate::providers::libvirt::test_node::{initial, SandboxShape};
    use crate::providers::libvirt::{HostConfig, LibvirtHost};

    #[test]
    fn the_file_is_gone_while_a_change_is_under_way_and_back_after_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.observed.json");
        // A private node: no other test's domains in it.
        let node = dir.path().join("node.xml");
        let shape = SandboxShape {
            cpus: 4,
            memory_kib: 1 << 20,
        };
        std::fs::write(&node, initial(shape, "p", "/p").unwrap()).unwrap();
        let host = LibvirtHost::connect(HostConfig {
            name: "h".into(),
            uri: format!("test://{}", node.display()),
            storage_pool: "p".into(),
            network: NetworkAttachment::None,
            domain_type: None,
            console_dir: Some(dir.path().join("console")),
            volume_record: None,
            observed: Some(path.clone()),
            image_dirs: Vec::new(),
        })
        .unwrap();
        let inner = &host.inner;
        inner.observe("f").unwrap();
        assert!(path.exists(), "the first observation is kept");
        let first = inner.changing();
        assert!(!path.exists(), "removed when a change begins");
        let second = inner.changing();
        drop(first);
        assert!(!path.exists(), "not while another change is under way");
        drop(second);
        assert!(path.exists(), "written again after the last one");

        // The next connection starts from it: its first observation asks
        // libvirt for the listing alone.
        let again = LibvirtHost::connect(host.config().clone()).unwrap();
        again.inner.observe("f").unwrap();
        assert_eq!(again.libvirt_calls(), 1);
    }

    #[test]
    fn an_age_survives_the_file_and_an_old_or_future_value_does_not() {
        let read = Instant::now() - Duration::from_secs(30);
        let fresh = Aged::new(7u64, read);
        let back: Aged<u64> =
            serde_json::from_str(&serde_json::to_string(&fresh).unwrap()).unwrap();
        let (v, at) = back.fresh(Duration::from_secs(60)).unwrap();
        assert_eq!(v, 7);
        let age = at.elapsed().as_secs_f64();
        assert!((29.0..32.0).contains(&age), "age {age}");
        assert!(Aged::new(7u64, read)
            .fresh(Duration::from_secs(10))
            .is_none());
        let future = Aged {
            value: 7u64,
            at: Utc::now() + chrono::Duration::seconds(60),
        };
        assert!(future.fresh(Duration::from_secs(600)).is_none());
    }
}
