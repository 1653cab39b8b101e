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

use std::io;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::str::FromStr;

use quick_xml::Writer;
use virt::connect::Connect;
use virt::error::ErrorNumber;

use crate::model::tree;
use crate::model::xml::{finish, text, Xw};
use crate::model::{IsolatedNetwork, Subnet};

/// The NAT network: IPv4 only (no `<ip family='ipv6'>`, so the guest gets
/// no IPv6 from libvirt), DHCP over the whole subnet, libvirt's dnsmasq
/// answering DNS on the gateway.
pub fn network_xml(net: &IsolatedNetwork) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_network(&mut w, net).expect("writing XML into a Vec cannot fail");
    finish(w)
}

fn write_network(w: &mut Xw, net: &IsolatedNetwork) -> io::Result<()> {
    let (start, end) = net.subnet.dhcp_range();
    let gateway = net.subnet.gateway().to_string();
    let prefix = net.subnet.prefix().to_string();
    w.create_element("network").write_inner_content(|w| {
        text(w, "name", &net.network)?;
        text(w, "uuid", &net.network_uuid())?;
        w.create_element("forward")
            .with_attribute(("mode", "nat"))
            .write_empty()?;
        w.create_element("ip")
            .with_attribute(("family", "ipv4"))
            .with_attribute(("address", gateway.as_str()))
            .with_attribute(("prefix", prefix.as_str()))
            .write_inner_content(|w| {
                w.create_element("dhcp").write_inner_content(|w| {
                    w.create_element("range")
                        .with_attribute(("start", start.to_string().as_str()))
                        .with_attribute(("end", end.to_string().as_str()))
                        .write_empty()?;
                    Ok(())
                })?;
                Ok(())
            })?;
        Ok(())
    })?;
    Ok(())
}

/// What a rule does with a frame it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

/// Which way a frame travels; `Out` is from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
    InOut,
}

/// What a rule matches: one protocol element of libvirt's nwfilter XML,
/// layer 2 (ebtables) only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Frames whose source MAC is not the interface's (`$MAC`).
    ForeignSourceMac,
    /// ARP whose sender MAC is not the interface's.
    ArpForeignSenderMac,
    /// ARP whose sender IP is not the guest's (`$IP`, learned by libvirt).
    ArpForeignSenderIp,
    /// Any ARP.
    Arp,
    /// IPv4 whose source is not the guest's address.
    Ipv4ForeignSource,
    /// A DHCP request before the guest has an address:
    /// 0.0.0.0:68 to 255.255.255.255:67.
    DhcpDiscover,
    /// UDP or TCP to `addr:port`.
    Ipv4To {
        addr: Ipv4Addr,
        protocol: &'static str,
        port: u16,
    },
    /// IPv4 to a range.
    Ipv4ToRange { addr: Ipv4Addr, prefix: u8 },
    /// Any IPv4.
    Ipv4,
    /// Any frame at all.
    Any,
}

/// One nwfilter rule; lower priority values run first (libvirt: -1000 to
/// 1000, all in the filter's `root` chain here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub priority: i16,
    pub verdict: Verdict,
    pub direction: Direction,
    pub matches: Match,
    /// Why the rule is there (kept in the rule's `comment`).
    pub why: &'static str,
}

/// Ranges no guest may send to (besides the gateway exceptions): private
/// (RFC 1918), carrier-grade NAT, loopback, link-local (cloud metadata
/// services live at 169.254.169.254), "this network", multicast, and the
/// reserved block that holds the limited broadcast address.
pub const BLOCKED_RANGES: [(Ipv4Addr, u8, &str); 9] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\" (RFC 1122)"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private (RFC 1918)"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "carrier-grade NAT (RFC 6598)",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local, cloud metadata",
    ),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private (RFC 1918)"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private (RFC 1918)"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (
        Ipv4Addr::new(240, 0, 0, 0),
        4,
        "reserved, limited broadcast",
    ),
];

fn blocked_by_range(addr: Ipv4Addr) -> bool {
    BLOCKED_RANGES.iter().any(|&(n, p, _)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
        u32::from(addr) & mask == u32::from(n)
    })
}

/// The filter's rules, in priority order. `host_addresses` are the host's
/// own IPv4 addresses; those outside [`BLOCKED_RANGES`] (a public uplink)
/// get a drop rule each.
pub fn rules(net: &IsolatedNetwork, host_addresses: &[Ipv4Addr]) -> Vec<Rule> {
    use Direction::*;
    use Match::*;
    use Verdict::*;
    let gw = net.subnet.gateway();
    let mut rules = vec![
        Rule {
            priority: -950,
            verdict: Drop,
            direction: Out,
            matches: ForeignSourceMac,
            why: "no MAC spoofing",
        },
        Rule {
            priority: -940,
            verdict: Drop,
            direction: Out,
            matches: ArpForeignSenderMac,
            why: "no ARP spoofing (MAC)",
        },
        Rule {
            priority: -930,
            verdict: Drop,
            direction: Out,
            matches: ArpForeignSenderIp,
            why: "no ARP spoofing (IP)",
        },
        Rule {
            priority: -920,
            verdict: Accept,
            direction: InOut,
            matches: Arp,
            why: "ARP",
        },
        Rule {
            priority: -900,
            verdict: Accept,
            direction: Out,
            matches: DhcpDiscover,
            why: "DHCP before the guest has an address",
        },
        Rule {
            priority: -890,
            verdict: Drop,
            direction: Out,
            matches: Ipv4ForeignSource,
            why: "no IP spoofing",
        },
        Rule {
            priority: -880,
            verdict: Accept,
            direction: Out,
            matches: Ipv4To {
                addr: gw,
                protocol: "udp",
                port: 67,
            },
            why: "DHCP renewal to the gateway",
        },
        Rule {
            priority: -870,
            verdict: Accept,
            direction: Out,
            matches: Ipv4To {
                addr: gw,
                protocol: "udp",
                port: 53,
            },
            why: "DNS to the gateway",
        },
        Rule {
            priority: -860,
            verdict: Accept,
            direction: Out,
            matches: Ipv4To {
                addr: gw,
                protocol: "tcp",
                port: 53,
            },
            why: "DNS over TCP to the gateway",
        },
    ];
    let mut priority = -800;
    for &(addr, prefix, why) in &BLOCKED_RANGES {
        rules.push(Rule {
            priority,
            verdict: Drop,
            direction: Out,
            matches: Ipv4ToRange { addr, prefix },
            why,
        });
        priority += 10;
    }
    let mut own: Vec<Ipv4Addr> = host_addresses
        .iter()
        .copied()
        .filter(|a| !blocked_by_range(*a))
        .collect();
    own.sort();
    own.dedup();
    // The host's public addresses: at most 100, one priority step each,
    // all before the catch-all accept at -100.
    for addr in own.into_iter().take(100) {
        rules.push(Rule {
            priority,
            verdict: Drop,
            direction: Out,
            matches: Ipv4ToRange { addr, prefix: 32 },
            why: "the host's own address",
        });
        priority += 1;
    }
    rules.extend([
        Rule {
            priority: -100,
            verdict: Accept,
            direction: InOut,
            matches: Ipv4,
            why: "IPv4 to and from the internet",
        },
        Rule {
            priority: 1000,
            verdict: Drop,
            direction: InOut,
            matches: Any,
            why: "everything else, IPv6 included",
        },
    ]);
    rules
}

/// The nwfilter XML for `net` on a host with `host_addresses`.
pub fn filter_xml(net: &IsolatedNetwork, host_addresses: &[Ipv4Addr]) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_filter(&mut w, net, &rules(net, host_addresses))
        .expect("writing XML into a Vec cannot fail");
    finish(w)
}

fn write_filter(w: &mut Xw, net: &IsolatedNetwork, rules: &[Rule]) -> io::Result<()> {
    w.create_element("filter")
        .with_attribute(("name", net.filter.as_str()))
        .with_attribute(("chain", "root"))
        .write_inner_content(|w| {
            text(w, "uuid", &net.filter_uuid())?;
            for rule in rules {
                write_rule(w, rule)?;
            }
            Ok(())
        })?;
    Ok(())
}

fn write_rule(w: &mut Xw, rule: &Rule) -> io::Result<()> {
    let action = match rule.verdict {
        Verdict::Accept => "accept",
        Verdict::Drop => "drop",
    };
    let direction = match rule.direction {
        Direction::Out => "out",
        Direction::In => "in",
        Direction::InOut => "inout",
    };
    let priority = rule.priority.to_string();
    let el = w
        .create_element("rule")
        .with_attribute(("action", action))
        .with_attribute(("direction", direction))
        .with_attribute(("priority", priority.as_str()));
    if rule.matches == Match::Any {
        el.write_empty()?;
        return Ok(());
    }
    el.write_inner_content(|w| {
        let comment = ("comment", rule.why);
        let (element, attrs): (&str, Vec<(&str, String)>) = match &rule.matches {
            Match::ForeignSourceMac => (
                "mac",
                vec![("match", "no".into()), ("srcmacaddr", "$MAC".into())],
            ),
            Match::ArpForeignSenderMac => (
                "arp",
                vec![("match", "no".into()), ("arpsrcmacaddr", "$MAC".into())],
            ),
            Match::ArpForeignSenderIp => (
                "arp",
                vec![("match", "no".into()), ("arpsrcipaddr", "$IP".into())],
            ),
            Match::Arp => ("mac", vec![("protocolid", "arp".into())]),
            Match::Ipv4ForeignSource => (
                "ip",
                vec![("match", "no".into()), ("srcipaddr", "$IP".into())],
            ),
            Match::DhcpDiscover => (
                "ip",
                vec![
                    ("srcipaddr", "0.0.0.0".into()),
                    ("dstipaddr", "255.255.255.255".into()),
                    ("protocol", "udp".into()),
                    ("srcportstart", "68".into()),
                    ("dstportstart", "67".into()),
                ],
            ),
            Match::Ipv4To {
                addr,
                protocol,
                port,
            } => (
                "ip",
                vec![
                    ("dstipaddr", addr.to_string()),
                    ("protocol", (*protocol).into()),
                    ("dstportstart", port.to_string()),
                ],
            ),
            Match::Ipv4ToRange { addr, prefix } => (
                "ip",
                vec![
                    ("dstipaddr", addr.to_string()),
                    ("dstipmask", prefix.to_string()),
                ],
            ),
            Match::Ipv4 => ("mac", vec![("protocolid", "ipv4".into())]),
            // A rule without a protocol element matches every frame at
            // layer 2 (libvirt's own `no-other-l2-traffic`); `<all>`
            // would be an iptables rule, blind to IPv6.
            Match::Any => return Ok(()),
        };
        let el = w.create_element(element).with_attributes(
            attrs
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .chain(std::iter::once(comment)),
        );
        el.write_empty()?;
        Ok(())
    })?;
    Ok(())
}

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
    matches!(
        e.code(),
        virt::enumutil::Enum::Known(ErrorNumber::NoNetwork | ErrorNumber::NoNwfilter)
    )
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

/// The IPv4 subnets of a network's XML (`<ip address= prefix=|netmask=>`).
/// Unparsable entries are skipped: they cannot be compared, only shown.
pub fn ipv4_subnets(network_xml: &str) -> Vec<Subnet> {
    let Ok(root) = tree::parse(network_xml) else {
        return Vec::new();
    };
    root.children_named("ip")
        .filter(|ip| ip.attr("family").is_none_or(|f| f == "ipv4"))
        .filter_map(|ip| {
            let addr = Ipv4Addr::from_str(ip.attr("address")?).ok()?;
            let prefix = match (ip.attr("prefix"), ip.attr("netmask")) {
                (Some(p), _) => p.parse::<u8>().ok()?,
                (None, Some(m)) => u32::from(Ipv4Addr::from_str(m).ok()?).count_ones() as u8,
                (None, None) => 24,
            };
            Subnet::masked(addr, prefix)
        })
        .collect()
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
            let uuid = n
                .uuid_string()
                .map_err(lv(format!("read uuid of network {}", net.network)))?;
            if uuid != net.network_uuid() {
                return Err(NetworkError::Foreign {
                    kind: "network",
                    name: net.network.clone(),
                    uuid,
                });
            }
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
            let uuid = f
                .uuid_string()
                .map_err(lv(format!("read uuid of nwfilter {}", net.filter)))?;
            if uuid != net.filter_uuid() {
                return Err(NetworkError::Foreign {
                    kind: "nwfilter",
                    name: net.filter.clone(),
                    uuid,
                });
            }
            f.undefine()
                .map_err(lv(format!("undefine nwfilter {}", net.filter)))?;
            removed = true;
        }
    }
    Ok(removed)
}

/// The host's own IPv4 addresses as far as hangar can tell: for a local
/// URI every interface address (`getifaddrs`), for a remote one the
/// addresses its host name resolves to from here (what the host calls its
/// own may differ behind NAT; private ones are dropped by range anyway).
pub fn host_addresses(uri: &str) -> Vec<Ipv4Addr> {
    if super::uri_is_local(uri) {
        return local_addresses();
    }
    let Ok(parsed) = url::Url::parse(uri) else {
        return Vec::new();
    };
    let Some(host) = parsed.host_str() else {
        return Vec::new();
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, 0)
        .to_socket_addrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| match a.ip() {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every IPv4 address of this machine's interfaces.
pub fn local_addresses() -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and free
    // once with freeifaddrs; every pointer is checked for null before use.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() && i32::from((*addr).sa_family) == libc::AF_INET {
                let sin = addr as *const libc::sockaddr_in;
                out.push(Ipv4Addr::from(u32::from_be((*sin).sin_addr.s_addr)));
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out.sort();
    out.dedup();
    out
}

impl super::Inner {
    /// Ensure the host's isolated network when `attachment` is exactly it
    /// (its network with its filter). Any other attachment, a filter the
    /// user manages included, is left to the user.
    pub(super) fn ensure_isolation(
        &self,
        conn: &Connect,
        attachment: &crate::model::host::NetworkAttachment,
    ) -> Result<(), crate::providers::ProviderError> {
        use crate::model::host::NetworkAttachment;
        use crate::providers::{ErrorKind, ProviderError};
        let Some(net) = &self.isolation else {
            return Ok(());
        };
        let NetworkAttachment::Network {
            name,
            filter: Some(filter),
        } = attachment
        else {
            return Ok(());
        };
        if *name != net.network || *filter != net.filter {
            return Ok(());
        }
        let addresses = host_addresses(&self.config.uri);
        let mut calls = 0;
        let result = ensure_filter(conn, net, &addresses, &mut calls)
            .and_then(|_| ensure_network(conn, net, &mut calls));
        self.calls
            .fetch_add(calls, std::sync::atomic::Ordering::Relaxed);
        result.map(|_| ()).map_err(|e| {
            let kind = match &e {
                NetworkError::Libvirt {
                    code:
                        Some(
                            ErrorNumber::SystemError
                            | ErrorNumber::Rpc
                            | ErrorNumber::NoConnect
                            | ErrorNumber::InvalidConn
                            | ErrorNumber::OperationTimeout,
                        ),
                    ..
                } => ErrorKind::Transient,
                _ => ErrorKind::Refused,
            };
            ProviderError::new(&self.config.name, kind, e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_must_be_private_aligned_and_sized() {
        assert_eq!(
            Subnet::parse("10.213.7.0/24").unwrap().to_string(),
            "10.213.7.0/24"
        );
        assert!(Subnet::parse("192.168.200.16/28").is_ok());
        assert!(Subnet::parse("172.31.0.0/16").is_ok());
        for (bad, says) in [
            ("10.213.7.1/24", "host bits"),
            ("8.8.8.0/24", "not private"),
            ("172.32.0.0/24", "not private"),
            ("10.0.0.0/8", "out of range"),
            ("10.0.0.0/30", "out of range"),
            ("10.0.0.0", "CIDR"),
            ("10.0.0/24", "not an IPv4"),
            ("10.0.0.0/x", "prefix length"),
        ] {
            let e = Subnet::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn gateway_and_dhcp_range_span_the_subnet() {
        let s = Subnet::parse("10.213.7.0/24").unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 213, 7, 1));
        assert_eq!(
            s.dhcp_range(),
            (Ipv4Addr::new(10, 213, 7, 2), Ipv4Addr::new(10, 213, 7, 254))
        );
        let s = Subnet::parse("192.168.200.16/28").unwrap();
        assert_eq!(
            s.dhcp_range(),
            (
                Ipv4Addr::new(192, 168, 200, 18),
                Ipv4Addr::new(192, 168, 200, 30)
            )
        );
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        let a = Subnet::parse("10.213.0.0/16").unwrap();
        let b = Subnet::parse("10.213.7.0/24").unwrap();
        let c = Subnet::parse("10.214.7.0/24").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !c.overlaps(&a));
    }

    #[test]
    fn uuids_are_stable_well_formed_and_bound_to_the_network() {
        let a = IsolatedNetwork::for_fleet("ldmx", None, None, None);
        let u = uuid::Uuid::parse_str(&a.network_uuid()).unwrap();
        assert_eq!(u.get_version_num(), 8);
        assert_eq!(a.network_uuid(), a.clone().network_uuid());
        let mut b = a.clone();
        b.network = "other".into();
        assert_eq!(a.filter, b.filter);
        assert_ne!(a.filter_uuid(), b.filter_uuid());
        assert_ne!(a.network_uuid(), a.filter_uuid());
    }

    #[test]
    fn same_xml_ignores_attribute_order_and_indentation() {
        assert!(same_xml(
            "<a x='1' y='2'>\n  <b/>\n</a>",
            "<a y=\"2\" x=\"1\"><b/></a>"
        ));
        assert!(!same_xml("<a x='1'><b/></a>", "<a x='1'><c/></a>"));
    }

    #[test]
    fn network_subnets_are_read_from_prefix_or_netmask() {
        let xml = "<network><name>n</name>\
            <ip address='192.168.122.1' netmask='255.255.255.0'/>\
            <ip family='ipv6' address='fd00::1' prefix='64'/>\
            <ip address='10.1.2.1' prefix='16'/></network>";
        let got: Vec<String> = ipv4_subnets(xml).iter().map(|s| s.to_string()).collect();
        assert_eq!(got, ["192.168.122.0/24", "10.1.0.0/16"]);
    }
}
