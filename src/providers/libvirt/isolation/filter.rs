//! The nwfilter on each VM's interface: its rules, as data (so a test can
//! evaluate what a guest may send), and their XML.

use std::io;
use std::net::Ipv4Addr;

use quick_xml::Writer;

use crate::model::xml::{finish, text, Xw};
use crate::model::IsolatedNetwork;

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
    /// TCP from the guest's `src_port` to `addr`, to a port in `ports`
    /// (inclusive).
    TcpFromPortTo {
        src_port: u16,
        addr: Ipv4Addr,
        ports: (u16, u16),
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

/// Where the host's outgoing connections have their local end: Linux's
/// default `net.ipv4.ip_local_port_range`.
pub const HOST_EPHEMERAL_PORTS: (u16, u16) = (32768, 60999);

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
    if net.host_ssh {
        // The rules are stateless (layer 2, no connection tracking), so a
        // reply cannot be told from a new connection: what passes is TCP
        // from the guest's port 22 to the gateway's ephemeral ports, where
        // the host's ssh client has its end (Linux's default
        // ip_local_port_range). The host's services on other ports stay
        // out of reach, the gateway's ssh server included.
        rules.push(Rule {
            priority: -850,
            verdict: Accept,
            direction: Out,
            matches: TcpFromPortTo {
                src_port: 22,
                addr: gw,
                ports: HOST_EPHEMERAL_PORTS,
            },
            why: "replies of the guest's ssh server to the host",
        });
    }
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
            Match::TcpFromPortTo {
                src_port,
                addr,
                ports,
            } => (
                "ip",
                vec![
                    ("dstipaddr", addr.to_string()),
                    ("protocol", "tcp".into()),
                    ("srcportstart", src_port.to_string()),
                    ("dstportstart", ports.0.to_string()),
                    ("dstportend", ports.1.to_string()),
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
