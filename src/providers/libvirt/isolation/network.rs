//! The fleet's NAT network: its XML, and the subnets read back from any
//! network's XML.

use std::io;
use std::net::Ipv4Addr;
use std::str::FromStr;

use quick_xml::Writer;

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

#[cfg(test)]
mod tests {
    use super::*;

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
