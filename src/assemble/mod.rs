//! The composition root: from a loaded fleet file to an [`Engine`] wired to
//! real providers (libvirt hosts, GitHub) or to the embedded sandbox (the
//! libvirt test driver and the in-process GitHub simulator). Every provider
//! is wrapped once: in [`Retrying`] (backoff, ended by the stop signal) and,
//! for GitHub, in [`Remembering`] (offline times across processes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::fleet::{AuthRef, DomainTypeSpec, Fleet, Host, LoadedFleet, Pool};
use crate::model::credential::RunnerCredential;
use crate::model::host::{DirectBoot, DomainType, HostFacts};
use crate::model::network::IsolatedNetwork;
use crate::model::ownership::Ownership;
use crate::plan::model::RunnerVolume;
use crate::plan::model::{DesiredSlot, Leftover, ObservedHost, ObservedVm, PoolRunner, VmRef};
use crate::providers::github::{self, GithubConfig, GithubRegistry};
use crate::providers::libvirt::{HostConfig, LibvirtHost};
use crate::providers::{
    CacheUsage, ErrorKind, Hypervisor, ProviderError, RetryPolicy, Retrying, RunnerRegistry, Seed,
    VmCreate,
};
use crate::provision;
use crate::reconcile::daemon::Assembler;
use crate::reconcile::engine::{Engine, GuestPlay, Service};
use crate::reconcile::execute::Limits;
use crate::reconcile::memory::{OfflineMemory, Remembering, RememberingStages, StageMemory};
use crate::reconcile::{Clock, ProvisionError, Provisioner, SlotRunner, SystemClock, World};
use crate::runner_dist::RunnerSupply;
use crate::sandbox::guest::{PacedGuests, SandboxGuests};
use crate::sandbox::host::SandboxHost;
use crate::secret::Secret;
use crate::sim::{self, SimConfig, SimHandle};
use runners::PoolRunners;

mod runners;

/// The `uri` that selects the embedded sandbox.
pub const SANDBOX_URI: &str = "sandbox";

/// How often `apply` looks again while guests come up: the sandbox's act
/// at once, real ones take a minute to boot.
const POLL_SANDBOX: Duration = Duration::from_millis(500);
const POLL_REAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// The file names no GitHub scope or credentials (validation keeps
    /// such a file out; a usage error).
    #[error("the file names no GitHub {0}")]
    Incomplete(&'static str),
    #[error("spec.github.auth.tokenEnv: the environment variable {name} is not set or empty")]
    TokenEnv { name: String },
    #[error("{field}: cannot read {path}: {source}")]
    SecretFile {
        field: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: {source}")]
    UnsafeSecretFile {
        field: &'static str,
        #[source]
        source: crate::files::state::StateError,
    },
    /// The sandbox's state or the GitHub client could not be set up.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("state directory {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("github simulator: {0}")]
    Simulator(#[source] std::io::Error),
}

impl AssembleError {
    /// The environment lacks something the file refers to (a token
    /// variable, a key file): nothing was contacted.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            AssembleError::Incomplete(_)
                | AssembleError::TokenEnv { .. }
                | AssembleError::SecretFile { .. }
                | AssembleError::UnsafeSecretFile { .. }
        )
    }
}

/// The in-process simulator, stopped with the engine.
struct SimService(Arc<SimHandle>);

#[async_trait]
impl Service for SimService {
    async fn stop(self: Box<Self>) {
        if let Ok(sim) = Arc::try_unwrap(self.0) {
            if let Err(e) = sim.shutdown().await {
                tracing::warn!(error = %e, "simulator did not stop cleanly");
            }
        }
    }
}

/// Builds engines for the daemon's reloads.
pub struct Assembly {
    pub state_dir: PathBuf,
    pub stop: CancellationToken,
}

#[async_trait]
impl Assembler for Assembly {
    async fn engine(
        &self,
        fleet: &LoadedFleet,
    ) -> Result<Engine, Box<dyn std::error::Error + Send + Sync>> {
        Ok(assemble(fleet, &self.state_dir, &self.stop).await?)
    }
}

/// Build the engine for `fleet`. Hosts that cannot be reached now are still
/// part of it: their observation fails (and the planner leaves them alone)
/// until they answer. `stop` ends the providers' retries.
pub async fn assemble(
    fleet: &LoadedFleet,
    state_dir: &Path,
    stop: &CancellationToken,
) -> Result<Engine, AssembleError> {
    let f = &fleet.fleet;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let retrying = |hv: Arc<dyn Hypervisor>| -> Arc<dyn Hypervisor> {
        let name = hv.host().to_string();
        let retrying: Arc<dyn Hypervisor> = Arc::new(
            Retrying::<dyn Hypervisor>::new(hv, RetryPolicy::LIBVIRT).stopped_by(stop.clone()),
        );
        Arc::new(RememberingStages {
            inner: retrying,
            memory: StageMemory::new(state_dir, &f.metadata.name, &name),
            clock: clock.clone(),
        })
    };
    let mut hosts: BTreeMap<String, Arc<dyn Hypervisor>> = BTreeMap::new();
    let mut sandboxes = Vec::new();
    for host in &f.spec.hosts {
        if host.uri == SANDBOX_URI {
            let sb = Arc::new(SandboxHost::open(
                state_dir,
                &host.name,
                &host.storage_pool,
            )?);
            sandboxes.push(sb.clone());
            hosts.insert(host.name.clone(), retrying(sb));
        } else {
            let lazy = LazyHost::new(
                host_config(host, &f.metadata.name, state_dir),
                host.isolated_network(&f.metadata.name).map(|n| {
                    // Any pool's keys: the filter is the fleet's, one per host.
                    n.with_host_ssh(
                        f.spec
                            .pools
                            .iter()
                            .any(|p| !p.vm.ssh_authorized_keys.is_empty()),
                    )
                }),
            );
            hosts.insert(host.name.clone(), retrying(Arc::new(lazy)));
        }
    }

    let scope = f
        .spec
        .github
        .scope()
        .ok_or(AssembleError::Incomplete("scope"))?;
    let auth = f
        .spec
        .github
        .auth_ref()
        .ok_or(AssembleError::Incomplete("credentials"))?;

    let mut sim_handle = None;
    let (api_url, auth) = match auth {
        AuthRef::Simulator => {
            let token = random_token();
            let mut config = SimConfig::new(token.clone());
            crate::files::state::ensure_dir(state_dir).map_err(|e| AssembleError::StateDir {
                path: state_dir.to_path_buf(),
                source: std::io::Error::other(e),
            })?;
            config.state_file = Some(state_dir.join("github-sim.json"));
            let handle = sim::start(config).await.map_err(AssembleError::Simulator)?;
            let url = handle.base_url.clone();
            sim_handle = Some(Arc::new(handle));
            (url, github::Auth::Token(Secret::new(token)))
        }
        other => (f.spec.github.api_url().to_string(), credentials(other)?),
    };
    let scope_path = scope.api_path();
    // actions/runner's releases, from the same API (the simulator serves
    // them too), and their tarballs kept in the state directory.
    let supply = Arc::new(RunnerSupply::new(
        &api_url,
        state_dir,
        Some(Duration::from_secs(30)),
    )?);
    let saved_pages = state_dir.join(format!("{}.github.json", f.metadata.name));
    let registry = GithubRegistry::new(GithubConfig {
        scope,
        api_url: api_url.clone(),
        auth,
        timeout: Some(Duration::from_secs(30)),
    })?
    .with_pools(f)
    .with_saved_pages(&saved_pages, &api_url);
    let registry: Arc<dyn RunnerRegistry> = Arc::new(Remembering {
        inner: Retrying::new(registry, RetryPolicy::GITHUB).stopped_by(stop.clone()),
        memory: OfflineMemory::new(state_dir, &f.metadata.name),
        clock: clock.clone(),
    });

    let guests: Option<Arc<dyn GuestPlay>> = match (&sim_handle, sandboxes.is_empty()) {
        (Some(sim), false) => Some(Arc::new(PacedGuests(SandboxGuests {
            sim: sim.clone(),
            scope: scope_path,
            hosts: sandboxes.clone(),
        }))),
        _ => None,
    };
    let concurrency = fleet.concurrency();
    let all_simulated = sandboxes.len() == hosts.len();
    Ok(Engine {
        world: World {
            fleet: f.metadata.name.clone(),
            hosts,
            registry,
        },
        provisioner: Arc::new(FleetProvisioner::new(f.clone(), Some(supply))),
        clock,
        limits: Limits {
            global: concurrency.global as usize,
            per_host: concurrency.per_host.map(|n| n as usize),
        },
        guests,
        poll: if all_simulated {
            POLL_SANDBOX
        } else {
            POLL_REAL
        },
        services: sim_handle
            .map(|s| Box::new(SimService(s)) as Box<dyn Service>)
            .into_iter()
            .collect(),
    })
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 20] = rand::rng().random();
    hex::encode(bytes)
}

fn credentials(auth: AuthRef) -> Result<github::Auth, AssembleError> {
    match auth {
        AuthRef::Simulator => unreachable!("handled by the caller"),
        AuthRef::TokenEnv { name } => match std::env::var(&name) {
            Ok(t) if !t.trim().is_empty() => Ok(github::Auth::Token(Secret::new(t.trim().into()))),
            _ => Err(AssembleError::TokenEnv { name }),
        },
        AuthRef::TokenFile { path } => {
            let t = read_secret_file(&path, "spec.github.auth.tokenFile")?;
            Ok(github::Auth::Token(Secret::new(t.trim().to_string())))
        }
        AuthRef::App {
            app_id,
            installation_id,
            private_key_file,
        } => Ok(github::Auth::App {
            app_id,
            installation_id,
            private_key_pem: Secret::new(read_secret_file(
                &private_key_file,
                "spec.github.auth.app.privateKeyFile",
            )?),
        }),
    }
}

fn read_secret_file(path: &str, field: &'static str) -> Result<String, AssembleError> {
    use crate::files::state;
    let unsafe_file = |source| AssembleError::UnsafeSecretFile { field, source };
    let (bytes, meta) = state::read_named(Path::new(path), 1 << 20).map_err(unsafe_file)?;
    // As ssh says of a private key; a warning, not a refusal: the secret
    // is exposed already, and a fleet must not stop over a chmod.
    if let Some(why) = state::readable_by_others(&meta) {
        tracing::warn!(
            "{field}: {path} {why}: anyone who can read it holds the fleet's GitHub credentials"
        );
    }
    String::from_utf8(bytes).map_err(|e| AssembleError::SecretFile {
        field,
        path: path.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// How the engine reaches a (non-sandbox) host of the file.
pub fn host_config(host: &Host, fleet: &str, state_dir: &Path) -> HostConfig {
    HostConfig {
        name: host.name.clone(),
        uri: host.uri.clone(),
        storage_pool: host.storage_pool.clone(),
        network: host.network_attachment_in(fleet),
        domain_type: match host.domain_type {
            DomainTypeSpec::Auto => None,
            DomainTypeSpec::Kvm => Some(DomainType::Kvm),
            DomainTypeSpec::Qemu => Some(DomainType::Qemu),
        },
        console_dir: host.console_dir.as_ref().map(PathBuf::from),
        volume_record: Some(state_dir.join(format!("{fleet}.{}.volumes.json", host.name))),
        observed: Some(state_dir.join(format!("{fleet}.{}.observed.json", host.name))),
        image_dirs: host.image_dirs.iter().map(PathBuf::from).collect(),
    }
}

/// A libvirt host that connects on first use and keeps trying while the
/// host is unreachable, so that one host down at start does not stop the
/// others, and the daemon picks the host up once it answers.
///
/// A host that accepts the connection and never answers costs a pass the
/// connect deadline once: the calls of the pass that come while the
/// connect is under way wait for that same connect (not each for one of
/// their own), and once it has waited the deadline, every call fails at
/// once (as `Refused`: retrying within the pass would multiply the wait)
/// until it returns. The blocking thread of a connect cannot be
/// interrupted; no second one is started while it is parked. When the
/// attempt ends (the peer answers or drops the connection), the next call
/// takes its host, or tries afresh after a failure nobody waited for.
///
/// An attempt may never end: a peer that took the connection and then went
/// away without a word (a machine that froze or rebooted mid-handshake)
/// leaves the thread waiting on a socket that nothing will ever wake, and
/// ssh sends no probes of its own. So an attempt parked for
/// [`ABANDON_AFTER`] deadlines is left behind (its thread ends when it
/// ends; a connection it makes then is closed) and the host is tried
/// afresh, with at most [`MAX_CONNECTS`] threads parked per host.
pub struct LazyHost {
    config: HostConfig,
    isolation: Option<IsolatedNetwork>,
    link: Mutex<Link>,
    /// The deadline of the host's connect and of each of its calls.
    call_timeout: Duration,
    /// Connect threads of this host not yet returned, left behind or not.
    connecting: Arc<AtomicUsize>,
}

/// A connect parked this many call deadlines (10 minutes with libvirt's
/// 60 s) is left behind and the host tried afresh.
pub const ABANDON_AFTER: u32 = 10;

/// At most this many connect threads parked per host, the one waited for
/// included: past it, the host waits for one of them to return.
pub const MAX_CONNECTS: usize = 3;

/// Counts a connect thread out when it returns (or unwinds).
struct Connecting(Arc<AtomicUsize>);

impl Drop for Connecting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where a [`LazyHost`]'s connection stands.
enum Link {
    /// No connection and no attempt under way.
    Down,
    /// A connect under way on a blocking thread since `since`.
    Connecting {
        since: tokio::time::Instant,
        task: tokio::task::JoinHandle<Result<LibvirtHost, ProviderError>>,
    },
    Up(Arc<LibvirtHost>),
}

impl LazyHost {
    pub fn new(config: HostConfig, isolation: Option<IsolatedNetwork>) -> Self {
        LazyHost {
            config,
            isolation,
            link: Mutex::new(Link::Down),
            call_timeout: crate::providers::libvirt::CALL_TIMEOUT,
            connecting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A deadline other than [`crate::providers::libvirt::CALL_TIMEOUT`]
    /// (the bench, tests).
    pub fn with_call_timeout(mut self, limit: Duration) -> Self {
        self.call_timeout = limit;
        self
    }

    fn not_answering(&self, message: String) -> ProviderError {
        ProviderError::new(&self.config.name, ErrorKind::Refused, message)
    }

    pub async fn get(&self) -> Result<Arc<LibvirtHost>, ProviderError> {
        let mut link = self.link.lock().await;
        // An attempt that ended while no call waited for it.
        if matches!(&*link, Link::Connecting { task, .. } if task.is_finished()) {
            if let Link::Connecting { task, .. } = std::mem::replace(&mut *link, Link::Down) {
                match task.await {
                    Ok(Ok(h)) => *link = Link::Up(self.up(h)),
                    Ok(Err(e)) => {
                        tracing::debug!(host = %self.config.name, error = %e, "earlier connect failed; trying again")
                    }
                    Err(e) => {
                        tracing::debug!(host = %self.config.name, error = %e, "earlier connect task failed")
                    }
                }
            }
        }
        if let Link::Up(h) = &*link {
            return Ok(h.clone());
        }
        if let Link::Connecting { since, .. } = &*link {
            let parked = since.elapsed();
            let running = self.connecting.load(Ordering::SeqCst);
            if parked >= self.call_timeout * ABANDON_AFTER && running < MAX_CONNECTS {
                tracing::warn!(
                    host = %self.config.name,
                    parked_s = parked.as_secs(),
                    "a connect has not returned: left behind (its thread cannot be interrupted), the host is tried afresh"
                );
                // Dropping the handle detaches the thread.
                *link = Link::Down;
            }
        }
        if matches!(&*link, Link::Down) {
            let config = self.config.clone();
            let isolation = self.isolation.clone();
            self.connecting.fetch_add(1, Ordering::SeqCst);
            let counted = Connecting(self.connecting.clone());
            *link = Link::Connecting {
                since: tokio::time::Instant::now(),
                task: tokio::task::spawn_blocking(move || {
                    let _counted = counted;
                    LibvirtHost::connect_isolated(config, isolation)
                }),
            };
        }
        let Link::Connecting { since, task } = &mut *link else {
            unreachable!("the link is connecting here");
        };
        // A host that never answers (remote, or a local libvirtd that
        // hangs) must not hold up the pass, nor twice.
        let limit = self.call_timeout;
        let waited = since.elapsed();
        if waited >= limit {
            return Err(self.not_answering(format!(
                "not answering: a connection has waited {}s",
                waited.as_secs()
            )));
        }
        let joined = tokio::time::timeout(limit - waited, task)
            .await
            .map_err(|_| {
                self.not_answering(format!(
                    "not answering: no connection within {}s",
                    limit.as_secs()
                ))
            })?;
        *link = Link::Down;
        let h = joined.map_err(|e| {
            ProviderError::new(&self.config.name, ErrorKind::Transient, e.to_string())
        })??;
        let h = self.up(h);
        *link = Link::Up(h.clone());
        Ok(h)
    }

    /// A host just connected, its calls under the host's deadline.
    fn up(&self, h: LibvirtHost) -> Arc<LibvirtHost> {
        h.set_call_timeout(Some(self.call_timeout));
        Arc::new(h)
    }

    /// The connected host, if it is (without waiting).
    fn connected(&self) -> Option<Arc<LibvirtHost>> {
        match self.link.try_lock() {
            Ok(link) => match &*link {
                Link::Up(h) => Some(h.clone()),
                _ => None,
            },
            Err(_) => None,
        }
    }
}

#[async_trait]
impl Hypervisor for LazyHost {
    fn host(&self) -> &str {
        &self.config.name
    }

    async fn facts(&self) -> Result<HostFacts, ProviderError> {
        self.get().await?.facts().await
    }

    async fn observe(&self, fleet: &str) -> Result<Vec<ObservedVm>, ProviderError> {
        self.get().await?.observe(fleet).await
    }

    fn foreign_names(&self) -> Vec<String> {
        self.connected()
            .map(|h| h.foreign_names())
            .unwrap_or_default()
    }

    async fn create(&self, vm: &VmCreate) -> Result<(), ProviderError> {
        self.get().await?.create(vm).await
    }

    async fn start(&self, vm: &VmRef) -> Result<(), ProviderError> {
        self.get().await?.start(vm).await
    }

    async fn delete(&self, vm: &VmRef, remove_cache: bool) -> Result<(), ProviderError> {
        self.get().await?.delete(vm, remove_cache).await
    }

    async fn remove_seed(&self, vm: &VmRef) -> Result<(), ProviderError> {
        self.get().await?.remove_seed(vm).await
    }

    async fn drain(&self, vm: &VmRef) -> Result<crate::plan::model::DrainState, ProviderError> {
        self.get().await?.drain(vm).await
    }

    async fn cache_usage(&self, fleet: &str) -> Result<Vec<CacheUsage>, ProviderError> {
        self.get().await?.cache_usage(fleet).await
    }

    fn host_state(&self) -> ObservedHost {
        self.connected().map(|h| h.host_state()).unwrap_or_default()
    }

    async fn ensure_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        self.get().await?.ensure_network(network, filter).await
    }

    async fn ensure_runner_volume(
        &self,
        volume: &str,
        local: &crate::model::runner::LocalTarball,
    ) -> Result<(), ProviderError> {
        self.get().await?.ensure_runner_volume(volume, local).await
    }

    async fn remove_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        self.get().await?.remove_network(network, filter).await
    }

    async fn remove_leftover(&self, leftover: &Leftover) -> Result<(), ProviderError> {
        self.get().await?.remove_leftover(leftover).await
    }
}

/// Turns the fleet file's pool settings into a guest and a VM.
pub struct FleetProvisioner {
    pub fleet: Fleet,
    runners: PoolRunners,
}

impl FleetProvisioner {
    /// `supply`: where runner releases are resolved and their tarballs
    /// fetched; `None` supplies none (guests download a pinned release).
    pub fn new(fleet: Fleet, supply: Option<Arc<RunnerSupply>>) -> Self {
        FleetProvisioner {
            fleet,
            runners: PoolRunners::new(supply),
        }
    }

    fn pool_and_host(&self, slot: &DesiredSlot) -> Result<(&Pool, &Host), ProvisionError> {
        let err = |what: &'static str| ProvisionError::NotInFile {
            slot: slot.name.clone(),
            what,
        };
        let pool = self
            .fleet
            .spec
            .pools
            .iter()
            .find(|p| p.name == slot.pool)
            .ok_or_else(|| err("pool"))?;
        let host = self
            .fleet
            .spec
            .hosts
            .iter()
            .find(|h| h.name == slot.host)
            .ok_or_else(|| err("host"))?;
        Ok((pool, host))
    }
}

/// The guest a slot's VM gets.
pub fn guest(
    fleet: &Fleet,
    pool: &Pool,
    slot_name: &str,
    runner: Option<&RunnerVolume>,
) -> Result<provision::Guest, ProvisionError> {
    let runner = match (runner, pool.runner.install()) {
        (Some(r), _) => provision::RunnerInstall::Volume {
            version: r.local.tarball.version.clone(),
            sha256: r.local.tarball.sha256.clone(),
            size: r.local.tarball.size,
        },
        (None, Some(crate::fleet::RunnerInstall::Download { version, sha256 })) => {
            provision::RunnerInstall::Download { version, sha256 }
        }
        (None, Some(crate::fleet::RunnerInstall::Preinstalled { path })) => {
            provision::RunnerInstall::Preinstalled { path }
        }
        (None, None) => {
            return Err(ProvisionError::RunnerSettings {
                pool: pool.name.clone(),
            })
        }
    };
    let mut labels = pool.labels.clone();
    labels.push(crate::model::names::ownership_label(&fleet.metadata.name));
    Ok(provision::Guest {
        hostname: slot_name.to_string(),
        user: provision::GuestUser {
            name: pool.user.name.clone(),
            sudo: pool.user.sudo,
        },
        docker: match pool.docker.source {
            crate::fleet::DockerSource::Ubuntu => provision::DockerSource::Distro,
            crate::fleet::DockerSource::DockerCe => provision::DockerSource::DockerCe,
            crate::fleet::DockerSource::Preinstalled => provision::DockerSource::Preinstalled,
        },
        runner,
        work_folder: pool.runner.work_folder.clone(),
        labels,
        runner_group: pool.runner_group.clone(),
        ephemeral: pool.ephemeral,
        cache: pool.cache.as_ref().map(|c| provision::GuestCache {
            mount_path: c.mount_path.clone(),
            prune_above_percent: (c.prune_above.hundredths() / 100).min(100) as u8,
            docker_data_root: c.docker_data_root,
            size_bytes: c.size.bytes(),
        }),
        emulate: pool
            .vm
            .emulate
            .iter()
            .map(|a| {
                serde_json::to_value(a)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            })
            .collect(),
        ssh_authorized_keys: pool.vm.ssh_authorized_keys.clone(),
    })
}

fn direct_boot(pool: &Pool) -> Option<DirectBoot> {
    pool.vm.boot.as_ref().map(|b| DirectBoot {
        kernel: b.kernel.clone(),
        initrd: b.initrd.clone(),
        cmdline: b.cmdline.clone(),
    })
}

#[async_trait]
impl Provisioner for FleetProvisioner {
    async fn prepare(&self, now: chrono::DateTime<chrono::Utc>) -> Vec<PoolRunner> {
        self.runners.prepare(&self.fleet, now).await
    }

    fn runner(&self, slot: &DesiredSlot) -> SlotRunner {
        self.runners.for_pool(&slot.pool)
    }

    fn vm_create(
        &self,
        slot: &DesiredSlot,
        owner: Ownership,
        credential: &RunnerCredential,
    ) -> Result<VmCreate, ProvisionError> {
        let (pool, host) = self.pool_and_host(slot)?;
        let guest = guest(&self.fleet, pool, &slot.name, slot.runner.as_ref())?;
        Ok(VmCreate {
            seed: Seed {
                user_data: provision::user_data(&guest, credential),
                meta_data: provision::meta_data(&slot.name, owner.generation),
                credential: provision::credential_file(credential),
            },
            owner,
            boot: direct_boot(pool),
            network: host.network_attachment_in(&self.fleet.metadata.name),
            cpu_model: pool.vm.cpu_model,
            runner_volume: match guest.runner {
                provision::RunnerInstall::Volume { .. } => {
                    slot.runner.as_ref().map(|r| r.volume.clone())
                }
                _ => None,
            },
        })
    }
}

/// A slot's user-data with placeholders for secrets: from the file alone,
/// without contacting anything.
pub fn render_user_data(
    fleet: &LoadedFleet,
    pool: &Pool,
    slot_name: &str,
) -> Result<String, ProvisionError> {
    let g = guest(&fleet.fleet, pool, slot_name, None)?;
    Ok(provision::user_data_redacted(&g, pool.ephemeral))
}

/// What `hangar render` prints for a slot: the user-data with placeholders
/// for secrets, or the domain XML of the slot's next VM. The domain type is
/// the one the slot's host chose (`facts`, with its reason in a comment);
/// without facts (host unreachable) the fleet file's, `auto` read as qemu.
pub fn render(
    fleet: &LoadedFleet,
    slot: &DesiredSlot,
    domain: bool,
    facts: Option<&HostFacts>,
) -> Result<String, ProvisionError> {
    let f = &fleet.fleet;
    let err = |what: &'static str| ProvisionError::NotInFile {
        slot: slot.name.clone(),
        what,
    };
    let pool = fleet.pool(&slot.pool).ok_or_else(|| err("pool"))?;
    let host = fleet.host(&slot.host).ok_or_else(|| err("host"))?;
    if !domain {
        return render_user_data(fleet, pool, &slot.name);
    }
    let owner = Ownership {
        fleet: f.metadata.name.clone(),
        pool: slot.pool.clone(),
        slot: slot.name.clone(),
        index: slot.index,
        generation: 1,
        spec_hash: slot.spec_hash.clone(),
        created_at: chrono::Utc::now(),
        ephemeral: slot.ephemeral,
        boot_failures: 0,
        shape: slot.vm.clone(),
    };
    let (domain_type, reason) = match (facts, host.domain_type) {
        (Some(f), _) => (f.domain_type, f.domain_type_reason.clone()),
        (None, DomainTypeSpec::Kvm) => (DomainType::Kvm, "kvm asked for".into()),
        (None, _) if host.uri == SANDBOX_URI => (DomainType::Test, "sandbox".into()),
        (None, _) => (
            DomainType::Qemu,
            "host not reached: its kvm support is unknown".into(),
        ),
    };
    let console: PathBuf =
        PathBuf::from("/var/log/hangar").join(crate::model::names::console_log_name(&slot.name, 1));
    let mut spec = crate::providers::libvirt::xml::DomainSpec::for_vm(
        domain_type,
        &host.storage_pool,
        &owner,
        direct_boot(pool).as_ref(),
        &host.network_attachment_in(&f.metadata.name),
        true,
        Some(console.display().to_string()),
    );
    spec.cpu_model = pool.vm.cpu_model;
    let xml = crate::providers::libvirt::xml::domain_xml(&spec);
    // `--` may not appear inside an XML comment.
    let reason = reason.replace("--", "- -");
    Ok(crate::model::xml::with_declaration(&format!(
        "<!-- domain type {}: {reason} -->\n{xml}",
        format!("{domain_type:?}").to_lowercase()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::host::NetworkAttachment;
    use std::time::Instant;

    fn config(uri: String) -> HostConfig {
        HostConfig {
            name: "far".into(),
            uri,
            storage_pool: "default".into(),
            network: NetworkAttachment::None,
            domain_type: None,
            console_dir: None,
            volume_record: None,
            observed: None,
            image_dirs: Vec::new(),
        }
    }

    /// A libvirt URI on a loopback listener that never accepts: the kernel
    /// completes the handshake, nothing is ever read or answered.
    fn silent() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback listener");
        let port = listener.local_addr().expect("its port").port();
        (listener, format!("qemu+tcp://127.0.0.1:{port}/system"))
    }

    /// Issue 14: a pass's two calls (facts and listing, at once, under
    /// the retry wrapper) wait for one connect deadline, not one each nor
    /// one per retry; the next pass's calls fail at once while that connect
    /// is parked; once it ends, the host is tried afresh.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_that_never_answers_costs_a_pass_one_connect_deadline() {
        let (listener, uri) = silent();
        let limit = Duration::from_millis(600);
        let lazy = Arc::new(LazyHost::new(config(uri), None).with_call_timeout(limit));
        let hv: Arc<dyn Hypervisor> = Arc::new(Retrying::<dyn Hypervisor>::new(
            lazy.clone() as Arc<dyn Hypervisor>,
            RetryPolicy::LIBVIRT,
        ));

        let t = Instant::now();
        let (facts, vms) = tokio::join!(hv.facts(), hv.observe("f"));
        let took = t.elapsed();
        for e in [
            facts.expect_err("facts fail"),
            vms.expect_err("listing fails"),
        ] {
            assert_eq!(e.kind, ErrorKind::Refused, "{e}");
            assert!(e.message.contains("not answering"), "{e}");
        }
        assert!(took >= limit, "failed before the deadline: {took:?}");
        assert!(
            took < limit * 3 / 2,
            "waited more than one deadline: {took:?}"
        );

        let t = Instant::now();
        let (facts, vms) = tokio::join!(hv.facts(), hv.observe("f"));
        let took = t.elapsed();
        assert!(facts.is_err() && vms.is_err());
        assert!(
            took < limit / 3,
            "the parked connect was waited for again: {took:?}"
        );
        assert!(lazy.connected().is_none());

        // The listener gone, the parked connect ends (reset); the next call
        // makes a new attempt, refused at once, not "not answering".
        drop(listener);
        refused_afresh(&lazy).await;
    }

    /// Calls `lazy` until an attempt of its own is refused (nothing listens
    /// any more), within 5 s: not "not answering", but a transient failure.
    async fn refused_afresh(lazy: &LazyHost) {
        let t = Instant::now();
        let e = loop {
            let e = lazy.facts().await.expect_err("nothing listens");
            if !e.message.contains("not answering") || t.elapsed() > Duration::from_secs(5) {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(e.kind, ErrorKind::Transient, "{e}");
        assert!(!e.message.contains("not answering"), "{e}");
    }

    /// Takes every connection waiting on `listener` into `held`, which
    /// keeps them open and silent.
    fn take(listener: &std::net::TcpListener, held: &mut Vec<std::net::TcpStream>) {
        listener.set_nonblocking(true).expect("non-blocking");
        while let Ok((stream, _)) = listener.accept() {
            held.push(stream);
        }
    }

    /// A connect whose peer took the connection and went silent for good
    /// (the socket stays open: nothing will ever wake the thread) is left
    /// behind after ABANDON_AFTER deadlines: the host is tried afresh and
    /// reaches what is there now.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connect_that_never_returns_is_left_behind_and_the_host_tried_afresh() {
        let (listener, uri) = silent();
        let limit = Duration::from_millis(200);
        let lazy = LazyHost::new(config(uri), None).with_call_timeout(limit);
        let e = lazy.facts().await.expect_err("silent");
        assert!(e.message.contains("not answering"), "{e}");
        let mut held = Vec::new();
        while held.is_empty() {
            take(&listener, &mut held);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The host is gone now, but the first attempt's socket is open.
        drop(listener);
        let e = lazy.facts().await.expect_err("still parked");
        assert!(e.message.contains("not answering"), "{e}");

        tokio::time::sleep(limit * ABANDON_AFTER).await;
        // A new attempt, refused at once (on a loaded machine it may take
        // longer than the deadline: then the next call sees it refused).
        refused_afresh(&lazy).await;
        assert_eq!(
            lazy.connecting.load(Ordering::SeqCst),
            1,
            "the first attempt, left behind, is still parked"
        );
    }

    /// However long the peer stays silent, at most MAX_CONNECTS threads
    /// are ever parked on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_silent_for_good_parks_at_most_max_connects_threads() {
        let (listener, uri) = silent();
        let limit = Duration::from_millis(40);
        let lazy = LazyHost::new(config(uri), None).with_call_timeout(limit);
        let mut held = Vec::new();
        let until = Instant::now() + limit * ABANDON_AFTER * (MAX_CONNECTS as u32 + 2);
        while Instant::now() < until {
            let e = lazy.facts().await.expect_err("silent");
            assert!(e.message.contains("not answering"), "{e}");
            take(&listener, &mut held);
            tokio::time::sleep(limit).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        take(&listener, &mut held);
        assert_eq!(held.len(), MAX_CONNECTS, "connections opened");
        assert_eq!(lazy.connecting.load(Ordering::SeqCst), MAX_CONNECTS);
    }
}
