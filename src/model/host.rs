//! What hangar knows about a host and how a VM attaches to it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which libvirt domain type a host runs its VMs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    Kvm,
    Qemu,
    /// libvirt's test driver (the sandbox and fast tests).
    Test,
}

/// The CPU a kvm guest sees (fleet file `vm.cpuModel`). Under qemu
/// emulation the guest always gets TCG's `max` model (libvirt's
/// `maximum` mode): every feature qemu can emulate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CpuModel {
    /// The host's CPU exactly (fastest; a VM cannot move to another CPU).
    #[default]
    HostPassthrough,
    /// libvirt's closest named model to the host's CPU, plus its extra
    /// features (for users who migrate VMs between hosts).
    HostModel,
}

/// A host's capacity, read once per pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostFacts {
    pub memory_bytes: u64,
    pub cpus: u32,
    /// Free bytes in the host's storage pool, where libvirt knows.
    pub pool_free_bytes: Option<u64>,
    pub domain_type: DomainType,
    /// Why that domain type was chosen, for `status` and logs.
    pub domain_type_reason: String,
    /// Which libvirtd this is, read once per connection; `None` where the
    /// provider cannot tell (then no two entries are compared).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<HostIdentity>,
    /// What domains that are not the fleet's hold there, from the pass's
    /// observation (the engine fills it in; providers leave it empty).
    #[serde(default, skip_serializing_if = "ForeignUse::is_none")]
    pub foreign: ForeignUse,
}

/// Memory and vCPUs that running (or paused) domains not of this fleet
/// hold on a host, from their definitions (`<memory>`, the most a guest
/// may use, and `<vcpu>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForeignUse {
    pub domains: u32,
    pub memory_bytes: u64,
    pub vcpus: u64,
}

impl ForeignUse {
    pub fn add(&mut self, memory_bytes: u64, vcpus: u32) {
        self.domains += 1;
        self.memory_bytes = self.memory_bytes.saturating_add(memory_bytes);
        self.vcpus += u64::from(vcpus);
    }

    pub fn is_none(&self) -> bool {
        self.domains == 0
    }
}

/// What a libvirtd is, whatever URI reached it: two host entries with equal
/// identities are one daemon, and would each see the other's VMs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostIdentity {
    /// The `<host><uuid>` of libvirt's capabilities.
    pub uuid: String,
    /// `virConnectGetHostname`.
    pub hostname: String,
    /// Which daemon on that machine: `system`, `session of USER` (each
    /// user's session daemon is its own), or `test node PATH` (each test
    /// driver node file is its own hypervisor).
    pub daemon: String,
}

impl std::fmt::Display for HostIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "host uuid {}, hostname {}, {} daemon",
            self.uuid,
            if self.hostname.is_empty() {
                "?"
            } else {
                &self.hostname
            },
            self.daemon
        )
    }
}

/// Kernel, initrd and command line for a direct kernel boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectBoot {
    pub kernel: String,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
}

/// How a VM's network interface is attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NetworkAttachment {
    /// No interface at all.
    None,
    /// qemu user-mode networking (tests; no host network reachable by name).
    User,
    /// A named libvirt network, optionally with an nwfilter on the interface.
    Network {
        name: String,
        filter: Option<String>,
    },
}
