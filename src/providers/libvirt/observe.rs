//! Observation: the listing joined with each domain's ownership, read once
//! per UUID and cached (ownership never changes under a UUID: a new
//! generation is a new domain), and the guest's progress from its console.

use std::collections::HashSet;
use std::time::Instant;

use virt::connect::Connect;
use virt::domain::Domain;

use super::errors::optional;
use super::listing::list_domains;
use super::{xml, Inner};
use crate::model::guest::GuestStage;
use crate::model::names::{cache_volume_name, root_volume_name, seed_volume_name};
use crate::model::ownership::Ownership;
use crate::plan::model::{DrainState, ForeignUse, ObservedVm, VmRef, VmState};
use crate::providers::{ErrorKind, ProviderError};

/// What the ownership cache knows of a domain UUID (kept for the next
/// process too, see `snapshot`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum Known {
    Foreign {
        /// Pool volumes its disks use (none of them is a leftover).
        volumes: Vec<String>,
        /// What it takes from the host while it runs (its `<memory>` and
        /// `<vcpu>`).
        memory_bytes: u64,
        vcpus: u32,
    },
    Ours {
        owner: Box<Ownership>,
        seed_attached: bool,
        drain: Option<DrainState>,
        volumes: Vec<String>,
    },
}

impl Known {
    pub(super) fn volumes(&self) -> &[String] {
        match self {
            Known::Foreign { volumes, .. } | Known::Ours { volumes, .. } => volumes,
        }
    }
}

impl Inner {
    fn cached_known(&self, uuid: &str) -> Option<Known> {
        self.known
            .lock()
            .expect("ownership cache lock")
            .get(uuid)
            .cloned()
    }

    /// Ownership and seed state of a domain, from its XML. `Ok(None)`: the
    /// domain vanished meanwhile.
    pub(super) fn read_known(
        &self,
        dom: &Domain,
        name: &str,
    ) -> Result<Option<Known>, ProviderError> {
        // The persistent definition, not the live one: a seed's removal
        // detaches it from the definition at once, while the live detach
        // waits on a guest that may never acknowledge it (one that has not
        // booted, or is powering off).
        let Some(text) = optional(self.call(&format!("read domain {name}"), || {
            dom.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE)
        }))?
        else {
            return Ok(None);
        };
        let facts = xml::parse_domain(&text)
            .map_err(|e| self.err(ErrorKind::Refused, format!("domain {name}: {e}")))?;
        if let Some(owner) = &facts.owner {
            self.record_referenced(owner, &facts.volumes)?;
        }
        let volumes = facts.volumes.into_iter().map(|(_, v)| v).collect();
        Ok(Some(match facts.owner {
            Some(owner) => Known::Ours {
                owner: Box::new(owner),
                seed_attached: facts.seed_attached,
                drain: facts.drain,
                volumes,
            },
            None => Known::Foreign {
                volumes,
                memory_bytes: facts.memory_bytes,
                vcpus: facts.vcpus,
            },
        }))
    }

    /// Our domain's own volumes that it references are ours: recorded,
    /// so that they stay adoptable once the domain is gone (a fleet made
    /// before hangar kept a record gets one this way).
    fn record_referenced(
        &self,
        owner: &Ownership,
        volumes: &[(String, String)],
    ) -> Result<(), ProviderError> {
        let own = [
            root_volume_name(&owner.slot, owner.generation),
            seed_volume_name(&owner.slot, owner.generation),
            cache_volume_name(&owner.slot),
        ];
        self.record_made(
            volumes
                .iter()
                .filter(|(p, v)| *p == self.config.storage_pool && own.contains(v))
                .map(|(_, v)| v.as_str()),
        )
    }

    pub(super) fn observe(&self, fleet: &str) -> Result<Vec<ObservedVm>, ProviderError> {
        let conn = self.conn()?;
        let listed = self.call("list domains", || list_domains(&conn))?;
        {
            let mut known = self.known.lock().expect("ownership cache lock");
            // A set: a scan of the listing per cached UUID was quadratic.
            let live: HashSet<&str> = listed.iter().map(|d| d.uuid.as_str()).collect();
            let before = known.len();
            known.retain(|uuid, _| live.contains(uuid.as_str()));
            if known.len() != before {
                self.snapshot_touched();
            }
            self.consoles
                .lock()
                .expect("console lock")
                .retain(|uuid, _| live.contains(uuid.as_str()));
            self.agent_stages
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|uuid, _| live.contains(uuid.as_str()));
        }
        let mut out = Vec::new();
        let mut foreign = Vec::new();
        // What running domains that are not this fleet's take from the host.
        let mut foreign_use = ForeignUse::default();
        // Volumes some domain uses, and whether every domain's are known:
        // only then can a volume be called a leftover.
        let mut used: HashSet<String> = HashSet::new();
        let mut all_known = true;
        for d in listed {
            let known = match self.cached_known(&d.uuid) {
                Some(k) => k,
                None => match self.read_known(&d.dom, &d.name) {
                    Ok(Some(k)) => {
                        self.known
                            .lock()
                            .expect("ownership cache lock")
                            .insert(d.uuid.clone(), k.clone());
                        self.snapshot_touched();
                        k
                    }
                    Ok(None) => continue,
                    // A domain with a broken hangar element is neither
                    // adopted nor fatal for the host: report, skip, retry
                    // next pass. `create` refuses its name.
                    Err(e) if e.kind == ErrorKind::Refused => {
                        tracing::warn!(host = %self.config.name, error = %e, "skipping domain");
                        foreign.push(d.name);
                        all_known = false;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            used.extend(known.volumes().iter().cloned());
            let runs = matches!(d.state, VmState::Running | VmState::Paused);
            if let (
                true,
                Known::Foreign {
                    memory_bytes,
                    vcpus,
                    ..
                },
            ) = (runs, &known)
            {
                foreign_use.add(*memory_bytes, *vcpus);
            }
            let Known::Ours {
                owner,
                seed_attached,
                drain,
                ..
            } = known
            else {
                foreign.push(d.name);
                continue;
            };
            if owner.fleet != fleet {
                if runs {
                    foreign_use.add(owner.shape.memory_bytes, owner.shape.cpus);
                }
                foreign.push(d.name);
                continue;
            }
            if owner.slot != d.name {
                // hangar names a domain after its slot: this one is a copy
                // (or a rename) whose metadata names another slot. Not
                // ours to act on; the planner waits on the name it holds.
                tracing::warn!(host = %self.config.name, domain = %d.name, slot = %owner.slot,
                    "domain carries another slot's ownership (a copy?): left alone");
                foreign.push(d.name);
                continue;
            }
            let guest = match self.local {
                true => self.guest_stage(&d.uuid, &owner),
                false => self.agent_stage(&d.dom, &d.uuid, &d.name, d.state),
            };
            out.push(ObservedVm {
                name: d.name,
                uuid: d.uuid,
                host: self.config.name.clone(),
                state: d.state,
                owner: *owner,
                guest,
                guest_since: None,
                seed_attached,
                drain,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        foreign.sort();
        *self.foreign.lock().expect("foreign names lock") = foreign;
        let mut state = self.observe_host(&conn, fleet, &out, all_known.then_some(&used))?;
        state.foreign = foreign_use;
        *self.host_state.lock().expect("host state lock") = state;
        self.save_snapshot();
        tracing::debug!(host = %self.config.name, vms = out.len(),
            libvirt_calls = self.calls.load(std::sync::atomic::Ordering::Relaxed),
            "host observed (libvirt calls since connect)");
        Ok(out)
    }

    pub(super) fn guest_stage(&self, uuid: &str, owner: &Ownership) -> Option<GuestStage> {
        if !self.local {
            return None;
        }
        let path = self.console_log_path(&owner.slot, owner.generation);
        let mut consoles = self.consoles.lock().expect("console lock");
        let cursor = consoles.entry(uuid.to_string()).or_default();
        match cursor.read(&path) {
            Ok(stage) => Some(stage),
            Err(e) => {
                tracing::warn!(host = %self.config.name, path = %path.display(), error = %e,
                    "cannot read console log");
                None
            }
        }
    }

    /// The guest's progress on a host whose console log is not on this
    /// machine, from its markers file through the guest agent: on every
    /// observation while the guest is on its way (until its runner started),
    /// then at most once per [`super::agent::STAGE_REFRESH`] (for its jobs
    /// and a failure). `None` until the agent has answered once (no agent
    /// yet, or none in this VM); after that, the last stage read.
    fn agent_stage(
        &self,
        dom: &Domain,
        uuid: &str,
        name: &str,
        state: VmState,
    ) -> Option<GuestStage> {
        let cached = self
            .agent_stages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(uuid)
            .copied();
        let settled = cached.is_some_and(|(at, c)| {
            c.stage >= GuestStage::RunnerStarted && at.elapsed() < super::agent::STAGE_REFRESH
        });
        if settled || state != VmState::Running {
            return cached.map(|(_, c)| c.stage);
        }
        let mut cursor = cached.map(|(_, c)| c).unwrap_or_default();
        match self.read_markers(dom, name, cursor.offset) {
            Ok(bytes) => {
                cursor.feed(&bytes);
                self.agent_stages
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(uuid.to_string(), (Instant::now(), cursor));
                Some(cursor.stage)
            }
            Err(e) => {
                tracing::debug!(host = %self.config.name, domain = %name, error = ?e,
                    "guest agent did not tell the guest's stage");
                cached.map(|(_, c)| c.stage)
            }
        }
    }

    /// Our domain for `vm`, checked against its ownership. `Ok(None)`: gone.
    pub(super) fn our_domain(
        &self,
        conn: &Connect,
        vm: &VmRef,
    ) -> Result<Option<(Domain, Ownership)>, ProviderError> {
        let Some(dom) = optional(self.call(&format!("look up domain {}", vm.name), || {
            conn.lookup_domain_by_uuid_string(&vm.uuid)
        }))?
        else {
            return Ok(None);
        };
        // Read afresh, not from the cache: every caller is about to change
        // the domain, and a domain redefined under the same UUID (what
        // `virsh edit` does) may no longer be ours.
        let Some(known) = self.read_known(&dom, &vm.name)? else {
            return Ok(None);
        };
        self.known
            .lock()
            .expect("ownership cache lock")
            .insert(vm.uuid.clone(), known.clone());
        self.snapshot_touched();
        match known {
            Known::Ours { owner, .. } if owner.slot == vm.name => Ok(Some((dom, *owner))),
            _ => Err(self.err(
                ErrorKind::Refused,
                format!(
                    "domain {} ({}) is not hangar's: left alone",
                    vm.name, vm.uuid
                ),
            )),
        }
    }
}
