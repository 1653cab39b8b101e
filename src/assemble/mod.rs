//! The composition root: from a loaded fleet file to an [`Engine`] wired to
//! real providers (libvirt hosts, GitHub) or to the embedded sandbox (the
//! libvirt test driver and the in-process GitHub simulator).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::exit::ExitStatus;
use crate::fleet::{AuthRef, DomainTypeSpec, Fleet, Host, LoadedFleet, Pool, Scope};
use crate::model::credential::RunnerCredential;
use crate::model::host::{DirectBoot, DomainType, HostFacts};
use crate::model::network::IsolatedNetwork;
use crate::model::ownership::Ownership;
use crate::plan::model::{DesiredSlot, ObservedVm, VmRef};
use crate::providers::github::{self, GithubConfig, GithubRegistry, RetryPolicy, Retrying};
use crate::providers::libvirt::{HostConfig, LibvirtHost};
use crate::providers::{
    CacheUsage, ErrorKind, Hypervisor, ProviderError, RunnerRegistry, Seed, VmCreate,
};
use crate::provision;
use crate::reconcile::engine::{Engine, GuestPlay};
use crate::reconcile::execute::Limits;
use crate::reconcile::memory::{OfflineMemory, Remembering};
use crate::reconcile::{Clock, ProvisionError, Provisioner, SystemClock, World};
use crate::sandbox::guest::SandboxGuests;
use crate::sandbox::host::SandboxHost;
use crate::secret::Secret;
use crate::sim::{self, SimConfig, SimHandle};

/// The `uri` that selects the embedded sandbox.
pub const SANDBOX_URI: &str = "sandbox";

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// The environment lacks something the file refers to (a token variable,
    /// a key file): a usage error, nothing was contacted.
    #[error("{0}")]
    Credentials(String),
    /// A provider could not be set up (the sandbox's state, the simulator).
    #[error("{0}")]
    Provider(String),
}

impl AssembleError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            AssembleError::Credentials(_) => ExitStatus::InvalidInput,
            AssembleError::Provider(_) => ExitStatus::ProviderError,
        }
    }
}

/// An engine and what must be shut down with it.
pub struct Assembled {
    pub engine: Engine,
    /// Hosts whose guests are played by the sandbox (shown as simulated).
    pub simulated_hosts: BTreeSet<String>,
    /// The in-process simulator, when the file asks for it.
    pub sim: Option<Arc<SimHandle>>,
}

impl Assembled {
    /// Stop the in-process simulator (its state is already saved).
    pub async fn shutdown(self) {
        drop(self.engine);
        if let Some(sim) = self.sim {
            if let Ok(sim) = Arc::try_unwrap(sim) {
                if let Err(e) = sim.shutdown().await {
                    tracing::warn!(error = %e, "simulator did not stop cleanly");
                }
            }
        }
    }
}

/// Build the engine for `fleet`. Hosts that cannot be reached now are still
/// part of it: their observation fails (and the planner leaves them alone)
/// until they answer.
pub async fn assemble(fleet: &LoadedFleet, state_dir: &Path) -> Result<Assembled, AssembleError> {
    let f = &fleet.fleet;
    let mut hosts: BTreeMap<String, Arc<dyn Hypervisor>> = BTreeMap::new();
    let mut sandboxes = Vec::new();
    for host in &f.spec.hosts {
        if host.uri == SANDBOX_URI {
            let sb = SandboxHost::open(state_dir, &host.name, &host.storage_pool)
                .map(Arc::new)
                .map_err(|e| AssembleError::Provider(e.to_string()))?;
            sandboxes.push(sb.clone());
            hosts.insert(host.name.clone(), sb);
        } else {
            hosts.insert(
                host.name.clone(),
                Arc::new(LazyHost::new(
                    host_config(host, &f.metadata.name),
                    host.isolated_network(&f.metadata.name),
                )),
            );
        }
    }

    let scope = f
        .spec
        .github
        .scope()
        .ok_or_else(|| AssembleError::Credentials("the file names no GitHub scope".into()))?;
    let scope = match scope {
        Scope::Repository { owner, repo } => github::Scope::Repository { owner, repo },
        Scope::Organization { org } => github::Scope::Organization(org),
    };
    let auth =
        f.spec.github.auth_ref().ok_or_else(|| {
            AssembleError::Credentials("the file names no GitHub credentials".into())
        })?;

    let mut sim_handle = None;
    let (api_url, auth) = match auth {
        AuthRef::Simulator => {
            let token = random_token();
            let mut config = SimConfig::new(token.clone());
            std::fs::create_dir_all(state_dir).map_err(|e| {
                AssembleError::Provider(format!("state directory {}: {e}", state_dir.display()))
            })?;
            config.state_file = Some(state_dir.join("github-sim.json"));
            let handle = sim::start(config)
                .await
                .map_err(|e| AssembleError::Provider(format!("github simulator: {e}")))?;
            let url = handle.base_url.clone();
            sim_handle = Some(Arc::new(handle));
            (url, github::Auth::Token(Secret::new(token)))
        }
        other => (f.spec.github.api_url().to_string(), credentials(other)?),
    };
    let scope_path = scope.path();
    let registry = GithubRegistry::new(GithubConfig {
        scope,
        api_url,
        auth,
        timeout: Some(std::time::Duration::from_secs(30)),
    })
    .map_err(|e| AssembleError::Provider(e.to_string()))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let registry: Arc<dyn RunnerRegistry> = Arc::new(Remembering {
        inner: Retrying::new(registry, RetryPolicy::default()),
        memory: OfflineMemory::new(state_dir, &f.metadata.name),
        clock: clock.clone(),
    });

    let guests: Option<Arc<dyn GuestPlay>> = match (&sim_handle, sandboxes.is_empty()) {
        (Some(sim), false) => Some(Arc::new(SandboxGuests {
            sim: sim.clone(),
            scope: scope_path,
            hosts: sandboxes.clone(),
        })),
        _ => None,
    };
    let concurrency = fleet.concurrency();
    let engine = Engine {
        world: World {
            fleet: f.metadata.name.clone(),
            hosts,
            registry,
        },
        provisioner: Arc::new(FleetProvisioner { fleet: f.clone() }),
        clock,
        limits: Limits {
            global: concurrency.global as usize,
            per_host: concurrency.per_host as usize,
            ..Limits::default()
        },
        guests,
    };
    Ok(Assembled {
        engine,
        simulated_hosts: sandboxes.iter().map(|s| s.host().to_string()).collect(),
        sim: sim_handle,
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
            _ => Err(AssembleError::Credentials(format!(
                "spec.github.auth.tokenEnv: the environment variable {name} is not set or empty"
            ))),
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

fn read_secret_file(path: &str, field: &str) -> Result<String, AssembleError> {
    std::fs::read_to_string(path)
        .map_err(|e| AssembleError::Credentials(format!("{field}: cannot read {path}: {e}")))
}

fn host_config(host: &Host, fleet: &str) -> HostConfig {
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
        console_dir: None,
    }
}

/// A libvirt host that connects on first use and keeps trying while the
/// host is unreachable, so that one host down at start does not stop the
/// others, and the daemon picks the host up once it answers.
pub struct LazyHost {
    config: HostConfig,
    isolation: Option<IsolatedNetwork>,
    host: Mutex<Option<Arc<LibvirtHost>>>,
}

impl LazyHost {
    pub fn new(config: HostConfig, isolation: Option<IsolatedNetwork>) -> Self {
        LazyHost {
            config,
            isolation,
            host: Mutex::new(None),
        }
    }

    pub async fn get(&self) -> Result<Arc<LibvirtHost>, ProviderError> {
        let mut slot = self.host.lock().await;
        if let Some(h) = slot.as_ref() {
            return Ok(h.clone());
        }
        let config = self.config.clone();
        let isolation = self.isolation.clone();
        let name = config.name.clone();
        let h =
            tokio::task::spawn_blocking(move || LibvirtHost::connect_isolated(config, isolation))
                .await
                .map_err(|e| ProviderError::new(&name, ErrorKind::Transient, e.to_string()))??;
        let h = Arc::new(h);
        *slot = Some(h.clone());
        Ok(h)
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
        match self.host.try_lock() {
            Ok(h) => h.as_ref().map(|h| h.foreign_names()).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
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

    async fn cache_usage(&self, fleet: &str) -> Result<Vec<CacheUsage>, ProviderError> {
        self.get().await?.cache_usage(fleet).await
    }
}

/// Turns the fleet file's pool settings into a guest and a VM.
pub struct FleetProvisioner {
    pub fleet: Fleet,
}

impl FleetProvisioner {
    fn pool_and_host(&self, slot: &DesiredSlot) -> Result<(&Pool, &Host), ProvisionError> {
        let err = |what: &str| ProvisionError {
            slot: slot.name.clone(),
            message: format!("{what} is not in the fleet file"),
        };
        let pool = self
            .fleet
            .spec
            .pools
            .iter()
            .find(|p| p.name == slot.pool)
            .ok_or_else(|| err("its pool"))?;
        let host = self
            .fleet
            .spec
            .hosts
            .iter()
            .find(|h| h.name == slot.host)
            .ok_or_else(|| err("its host"))?;
        Ok((pool, host))
    }
}

/// The guest a slot's VM gets.
pub fn guest(fleet: &Fleet, pool: &Pool, slot: &DesiredSlot) -> Result<provision::Guest, String> {
    let runner = match pool.runner.install() {
        Some(crate::fleet::RunnerInstall::Download { version, sha256 }) => {
            provision::RunnerInstall::Download { version, sha256 }
        }
        Some(crate::fleet::RunnerInstall::Preinstalled { path }) => {
            provision::RunnerInstall::Preinstalled { path }
        }
        None => {
            return Err(format!(
                "pool {}: runner settings are inconsistent",
                pool.name
            ))
        }
    };
    let mut labels = slot.labels.clone();
    labels.push(crate::model::names::ownership_label(&fleet.metadata.name));
    Ok(provision::Guest {
        hostname: slot.name.clone(),
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

impl Provisioner for FleetProvisioner {
    fn vm_create(
        &self,
        slot: &DesiredSlot,
        owner: Ownership,
        credential: &RunnerCredential,
    ) -> Result<VmCreate, ProvisionError> {
        let (pool, host) = self.pool_and_host(slot)?;
        let guest = guest(&self.fleet, pool, slot).map_err(|message| ProvisionError {
            slot: slot.name.clone(),
            message,
        })?;
        Ok(VmCreate {
            seed: Seed {
                user_data: provision::user_data(&guest, credential),
                meta_data: provision::meta_data(&slot.name, owner.generation),
            },
            owner,
            boot: direct_boot(pool),
            network: host.network_attachment_in(&self.fleet.metadata.name),
        })
    }
}

/// What `hangar render` prints for a slot: the user-data with placeholders
/// for secrets, or the domain XML of the slot's next VM.
pub fn render(fleet: &LoadedFleet, slot: &DesiredSlot, domain: bool) -> Result<String, String> {
    let f = &fleet.fleet;
    let pool = fleet
        .pool(&slot.pool)
        .ok_or_else(|| format!("pool {} is not in the file", slot.pool))?;
    let host = fleet
        .host(&slot.host)
        .ok_or_else(|| format!("host {} is not in the file", slot.host))?;
    if !domain {
        let g = guest(f, pool, slot)?;
        return Ok(provision::user_data_redacted(&g, slot.ephemeral));
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
    let domain_type = match host.domain_type {
        DomainTypeSpec::Kvm => DomainType::Kvm,
        _ if host.uri == SANDBOX_URI => DomainType::Test,
        _ => DomainType::Qemu,
    };
    let console: PathBuf =
        PathBuf::from("/var/log/hangar").join(crate::model::names::console_log_name(&slot.name, 1));
    let spec = crate::providers::libvirt::xml::DomainSpec::for_vm(
        domain_type,
        &host.storage_pool,
        &owner,
        direct_boot(pool).as_ref(),
        &host.network_attachment_in(&f.metadata.name),
        true,
        Some(console.display().to_string()),
    );
    Ok(crate::model::xml::with_declaration(
        &crate::providers::libvirt::xml::domain_xml(&spec),
    ))
}
