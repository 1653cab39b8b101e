//! The `isolated` network mode on the real libvirtd at `qemu:///system`
//! (started by `.ci/start-libvirtd`): network and nwfilter defined,
//! `ensure` idempotent, same-named foreign objects refused and untouched,
//! everything the test defined removed. No guest boots and no packet is
//! sent. Without a reachable daemon the test says why and skips, unless
//! `HANGAR_REQUIRE_LIBVIRTD=1`.
//!
//! Starting a NAT network needs a bridge, dnsmasq and iptables rules; where
//! the environment refuses that (a container without the capability), the
//! test asserts on the definitions and prints why the start failed.

use std::net::Ipv4Addr;

use hangar::providers::libvirt::isolation::network::ipv4_subnets;
use hangar::providers::libvirt::isolation::{self, ensure, ensure_filter, Change, NetworkError};

use hangar::model::network::{IsolatedNetwork, Subnet};
use virt::connect::Connect;

#[path = "kit/virsh.rs"]
mod virsh;
use virsh::SYSTEM as URI;

/// A connection to the system daemon; `None` (after saying why) when it
/// cannot be used and is not required (see `virsh::usable`).
fn connect() -> Option<Connect> {
    if !virsh::usable() {
        return None;
    }
    virt::error::clear_error_callback();
    Some(Connect::open(Some(URI)).unwrap_or_else(|e| panic!("connect to {URI}: {}", e.message())))
}

/// The stored XML of filter `name`.
fn filter_xml(conn: &Connect, name: &str) -> String {
    conn.lookup_nwfilter_by_name(name)
        .unwrap()
        .xml_desc(0)
        .unwrap()
}

/// Removes what the test defined, also when an assertion failed.
struct Cleanup<'a> {
    conn: &'a Connect,
    nets: Vec<IsolatedNetwork>,
    foreign_filters: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for net in &self.nets {
            if let Err(e) = isolation::remove(self.conn, net) {
                eprintln!("cleanup of {}: {e}", net.network);
            }
        }
        for name in &self.foreign_filters {
            if let Ok(f) = self.conn.lookup_nwfilter_by_name(name) {
                let _ = f.undefine();
            }
        }
    }
}

#[test]
fn isolated_network_and_filter_on_a_real_libvirtd() {
    let Some(conn) = connect() else { return };
    // A fleet name no one else uses, and a subnet from the test range of
    // the default space (defined only; no traffic is ever sent to it).
    let fleet = format!("nettest-{}", std::process::id());
    let net = IsolatedNetwork::for_fleet(
        &fleet,
        None,
        None,
        Some(Subnet::parse("10.213.251.0/28").unwrap()),
    );
    let mut cleanup = Cleanup {
        conn: &conn,
        nets: vec![net.clone()],
        foreign_filters: Vec::new(),
    };
    let host = [Ipv4Addr::new(203, 0, 113, 7)];

    let first = ensure(&conn, &net, &host);
    let started = match &first {
        Ok(e) => {
            assert_eq!((e.filter, e.network), (Change::Defined, Change::Defined));
            assert!(e.started);
            true
        }
        Err(NetworkError::StartFailed { name, message }) => {
            assert_eq!(name, &net.network);
            eprintln!(
                "note: network {name} is defined but did not start here \
                 (environment, not hangar): {message}"
            );
            false
        }
        Err(e) => panic!("ensure: {e}"),
    };

    let n = conn.lookup_network_by_name(&net.network).unwrap();
    assert_eq!(n.uuid_string().unwrap(), net.network_uuid());
    assert!(n.autostart().unwrap());
    assert_eq!(n.is_active().unwrap(), started);
    assert_eq!(ipv4_subnets(&n.xml_desc(0).unwrap()), [net.subnet]);
    let f = conn.lookup_nwfilter_by_name(&net.filter).unwrap();
    assert_eq!(f.uuid_string().unwrap(), net.filter_uuid());
    let stored = f.xml_desc(0).unwrap();
    assert!(stored.contains("203.0.113.7"), "{stored}");
    assert!(stored.contains("10.213.251.1"), "{stored}");

    // Idempotent: libvirt's own rendering of our filter compares equal.
    let mut calls = 0;
    assert_eq!(
        ensure_filter(&conn, &net, &host, &mut calls).unwrap(),
        Change::Unchanged
    );
    if started {
        let again = ensure(&conn, &net, &host).unwrap();
        assert_eq!(
            (again.filter, again.network, again.started),
            (Change::Unchanged, Change::Unchanged, false)
        );
    }
    // The host's addresses changed: the filter is redefined in place.
    assert_eq!(
        ensure_filter(&conn, &net, &[Ipv4Addr::new(198, 51, 100, 1)], &mut calls).unwrap(),
        Change::Redefined
    );
    assert!(filter_xml(&conn, &net.filter).contains("198.51.100.1"));

    // A pool lists ssh keys: the host's ssh rule is added in place, and
    // libvirt's rendering of it compares equal on the next look.
    let ssh = net.clone().with_host_ssh(true);
    let moved = [Ipv4Addr::new(198, 51, 100, 1)];
    assert_eq!(
        ensure_filter(&conn, &ssh, &moved, &mut calls).unwrap(),
        Change::Redefined
    );
    assert!(filter_xml(&conn, &net.filter).contains("dstportend='60999'"));
    assert_eq!(
        ensure_filter(&conn, &ssh, &moved, &mut calls).unwrap(),
        Change::Unchanged
    );
    assert_eq!(
        ensure_filter(&conn, &net, &moved, &mut calls).unwrap(),
        Change::Redefined
    );

    // A foreign filter with the name another fleet of ours would use:
    // refused, left as it was, and not removed.
    let other = IsolatedNetwork::for_fleet(
        &format!("{fleet}-b"),
        None,
        None,
        Some(Subnet::parse("10.213.252.0/28").unwrap()),
    );
    let foreign = format!(
        "<filter name='{}' chain='root'><rule action='accept' direction='out' priority='500'><mac protocolid='ipv4'/></rule></filter>",
        other.filter
    );
    conn.define_nwfilter_xml(&foreign).unwrap();
    cleanup.foreign_filters.push(other.filter.clone());
    let before = filter_xml(&conn, &other.filter);
    let e = ensure(&conn, &other, &host).unwrap_err();
    assert!(
        matches!(
            e,
            NetworkError::Foreign {
                kind: "nwfilter",
                ..
            }
        ),
        "{e}"
    );
    assert!(isolation::remove(&conn, &other).is_err());
    assert_eq!(filter_xml(&conn, &other.filter), before);
    assert!(conn.lookup_network_by_name(&other.network).is_err());

    // Our filter bound to another network is not ours for that network.
    let rebound = IsolatedNetwork {
        network: other.network.clone(),
        ..net.clone()
    };
    assert!(matches!(
        ensure_filter(&conn, &rebound, &host, &mut calls),
        Err(NetworkError::Foreign { .. })
    ));

    // Removal takes ours and leaves nothing behind.
    assert!(isolation::remove(&conn, &net).unwrap());
    assert!(conn.lookup_network_by_name(&net.network).is_err());
    assert!(conn.lookup_nwfilter_by_name(&net.filter).is_err());
    assert!(!isolation::remove(&conn, &net).unwrap());
    cleanup.nets.clear();
}
