//! Pruning a slot's cache disk now (`hangar cache prune SLOT`): the guest's
//! own `cache-prune`, run as root through its qemu guest agent, the same
//! script the job-started hook and the guest's 15-minute timer run. It
//! removes only what the pruning rules allow (see docs/guest.md), so asking
//! for it is safe while a job runs.

use super::log::find_on;
use super::AccessError;
use crate::providers::libvirt::{AgentError, GuestRun, HostConfig};

/// What the guest's prune said, and where it ran.
pub struct Pruned {
    pub host: String,
    pub generation: u64,
    pub run: GuestRun,
}

/// Find the slot's running domain on `hosts` and prune its cache now.
/// Blocking: run it off the async runtime's threads.
pub fn prune(hosts: &[HostConfig], fleet: &str, slot: &str) -> Result<Pruned, AccessError> {
    let found = find_on(hosts, fleet, slot)?;
    let host = found.host().to_string();
    if !found.running {
        return Err(AccessError::Unavailable(format!(
            "the VM of {slot} on host {host} is not running: no guest to prune in"
        )));
    }
    let run = found.cache_prune().map_err(|e| match e {
        AgentError::Unavailable(why) => no_agent(slot, &host, &why),
        AgentError::Provider(e) => AccessError::Provider(e),
    })?;
    Ok(Pruned {
        host,
        generation: found.owner.generation,
        run,
    })
}

fn no_agent(slot: &str, host: &str, why: &str) -> AccessError {
    AccessError::Unavailable(format!(
        "cannot prune the cache of {slot} on host {host}: its guest agent does not \
         answer ({why}); the guest still prunes at each job start and every 15 minutes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_without_an_agent_is_named_with_its_host() {
        let e = no_agent("lab-build-0", "rack1", "guest-exec: agent is not connected");
        assert_eq!(
            e.to_string(),
            "cannot prune the cache of lab-build-0 on host rack1: its guest agent does not \
             answer (guest-exec: agent is not connected); the guest still prunes at each job \
             start and every 15 minutes"
        );
    }
}
