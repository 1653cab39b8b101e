//! A slot named on the command line, found in the fleet file alone (no
//! host is asked), and where its hosts keep console logs.

use std::path::{Path, PathBuf};

use super::AccessError;
use crate::assemble::SANDBOX_URI;
use crate::fleet::{Host, LoadedFleet, Pool};
use crate::model::names::slot_name;
use crate::providers::libvirt::{uri_is_local, HostConfig, DEFAULT_CONSOLE_DIR};

/// A slot of the file: its pool, and the hosts its VM may be on.
pub struct FileSlot<'a> {
    pub name: String,
    pub pool: &'a Pool,
    pub hosts: Vec<&'a Host>,
}

/// Every slot the file describes, in file order.
pub fn slots(fleet: &LoadedFleet) -> Vec<(String, &Pool)> {
    let f = &fleet.fleet;
    f.spec
        .pools
        .iter()
        .flat_map(|p| (0..p.max_slots()).map(move |i| (slot_name(&f.metadata.name, &p.name, i), p)))
        .collect()
}

/// The slot `name` of the file, or an error that names it and lists the
/// file's slots.
pub fn find<'a>(fleet: &'a LoadedFleet, name: &str) -> Result<FileSlot<'a>, AccessError> {
    let all = slots(fleet);
    let Some(&(_, pool)) = all.iter().find(|(n, _)| n == name) else {
        return Err(AccessError::NoSlot {
            slot: name.to_string(),
            fleet: fleet.name().to_string(),
            slots: all.into_iter().map(|(n, _)| n).collect(),
        });
    };
    let hosts = fleet
        .fleet
        .spec
        .hosts
        .iter()
        .filter(|h| {
            pool.hosts
                .as_ref()
                .is_none_or(|names| names.contains(&h.name))
        })
        .collect();
    Ok(FileSlot {
        name: name.to_string(),
        pool,
        hosts,
    })
}

/// The libvirt hosts (the sandbox left out) that the slot may be on, as
/// the providers reach them: where the console and the guest agent are.
pub fn libvirt_hosts(slot: &FileSlot, fleet: &LoadedFleet, state_dir: &Path) -> Vec<HostConfig> {
    slot.hosts
        .iter()
        .filter(|h| h.uri != SANDBOX_URI)
        .map(|h| crate::assemble::host_config(h, fleet.name(), state_dir))
        .collect()
}

/// Where a host of the file writes its VMs' console logs.
pub enum ConsolePlace {
    /// A directory on this machine.
    Here(PathBuf),
    /// On another machine: reached through libvirt only.
    Remote(HostConfig),
}

pub fn console_place(host: &Host, fleet: &LoadedFleet, state_dir: &Path) -> ConsolePlace {
    if host.uri == SANDBOX_URI {
        return ConsolePlace::Here(crate::sandbox::host::console_dir(state_dir, &host.name));
    }
    let config = crate::assemble::host_config(host, fleet.name(), state_dir);
    match uri_is_local(&host.uri) {
        true => ConsolePlace::Here(
            config
                .console_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONSOLE_DIR)),
        ),
        false => ConsolePlace::Remote(config),
    }
}
