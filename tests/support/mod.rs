//! Shared helpers of the engine and CLI tests: an in-process [`Engine`] on
//! private sandbox hosts (libvirt's test driver, one node file per host in a
//! temp dir) and the GitHub simulator, with a [`TokioClock`] so that
//! `tokio::time::pause()` / `advance()` move the engine's time.
//!
//! Every hypervisor is wrapped in a [`Recorder`] hook that logs the mutating
//! calls the engine makes, so a test can say "this pass changed nothing" from
//! what was asked of libvirt, besides what libvirt holds afterwards.

#![allow(dead_code)]

pub mod wiring;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use hangar::fleet::LoadedFleet;
use hangar::plan::model::{Action, ObservedVm};
use hangar::providers::hooked::{Hook, Hooked, HvCall as Call, Made};
use hangar::providers::{Hypervisor, RetryPolicy, RunnerRegistry};
use hangar::reconcile::daemon::Assembler;
use hangar::reconcile::engine::{Engine, GuestPlay, PassResult};
use hangar::reconcile::memory::{OfflineMemory, Remembering};
use hangar::reconcile::{Clock, TokioClock};
use hangar::runner_dist::RunnerSupply;
use hangar::sandbox::host::SandboxHost;
use hangar::sim::{SimHandle, SimRunner};
use tokio_util::sync::CancellationToken;

pub mod ports;
pub mod scale;

pub const TOKEN: &str = "engine-test-token";
pub const OWNER: &str = "acme";
pub const REPO: &str = "widgets";
pub const SCOPE: &str = "repos/acme/widgets";
pub const FLEET: &str = "t";

/// A fleet file `t` on the sandbox hosts `hosts`, registering in
/// `acme/widgets`, with short timeouts, and the given `pools:` entries
/// (YAML list items indented by four spaces).
pub fn fleet_yaml(hosts: &[&str], pools: &str) -> String {
    wiring::sandbox_fleet(
        FLEET,
        &format!("{OWNER}/{REPO}"),
        "    bootTimeout: 5m\n    backoffBase: 1m\n    backoffMax: 10m\n",
        hosts,
        pools,
    )
}

/// A `pools:` entry labelled `test`, with a 2 GiB cache when `cache`.
pub fn pool(name: &str, count: u32, ephemeral: bool, cpus: u32, cache: bool) -> String {
    wiring::sandbox_pool(
        name,
        count,
        ephemeral,
        "test",
        cpus,
        cache.then_some("2GiB"),
    )
}

pub use wiring::load;

/// A mutating hypervisor call, as the engine made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HvCall {
    Create {
        name: String,
        generation: u64,
    },
    Start {
        name: String,
    },
    Delete {
        name: String,
        generation: u64,
        remove_cache: bool,
    },
    RemoveSeed {
        name: String,
    },
}

impl HvCall {
    /// The VM the call was about.
    pub fn name(&self) -> &str {
        match self {
            HvCall::Create { name, .. }
            | HvCall::Start { name }
            | HvCall::Delete { name, .. }
            | HvCall::RemoveSeed { name } => name,
        }
    }
}

/// Logs every mutating call of a sandbox host before it is made.
pub struct Recorder {
    pub log: Arc<Mutex<Vec<HvCall>>>,
}

impl Hook for Recorder {
    fn around<'a, T: Send + 'a>(
        &'a self,
        _host: &'a str,
        call: Call<'a>,
        made: Made<'a, T>,
    ) -> Made<'a, T> {
        let recorded = match call {
            Call::Create(vm) => Some(HvCall::Create {
                name: vm.owner.slot.clone(),
                generation: vm.owner.generation,
            }),
            Call::Start(vm) => Some(HvCall::Start {
                name: vm.name.clone(),
            }),
            Call::Delete { vm, remove_cache } => Some(HvCall::Delete {
                name: vm.name.clone(),
                generation: vm.generation,
                remove_cache,
            }),
            Call::RemoveSeed(vm) => Some(HvCall::RemoveSeed {
                name: vm.name.clone(),
            }),
            _ => None,
        };
        self.log.lock().unwrap().extend(recorded);
        made
    }
}

/// One domain as libvirt holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub active: bool,
    /// Inactive XML, secure parts included: byte-for-byte comparable.
    pub xml: String,
}

/// The organization of an organization fleet (its runners register there);
/// any other fleet's registers in `acme/widgets`.
fn org_of(fleet: &LoadedFleet) -> Option<String> {
    match fleet.fleet.spec.github.scope() {
        Some(hangar::fleet::Scope::Organization { org }) => Some(org),
        _ => None,
    }
}

/// The engine of fleet `t` on private sandbox hosts and an in-process
/// simulator. Must be made inside a tokio runtime (paused or not).
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub sim: Arc<SimHandle>,
    pub hosts: BTreeMap<String, Arc<SandboxHost>>,
    pub log: Arc<Mutex<Vec<HvCall>>>,
    pub engine: Engine,
    pub fleet: LoadedFleet,
    /// The sandbox's stand-in guests; the engine plays them after each pass
    /// while `engine.guests` is set.
    pub guests: Arc<dyn GuestPlay>,
    pub cancel: CancellationToken,
    /// Builds engines on the same hosts, simulator and clock (the daemon's
    /// reloads).
    pub wiring: RigWiring,
}

/// What every engine of one rig shares: hosts, simulator, clock, call log.
#[derive(Clone)]
pub struct RigWiring {
    pub state_dir: std::path::PathBuf,
    pub sim: Arc<SimHandle>,
    pub hosts: BTreeMap<String, Arc<SandboxHost>>,
    pub log: Arc<Mutex<Vec<HvCall>>>,
    pub clock: Arc<dyn Clock>,
    pub guests: Arc<dyn GuestPlay>,
    /// The stop signal: ends the providers' retries.
    pub cancel: CancellationToken,
    /// Runner releases from the simulator and tarballs in the state dir, as
    /// `assemble` supplies them; `None`: guests get the runner themselves.
    pub runners: Option<Arc<RunnerSupply>>,
}

/// The `every` of the rig's passes (the daemon's period).
const PASS_EVERY: Duration = Duration::from_secs(120);

/// Backoff short enough for tests; paused time runs it at once anyway.
pub const FAST_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    base_delay: Duration::from_millis(100),
    max_delay: Duration::from_millis(400),
    max_total_wait: Duration::from_secs(5),
};

impl RigWiring {
    /// An engine for `fleet`, wired as `assemble` wires one.
    pub fn build(&self, fleet: &LoadedFleet) -> Engine {
        let registry = match org_of(fleet) {
            Some(org) => wiring::org_registry(&self.sim, &org, TOKEN, None),
            None => wiring::registry(&self.sim, OWNER, REPO, TOKEN, None),
        }
        .with_pools(&fleet.fleet);
        // As `assemble` does: retries ended by the stop signal, offline times
        // remembered in the state dir.
        let registry: Arc<dyn RunnerRegistry> = Arc::new(Remembering {
            inner: wiring::retrying_registry(registry, RetryPolicy::GITHUB, Some(&self.cancel)),
            memory: OfflineMemory::new(&self.state_dir, fleet.name()),
            clock: self.clock.clone(),
        });
        let hosts = self
            .hosts
            .iter()
            .map(|(name, h)| {
                let recorded = Arc::new(Hooked::new(
                    h.clone(),
                    Recorder {
                        log: self.log.clone(),
                    },
                ));
                let host = wiring::retrying(recorded, FAST_RETRY, Some(&self.cancel));
                (name.clone(), host)
            })
            .collect();
        Engine {
            guests: Some(self.guests.clone()),
            ..wiring::engine(
                fleet,
                hosts,
                registry,
                self.clock.clone(),
                self.runners.clone(),
            )
        }
    }
}

#[async_trait]
impl Assembler for RigWiring {
    async fn engine(
        &self,
        fleet: &LoadedFleet,
    ) -> Result<Engine, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.build(fleet))
    }
}

impl Rig {
    /// A rig for `yaml`, with the stand-in guests playing their part.
    pub async fn new(yaml: &str) -> Rig {
        Rig::with_seed(yaml, |_| {}).await
    }

    /// Like [`Rig::new`], but `seed` may change the hosts (define foreign
    /// domains and volumes) before the engine first looks at them.
    pub async fn with_seed(yaml: &str, seed: impl FnOnce(&wiring::Hosts)) -> Rig {
        let sandbox = wiring::sandbox(yaml, TOKEN, seed).await;
        let (dir, fleet, hosts, sim) = (sandbox.dir, sandbox.fleet, sandbox.hosts, sandbox.sim);
        // Starts at the wall clock: the GitHub provider stamps `offline_since`
        // with the wall clock, not the engine's, so an origin far from it
        // would make a runner that just went offline look long gone.
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(Utc::now()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let scope = org_of(&fleet).map_or(SCOPE.to_string(), |org| format!("orgs/{org}"));
        let guests = wiring::sandbox_guests(&sim, &scope, &hosts);
        let cancel = CancellationToken::new();
        let wiring = RigWiring {
            state_dir: dir.path().to_path_buf(),
            sim: sim.clone(),
            hosts: hosts.clone(),
            log: log.clone(),
            clock,
            guests: guests.clone(),
            cancel: cancel.clone(),
            runners: None,
        };
        let engine = wiring.build(&fleet);
        Rig {
            dir,
            sim,
            hosts,
            log,
            engine,
            fleet,
            guests,
            cancel,
            wiring,
        }
    }

    /// Use another version of the fleet file from now on (as the daemon
    /// does when the file changes).
    pub fn set_fleet(&mut self, yaml: &str) {
        self.fleet = load(yaml);
        self.engine.provisioner = wiring::provisioner(&self.fleet, self.wiring.runners.clone());
    }

    /// From now on, resolve each pool's runner release from the simulator
    /// and hand its tarball to the VMs on a runner volume, as `assemble`
    /// does.
    pub fn supply_runners(&mut self) {
        let supply = RunnerSupply::new(&self.sim.base_url, self.dir.path(), None)
            .expect("a runner supply on the simulator");
        self.wiring.runners = Some(Arc::new(supply));
        self.engine.provisioner = wiring::provisioner(&self.fleet, self.wiring.runners.clone());
    }

    /// Whether the stand-in guests act after each pass.
    pub fn play_guests(&mut self, on: bool) {
        self.engine.guests = on.then(|| self.guests.clone());
    }

    /// One full pass.
    pub async fn pass(&self) -> PassResult {
        wiring::pass(&self.engine, &self.fleet, false, &self.cancel, PASS_EVERY).await
    }

    /// A dry run: observe and plan only.
    pub async fn diff(&self) -> PassResult {
        wiring::pass(&self.engine, &self.fleet, true, &self.cancel, PASS_EVERY).await
    }

    /// Passes (a second apart) until one is converged; panics after `max`.
    pub async fn converge(&self, max: usize) -> Vec<PassResult> {
        let mut passes = Vec::new();
        for _ in 0..max {
            let r = self.pass().await;
            let done = r.converged();
            passes.push(r);
            if done {
                return passes;
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let last = passes.last().expect("max > 0");
        panic!(
            "not converged after {max} passes; last plan: {:#?}; report: {:#?}",
            last.plan.actions, last.report
        );
    }

    /// The mutating hypervisor calls since the last `take_calls`.
    pub fn take_calls(&self) -> Vec<HvCall> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    pub fn host(&self, name: &str) -> &Arc<SandboxHost> {
        self.hosts
            .get(name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// libvirt calls made by every host so far.
    pub fn libvirt_calls(&self) -> u64 {
        self.hosts
            .values()
            .map(|h| h.libvirt().libvirt_calls())
            .sum()
    }

    /// GitHub API requests that can change something (not GET).
    pub fn github_writes(&self) -> u64 {
        wiring::github_writes(&self.sim.stats())
    }

    /// Every domain on `host`, by name.
    pub fn domains(&self, host: &str) -> BTreeMap<String, Domain> {
        let conn = self.host(host).libvirt().connection().unwrap();
        conn.list_all_domains(0)
            .unwrap()
            .into_iter()
            .map(|d| {
                (
                    d.name().unwrap(),
                    Domain {
                        active: d.is_active().unwrap(),
                        xml: d
                            .xml_desc(
                                virt::sys::VIR_DOMAIN_XML_INACTIVE
                                    | virt::sys::VIR_DOMAIN_XML_SECURE,
                            )
                            .unwrap(),
                    },
                )
            })
            .collect()
    }

    /// Every volume of `host`'s pool, name → XML.
    pub fn volumes(&self, host: &str) -> BTreeMap<String, String> {
        let conn = self.host(host).libvirt().connection().unwrap();
        let h = self
            .fleet
            .host(host)
            .unwrap_or_else(|| panic!("no host {host} in the file"));
        let pool = conn.lookup_storage_pool_by_name(&h.storage_pool).unwrap();
        pool.list_all_volumes(0)
            .unwrap()
            .into_iter()
            .map(|v| (v.name().unwrap(), v.xml_desc(0).unwrap()))
            .collect()
    }

    /// Our VMs on `host` as the provider sees them, by name.
    pub async fn vms(&self, host: &str) -> BTreeMap<String, ObservedVm> {
        self.host(host)
            .observe(FLEET)
            .await
            .unwrap()
            .into_iter()
            .map(|vm| (vm.name.clone(), vm))
            .collect()
    }

    /// Everything in libvirt (all hosts) and in the simulator's scope, for
    /// "nothing changed" comparisons.
    pub fn world(&self) -> String {
        let mut out = String::new();
        for host in self.hosts.keys() {
            for (name, d) in self.domains(host) {
                out.push_str(&format!(
                    "{host} domain {name} active={}\n{}\n",
                    d.active, d.xml
                ));
            }
            for (name, xml) in self.volumes(host) {
                out.push_str(&format!("{host} volume {name}\n{xml}\n"));
            }
        }
        for r in self.runners() {
            out.push_str(&format!("runner {}\n", serde_json::to_string(&r).unwrap()));
        }
        out
    }

    /// Every runner registered in the fleet's scope.
    pub fn runners(&self) -> Vec<SimRunner> {
        wiring::runners(&self.sim, SCOPE)
    }

    pub fn runner(&self, name: &str) -> Option<SimRunner> {
        self.sim.runner_by_name(SCOPE, name)
    }

    pub fn runner_id(&self, name: &str) -> u64 {
        self.runner(name)
            .unwrap_or_else(|| panic!("no runner {name}"))
            .id
    }
}

/// Slot name of `pool`'s `index` in fleet `t`.
pub fn slot(pool: &str, index: u32) -> String {
    format!("{FLEET}-{pool}-{index}")
}

/// The plan's actions about `subject`.
pub fn actions_for<'a>(r: &'a PassResult, subject: &str) -> Vec<&'a Action> {
    r.plan
        .actions
        .iter()
        .filter(|a| a.subject() == subject)
        .collect()
}

impl Rig {
    /// Register a runner as a persistent `config.sh` would; it is offline
    /// until set online.
    pub fn register(&self, name: &str, labels: &[&str]) -> u64 {
        let labels = labels.iter().map(|l| l.to_string()).collect();
        wiring::register(&self.sim, SCOPE, name, labels, false)
            .unwrap()
            .id
    }
}

/// The fleet file as the daemon reads it each pass, editable by the test.
pub struct EditableFile(Mutex<String>);

impl EditableFile {
    pub fn new(yaml: &str) -> Self {
        EditableFile(Mutex::new(yaml.to_string()))
    }

    pub fn set(&self, yaml: &str) {
        *self.0.lock().unwrap() = yaml.to_string();
    }
}

impl hangar::reconcile::daemon::FleetSource for EditableFile {
    fn describe(&self) -> String {
        "fleet.yaml".into()
    }

    fn load(&self) -> Result<LoadedFleet, hangar::fleet::FleetError> {
        hangar::fleet::load_str("fleet.yaml", &self.0.lock().unwrap())
    }
}
