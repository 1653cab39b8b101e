//! The fleet file's types. Field names are the file's contract; doc comments
//! become the JSON Schema's descriptions and the reference in
//! `docs/fleet-file.md`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::units::{ByteSize, Duration, MemorySpec, Percent};

/// The fallback actions/runner release, and the SHA-256 of its
/// `actions-runner-linux-x64` tarball: what a guest installs by itself
/// while the pass does not yet hand it a resolved tarball. A pool's
/// default is `latest` ([`RUNNER_LATEST`]).
pub const DEFAULT_RUNNER_VERSION: &str = "2.330.0";
pub const DEFAULT_RUNNER_SHA256: &str =
    "af5c33fa94f3cc33b8e97937939136a6b04197e6dadfcfb3b6e33ae1bf41e79a";

/// `runner.version: latest`: the newest release of actions/runner, read
/// from the fleet's GitHub API and re-checked hourly.
pub const RUNNER_LATEST: &str = "latest";

/// The repository a `simulator: true` fleet registers its runners with when
/// neither `repository` nor `organization` is given.
pub const SIMULATOR_REPOSITORY: &str = "sandbox/quickstart";

/// The `uri` of a host that runs on hangar's embedded sandbox (libvirt's
/// test driver with a state file) instead of a libvirt daemon.
pub const SANDBOX_URI: &str = "sandbox";

/// A fleet of self-hosted GitHub Actions runners, one per libvirt VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "hangar fleet file")]
pub struct Fleet {
    /// Version of this file format; must be `hangar/v1`.
    pub api_version: ApiVersion,
    /// Kind of document; must be `Fleet`.
    pub kind: Kind,
    /// Identity of the fleet.
    pub metadata: Metadata,
    /// What the fleet consists of.
    pub spec: FleetSpec,
}

/// Version of the fleet file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// The first and current version.
    #[serde(rename = "hangar/v1")]
    V1,
}

/// Kind of document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Kind {
    /// A fleet of runners.
    Fleet,
}

/// Identity of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Name of the fleet: a DNS label (lowercase letters, digits, `-`). It
    /// prefixes every VM and runner name (`<fleet>-<pool>-<index>`) and every
    /// runner carries the label `hangar-<fleet>`, by which hangar recognises
    /// its own runners.
    pub name: String,
}

/// What the fleet consists of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetSpec {
    /// Where the runners register, and how hangar authenticates.
    pub github: GitHub,
    /// The libvirt hosts the VMs run on.
    pub hosts: Vec<Host>,
    /// Groups of identical runners.
    pub pools: Vec<Pool>,
    /// Timeouts, backoff and concurrency of the reconciler.
    #[serde(default)]
    pub policy: PolicySpec,
    /// Prometheus metrics served by the daemon (`hangar reconcile
    /// --every`); `--metrics ADDR` overrides `listen`. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSpec>,
}

/// Where the daemon serves its metrics (`http://LISTEN/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsSpec {
    /// `ADDRESS:PORT` to listen on. Default `127.0.0.1:9464`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `listen` may be an address other than loopback (then reachable from
    /// the network: firewall it). Default false.
    #[serde(default)]
    pub allow_non_loopback: bool,
}

impl MetricsSpec {
    /// The address to listen on, if `listen` is one (validation says so).
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.listen {
            None => crate::fleet::DEFAULT_METRICS_LISTEN.parse().ok(),
            Some(l) => l.parse().ok(),
        }
    }
}

/// Where the runners register, and how hangar authenticates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitHub {
    /// Register repository runners in `OWNER/REPO`. Exactly one of
    /// `repository` and `organization` (optional with `simulator: true`,
    /// where it defaults to `sandbox/quickstart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Register organization runners in this organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// REST API base URL: `https://api.github.com` (the default), a GitHub
    /// Enterprise Server's `https://HOST/api/v3`, or a simulator's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// How hangar authenticates. Required unless `simulator` is true.
    /// Secrets are referenced, never written here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// For an organization: the repositories (`OWNER/REPO` or `REPO` of
    /// the organization) whose queued jobs scaled pools follow; GitHub has
    /// no organization-wide list of jobs. Required for `scale` with
    /// `organization`; not allowed with `repository`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    /// Receive GitHub's `workflow_job` webhooks in the daemon (`hangar
    /// reconcile --every`), so that a queued job wakes the loop at once;
    /// polling stays on as the backstop (delivery is not guaranteed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    /// Use hangar's built-in GitHub simulator instead of GitHub (the
    /// sandbox quickstart and tests). No token is needed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub simulator: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where the daemon listens for GitHub's webhooks, and the secret their
/// `X-Hub-Signature-256` is made with: exactly one of `secretEnv` and
/// `secretFile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookSpec {
    /// `ADDRESS:PORT` to listen on (any path is served).
    pub listen: String,
    /// Name of an environment variable that holds the webhook's secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Path of a file that holds the webhook's secret (surrounding
    /// whitespace ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// `listen` may be an address other than loopback (GitHub must reach
    /// it; a reverse proxy on the host usually does). Default false.
    #[serde(default)]
    pub allow_non_loopback: bool,
}

/// How hangar authenticates to GitHub: exactly one of `tokenEnv`,
/// `tokenFile` and `app`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Auth {
    /// Name of an environment variable that holds a token (a fine-grained
    /// token with "Administration: write" on the repository, or
    /// "Self-hosted runners: write" on the organization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Path of a file that holds a token (surrounding whitespace ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Authenticate as a GitHub App installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<GitHubApp>,
}

/// A GitHub App installation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitHubApp {
    /// The App's numeric ID.
    pub app_id: u64,
    /// The numeric ID of the App's installation on the owner.
    pub installation_id: u64,
    /// Path of the App's PEM private key file.
    pub private_key_file: String,
}

/// A libvirt host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Host {
    /// Name of the host in this file: a DNS label, unique among hosts.
    pub name: String,
    /// A libvirt connection URI (`qemu:///system`,
    /// `qemu+ssh://github@node/system`), or `sandbox` for hangar's embedded
    /// sandbox (libvirt's test driver; no VMs really boot).
    pub uri: String,
    /// The libvirt storage pool that holds the VMs' volumes.
    #[serde(default = "default_storage_pool")]
    pub storage_pool: String,
    /// How each VM's network interface is attached.
    #[serde(default)]
    pub network: Network,
    /// Which libvirt domain type VMs use: `auto` (kvm when the host offers
    /// it, else qemu emulation), `kvm` or `qemu`.
    #[serde(default)]
    pub domain_type: DomainTypeSpec,
    /// Memory the fleet's VMs may use on this host in total: a share of the
    /// host's memory (`90%`) or a size (`120GiB`). Default: all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<MemorySpec>,
    /// How many vCPUs the fleet's VMs may have in total per host CPU. 1.0
    /// never overcommits (the default); 2.0 allows twice as many vCPUs as
    /// CPUs.
    #[serde(default = "default_cpu_overcommit")]
    #[schemars(range(min = 0.1, max = 64.0))]
    pub cpu_overcommit: f64,
    /// Accept a `uri` that makes libvirt run a program (the `ext`
    /// transport, or `command=`, `netcat=`, `socket=`, `proxy=` with ssh):
    /// refused unless this is `true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unsafe_uri: bool,
    /// Directories on this host that a `vm.image` host path may be in
    /// (besides the host's storage pools), compared after symlinks are
    /// resolved. Default: none, so a host path must be a pool's volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_dirs: Vec<String>,
    /// Directory on this host where libvirt writes the VMs' serial console
    /// logs (`<slot>-g<N>.console.log`). Default: `/var/log/hangar`, made by
    /// hangar on a local host; on a remote host it must exist and be
    /// writable by the host's qemu (a session daemon's user cannot write
    /// `/var/log`: name a directory of that user's here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_dir: Option<String>,
}

pub(crate) fn default_storage_pool() -> String {
    "default".to_string()
}

pub(crate) fn default_cpu_overcommit() -> f64 {
    1.0
}

/// How a VM's network interface is attached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    /// `none`: no interface (the sandbox; a runner without network cannot
    /// reach GitHub). `user`: qemu user-mode networking. `network`: the
    /// libvirt network `name`. `isolated`: a NAT network hangar defines per
    /// fleet, with an nwfilter on each interface that drops guest traffic
    /// to private, link-local and the host's own addresses (DHCP and DNS on
    /// the network's gateway excepted), so pull-request code reaches the
    /// internet but not the host or the local network.
    #[serde(default)]
    pub mode: NetworkMode,
    /// The libvirt network (mode `network`: default `default`; mode
    /// `isolated`: default `hangar-<fleet>`, defined by hangar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The libvirt nwfilter on the interface (mode `isolated`: default
    /// `hangar-isolated-<fleet>`, defined by hangar; optional with
    /// `network`, where it must exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The isolated network's IPv4 subnet in CIDR form, private (RFC 1918),
    /// /16 to /28 (mode `isolated` only). Default: `10.213.X.0/24`, X
    /// derived from the fleet name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

/// How a VM's network interface is attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// No interface.
    #[default]
    None,
    /// qemu user-mode networking.
    User,
    /// A named libvirt network.
    Network,
    /// A named libvirt network with an isolating nwfilter.
    Isolated,
}

/// Which libvirt domain type a host's VMs use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DomainTypeSpec {
    /// kvm when the host offers it, else qemu.
    #[default]
    Auto,
    /// Hardware virtualization; fails where the host has none.
    Kvm,
    /// Full emulation (slow; nested or CI hosts).
    Qemu,
}

/// A group of identical runners, named `<fleet>-<pool>-<index>`: a fixed
/// `count` of them, or as many as the queue of jobs asks for (`scale`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pool {
    /// Name of the pool: a DNS label, unique among pools.
    pub name: String,
    /// How many runners (and VMs) the pool has. Exactly one of `count` and
    /// `scale` (0 when `scale` is given).
    #[serde(default)]
    pub count: u32,
    /// Follow demand instead of a fixed `count`: as many runners as jobs
    /// queued for the pool's labels and jobs running on it, plus `idle`,
    /// within `min` and `max`. Exactly one of `count` and `scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleSpec>,
    /// The hosts the pool's VMs may run on. Default: all hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Labels of the pool's runners, besides the ones every runner gets
    /// (`self-hosted`, `linux`, `x64` and `hangar-<fleet>`).
    #[serde(default)]
    pub labels: Vec<String>,
    /// `false`: the pool's JIT runners get only its `labels` and
    /// `hangar-<fleet>`, not `self-hosted`, `linux`, `x64`, for workflows
    /// that route by custom labels alone. Only with `ephemeral: true`.
    #[serde(default = "default_true")]
    pub default_labels: bool,
    /// The runner group the runners join.
    #[serde(default = "default_runner_group")]
    pub runner_group: String,
    /// `false`: long-lived runners that take job after job (registered with
    /// a registration token). `true`: just-in-time runners, one job per VM,
    /// each VM a fresh copy of the image (advised for public repositories).
    #[serde(default)]
    pub ephemeral: bool,
    /// The VM of each runner.
    pub vm: VmSpec,
    /// A private, persistent cache disk per runner slot (Docker layers,
    /// build caches); never shared between runners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    /// The actions/runner release installed in the VM.
    #[serde(default)]
    pub runner: RunnerSpec,
    /// The Docker engine in the VM.
    #[serde(default)]
    pub docker: DockerSpec,
    /// The user the runner runs as.
    #[serde(default)]
    pub user: UserSpec,
}

/// How a pool follows the queue of jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleSpec {
    /// Runners kept however empty the queue is. Default 0.
    #[serde(default)]
    pub min: u32,
    /// Runners at most (at least 1, at least `min`). The `max` of all pools
    /// may exceed what the hosts hold: a runner is placed when there is
    /// room, and the plan says which queued jobs wait for it.
    pub max: u32,
    /// Runners kept ready beyond the jobs queued and running (ARC's
    /// `minRunners`). Default 0.
    #[serde(default)]
    pub idle: u32,
    /// How long demand must stay below the pool's size before idle runners
    /// are removed (against flapping). Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Duration>,
}

/// The default `scale.cooldown` (ARC's scale-down delay).
pub const DEFAULT_SCALE_COOLDOWN: Duration = Duration::secs(600);

impl ScaleSpec {
    pub fn cooldown(&self) -> std::time::Duration {
        self.cooldown.unwrap_or(DEFAULT_SCALE_COOLDOWN).std()
    }
}

impl Pool {
    /// The most slots the pool can have: `count`, or `scale.max`.
    pub fn max_slots(&self) -> u32 {
        self.scale.as_ref().map_or(self.count, |s| s.max)
    }

    /// The slots the pool always has: `count`, or `scale.min`.
    pub fn min_slots(&self) -> u32 {
        self.scale.as_ref().map_or(self.count, |s| s.min)
    }
}

pub(crate) fn default_runner_group() -> String {
    "Default".to_string()
}

/// The VM of each runner of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmSpec {
    /// Virtual CPUs (at least 1).
    pub cpus: u32,
    /// Memory: a share of the host's memory (`18%`) or a size (`6GiB`,
    /// at least 256MiB).
    pub memory: MemorySpec,
    /// Size of the root disk, a copy-on-write overlay of `image`.
    pub disk: ByteSize,
    /// Base image (qcow2 or raw, with cloud-init): a path on the host, a
    /// volume name in the host's storage pool, or an `https://` URL (then
    /// `imageSha256` is required).
    pub image: String,
    /// SHA-256 of the image, 64 hex digits. Required for an `https://`
    /// image; checked after download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_sha256: Option<String>,
    /// Boot a kernel directly instead of the image's boot loader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootSpec>,
    /// The CPU a guest sees under kvm: `host-passthrough` (the host's CPU,
    /// the default) or `host-model` (libvirt's nearest named model, for
    /// VMs that migrate between hosts). Under qemu emulation the guest gets
    /// qemu's `max` model whatever this says.
    #[serde(default)]
    pub cpu_model: crate::model::host::CpuModel,
    /// Foreign architectures the VM can run through qemu-user emulation
    /// (binfmt_misc), e.g. for multi-architecture Docker builds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emulate: Vec<Arch>,
    /// SSH public keys allowed to log in as the runner's user (debugging).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
}

/// Direct kernel boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BootSpec {
    /// Path of the kernel on the host.
    pub kernel: String,
    /// Path of the initrd on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// Kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

/// A CPU architecture that qemu-user can emulate.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// 64-bit x86.
    Amd64,
    /// 64-bit ARM (aarch64).
    Arm64,
    /// 32-bit ARM (armv7).
    Arm,
    /// 64-bit POWER, little endian.
    Ppc64le,
    /// IBM Z.
    S390x,
    /// 64-bit RISC-V.
    Riscv64,
    /// 32-bit x86.
    #[serde(rename = "386")]
    I386,
}

/// A private, persistent cache disk per runner slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheSpec {
    /// Size of each slot's cache volume.
    pub size: ByteSize,
    /// When the cache is fuller than this (more than 0%, at most 100%), the
    /// VM prunes it (`docker system prune`, oldest first) between jobs.
    #[serde(default = "default_prune_above")]
    pub prune_above: Percent,
    /// Where the cache is mounted in the VM.
    #[serde(default = "default_cache_mount")]
    pub mount_path: String,
    /// Put Docker's data root (images, layers, build cache) on the cache
    /// disk, so layers survive VM replacement.
    #[serde(default)]
    pub docker_data_root: bool,
}

pub(crate) fn default_prune_above() -> Percent {
    Percent::whole(80)
}

pub(crate) fn default_cache_mount() -> String {
    "/var/cache/hangar".to_string()
}

/// The actions/runner release installed in the VM: `version` (with
/// `sha256`), or `preinstalled`. Default: version 2.330.0 with its known
/// checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunnerSpec {
    /// Release of actions/runner: `latest` (the default: the newest
    /// release, re-checked hourly) or a release like `2.330.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// SHA-256 of `actions-runner-linux-<arch>-<version>.tar.gz`, 64 hex
    /// digits; only with a pinned `version`. Without it, the digest GitHub
    /// publishes with the release asset is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The runner is already installed in the image, in this directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preinstalled: Option<String>,
    /// The runner's work folder, relative to its directory.
    #[serde(default = "default_work_folder")]
    pub work_folder: String,
}

impl Default for RunnerSpec {
    fn default() -> Self {
        RunnerSpec {
            version: None,
            sha256: None,
            preinstalled: None,
            work_folder: default_work_folder(),
        }
    }
}

pub(crate) fn default_work_folder() -> String {
    "_work".to_string()
}

/// The Docker engine in the VM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DockerSpec {
    /// Where Docker comes from.
    #[serde(default)]
    pub source: DockerSource,
}

/// Where Docker comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DockerSource {
    /// Ubuntu's `docker.io` package.
    #[default]
    Ubuntu,
    /// Docker's own `docker-ce` packages from download.docker.com.
    DockerCe,
    /// Already in the image; only the post-install steps run.
    Preinstalled,
}

/// The user the runner runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserSpec {
    /// Login name; a member of the `docker` group.
    #[serde(default = "default_user_name")]
    pub name: String,
    /// Passwordless sudo.
    #[serde(default = "default_true")]
    pub sudo: bool,
}

impl Default for UserSpec {
    fn default() -> Self {
        UserSpec {
            name: default_user_name(),
            sudo: true,
        }
    }
}

pub(crate) fn default_user_name() -> String {
    "github".to_string()
}

fn default_true() -> bool {
    true
}

/// Timeouts, backoff and concurrency of the reconciler.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    /// A VM whose runner is not up this long after creation is replaced.
    /// Default 15m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_timeout: Option<Duration>,
    /// A persistent runner offline this long while its VM runs is replaced.
    /// Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_timeout: Option<Duration>,
    /// A registration of ours without a VM is removed after this long.
    /// Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphan_grace: Option<Duration>,
    /// First delay of the crash-loop backoff; doubles with each failed
    /// boot. Default 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_base: Option<Duration>,
    /// Longest delay of the crash-loop backoff. Default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max: Option<Duration>,
    /// How many changes run at once.
    #[serde(default)]
    pub concurrency: ConcurrencySpec,
}

/// How many changes (create, replace, delete) run at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConcurrencySpec {
    /// In the whole fleet (at least 1). Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<u32>,
    /// On one host (at least 1). Default: 5 per cpu of the host, at most
    /// 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_host: Option<u32>,
}

/// Concurrency limits with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Concurrency {
    pub global: u32,
    /// `None`: each host's own default, from its cpus
    /// ([`crate::reconcile::execute::per_host_for_cpus`]).
    pub per_host: Option<u32>,
}

/// The fleet-wide default: well under GitHub's 100 concurrent requests
/// (each create mints one JIT config), and above what the per-host
/// defaults of a few hosts add up to.
pub const DEFAULT_GLOBAL_CONCURRENCY: u32 = 64;

impl ConcurrencySpec {
    pub fn resolved(&self) -> Concurrency {
        Concurrency {
            global: self.global.unwrap_or(DEFAULT_GLOBAL_CONCURRENCY),
            per_host: self.per_host,
        }
    }
}

/// The GitHub scope runners register in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Scope {
    Repository { owner: String, repo: String },
    Organization { org: String },
}

impl Scope {
    /// `repos/OWNER/REPO` or `orgs/ORG`, the REST path prefix.
    pub fn api_path(&self) -> String {
        match self {
            Scope::Repository { owner, repo } => format!("repos/{owner}/{repo}"),
            Scope::Organization { org } => format!("orgs/{org}"),
        }
    }
}

/// How to authenticate, with the secret still only referenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum AuthRef {
    /// The built-in simulator: no credentials.
    Simulator,
    TokenEnv {
        name: String,
    },
    TokenFile {
        path: String,
    },
    App {
        app_id: u64,
        installation_id: u64,
        private_key_file: String,
    },
}

impl GitHub {
    /// The scope; `None` only for a file that failed validation.
    pub fn scope(&self) -> Option<Scope> {
        match (&self.repository, &self.organization) {
            (Some(r), None) => r.split_once('/').map(|(o, r)| Scope::Repository {
                owner: o.to_string(),
                repo: r.to_string(),
            }),
            (None, Some(org)) => Some(Scope::Organization { org: org.clone() }),
            (None, None) if self.simulator => {
                let (o, r) = SIMULATOR_REPOSITORY.split_once('/')?;
                Some(Scope::Repository {
                    owner: o.to_string(),
                    repo: r.to_string(),
                })
            }
            _ => None,
        }
    }

    /// The repositories (`OWNER/REPO`) whose jobs scaled pools follow: the
    /// fleet's repository, or the organization's `repositories`.
    pub fn job_repositories(&self) -> Vec<String> {
        match self.scope() {
            Some(Scope::Repository { owner, repo }) => vec![format!("{owner}/{repo}")],
            Some(Scope::Organization { org }) => self
                .repositories
                .iter()
                .map(|r| match r.split_once('/') {
                    Some(_) => r.clone(),
                    None => format!("{org}/{r}"),
                })
                .collect(),
            None => Vec::new(),
        }
    }

    /// The credentials reference; `None` only for a file that failed
    /// validation. With `simulator: true`, any `auth` is ignored.
    pub fn auth_ref(&self) -> Option<AuthRef> {
        if self.simulator {
            return Some(AuthRef::Simulator);
        }
        let auth = self.auth.as_ref()?;
        match (&auth.token_env, &auth.token_file, &auth.app) {
            (Some(name), None, None) => Some(AuthRef::TokenEnv { name: name.clone() }),
            (None, Some(path), None) => Some(AuthRef::TokenFile { path: path.clone() }),
            (None, None, Some(app)) => Some(AuthRef::App {
                app_id: app.app_id,
                installation_id: app.installation_id,
                private_key_file: app.private_key_file.clone(),
            }),
            _ => None,
        }
    }

    /// The REST API base URL, without a trailing slash.
    pub fn api_url(&self) -> &str {
        self.api_url
            .as_deref()
            .unwrap_or("https://api.github.com")
            .trim_end_matches('/')
    }
}

/// How the runner gets installed, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum RunnerInstall {
    Download { version: String, sha256: String },
    Preinstalled { path: String },
}

impl RunnerSpec {
    /// The release the pool asks for; `None` when the runner is
    /// preinstalled (or for a file that failed validation).
    pub fn choice(&self) -> Option<crate::model::runner::RunnerChoice> {
        use crate::model::runner::{RunnerChoice, RunnerVersion};
        if self.preinstalled.is_some() {
            return None;
        }
        match self.version.as_deref() {
            None | Some(RUNNER_LATEST) if self.sha256.is_none() => Some(RunnerChoice::Latest),
            Some(v) => Some(RunnerChoice::Pinned {
                version: RunnerVersion::parse(v)?,
                sha256: self.sha256.as_ref().map(|s| s.to_ascii_lowercase()),
            }),
            None => None,
        }
    }

    /// `None` only for a file that failed validation, or a pinned version
    /// without `sha256` (its digest comes from [`RunnerSpec::choice`]'s
    /// resolution).
    pub fn install(&self) -> Option<RunnerInstall> {
        let version = self.version.as_deref().filter(|v| *v != RUNNER_LATEST);
        match (version, &self.sha256, &self.preinstalled) {
            (None, None, Some(path)) => Some(RunnerInstall::Preinstalled { path: path.clone() }),
            (None, None, None) => Some(RunnerInstall::Download {
                version: DEFAULT_RUNNER_VERSION.to_string(),
                sha256: DEFAULT_RUNNER_SHA256.to_string(),
            }),
            (Some(v), None, None) if v == DEFAULT_RUNNER_VERSION => Some(RunnerInstall::Download {
                version: v.to_string(),
                sha256: DEFAULT_RUNNER_SHA256.to_string(),
            }),
            (Some(v), Some(sha), None) => Some(RunnerInstall::Download {
                version: v.to_string(),
                sha256: sha.to_ascii_lowercase(),
            }),
            _ => None,
        }
    }
}

impl Host {
    /// The interface as far as it does not depend on the fleet's name: the
    /// spec hash's input (every slot of a fleet shares the name, so leaving
    /// it out changes no comparison). What a VM gets is
    /// [`Host::network_attachment_in`].
    pub fn network_attachment(&self) -> crate::model::host::NetworkAttachment {
        self.network_attachment_in("")
    }

    /// The interface the provider attaches for fleet `fleet`, with defaults
    /// applied.
    pub fn network_attachment_in(&self, fleet: &str) -> crate::model::host::NetworkAttachment {
        use crate::model::host::NetworkAttachment;
        let n = &self.network;
        match n.mode {
            NetworkMode::None => NetworkAttachment::None,
            NetworkMode::User => NetworkAttachment::User,
            NetworkMode::Network => NetworkAttachment::Network {
                name: n.name.clone().unwrap_or_else(|| "default".to_string()),
                filter: n.filter.clone(),
            },
            NetworkMode::Isolated => {
                let iso = self.isolated_network_unchecked(fleet);
                NetworkAttachment::Network {
                    name: iso.network,
                    filter: Some(iso.filter),
                }
            }
        }
    }

    /// The network and filter hangar defines for mode `isolated` (`None` in
    /// other modes). An invalid `subnet` falls back to the default: files
    /// are validated before use.
    pub fn isolated_network(&self, fleet: &str) -> Option<crate::model::network::IsolatedNetwork> {
        (self.network.mode == NetworkMode::Isolated).then(|| self.isolated_network_unchecked(fleet))
    }

    fn isolated_network_unchecked(&self, fleet: &str) -> crate::model::network::IsolatedNetwork {
        use crate::model::network::{IsolatedNetwork, Subnet};
        let n = &self.network;
        IsolatedNetwork::for_fleet(
            fleet,
            n.name.as_deref(),
            n.filter.as_deref(),
            n.subnet.as_deref().and_then(|s| Subnet::parse(s).ok()),
        )
    }

    /// Whether this host is hangar's embedded sandbox.
    pub fn is_sandbox(&self) -> bool {
        self.uri == SANDBOX_URI
    }
}

impl BootSpec {
    pub fn direct_boot(&self) -> crate::model::host::DirectBoot {
        crate::model::host::DirectBoot {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
        }
    }
}

impl PolicySpec {
    /// The planner's policy: the file's values over `Policy::default()`.
    pub fn resolved(&self) -> crate::plan::model::Policy {
        let d = crate::plan::model::Policy::default();
        let pick = |v: Option<Duration>, dflt: std::time::Duration| v.map_or(dflt, Duration::std);
        crate::plan::model::Policy {
            boot_timeout: pick(self.boot_timeout, d.boot_timeout),
            offline_timeout: pick(self.offline_timeout, d.offline_timeout),
            orphan_grace: pick(self.orphan_grace, d.orphan_grace),
            backoff_base: pick(self.backoff_base, d.backoff_base),
            backoff_max: pick(self.backoff_max, d.backoff_max),
        }
    }
}
