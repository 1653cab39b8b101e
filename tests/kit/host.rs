//! A libvirt provider for the tests and the VM they ask it to make: the
//! ownership of a slot, its create request, a host's config, a connection
//! made off the runtime's threads, and a private test-driver node.
//! Included with `#[path = "kit/host.rs"] mod host;`.

#![allow(dead_code)]

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use hangar::model::host::{DomainType, NetworkAttachment};
use hangar::model::ownership::{Ownership, SpecHash, VmShape};
use hangar::providers::libvirt::{HostConfig, LibvirtHost};
use hangar::providers::{ProviderError, Seed, VmCreate};
use hangar::secret::Secret;

pub const MIB: u64 = 1 << 20;

/// The storage pool of the test-driver node `tests/fixtures/libvirt/node.xml`.
pub const NODE_POOL: &str = "hangar-test";

/// A VM small enough for a CI machine's real libvirtd: 1 cpu, 128 MiB,
/// a 256 MiB root disk from `base.qcow2`.
pub fn small_vm(cache_bytes: Option<u64>) -> VmShape {
    VmShape {
        cpus: 1,
        memory_bytes: 128 * MIB,
        disk_bytes: 256 * MIB,
        image: "base.qcow2".into(),
        cache_bytes,
    }
}

/// A VM that fits the test-driver node: 2 cpus, 1 GiB, a 4 GiB root disk
/// from `base.qcow2`.
pub fn node_vm(cache_bytes: Option<u64>) -> VmShape {
    VmShape {
        cpus: 2,
        memory_bytes: 1 << 30,
        disk_bytes: 4 << 30,
        image: "base.qcow2".into(),
        cache_bytes,
    }
}

/// The time the test-driver tests stamp their VMs with (the XML keeps
/// whole seconds, so a round trip compares equal).
pub fn fixed_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

/// Ownership of slot `<fleet>-<pool>-<index>` in its `generation` (the
/// spec hash is the generation in 16 hex digits), ephemeral, never failed
/// to boot.
pub fn ownership(
    fleet: &str,
    pool: &str,
    index: u32,
    generation: u64,
    created_at: DateTime<Utc>,
    shape: VmShape,
) -> Ownership {
    Ownership {
        fleet: fleet.into(),
        pool: pool.into(),
        slot: format!("{fleet}-{pool}-{index}"),
        index,
        generation,
        spec_hash: SpecHash(format!("{generation:016x}")),
        created_at,
        ephemeral: true,
        boot_failures: 0,
        shape,
    }
}

/// The create request of `owner`: an empty cloud-config, the instance id
/// of its generation and `credential` as the seed's secret.
pub fn vm_create(owner: Ownership, network: NetworkAttachment, credential: &str) -> VmCreate {
    VmCreate {
        seed: Seed {
            user_data: "#cloud-config\n".to_string(),
            meta_data: format!("instance-id: {}-g{}\n", owner.slot, owner.generation),
            credential: Secret::new(credential.to_string()),
        },
        owner,
        boot: None,
        network,
        cpu_model: Default::default(),
        runner_volume: None,
    }
}

/// Host `name` at `uri` on `storage_pool`: no network, the domain type the
/// host picks, the default console dir, no volume record, no image dirs.
pub fn host_config(name: &str, uri: &str, storage_pool: &str) -> HostConfig {
    HostConfig {
        name: name.into(),
        uri: uri.into(),
        storage_pool: storage_pool.into(),
        network: NetworkAttachment::None,
        domain_type: None,
        console_dir: None,
        volume_record: None,
        observed: None,
        image_dirs: Vec::new(),
    }
}

/// Connects off the runtime's threads (connecting blocks), or the test fails.
pub async fn connect(config: HostConfig) -> LibvirtHost {
    let name = config.name.clone();
    tokio::task::spawn_blocking(move || LibvirtHost::connect(config))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("connect to host {name}: {e}"))
}

/// A private copy of the test-driver node `tests/fixtures/libvirt/node.xml`
/// (its connection sees only it) in a temp dir, host `testhost` on it, with
/// its console logs and hangar's volume record in the same dir.
pub fn test_node(
    domain_type: Option<DomainType>,
) -> Result<(tempfile::TempDir, LibvirtHost), ProviderError> {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/libvirt/node.xml");
    let node = dir.path().join("node.xml");
    std::fs::copy(&fixture, &node).unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
    let host = LibvirtHost::connect(HostConfig {
        domain_type,
        console_dir: Some(dir.path().join("consoles")),
        volume_record: Some(dir.path().join("volumes.json")),
        observed: None,
        ..host_config("testhost", &format!("test://{}", node.display()), NODE_POOL)
    })?;
    Ok((dir, host))
}
