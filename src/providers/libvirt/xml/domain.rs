//! Domain XML: what hangar defines for a VM generation, and the facts it
//! reads back (ownership, disks, whether the seed is attached).

use std::io;

use quick_xml::events::BytesText;
use quick_xml::Writer;

use super::volume::VolumeFormat;
use crate::model::host::{CpuModel, DirectBoot, DomainType, NetworkAttachment};
use crate::model::names::{
    cache_volume_name, root_volume_name, seed_volume_name, CACHE_DISK_SERIAL, SEED_DISK_SERIAL,
};
use crate::model::ownership::Ownership;
use crate::model::ownership::{
    parse_ownership_element, write_ownership, OwnershipError, OWNERSHIP_ELEMENT, OWNERSHIP_NS,
};
use crate::model::tree::{self, Element};
use crate::model::xml::{finish, text, Xw};
use crate::plan::model::DrainState;

/// A disk of a domain: a volume in a pool, on the virtio bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub pool: String,
    pub volume: String,
    /// `qcow2` or `raw`.
    pub format: VolumeFormat,
    /// `vda`, `vdb`, ...
    pub target: String,
    pub serial: Option<String>,
    pub readonly: bool,
}

/// Everything [`domain_xml`] needs; no secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    pub domain_type: DomainType,
    /// Used under kvm; qemu guests get the `maximum` mode, test ones none.
    pub cpu_model: CpuModel,
    pub name: String,
    /// Carried forward when redefining an existing domain of ours.
    pub uuid: Option<String>,
    pub owner: Ownership,
    pub boot: Option<DirectBoot>,
    pub network: NetworkAttachment,
    /// Root, then cache, then seed.
    pub disks: Vec<DiskSpec>,
    /// Absolute path of the serial console log on the host.
    pub console_log: Option<String>,
    /// The qemu guest agent's channel (qemu and kvm domains only).
    pub agent_channel: bool,
    /// Where the channel's socket is bound on the host; `None`: where
    /// libvirt puts it.
    pub agent_socket: Option<String>,
}

impl DomainSpec {
    /// The domain hangar defines for one VM generation: root overlay (vda),
    /// cache (vdb, if the shape has one), seed (vdc, if `with_seed`).
    pub fn for_vm(
        domain_type: DomainType,
        storage_pool: &str,
        owner: &Ownership,
        boot: Option<&DirectBoot>,
        network: &NetworkAttachment,
        with_seed: bool,
        console_log: Option<String>,
    ) -> DomainSpec {
        let mut disks = vec![DiskSpec {
            pool: storage_pool.to_string(),
            volume: root_volume_name(&owner.slot, owner.generation),
            format: VolumeFormat::Qcow2,
            target: "vda".into(),
            serial: None,
            readonly: false,
        }];
        if owner.shape.cache_bytes.is_some() {
            disks.push(DiskSpec {
                pool: storage_pool.to_string(),
                volume: cache_volume_name(&owner.slot),
                format: VolumeFormat::Qcow2,
                target: "vdb".into(),
                serial: Some(CACHE_DISK_SERIAL.into()),
                readonly: false,
            });
        }
        if with_seed {
            disks.push(seed_disk(storage_pool, &owner.slot, owner.generation));
        }
        DomainSpec {
            domain_type,
            cpu_model: CpuModel::default(),
            name: owner.slot.clone(),
            uuid: None,
            owner: owner.clone(),
            boot: boot.cloned(),
            network: network.clone(),
            disks,
            console_log,
            agent_channel: domain_type != DomainType::Test,
            agent_socket: None,
        }
    }
}

/// The seed disk of a generation, as attached (and as given to detach).
pub fn seed_disk(storage_pool: &str, slot: &str, generation: u64) -> DiskSpec {
    DiskSpec {
        pool: storage_pool.to_string(),
        volume: seed_volume_name(slot, generation),
        format: VolumeFormat::Raw,
        target: "vdc".into(),
        serial: Some(SEED_DISK_SERIAL.into()),
        readonly: true,
    }
}

/// Libvirt domain XML for `spec`.
pub fn domain_xml(spec: &DomainSpec) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_domain(&mut w, spec).expect("writing XML into a Vec cannot fail");
    finish(w)
}

fn domain_type_str(t: DomainType) -> &'static str {
    match t {
        DomainType::Kvm => "kvm",
        DomainType::Qemu => "qemu",
        DomainType::Test => "test",
    }
}

fn write_domain(w: &mut Xw, spec: &DomainSpec) -> io::Result<()> {
    w.create_element("domain")
        .with_attribute(("type", domain_type_str(spec.domain_type)))
        .write_inner_content(|w| {
            text(w, "name", &spec.name)?;
            if let Some(uuid) = &spec.uuid {
                text(w, "uuid", uuid)?;
            }
            w.create_element("metadata")
                .write_inner_content(|w| write_ownership(w, &spec.owner))?;
            let kib = spec.owner.shape.memory_bytes / 1024;
            w.create_element("memory")
                .with_attribute(("unit", "KiB"))
                .write_text_content(BytesText::new(&kib.to_string()))?;
            w.create_element("vcpu")
                .with_attribute(("placement", "static"))
                .write_text_content(BytesText::new(&spec.owner.shape.cpus.to_string()))?;
            write_cpu(w, spec.domain_type, spec.cpu_model)?;
            w.create_element("os").write_inner_content(|w| {
                let ty = w.create_element("type");
                // The test driver only knows i686; qemu/kvm guests are x86_64.
                let ty = if spec.domain_type == DomainType::Test {
                    ty
                } else {
                    ty.with_attribute(("arch", "x86_64"))
                };
                ty.write_text_content(BytesText::new("hvm"))?;
                match &spec.boot {
                    Some(boot) => {
                        text(w, "kernel", &boot.kernel)?;
                        if let Some(initrd) = &boot.initrd {
                            text(w, "initrd", initrd)?;
                        }
                        if let Some(cmdline) = &boot.cmdline {
                            text(w, "cmdline", cmdline)?;
                        }
                    }
                    None => {
                        w.create_element("boot")
                            .with_attribute(("dev", "hd"))
                            .write_empty()?;
                    }
                }
                // The firmware's messages ("No bootable device") on the
                // serial console too, so that `hangar logs` shows why a
                // guest never started.
                if spec.domain_type != DomainType::Test && spec.boot.is_none() {
                    w.create_element("bios")
                        .with_attribute(("useserial", "yes"))
                        .write_empty()?;
                }
                Ok(())
            })?;
            // Without ACPI a guest's poweroff never ends the domain.
            w.create_element("features").write_inner_content(|w| {
                w.create_element("acpi").write_empty()?;
                w.create_element("apic").write_empty()?;
                Ok(())
            })?;
            text(w, "on_poweroff", "destroy")?;
            text(w, "on_reboot", "restart")?;
            text(w, "on_crash", "destroy")?;
            w.create_element("devices").write_inner_content(|w| {
                for disk in &spec.disks {
                    write_disk(w, disk)?;
                }
                write_interface(w, &spec.network)?;
                if spec.agent_channel && spec.domain_type != DomainType::Test {
                    write_agent_channel(w, spec.agent_socket.as_deref())?;
                }
                if let Some(path) = &spec.console_log {
                    // A PTY that is also logged: `hangar console` attaches
                    // to it (virDomainOpenConsole), and everything the guest
                    // prints, attached or not, goes to the log that
                    // observation and `hangar logs` read. libvirt adds the
                    // matching `<console type='pty'>`.
                    w.create_element("serial")
                        .with_attribute(("type", "pty"))
                        .write_inner_content(|w| {
                            w.create_element("log")
                                .with_attribute(("file", path.as_str()))
                                .with_attribute(("append", "on"))
                                .write_empty()?;
                            w.create_element("target")
                                .with_attribute(("port", "0"))
                                .write_empty()?;
                            Ok(())
                        })?;
                }
                Ok(())
            })?;
            Ok(())
        })?;
    Ok(())
}

/// The qemu guest agent's virtio-serial port (libvirt picks the socket and
/// adds the controller): hangar's host→guest channel, reached through the
/// libvirt connection (see `agent`).
fn write_agent_channel(w: &mut Xw, socket: Option<&str>) -> io::Result<()> {
    w.create_element("channel")
        .with_attribute(("type", "unix"))
        .write_inner_content(|w| {
            if let Some(path) = socket {
                w.create_element("source")
                    .with_attribute(("mode", "bind"))
                    .with_attribute(("path", path))
                    .write_empty()?;
            }
            w.create_element("target")
                .with_attribute(("type", "virtio"))
                .with_attribute(("name", GUEST_AGENT_CHANNEL))
                .write_empty()?;
            Ok(())
        })?;
    Ok(())
}

/// The name of the guest agent's port, which `qemu-guest-agent` opens.
pub const GUEST_AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";

/// The guest's CPU: without a `<cpu>` element qemu gives `qemu64`, not
/// even x86-64-v2.
fn write_cpu(w: &mut Xw, domain_type: DomainType, model: CpuModel) -> io::Result<()> {
    let mode = match (domain_type, model) {
        (DomainType::Test, _) => return Ok(()),
        (DomainType::Qemu, _) => "maximum",
        (DomainType::Kvm, CpuModel::HostPassthrough) => "host-passthrough",
        (DomainType::Kvm, CpuModel::HostModel) => "host-model",
    };
    w.create_element("cpu")
        .with_attribute(("mode", mode))
        .write_empty()?;
    Ok(())
}

fn write_disk(w: &mut Xw, disk: &DiskSpec) -> io::Result<()> {
    w.create_element("disk")
        .with_attribute(("type", "volume"))
        .with_attribute(("device", "disk"))
        .write_inner_content(|w| {
            let driver = w
                .create_element("driver")
                .with_attribute(("name", "qemu"))
                .with_attribute(("type", disk.format.as_str()));
            // A guest's discards (fstrim, `discard` mounts) free the
            // volume's space on the host.
            if disk.readonly {
                driver.write_empty()?;
            } else {
                driver.with_attribute(("discard", "unmap")).write_empty()?;
            }
            w.create_element("source")
                .with_attribute(("pool", disk.pool.as_str()))
                .with_attribute(("volume", disk.volume.as_str()))
                .write_empty()?;
            w.create_element("target")
                .with_attribute(("dev", disk.target.as_str()))
                .with_attribute(("bus", "virtio"))
                .write_empty()?;
            if disk.readonly {
                w.create_element("readonly").write_empty()?;
            }
            if let Some(serial) = &disk.serial {
                text(w, "serial", serial)?;
            }
            Ok(())
        })?;
    Ok(())
}

fn write_interface(w: &mut Xw, network: &NetworkAttachment) -> io::Result<()> {
    match network {
        NetworkAttachment::None => Ok(()),
        NetworkAttachment::User => {
            w.create_element("interface")
                .with_attribute(("type", "user"))
                .write_inner_content(|w| {
                    w.create_element("model")
                        .with_attribute(("type", "virtio"))
                        .write_empty()?;
                    Ok(())
                })?;
            Ok(())
        }
        NetworkAttachment::Network { name, filter } => {
            w.create_element("interface")
                .with_attribute(("type", "network"))
                .write_inner_content(|w| {
                    w.create_element("source")
                        .with_attribute(("network", name.as_str()))
                        .write_empty()?;
                    w.create_element("model")
                        .with_attribute(("type", "virtio"))
                        .write_empty()?;
                    if let Some(filter) = filter {
                        w.create_element("filterref")
                            .with_attribute(("filter", filter.as_str()))
                            .write_empty()?;
                    }
                    Ok(())
                })?;
            Ok(())
        }
    }
}

/// The `<disk>` element alone, as `detach_device_flags` takes it.
pub fn disk_xml(disk: &DiskSpec) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_disk(&mut w, disk).expect("writing XML into a Vec cannot fail");
    finish(w)
}

/// What hangar reads from a domain's XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainFacts {
    /// `None`: the domain carries no hangar element — not ours.
    pub owner: Option<Ownership>,
    /// Disk sources that are pool volumes: (pool, volume).
    pub volumes: Vec<(String, String)>,
    /// A disk with serial [`SEED_DISK_SERIAL`] is attached.
    pub seed_attached: bool,
    /// Where the first serial port's output is written on the host: its
    /// `<log file>` (a PTY, as hangar defines it), or its `<source path>`
    /// (a `type='file'` serial, as older hangar defined it).
    pub console_log: Option<String>,
    /// The drain record (`agent`), if hangar wrote one.
    pub drain: Option<DrainState>,
    /// `<memory>` (the most the guest may use) and `<vcpu>`: what the
    /// domain takes from its host while it runs. 0 where absent.
    pub memory_bytes: u64,
    pub vcpus: u32,
}

/// Read ownership and disks from a full domain XML (`virDomainGetXMLDesc`).
/// A domain with a malformed hangar element is an error, not "foreign":
/// hangar must neither adopt nor ignore it silently.
pub fn parse_domain(xml: &str) -> Result<DomainFacts, OwnershipError> {
    let root = tree::parse(xml).map_err(OwnershipError)?;
    let owner = match root.child("metadata").and_then(|m| {
        m.children
            .iter()
            .find(|c| c.local_name() == OWNERSHIP_ELEMENT && ns_of(c) == Some(OWNERSHIP_NS))
    }) {
        Some(el) => Some(parse_ownership_element(el)?),
        None => None,
    };
    let drain = root
        .child("metadata")
        .and_then(|m| {
            m.children.iter().find(|c| {
                c.local_name() == crate::providers::libvirt::agent::DRAIN_ELEMENT
                    && ns_of(c) == Some(crate::providers::libvirt::agent::DRAIN_NS)
            })
        })
        .and_then(|el| el.attr("state"))
        .and_then(crate::providers::libvirt::agent::parse_drain_state);
    let mut disks = Vec::new();
    if let Some(devices) = root.child("devices") {
        disks.extend(devices.children_named("disk"));
    }
    let volumes = disks
        .iter()
        .filter_map(|d| {
            let src = d.child("source")?;
            Some((
                src.attr("pool")?.to_string(),
                src.attr("volume")?.to_string(),
            ))
        })
        .collect();
    let seed_attached = disks
        .iter()
        .any(|d| d.child_text("serial") == Some(SEED_DISK_SERIAL));
    let console_log = root
        .child("devices")
        .and_then(|d| d.children_named("serial").next())
        .and_then(
            |serial| match serial.child("log").and_then(|l| l.attr("file")) {
                Some(log) => Some(log.to_string()),
                None if serial.attr("type") == Some("file") => {
                    serial.child("source")?.attr("path").map(str::to_string)
                }
                None => None,
            },
        );
    // libvirt's default unit for `<memory>` is KiB.
    let memory_bytes = root
        .child("memory")
        .and_then(|m| super::volume::to_bytes(m.text.trim(), m.attr("unit").unwrap_or("KiB")).ok())
        .unwrap_or(0);
    let vcpus = root
        .child_text("vcpu")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok(DomainFacts {
        owner,
        volumes,
        seed_attached,
        console_log,
        drain,
        memory_bytes,
        vcpus,
    })
}

/// A domain's XML with its seed disk taken out, for drivers that cannot
/// detach a device from the persistent config (the test driver).
pub fn without_seed_disk(domain_xml: &str) -> Result<String, OwnershipError> {
    let mut root = tree::parse(domain_xml).map_err(OwnershipError)?;
    for devices in root
        .children
        .iter_mut()
        .filter(|c| c.local_name() == "devices")
    {
        devices.children.retain(|d| {
            !(d.local_name() == "disk" && d.child_text("serial") == Some(SEED_DISK_SERIAL))
        });
    }
    Ok(root.to_xml())
}

/// The namespace URI of an element, from a declaration on itself.
fn ns_of(el: &Element) -> Option<&str> {
    let key = match el.name.split_once(':') {
        Some((prefix, _)) => format!("xmlns:{prefix}"),
        None => "xmlns".to_string(),
    };
    el.attr(&key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SpecHash, VmShape};
    use chrono::{DateTime, Utc};

    fn owner() -> Ownership {
        Ownership {
            fleet: "ci".into(),
            pool: "linux".into(),
            slot: "ci-linux-0".into(),
            index: 0,
            generation: 3,
            spec_hash: SpecHash("0123456789abcdef".into()),
            created_at: DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            ephemeral: true,
            boot_failures: 2,
            shape: VmShape {
                cpus: 2,
                memory_bytes: 2 << 30,
                disk_bytes: 20 << 30,
                image: "/var/lib/images/a&b <base>.qcow2".into(),
                cache_bytes: Some(50 << 30),
            },
        }
    }

    #[test]
    fn ownership_round_trips_through_domain_xml() {
        let spec = DomainSpec::for_vm(
            DomainType::Qemu,
            "default",
            &owner(),
            None,
            &NetworkAttachment::None,
            true,
            Some("/var/log/hangar/x.log".into()),
        );
        let xml = domain_xml(&spec);
        let facts = parse_domain(&xml).unwrap();
        assert_eq!(facts.owner, Some(owner()));
        assert!(facts.seed_attached);
        assert_eq!(
            facts.volumes,
            vec![
                ("default".into(), "ci-linux-0-g3-root.qcow2".into()),
                ("default".into(), "ci-linux-0-cache.qcow2".into()),
                ("default".into(), "ci-linux-0-g3-seed.iso".into()),
            ]
        );
        assert_eq!(facts.console_log.as_deref(), Some("/var/log/hangar/x.log"));
    }

    #[test]
    fn the_console_log_of_an_older_file_serial_is_read_back() {
        let xml = r#"<domain><devices><serial type='file'><source path='/l/a.log'/>
            <target port='0'/></serial></devices></domain>"#;
        assert_eq!(
            parse_domain(xml).unwrap().console_log.as_deref(),
            Some("/l/a.log")
        );
        let pty =
            "<domain><devices><serial type='pty'><target port='0'/></serial></devices></domain>";
        assert_eq!(parse_domain(pty).unwrap().console_log, None);
    }

    #[test]
    fn special_characters_are_escaped_not_pasted() {
        let xml = domain_xml(&DomainSpec::for_vm(
            DomainType::Qemu,
            "p",
            &owner(),
            None,
            &NetworkAttachment::None,
            false,
            None,
        ));
        assert!(xml.contains("a&amp;b &lt;base&gt;.qcow2"), "{xml}");
    }

    #[test]
    fn a_domain_without_our_element_is_foreign() {
        let xml = r#"<domain type='test'><name>x</name><metadata>
            <other:vm xmlns:other="https://example.com/vm"><other:fleet>ci</other:fleet></other:vm>
            </metadata></domain>"#;
        assert_eq!(parse_domain(xml).unwrap().owner, None);
    }

    #[test]
    fn a_malformed_element_of_ours_is_an_error() {
        let xml = format!(
            r#"<domain><metadata><h:vm xmlns:h="{OWNERSHIP_NS}"><h:fleet>ci</h:fleet></h:vm></metadata></domain>"#
        );
        assert!(parse_domain(&xml).is_err());
    }
}
