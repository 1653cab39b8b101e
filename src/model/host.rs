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
