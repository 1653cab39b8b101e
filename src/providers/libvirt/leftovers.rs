//! What an observation reports besides the fleet's VMs: whether the
//! fleet's isolated network is on the host, and leftovers (root and seed
//! volumes no domain uses, console logs of domains that are gone), and the
//! actions that change them. Both are cached so that a steady-state pass
//! stays at one libvirt round trip per host: the network's presence until
//! our own ensure or removal (or a failed create), the pool's volume names
//! until our own change of the pool or [`VOLUMES_MAX_AGE`].

use std::collections::HashSet;
use std::time::{Duration, Instant};

use virt::connect::Connect;

use super::isolation::{self, addresses::host_addresses};
use super::{Inner, LibvirtHost};
use crate::model::names::parse_slot_name;
use crate::model::runner::parse_runner_volume;
use crate::plan::model::{Leftover, NetworkSeen, ObservedHost, ObservedVm};
use crate::providers::{ErrorKind, ProviderError};

/// How long the pool's volume names may be reused when nothing of ours
/// changed the pool (another process may have).
pub(super) const VOLUMES_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// The pool's volume names that are a generation's root or seed, as last
/// listed.
#[derive(Debug, Clone)]
pub(super) struct ListedVolumes {
    pub(super) names: Vec<String>,
    pub(super) at: Instant,
}

/// `<slot>-g<N>-root.qcow2` or `<slot>-g<N>-seed.iso` → (slot, N).
fn generation_volume(name: &str) -> Option<(&str, u64)> {
    let stem = name
        .strip_suffix("-root.qcow2")
        .or_else(|| name.strip_suffix("-seed.iso"))?;
    let (slot, generation) = stem.rsplit_once("-g")?;
    Some((slot, generation.parse().ok()?))
}

/// `<slot>-cache.qcow2` → slot.
fn cache_volume(name: &str) -> Option<&str> {
    name.strip_suffix("-cache.qcow2")
}

/// Some fleet's runner volume (`<fleet>-runner-<version>-<arch>.tar.gz`).
fn is_runner_volume(name: &str) -> bool {
    name.split_once("-runner-")
        .is_some_and(|(fleet, _)| parse_runner_volume(fleet, name).is_some())
}

/// `<slot>-g<N>.console.log` → (slot, N).
fn console_log(name: &str) -> Option<(&str, u64)> {
    let (slot, generation) = name.strip_suffix(".console.log")?.rsplit_once("-g")?;
    Some((slot, generation.parse().ok()?))
}

impl Inner {
    /// The host's state for `fleet` after listing `ours`; `used` is every
    /// volume a domain uses, `None` when some domain's could not be read
    /// (then no volume is called a leftover).
    pub(super) fn observe_host(
        &self,
        conn: &Connect,
        fleet: &str,
        ours: &[ObservedVm],
        used: Option<&HashSet<String>>,
    ) -> Result<ObservedHost, ProviderError> {
        let mut state = ObservedHost::default();
        if let Some(net) = &self.isolation {
            let cached = *self.network_present.lock().expect("network cache lock");
            let present = match cached {
                Some(p) => p,
                None => {
                    let present = self.network_defined(conn, net)?;
                    self.snapshot_touched();
                    *self.network_present.lock().expect("network cache lock") = Some(present);
                    present
                }
            };
            state.network = Some(NetworkSeen {
                network: net.network.clone(),
                filter: net.filter.clone(),
                present,
            });
        }
        let alive: HashSet<(&str, u64)> = ours
            .iter()
            .map(|vm| (vm.name.as_str(), vm.owner.generation))
            .collect();
        if let Some(used) = used {
            // Only what hangar made is a leftover: a name is not ownership.
            let made = self.made_in_pool()?;
            for name in self.generation_volumes(conn)? {
                if parse_runner_volume(fleet, &name).is_some() {
                    if !used.contains(&name) && made.contains(&name) {
                        state
                            .leftovers
                            .push(Leftover::RunnerVolume { name: name.clone() });
                    }
                    state.runner_volumes.push(name);
                    continue;
                }
                if let Some(slot) = cache_volume(&name) {
                    if parse_slot_name(fleet, slot).is_some()
                        && !used.contains(&name)
                        && made.contains(&name)
                    {
                        state.leftovers.push(Leftover::Cache {
                            slot: slot.to_string(),
                            name,
                        });
                    }
                    continue;
                }
                let Some((slot, generation)) = generation_volume(&name) else {
                    continue;
                };
                if parse_slot_name(fleet, slot).is_none()
                    || used.contains(&name)
                    || !made.contains(&name)
                {
                    continue;
                }
                state.leftovers.push(Leftover::Volume {
                    slot: slot.to_string(),
                    generation,
                    name,
                });
            }
        }
        if self.local {
            // A directory listing, not a libvirt call.
            let dir = self.console_dir();
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let Ok(name) = e.file_name().into_string() else {
                        continue;
                    };
                    let Some((slot, generation)) = console_log(&name) else {
                        continue;
                    };
                    if parse_slot_name(fleet, slot).is_none() || alive.contains(&(slot, generation))
                    {
                        continue;
                    }
                    state.leftovers.push(Leftover::ConsoleLog {
                        slot: slot.to_string(),
                        generation,
                        name,
                    });
                }
            }
        }
        state.leftovers.sort();
        Ok(state)
    }

    /// Both the network and the filter exist and carry hangar's UUIDs.
    fn network_defined(
        &self,
        conn: &Connect,
        net: &crate::model::IsolatedNetwork,
    ) -> Result<bool, ProviderError> {
        let network = super::errors::optional(
            self.call(&format!("look up network {}", net.network), || {
                conn.lookup_network_by_name(&net.network)
            }),
        )?;
        let filter = super::errors::optional(
            self.call(&format!("look up nwfilter {}", net.filter), || {
                conn.lookup_nwfilter_by_name(&net.filter)
            }),
        )?;
        Ok(network
            .and_then(|n| n.uuid_string().ok())
            .is_some_and(|u| u == net.network_uuid())
            && filter
                .and_then(|f| f.uuid_string().ok())
                .is_some_and(|u| u == net.filter_uuid()))
    }

    /// The pool's root, seed, cache and runner volume names, listed again only after our
    /// own change of the pool or when the last listing is old.
    fn generation_volumes(&self, conn: &Connect) -> Result<Vec<String>, ProviderError> {
        if let Some(l) = self.volumes.lock().expect("volume cache lock").as_ref() {
            if l.at.elapsed() < VOLUMES_MAX_AGE {
                return Ok(l.names.clone());
            }
        }
        let pool = self.pool(conn)?;
        let names: Vec<String> = self
            .call("list volumes", || pool.list_volumes())?
            .into_iter()
            .filter(|n| {
                generation_volume(n).is_some() || cache_volume(n).is_some() || is_runner_volume(n)
            })
            .collect();
        *self.volumes.lock().expect("volume cache lock") = Some(ListedVolumes {
            names: names.clone(),
            at: Instant::now(),
        });
        self.snapshot_touched();
        Ok(names)
    }

    pub(super) fn forget_volumes(&self) {
        *self.volumes.lock().expect("volume cache lock") = None;
    }

    fn console_dir(&self) -> std::path::PathBuf {
        self.console_log_path("x", 0)
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
    }

    pub(super) fn remove_leftover(&self, leftover: &Leftover) -> Result<(), ProviderError> {
        match leftover {
            // Volumes hangar made, checked again by name, record and shape:
            // a generation's qcow2 overlay or raw seed no domain uses, a
            // runner volume (raw) no VM uses, a cache (plain qcow2) whose
            // VM was never defined. Anything else is not ours.
            Leftover::Volume { name, .. }
            | Leftover::RunnerVolume { name }
            | Leftover::Cache { name, .. } => {
                let (format, backed, what) = match leftover {
                    Leftover::Volume { .. } if name.ends_with("-root.qcow2") => {
                        ("qcow2", true, "leftover volume")
                    }
                    Leftover::Volume { .. } => ("raw", false, "leftover volume"),
                    Leftover::RunnerVolume { .. } => ("raw", false, "runner volume no VM uses"),
                    _ => ("qcow2", false, "cache volume no domain uses"),
                };
                self.pool_changed();
                let conn = self.conn()?;
                let pool = self.pool(&conn)?;
                let Some(vol) = self.lookup_volume(&pool, name)? else {
                    return self.forget_made([name.as_str()]);
                };
                if !self.made_here(name)? {
                    return Err(self.not_made_here(name));
                }
                let facts = self.volume_facts(&vol, name)?;
                if facts.format.as_deref() != Some(format) || facts.backing_path.is_some() != backed
                {
                    return Err(self.err(
                        ErrorKind::Refused,
                        format!("volume {name} does not look like hangar's: left alone"),
                    ));
                }
                tracing::info!(host = %self.config.name, volume = %name, "removing a {what}");
                self.delete_volume(&pool, name)
            }
            Leftover::ConsoleLog { name, .. } => {
                let path = self.console_dir().join(name);
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(self.err(
                        ErrorKind::Refused,
                        format!("console log {}: {e}", path.display()),
                    )),
                }
            }
        }
    }

    fn isolation_named(
        &self,
        network: &str,
        filter: &str,
    ) -> Result<&crate::model::IsolatedNetwork, ProviderError> {
        self.isolation
            .as_ref()
            .filter(|n| n.network == network && n.filter == filter)
            .ok_or_else(|| {
                self.err(
                    ErrorKind::Refused,
                    format!("network {network} with filter {filter} is not this host's isolated network"),
                )
            })
    }

    fn network_error(&self, e: isolation::NetworkError) -> ProviderError {
        let kind = e.kind();
        if kind == ErrorKind::Transient {
            self.drop_connection();
        }
        self.err(kind, e.to_string())
    }

    pub(super) fn ensure_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        let net = self.isolation_named(network, filter)?;
        let conn = self.conn()?;
        let addresses = host_addresses(&self.config.uri);
        let mut calls = 0;
        let result = isolation::ensure_filter(&conn, net, &addresses, &mut calls)
            .and_then(|_| isolation::ensure_network(&conn, net, &mut calls));
        self.count_calls(calls);
        result.map_err(|e| self.network_error(e))?;
        *self.network_present.lock().expect("network cache lock") = Some(true);
        Ok(())
    }

    pub(super) fn remove_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        let net = self.isolation_named(network, filter)?;
        let conn = self.conn()?;
        // Look-ups, stop, undefine: counted as the calls they are at most.
        self.count_calls(6);
        isolation::remove(&conn, net).map_err(|e| self.network_error(e))?;
        *self.network_present.lock().expect("network cache lock") = Some(false);
        Ok(())
    }

    /// After a failed create: the network may be gone under us.
    pub(super) fn forget_network(&self) {
        *self.network_present.lock().expect("network cache lock") = None;
        self.snapshot_touched();
    }
}

impl LibvirtHost {
    pub(super) fn last_host_state(&self) -> ObservedHost {
        self.inner
            .host_state
            .lock()
            .expect("host state lock")
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names_are_read_back() {
        assert_eq!(generation_volume("t-p-0-g3-root.qcow2"), Some(("t-p-0", 3)));
        assert_eq!(generation_volume("t-p-0-g12-seed.iso"), Some(("t-p-0", 12)));
        assert_eq!(generation_volume("t-p-0-cache.qcow2"), None);
        assert_eq!(generation_volume("base.qcow2"), None);
        assert_eq!(console_log("t-p-0-g2.console.log"), Some(("t-p-0", 2)));
        assert_eq!(console_log("t-p-0-g2.log"), None);
        assert_eq!(cache_volume("t-p-0-cache.qcow2"), Some("t-p-0"));
        assert_eq!(cache_volume("t-p-0-g1-root.qcow2"), None);
    }
}
