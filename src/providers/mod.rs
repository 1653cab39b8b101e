//! The outside world, behind two narrow traits over our own types.
//!
//! Only code under `providers` talks to libvirt or GitHub. The engine holds a
//! `Hypervisor` per host and one `RunnerRegistry` for the fleet's scope.

pub mod github;
pub mod hooked;
pub mod libvirt;
pub mod retry;

pub use retry::{RetryPolicy, Retrying};

use async_trait::async_trait;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use crate::plan::model::ErrorKind;
use crate::plan::model::{
    DrainState, Failure, GroupAccess, Leftover, ObservedHost, ObservedJob, ObservedRunner,
    ObservedVm, VmRef,
};

use crate::model::ownership::Ownership;
use crate::model::{DirectBoot, HostFacts, NetworkAttachment};
use crate::secret::Secret;

/// What went wrong talking to a provider, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
#[error("{target}: {message}")]
pub struct ProviderError {
    /// The host name, or the GitHub scope (`repos/OWNER/REPO`, `orgs/ORG`).
    pub target: String,
    pub kind: ErrorKind,
    /// Short, lowercase, free of secrets.
    pub message: String,
}

impl ProviderError {
    pub fn new(target: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            target: target.into(),
            kind,
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl From<ProviderError> for Failure {
    fn from(e: ProviderError) -> Self {
        Failure::new(e.kind, e.to_string())
    }
}

impl From<&ProviderError> for Failure {
    fn from(e: &ProviderError) -> Self {
        Failure::new(e.kind, e.to_string())
    }
}

/// The NoCloud seed: what cloud-init reads on first boot, and the runner's
/// credential beside it.
#[derive(Debug, Clone)]
pub struct Seed {
    /// `#cloud-config` user-data. It carries no secret.
    pub user_data: String,
    /// `instance-id` = VM name + generation, and `local-hostname`.
    pub meta_data: String,
    /// The JIT config or registration token, as the seed's
    /// [`SEED_CREDENTIAL_FILE`](crate::model::names::SEED_CREDENTIAL_FILE).
    pub credential: Secret<String>,
}

/// Everything needed to make one VM generation. Idempotent: a half-done
/// create (volumes made, domain not defined) is adopted by the next call.
#[derive(Debug, Clone)]
pub struct VmCreate {
    /// Written into the domain's metadata as is.
    pub owner: Ownership,
    pub boot: Option<DirectBoot>,
    pub network: NetworkAttachment,
    /// The guest CPU under kvm (`vm.cpuModel`).
    pub cpu_model: crate::model::host::CpuModel,
    /// The fleet's runner volume attached read-only (made before by
    /// `EnsureRunnerVolume`), if the guest installs the runner from it.
    pub runner_volume: Option<String>,
    pub seed: Seed,
}

/// The libvirt side: one implementation per host.
#[async_trait]
pub trait Hypervisor: Send + Sync {
    /// The host's name in the fleet file.
    fn host(&self) -> &str;

    /// Whether the host's guests are played by the sandbox (nothing boots).
    fn simulated(&self) -> bool {
        false
    }

    /// Memory, cpus, pool space and domain type.
    async fn facts(&self) -> Result<HostFacts, ProviderError>;

    /// All VMs of `fleet` on this host (one listing round trip in steady
    /// state); foreign domains are not returned.
    async fn observe(&self, fleet: &str) -> Result<Vec<ObservedVm>, ProviderError>;

    /// Names of the domains the last `observe` saw that are not `fleet`'s:
    /// a slot cannot take such a name. No round trip.
    fn foreign_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// Make the VM: root overlay, cache volume (adopted if present), seed,
    /// domain; define, then start.
    async fn create(&self, vm: &VmCreate) -> Result<(), ProviderError>;

    /// Start a defined, shut-off VM of ours.
    async fn start(&self, vm: &VmRef) -> Result<(), ProviderError>;

    /// Destroy, delete the root overlay and seed (and the cache volume when
    /// `remove_cache`), then undefine last so a crash midway leaves the
    /// ownership record for the next pass to finish the job.
    async fn delete(&self, vm: &VmRef, remove_cache: bool) -> Result<(), ProviderError>;

    /// Detach and delete the seed once the runner is up: it carries secrets.
    async fn remove_seed(&self, vm: &VmRef) -> Result<(), ProviderError>;

    /// Ask the guest of a busy persistent runner to take no job after its
    /// current one (through the qemu guest agent), and record the request
    /// on the domain, delivered or not, so that the planner asks once.
    async fn drain(&self, vm: &VmRef) -> Result<DrainState, ProviderError> {
        Err(ProviderError::new(
            self.host(),
            ErrorKind::Refused,
            format!("{}: this host cannot drain runners", vm.name),
        ))
    }

    /// Bytes used and total of each slot's cache volume on this host, by slot
    /// name (allocation as the host sees it), with what each running VM's
    /// guest agent tells at a bounded rate (its file systems and addresses;
    /// a VM without a cache disk is listed only for that).
    async fn cache_usage(&self, fleet: &str) -> Result<Vec<CacheUsage>, ProviderError>;

    /// What the last `observe` found besides VMs: the fleet's isolated
    /// network (on a host that is to have one) and leftovers. No round trip.
    fn host_state(&self) -> ObservedHost {
        ObservedHost::default()
    }

    /// Define or update, and start, the fleet's isolated network `network`
    /// with its filter `filter`. Idempotent.
    async fn ensure_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        let _ = filter;
        Err(ProviderError::new(
            self.host(),
            ErrorKind::Refused,
            format!("network {network}: this host has no isolated network to ensure"),
        ))
    }

    /// Make the read-only volume `volume` hold the runner tarball `local`
    /// (uploaded once; kept while its size matches). Idempotent.
    async fn ensure_runner_volume(
        &self,
        volume: &str,
        local: &crate::model::runner::LocalTarball,
    ) -> Result<(), ProviderError> {
        let _ = local;
        Err(ProviderError::new(
            self.host(),
            ErrorKind::Refused,
            format!("runner volume {volume}: this host takes no runner volumes"),
        ))
    }

    /// Stop and remove the fleet's isolated network and filter (only
    /// hangar's; a filter a VM still uses is refused by libvirt).
    async fn remove_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        let _ = filter;
        Err(ProviderError::new(
            self.host(),
            ErrorKind::Refused,
            format!("network {network}: this host has no isolated network to remove"),
        ))
    }

    /// Remove a leftover `host_state` reported (checked again first: only
    /// what still looks like the fleet's and is used by nothing).
    async fn remove_leftover(&self, leftover: &Leftover) -> Result<(), ProviderError> {
        Err(ProviderError::new(
            self.host(),
            ErrorKind::Refused,
            format!("{}: this host reports no leftovers", leftover.name()),
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheUsage {
    pub slot: String,
    /// The cache volume as the host allocates it; `None` for a VM without a
    /// cache disk (listed for what its guest agent told).
    pub allocated_bytes: Option<u64>,
    pub capacity_bytes: Option<u64>,
    /// The root and cache file systems as the guest sees them (its agent),
    /// refreshed at a bounded rate; `None` where no agent answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<libvirt::GuestDisks>,
    /// The guest's addresses on its NICs (its agent, read with `guest`),
    /// IPv4 first; empty where it has none or no agent answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<std::net::IpAddr>,
}

/// A freshly minted just-in-time runner: registered, offline, one job.
#[derive(Debug, Clone)]
pub struct JitRunner {
    pub runner_id: u64,
    /// `encoded_jit_config`, handed to `run.sh --jitconfig` in the guest.
    pub config: Secret<String>,
}

/// Outcome of asking GitHub to remove a runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoveOutcome {
    Removed,
    /// Already gone (404).
    Gone,
    /// GitHub refused because the runner is running a job (422): wait.
    Busy,
}

/// The rate-limit budget as last reported by GitHub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateBudget {
    pub limit: u64,
    pub remaining: u64,
    /// Epoch seconds when the window resets.
    pub reset: u64,
}

/// The GitHub side: one implementation per fleet scope.
#[async_trait]
pub trait RunnerRegistry: Send + Sync {
    /// `repos/OWNER/REPO` or `orgs/ORG`, for messages.
    fn scope(&self) -> String;

    /// Every runner in the scope, all pages. An unchanged list is answered
    /// from the ETag cache (304, no rate-limit cost).
    async fn observe(&self) -> Result<Vec<ObservedRunner>, ProviderError>;

    /// Mint a JIT runner config (ephemeral slots).
    async fn jit_config(
        &self,
        name: &str,
        labels: &[String],
        runner_group: &str,
    ) -> Result<JitRunner, ProviderError>;

    /// A registration token for `config.sh` (persistent slots).
    async fn registration_token(&self) -> Result<Secret<String>, ProviderError>;

    /// The URL `config.sh --url` takes (the repository's or the
    /// organization's page on the GitHub web host).
    fn registration_url(&self) -> String;

    async fn remove(&self, runner_id: u64) -> Result<RemoveOutcome, ProviderError>;

    /// The latest budget seen in response headers, if any request was made.
    fn rate_budget(&self) -> Option<RateBudget>;

    /// The queued and running jobs of `repositories` (`OWNER/REPO`): the
    /// demand that scaled pools follow. Unchanged lists are answered from
    /// the ETag cache (304, no rate-limit cost). A registry that cannot
    /// list jobs refuses.
    async fn jobs(&self, repositories: &[String]) -> Result<Vec<ObservedJob>, ProviderError> {
        let _ = repositories;
        Err(ProviderError::new(
            self.scope(),
            ErrorKind::Refused,
            "this registry does not list jobs",
        ))
    }

    /// Which repositories' jobs the runners of each runner group in
    /// `groups` (names as the fleet file gives them) may take, keyed by
    /// the name asked. Unchanged lists are answered from the ETag cache
    /// (304, no rate-limit cost). A group left out is not known: its jobs
    /// count by labels alone (the engine's memory answers the access last
    /// read when this fails). A registry whose runners are in no group (a
    /// repository's) answers nothing.
    async fn group_access(
        &self,
        groups: &[String],
    ) -> Result<BTreeMap<String, GroupAccess>, ProviderError> {
        let _ = groups;
        Ok(BTreeMap::new())
    }

    /// Since when each scaled pool has had more slots than its target, as
    /// remembered across passes (and processes); empty when this registry
    /// remembers nothing (then no pool ever shrinks).
    fn scale_memory(&self) -> BTreeMap<String, DateTime<Utc>> {
        BTreeMap::new()
    }

    /// Remember what [`RunnerRegistry::scale_memory`] answers next.
    fn remember_scale(&self, above_target_since: &BTreeMap<String, DateTime<Utc>>) {
        let _ = above_target_since;
    }
}
