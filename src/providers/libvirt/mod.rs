//! The libvirt [`Hypervisor`]: one [`LibvirtHost`] per host, over the
//! blocking virt crate.
//!
//! - One long-lived connection per host, reopened when it dropped; every
//!   libvirt call runs on `spawn_blocking`.
//! - A domain is hangar's only if its XML carries hangar's ownership element
//!   ([`crate::model::ownership::OWNERSHIP_NS`]); anything else is never returned and never
//!   touched. Ownership never changes under a domain UUID (a new generation is
//!   a new domain), so it is read once per UUID and cached.
//! - Observation costs one libvirt round trip per host in steady state:
//!   `virConnectGetAllDomainStats(STATE)` returns every domain with its
//!   name, UUID and state in one RPC. Only UUIDs not seen before cost one more
//!   call each (`virDomainGetXMLDesc`, which also says whether the seed is
//!   attached). [`LibvirtHost::libvirt_calls`] counts the calls.
//! - Names are deterministic ([`crate::model::names::root_volume_name`] and friends) so a
//!   create cut short is adopted by the next one, never duplicated.

pub mod console;
pub mod download;
pub mod image;
pub mod network;
pub mod seed;
pub mod test_node;
pub mod xml;

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::io::Read;
use std::os::raw::{c_char, c_int};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;
use virt::sys;

use self::console::ConsoleCursor;
use self::image::ImageSource;
use self::xml::{Backing, DomainSpec, VolumeFormat, VolumeSpec};
use super::{CacheUsage, ErrorKind, Hypervisor, ProviderError, VmCreate};
use crate::model::guest::GuestStage;
use crate::model::host::{DirectBoot, DomainType, HostFacts, NetworkAttachment};
use crate::model::ownership::Ownership;
use crate::plan::model::{ObservedVm, VmRef, VmState};

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
}

/// A libvirt host. Cheap to clone (shared state).
#[derive(Clone)]
pub struct LibvirtHost {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
enum Known {
    Foreign,
    Ours {
        owner: Box<Ownership>,
        seed_attached: bool,
    },
}

struct Inner {
    config: HostConfig,
    conn: Mutex<Option<Arc<Connect>>>,
    domain_type: DomainType,
    domain_type_reason: String,
    /// The host is this machine: console logs can be read directly.
    local: bool,
    /// By domain UUID.
    known: Mutex<HashMap<String, Known>>,
    /// By domain UUID.
    consoles: Mutex<HashMap<String, ConsoleCursor>>,
    calls: AtomicU64,
    /// See [`Inner::facts`].
    facts: Mutex<Option<CachedFacts>>,
    /// The fleet's isolated network here, made true before a VM that
    /// attaches to it is defined.
    isolation: Option<crate::model::IsolatedNetwork>,
    /// One URL image download at a time per host: concurrent creates of a
    /// new fleet all need the same base image.
    fetching: tokio::sync::Mutex<()>,
    /// Names of the domains the last observation found not to be the
    /// fleet's.
    foreign: Mutex<Vec<String>>,
}

/// How long the pool's free space may be reused when nothing of ours on the
/// host changed it. The engine's pass only sizes slots by cpus and memory;
/// free space is for `status` (a fresh process) and operators.
const POOL_FREE_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// Host facts kept between passes, so that steady-state observation is the
/// one listing call.
#[derive(Debug, Clone, Copy)]
struct CachedFacts {
    /// From `virNodeGetInfo`: fixed while the connection lives.
    memory_bytes: u64,
    cpus: u32,
    /// From `virStoragePoolGetInfo`, with when it was read; `None` once a
    /// create or delete of ours changed the pool.
    pool_free: Option<(u64, Instant)>,
}

static QUIET_LIBVIRT: Once = Once::new();

/// Whether a libvirt URI names this machine (no host part, or a unix socket).
pub fn uri_is_local(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return true;
    };
    let authority = rest.split('/').next().unwrap_or("");
    authority.is_empty() || scheme.ends_with("+unix")
}

fn map_error(host: &str, what: &str, e: &virt::error::Error) -> ProviderError {
    let kind = match e.code() {
        virt::enumutil::Enum::Known(code) => match code {
            ErrorNumber::NoDomain | ErrorNumber::NoStorageVolume | ErrorNumber::NoStoragePool => {
                ErrorKind::NotFound
            }
            ErrorNumber::SystemError
            | ErrorNumber::Rpc
            | ErrorNumber::NoConnect
            | ErrorNumber::InvalidConn
            | ErrorNumber::OperationTimeout
            | ErrorNumber::OperationAborted
            | ErrorNumber::AgentUnresponsive
            | ErrorNumber::ResourceBusy
            | ErrorNumber::NoServer
            | ErrorNumber::NoClient => ErrorKind::Transient,
            _ => ErrorKind::Refused,
        },
        virt::enumutil::Enum::Unknown(_) => ErrorKind::Refused,
    };
    ProviderError::new(host, kind, format!("{what}: {}", e.message()))
}

fn optional<T>(r: Result<T, ProviderError>) -> Result<Option<T>, ProviderError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn vm_state(raw: c_int) -> VmState {
    match raw as sys::virDomainState {
        sys::VIR_DOMAIN_RUNNING => VmState::Running,
        sys::VIR_DOMAIN_PAUSED => VmState::Paused,
        sys::VIR_DOMAIN_SHUTOFF => VmState::ShutOff,
        sys::VIR_DOMAIN_CRASHED => VmState::Crashed,
        _ => VmState::Other,
    }
}

struct Listed {
    dom: Domain,
    name: String,
    uuid: String,
    state: c_int,
}

/// Every domain with its state, in one `virConnectGetAllDomainStats` RPC.
/// virt 0.5's `all_domain_stats` leaks its records and exposes no fields, so
/// this calls the C API and frees the list itself.
fn list_domains(conn: &Connect) -> Result<Vec<Listed>, virt::error::Error> {
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: `conn` is a live connection; libvirt allocates `records`, a
    // NULL-terminated array we free below with the matching libvirt call.
    let n = unsafe {
        sys::virConnectGetAllDomainStats(
            conn.as_ptr(),
            sys::VIR_DOMAIN_STATS_STATE,
            &mut records,
            0,
        )
    };
    if n < 0 {
        return Err(virt::error::Error::last_error());
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: `i < n` entries are valid records owned by the list; the
        // name pointer lives as long as the domain object, and we take our
        // own reference on the domain before the list is freed.
        unsafe {
            let rec = *records.add(i);
            let dom_ptr = (*rec).dom;
            let name = CStr::from_ptr(sys::virDomainGetName(dom_ptr))
                .to_string_lossy()
                .into_owned();
            let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
            let uuid = if sys::virDomainGetUUIDString(dom_ptr, buf.as_mut_ptr()) == 0 {
                CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
            } else {
                String::new()
            };
            let mut state: c_int = sys::VIR_DOMAIN_NOSTATE as c_int;
            sys::virTypedParamsGetInt(
                (*rec).params,
                (*rec).nparams,
                c"state.state".as_ptr(),
                &mut state,
            );
            sys::virDomainRef(dom_ptr);
            out.push(Listed {
                dom: Domain::from_ptr(dom_ptr),
                name,
                uuid,
                state,
            });
        }
    }
    // SAFETY: the array came from virConnectGetAllDomainStats.
    unsafe { sys::virDomainStatsRecordListFree(records) };
    Ok(out)
}

/// The base image an overlay is made on.
struct Base {
    backing: Backing,
    capacity_bytes: Option<u64>,
}

impl LibvirtHost {
    /// Open the connection and decide the domain type. Blocking: call it
    /// before the runtime or on `spawn_blocking`.
    ///
    /// Domain type: the test driver always uses `test`. Otherwise `kvm` only
    /// when asked for (and offered by the host's capabilities); when not
    /// asked, `qemu`: `/dev/kvm` may open and guests still hang right after
    /// the kernel starts on this project's machines, so kvm is never assumed.
    pub fn connect(config: HostConfig) -> Result<LibvirtHost, ProviderError> {
        Self::connect_isolated(config, None)
    }

    /// [`LibvirtHost::connect`], and `create` ensures `isolation` (network
    /// and nwfilter, see [`network::ensure`]) before it defines a VM
    /// attached to that network with that filter.
    pub fn connect_isolated(
        config: HostConfig,
        isolation: Option<crate::model::IsolatedNetwork>,
    ) -> Result<LibvirtHost, ProviderError> {
        QUIET_LIBVIRT.call_once(virt::error::clear_error_callback);
        let local = uri_is_local(&config.uri);
        let conn = Connect::open(Some(&config.uri))
            .map_err(|e| map_error(&config.name, &format!("connect to {}", config.uri), &e))?;
        let name = config.name.clone();
        let refuse = |msg: String| ProviderError::new(&name, ErrorKind::Refused, msg);
        let driver = conn
            .driver_type()
            .map_err(|e| map_error(&name, "read driver type", &e))?;
        let (domain_type, reason) = if driver.eq_ignore_ascii_case("test") {
            match config.domain_type {
                None | Some(DomainType::Test) => (DomainType::Test, "libvirt test driver".into()),
                Some(other) => {
                    return Err(refuse(format!(
                        "domain type {other:?} asked for, but {} is the test driver",
                        config.uri
                    )))
                }
            }
        } else {
            let caps = conn
                .capabilities()
                .map_err(|e| map_error(&name, "read capabilities", &e))?;
            let types = xml::capability_domain_types(&caps)
                .map_err(|e| refuse(format!("capabilities: {e}")))?;
            let has_kvm = types.iter().any(|t| t == "kvm");
            match config.domain_type {
                Some(DomainType::Kvm) if has_kvm => {
                    (DomainType::Kvm, "kvm asked for in the host config".into())
                }
                Some(DomainType::Kvm) => {
                    return Err(refuse(
                        "kvm asked for, but the host's capabilities offer no kvm domain".into(),
                    ))
                }
                Some(DomainType::Qemu) => (
                    DomainType::Qemu,
                    "qemu (software emulation) asked for in the host config".into(),
                ),
                Some(DomainType::Test) => {
                    return Err(refuse(format!(
                        "domain type test needs the test driver, {} is not",
                        config.uri
                    )))
                }
                None if has_kvm => (
                    DomainType::Qemu,
                    "auto: kvm is offered but not proven to boot guests here \
                     (guests were seen to hang under kvm on this kind of machine); \
                     using qemu software emulation, set the domain type to kvm to use it"
                        .into(),
                ),
                None => (
                    DomainType::Qemu,
                    "auto: the host offers no kvm; using qemu software emulation".into(),
                ),
            }
        };
        Ok(LibvirtHost {
            inner: Arc::new(Inner {
                config,
                conn: Mutex::new(Some(Arc::new(conn))),
                domain_type,
                domain_type_reason: reason,
                local,
                known: Mutex::new(HashMap::new()),
                consoles: Mutex::new(HashMap::new()),
                calls: AtomicU64::new(0),
                facts: Mutex::new(None),
                isolation,
                fetching: tokio::sync::Mutex::new(()),
                foreign: Mutex::new(Vec::new()),
            }),
        })
    }

    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    pub fn domain_type(&self) -> DomainType {
        self.inner.domain_type
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

    /// Path of a VM generation's serial console log on the host.
    pub fn console_log_path(&self, slot: &str, generation: u64) -> PathBuf {
        self.inner.console_log_path(slot, generation)
    }

    /// The domain XML `create` would define for `owner` on this host (no
    /// UUID, with the seed disk), for `hangar render domain`.
    pub fn render_domain(&self, owner: &Ownership, boot: Option<&DirectBoot>) -> String {
        let i = &self.inner;
        domain_xml(&DomainSpec::for_vm(
            i.domain_type,
            &i.config.storage_pool,
            owner,
            boot,
            &i.config.network,
            true,
            Some(
                i.console_log_path(&owner.slot, owner.generation)
                    .display()
                    .to_string(),
            ),
        ))
    }

    /// A URL base image in the pool as `hangar-image-<sha16>.qcow2`:
    /// downloaded here once, verified, uploaded under a `.partial` name and
    /// copied to its final name only when complete, so that an interrupted
    /// upload is never taken for the image.
    async fn ensure_url_image(&self, url: &str, sha256: &str) -> Result<(), ProviderError> {
        let _one = self.inner.fetching.lock().await;
        let name = image::url_volume_name(sha256);
        let partial = format!("{name}.partial");
        let (n, p) = (name.clone(), partial.clone());
        if self.blocking(move |i| i.url_image_present(&n, &p)).await? {
            return Ok(());
        }
        let dir = std::env::temp_dir().join("hangar-images");
        tracing::info!(host = %self.inner.config.name, %url, "downloading base image");
        let got = download::fetch_verified(url, sha256, &dir)
            .await
            .map_err(|e| {
                let kind = match e {
                    download::DownloadError::Transient { .. } => ErrorKind::Transient,
                    download::DownloadError::Refused { .. } => ErrorKind::Refused,
                };
                ProviderError::new(&self.inner.config.name, kind, e.to_string())
            })?;
        let path = got.path.clone();
        let uploaded = self
            .blocking(move |i| i.upload_image(&name, &partial, &got))
            .await;
        let _ = std::fs::remove_file(&path);
        uploaded
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, ProviderError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| {
                ProviderError::new(
                    &self.inner.config.name,
                    ErrorKind::Transient,
                    format!("libvirt task failed: {e}"),
                )
            })?
    }
}

impl Inner {
    fn err(&self, kind: ErrorKind, message: impl Into<String>) -> ProviderError {
        ProviderError::new(&self.config.name, kind, message)
    }

    fn console_log_path(&self, slot: &str, generation: u64) -> PathBuf {
        self.config
            .console_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONSOLE_DIR))
            .join(crate::model::names::console_log_name(slot, generation))
    }

    /// The connection, reopened if it dropped.
    fn conn(&self) -> Result<Arc<Connect>, ProviderError> {
        let mut guard = self.conn.lock().expect("connection lock");
        if let Some(c) = guard.as_ref() {
            // virConnectIsAlive is answered locally, no round trip.
            if c.is_alive().unwrap_or(false) {
                return Ok(c.clone());
            }
        }
        *guard = None;
        // A new connection may be a new host (or one resized): read again.
        *self.facts.lock().expect("facts lock") = None;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let c = Connect::open(Some(&self.config.uri)).map_err(|e| {
            map_error(
                &self.config.name,
                &format!("reconnect to {}", self.config.uri),
                &e,
            )
        })?;
        let c = Arc::new(c);
        *guard = Some(c.clone());
        Ok(c)
    }

    /// A fault point of the reliability suite (feature `failpoints`; nothing
    /// without it). When the point is configured, the test driver's state,
    /// which lives in this process, is first written to its node file, so
    /// that a kill here leaves on disk what a real libvirtd would hold; the
    /// warning tells the suite where the process stands.
    fn fault_point(&self, conn: &Connect, name: &str) {
        #[cfg(feature = "failpoints")]
        if fail::list().iter().any(|(n, _)| n == name) {
            let node_file = self
                .config
                .uri
                .strip_prefix("test://")
                .filter(|p| p.ends_with(".xml") && std::path::Path::new(p).is_file());
            if let (DomainType::Test, Some(path)) = (self.domain_type, node_file) {
                let tmp = format!("{path}.fault");
                let saved = test_node::dump(conn)
                    .map_err(|e| e.to_string())
                    .and_then(|xml| {
                        std::fs::write(&tmp, xml)
                            .and_then(|()| std::fs::rename(&tmp, path))
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = saved {
                    tracing::warn!(fault_point = name, error = %e, "sandbox state not saved");
                }
            }
            tracing::warn!(fault_point = name, "fault point reached");
            fail::fail_point!(name);
        }
        let _ = (conn, name);
    }

    /// One counted libvirt call, its error mapped. A transient failure drops
    /// the connection so the next call reopens it.
    fn call<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, virt::error::Error>,
    ) -> Result<T, ProviderError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        f().map_err(|e| {
            let err = map_error(&self.config.name, what, &e);
            if err.kind == ErrorKind::Transient {
                *self.conn.lock().expect("connection lock") = None;
            }
            err
        })
    }

    fn pool(&self, conn: &Connect) -> Result<StoragePool, ProviderError> {
        let name = &self.config.storage_pool;
        let pool = self
            .call("look up storage pool", || {
                conn.lookup_storage_pool_by_name(name)
            })
            .map_err(|e| match e.kind {
                ErrorKind::NotFound => self.err(
                    ErrorKind::Refused,
                    format!("storage pool {name} does not exist"),
                ),
                _ => e,
            })?;
        Ok(pool)
    }

    fn lookup_volume(
        &self,
        pool: &StoragePool,
        name: &str,
    ) -> Result<Option<StorageVol>, ProviderError> {
        optional(self.call(&format!("look up volume {name}"), || {
            pool.lookup_storage_vol_by_name(name)
        }))
    }

    fn volume_facts(
        &self,
        vol: &StorageVol,
        name: &str,
    ) -> Result<xml::VolumeFacts, ProviderError> {
        let text = self.call(&format!("read volume {name}"), || vol.xml_desc(0))?;
        xml::parse_volume(&text)
            .map_err(|e| self.err(ErrorKind::Refused, format!("volume {name}: {e}")))
    }

    /// Ownership and seed state of a domain, from its XML. `Ok(None)`: the
    /// domain vanished meanwhile.
    fn read_known(&self, dom: &Domain, name: &str) -> Result<Option<Known>, ProviderError> {
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
        Ok(Some(match facts.owner {
            Some(owner) => Known::Ours {
                owner: Box::new(owner),
                seed_attached: facts.seed_attached,
            },
            None => Known::Foreign,
        }))
    }

    fn observe(&self, fleet: &str) -> Result<Vec<ObservedVm>, ProviderError> {
        let conn = self.conn()?;
        let listed = self.call("list domains", || list_domains(&conn))?;
        {
            let mut known = self.known.lock().expect("ownership cache lock");
            // A set: a scan of the listing per cached UUID was quadratic.
            let live: HashSet<&str> = listed.iter().map(|d| d.uuid.as_str()).collect();
            known.retain(|uuid, _| live.contains(uuid.as_str()));
            self.consoles
                .lock()
                .expect("console lock")
                .retain(|uuid, _| live.contains(uuid.as_str()));
        }
        let mut out = Vec::new();
        let mut foreign = Vec::new();
        for d in listed {
            let cached = self
                .known
                .lock()
                .expect("ownership cache lock")
                .get(&d.uuid)
                .cloned();
            let known = match cached {
                Some(k) => k,
                None => match self.read_known(&d.dom, &d.name) {
                    Ok(Some(k)) => {
                        self.known
                            .lock()
                            .expect("ownership cache lock")
                            .insert(d.uuid.clone(), k.clone());
                        k
                    }
                    Ok(None) => continue,
                    // A domain with a broken hangar element is neither
                    // adopted nor fatal for the host: report, skip, retry
                    // next pass. `create` refuses its name.
                    Err(e) if e.kind == ErrorKind::Refused => {
                        tracing::warn!(host = %self.config.name, error = %e, "skipping domain");
                        foreign.push(d.name);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let Known::Ours {
                owner,
                seed_attached,
            } = known
            else {
                foreign.push(d.name);
                continue;
            };
            if owner.fleet != fleet {
                foreign.push(d.name);
                continue;
            }
            let guest = self.guest_stage(&d.uuid, &owner);
            out.push(ObservedVm {
                name: d.name,
                uuid: d.uuid,
                host: self.config.name.clone(),
                state: vm_state(d.state),
                owner: *owner,
                guest,
                seed_attached,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        foreign.sort();
        *self.foreign.lock().expect("foreign names lock") = foreign;
        Ok(out)
    }

    fn guest_stage(&self, uuid: &str, owner: &Ownership) -> Option<GuestStage> {
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

    /// Cpus and memory are read once per connection; the pool's free space
    /// again after a create or delete of ours, or when older than
    /// [`POOL_FREE_MAX_AGE`]. In steady state this costs no round trip.
    fn facts(&self) -> Result<HostFacts, ProviderError> {
        let conn = self.conn()?;
        let cached = *self.facts.lock().expect("facts lock");
        let (memory_bytes, cpus) = match cached {
            Some(c) => (c.memory_bytes, c.cpus),
            None => {
                let node = self.call("read node info", || conn.node_info())?;
                (node.memory * 1024, node.cpus)
            }
        };
        let fresh = cached
            .and_then(|c| c.pool_free)
            .filter(|(_, at)| at.elapsed() < POOL_FREE_MAX_AGE);
        let pool_free = match fresh {
            Some(f) => f,
            None => {
                let pool = self.pool(&conn)?;
                let info = self.call("read storage pool info", || pool.info())?;
                (info.available, Instant::now())
            }
        };
        *self.facts.lock().expect("facts lock") = Some(CachedFacts {
            memory_bytes,
            cpus,
            pool_free: Some(pool_free),
        });
        Ok(HostFacts {
            memory_bytes,
            cpus,
            pool_free_bytes: Some(pool_free.0),
            domain_type: self.domain_type,
            domain_type_reason: self.domain_type_reason.clone(),
        })
    }

    /// Our create or delete changed the pool: read its free space again.
    fn pool_changed(&self) {
        if let Some(c) = self.facts.lock().expect("facts lock").as_mut() {
            c.pool_free = None;
        }
    }

    /// Our domain for `vm`, checked against its ownership. `Ok(None)`: gone.
    fn our_domain(
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
        let cached = self
            .known
            .lock()
            .expect("ownership cache lock")
            .get(&vm.uuid)
            .cloned();
        let known = match cached {
            Some(k) => k,
            None => match self.read_known(&dom, &vm.name)? {
                Some(k) => k,
                None => return Ok(None),
            },
        };
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

    fn base_image(
        &self,
        conn: &Connect,
        pool: &StoragePool,
        image: &str,
    ) -> Result<Base, ProviderError> {
        let source =
            ImageSource::parse(image).map_err(|e| self.err(ErrorKind::Refused, e.to_string()))?;
        let (vol, name) = match source {
            ImageSource::HostPath(path) => {
                if let Some(vol) = optional(self.call(&format!("look up image {path}"), || {
                    conn.lookup_storage_vol_by_path(&path)
                }))? {
                    (vol, path)
                } else {
                    return self.host_file_base(&path);
                }
            }
            ImageSource::PoolVolume(name) => match self.lookup_volume(pool, &name)? {
                Some(vol) => (vol, name),
                None => {
                    return Err(self.err(
                        ErrorKind::Refused,
                        format!(
                            "base image volume {name} is not in pool {}",
                            self.config.storage_pool
                        ),
                    ))
                }
            },
            ImageSource::Url { url, sha256 } => {
                let name = image::url_volume_name(&sha256);
                match self.lookup_volume(pool, &name)? {
                    Some(vol) => (vol, name),
                    None => {
                        return Err(self.err(
                            ErrorKind::Refused,
                            format!(
                                "image {url} is not in pool {} (volume {name}): its download \
                                 did not complete",
                                self.config.storage_pool
                            ),
                        ))
                    }
                }
            }
        };
        let facts = self.volume_facts(&vol, &name)?;
        let path = match facts.path {
            Some(p) => p,
            None => self.call(&format!("read path of {name}"), || vol.path())?,
        };
        let format = facts
            .format
            .as_deref()
            .and_then(VolumeFormat::parse)
            .ok_or_else(|| {
                self.err(
                    ErrorKind::Refused,
                    format!("base image {name} is neither qcow2 nor raw"),
                )
            })?;
        Ok(Base {
            backing: Backing { path, format },
            capacity_bytes: facts.capacity_bytes,
        })
    }

    /// A base image outside every pool: only its path is known to libvirt.
    fn host_file_base(&self, path: &str) -> Result<Base, ProviderError> {
        // On a remote host the file cannot be probed from here; qcow2 is
        // what cloud images ship as.
        let format = if self.local {
            let mut magic = [0u8; 4];
            let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic));
            match read {
                Ok(()) if &magic == b"QFI\xfb" => VolumeFormat::Qcow2,
                Ok(()) => VolumeFormat::Raw,
                Err(e) => {
                    return Err(self.err(ErrorKind::Refused, format!("base image {path}: {e}")))
                }
            }
        } else {
            VolumeFormat::Qcow2
        };
        Ok(Base {
            backing: Backing {
                path: path.to_string(),
                format,
            },
            capacity_bytes: None,
        })
    }

    /// Whether the URL image `name` is in the pool; a `.partial` left by an
    /// interrupted upload is removed.
    fn url_image_present(&self, name: &str, partial: &str) -> Result<bool, ProviderError> {
        let conn = self.conn()?;
        let pool = self.pool(&conn)?;
        if let Some(old) = self.lookup_volume(&pool, partial)? {
            self.call(&format!("delete {partial}"), || old.delete(0))?;
        }
        Ok(self.lookup_volume(&pool, name)?.is_some())
    }

    fn upload_image(
        &self,
        name: &str,
        partial: &str,
        got: &download::Downloaded,
    ) -> Result<(), ProviderError> {
        let conn = self.conn()?;
        let pool = self.pool(&conn)?;
        self.pool_changed();
        let (format, capacity) = match got.format {
            download::ImageFormat::Qcow2 { virtual_size } => (VolumeFormat::Qcow2, virtual_size),
            download::ImageFormat::Raw => (VolumeFormat::Raw, got.bytes),
        };
        let spec = |name: &str| VolumeSpec {
            name: name.to_string(),
            capacity_bytes: capacity.max(got.bytes),
            format,
            backing: None,
        };
        let part = self.create_volume(&pool, &spec(partial))?;
        let sent = if self.domain_type == DomainType::Test {
            // The test driver has no upload; its volumes hold no data.
            Ok(())
        } else {
            self.send_file(&conn, &part, partial, &got.path, got.bytes)
        };
        let done = sent.and_then(|()| {
            self.call(&format!("copy {partial} to {name}"), || {
                StorageVol::create_xml_from(&pool, &volume_xml(&spec(name)), &part, 0)
            })
        });
        let removed = self.call(&format!("delete {partial}"), || part.delete(0));
        done?;
        removed?;
        Ok(())
    }

    /// Stream a local file into a volume over the libvirt connection (the
    /// host may be remote).
    fn send_file(
        &self,
        conn: &Connect,
        vol: &StorageVol,
        name: &str,
        path: &std::path::Path,
        len: u64,
    ) -> Result<(), ProviderError> {
        let mut file = std::fs::File::open(path)
            .map_err(|e| self.err(ErrorKind::Refused, format!("{}: {e}", path.display())))?;
        self.call(&format!("upload {name}"), || {
            let stream = Stream::new(conn, 0)?;
            vol.upload(&stream, 0, len, 0)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(_) => {
                        stream.abort()?;
                        return Err(virt::error::Error::last_error());
                    }
                };
                let mut sent = 0usize;
                while sent < n {
                    let k = stream.send(&buf[sent..n])?;
                    if k <= 0 {
                        stream.abort()?;
                        return Err(virt::error::Error::last_error());
                    }
                    sent += k as usize;
                }
            }
            stream.finish()
        })
    }

    fn create_volume(
        &self,
        pool: &StoragePool,
        spec: &VolumeSpec,
    ) -> Result<StorageVol, ProviderError> {
        let text = volume_xml(spec);
        self.call(&format!("create volume {}", spec.name), || {
            StorageVol::create_xml(pool, &text, 0)
        })
    }

    /// Volumes of other generations of this slot that a create cut short
    /// left behind: once no domain of the slot is left, the next create
    /// starts again at generation 1, and nothing else would ever remove
    /// them (a seed among them carries credentials). Removed only when they
    /// look like ours, by the tests adoption uses (a qcow2 overlay of this
    /// base; a raw seed), and no domain on the host uses them.
    fn remove_stale_generations(
        &self,
        conn: &Connect,
        pool: &StoragePool,
        owner: &Ownership,
        base: &Base,
    ) -> Result<(), ProviderError> {
        let prefix = format!("{}-g", owner.slot);
        let names = self.call("list volumes", || pool.list_volumes())?;
        let stale: Vec<String> = names
            .into_iter()
            .filter(|n| {
                let Some(rest) = n.strip_prefix(&prefix) else {
                    return false;
                };
                let Some((generation, kind)) = rest.split_once('-') else {
                    return false;
                };
                matches!(kind, "root.qcow2" | "seed.iso")
                    && generation
                        .parse::<u64>()
                        .is_ok_and(|g| g != owner.generation)
            })
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let mut used = Vec::new();
        for dom in self.call("list domains", || conn.list_all_domains(0))? {
            let Some(text) =
                optional(self.call("read domain", || dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)))?
            else {
                continue;
            };
            let facts = xml::parse_domain(&text)
                .map_err(|e| self.err(ErrorKind::Refused, format!("domain: {e}")))?;
            used.extend(facts.volumes.into_iter().map(|(_, v)| v));
        }
        for name in stale {
            if used.contains(&name) {
                continue;
            }
            let Some(vol) = self.lookup_volume(pool, &name)? else {
                continue;
            };
            let facts = self.volume_facts(&vol, &name)?;
            let ours = if name.ends_with("root.qcow2") {
                facts.format.as_deref() == Some("qcow2")
                    && facts.backing_path.as_deref() == Some(base.backing.path.as_str())
            } else {
                facts.format.as_deref() == Some("raw") && facts.backing_path.is_none()
            };
            if ours {
                tracing::info!(host = %self.config.name, volume = %name, "removing a volume left by a create cut short");
                optional(self.call(&format!("delete volume {name}"), || vol.delete(0)))?;
            }
        }
        Ok(())
    }

    /// The generation's root overlay, made or adopted.
    fn ensure_root(
        &self,
        pool: &StoragePool,
        owner: &Ownership,
        base: &Base,
    ) -> Result<(), ProviderError> {
        let name = crate::model::names::root_volume_name(&owner.slot, owner.generation);
        if let Some(vol) = self.lookup_volume(pool, &name)? {
            let facts = self.volume_facts(&vol, &name)?;
            if facts.format.as_deref() == Some("qcow2")
                && facts.backing_path.as_deref() == Some(base.backing.path.as_str())
            {
                return Ok(());
            }
            return Err(self.err(
                ErrorKind::Refused,
                format!(
                    "volume {name} exists but is not a qcow2 overlay of {}: not hangar's, left alone",
                    base.backing.path
                ),
            ));
        }
        let capacity = owner.shape.disk_bytes.max(base.capacity_bytes.unwrap_or(0));
        self.create_volume(
            pool,
            &VolumeSpec {
                name,
                capacity_bytes: capacity,
                format: VolumeFormat::Qcow2,
                backing: Some(base.backing.clone()),
            },
        )?;
        Ok(())
    }

    /// The slot's cache volume: adopted, grown if smaller, never shrunk.
    fn ensure_cache(&self, pool: &StoragePool, owner: &Ownership) -> Result<(), ProviderError> {
        let Some(want) = owner.shape.cache_bytes else {
            return Ok(());
        };
        let name = crate::model::names::cache_volume_name(&owner.slot);
        match self.lookup_volume(pool, &name)? {
            Some(vol) => {
                let facts = self.volume_facts(&vol, &name)?;
                if facts.format.as_deref() != Some("qcow2") || facts.backing_path.is_some() {
                    return Err(self.err(
                        ErrorKind::Refused,
                        format!("volume {name} exists but is not a plain qcow2 cache volume: left alone"),
                    ));
                }
                if facts.capacity_bytes.unwrap_or(0) < want {
                    self.call(&format!("grow cache volume {name}"), || vol.resize(want, 0))?;
                }
                Ok(())
            }
            None => {
                self.create_volume(
                    pool,
                    &VolumeSpec {
                        name,
                        capacity_bytes: want,
                        format: VolumeFormat::Qcow2,
                        backing: None,
                    },
                )?;
                Ok(())
            }
        }
    }

    /// Write the generation's seed volume afresh (a retried create brings
    /// new credentials).
    fn write_seed(
        &self,
        conn: &Connect,
        pool: &StoragePool,
        vm: &VmCreate,
    ) -> Result<(), ProviderError> {
        let owner = &vm.owner;
        let name = crate::model::names::seed_volume_name(&owner.slot, owner.generation);
        let iso = seed::seed_iso(&vm.seed).map_err(|e| self.err(ErrorKind::Refused, e))?;
        if let Some(old) = self.lookup_volume(pool, &name)? {
            self.call(&format!("delete old seed {name}"), || old.delete(0))?;
        }
        let vol = self.create_volume(
            pool,
            &VolumeSpec {
                name: name.clone(),
                capacity_bytes: iso.len() as u64,
                format: VolumeFormat::Raw,
                backing: None,
            },
        )?;
        // The test driver has no virStorageVolUpload: there the seed stays
        // an empty volume of the right size. Nothing boots on the test
        // driver, so nothing reads it.
        if self.domain_type == DomainType::Test {
            return Ok(());
        }
        self.call(&format!("upload seed {name}"), || {
            let stream = Stream::new(conn, 0)?;
            vol.upload(&stream, 0, iso.len() as u64, 0)?;
            let mut sent = 0usize;
            while sent < iso.len() {
                let n = stream.send(&iso[sent..])?;
                if n <= 0 {
                    stream.abort()?;
                    return Err(virt::error::Error::last_error());
                }
                sent += n as usize;
            }
            stream.finish()
        })?;
        Ok(())
    }

    fn create(&self, vm: &VmCreate) -> Result<(), ProviderError> {
        self.pool_changed();
        let conn = self.conn()?;
        let owner = &vm.owner;
        let slot = &owner.slot;
        let pool = self.pool(&conn)?;
        let mut carried: Option<(String, Ownership)> = None;
        if let Some(dom) = optional(self.call(&format!("look up domain {slot}"), || {
            conn.lookup_domain_by_name(slot)
        }))? {
            let known = self.read_known(&dom, slot)?;
            match known {
                Some(Known::Ours { owner: theirs, .. })
                    if theirs.fleet == owner.fleet && theirs.slot == owner.slot =>
                {
                    if theirs.generation != owner.generation {
                        return Err(self.err(
                            ErrorKind::Refused,
                            format!(
                                "generation {} of {slot} is still defined: delete it before creating generation {}",
                                theirs.generation, owner.generation
                            ),
                        ));
                    }
                    if self.call(&format!("read state of {slot}"), || dom.is_active())? {
                        return Ok(());
                    }
                    let uuid = self.call(&format!("read uuid of {slot}"), || dom.uuid_string())?;
                    carried = Some((uuid, *theirs));
                }
                Some(Known::Ours { owner: theirs, .. }) => {
                    return Err(self.err(
                        ErrorKind::Refused,
                        format!("name {slot} is taken by fleet {}'s domain", theirs.fleet),
                    ))
                }
                Some(Known::Foreign) => {
                    return Err(self.err(
                        ErrorKind::Refused,
                        format!("name {slot} is taken by a domain that is not hangar's"),
                    ))
                }
                None => {}
            }
        }
        self.ensure_isolation(&conn, &vm.network)?;
        let base = self.base_image(&conn, &pool, &owner.shape.image)?;
        self.remove_stale_generations(&conn, &pool, owner, &base)?;
        self.ensure_root(&pool, owner, &base)?;
        self.ensure_cache(&pool, owner)?;
        self.write_seed(&conn, &pool, vm)?;
        self.fault_point(&conn, "after-volume-create");

        let console = self.console_log_path(slot, owner.generation);
        if self.local && self.domain_type != DomainType::Test {
            if let Some(dir) = console.parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    self.err(
                        ErrorKind::Refused,
                        format!("console dir {}: {e}", dir.display()),
                    )
                })?;
            }
        }
        // A new generation gets a new UUID; a defined-but-not-started one of
        // the same generation keeps its UUID and its ownership record.
        let (uuid, kept_owner) = match carried {
            Some((uuid, o)) => (Some(uuid), o),
            None => (None, owner.clone()),
        };
        let mut spec = DomainSpec::for_vm(
            self.domain_type,
            &self.config.storage_pool,
            &kept_owner,
            vm.boot.as_ref(),
            &vm.network,
            true,
            Some(console.display().to_string()),
        );
        spec.uuid = uuid;
        let text = domain_xml(&spec);
        let dom = self.call(&format!("define domain {slot}"), || {
            conn.define_domain_xml(&text)
        })?;
        let uuid = self.call(&format!("read uuid of {slot}"), || dom.uuid_string())?;
        self.known.lock().expect("ownership cache lock").insert(
            uuid,
            Known::Ours {
                owner: Box::new(kept_owner),
                seed_attached: true,
            },
        );
        self.fault_point(&conn, "after-define");
        self.call(&format!("start domain {slot}"), || dom.create())?;
        self.fault_point(&conn, "after-start");
        Ok(())
    }

    fn start(&self, vm: &VmRef) -> Result<(), ProviderError> {
        let conn = self.conn()?;
        let Some((dom, _)) = self.our_domain(&conn, vm)? else {
            return Err(self.err(ErrorKind::NotFound, format!("domain {} is gone", vm.name)));
        };
        if !self.call(&format!("read state of {}", vm.name), || dom.is_active())? {
            self.call(&format!("start domain {}", vm.name), || dom.create())?;
        }
        Ok(())
    }

    fn delete(&self, vm: &VmRef, remove_cache: bool) -> Result<(), ProviderError> {
        self.pool_changed();
        let conn = self.conn()?;
        let Some((dom, owner)) = self.our_domain(&conn, vm)? else {
            return Ok(());
        };
        let pool = self.pool(&conn)?;
        let text = self.call(&format!("read domain {}", vm.name), || {
            dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
        })?;
        let facts = xml::parse_domain(&text)
            .map_err(|e| self.err(ErrorKind::Refused, format!("domain {}: {e}", vm.name)))?;
        if self.call(&format!("read state of {}", vm.name), || dom.is_active())? {
            self.call(&format!("stop domain {}", vm.name), || dom.destroy())?;
        }
        let pool_name = &self.config.storage_pool;
        let referenced = |name: &str| {
            facts
                .volumes
                .iter()
                .any(|(p, v)| p == pool_name && v == name)
        };
        let root = crate::model::names::root_volume_name(&owner.slot, owner.generation);
        let seed = crate::model::names::seed_volume_name(&owner.slot, owner.generation);
        let cache = crate::model::names::cache_volume_name(&owner.slot);
        let mut doomed = Vec::new();
        if referenced(&root) {
            doomed.push(root);
        }
        // The seed may already be detached (a remove_seed cut short between
        // detach and delete); its name still says whose it is.
        doomed.push(seed);
        if remove_cache && referenced(&cache) {
            doomed.push(cache);
        }
        for name in doomed {
            if let Some(vol) = self.lookup_volume(&pool, &name)? {
                optional(self.call(&format!("delete volume {name}"), || vol.delete(0)))?;
            }
        }
        if self.local {
            let log = self.console_log_path(&owner.slot, owner.generation);
            match std::fs::remove_file(&log) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(host = %self.config.name, path = %log.display(), error = %e,
                    "cannot remove console log")
                }
            }
        }
        self.fault_point(&conn, "mid-delete");
        // Last: until here the domain's ownership record lets the next pass
        // finish a delete cut short.
        optional(self.call(&format!("undefine domain {}", vm.name), || dom.undefine()))?;
        self.known
            .lock()
            .expect("ownership cache lock")
            .remove(&vm.uuid);
        self.consoles.lock().expect("console lock").remove(&vm.uuid);
        Ok(())
    }

    fn remove_seed(&self, vm: &VmRef) -> Result<(), ProviderError> {
        self.pool_changed();
        let conn = self.conn()?;
        let Some((dom, owner)) = self.our_domain(&conn, vm)? else {
            return Ok(());
        };
        let pool = self.pool(&conn)?;
        let disk = xml::seed_disk(&self.config.storage_pool, &owner.slot, owner.generation);
        let disk_text = xml::disk_xml(&disk);
        let has_seed = |flags: u32| -> Result<bool, ProviderError> {
            let text = self.call(&format!("read domain {}", vm.name), || dom.xml_desc(flags))?;
            let facts = xml::parse_domain(&text)
                .map_err(|e| self.err(ErrorKind::Refused, format!("domain {}: {e}", vm.name)))?;
            Ok(facts.seed_attached)
        };
        if self.domain_type == DomainType::Test {
            // The test driver cannot detach devices: redefine the persistent
            // config without the seed (same UUID, same ownership). Nothing
            // runs there, so there is no live device to unplug.
            let text = self.call(&format!("read domain {}", vm.name), || {
                dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            })?;
            if xml::parse_domain(&text)
                .map(|f| f.seed_attached)
                .unwrap_or(false)
            {
                let edited = xml::without_seed_disk(&text).map_err(|e| {
                    self.err(ErrorKind::Refused, format!("domain {}: {e}", vm.name))
                })?;
                self.call(&format!("redefine {} without its seed", vm.name), || {
                    conn.define_domain_xml(&edited)
                })?;
            }
        } else {
            if has_seed(sys::VIR_DOMAIN_XML_INACTIVE)? {
                self.call(&format!("detach seed of {} (config)", vm.name), || {
                    dom.detach_device_flags(&disk_text, sys::VIR_DOMAIN_AFFECT_CONFIG)
                })?;
            }
            if self.call(&format!("read state of {}", vm.name), || dom.is_active())? && has_seed(0)?
            {
                // Hot-unplug needs the guest's cooperation and may complete
                // after this returns; the volume is deleted either way.
                self.call(&format!("detach seed of {} (live)", vm.name), || {
                    dom.detach_device_flags(&disk_text, sys::VIR_DOMAIN_AFFECT_LIVE)
                })?;
            }
        }
        if let Some(vol) = self.lookup_volume(&pool, &disk.volume)? {
            optional(self.call(&format!("delete volume {}", disk.volume), || vol.delete(0)))?;
        }
        if let Some(Known::Ours { seed_attached, .. }) = self
            .known
            .lock()
            .expect("ownership cache lock")
            .get_mut(&vm.uuid)
        {
            *seed_attached = false;
        }
        Ok(())
    }

    fn cache_usage(&self, fleet: &str) -> Result<Vec<CacheUsage>, ProviderError> {
        let vms = self.observe(fleet)?;
        let conn = self.conn()?;
        let pool = self.pool(&conn)?;
        let mut out = Vec::new();
        for vm in vms {
            if vm.owner.shape.cache_bytes.is_none() {
                continue;
            }
            let name = crate::model::names::cache_volume_name(&vm.owner.slot);
            if let Some(vol) = self.lookup_volume(&pool, &name)? {
                let info = self.call(&format!("read volume {name}"), || vol.info())?;
                out.push(CacheUsage {
                    slot: vm.owner.slot.clone(),
                    allocated_bytes: info.allocation,
                    capacity_bytes: info.capacity,
                });
            }
        }
        Ok(out)
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
        if let Ok(ImageSource::Url { url, sha256 }) = ImageSource::parse(&vm.owner.shape.image) {
            self.ensure_url_image(&url, &sha256).await?;
        }
        let vm = vm.clone();
        self.blocking(move |i| i.create(&vm)).await
    }

    async fn start(&self, vm: &VmRef) -> Result<(), ProviderError> {
        let vm = vm.clone();
        self.blocking(move |i| i.start(&vm)).await
    }

    async fn delete(&self, vm: &VmRef, remove_cache: bool) -> Result<(), ProviderError> {
        let vm = vm.clone();
        self.blocking(move |i| i.delete(&vm, remove_cache)).await
    }

    async fn remove_seed(&self, vm: &VmRef) -> Result<(), ProviderError> {
        let vm = vm.clone();
        self.blocking(move |i| i.remove_seed(&vm)).await
    }

    async fn cache_usage(&self, fleet: &str) -> Result<Vec<CacheUsage>, ProviderError> {
        let fleet = fleet.to_string();
        self.blocking(move |i| i.cache_usage(&fleet)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_uris_are_told_from_remote_ones() {
        assert!(uri_is_local("qemu:///system"));
        assert!(uri_is_local("test:///tmp/x/node.xml"));
        assert!(uri_is_local("qemu+unix:///system"));
        assert!(!uri_is_local("qemu+ssh://root@build1/system"));
        assert!(!uri_is_local("qemu://build1/system"));
    }
}
