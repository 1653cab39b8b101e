//! `status`: one row per slot (desired or found) and per host, joined from
//! the desired state and one observation. [`StatusView::new`] is pure;
//! [`status`] gathers its inputs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::engine::Engine;
use super::Snapshot;
use crate::fleet::LoadedFleet;
use crate::model::guest::GuestStage;
use crate::model::host::HostFacts;
use crate::plan::model::{
    Desired, Failure, Observation, ObservedRunner, ObservedVm, PoolRunner, PoolScale, RunnerStatus,
    VmState,
};
use crate::providers::{CacheUsage, RateBudget};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotRow {
    pub pool: String,
    pub slot: String,
    pub host: String,
    /// In the file (else found in the world only: about to be removed).
    pub desired: bool,
    pub vm: Option<VmState>,
    pub generation: Option<u64>,
    pub guest: Option<GuestStage>,
    pub runner: Option<RunnerStatus>,
    pub busy: bool,
    /// The guest is played by the sandbox.
    pub simulated: bool,
    pub age_seconds: Option<i64>,
    /// The VM's spec hash equals its slot's.
    pub in_sync: Option<bool>,
    /// The runner release the VM installed, where known: the release hangar
    /// supplies its pool, for a VM made to the slot's present spec.
    pub runner_version: Option<String>,
    pub cache_used_bytes: Option<u64>,
    pub cache_size_bytes: Option<u64>,
    /// The root and cache file systems as the guest sees them (its agent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_disks: Option<crate::providers::libvirt::GuestDisks>,
    /// The VM's addresses as its guest agent tells them (IPv4 first; not
    /// loopback, not link-local), refreshed at most every 5 minutes
    /// (sooner while it has none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<std::net::IpAddr>,
    /// A drain was asked of the runner (see `Action::Drain`).
    pub draining: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRow {
    pub host: String,
    pub facts: Option<HostFacts>,
    pub error: Option<Failure>,
    pub vms: usize,
    pub cpus_used: u32,
    pub memory_used_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub fleet: String,
    pub slots: Vec<SlotRow>,
    pub hosts: Vec<HostRow>,
    pub github_scope: String,
    pub github_error: Option<Failure>,
    pub rate_limit: Option<RateBudget>,
    /// Parts of the world that could not be observed.
    pub unobserved: usize,
    /// Each pool's runner release, as resolved for this observation.
    pub runners: Vec<PoolRunner>,
    /// Each pool that follows the queue: what the queue asked of it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scale: Vec<PoolScale>,
}

/// What `status` needs besides the snapshot.
pub struct StatusInputs<'a> {
    pub fleet: &'a str,
    /// `None` when the file could not be resolved against the hosts.
    pub desired: Option<&'a Desired>,
    pub snapshot: &'a Snapshot,
    pub cache: &'a BTreeMap<String, CacheUsage>,
    pub simulated: &'a BTreeSet<String>,
    pub github_scope: String,
    pub rate_limit: Option<RateBudget>,
}

impl StatusView {
    pub fn new(i: StatusInputs<'_>) -> StatusView {
        let snap = i.snapshot;
        let now = snap.taken_at;
        let vms: Vec<&ObservedVm> = snap
            .observed
            .hosts
            .values()
            .filter_map(|o| o.seen())
            .flatten()
            .collect();
        let runners: Vec<&ObservedRunner> = snap
            .observed
            .runners
            .seen()
            .map(|r| r.iter().filter(|r| r.is_owned_by(i.fleet)).collect())
            .unwrap_or_default();

        let mut names: Vec<(String, String, bool)> = i
            .desired
            .map(|d| {
                d.slots
                    .iter()
                    .map(|s| (s.pool.clone(), s.name.clone(), true))
                    .collect()
            })
            .unwrap_or_default();
        let mut known: HashSet<String> = names.iter().map(|n| n.1.clone()).collect();
        for vm in &vms {
            if known.insert(vm.name.clone()) {
                names.push((vm.owner.pool.clone(), vm.name.clone(), false));
            }
        }
        for r in &runners {
            if known.insert(r.name.clone()) {
                names.push(("?".into(), r.name.clone(), false));
            }
        }
        names.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));

        let mut newest: HashMap<&str, &ObservedVm> = HashMap::new();
        for vm in &vms {
            let e = newest.entry(vm.name.as_str()).or_insert(vm);
            if vm.owner.generation > e.owner.generation {
                *e = vm;
            }
        }
        let by_name: HashMap<&str, &ObservedRunner> =
            runners.iter().map(|r| (r.name.as_str(), *r)).collect();
        let slots = names
            .into_iter()
            .map(|(pool, slot, is_desired)| {
                let want = i.desired.and_then(|d| d.slot(&slot));
                let vm = newest.get(slot.as_str()).copied();
                let runner = by_name.get(slot.as_str()).copied();
                let cache = i.cache.get(&slot);
                SlotRow {
                    pool,
                    host: vm
                        .map(|v| v.host.clone())
                        .or_else(|| want.map(|w| w.host.clone()))
                        .unwrap_or_default(),
                    desired: is_desired,
                    vm: vm.map(|v| v.state),
                    generation: vm.map(|v| v.owner.generation),
                    guest: vm.and_then(|v| v.guest),
                    runner: runner.map(|r| r.status),
                    busy: runner.is_some_and(|r| r.busy),
                    simulated: vm.is_some_and(|v| i.simulated.contains(&v.host)),
                    age_seconds: vm.map(|v| (now - v.owner.created_at).num_seconds()),
                    in_sync: match (vm, want) {
                        (Some(v), Some(w)) => Some(v.owner.spec_hash == w.spec_hash),
                        _ => None,
                    },
                    runner_version: match (vm, want) {
                        (Some(v), Some(w)) if v.owner.spec_hash == w.spec_hash => {
                            w.runner.as_ref().map(|r| r.local.tarball.version.clone())
                        }
                        _ => None,
                    },
                    cache_used_bytes: cache.and_then(|c| c.allocated_bytes),
                    cache_size_bytes: cache.and_then(|c| c.capacity_bytes),
                    guest_disks: cache.and_then(|c| c.guest.clone()),
                    addresses: cache.map(|c| c.addresses.clone()).unwrap_or_default(),
                    draining: vm.is_some_and(|v| {
                        v.drain == Some(crate::plan::model::DrainState::Delivered)
                    }),
                    slot,
                }
            })
            .collect();

        let hosts = snap
            .facts
            .iter()
            .map(|(host, f)| {
                let on_host: Vec<&&ObservedVm> = vms.iter().filter(|v| &v.host == host).collect();
                HostRow {
                    host: host.clone(),
                    facts: f.as_ref().ok().cloned().map(|mut f| {
                        if let Some(state) = snap.observed.host_state.get(host) {
                            f.foreign = state.foreign;
                        }
                        f
                    }),
                    error: f.as_ref().err().cloned(),
                    vms: on_host.len(),
                    cpus_used: on_host.iter().map(|v| v.owner.shape.cpus).sum(),
                    memory_used_bytes: on_host.iter().map(|v| v.owner.shape.memory_bytes).sum(),
                }
            })
            .collect();

        StatusView {
            fleet: i.fleet.to_string(),
            slots,
            hosts,
            github_scope: i.github_scope,
            github_error: match &snap.observed.runners {
                Observation::Failed { error } => Some(error.clone()),
                Observation::Seen { .. } => None,
            },
            rate_limit: i.rate_limit,
            unobserved: snap.failures().len(),
            runners: i.desired.map(|d| d.runners.clone()).unwrap_or_default(),
            scale: i.desired.map(|d| d.scale.clone()).unwrap_or_default(),
        }
    }
}

/// Observe the world once and join it with the file.
pub async fn status(engine: &Engine, fleet: &LoadedFleet) -> StatusView {
    let (snapshot, desired) = engine.desired(fleet).await;
    status_of(engine, fleet.name(), desired.ok().as_ref(), &snapshot).await
}

/// Join an observation already made (a pass's) with the file; asks the
/// hosts only for their cache volumes' use.
pub async fn status_of(
    engine: &Engine,
    name: &str,
    desired: Option<&Desired>,
    snapshot: &Snapshot,
) -> StatusView {
    let mut cache = BTreeMap::new();
    for hv in engine.world.hosts.values() {
        if let Ok(usage) = hv.cache_usage(name).await {
            for u in usage {
                cache.insert(u.slot.clone(), u);
            }
        }
    }
    let simulated = engine
        .world
        .hosts
        .iter()
        .filter(|(_, h)| h.simulated())
        .map(|(n, _)| n.clone())
        .collect();
    StatusView::new(StatusInputs {
        fleet: name,
        desired,
        snapshot,
        cache: &cache,
        simulated: &simulated,
        github_scope: engine.world.registry.scope(),
        rate_limit: engine.world.registry.rate_budget(),
    })
}
