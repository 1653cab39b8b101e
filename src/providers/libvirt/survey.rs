//! What `hangar init` asks a local libvirt about the machine it writes a
//! fleet file for: cpus, memory, storage pools and whether KVM is offered.
//! Read-only; one connection.

use virt::connect::Connect;

use super::connection::open;
use super::facts::capability_domain_types;
use super::HostConfig;
use crate::providers::{ErrorKind, ProviderError};

/// One storage pool of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurveyPool {
    pub name: String,
    pub active: bool,
    pub capacity_bytes: u64,
    pub available_bytes: u64,
}

/// The host as its libvirt describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Sorted by name.
    pub pools: Vec<SurveyPool>,
    /// The capabilities offer a `kvm` domain type.
    pub kvm: bool,
    /// The URI is libvirt's test driver.
    pub test_driver: bool,
}

/// Survey the host at `uri`.
pub fn survey(uri: &str) -> Result<Survey, ProviderError> {
    let config = HostConfig {
        name: "init".into(),
        uri: uri.to_string(),
        storage_pool: String::new(),
        network: crate::model::host::NetworkAttachment::None,
        domain_type: None,
        console_dir: None,
        volume_record: None,
        observed: None,
        image_dirs: Vec::new(),
    };
    // The connection closes when dropped.
    let conn = open(&config, "connect to")?;
    read(&conn, uri)
}

fn read(conn: &Connect, uri: &str) -> Result<Survey, ProviderError> {
    let fail = |what: &str, e: virt::error::Error| {
        ProviderError::new("init", ErrorKind::Refused, format!("{uri}: {what}: {e}"))
    };
    let node = conn.node_info().map_err(|e| fail("read node info", e))?;
    let driver = conn.driver_type().map_err(|e| fail("read driver", e))?;
    let test_driver = driver.eq_ignore_ascii_case("test");
    let kvm = if test_driver {
        false
    } else {
        let caps = conn
            .capabilities()
            .map_err(|e| fail("read capabilities", e))?;
        capability_domain_types(&caps)
            .map_err(|e| ProviderError::new("init", ErrorKind::Refused, e))?
            .iter()
            .any(|t| t == "kvm")
    };
    let mut pools = Vec::new();
    for p in conn
        .list_all_storage_pools(0)
        .map_err(|e| fail("list storage pools", e))?
    {
        let name = p.name().map_err(|e| fail("read a pool's name", e))?;
        let info = p.info().map_err(|e| fail("read a pool's info", e))?;
        pools.push(SurveyPool {
            name,
            active: p.is_active().unwrap_or(false),
            capacity_bytes: info.capacity,
            available_bytes: info.available,
        });
    }
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Survey {
        cpus: node.cpus,
        memory_bytes: node.memory * 1024,
        pools,
        kvm,
        test_driver,
    })
}
