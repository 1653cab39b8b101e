//! The pure side of the `isolated` network mode: subnets and the names and
//! UUIDs of a fleet's network and filter.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::names::{default_filter_name, default_network_name};

/// The `/16` the default subnets are taken from: clear of libvirt's
/// `192.168.122.0/24`, Docker's `172.17.0.0/16`+ and `192.168.0.0/16`
/// address pools, and the low `10.x` ranges LANs and Kubernetes favour.
pub const DEFAULT_SUBNET_BASE: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 0);

/// The default subnet of a fleet: `10.213.X.0/24`, X the first byte of
/// SHA-256(`hangar-network:<fleet>`). Two fleets on one host collide with a
/// chance of 1 in 256; `ensure` then refuses and names the other network.
pub fn default_subnet(fleet: &str) -> Subnet {
    let digest = Sha256::digest(format!("hangar-network:{fleet}").as_bytes());
    let [a, b, _, _] = DEFAULT_SUBNET_BASE.octets();
    Subnet {
        network: Ipv4Addr::new(a, b, digest[0], 0),
        prefix: 24,
    }
}

/// An IPv4 subnet in CIDR form, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

/// Private ranges a guest subnet may come from (RFC 1918).
const PRIVATE: [(Ipv4Addr, u8); 3] = [
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
];

impl Subnet {
    /// Shortest prefix accepted: a /16 already holds 65k guests.
    pub const MIN_PREFIX: u8 = 16;
    /// Longest prefix accepted: a /28 leaves 13 guest addresses.
    pub const MAX_PREFIX: u8 = 28;

    /// `10.213.7.0/24`: an RFC 1918 network address with a prefix from
    /// [`Self::MIN_PREFIX`] to [`Self::MAX_PREFIX`].
    pub fn parse(s: &str) -> Result<Subnet, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not in CIDR form (like 10.213.7.0/24)"))?;
        let network =
            Ipv4Addr::from_str(addr).map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("`{prefix}` is not a prefix length"))?;
        if !(Self::MIN_PREFIX..=Self::MAX_PREFIX).contains(&prefix) {
            return Err(format!(
                "prefix /{prefix} is out of range: from /{} to /{}",
                Self::MIN_PREFIX,
                Self::MAX_PREFIX
            ));
        }
        let subnet = Subnet { network, prefix };
        if subnet.network != Ipv4Addr::from(u32::from(network) & subnet.mask_bits()) {
            return Err(format!(
                "`{s}` has host bits set; the network address is {}/{prefix}",
                Ipv4Addr::from(u32::from(network) & subnet.mask_bits())
            ));
        }
        if !PRIVATE.iter().any(|&(n, p)| {
            Subnet {
                network: n,
                prefix: p,
            }
            .contains_subnet(&subnet)
        }) {
            return Err(format!(
                "`{s}` is not private: use 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 space"
            ));
        }
        Ok(subnet)
    }

    /// Any IPv4 subnet (such as one libvirt reports for another network),
    /// host bits cleared; unlike [`Self::parse`] it need not be private.
    pub fn masked(addr: Ipv4Addr, prefix: u8) -> Option<Subnet> {
        if prefix > 32 {
            return None;
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Some(Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask_bits(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// The host's address on the network: the first one.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// DHCP hands out everything after the gateway up to the last address
    /// before broadcast.
    pub fn dhcp_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        let first = u32::from(self.network);
        let last = first | !self.mask_bits();
        (Ipv4Addr::from(first + 2), Ipv4Addr::from(last - 1))
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask_bits() == u32::from(self.network)
    }

    fn contains_subnet(&self, other: &Subnet) -> bool {
        other.prefix >= self.prefix && self.contains(other.network)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains_subnet(other) || other.contains_subnet(self)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// One fleet's isolated network on a host: what [`ensure`] makes true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolatedNetwork {
    /// The libvirt network's name.
    pub network: String,
    /// The nwfilter's name.
    pub filter: String,
    pub subnet: Subnet,
    /// The host may open ssh connections to the guests (some pool lists
    /// `sshAuthorizedKeys`): the filter then lets a guest's replies from
    /// its port 22 back to the host.
    pub host_ssh: bool,
}

impl IsolatedNetwork {
    /// With or without the host's ssh into the guests (see `host_ssh`).
    pub fn with_host_ssh(mut self, host_ssh: bool) -> IsolatedNetwork {
        self.host_ssh = host_ssh;
        self
    }

    /// The fleet's defaults for whatever the file leaves out.
    pub fn for_fleet(
        fleet: &str,
        network: Option<&str>,
        filter: Option<&str>,
        subnet: Option<Subnet>,
    ) -> IsolatedNetwork {
        IsolatedNetwork {
            network: network.map_or_else(|| default_network_name(fleet), str::to_string),
            filter: filter.map_or_else(|| default_filter_name(fleet), str::to_string),
            subnet: subnet.unwrap_or_else(|| default_subnet(fleet)),
            host_ssh: false,
        }
    }

    /// The UUID that marks the network as hangar's.
    pub fn network_uuid(&self) -> String {
        derived_uuid(&format!("hangar:network:{}", self.network))
    }

    /// The UUID that marks the filter as hangar's and as this network's.
    pub fn filter_uuid(&self) -> String {
        derived_uuid(&format!(
            "hangar:nwfilter:{}:network:{}",
            self.filter, self.network
        ))
    }
}

/// A UUID from SHA-256 of `key`, with the RFC 9562 version 8 (custom) and
/// variant bits set, so it is well formed and never random.
fn derived_uuid(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}
