//! Room on a host: a VM is made only where it fits beside what runs there
//! now, this fleet's VMs and foreign domains alike; otherwise the plan says
//! which slot waits for which resource on which host.

use super::model::*;
use super::tests::{desired, now, observed, runner, slot, vm_of};
use super::{plan, render};
use crate::model::*;

const GIB: u64 = 1 << 30;

fn room(memory_gib: u64, cpus: u64, pool_free_gib: Option<u64>) -> HostRoom {
    HostRoom {
        memory_bytes: memory_gib * GIB,
        host_memory_bytes: memory_gib * GIB,
        cpu_millis: cpus * 1000,
        pool_free_bytes: pool_free_gib.map(|g| g * GIB),
    }
}

/// h1 with `room`, one running VM of ours (umn-0, 2 vCPUs, 6 GiB), a new
/// slot umn-1 of the same shape wanted, and `foreign` on the host.
fn world(room: HostRoom, foreign: ForeignUse) -> (Desired, Observed) {
    let kept = slot("umn", 0, "h1");
    let new = slot("umn", 1, "h1");
    let mut d = desired(vec![kept.clone(), new]);
    d.capacity.insert("h1".into(), room);
    let mut o = observed(vec![vm_of(&kept)], vec![runner(&kept.name, 1)]);
    o.host_state.insert(
        "h1".into(),
        ObservedHost {
            foreign,
            ..Default::default()
        },
    );
    (d, o)
}

fn foreign(memory_gib: u64, vcpus: u64) -> ForeignUse {
    ForeignUse {
        domains: 1,
        memory_bytes: memory_gib * GIB,
        vcpus,
    }
}

/// The wait for room on h1.
fn no_room(resource: RoomResource, needed: u64, available: u64) -> WaitReason {
    WaitReason::NoRoomOnHost {
        host: "h1".into(),
        resource,
        needed,
        available,
    }
}

fn the_wait(p: &Plan) -> Option<&WaitReason> {
    p.actions.iter().find_map(|a| match a {
        Action::Wait { reason, .. } => Some(reason),
        _ => None,
    })
}

fn creates(p: &Plan) -> usize {
    p.actions
        .iter()
        .filter(|a| matches!(a, Action::Create { .. }))
        .count()
}

#[test]
fn a_foreign_domains_memory_leaves_no_room_and_the_slot_waits() {
    // 16 GiB: 6 of ours + 6 new fit, unless a foreign domain holds 8.
    let (d, o) = world(room(16, 16, None), ForeignUse::default());
    assert_eq!(creates(&plan(&d, &o, now())), 1);

    let (d, o) = world(room(16, 16, None), foreign(8, 1));
    let p = plan(&d, &o, now());
    assert_eq!(creates(&p), 0, "{p:?}");
    assert_eq!(
        the_wait(&p),
        Some(&no_room(RoomResource::Memory, 6 * GIB, 2 * GIB))
    );
    let text = render::human(&p, false);
    assert!(
        text.contains("no room on host h1: needs 6GiB of memory, 2GiB left"),
        "{text}"
    );
    // Waiting on another tool's VM is not something apply can wait out.
    assert!(!p.in_sync());
}

#[test]
fn a_foreign_domains_vcpus_count_against_the_overcommitted_cpus() {
    let (d, o) = world(room(64, 5, None), foreign(1, 2));
    let p = plan(&d, &o, now());
    assert_eq!(
        the_wait(&p),
        Some(&no_room(RoomResource::Vcpus, 2000, 1000))
    );
    assert!(render::human(&p, false).contains("needs 2 vCPUs, 1 left"));
}

#[test]
fn creates_of_one_pass_add_up() {
    // 16 GiB and nothing running: two 6 GiB VMs fit, the third waits.
    let slots: Vec<_> = (0..3).map(|i| slot("umn", i, "h1")).collect();
    let mut d = desired(slots);
    d.capacity.insert("h1".into(), room(16, 64, None));
    let p = plan(&d, &observed(vec![], vec![]), now());
    assert_eq!(creates(&p), 2, "{p:?}");
    let waits: Vec<_> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Wait {
                subject,
                reason: WaitReason::NoRoomOnHost { available, .. },
            } => Some((subject.as_str(), *available)),
            _ => None,
        })
        .collect();
    assert_eq!(
        waits,
        vec![(slot_name(super::tests::FLEET, "umn", 2).as_str(), 4 * GIB)]
    );
}

#[test]
fn a_new_vm_needs_its_disks_full_size_free_in_the_pool() {
    // Root disk 64 GiB + cache 70 GiB = 134 GiB.
    let (d, o) = world(room(64, 64, Some(134)), ForeignUse::default());
    assert_eq!(creates(&plan(&d, &o, now())), 1);
    let (d, o) = world(room(64, 64, Some(100)), ForeignUse::default());
    let p = plan(&d, &o, now());
    assert_eq!(
        the_wait(&p),
        Some(&no_room(RoomResource::PoolSpace, 134 * GIB, 100 * GIB))
    );
    assert!(
        render::human(&p, false).contains("its disks need 134GiB in the storage pool, 100GiB free")
    );
}

#[test]
fn a_replace_needs_only_what_its_new_shape_adds() {
    // A full host (foreign domains hold the rest) still replaces a VM by
    // one of the same size, and a pool without room for a new VM's disks
    // does not hold it up; a bigger one waits, and the old VM keeps running.
    let s = slot("umn", 0, "h1");
    let mut changed = s.clone();
    changed.spec_hash = SpecHash("s2".into());
    let mut d = desired(vec![changed.clone()]);
    d.capacity.insert("h1".into(), room(16, 4, Some(1)));
    let mut o = observed(vec![vm_of(&s)], vec![runner(&s.name, 1)]);
    o.host_state.insert(
        "h1".into(),
        ObservedHost {
            foreign: foreign(10, 2),
            ..Default::default()
        },
    );
    let p = plan(&d, &o, now());
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::Replace { .. })),
        "{p:?}"
    );

    changed.vm.memory_bytes = 8 * GIB;
    d.slots = vec![changed];
    let p = plan(&d, &o, now());
    assert!(!p
        .actions
        .iter()
        .any(|a| matches!(a, Action::Replace { .. } | Action::Delete { .. })));
    assert_eq!(
        the_wait(&p),
        Some(&no_room(RoomResource::Memory, 2 * GIB, 0))
    );
}

#[test]
fn a_max_memory_that_holds_memory_back_for_other_vms_does_not_count_them_twice() {
    // 32 GiB host, maxMemory 16 GiB, a foreign 12 GiB VM: the fleet's
    // share bounds it (16 − 6 = 10 GiB left), not 16 − 6 − 12.
    let mut r = room(16, 16, None);
    r.host_memory_bytes = 32 * GIB;
    let (d, o) = world(r, foreign(12, 1));
    assert_eq!(creates(&plan(&d, &o, now())), 1);
    // A bigger foreign VM leaves less than the share: the host bounds it.
    let (d, o) = world(r, foreign(22, 1));
    let p = plan(&d, &o, now());
    assert_eq!(
        the_wait(&p),
        Some(&no_room(RoomResource::Memory, 6 * GIB, 4 * GIB))
    );
}
