//! The `isolated` network mode: one libvirt NAT network per fleet and one
//! nwfilter on each VM's interface that keeps job code away from the host
//! and every private network while it reaches the internet.
//!
//! - Names: network `hangar-<fleet>`, filter `hangar-isolated-<fleet>`
//!   (both overridable in the fleet file). The filter carries the network's
//!   gateway as a fixed address, so it belongs to one network: a filter
//!   shared by two networks would let one fleet's ensure rewrite the other's
//!   DNS exception.
//! - Subnet: `10.213.X.0/24`, X from the SHA-256 of the fleet name, unless
//!   the file sets one; it must lie in RFC 1918 space, so the filter's
//!   private-range drops cover the network itself (guest to guest).
//! - Ownership: network and nwfilter XML carry no metadata in libvirt 9.0,
//!   so hangar's objects carry a UUID derived from their name (and, for the
//!   filter, the network it serves). A same-named object with another UUID
//!   is someone else's and is never modified or deleted.
//! - The filter works at layer 2 (ebtables): its rules see every frame the
//!   guest sends, whether or not the host's bridge hands bridged traffic to
//!   iptables (`bridge-nf-call-iptables`), which libvirt only warns about.
//!   Layer 2 rules are stateless: a reply from the guest to a connection the
//!   host opened (ssh from the host) is dropped like any other packet to a
//!   private address.

pub mod addresses;
pub mod filter;
pub mod network;

use std::net::Ipv4Addr;

use virt::connect::Connect;
use virt::error::ErrorNumber;

use self::filter::filter_xml;
use self::network::{ipv4_subnets, network_xml};
use super::errors::{classify, kind_of};
use crate::model::tree;
use crate::model::{IsolatedNetwork, Subnet};
use crate::providers::ErrorKind;

/// Why [`ensure`] (or [`remove`]) stopped.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A same-named object that hangar did not make (or made for another
    /// network): left untouched.
    #[error("{kind} {name} exists and is not hangar's for this network (uuid {uuid}); rename ours in the fleet file or remove theirs")]
    Foreign {
        kind: &'static str,
        name: String,
        uuid: String,
    },
    #[error("subnet {subnet} of network {name} overlaps network {other}'s {theirs}; set hosts[].network.subnet")]
    SubnetInUse {
        name: String,
        subnet: Subnet,
        other: String,
        theirs: String,
    },
    #[error("network {name} is running with subnet {actual}, the fleet file says {wanted}: stop the fleet's VMs on this host and `virsh net-destroy {name}`, then apply again")]
    SubnetChanged {
        name: String,
        actual: String,
        wanted: Subnet,
    },
    /// The network is defined but libvirt could not start it.
    #[error("start network {name}: {message}")]
    StartFailed { name: String, message: String },
    #[error("{what}: {message}")]
    Libvirt {
        what: String,
        message: String,
        /// libvirt's error number, to tell a dropped connection from a
        /// refusal.
        code: Option<ErrorNumber>,
    },
}

fn lv(what: impl Into<String>) -> impl FnOnce(virt::error::Error) -> NetworkError {
    let what = what.into();
    move |e| NetworkError::Libvirt {
        what,
        message: e.message().to_string(),
        code: match e.code() {
            virt::enumutil::Enum::Known(c) => Some(c),
            virt::enumutil::Enum::Unknown(_) => None,
        },
    }
}

fn is_missing(e: &virt::error::Error) -> bool {
    kind_of(e) == ErrorKind::NotFound
}

/// What [`ensure`] did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Defined,
    Redefined,
    Unchanged,
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    pub filter: Change,
    pub network: Change,
    /// The network was started (it had been inactive).
    pub started: bool,
    /// libvirt calls made.
    pub calls: u64,
}

/// Make `net` true on the host behind `conn`: the filter defined (or
/// redefined, which libvirt applies to running VMs at once) and the network
/// defined, autostarted and running. Idempotent; touches only objects that
/// carry hangar's UUID for these names. Call it before defining a domain
/// that uses them.
pub fn ensure(
    conn: &Connect,
    net: &IsolatedNetwork,
    host_addresses: &[Ipv4Addr],
) -> Result<Ensured, NetworkError> {
    let mut calls = 0;
    let filter = ensure_filter(conn, net, host_addresses, &mut calls)?;
    let (network, started) = ensure_network(conn, net, &mut calls)?;
    Ok(Ensured {
        filter,
        network,
        started,
        calls,
    })
}

/// The filter alone (see [`ensure`]).
pub fn ensure_filter(
    conn: &Connect,
    net: &IsolatedNetwork,
    host_addresses: &[Ipv4Addr],
    calls: &mut u64,
) -> Result<Change, NetworkError> {
    let wanted = filter_xml(net, host_addresses);
    *calls += 1;
    let change = match conn.lookup_nwfilter_by_name(&net.filter) {
        Err(e) if is_missing(&e) => Change::Defined,
        Err(e) => return Err(lv(format!("look up nwfilter {}", net.filter))(e)),
        Ok(existing) => {
            *calls += 2;
            ours(
                "nwfilter",
                &net.filter,
                existing.uuid_string(),
                &net.filter_uuid(),
            )?;
            let actual = existing
                .xml_desc(0)
                .map_err(lv(format!("read nwfilter {}", net.filter)))?;
            if same_xml(&actual, &wanted) {
                return Ok(Change::Unchanged);
            }
            Change::Redefined
        }
    };
    *calls += 1;
    conn.define_nwfilter_xml(&wanted)
        .map_err(lv(format!("define nwfilter {}", net.filter)))?;
    Ok(change)
}

/// An existing object of ours carries the UUID hangar derives from its
/// name; any other same-named object is someone else's and is left alone.
fn ours(
    kind: &'static str,
    name: &str,
    uuid: Result<String, virt::error::Error>,
    expected: &str,
) -> Result<(), NetworkError> {
    let uuid = uuid.map_err(lv(format!("read uuid of {kind} {name}")))?;
    if uuid == expected {
        Ok(())
    } else {
        Err(NetworkError::Foreign {
            kind,
            name: name.to_string(),
            uuid,
        })
    }
}

/// The network alone (see [`ensure`]); also says whether it was started.
pub fn ensure_network(
    conn: &Connect,
    net: &IsolatedNetwork,
    calls: &mut u64,
) -> Result<(Change, bool), NetworkError> {
    *calls += 1;
    let (network, change) = match conn.lookup_network_by_name(&net.network) {
        Err(e) if is_missing(&e) => {
            refuse_overlaps(conn, net, calls)?;
            *calls += 1;
            let n = conn
                .define_network_xml(&network_xml(net))
                .map_err(lv(format!("define network {}", net.network)))?;
            (n, Change::Defined)
        }
        Err(e) => return Err(lv(format!("look up network {}", net.network))(e)),
        Ok(existing) => {
            *calls += 2;
            ours(
                "network",
                &net.network,
                existing.uuid_string(),
                &net.network_uuid(),
            )?;
            let xml = existing
                .xml_desc(0)
                .map_err(lv(format!("read network {}", net.network)))?;
            let actual = ipv4_subnets(&xml);
            if actual.len() == 1 && actual[0] == net.subnet {
                (existing, Change::Unchanged)
            } else {
                *calls += 1;
                let active = existing
                    .is_active()
                    .map_err(lv(format!("read state of network {}", net.network)))?;
                if active {
                    return Err(NetworkError::SubnetChanged {
                        name: net.network.clone(),
                        actual: actual
                            .iter()
                            .map(Subnet::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        wanted: net.subnet,
                    });
                }
                refuse_overlaps(conn, net, calls)?;
                *calls += 1;
                let n = conn
                    .define_network_xml(&network_xml(net))
                    .map_err(lv(format!("redefine network {}", net.network)))?;
                (n, Change::Redefined)
            }
        }
    };
    *calls += 2;
    if !network
        .autostart()
        .map_err(lv(format!("read autostart of network {}", net.network)))?
    {
        *calls += 1;
        network
            .set_autostart(true)
            .map_err(lv(format!("autostart network {}", net.network)))?;
    }
    let active = network
        .is_active()
        .map_err(lv(format!("read state of network {}", net.network)))?;
    if active {
        return Ok((change, false));
    }
    *calls += 1;
    network.create().map_err(|e| NetworkError::StartFailed {
        name: net.network.clone(),
        message: e.message().to_string(),
    })?;
    Ok((change, true))
}

fn refuse_overlaps(
    conn: &Connect,
    net: &IsolatedNetwork,
    calls: &mut u64,
) -> Result<(), NetworkError> {
    *calls += 1;
    let all = conn
        .list_all_networks(0)
        .map_err(lv("list networks".to_string()))?;
    for other in all {
        *calls += 2;
        let name = other.name().map_err(lv("read a network's name"))?;
        if name == net.network {
            continue;
        }
        let xml = other
            .xml_desc(0)
            .map_err(lv(format!("read network {name}")))?;
        if let Some(theirs) = ipv4_subnets(&xml)
            .into_iter()
            .find(|s| s.overlaps(&net.subnet))
        {
            return Err(NetworkError::SubnetInUse {
                name: net.network.clone(),
                subnet: net.subnet,
                other: name,
                theirs: theirs.to_string(),
            });
        }
    }
    Ok(())
}

/// Whether two XML documents say the same: same elements in the same order,
/// same attributes in any order, text trimmed.
fn same_xml(a: &str, b: &str) -> bool {
    fn canon(e: &tree::Element) -> tree::Element {
        let mut attrs = e.attrs.clone();
        attrs.sort();
        tree::Element {
            name: e.name.clone(),
            attrs,
            children: e.children.iter().map(canon).collect(),
            text: e.text.trim().to_string(),
        }
    }
    match (tree::parse(a), tree::parse(b)) {
        (Ok(a), Ok(b)) => canon(&a) == canon(&b),
        _ => false,
    }
}

/// Remove `net`'s network (stopped first) and filter, if they are hangar's.
/// A filter still referenced by a VM cannot be removed: libvirt refuses,
/// and so does this. Returns whether anything was removed.
pub fn remove(conn: &Connect, net: &IsolatedNetwork) -> Result<bool, NetworkError> {
    let mut removed = false;
    match conn.lookup_network_by_name(&net.network) {
        Err(e) if is_missing(&e) => {}
        Err(e) => return Err(lv(format!("look up network {}", net.network))(e)),
        Ok(n) => {
            ours(
                "network",
                &net.network,
                n.uuid_string(),
                &net.network_uuid(),
            )?;
            if n.is_active()
                .map_err(lv(format!("read state of network {}", net.network)))?
            {
                n.destroy()
                    .map_err(lv(format!("stop network {}", net.network)))?;
            }
            n.undefine()
                .map_err(lv(format!("undefine network {}", net.network)))?;
            removed = true;
        }
    }
    match conn.lookup_nwfilter_by_name(&net.filter) {
        Err(e) if is_missing(&e) => {}
        Err(e) => return Err(lv(format!("look up nwfilter {}", net.filter))(e)),
        Ok(f) => {
            ours("nwfilter", &net.filter, f.uuid_string(), &net.filter_uuid())?;
            f.undefine()
                .map_err(lv(format!("undefine nwfilter {}", net.filter)))?;
            removed = true;
        }
    }
    Ok(removed)
}

impl NetworkError {
    /// What the error means for the caller: a libvirt failure by its
    /// number ([`classify`]); every other case is a refusal that retrying
    /// will not fix (a foreign object, an overlapping or changed subnet, a
    /// network libvirt would not start).
    pub fn kind(&self) -> ErrorKind {
        match self {
            NetworkError::Libvirt { code: Some(c), .. } => classify(*c),
            _ => ErrorKind::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_xml_ignores_attribute_order_and_indentation() {
        assert!(same_xml(
            "<a x='1' y='2'>\n  <b/>\n</a>",
            "<a y=\"2\" x=\"1\"><b/></a>"
        ));
        assert!(!same_xml("<a x='1'><b/></a>", "<a x='1'><c/></a>"));
    }
}
