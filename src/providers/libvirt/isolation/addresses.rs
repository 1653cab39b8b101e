//! The host's own IPv4 addresses, which the filter drops besides the
//! private ranges (a public uplink).

use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};

use crate::providers::libvirt::connection::uri_is_local;

/// The host's own IPv4 addresses as far as hangar can tell: for a local
/// URI every interface address (`getifaddrs`), for a remote one the
/// addresses its host name resolves to from here (what the host calls its
/// own may differ behind NAT; private ones are dropped by range anyway).
pub fn host_addresses(uri: &str) -> Vec<Ipv4Addr> {
    if uri_is_local(uri) {
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
