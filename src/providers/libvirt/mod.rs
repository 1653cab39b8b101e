//! The libvirt [`Hypervisor`]: one [`LibvirtHost`] per host, over the
//! blocking virt crate. By idea:
//!
//! - `connection`: one long-lived connection per host, reopened when it
//!   dropped; every libvirt call counted, classified (`errors`) and run on
//!   `spawn_blocking`.
//! - `listing`, `observe`: observation costs one libvirt round trip
//!   per host in steady state: `virConnectGetAllDomainStats(STATE)` returns
//!   every domain with its name, UUID and state in one RPC. A domain is
//!   hangar's only if its XML carries hangar's ownership element
//!   ([`crate::model::ownership::OWNERSHIP_NS`]); anything else is never
//!   returned and never touched. Ownership never changes under a domain
//!   UUID, so it is read once per UUID (`virDomainGetXMLDesc`, which also
//!   says whether the seed is attached) and cached.
//!   [`LibvirtHost::libvirt_calls`] counts the calls.
//! - `facts`: cpus, memory, pool space, and the domain type.
//! - [`image`] (with `download`): base images; `volumes`: the pool and the
//!   one upload path; `disks`: a VM's root, cache and seed volumes;
//!   `domain`: define, start, delete, remove the seed; [`xml`]: what is
//!   written to and read from libvirt; `console`: the guest's progress from
//!   its serial log; `seed`: the NoCloud image; [`serial`]: a slot's
//!   console for `hangar console` and `hangar logs`.
//! - [`isolation`]: the fleet's NAT network and nwfilter.
//! - Names are deterministic ([`crate::model::names::root_volume_name`] and
//!   friends) so a create cut short is adopted by the next one, never
//!   duplicated.

mod agent;
mod connection;
mod console;
mod disks;
mod domain;
mod download;
mod errors;
mod facts;
pub mod image;
pub mod isolation;
mod leftovers;
mod listing;
mod made;
mod observe;
mod runner_volume;
pub mod seed;
pub mod serial;
mod snapshot;
pub mod survey;
pub mod test_node;
mod volumes;
pub mod xml;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use virt::connect::Connect;

use self::console::ConsoleCursor;
use self::facts::CachedFacts;
use self::image::ImageSource;
use self::observe::Known;
use super::{CacheUsage, Hypervisor, ProviderError, VmCreate};
use crate::model::host::{DomainType, HostFacts, HostIdentity, NetworkAttachment};
use crate::plan::model::{DrainState, Leftover, ObservedHost, ObservedVm, VmRef};

pub use self::agent::{
    AgentError, GuestDisks, GuestFs, GuestReading, GuestRun, DRAIN_NS, GUEST_FS_REFRESH,
};
pub use self::connection::CALL_TIMEOUT;
pub use self::connection::{calls_per_connection, uri_is_local};
pub use self::facts::{choose_domain_type, DomainTypeChoice};
pub use self::runner_volume::runner_disk;
pub use self::xml::{domain_xml, volume_xml};

/// Where serial console logs go on a host unless configured otherwise.
/// Created on local hosts; on a remote host it must exist (or set
/// [`HostConfig::console_dir`]).
pub const DEFAULT_CONSOLE_DIR: &str = "/var/log/hangar";

/// How to reach one host and what to use there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The host's name in the fleet file (used in errors).
    pub name: String,
    /// Any libvirt URI: `qemu:///system`, `qemu+ssh://user@host/system`,
    /// `test:///abs/path/node.xml`.
    pub uri: String,
    /// The storage pool for overlays, caches, seeds and pool-named images.
    pub storage_pool: String,
    /// The host's network setting, used by [`LibvirtHost::render_domain`];
    /// `create` attaches what its [`VmCreate`] says.
    pub network: NetworkAttachment,
    /// `None`: decide (`qemu` unless `kvm` is asked for; see
    /// [`LibvirtHost::connect`]).
    pub domain_type: Option<DomainType>,
    /// Directory of the serial console logs on the host; default
    /// [`DEFAULT_CONSOLE_DIR`].
    pub console_dir: Option<PathBuf>,
    /// File of hangar's record of the volumes it made on this host (see
    /// `made`); `None`: kept in memory, for this process only.
    pub volume_record: Option<PathBuf>,
    /// Directories a host-path image that is no pool's volume may be in
    /// (`imageDirs`); see `image`.
    pub image_dirs: Vec<PathBuf>,
    /// File of the observation kept for the next process (see
    /// `snapshot`); `None`: this process only.
    pub observed: Option<PathBuf>,
}

/// A libvirt host. Cheap to clone (shared state).
#[derive(Clone)]
pub struct LibvirtHost {
    inner: Arc<Inner>,
}

struct Inner {
    config: HostConfig,
    /// See `connection`.
    conns: connection::Connections,
    domain_type: DomainType,
    domain_type_reason: String,
    /// The host is this machine: console logs can be read directly.
    local: bool,
    /// By domain UUID.
    known: Mutex<HashMap<String, Known>>,
    /// By domain UUID.
    consoles: Mutex<HashMap<String, ConsoleCursor>>,
    /// By domain UUID, on a host whose console logs are not on this
    /// machine: the guest's markers as read through its agent, and when.
    agent_stages: Mutex<HashMap<String, (std::time::Instant, ConsoleCursor)>>,
    /// By domain UUID: when the guest agent was last asked for file-system
    /// use and addresses, and its answers (see `agent`).
    guest_fs: Mutex<HashMap<String, agent::KeptReading>>,
    calls: AtomicU64,
    /// See [`Inner::facts`].
    facts: Mutex<Option<CachedFacts>>,
    /// The fleet's isolated network here, made true before a VM that
    /// attaches to it is defined.
    isolation: Option<crate::model::IsolatedNetwork>,
    /// One download at a time per host: concurrent creates of a new fleet
    /// all need the same base image.
    fetching: tokio::sync::Mutex<()>,
    /// Names of the domains the last observation found not to be the
    /// fleet's.
    foreign: Mutex<Vec<String>>,
    /// Whether the fleet's isolated network is here (`None`: look).
    network_present: Mutex<Option<bool>>,
    /// See `leftovers`.
    volumes: Mutex<Option<leftovers::ListedVolumes>>,
    /// What the last observation found besides VMs.
    host_state: Mutex<crate::plan::model::ObservedHost>,
    /// The volumes hangar made here: the proof of their ownership.
    made: made::MadeVolumes,
    /// Which libvirtd the connection reached (read once per connection).
    identity: Mutex<HostIdentity>,
    /// Set when a reconnect reached another libvirtd under this name: the
    /// next facts read reports the host as gone for that pass.
    identity_changed: Mutex<Option<String>>,
    /// See `connection`: the deadline of each call, and the call past it
    /// (since when, and whether it has returned since).
    call_timeout: Mutex<Option<std::time::Duration>>,
    #[allow(clippy::type_complexity)]
    stuck: Mutex<Option<(std::time::Instant, Arc<std::sync::atomic::AtomicBool>)>>,
    /// The caches above as kept for the next process.
    snapshot: snapshot::Keeper,
}

impl LibvirtHost {
    /// Open the connection and decide the domain type
    /// (`facts::decide_domain_type`). Blocking: call it before the
    /// runtime or on `spawn_blocking`.
    pub fn connect(config: HostConfig) -> Result<LibvirtHost, ProviderError> {
        Self::connect_isolated(config, None)
    }

    /// [`LibvirtHost::connect`], and `create` ensures `isolation` (network
    /// and nwfilter, see [`isolation::ensure`]) before it defines a VM
    /// attached to that network with that filter.
    pub fn connect_isolated(
        config: HostConfig,
        isolation: Option<crate::model::IsolatedNetwork>,
    ) -> Result<LibvirtHost, ProviderError> {
        let local = uri_is_local(&config.uri);
        let conn = connection::open(&config, "connect to")?;
        let caps = facts::read_capabilities(&conn, &config)?;
        let choice = facts::decide_domain_type(&conn, &config, &caps)?;
        tracing::info!(
            host = %config.name,
            domain_type = ?choice.domain_type,
            reason = %choice.reason,
            "domain type chosen"
        );
        let made = made::MadeVolumes::new(config.volume_record.clone());
        let identity = facts::identity_from(&conn, &config, &caps)?;
        let snapshot = snapshot::Keeper::new(config.observed.clone());
        let host = LibvirtHost {
            inner: Arc::new(Inner {
                snapshot,
                made,
                conns: connection::Connections::new(&config.uri, conn),
                config,
                domain_type: choice.domain_type,
                domain_type_reason: choice.reason,
                local,
                known: Mutex::new(HashMap::new()),
                consoles: Mutex::new(HashMap::new()),
                agent_stages: Mutex::new(HashMap::new()),
                guest_fs: Mutex::new(HashMap::new()),
                calls: AtomicU64::new(0),
                facts: Mutex::new(None),
                isolation,
                fetching: tokio::sync::Mutex::new(()),
                foreign: Mutex::new(Vec::new()),
                network_present: Mutex::new(None),
                volumes: Mutex::new(None),
                host_state: Mutex::new(Default::default()),
                identity: Mutex::new(identity),
                identity_changed: Mutex::new(None),
                call_timeout: Mutex::new(Some(connection::CALL_TIMEOUT)),
                stuck: Mutex::new(None),
            }),
        };
        host.inner.restore_snapshot();
        Ok(host)
    }

    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    pub fn domain_type(&self) -> DomainType {
        self.inner.domain_type
    }

    /// Which libvirtd the current connection reached.
    pub fn identity(&self) -> HostIdentity {
        self.inner.identity.lock().expect("identity lock").clone()
    }

    /// libvirt API calls made since `connect` that reach the driver (for a
    /// remote URI: RPC round trips). Opening the connection in `connect` is
    /// not counted; reopening a dropped one is.
    pub fn libvirt_calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// The host's libvirt connection (reopened if it dropped), for what the
    /// trait does not cover: the sandbox saving the test driver's state, and
    /// tests inspecting a private `test:///` node, which no second
    /// connection can see.
    pub fn connection(&self) -> Result<Arc<Connect>, ProviderError> {
        self.inner.conn()
    }

    /// Record a drain's outcome on the domain without telling its guest
    /// (the sandbox, whose guests are played).
    pub async fn record_drain(&self, vm: &VmRef, state: DrainState) -> Result<(), ProviderError> {
        let vm = vm.clone();
        self.blocking(move |i| {
            let _changing = i.changing();
            i.record_drain(&vm, state)
        })
        .await
    }

    /// Path of a VM generation's serial console log on the host.
    pub fn console_log_path(&self, slot: &str, generation: u64) -> PathBuf {
        self.inner.console_log_path(slot, generation)
    }
}

impl Inner {
    fn console_log_path(&self, slot: &str, generation: u64) -> PathBuf {
        self.config
            .console_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONSOLE_DIR))
            .join(crate::model::names::console_log_name(slot, generation))
    }
}

#[async_trait]
impl Hypervisor for LibvirtHost {
    fn host(&self) -> &str {
        &self.inner.config.name
    }

    async fn facts(&self) -> Result<HostFacts, ProviderError> {
        self.blocking(|i| i.facts()).await
    }

    async fn observe(&self, fleet: &str) -> Result<Vec<ObservedVm>, ProviderError> {
        let fleet = fleet.to_string();
        self.blocking(move |i| i.observe(&fleet)).await
    }

    fn foreign_names(&self) -> Vec<String> {
        self.inner
            .foreign
            .lock()
            .expect("foreign names lock")
            .clone()
    }

    async fn create(&self, vm: &VmCreate) -> Result<(), ProviderError> {
        // Held across the image download too; the blocking part holds its
        // own, which outlives this future if the call is cut short.
        let _changing = self.inner.changing();
        if let Ok(ImageSource::Url { url, sha256 }) = ImageSource::parse(&vm.owner.shape.image) {
            self.ensure_url_image(&url, &sha256).await?;
        }
        let vm = vm.clone();
        let r = self
            .blocking(move |i| {
                let _changing = i.changing();
                i.create(&vm)
            })
            .await;
        if r.is_err() {
            self.inner.forget_network();
        }
        r
    }

    async fn start(&self, vm: &VmRef) -> Result<(), ProviderError> {
        let vm = vm.clone();
        self.blocking(move |i| {
            let _changing = i.changing();
            i.start(&vm)
        })
        .await
    }

    async fn delete(&self, vm: &VmRef, remove_cache: bool) -> Result<(), ProviderError> {
        let vm = vm.clone();
        self.blocking(move |i| {
            let _changing = i.changing();
            i.delete(&vm, remove_cache)
        })
        .await
    }

    async fn remove_seed(&self, vm: &VmRef) -> Result<(), ProviderError> {
        let vm = vm.clone();
        self.blocking(move |i| {
            let _changing = i.changing();
            i.remove_seed(&vm)
        })
        .await
    }

    async fn drain(&self, vm: &VmRef) -> Result<DrainState, ProviderError> {
        let vm = vm.clone();
        self.blocking(move |i| {
            let _changing = i.changing();
            i.drain(&vm)
        })
        .await
    }

    async fn cache_usage(&self, fleet: &str) -> Result<Vec<CacheUsage>, ProviderError> {
        let fleet = fleet.to_string();
        self.blocking(move |i| i.cache_usage(&fleet)).await
    }

    fn host_state(&self) -> ObservedHost {
        self.last_host_state()
    }

    async fn ensure_runner_volume(
        &self,
        volume: &str,
        local: &crate::model::runner::LocalTarball,
    ) -> Result<(), ProviderError> {
        let _changing = self.inner.changing();
        self.upload_runner_volume(volume, local).await
    }

    async fn ensure_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        let (network, filter) = (network.to_string(), filter.to_string());
        self.blocking(move |i| {
            let _changing = i.changing();
            i.ensure_network(&network, &filter)
        })
        .await
    }

    async fn remove_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        let (network, filter) = (network.to_string(), filter.to_string());
        self.blocking(move |i| {
            let _changing = i.changing();
            i.remove_network(&network, &filter)
        })
        .await
    }

    async fn remove_leftover(&self, leftover: &Leftover) -> Result<(), ProviderError> {
        let leftover = leftover.clone();
        self.blocking(move |i| {
            let _changing = i.changing();
            i.remove_leftover(&leftover)
        })
        .await
    }
}
