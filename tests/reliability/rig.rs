//! An in-process engine on private sandbox hosts and the GitHub simulator,
//! under paused tokio time, with hypervisors that fail on demand: before a
//! call (nothing happened) or after it (the object exists but the caller
//! hears a failure: the ambiguous case), queued or at random from a seed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use hangar::fleet::LoadedFleet;
use hangar::plan::model::{Action, ObservedVm};
use hangar::providers::hooked::{Hook, Hooked, HvCall, HvOp, Made};
use hangar::providers::{ErrorKind, Hypervisor, ProviderError, RetryPolicy};
use hangar::reconcile::engine::{Engine, GuestPlay, PassResult};
use hangar::reconcile::TokioClock;
use hangar::sandbox::host::SandboxHost;
use hangar::sim::{SimHandle, SimRunner};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::inspect::{self, NodeView};
use super::wiring;

pub const TOKEN: &str = "reliability-rig-token";
pub const SCOPE: &str = "repos/acme/widgets";
pub const FLEET: &str = "rel";
/// The `every` of the rig's passes.
const PASS_EVERY: Duration = Duration::from_secs(120);

/// A fleet file `rel` on sandbox hosts, registering in `acme/widgets`.
pub fn fleet_yaml(hosts: &[&str], pools: &[String]) -> String {
    wiring::sandbox_fleet(
        FLEET,
        "acme/widgets",
        "    bootTimeout: 5m\n    offlineTimeout: 10m\n    backoffBase: 1m\n    backoffMax: 10m\n",
        hosts,
        &pools.concat(),
    )
}

/// A `pools:` entry labelled `rel`, with a 1 GiB cache.
pub fn pool(name: &str, count: u32, ephemeral: bool, cpus: u32) -> String {
    wiring::sandbox_pool(name, count, ephemeral, "rel", cpus, Some("1GiB"))
}

pub fn slot(pool: &str, i: u32) -> String {
    format!("{FLEET}-{pool}-{i}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Observe,
    Create,
    Start,
    Delete,
    RemoveSeed,
}

/// When an injected failure strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strike {
    /// The call is refused before it reaches libvirt.
    Before(ErrorKind),
    /// The call is carried out, then reported failed (timed out).
    After(ErrorKind),
}

#[derive(Default)]
pub struct HostFaults {
    queued: BTreeMap<Op, VecDeque<Strike>>,
    /// Random strikes: (rng, probability per mutating call).
    random: Option<(StdRng, f64)>,
    pub struck: u64,
}

/// A mutating call the engine made, with its outcome as the engine heard it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub op: Op,
    pub name: String,
    pub generation: u64,
    pub ok: bool,
}

/// Records a sandbox host's mutating calls and fails them on demand.
pub struct Faulty {
    pub calls: Arc<Mutex<Vec<Call>>>,
    pub faults: Arc<Mutex<HostFaults>>,
}

impl Faulty {
    fn strike(&self, op: Op) -> Option<Strike> {
        let mut f = self.faults.lock().unwrap();
        let s = f
            .queued
            .get_mut(&op)
            .and_then(VecDeque::pop_front)
            .or_else(|| {
                let (rng, p) = f.random.as_mut()?;
                if op == Op::Observe {
                    return rng
                        .random_bool(*p / 2.0)
                        .then_some(Strike::Before(ErrorKind::Transient));
                }
                if !rng.random_bool(*p) {
                    return None;
                }
                let kind = if rng.random_bool(0.8) {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Refused
                };
                Some(if rng.random_bool(0.5) {
                    Strike::Before(kind)
                } else {
                    Strike::After(kind)
                })
            });
        if s.is_some() {
            f.struck += 1;
        }
        s
    }
}

impl Hook for Faulty {
    fn around<'a, T: Send + 'a>(
        &'a self,
        host: &'a str,
        call: HvCall<'a>,
        made: Made<'a, T>,
    ) -> Made<'a, T> {
        let op = match call.op() {
            HvOp::Observe => Op::Observe,
            HvOp::Create => Op::Create,
            HvOp::Start => Op::Start,
            HvOp::Delete => Op::Delete,
            HvOp::RemoveSeed => Op::RemoveSeed,
            _ => return made,
        };
        let strike = self.strike(op);
        let err = move |kind| ProviderError::new(host, kind, format!("injected {op:?} failure"));
        if op == Op::Observe {
            return match strike {
                Some(Strike::Before(kind) | Strike::After(kind)) => {
                    Box::pin(async move { Err(err(kind)) })
                }
                None => made,
            };
        }
        let (name, generation) = call.vm().expect("a mutating call names its VM");
        let name = name.to_string();
        Box::pin(async move {
            let result = match strike {
                Some(Strike::Before(kind)) => Err(err(kind)),
                Some(Strike::After(kind)) => {
                    let _ = made.await;
                    Err(err(kind))
                }
                None => made.await,
            };
            self.calls.lock().unwrap().push(Call {
                op,
                name,
                generation,
                ok: result.is_ok(),
            });
            result
        })
    }
}

/// The engine of fleet `rel` on private sandbox hosts and an in-process
/// simulator. Make it inside a (paused) tokio runtime.
pub struct Rig {
    /// Holds the sandbox's node files for the rig's lifetime.
    _dir: tempfile::TempDir,
    pub sim: Arc<SimHandle>,
    pub hosts: BTreeMap<String, Arc<SandboxHost>>,
    pub faults: BTreeMap<String, Arc<Mutex<HostFaults>>>,
    pub calls: Arc<Mutex<Vec<Call>>>,
    pub engine: Engine,
    pub fleet: LoadedFleet,
    guests: Arc<dyn GuestPlay>,
    pub cancel: CancellationToken,
}

impl Rig {
    /// `seed` may define foreign domains and volumes before the engine looks.
    pub async fn with_seed(yaml: &str, seed: impl FnOnce(&wiring::Hosts)) -> Rig {
        let sandbox = wiring::sandbox(yaml, TOKEN, seed).await;
        let (dir, fleet, hosts, sim) = (sandbox.dir, sandbox.fleet, sandbox.hosts, sandbox.sim);
        let registry = wiring::registry(&sim, "acme", "widgets", TOKEN, None);
        let calls = Arc::new(Mutex::new(Vec::new()));
        let cancel = CancellationToken::new();
        let mut faults = BTreeMap::new();
        let mut world_hosts: BTreeMap<String, Arc<dyn Hypervisor>> = BTreeMap::new();
        for (name, h) in &hosts {
            let f = Arc::new(Mutex::new(HostFaults::default()));
            faults.insert(name.clone(), f.clone());
            let faulty = Arc::new(Hooked::new(
                h.clone(),
                Faulty {
                    calls: calls.clone(),
                    faults: f,
                },
            ));
            let policy = RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_millis(800),
                max_total_wait: Duration::from_secs(10),
            };
            world_hosts.insert(
                name.clone(),
                wiring::retrying(faulty, policy, Some(&cancel)),
            );
        }
        let guests = wiring::sandbox_guests(&sim, SCOPE, &hosts);
        let registry_policy = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            max_total_wait: Duration::from_secs(60),
        };
        let registry = wiring::retrying_registry(registry, registry_policy, Some(&cancel));
        let clock = Arc::new(TokioClock::starting_at(
            Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
        ));
        let engine = Engine {
            guests: Some(guests.clone()),
            ..wiring::engine(&fleet, world_hosts, Arc::new(registry), clock, None)
        };
        Rig {
            _dir: dir,
            sim,
            hosts,
            faults,
            calls,
            engine,
            fleet,
            guests,
            cancel,
        }
    }

    pub async fn new(yaml: &str) -> Rig {
        Rig::with_seed(yaml, |_| {}).await
    }

    pub fn set_fleet(&mut self, yaml: &str) {
        self.fleet = wiring::load(yaml);
        self.engine.provisioner = wiring::provisioner(&self.fleet, None);
    }

    /// Whether the stand-in guests act after each pass.
    pub fn play_guests(&mut self, on: bool) {
        self.engine.guests = on.then(|| self.guests.clone());
    }

    pub fn queue(&self, host: &str, op: Op, strike: Strike) {
        self.faults[host]
            .lock()
            .unwrap()
            .queued
            .entry(op)
            .or_default()
            .push_back(strike);
    }

    pub fn random_faults(&self, seed: u64, p: Option<f64>) {
        for (i, f) in self.faults.values().enumerate() {
            f.lock().unwrap().random =
                p.map(|p| (StdRng::seed_from_u64(seed.wrapping_add(i as u64)), p));
        }
    }

    pub fn struck(&self) -> u64 {
        self.faults.values().map(|f| f.lock().unwrap().struck).sum()
    }

    pub async fn pass(&self) -> PassResult {
        wiring::pass(&self.engine, &self.fleet, false, &self.cancel, PASS_EVERY).await
    }

    pub async fn diff(&self) -> PassResult {
        wiring::pass(&self.engine, &self.fleet, true, &self.cancel, PASS_EVERY).await
    }

    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    pub fn host(&self, name: &str) -> &Arc<SandboxHost> {
        &self.hosts[name]
    }

    pub fn view(&self, host: &str) -> NodeView {
        let conn = self.host(host).libvirt().connection().unwrap();
        inspect::view(&conn, "default")
    }

    pub fn runners(&self) -> Vec<SimRunner> {
        inspect::runners(&self.sim.world(), SCOPE)
    }

    pub fn runner(&self, name: &str) -> Option<SimRunner> {
        self.sim.runner_by_name(SCOPE, name)
    }

    /// Slots of the current file.
    pub fn slots(&self) -> BTreeSet<String> {
        self.fleet
            .fleet
            .spec
            .pools
            .iter()
            .flat_map(|p| (0..p.count).map(move |i| slot(&p.name, i)))
            .collect()
    }

    /// The converged-world invariants over every host.
    pub fn assert_converged(&self, what: &str) {
        let views: Vec<NodeView> = self.hosts.keys().map(|h| self.view(h)).collect();
        let refs: Vec<&NodeView> = views.iter().collect();
        inspect::assert_converged(what, FLEET, &refs, &self.runners(), &self.slots());
    }

    /// Write a line to a VM generation's console log, as its guest would.
    pub fn console(&self, host: &str, slot: &str, generation: u64, line: &str) {
        use std::io::Write;
        let path = self.host(host).libvirt().console_log_path(slot, generation);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }

    /// Our VM of `slot` on `host`, as observed.
    pub async fn vm(&self, host: &str, slot: &str) -> Option<ObservedVm> {
        self.host(host)
            .observe(FLEET)
            .await
            .unwrap()
            .into_iter()
            .find(|v| v.name == slot)
    }
}

/// Destructive actions of a plan.
pub fn destructive(r: &PassResult) -> Vec<&Action> {
    r.plan
        .actions
        .iter()
        .filter(|a| a.is_destructive())
        .collect()
}
