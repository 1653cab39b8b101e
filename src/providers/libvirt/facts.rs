//! What a host is: its cpus, memory and pool space (cached so that steady
//! state observation is the one listing call), and which domain type its
//! VMs run with, chosen once per connection from the driver and the host's
//! capabilities.

use std::time::{Duration, Instant};

use virt::connect::Connect;

use super::errors::map_error;
use super::{HostConfig, Inner};
use crate::model::host::{DomainType, HostFacts, HostIdentity};
use crate::model::tree;
use crate::providers::{ErrorKind, ProviderError};

/// How long the pool's free space may be reused when nothing of ours on the
/// host changed it. The engine's pass only sizes slots by cpus and memory;
/// free space is for `status` (a fresh process) and operators.
pub(super) const POOL_FREE_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// Host facts kept between passes, so that steady-state observation is the
/// one listing call.
#[derive(Debug, Clone, Copy)]
pub(super) struct CachedFacts {
    /// From `virNodeGetInfo`: fixed while the connection lives.
    pub(super) memory_bytes: u64,
    pub(super) cpus: u32,
    /// From `virStoragePoolGetInfo`, with when it was read; `None` once a
    /// create or delete of ours changed the pool.
    pub(super) pool_free: Option<(u64, Instant)>,
}

/// The domain type a host's VMs run with, and why (for `status` and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainTypeChoice {
    pub domain_type: DomainType,
    pub reason: String,
}

/// Decide the domain type on a fresh connection to `config`'s host: the
/// driver, the capabilities and the host CPU's full feature list (one
/// `virConnectBaselineCPU` with expanded features, since a CPU model such
/// as `EPYC` carries `svm` inside it), read once per connection.
pub(super) fn decide_domain_type(
    conn: &Connect,
    config: &HostConfig,
    caps: &str,
) -> Result<DomainTypeChoice, ProviderError> {
    let name = &config.name;
    let refuse = |msg: String| ProviderError::new(name, ErrorKind::Refused, msg);
    let driver = conn
        .driver_type()
        .map_err(|e| map_error(name, "read driver type", &e))?;
    if driver.eq_ignore_ascii_case("test") {
        return match config.domain_type {
            None | Some(DomainType::Test) => Ok(choice(DomainType::Test, "libvirt test driver")),
            Some(other) => Err(refuse(format!(
                "domain type {other:?} asked for, but {} is the test driver",
                config.uri
            ))),
        };
    }
    if config.domain_type == Some(DomainType::Test) {
        return Err(refuse(format!(
            "domain type test needs the test driver, {} is not",
            config.uri
        )));
    }
    // Without the expansion (an old libvirt, a CPU it cannot name) the
    // features the capabilities list by name still count.
    let expanded = host_cpu_xml(caps).and_then(|cpu| {
        conn.baseline_cpu(
            &[cpu.as_str()],
            virt::sys::VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES,
        )
        .ok()
    });
    choose_domain_type(caps, expanded.as_deref(), config.domain_type).map_err(refuse)
}

/// The domain type for a qemu host, from its capabilities XML and
/// (optionally) the host CPU with expanded features, as
/// `virConnectBaselineCPU` returns it; `asked` is the fleet file's
/// `domainType` (`None`: auto). Pure, so fixtures can test it.
///
/// `auto` is kvm only when the capabilities offer a kvm domain *and* the
/// host CPU has hardware virtualisation (`vmx` or `svm`): a `/dev/kvm` on a
/// CPU without them (some nested or CI machines) hangs guests.
pub fn choose_domain_type(
    caps_xml: &str,
    expanded_cpu_xml: Option<&str>,
    asked: Option<DomainType>,
) -> Result<DomainTypeChoice, String> {
    let types = capability_domain_types(caps_xml).map_err(|e| format!("capabilities: {e}"))?;
    let has_kvm = types.iter().any(|t| t == "kvm");
    let mut features = host_cpu_features(caps_xml)?;
    if let Some(cpu) = expanded_cpu_xml {
        features.extend(cpu_features(&tree::parse(cpu)?));
    }
    let hw = features.iter().find(|f| *f == "vmx" || *f == "svm");
    match (asked, has_kvm, hw) {
        (Some(DomainType::Test), ..) => Err("domain type test needs the test driver".into()),
        (Some(DomainType::Qemu), ..) => Ok(choice(
            DomainType::Qemu,
            "qemu (software emulation) asked for in the host config",
        )),
        (Some(DomainType::Kvm), false, _) => {
            Err("kvm asked for, but the host's capabilities offer no kvm domain".into())
        }
        (Some(DomainType::Kvm), true, Some(f)) => Ok(choice(
            DomainType::Kvm,
            &format!("kvm asked for in the host config (host CPU has {f})"),
        )),
        (Some(DomainType::Kvm), true, None) => Ok(choice(
            DomainType::Kvm,
            "kvm asked for in the host config; the host CPU shows no vmx/svm, \
             guests may hang (set domainType: qemu if they do)",
        )),
        (None, true, Some(f)) => Ok(choice(
            DomainType::Kvm,
            &format!("auto: the host offers kvm and its CPU has {f}"),
        )),
        (None, true, None) => Ok(choice(
            DomainType::Qemu,
            "auto: the host offers a kvm domain but its CPU shows no hardware \
             virtualisation (no vmx/svm); using qemu software emulation",
        )),
        (None, false, _) => Ok(choice(
            DomainType::Qemu,
            "auto: the host offers no kvm; using qemu software emulation",
        )),
    }
}

fn choice(domain_type: DomainType, reason: &str) -> DomainTypeChoice {
    DomainTypeChoice {
        domain_type,
        reason: reason.to_string(),
    }
}

/// The `<cpu>` of the capabilities' `<host>`, as XML (for the baseline).
fn host_cpu_xml(caps_xml: &str) -> Option<String> {
    let root = tree::parse(caps_xml).ok()?;
    Some(root.child("host")?.child("cpu")?.to_xml())
}

/// Feature names the capabilities list on the host CPU.
fn host_cpu_features(caps_xml: &str) -> Result<Vec<String>, String> {
    let root = tree::parse(caps_xml).map_err(|e| format!("capabilities: {e}"))?;
    Ok(root
        .child("host")
        .and_then(|h| h.child("cpu"))
        .map(cpu_features)
        .unwrap_or_default())
}

/// Names of a `<cpu>`'s features that are present (not `disable`d).
fn cpu_features(cpu: &tree::Element) -> Vec<String> {
    cpu.children_named("feature")
        .filter(|f| !matches!(f.attr("policy"), Some("disable" | "forbid")))
        .filter_map(|f| f.attr("name").map(str::to_string))
        .collect()
}

/// The domain types the host's capabilities offer for x86_64 (or any arch
/// for the test driver).
pub fn capability_domain_types(caps_xml: &str) -> Result<Vec<String>, String> {
    let root = tree::parse(caps_xml)?;
    let mut out = Vec::new();
    for guest in root.children_named("guest") {
        for arch in guest.children_named("arch") {
            for d in arch.children_named("domain") {
                if let Some(t) = d.attr("type") {
                    if !out.iter().any(|x| x == t) {
                        out.push(t.to_string());
                    }
                }
            }
        }
    }
    Ok(out)
}

impl Inner {
    /// Cpus and memory are read once per connection; the pool's free space
    /// again after a create or delete of ours, or when older than
    /// [`POOL_FREE_MAX_AGE`]. In steady state this costs no round trip.
    pub(super) fn facts(&self) -> Result<HostFacts, ProviderError> {
        let conn = self.conn()?;
        self.identity_change()?;
        let cached = *self.facts.lock().expect("facts lock");
        let (memory_bytes, cpus) = match cached {
            Some(c) => (c.memory_bytes, c.cpus),
            None => {
                let node = self.call("read node info", || conn.node_info())?;
                self.snapshot_touched();
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
                self.snapshot_touched();
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
            identity: Some(self.identity.lock().expect("identity lock").clone()),
            foreign: Default::default(),
        })
    }

    /// Our create or delete changed the pool: read its free space again.
    pub(super) fn pool_changed(&self) {
        if let Some(c) = self.facts.lock().expect("facts lock").as_mut() {
            c.pool_free = None;
        }
        self.forget_volumes();
        self.snapshot_touched();
    }

    /// A new connection may be a new host (or one resized): read all again.
    pub(super) fn forget_facts(&self) {
        *self.facts.lock().expect("facts lock") = None;
        self.snapshot_touched();
    }
}

/// Which libvirtd `conn` reached (see [`HostIdentity`]): the capabilities'
/// host UUID, the hostname, and which daemon the URI names. Read once per
/// connection.
pub(super) fn read_identity(
    conn: &Connect,
    config: &HostConfig,
) -> Result<HostIdentity, ProviderError> {
    identity_from(conn, config, &read_capabilities(conn, config)?)
}

/// The capabilities document: the domain types and host CPU
/// ([`decide_domain_type`]) and the host UUID ([`identity_from`]) come from
/// one read.
pub(super) fn read_capabilities(
    conn: &Connect,
    config: &HostConfig,
) -> Result<String, ProviderError> {
    conn.capabilities()
        .map_err(|e| map_error(&config.name, "read capabilities", &e))
}

/// [`read_identity`] from capabilities already read.
pub(super) fn identity_from(
    conn: &Connect,
    config: &HostConfig,
    caps: &str,
) -> Result<HostIdentity, ProviderError> {
    let name = &config.name;
    let driver = conn
        .driver_type()
        .map_err(|e| map_error(name, "read driver type", &e))?;
    let test_driver = driver.eq_ignore_ascii_case("test");
    // A test driver node file may declare no host UUID: its path alone
    // tells it from the others.
    let uuid = match capability_host_uuid(caps) {
        Ok(uuid) => uuid,
        Err(_) if test_driver => String::new(),
        Err(e) => {
            return Err(ProviderError::new(
                name,
                ErrorKind::Refused,
                format!("capabilities: {e}"),
            ))
        }
    };
    let hostname = conn
        .hostname()
        .map_err(|e| map_error(name, "read hostname", &e))?;
    Ok(HostIdentity {
        uuid,
        hostname,
        daemon: uri_daemon(&config.uri, test_driver),
    })
}

/// The `<host><uuid>` of a capabilities document.
pub fn capability_host_uuid(caps_xml: &str) -> Result<String, String> {
    let root = tree::parse(caps_xml)?;
    root.child("host")
        .and_then(|h| h.child_text("uuid"))
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "no <host><uuid>".to_string())
}

/// Which daemon of a machine a URI names: the system daemon, one user's
/// session daemon (the URI's user, else the local user, as ssh does), or a
/// test driver node (each is its own hypervisor).
pub fn uri_daemon(uri: &str, test_driver: bool) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("", uri));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = path.split('?').next().unwrap_or("");
    if test_driver {
        return format!("test node {path}");
    }
    match path.trim_end_matches('/') {
        "/session" => {
            let user = authority
                .rsplit_once('@')
                .map(|(u, _)| u.to_string())
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "the local user".to_string());
            format!("session of {user}")
        }
        "/system" | "" => "system".to_string(),
        other => format!("{} {other}", scheme.split('+').next().unwrap_or(scheme)),
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    #[test]
    fn the_daemon_a_uri_names() {
        assert_eq!(uri_daemon("qemu:///system", false), "system");
        assert_eq!(uri_daemon("qemu+unix:///system", false), "system");
        assert_eq!(
            uri_daemon("qemu+ssh://ci@127.0.0.1:2222/session?keyfile=/k", false),
            "session of ci"
        );
        assert_eq!(
            uri_daemon("qemu+ssh://root@b1/system?keyfile=/k", false),
            "system"
        );
        assert_eq!(
            uri_daemon("test:///tmp/a/node.xml", true),
            "test node /tmp/a/node.xml"
        );
    }

    #[test]
    fn the_host_uuid_comes_from_the_capabilities() {
        let caps = "<capabilities><host><uuid> 284115ce-482b-45c3-81fd-ca26e3190061 </uuid>\
                    <cpu/></host><guest/></capabilities>";
        assert_eq!(
            capability_host_uuid(caps).unwrap(),
            "284115ce-482b-45c3-81fd-ca26e3190061"
        );
        assert!(capability_host_uuid("<capabilities><host/></capabilities>").is_err());
    }
}
