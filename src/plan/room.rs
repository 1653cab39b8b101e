//! Room on a host for the VMs a plan makes. The file's placement only
//! promises that the fleet fits on its hosts; what runs there now (the
//! fleet's own VMs, other fleets' and other tools' domains) decides
//! whether a VM can be made this pass. One that does not fit waits, naming
//! the host, the resource, what it needs and what is left, instead of
//! failing to start (or starving the host) after its slot's runner was
//! registered.

use std::collections::{BTreeMap, HashMap};

use super::model::{Action, Desired, Observed, RoomResource, WaitReason};
use crate::model::VmShape;

/// What is left on a host for this pass's creates.
struct Left {
    memory: i128,
    cpu_millis: i128,
    pool_free: Option<u64>,
}

/// Each Create and Replace of `actions` that does not fit on its host
/// becomes a wait. Memory and vCPUs add up over the pass, in plan order;
/// a Replace needs only what its new shape adds to the old. The storage
/// pool must have room for a new VM's disks at their full size (root disk
/// and cache volume; both are sparse, so this is what they may grow to,
/// not what they take at first); a Replace frees the old root disk first
/// and keeps the cache, so it is not held to that. Hosts without capacity
/// (no facts this pass) are left to the rest of the planner.
pub(super) fn room_waits(
    desired: &Desired,
    observed: &Observed,
    actions: Vec<Action>,
) -> Vec<Action> {
    let mut left: BTreeMap<&str, Left> = BTreeMap::new();
    for (host, room) in &desired.capacity {
        let Some(vms) = observed.hosts.get(host).and_then(|o| o.seen()) else {
            continue;
        };
        let foreign = observed
            .host_state
            .get(host)
            .map(|s| s.foreign)
            .unwrap_or_default();
        let ours_memory: u64 = vms.iter().map(|vm| vm.owner.shape.memory_bytes).sum();
        let ours_cpus: u64 = vms.iter().map(|vm| u64::from(vm.owner.shape.cpus)).sum();
        left.insert(
            host,
            Left {
                // Within the fleet's share, and within the host's memory
                // beside the foreign domains: a `maxMemory` that holds
                // memory back for them does not count them twice.
                memory: (i128::from(room.memory_bytes) - i128::from(ours_memory)).min(
                    i128::from(room.host_memory_bytes)
                        - i128::from(ours_memory)
                        - i128::from(foreign.memory_bytes),
                ),
                cpu_millis: i128::from(room.cpu_millis)
                    - i128::from(ours_cpus + foreign.vcpus) * 1000,
                pool_free: room.pool_free_bytes,
            },
        );
    }
    // The replaced VMs' shapes, by host and UUID: a scan of the host's VMs
    // per replace made a spec change of the whole fleet quadratic.
    let replaced: HashMap<(&str, &str), &VmShape> =
        if actions.iter().any(|a| matches!(a, Action::Replace { .. })) {
            // Reversed: the first listed stands for a UUID seen twice.
            observed
                .seen_vms()
                .rev()
                .map(|(host, v)| ((host, v.uuid.as_str()), &v.owner.shape))
                .collect()
        } else {
            HashMap::new()
        };
    actions
        .into_iter()
        .map(|action| {
            let (slot, old) = match &action {
                Action::Create { slot, .. } => (slot, None),
                Action::Replace { slot, vm, .. } => {
                    let old = replaced.get(&(vm.host.as_str(), vm.uuid.as_str())).copied();
                    (slot, Some(old))
                }
                _ => return action,
            };
            let Some(host) = left.get_mut(slot.host.as_str()) else {
                return action;
            };
            let (old_memory, old_cpus) = match &old {
                Some(Some(shape)) => (shape.memory_bytes, shape.cpus),
                _ => (0, 0),
            };
            let memory = i128::from(slot.vm.memory_bytes) - i128::from(old_memory);
            let cpu_millis = (i128::from(slot.vm.cpus) - i128::from(old_cpus)) * 1000;
            let disks = slot
                .vm
                .disk_bytes
                .saturating_add(slot.vm.cache_bytes.unwrap_or(0));
            let short = if memory > 0 && memory > host.memory {
                Some((RoomResource::Memory, memory, host.memory))
            } else if cpu_millis > 0 && cpu_millis > host.cpu_millis {
                Some((RoomResource::Vcpus, cpu_millis, host.cpu_millis))
            } else {
                match (old.is_none(), host.pool_free) {
                    (true, Some(free)) if disks > free => {
                        Some((RoomResource::PoolSpace, i128::from(disks), i128::from(free)))
                    }
                    _ => None,
                }
            };
            match short {
                Some((resource, needed, available)) => Action::Wait {
                    subject: slot.name.clone(),
                    reason: WaitReason::NoRoomOnHost {
                        host: slot.host.clone(),
                        resource,
                        needed: clamp(needed),
                        available: clamp(available),
                    },
                },
                None => {
                    host.memory -= memory;
                    host.cpu_millis -= cpu_millis;
                    action
                }
            }
        })
        .collect()
}

fn clamp(v: i128) -> u64 {
    u64::try_from(v.max(0)).unwrap_or(u64::MAX)
}
