//! The planner's vocabulary: what the file wants ([`Desired`]), what the world
//! holds ([`Observed`]), and the one enum through which anything in the world
//! changes ([`Action`]). Pure data: no I/O, no async, no provider types.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub use crate::model::host::ForeignUse;
use crate::model::{ownership_label, parse_slot_name, GuestStage, Ownership, SpecHash, VmShape};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The hard cap of a boot, in boot timeouts after creation: a guest that
/// keeps reaching new stages (a slow first boot with package installs) is
/// waited for, but not for ever.
pub const BOOT_CAP_FACTOR: u32 = 4;

/// Timeouts that decide when the planner gives up on a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// A VM whose runner is not up this long after the last stage its
    /// guest reported (after creation, before any) is replaced; never later
    /// than [`BOOT_CAP_FACTOR`] times this after creation, however the
    /// guest progresses.
    #[serde(with = "duration_secs")]
    pub boot_timeout: Duration,
    /// A persistent runner offline this long while its VM runs is replaced.
    #[serde(with = "duration_secs")]
    pub offline_timeout: Duration,
    /// An orphan (a registration without VM) is removed after this long.
    #[serde(with = "duration_secs")]
    pub orphan_grace: Duration,
    /// First delay of the crash-loop backoff; doubles with each failed boot.
    #[serde(with = "duration_secs")]
    pub backoff_base: Duration,
    /// Upper bound of the crash-loop backoff.
    #[serde(with = "duration_secs")]
    pub backoff_max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            boot_timeout: Duration::from_secs(15 * 60),
            offline_timeout: Duration::from_secs(10 * 60),
            orphan_grace: Duration::from_secs(5 * 60),
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(60 * 60),
        }
    }
}

/// The desired state: the fleet file resolved against the hosts' facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Desired {
    /// `metadata.name` of the fleet.
    pub fleet: String,
    /// Names of the hosts in the file, in file order.
    pub hosts: Vec<String>,
    /// Names of the pools in the file, in file order.
    pub pools: Vec<String>,
    /// One entry per runner slot, sorted by name.
    pub slots: Vec<DesiredSlot>,
    pub policy: Policy,
    /// Each pool's runner release, as resolved by the engine (empty until
    /// then, and for pools whose image has the runner preinstalled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runners: Vec<PoolRunner>,
    /// Pools that follow demand: what the queue asked of each this pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale: Vec<PoolScale>,
    /// Slots of scaled pools that the queue asks for and no allowed host
    /// has room for this pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_room: Vec<NoRoom>,
    /// Per host with facts this pass: what it offers the fleet. The
    /// planner makes a VM only where it fits beside what already runs there
    /// (this fleet's VMs and foreign domains alike).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, HostRoom>,
}

/// What a host offers the fleet: its memory (or `maxMemory`, the fleet's
/// share of it), its cpus times `cpuOvercommit` (in thousandths, so that a
/// fractional overcommit compares exactly), and the free space of its
/// storage pool where libvirt tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRoom {
    /// What the fleet may use: `maxMemory`, or the host's memory.
    pub memory_bytes: u64,
    /// The host's memory: what every running domain shares.
    pub host_memory_bytes: u64,
    pub cpu_millis: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_free_bytes: Option<u64>,
}

/// A pool with `scale`, as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaledPool {
    pub name: String,
    /// Every label its runners carry (GitHub's defaults, the pool's, the
    /// fleet's ownership label): a job is the pool's when all of its labels
    /// are among these.
    pub runner_labels: Vec<String>,
    pub min: u32,
    pub max: u32,
    pub idle: u32,
    pub cooldown: std::time::Duration,
    /// The runner group its runners join, for an organization fleet (a
    /// repository's runners are in no group and take all of its jobs).
    pub runner_group: Option<String>,
    /// Which repositories' jobs its group admits, as read from GitHub this
    /// pass; `None` where not known or not read: jobs count by labels alone.
    pub access: Option<GroupAccess>,
}

impl ScaledPool {
    /// Whether a queued job of `job`'s repository may go to this pool's
    /// runners (always, where the group's access is not known).
    pub fn admits(&self, job: &ObservedJob) -> bool {
        self.access
            .as_ref()
            .is_none_or(|a| a.admits(&job.repository, job.private))
    }
}

/// Which repositories' jobs the runners of an organization's runner group
/// may take (the group's `visibility`, its selected repositories, and
/// `allows_public_repositories`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupAccess {
    pub visibility: GroupVisibility,
    /// Whether a public repository may use the group at all (GitHub's
    /// default is no, whatever `visibility` says).
    pub allows_public: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GroupVisibility {
    /// Every repository of the organization.
    All,
    /// These repositories (`OWNER/REPO`, lowercased).
    Selected(BTreeSet<String>),
    /// The organization's private repositories.
    Private,
}

impl GroupAccess {
    /// GitHub's rule for a job of `repository` (`OWNER/REPO`), `private`
    /// as its workflow run said (`None`: not said, taken as private).
    pub fn admits(&self, repository: &str, private: Option<bool>) -> bool {
        let public = private == Some(false);
        if public && !self.allows_public {
            return false;
        }
        match &self.visibility {
            GroupVisibility::All => true,
            GroupVisibility::Selected(repos) => repos.contains(&repository.to_lowercase()),
            GroupVisibility::Private => !public,
        }
    }
}

/// A job GitHub holds for one of the fleet's repositories, queued or
/// running (the demand scaled pools follow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedJob {
    pub id: u64,
    pub run_id: u64,
    /// `OWNER/REPO`.
    pub repository: String,
    pub name: String,
    /// The job's `runs-on` labels.
    pub labels: Vec<String>,
    pub status: JobStatus,
    /// The runner running it, once assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_name: Option<String>,
    /// Whether its repository is private, as its workflow run says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    InProgress,
}

/// What the queue asked of one scaled pool, and the slots it keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolScale {
    pub pool: String,
    /// Runners of the pool running a job.
    pub busy: u32,
    /// Queued jobs the pool's runners would take (GitHub's rule: all of the
    /// job's labels among the runner's), by id.
    pub queued: Vec<u64>,
    /// `busy + queued + idle` within `min` and `max`.
    pub target: u32,
    /// The slot indexes the pool keeps this pass.
    pub slots: Vec<u32>,
    /// Since when the pool has had more slots than `target`; idle slots go
    /// once that is longer ago than the cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above_target_since: Option<DateTime<Utc>>,
    /// The jobs could not be listed this pass: the pool neither grows nor
    /// shrinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<Failure>,
    /// Queued jobs with the pool's labels that no scaled pool's runner
    /// group admits (their repository is not the group's), by id: they ask
    /// for no runner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_admitted: Vec<u64>,
}

/// A slot of a scaled pool that waits for room on its hosts, and the
/// queued jobs that wait with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NoRoom {
    pub slot: String,
    pub pool: String,
    /// The hosts the pool may use.
    pub hosts: Vec<String>,
    /// Queued job ids this slot would serve.
    pub jobs: Vec<u64>,
}

impl Desired {
    pub fn slot(&self, name: &str) -> Option<&DesiredSlot> {
        self.slots.iter().find(|s| s.name == name)
    }
}

/// One runner slot: one VM and one runner registration, both named `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredSlot {
    /// `<fleet>-<pool>-<index>`; also the VM's and the runner's name.
    pub name: String,
    pub pool: String,
    pub index: u32,
    /// The host this slot lives on; a slot keeps its host.
    pub host: String,
    /// JIT runner, one job per VM.
    pub ephemeral: bool,
    /// The labels hangar asks for (without the ownership label): the pool's,
    /// after GitHub's defaults for a JIT runner (see `fleet::resolve`).
    pub labels: Vec<String>,
    pub runner_group: String,
    pub vm: VmShape,
    pub spec_hash: SpecHash,
    /// The runner tarball the VM installs from a read-only volume (`None`:
    /// preinstalled in the image, or no tarball supplied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<RunnerVolume>,
    /// Why the pool's runner release is not at hand this pass (it could not
    /// be resolved or fetched): no VM is created or replaced for the slot
    /// until it is, and what runs stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_unavailable: Option<Failure>,
}

/// The runner release a pool's VMs get, as this pass resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolRunner {
    pub pool: String,
    /// The release (`None`: not resolved, see `error`).
    pub version: Option<String>,
    /// GitHub stops (or stopped) sending jobs to this release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

/// A runner tarball and the fleet's volume that holds it on a host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunnerVolume {
    /// [`crate::model::runner::runner_volume_name`].
    pub volume: String,
    pub local: crate::model::runner::LocalTarball,
}

/// Lifecycle state of a domain, as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Running,
    Paused,
    ShutOff,
    Crashed,
    /// Blocked, shutting down, suspended, or a state libvirt added later.
    Other,
}

/// A hangar-owned VM as seen on its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedVm {
    pub name: String,
    pub uuid: String,
    pub host: String,
    pub state: VmState,
    pub owner: Ownership,
    /// Progress read from the console log, where the host lets us read it.
    pub guest: Option<GuestStage>,
    /// When `guest` was first seen at its present stage (remembered across
    /// passes and processes by the engine); the boot timeout counts from
    /// here. `None`: not known, or nothing printed yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_since: Option<DateTime<Utc>>,
    /// The NoCloud seed volume (it carries secrets) is still attached.
    pub seed_attached: bool,
    /// A drain hangar asked of this VM's guest (recorded in the domain's
    /// metadata, so every process sees it). `None`: never asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainState>,
}

/// What became of a drain request (see [`Action::Drain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainState {
    /// The guest has the request: its runner takes no job after this one.
    Delivered,
    /// The guest could not be told (no guest agent answered): the VM is
    /// waited for while busy, as without drain, and may take more jobs.
    Undeliverable,
}

impl ObservedVm {
    pub fn vm_ref(&self) -> VmRef {
        VmRef {
            name: self.name.clone(),
            uuid: self.uuid.clone(),
            host: self.host.clone(),
            generation: self.owner.generation,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerStatus {
    Online,
    Offline,
}

/// A runner registration in the fleet's GitHub scope (ours or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedRunner {
    pub id: u64,
    pub name: String,
    pub status: RunnerStatus,
    pub busy: bool,
    pub labels: Vec<String>,
    /// Since when this runner has been offline without interruption, if the
    /// observer remembers it across passes (GitHub does not say). `None`
    /// when online or unknown; the planner replaces a persistent runner for
    /// being offline only when it knows for how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_since: Option<DateTime<Utc>>,
}

impl ObservedRunner {
    pub fn runner_ref(&self) -> RunnerRef {
        RunnerRef {
            id: self.id,
            name: self.name.clone(),
        }
    }

    /// Ours: named like one of the fleet's slots *and* labelled as the
    /// fleet's. Either alone could be a coincidence or another tool's runner.
    pub fn is_owned_by(&self, fleet: &str) -> bool {
        let label = ownership_label(fleet);
        parse_slot_name(fleet, &self.name).is_some() && self.labels.contains(&label)
    }
}

/// What kind of failure a provider reported. It decides whether a call is
/// tried again, and when the next pass comes (see the engine's error policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Worth retrying after a backoff: connection dropped, 5xx, timeouts.
    Transient,
    /// Rate limited; retry no sooner than `retry_after_secs`.
    RateLimited { retry_after_secs: u64 },
    /// The object is gone (already deleted).
    NotFound,
    /// Refused for a reason that retrying will not fix (auth, bad request,
    /// pool full, name taken by something that is not ours).
    Refused,
}

impl ErrorKind {
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::RateLimited { .. })
    }
}

/// A failure as the engine keeps it: its kind and a short message that
/// names what failed (a host, the GitHub scope) and carries no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{message}")]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

/// An observation that may have failed. A failed list is not an empty list:
/// the planner makes no destructive change where the observation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Observation<T> {
    Seen { items: T },
    Failed { error: Failure },
}

impl<T> Observation<T> {
    pub fn seen(&self) -> Option<&T> {
        match self {
            Observation::Seen { items } => Some(items),
            Observation::Failed { .. } => None,
        }
    }
}

/// The fleet's isolated network on a host that is to have one, as seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSeen {
    pub network: String,
    pub filter: String,
    /// Both are defined (and hangar's).
    pub present: bool,
}

/// Something of the fleet's on a host that no VM uses any more: what a
/// create cut short, or a deleted VM, left behind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Leftover {
    /// A generation's root overlay or seed volume no domain refers to (a
    /// seed carries credentials).
    Volume {
        name: String,
        slot: String,
        generation: u64,
    },
    /// A slot's cache volume that hangar made and no domain refers to: a
    /// create cut short before its domain was defined. Only `destroy`
    /// removes it (a slot of the file keeps its cache across generations).
    Cache { name: String, slot: String },
    /// A generation's serial console log whose domain is gone.
    ConsoleLog {
        name: String,
        slot: String,
        generation: u64,
    },
    /// One of the fleet's runner volumes (made by hangar) that no domain
    /// uses: its release is no longer any VM's.
    RunnerVolume { name: String },
}

impl Leftover {
    /// The slot it was made for; a runner volume belongs to no slot.
    pub fn slot(&self) -> Option<&str> {
        match self {
            Leftover::Volume { slot, .. }
            | Leftover::Cache { slot, .. }
            | Leftover::ConsoleLog { slot, .. } => Some(slot),
            Leftover::RunnerVolume { .. } => None,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Leftover::Volume { name, .. }
            | Leftover::Cache { name, .. }
            | Leftover::ConsoleLog { name, .. }
            | Leftover::RunnerVolume { name } => name,
        }
    }
}

/// What observing a host found besides the fleet's VMs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedHost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSeen>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<Leftover>,
    /// The fleet's runner volumes present on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runner_volumes: Vec<String>,
    /// What running domains that are not this fleet's (another tool's,
    /// another fleet's) take from the host: it is not there to place into.
    #[serde(default, skip_serializing_if = "ForeignUse::is_none")]
    pub foreign: ForeignUse,
}

/// The world as observed at the start of a pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// Per host: the VMs of *this fleet* (other fleets' and foreign domains
    /// are filtered out by the provider, which reads ownership).
    pub hosts: BTreeMap<String, Observation<Vec<ObservedVm>>>,
    /// Every runner in the GitHub scope; the planner decides which are ours.
    pub runners: Observation<Vec<ObservedRunner>>,
    /// Per host, the names of domains that are not this fleet's (another
    /// tool's, another fleet's). A slot whose name is taken there cannot get
    /// its VM; the planner says so instead of trying every pass.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub foreign_names: BTreeMap<String, BTreeSet<String>>,
    /// Per host whose observation succeeded: its network and leftovers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_state: BTreeMap<String, ObservedHost>,
}

impl Observed {
    /// Each VM of the hosts that were seen, with its host's name, hosts in
    /// order and each host's VMs as listed.
    pub fn seen_vms(&self) -> impl DoubleEndedIterator<Item = (&str, &ObservedVm)> {
        self.hosts
            .iter()
            .filter_map(|(host, o)| Some((host.as_str(), o.seen()?)))
            .flat_map(|(host, vms)| vms.iter().map(move |v| (host, v)))
    }
}

/// A VM an action refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmRef {
    pub name: String,
    pub uuid: String,
    pub host: String,
    pub generation: u64,
}

/// A runner registration an action refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerRef {
    pub id: u64,
    pub name: String,
}

/// One field that differs between a VM and its slot's spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    pub field: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CreateReason {
    /// The slot has no VM.
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ReplaceReason {
    /// The slot's spec hash differs from the VM's (listed changes may be
    /// empty when only provisioning settings changed).
    SpecChanged { changes: Vec<FieldChange> },
    /// An ephemeral VM ran its job and powered off.
    JobDone,
    /// The runner did not come up within the boot timeout.
    BootTimeout {
        #[serde(with = "duration_secs")]
        waited: Duration,
    },
    /// A persistent runner has been offline past the offline timeout.
    RunnerOffline,
    /// The domain crashed, or the guest reported a provisioning failure.
    Broken,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DeleteReason {
    /// The slot's index is at or above its pool's `count`.
    ScaledDown,
    /// The slot's pool is no longer in the file.
    PoolRemoved,
    /// The slot moved off this host (its host left the file).
    HostRemoved,
    /// An older VM of a slot that has a newer one on the slot's host.
    Duplicate,
    /// `hangar destroy`.
    Destroy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RemoveRunnerReason {
    /// A registration of ours with no VM, past the orphan grace period.
    NoVm,
    /// `hangar destroy`.
    Destroy,
}

/// Why nothing is done for something that differs from the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum WaitReason {
    /// The runner is running a job; the VM is replaced or deleted once idle.
    Busy { then: String },
    /// A persistent runner told to drain runs its last job; it takes no
    /// other, and the VM is replaced or deleted (`then`) once it is idle.
    Draining { then: String },
    /// The VM is within its boot timeout.
    Booting { deadline: DateTime<Utc> },
    /// Crash-loop backoff after repeated failed boots.
    Backoff { until: DateTime<Utc>, failures: u32 },
    /// The host's or GitHub's observation failed this pass.
    ObservationFailed { what: String, error: Failure },
    /// An orphan inside its grace period.
    Grace { until: DateTime<Utc> },
    /// The pool's runner release is not at hand (see
    /// [`DesiredSlot::runner_unavailable`]).
    RunnerUnavailable { error: Failure },
    /// A runner not owned by this fleet holds the slot's name.
    NameTaken { runner_id: u64 },
    /// A domain not owned by this fleet holds the slot's name on its host.
    DomainNameTaken { host: String },
    /// A runner that was up is offline while its VM runs; replaced at `deadline`,
    /// or never while the observer cannot say since when (`None`).
    RunnerOffline { deadline: Option<DateTime<Utc>> },
    /// A scaled pool's slot that queued jobs ask for, with no room on any
    /// of the pool's hosts; made once another pool's runners leave.
    NoCapacity { hosts: Vec<String>, jobs: Vec<u64> },
    /// The slot's VM does not fit on its host beside what runs there now
    /// (this fleet's VMs and domains that are not its own): `needed` of
    /// `resource`, `available` left. Made once something there ends.
    NoRoomOnHost {
        host: String,
        resource: RoomResource,
        needed: u64,
        available: u64,
    },
    /// A registration of ours is online but no observed host has its VM:
    /// something hangar cannot see runs it, so it is neither removed nor
    /// duplicated until it goes offline.
    OrphanOnline { runner_id: u64 },
}

/// What a host has too little of for a VM. Memory and pool space in
/// bytes, vCPUs in thousandths of one (see [`HostRoom::cpu_millis`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomResource {
    Memory,
    Vcpus,
    PoolSpace,
}

/// The only way anything in the world changes. `diff` renders these,
/// `apply` executes them; `Wait` is the non-mutating outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// Define and start a slot's VM (mint its JIT config or registration
    /// token just before). Only on a host whose observation succeeded.
    Create {
        /// Everything the VM is made from; its host is `slot.host`.
        slot: DesiredSlot,
        generation: u64,
        boot_failures: u32,
        reason: CreateReason,
    },
    /// Start a persistent slot's VM that is shut off (after a host reboot).
    Start { vm: VmRef },
    /// Tell a busy persistent runner's guest (through the qemu guest agent)
    /// to take no new job once its current one ends, so that the VM can be
    /// replaced or deleted (`then`) after it. Never stops a running job.
    /// Recorded on the domain; an undeliverable drain is recorded too, and
    /// the VM is then waited for while busy.
    Drain { vm: VmRef, then: String },
    /// Remove the runner registration (if any; aborts when GitHub says busy),
    /// delete the VM and its root disk, then create the next generation. The
    /// cache volume stays. Never planned while the runner is busy.
    Replace {
        vm: VmRef,
        runner: Option<RunnerRef>,
        /// What the next generation is made from.
        slot: DesiredSlot,
        next_generation: u64,
        boot_failures: u32,
        reason: ReplaceReason,
    },
    /// Remove the runner registration (if any; aborts when busy), then delete
    /// the VM, its volumes and its cache volume. Never planned while busy.
    Delete {
        vm: VmRef,
        runner: Option<RunnerRef>,
        reason: DeleteReason,
    },
    /// Detach and delete a VM's seed volume once its runner is up: the seed
    /// carries the JIT config or registration token.
    RemoveSeed { vm: VmRef },
    /// Remove a registration of ours that has no VM.
    RemoveRunner {
        runner: RunnerRef,
        reason: RemoveRunnerReason,
    },
    /// Define (or bring up to date) and start the fleet's isolated network
    /// and its nwfilter on a host, before any VM there attaches to them.
    EnsureNetwork {
        host: String,
        network: String,
        filter: String,
    },
    /// Remove the fleet's isolated network and filter from a host once no
    /// VM of the fleet is left there (`hangar destroy`).
    RemoveNetwork {
        host: String,
        network: String,
        filter: String,
    },
    /// Upload a runner tarball into the fleet's read-only volume on a host,
    /// before the VMs there that install it are created.
    EnsureRunnerVolume { host: String, runner: RunnerVolume },
    /// Remove a volume or console log of the fleet that nothing uses.
    RemoveLeftover { host: String, leftover: Leftover },
    /// Nothing is done this pass.
    Wait { subject: String, reason: WaitReason },
}

impl Action {
    /// Whether executing this action changes the world.
    pub fn is_mutating(&self) -> bool {
        !matches!(self, Action::Wait { .. })
    }

    /// Whether it removes something (a VM, a volume, a registration).
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Action::Replace { .. }
                | Action::Delete { .. }
                | Action::RemoveRunner { .. }
                | Action::RemoveNetwork { .. }
        )
    }

    /// The host the action touches, if any.
    pub fn host(&self) -> Option<&str> {
        match self {
            Action::Create { slot, .. } => Some(&slot.host),
            Action::Start { vm }
            | Action::RemoveSeed { vm }
            | Action::Drain { vm, .. }
            | Action::Replace { vm, .. }
            | Action::Delete { vm, .. } => Some(&vm.host),
            Action::EnsureNetwork { host, .. }
            | Action::EnsureRunnerVolume { host, .. }
            | Action::RemoveNetwork { host, .. }
            | Action::RemoveLeftover { host, .. } => Some(host),
            Action::RemoveRunner { .. } | Action::Wait { .. } => None,
        }
    }

    /// The slot (= VM = runner name) the action is about.
    pub fn subject(&self) -> &str {
        match self {
            Action::Create { slot, .. } => &slot.name,
            Action::Start { vm }
            | Action::RemoveSeed { vm }
            | Action::Drain { vm, .. }
            | Action::Replace { vm, .. }
            | Action::Delete { vm, .. } => &vm.name,
            Action::RemoveRunner { runner, .. } => &runner.name,
            Action::EnsureNetwork { network, .. } | Action::RemoveNetwork { network, .. } => {
                network
            }
            Action::EnsureRunnerVolume { runner, .. } => &runner.volume,
            // A log goes before the create that would write it again; a
            // volume of another generation is its own subject, so that one
            // refused removal holds up nothing else.
            Action::RemoveLeftover {
                leftover: Leftover::ConsoleLog { slot, .. },
                ..
            } => slot,
            Action::RemoveLeftover {
                leftover:
                    Leftover::Volume { name, .. }
                    | Leftover::Cache { name, .. }
                    | Leftover::RunnerVolume { name },
                ..
            } => name,
            Action::Wait { subject, .. } => subject,
        }
    }
}

/// The result of planning: actions in a stable order (by subject, then kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub fleet: String,
    pub actions: Vec<Action>,
}

impl Plan {
    /// The world equals the file: nothing to change and nothing waited for.
    /// A plan of waits alone (busy, booting, a name taken, a host not
    /// observed) is not in sync.
    pub fn in_sync(&self) -> bool {
        self.actions.is_empty()
    }

    /// Some action would change the world.
    pub fn has_changes(&self) -> bool {
        self.actions.iter().any(Action::is_mutating)
    }

    /// The waits, as (subject, reason).
    pub fn waits(&self) -> impl Iterator<Item = (&str, &WaitReason)> {
        self.actions.iter().filter_map(|a| match a {
            Action::Wait { subject, reason } => Some((subject.as_str(), reason)),
            _ => None,
        })
    }

    pub fn mutating(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter().filter(|a| a.is_mutating())
    }
}

/// Serde helper: a `Duration` as whole seconds.
pub mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}
