//! The XML hangar hands to libvirt, written with quick-xml's writer (values
//! are escaped by the writer, never pasted into strings), and the few facts
//! read back from libvirt's XML.
//!
//! Nothing secret goes through here: the user-data lives only in the seed
//! volume's content.

pub mod domain;
pub mod volume;

pub use self::domain::{
    disk_xml, domain_xml, parse_domain, seed_disk, without_seed_disk, DiskSpec, DomainFacts,
    DomainSpec,
};
pub use self::volume::{parse_volume, volume_xml, Backing, VolumeFacts, VolumeFormat, VolumeSpec};
