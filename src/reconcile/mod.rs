//! The engine: one pass (observe every host and the GitHub scope at once,
//! resolve, plan, execute with bounded concurrency and safe ordering) and
//! the loops built on it: [`converge`] (`apply`), [`daemon`] (`reconcile`),
//! [`destroy`], and the [`status`] view. They report through one
//! [`Event`](event::Event) stream and end in one [`Error`] type. Time, the
//! stop signal and the fleet file's reader are passed in, so that all of it
//! runs in-process under paused time in tests. What to do is decided by the
//! pure planner alone; how soon to look again by the [`policy`].

pub mod converge;
pub mod daemon;
pub mod destroy;
pub mod engine;
pub mod error;
pub mod event;
pub mod execute;
pub mod lock;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod progress;
pub mod status;
pub mod under_way;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde::Serialize;

use crate::plan::model::{DesiredSlot, Failure, Observation, Observed, ObservedHost};

use crate::model::host::HostFacts;
use crate::model::ownership::Ownership;
pub use crate::model::RunnerCredential;
use crate::providers::{Hypervisor, ProviderError, RunnerRegistry, VmCreate};

pub use crate::providers::retry::STOP_GRACE;
pub use error::Error;
pub use event::{Event, Events};
pub use execute::{execute, ActionOutcome, Limits, Outcome, Report};

/// Where time comes from. Production reads the system clock; tests drive a
/// clock tied to tokio's (pausable) time so that no test sleeps for real.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that starts at `origin` and advances with `tokio::time`, so that
/// `tokio::time::pause()` / `advance()` move it.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(origin: DateTime<Utc>) -> Self {
        TokioClock {
            origin,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.start;
        self.origin + chrono::Duration::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)
    }
}

/// A slot the file cannot make a VM of (a bad spec: retrying will not help).
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("slot {slot}: its {what} is not in the fleet file")]
    NotInFile { slot: String, what: &'static str },
    #[error("pool {pool}: runner settings are inconsistent")]
    RunnerSettings { pool: String },
}

/// What a slot's VM installs its runner from, as the provisioner knows it
/// after [`Provisioner::prepare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotRunner {
    /// Nothing hangar supplies: the runner is preinstalled in the image, or
    /// the guest downloads its pinned release.
    Guest,
    /// The verified tarball on the fleet's read-only volume. `latest`: the
    /// release `runner.version: latest` named, which becomes part of the
    /// slot's spec hash (a new release, new VMs).
    Volume {
        volume: crate::plan::model::RunnerVolume,
        latest: bool,
    },
    /// Not at hand this pass: no VM of the slot is made or replaced.
    Unavailable(Failure),
}

/// Turns a slot and its credential into everything libvirt needs for one VM
/// generation (domain settings and the seed's user-data).
#[async_trait]
pub trait Provisioner: Send + Sync {
    fn vm_create(
        &self,
        slot: &DesiredSlot,
        owner: Ownership,
        credential: &RunnerCredential,
    ) -> Result<VmCreate, ProvisionError>;

    /// Resolve and fetch what the VMs need from outside the file, before a
    /// pass plans: each pool's runner release. Nothing by default.
    async fn prepare(&self, now: DateTime<Utc>) -> Vec<crate::plan::model::PoolRunner> {
        let _ = now;
        Vec::new()
    }

    /// Where `slot`'s VM gets its runner from, as of the last `prepare`.
    fn runner(&self, slot: &DesiredSlot) -> SlotRunner {
        let _ = slot;
        SlotRunner::Guest
    }
}

/// The outside world of one fleet, as the engine sees it.
#[derive(Clone)]
pub struct World {
    pub fleet: String,
    pub hosts: BTreeMap<String, Arc<dyn Hypervisor>>,
    pub registry: Arc<dyn RunnerRegistry>,
}

/// One observation of the whole world, taken concurrently.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub observed: Observed,
    #[serde(serialize_with = "serialize_facts")]
    pub facts: BTreeMap<String, Result<HostFacts, Failure>>,
    pub taken_at: DateTime<Utc>,
}

fn serialize_facts<S: serde::Serializer>(
    facts: &BTreeMap<String, Result<HostFacts, Failure>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(facts.len()))?;
    for (host, f) in facts {
        match f {
            Ok(f) => map.serialize_entry(host, f)?,
            Err(e) => map.serialize_entry(host, &serde_json::json!({ "error": e }))?,
        }
    }
    map.end()
}

impl Snapshot {
    /// Facts of the hosts whose facts could be read.
    /// Each host's facts, with what its foreign domains hold (from the
    /// pass's observation) filled in.
    pub fn known_facts(&self) -> BTreeMap<String, HostFacts> {
        self.facts
            .iter()
            .filter_map(|(h, f)| {
                let mut f = f.as_ref().ok()?.clone();
                if let Some(state) = self.observed.host_state.get(h) {
                    f.foreign = state.foreign;
                }
                Some((h.clone(), f))
            })
            .collect()
    }

    /// Slot name → host it lives on now (newest generation wins), so that
    /// resolution keeps every slot on its host.
    pub fn placement(&self) -> BTreeMap<String, String> {
        let mut newest: BTreeMap<String, (u64, String)> = BTreeMap::new();
        for obs in self.observed.hosts.values() {
            for vm in obs.seen().into_iter().flatten() {
                let e = newest
                    .entry(vm.owner.slot.clone())
                    .or_insert((vm.owner.generation, vm.host.clone()));
                if vm.owner.generation > e.0 {
                    *e = (vm.owner.generation, vm.host.clone());
                }
            }
        }
        newest.into_iter().map(|(s, (_, h))| (s, h)).collect()
    }

    /// What could not be observed: (what, why). Nothing destructive is
    /// planned there.
    pub fn failures(&self) -> Vec<(String, &Failure)> {
        let mut out = Vec::new();
        for (host, obs) in &self.observed.hosts {
            if let Observation::Failed { error } = obs {
                out.push((format!("host {host}"), error));
            }
        }
        if let Observation::Failed { error } = &self.observed.runners {
            out.push(("GitHub runners".to_string(), error));
        }
        out
    }
}

impl World {
    /// Observe all hosts (facts and VMs) and the GitHub scope at once.
    pub async fn observe(&self, clock: &dyn Clock) -> Snapshot {
        let fleet = self.fleet.as_str();
        let hosts = join_all(self.hosts.iter().map(|(name, hv)| async move {
            let (facts, vms) = tokio::join!(hv.facts(), hv.observe(fleet));
            let (foreign, state): (std::collections::BTreeSet<String>, _) = match &vms {
                Ok(_) => (
                    hv.foreign_names().into_iter().collect(),
                    Some(hv.host_state()),
                ),
                Err(_) => Default::default(),
            };
            (name.clone(), facts, vms, foreign, state)
        }));
        let (hosts, runners) = tokio::join!(hosts, self.registry.observe());

        let mut observed_hosts = BTreeMap::new();
        let mut facts = BTreeMap::new();
        let mut foreign_names = BTreeMap::new();
        let mut host_state = BTreeMap::new();
        for (name, f, vms, foreign, state) in hosts {
            if !foreign.is_empty() {
                foreign_names.insert(name.clone(), foreign);
            }
            if let Some(state) = state.filter(|s| *s != ObservedHost::default()) {
                host_state.insert(name.clone(), state);
            }
            // Without facts the slots cannot be sized: treat the host as
            // unseen, so that nothing on it is judged against a wrong size.
            let vms = match (&f, vms) {
                (Err(e), Ok(_)) => Err(ProviderError::new(
                    &name,
                    e.kind,
                    format!("host facts: {}", e.message),
                )),
                (_, vms) => vms,
            };
            facts.insert(name.clone(), f.map_err(Failure::from));
            observed_hosts.insert(name, observation(vms));
        }
        Snapshot {
            observed: Observed {
                hosts: observed_hosts,
                runners: observation(runners),
                foreign_names,
                host_state,
            },
            facts,
            taken_at: clock.now(),
        }
    }
}

fn observation<T>(r: Result<T, ProviderError>) -> Observation<T> {
    match r {
        Ok(items) => Observation::Seen { items },
        Err(e) => Observation::Failed { error: e.into() },
    }
}
