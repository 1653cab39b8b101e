//! The one way the tests and the bench wire an in-process engine, as
//! `assemble` wires one: hosts behind a hook and the retry wrapper, the
//! GitHub provider on the simulator, the provisioner of the fleet file,
//! sandbox hosts and their stand-in guests, and the fleet files they run.
//! The engine rig (`tests/support`), the reliability rig
//! (`tests/reliability/rig.rs`, `libvirtd.rs`) and `benches/fleet.rs` build
//! theirs from these parts; each adds only what it measures or injects.
//! Included with `#[path = "support/wiring.rs"] mod wiring;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hangar::assemble::FleetProvisioner;
use hangar::fleet::{self, LoadedFleet};
use hangar::providers::github::{Auth, GithubConfig, GithubRegistry, Scope};
use hangar::providers::{Hypervisor, RetryPolicy, Retrying, RunnerRegistry};
use hangar::reconcile::engine::{Engine, GuestPlay, PassResult};
use hangar::reconcile::event::Ignore;
use hangar::reconcile::{Clock, Limits, World};
use hangar::runner_dist::RunnerSupply;
use hangar::sandbox::guest::SandboxGuests;
use hangar::sandbox::host::SandboxHost;
use hangar::secret::Secret;
use hangar::sim::{self, RegisterRunner, SimConfig, SimError, SimHandle, SimRunner, SimStats};
use tokio_util::sync::CancellationToken;

/// A fleet file `name` registering in `repository` on the simulator, on
/// the sandbox hosts `hosts`, with `policy` lines (indented by four
/// spaces, may be empty) and the `pools:` entries `pools`.
pub fn sandbox_fleet(
    name: &str,
    repository: &str,
    policy: &str,
    hosts: &[&str],
    pools: &str,
) -> String {
    let mut y = format!(
        "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: {name}\nspec:\n  github:\n    \
         repository: {repository}\n    simulator: true\n"
    );
    if !policy.is_empty() {
        y.push_str("  policy:\n");
        y.push_str(policy);
    }
    y.push_str("  hosts:\n");
    for h in hosts {
        y.push_str(&format!("    - name: {h}\n      uri: sandbox\n"));
    }
    y.push_str("  pools:\n");
    y.push_str(pools);
    y
}

/// A `pools:` entry of `count` VMs of `cpus` cpus, 512 MiB and a 4 GiB
/// disk from `base.qcow2`, labelled `label`, with a cache of `cache` (a
/// size such as `2GiB`) or none.
pub fn sandbox_pool(
    name: &str,
    count: u32,
    ephemeral: bool,
    label: &str,
    cpus: u32,
    cache: Option<&str>,
) -> String {
    let mut p = format!(
        "    - name: {name}\n      count: {count}\n      ephemeral: {ephemeral}\n      \
         labels: [{label}]\n      vm:\n        cpus: {cpus}\n        memory: 512MiB\n        \
         disk: 4GiB\n        image: base.qcow2\n"
    );
    if let Some(size) = cache {
        p.push_str(&format!("      cache:\n        size: {size}\n"));
    }
    p
}

/// The fleet file `yaml`, or the test fails saying why.
pub fn load(yaml: &str) -> LoadedFleet {
    fleet::load_str("fleet.yaml", yaml).unwrap_or_else(|e| panic!("fleet does not load: {e}"))
}

/// The GitHub provider of repository `owner/repo` on the simulator,
/// authenticated with `token`. Tests under paused time pass no `timeout`:
/// an idle runtime jumps to the next timer, which would be a request
/// timeout while the simulator answers.
pub fn registry(
    sim: &SimHandle,
    owner: &str,
    repo: &str,
    token: &str,
    timeout: Option<Duration>,
) -> GithubRegistry {
    GithubRegistry::new(GithubConfig {
        scope: Scope::Repository {
            owner: owner.into(),
            repo: repo.into(),
        },
        api_url: sim.base_url.clone(),
        auth: Auth::Token(Secret::new(token.to_string())),
        timeout,
    })
    .unwrap_or_else(|e| panic!("github registry: {e}"))
}

/// The GitHub provider of organization `org` on the simulator, as
/// [`registry`] makes a repository's.
pub fn org_registry(
    sim: &SimHandle,
    org: &str,
    token: &str,
    timeout: Option<Duration>,
) -> GithubRegistry {
    GithubRegistry::new(GithubConfig {
        scope: Scope::Organization { org: org.into() },
        api_url: sim.base_url.clone(),
        auth: Auth::Token(Secret::new(token.to_string())),
        timeout,
    })
    .unwrap_or_else(|e| panic!("github registry: {e}"))
}

/// `host` under the retry wrapper, its retries ended by `stop` when given.
pub fn retrying(
    host: Arc<dyn Hypervisor>,
    policy: RetryPolicy,
    stop: Option<&CancellationToken>,
) -> Arc<dyn Hypervisor> {
    let retrying = Retrying::<dyn Hypervisor>::new(host, policy);
    Arc::new(match stop {
        Some(stop) => retrying.stopped_by(stop.clone()),
        None => retrying,
    })
}

/// `registry` under the retry wrapper, its retries ended by `stop` when given.
pub fn retrying_registry(
    registry: GithubRegistry,
    policy: RetryPolicy,
    stop: Option<&CancellationToken>,
) -> Retrying<GithubRegistry> {
    let retrying = Retrying::new(registry, policy);
    match stop {
        Some(stop) => retrying.stopped_by(stop.clone()),
        None => retrying,
    }
}

/// The engine of `fleet` on `hosts` and `registry`, its provisioner the
/// fleet file's (runner releases from `runners`, or the guests fetch their
/// own): default limits, no stand-in guests, a 500 ms poll, no services.
pub fn engine(
    fleet: &LoadedFleet,
    hosts: BTreeMap<String, Arc<dyn Hypervisor>>,
    registry: Arc<dyn RunnerRegistry>,
    clock: Arc<dyn Clock>,
    runners: Option<Arc<RunnerSupply>>,
) -> Engine {
    Engine {
        world: World {
            fleet: fleet.name().to_string(),
            hosts,
            registry,
        },
        provisioner: provisioner(fleet, runners),
        clock,
        limits: Limits::default(),
        guests: None,
        poll: Duration::from_millis(500),
        services: Vec::new(),
    }
}

/// The provisioner of `fleet` (after a reload, the engine's new one).
pub fn provisioner(
    fleet: &LoadedFleet,
    runners: Option<Arc<RunnerSupply>>,
) -> Arc<FleetProvisioner> {
    Arc::new(FleetProvisioner::new(fleet.fleet.clone(), runners))
}

/// One pass of `engine` over `fleet` (`dry_run`: observe and plan only),
/// or the test fails saying why.
pub async fn pass(
    engine: &Engine,
    fleet: &LoadedFleet,
    dry_run: bool,
    stop: &CancellationToken,
    every: Duration,
) -> PassResult {
    let what = if dry_run { "dry run" } else { "pass" };
    engine
        .pass(fleet, dry_run, stop, &Ignore, every)
        .await
        .unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

/// The sandbox hosts of a fleet file and a simulator: what an in-process
/// engine runs on.
pub struct Sandbox {
    /// Holds the hosts' node files (and a rig's state) while it lives.
    pub dir: tempfile::TempDir,
    pub fleet: LoadedFleet,
    pub hosts: Hosts,
    pub sim: Arc<SimHandle>,
}

/// Sandbox hosts by name.
pub type Hosts = BTreeMap<String, Arc<SandboxHost>>;

/// The fleet file `yaml` on fresh sandbox hosts, which `seed` may change
/// (define foreign domains and volumes) before anything looks at them, and
/// a simulator that accepts `token`.
pub async fn sandbox(yaml: &str, token: &str, seed: impl FnOnce(&Hosts)) -> Sandbox {
    let fleet = load(yaml);
    let dir = tempfile::tempdir().unwrap();
    let hosts = sandbox_hosts(dir.path(), &fleet);
    seed(&hosts);
    let sim = Arc::new(sim::start(SimConfig::new(token)).await.unwrap());
    Sandbox {
        dir,
        fleet,
        hosts,
        sim,
    }
}

/// A sandbox host (libvirt's test driver, its node file in `dir`) for each
/// host of `fleet`.
pub fn sandbox_hosts(dir: &Path, fleet: &LoadedFleet) -> Hosts {
    fleet
        .fleet
        .spec
        .hosts
        .iter()
        .map(|h| {
            let host = SandboxHost::open(dir, &h.name, &h.storage_pool)
                .unwrap_or_else(|e| panic!("sandbox host {}: {e}", h.name));
            (h.name.clone(), Arc::new(host))
        })
        .collect()
}

/// Defines volume `name` (`format`, `mib` MiB) in `pool` of `host` behind
/// hangar's back, as someone else would.
pub fn foreign_volume(host: &SandboxHost, pool: &str, name: &str, format: &str, mib: u64) {
    let conn = host.libvirt().connection().unwrap();
    let pool = conn.lookup_storage_pool_by_name(pool).unwrap();
    virt::storage_vol::StorageVol::create_xml(
        &pool,
        &format!(
            "<volume><name>{name}</name><capacity unit='M'>{mib}</capacity>\
             <target><format type='{format}'/></target></volume>"
        ),
        0,
    )
    .unwrap_or_else(|e| panic!("foreign volume {name}: {e}"));
}

/// The stand-in guests of `hosts`, registering their runners in `scope`.
pub fn sandbox_guests(sim: &Arc<SimHandle>, scope: &str, hosts: &Hosts) -> Arc<dyn GuestPlay> {
    Arc::new(SandboxGuests {
        sim: sim.clone(),
        scope: scope.to_string(),
        hosts: hosts.values().cloned().collect(),
    })
}

/// Every runner registered in `scope`.
pub fn runners(sim: &SimHandle, scope: &str) -> Vec<SimRunner> {
    let key = sim::scope_key(scope).expect("scope");
    sim.world()
        .scope(&key)
        .map(|s| s.runners.values().cloned().collect())
        .unwrap_or_default()
}

/// GitHub API requests that can change something (anything but a GET).
pub fn github_writes(stats: &SimStats) -> u64 {
    stats
        .by_route
        .iter()
        .filter(|(route, _)| !route.starts_with("GET "))
        .map(|(_, n)| n)
        .sum()
}

/// Registers runner `name` in `scope` as a persistent `config.sh` would
/// (`replace`: `--replace`); it is offline until set online. The test
/// fails when no registration token is to be had.
pub fn register(
    sim: &SimHandle,
    scope: &str,
    name: &str,
    labels: Vec<String>,
    replace: bool,
) -> Result<SimRunner, SimError> {
    let token = sim
        .registration_token(scope)
        .unwrap_or_else(|e| panic!("registration token of {scope}: {e:?}"));
    sim.register_runner(&RegisterRunner {
        scope: scope.into(),
        name: name.into(),
        labels,
        token,
        group: None,
        replace,
        ephemeral: false,
        no_default_labels: false,
    })
}
