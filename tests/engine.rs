//! Scenario tests of the engine, in-process: sandbox hosts (libvirt's test
//! driver in a temp dir), the GitHub simulator over loopback, and paused
//! tokio time driving the engine's clock. Each test asserts the world
//! afterwards (domains, volumes, registrations), not only the plan.

mod support;

use std::time::Duration;

use hangar::model::names::{cache_volume_name, root_volume_name};
use hangar::plan::model::{
    Action, CreateReason, DeleteReason, Leftover, RemoveRunnerReason, ReplaceReason, VmState,
    WaitReason,
};
use hangar::providers::Hypervisor;
use hangar::reconcile::converge::{self, ConvergeSettings, Converged};
use hangar::reconcile::daemon::{self, DaemonSettings};
use hangar::reconcile::destroy::{self, check_no_daemon, DestroySettings};
use hangar::reconcile::engine::PassResult;
use hangar::reconcile::error::NotConverged;
use hangar::reconcile::event::{Event, Events, Ignore, Recorded};
use hangar::reconcile::lock::FleetLock;
use hangar::reconcile::Outcome;
use hangar::sim::{Fault, FaultKind};
use support::{actions_for, fleet_yaml, pool, slot, HvCall, Rig};
use support::{EditableFile, FLEET};
use tokio_util::sync::CancellationToken;

/// What a busy runner's VM gets instead of its removal: a wait, or for a
/// persistent runner a drain (the sandbox records it as delivered), then a
/// wait while it drains.
fn is_wait_busy(a: &Action) -> bool {
    matches!(
        a,
        Action::Wait {
            reason: WaitReason::Busy { .. } | WaitReason::Draining { .. },
            ..
        } | Action::Drain { .. }
    )
}

/// The plan's only action about `name`, which must be a replace: the
/// generation it makes, the boot failures it carries and why.
fn the_replace<'a>(r: &'a PassResult, name: &str) -> (u64, u32, &'a ReplaceReason) {
    match actions_for(r, name)[..] {
        [Action::Replace {
            next_generation,
            boot_failures,
            reason,
            ..
        }] => (*next_generation, *boot_failures, reason),
        ref other => panic!("not one replace of {name}: {other:#?}\n{:#?}", r.plan),
    }
}

#[tokio::test(start_paused = true)]
async fn apply_then_diff_is_empty_and_a_second_pass_makes_no_mutating_call() {
    let yaml = fleet_yaml(
        &["h1", "h2"],
        &(pool("build", 2, false, 1, true) + &pool("pr", 2, true, 1, true)),
    );
    let mut rig = Rig::new(&yaml).await;

    let passes = rig.converge(5).await;
    let first = &passes[0];
    let creates: Vec<&str> = first
        .plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Create {
                slot,
                generation: 1,
                reason: CreateReason::Missing,
                ..
            } => Some(slot.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(creates, ["t-build-0", "t-build-1", "t-pr-0", "t-pr-1"]);
    assert_eq!(first.report.as_ref().unwrap().done(), 4);

    // The world: four running VMs spread over both hosts, each with its
    // root overlay and cache, no seed left, four runners online.
    let mut placed = Vec::new();
    for host in ["h1", "h2"] {
        let vms = rig.vms(host).await;
        let vols = rig.volumes(host);
        for (name, vm) in &vms {
            assert_eq!(vm.state, VmState::Running, "{name}");
            assert!(!vm.seed_attached, "{name}: seed still attached");
            assert!(vols.contains_key(&root_volume_name(name, 1)), "{name}");
            assert!(vols.contains_key(&cache_volume_name(name)), "{name}");
            placed.push(name.clone());
        }
        assert!(
            !vols.keys().any(|v| v.ends_with("-seed.iso")),
            "{host}: seed volumes left: {vols:?}"
        );
    }
    placed.sort();
    assert_eq!(placed, ["t-build-0", "t-build-1", "t-pr-0", "t-pr-1"]);
    for name in &placed {
        let r = rig.runner(name).unwrap();
        assert_eq!(r.status, "online", "{name}");
        assert!(r.labels.iter().any(|l| l.name == "hangar-t"), "{name}");
    }

    // Nothing left to do, and the next pass asks for nothing.
    let diff = rig.diff().await;
    assert!(diff.plan.actions.is_empty(), "{:#?}", diff.plan.actions);

    rig.play_guests(false);
    rig.take_calls();
    let world = rig.world();
    let calls = rig.libvirt_calls();
    rig.sim.reset_stats();
    let observe_only = rig.diff().await;
    let observe_cost = rig.libvirt_calls() - calls;
    assert!(observe_only.plan.actions.is_empty());

    let calls = rig.libvirt_calls();
    let second = rig.pass().await;
    assert!(second.plan.actions.is_empty(), "{:#?}", second.plan);
    assert!(second.report.is_none(), "nothing to execute");
    assert_eq!(
        rig.libvirt_calls() - calls,
        observe_cost,
        "a converged pass costs what an observation costs"
    );
    // Per host: facts (node info, pool lookup, pool info) and one listing;
    // no per-domain call once every domain's ownership is known.
    assert!(
        observe_cost <= 8,
        "observation of two hosts: {observe_cost} calls"
    );
    assert_eq!(rig.take_calls(), []);
    assert_eq!(rig.github_writes(), 0, "{:?}", rig.sim.stats().by_route);
    assert_eq!(rig.world(), world);
}

#[tokio::test(start_paused = true)]
async fn scale_down_deletes_idle_slots_and_waits_for_the_busy_one() {
    let three = fleet_yaml(&["h1"], &pool("build", 3, false, 1, true));
    let mut rig = Rig::new(&three).await;
    rig.converge(5).await;
    let busy = rig.runner_id(&slot("build", 2));
    rig.sim.start_job(busy).unwrap();

    rig.set_fleet(&fleet_yaml(&["h1"], &pool("build", 1, false, 1, true)));
    rig.take_calls();
    let r = rig.pass().await;
    assert!(matches!(
        actions_for(&r, "t-build-1")[..],
        [Action::Delete {
            reason: DeleteReason::ScaledDown,
            runner: Some(_),
            ..
        }]
    ));
    assert!(
        matches!(actions_for(&r, "t-build-2")[..], [a] if is_wait_busy(a)),
        "{:#?}",
        r.plan
    );
    assert_eq!(
        rig.take_calls(),
        [HvCall::Delete {
            name: slot("build", 1),
            generation: 1,
            remove_cache: true
        }]
    );
    let vms = rig.vms("h1").await;
    assert_eq!(
        vms.keys().collect::<Vec<_>>(),
        ["t-build-0", "t-build-2"],
        "slot 1 deleted, the busy slot 2 survives"
    );
    assert_eq!(vms["t-build-2"].state, VmState::Running);
    let vols = rig.volumes("h1");
    assert!(!vols.keys().any(|v| v.starts_with("t-build-1")), "{vols:?}");
    assert!(vols.contains_key(&cache_volume_name("t-build-2")));
    assert!(rig.runner("t-build-1").is_none());
    let r2 = rig.runner("t-build-2").unwrap();
    assert!(r2.busy && r2.status == "online");

    // Still busy: the next pass waits again and touches nothing.
    tokio::time::advance(Duration::from_secs(60)).await;
    let r = rig.pass().await;
    assert!(matches!(actions_for(&r, "t-build-2")[..], [a] if is_wait_busy(a)));
    assert_eq!(rig.take_calls(), []);

    rig.sim.finish_job(busy).unwrap();
    let r = rig.pass().await;
    assert!(matches!(
        actions_for(&r, "t-build-2")[..],
        [Action::Delete {
            reason: DeleteReason::ScaledDown,
            ..
        }]
    ));
    assert_eq!(r.report.as_ref().unwrap().done(), 1);
    assert_eq!(
        rig.vms("h1").await.keys().collect::<Vec<_>>(),
        ["t-build-0"]
    );
    let vols = rig.volumes("h1");
    assert!(!vols.keys().any(|v| v.starts_with("t-build-2")), "{vols:?}");
    assert!(rig.runner("t-build-2").is_none());
    assert_eq!(
        rig.runners()
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["t-build-0"]
    );
    // What the deleted VM left, its console log, is the next plan's.
    let d = rig.diff().await;
    assert!(
        matches!(
            &d.plan.actions[..],
            [Action::RemoveLeftover { leftover: Leftover::ConsoleLog { slot, generation: 1, .. }, .. }]
                if slot == "t-build-2"
        ),
        "{:#?}",
        d.plan
    );
    rig.pass().await;
    assert!(rig.diff().await.plan.actions.is_empty());
}

/// `cpus` of the domain definition.
fn vcpus(xml: &str) -> u32 {
    let start = xml.find("<vcpu").expect("vcpu element");
    let open = start + xml[start..].find('>').unwrap() + 1;
    let close = open + xml[open..].find('<').unwrap();
    xml[open..close].trim().parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn spec_change_replaces_idle_vms_and_waits_for_the_busy_one() {
    let mut rig = Rig::new(&fleet_yaml(&["h1"], &pool("build", 3, false, 1, true))).await;
    rig.converge(5).await;
    let caches_before = rig.volumes("h1");
    let busy = rig.runner_id(&slot("build", 1));
    rig.sim.start_job(busy).unwrap();

    rig.set_fleet(&fleet_yaml(&["h1"], &pool("build", 3, false, 2, true)));
    rig.take_calls();
    let r = rig.pass().await;
    for idle in ["t-build-0", "t-build-2"] {
        match actions_for(&r, idle)[..] {
            [Action::Replace {
                next_generation: 2,
                reason: ReplaceReason::SpecChanged { changes },
                ..
            }] => assert!(
                changes
                    .iter()
                    .any(|c| c.field == "cpus" && c.from == "1" && c.to == "2"),
                "{changes:?}"
            ),
            ref other => panic!("{idle}: {other:#?}"),
        }
    }
    assert!(matches!(actions_for(&r, "t-build-1")[..], [a] if is_wait_busy(a)));
    let mut calls = rig.take_calls();
    calls.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(
        calls,
        [
            HvCall::Create {
                name: slot("build", 0),
                generation: 2
            },
            HvCall::Create {
                name: slot("build", 2),
                generation: 2
            },
            HvCall::Delete {
                name: slot("build", 0),
                generation: 1,
                remove_cache: false
            },
            HvCall::Delete {
                name: slot("build", 2),
                generation: 1,
                remove_cache: false
            },
        ]
    );
    let vms = rig.vms("h1").await;
    let doms = rig.domains("h1");
    assert_eq!(vms["t-build-0"].owner.generation, 2);
    assert_eq!(vms["t-build-2"].owner.generation, 2);
    assert_eq!(vms["t-build-1"].owner.generation, 1, "the busy VM stays");
    assert_eq!(vcpus(&doms["t-build-0"].xml), 2);
    assert_eq!(vcpus(&doms["t-build-1"].xml), 1);
    assert!(rig.runner("t-build-1").unwrap().busy);
    // Replacement keeps every cache volume.
    for name in ["t-build-0", "t-build-1", "t-build-2"] {
        let cache = cache_volume_name(name);
        assert_eq!(rig.volumes("h1").get(&cache), caches_before.get(&cache));
    }

    rig.sim.finish_job(busy).unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    rig.take_calls();
    let passes = rig.converge(5).await;
    assert!(matches!(
        actions_for(&passes[0], "t-build-1")[..],
        [Action::Replace {
            next_generation: 2,
            reason: ReplaceReason::SpecChanged { .. },
            ..
        }]
    ));
    let vms = rig.vms("h1").await;
    let doms = rig.domains("h1");
    for name in ["t-build-0", "t-build-1", "t-build-2"] {
        assert_eq!(vms[name].owner.generation, 2, "{name}");
        assert_eq!(vcpus(&doms[name].xml), 2, "{name}");
        assert_eq!(rig.runner(name).unwrap().status, "online", "{name}");
    }
    assert!(!rig.volumes("h1").keys().any(|v| v.contains("-g1-")));
}

/// Regression: concurrent actions on one sandbox host each save the node
/// file; they raced on one temporary file ("saving sandbox: No such file or
/// directory"), and a save failed on a volume another action had just
/// deleted ("Storage volume not found").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_actions_on_one_sandbox_host_all_save_their_state() {
    let mut rig = Rig::new(&fleet_yaml(&["h1"], &pool("build", 12, false, 1, true))).await;
    rig.engine.limits.per_host = Some(12);
    // Creates, then (the guests having registered) seed removals: twelve
    // saves at once, twice.
    for _ in 0..2 {
        let r = rig.pass().await;
        let report = r.report.as_ref().unwrap();
        assert_eq!(
            report.failed(),
            0,
            "{:#?}",
            report.failures().collect::<Vec<_>>()
        );
        assert_eq!(report.done(), 12);
    }

    // A fresh process's view of the sandbox: the node file holds the last
    // state of all twelve.
    let again = hangar::sandbox::host::SandboxHost::open(rig.dir.path(), "h1", "default").unwrap();
    let vms = again.observe("t").await.unwrap();
    assert_eq!(vms.len(), 12);
    assert!(vms
        .iter()
        .all(|vm| !vm.seed_attached && vm.state == VmState::Running));
}

#[tokio::test(start_paused = true)]
async fn ephemeral_vm_is_replaced_after_its_job_and_keeps_its_cache() {
    let rig = Rig::new(&fleet_yaml(&["h1"], &pool("pr", 1, true, 1, true))).await;
    let passes = rig.converge(5).await;
    let name = slot("pr", 0);
    let first = rig.runner(&name).unwrap();
    assert!(first.ephemeral && first.status == "online");
    let cache = cache_volume_name(&name);
    let cache_before = rig.volumes("h1")[&cache].clone();
    let cache_key = {
        let conn = rig.host("h1").libvirt().connection().unwrap();
        let pool = conn.lookup_storage_pool_by_name("default").unwrap();
        pool.lookup_storage_vol_by_name(&cache)
            .unwrap()
            .key()
            .unwrap()
    };

    // GitHub hands the runner a job; when it ends GitHub drops the
    // registration and the guest powers off.
    rig.sim.start_job(first.id).unwrap();
    let r = rig.pass().await;
    assert!(r.plan.actions.is_empty(), "busy and up: {:#?}", r.plan);
    rig.sim.finish_job(first.id).unwrap();
    assert!(rig.runner(&name).is_none());
    let desired = &passes.last().unwrap().desired;
    let lines = rig
        .guests
        .play(&rig.engine.world, desired, rig.engine.clock.as_ref())
        .await;
    assert!(lines.iter().any(|l| l.contains("powered off")), "{lines:?}");
    assert!(!rig.domains("h1")[&name].active);

    rig.take_calls();
    let r = rig.pass().await;
    assert!(
        matches!(the_replace(&r, &name), (2, 0, ReplaceReason::JobDone)),
        "{:#?}",
        r.plan
    );
    assert_eq!(
        rig.take_calls(),
        [
            HvCall::Delete {
                name: name.clone(),
                generation: 1,
                remove_cache: false
            },
            HvCall::Create {
                name: name.clone(),
                generation: 2
            },
        ]
    );
    let vm = &rig.vms("h1").await[&name];
    assert_eq!(vm.owner.generation, 2);
    assert_eq!(vm.state, VmState::Running);
    let vols = rig.volumes("h1");
    assert!(vols.contains_key(&root_volume_name(&name, 2)));
    assert!(!vols.contains_key(&root_volume_name(&name, 1)));
    assert_eq!(
        vols[&cache], cache_before,
        "the cache volume is kept as it was"
    );
    let conn = rig.host("h1").libvirt().connection().unwrap();
    let pool = conn.lookup_storage_pool_by_name("default").unwrap();
    assert_eq!(
        pool.lookup_storage_vol_by_name(&cache)
            .unwrap()
            .key()
            .unwrap(),
        cache_key
    );
    assert!(rig.domains("h1")[&name].xml.contains(&cache));

    // A fresh JIT registration, never the spent one.
    let second = rig.runner(&name).unwrap();
    assert_ne!(second.id, first.id);
    assert_ne!(second.jit_config_sha256, first.jit_config_sha256);
    rig.converge(5).await;
    assert_eq!(rig.runner(&name).unwrap().status, "online");
}

#[tokio::test(start_paused = true)]
async fn runner_that_never_registers_is_replaced_after_the_boot_timeout_with_backoff() {
    let mut rig = Rig::new(&fleet_yaml(&["h1"], &pool("build", 1, false, 1, false))).await;
    rig.play_guests(false);
    let name = slot("build", 0);

    let r = rig.pass().await;
    assert_eq!(r.report.as_ref().unwrap().done(), 1);
    let vm = rig.vms("h1").await[&name].clone();
    assert!(vm.seed_attached && vm.owner.boot_failures == 0);
    let five_min = chrono::Duration::minutes(5);

    tokio::time::advance(Duration::from_secs(60)).await;
    rig.take_calls();
    let r = rig.pass().await;
    match actions_for(&r, &name)[..] {
        [Action::Wait {
            reason: WaitReason::Booting { deadline },
            ..
        }] => assert_eq!(*deadline, vm.owner.created_at + five_min),
        ref other => panic!("{other:#?}"),
    }
    assert!(
        r.requeue.after <= Duration::from_secs(15),
        "{:?}",
        r.requeue
    );
    assert_eq!(rig.take_calls(), []);

    // Past the boot timeout: replaced, the failure counted.
    tokio::time::advance(Duration::from_secs(4 * 60 + 1)).await;
    let r = rig.pass().await;
    assert!(
        matches!(
            the_replace(&r, &name),
            (2, 1, ReplaceReason::BootTimeout { .. })
        ),
        "{:#?}",
        r.plan
    );
    let mut vm = rig.vms("h1").await[&name].clone();
    assert_eq!((vm.owner.generation, vm.owner.boot_failures), (2, 1));

    // Each further failure waits out the boot timeout plus a backoff that
    // doubles: 1m after the first failure, 2m after the second.
    for (failures, backoff_min) in [(1u32, 1i64), (2, 2)] {
        tokio::time::advance(Duration::from_secs(5 * 60 + 1)).await;
        rig.take_calls();
        let r = rig.pass().await;
        match actions_for(&r, &name)[..] {
            [Action::Wait {
                reason: WaitReason::Backoff { until, failures: f },
                ..
            }] => {
                assert_eq!(*f, failures);
                assert_eq!(
                    *until,
                    vm.owner.created_at + five_min + chrono::Duration::minutes(backoff_min)
                );
            }
            ref other => panic!("failures {failures}: {other:#?}"),
        }
        assert_eq!(rig.take_calls(), [], "nothing happens during the backoff");
        assert_eq!(
            rig.vms("h1").await[&name].owner.generation,
            vm.owner.generation
        );

        tokio::time::advance(Duration::from_secs(backoff_min as u64 * 60)).await;
        let r = rig.pass().await;
        let (_, boot_failures, reason) = the_replace(&r, &name);
        assert!(
            boot_failures == failures + 1 && matches!(reason, ReplaceReason::BootTimeout { .. }),
            "{:#?}",
            r.plan
        );
        let next = rig.vms("h1").await[&name].clone();
        assert_eq!(next.owner.generation, vm.owner.generation + 1);
        assert_eq!(next.owner.boot_failures, failures + 1);
        vm = next;
    }
    // Only the newest generation's disks are left.
    let vols = rig.volumes("h1");
    assert_eq!(
        vols.keys().filter(|v| v.starts_with(&name)).count(),
        2,
        "root and seed of generation 4: {vols:?}"
    );

    // Once a guest does come up, the slot settles.
    rig.play_guests(true);
    rig.converge(5).await;
    assert_eq!(rig.runner(&name).unwrap().status, "online");
    assert_eq!(rig.vms("h1").await[&name].owner.generation, 4);
}

#[tokio::test(start_paused = true)]
async fn registration_without_vm_is_removed_when_offline_and_idle_only() {
    let rig = Rig::new(&fleet_yaml(&["h1"], &pool("build", 1, false, 1, false))).await;
    rig.converge(5).await;
    let register = |name: &str| rig.register(name, &["test", "hangar-t"]);
    let offline = register("t-build-7");
    let busy = register("t-old-0");
    let online = register("t-old-1");
    rig.sim.set_online(busy, true).unwrap();
    rig.sim.start_job(busy).unwrap();
    rig.sim.set_online(online, true).unwrap();

    rig.take_calls();
    // First seen offline now: it gets the orphan grace period first.
    let r = rig.pass().await;
    assert!(matches!(
        actions_for(&r, "t-build-7")[..],
        [Action::Wait {
            reason: WaitReason::Grace { .. },
            ..
        }]
    ));
    assert!(rig.sim.runner(offline).is_some());
    tokio::time::advance(Duration::from_secs(5 * 60 + 1)).await;
    let r = rig.pass().await;
    assert!(matches!(
        actions_for(&r, "t-build-7")[..],
        [Action::RemoveRunner { runner, reason: RemoveRunnerReason::NoVm }] if runner.id == offline
    ));
    assert!(matches!(actions_for(&r, "t-old-0")[..], [a] if is_wait_busy(a)));
    assert!(matches!(
        actions_for(&r, "t-old-1")[..],
        [Action::Wait {
            reason: WaitReason::OrphanOnline { .. },
            ..
        }]
    ));
    assert_eq!(rig.take_calls(), [], "no VM is touched");
    assert!(
        rig.sim.runner(offline).is_none(),
        "the offline orphan is removed"
    );
    assert!(rig.sim.runner(busy).unwrap().busy, "the busy one stays");
    assert_eq!(rig.sim.runner(online).unwrap().status, "online");
    assert_eq!(rig.runner("t-build-0").unwrap().status, "online");

    // Its job done and the runner gone offline, the orphan goes too.
    rig.sim.finish_job(busy).unwrap();
    rig.sim.set_online(busy, false).unwrap();
    let r = rig.pass().await;
    assert!(matches!(
        actions_for(&r, "t-old-0")[..],
        [Action::Wait {
            reason: WaitReason::Grace { .. },
            ..
        }]
    ));
    tokio::time::advance(Duration::from_secs(5 * 60 + 1)).await;
    let r = rig.pass().await;
    assert!(matches!(
        actions_for(&r, "t-old-0")[..],
        [Action::RemoveRunner { .. }]
    ));
    assert!(rig.sim.runner(busy).is_none());
    assert!(rig.sim.runner(online).is_some());
}

/// A domain without hangar's metadata, named like a slot, and another one
/// running; a volume that is not ours.
fn seed_foreign(
    hosts: &std::collections::BTreeMap<String, std::sync::Arc<hangar::sandbox::host::SandboxHost>>,
) {
    let conn = hosts["h1"].libvirt().connection().unwrap();
    for (name, start) in [("t-build-0", false), ("legacy-builder", true)] {
        let xml = format!(
            "<domain type='test'><name>{name}</name><memory>524288</memory>\
             <metadata><x:note xmlns:x='urn:example:other-tool'>hands off</x:note></metadata>\
             <os><type>hvm</type></os></domain>"
        );
        let dom = conn.define_domain_xml(&xml).unwrap();
        if start {
            dom.create().unwrap();
        }
    }
    let pool = conn.lookup_storage_pool_by_name("default").unwrap();
    virt::storage_vol::StorageVol::create_xml(
        &pool,
        "<volume><name>notes.raw</name><capacity unit='M'>16</capacity>\
         <target><format type='raw'/></target></volume>",
        0,
    )
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn foreign_domains_volumes_and_runners_are_left_untouched() {
    let rig = Rig::with_seed(
        &fleet_yaml(&["h1"], &pool("build", 3, false, 1, true)),
        seed_foreign,
    )
    .await;
    // A runner named like slot 1 without the fleet's label, and one with the
    // label whose name is not a slot name of this fleet.
    let named_like_slot = rig.register("t-build-1", &["test"]);
    rig.sim.set_online(named_like_slot, true).unwrap();
    rig.register("other-fleet-0", &["hangar-t"]);
    let foreign_runners = rig.runners();
    let foreign_domains = rig.domains("h1");
    let foreign_volumes = rig.volumes("h1");
    assert_eq!(foreign_runners.len(), 2);

    for _ in 0..3 {
        let r = rig.pass().await;
        assert!(
            !r.plan
                .actions
                .iter()
                .any(|a| a.is_destructive() && ["t-build-0", "t-build-1"].contains(&a.subject())),
            "{:#?}",
            r.plan
        );
        assert!(matches!(
            actions_for(&r, "t-build-1")[..],
            [Action::Wait {
                reason: WaitReason::NameTaken { .. },
                ..
            }]
        ));
        // The planner sees the foreign domain's name and waits; it never
        // asks the provider to create over it (which would refuse too:
        // tests/libvirt.rs).
        assert!(matches!(
            actions_for(&r, "t-build-0")[..],
            [Action::Wait {
                reason: WaitReason::DomainNameTaken { .. },
                ..
            }]
        ));
        let calls = rig.take_calls();
        assert!(
            !calls
                .iter()
                .any(|c| ["t-build-0", "t-build-1"].contains(&c.name())),
            "no call about the foreign names: {calls:?}"
        );
        tokio::time::advance(Duration::from_secs(20)).await;
    }

    let domains = rig.domains("h1");
    for (name, before) in &foreign_domains {
        assert_eq!(&domains[name], before, "{name} changed");
    }
    let volumes = rig.volumes("h1");
    assert_eq!(volumes["notes.raw"], foreign_volumes["notes.raw"]);
    assert!(
        !volumes
            .keys()
            .any(|v| v.starts_with("t-build-0") || v.starts_with("t-build-1")),
        "a refused create leaves no volume behind: {volumes:?}"
    );
    for before in &foreign_runners {
        assert_eq!(rig.sim.runner(before.id).as_ref(), Some(before));
    }
    // The free slot is served; the two taken names get no VM of ours.
    let vms = rig.vms("h1").await;
    assert_eq!(vms.keys().collect::<Vec<_>>(), ["t-build-2"]);
    assert_eq!(rig.runner("t-build-2").unwrap().status, "online");
    assert_eq!(rig.runners().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn github_down_plans_nothing_destructive_changes_nothing_then_converges() {
    let mut rig = Rig::new(&fleet_yaml(
        &["h1"],
        &(pool("build", 2, false, 1, true) + &pool("pr", 1, true, 1, false)),
    ))
    .await;
    rig.converge(5).await;

    // A file that, with GitHub up, deletes build-1, replaces pr-0 and
    // creates extra-0.
    rig.set_fleet(&fleet_yaml(
        &["h1"],
        &(pool("build", 1, false, 1, true)
            + &pool("pr", 1, true, 2, false)
            + &pool("extra", 1, false, 1, false)),
    ));
    rig.sim.inject(hangar::sim::Fault::new(
        hangar::sim::FaultKind::ServerError { status: 503 },
        u32::MAX,
    ));
    let world = rig.world();
    rig.take_calls();

    let r = rig.pass().await;
    assert!(
        !r.plan.actions.iter().any(Action::is_destructive),
        "{:#?}",
        r.plan
    );
    assert!(r
        .snapshot
        .failures()
        .iter()
        .any(|f| f.0.starts_with("GitHub")));
    assert!(r.plan.actions.iter().any(|a| matches!(
        a,
        Action::Wait {
            reason: WaitReason::ObservationFailed { .. },
            ..
        }
    )));
    assert!(!r.converged());
    // The create needs a registration token, which GitHub cannot give.
    if let Some(report) = &r.report {
        assert_eq!(report.done(), 0, "{:#?}", report.outcomes);
        assert!(report
            .outcomes
            .iter()
            .all(|o| !matches!(o.outcome, Outcome::Done)));
    }
    assert_eq!(rig.take_calls(), [], "no hypervisor change");
    assert_eq!(rig.world(), world, "nothing changed");
    assert!(rig.sim.stats().count_status("", 503) > 0);

    rig.sim.clear_faults();
    rig.converge(6).await;
    let vms = rig.vms("h1").await;
    assert_eq!(
        vms.keys().collect::<Vec<_>>(),
        ["t-build-0", "t-extra-0", "t-pr-0"]
    );
    assert_eq!(vms["t-pr-0"].owner.generation, 2);
    assert_eq!(vcpus(&rig.domains("h1")["t-pr-0"].xml), 2);
    assert!(rig.runner("t-build-1").is_none());
    for name in ["t-build-0", "t-extra-0", "t-pr-0"] {
        assert_eq!(rig.runner(name).unwrap().status, "online", "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn persistent_runner_offline_past_the_offline_timeout_is_replaced() {
    let mut rig = Rig::new(&fleet_yaml(&["h1"], &pool("build", 1, false, 1, true))).await;
    rig.converge(5).await;
    let name = slot("build", 0);
    let id = rig.runner_id(&name);
    // The runner service dies for good (the stand-in guest would restart
    // it); the VM keeps running.
    rig.play_guests(false);
    rig.sim.set_online(id, false).unwrap();
    let seen_offline = rig.engine.clock.now();

    rig.take_calls();
    let r = rig.pass().await;
    match actions_for(&r, &name)[..] {
        [Action::Wait {
            reason:
                WaitReason::RunnerOffline {
                    deadline: Some(deadline),
                },
            ..
        }] => {
            // Since the first pass that saw it offline (the provider's wall
            // clock may be a little behind the paused engine clock).
            let timeout = chrono::Duration::minutes(10);
            assert!(
                *deadline <= seen_offline + timeout,
                "{deadline} vs {seen_offline}"
            );
            assert!(*deadline >= seen_offline + timeout - chrono::Duration::minutes(1));
        }
        ref other => panic!("{other:#?}"),
    }
    assert_eq!(rig.take_calls(), []);

    tokio::time::advance(Duration::from_secs(10 * 60)).await;
    let r = rig.pass().await;
    assert!(
        matches!(
            actions_for(&r, &name)[..],
            [Action::Replace {
                next_generation: 2,
                reason: ReplaceReason::RunnerOffline,
                ..
            }]
        ),
        "{:#?}",
        r.plan
    );
    assert_eq!(rig.vms("h1").await[&name].owner.generation, 2);
    assert!(
        rig.sim.runner(id).is_none(),
        "the dead registration is removed"
    );
}

// ---- the engine's loops, in-process under paused time ----

fn count<F: Fn(&Event) -> bool>(events: &[Event], f: F) -> usize {
    events.iter().filter(|e| f(e)).count()
}

fn online(rig: &Rig, name: &str) -> bool {
    rig.runner(name).is_some_and(|r| r.status == "online")
}

/// Sleep in steps of a second until `done`, at most `max` seconds.
async fn until(max: u64, what: &str, done: impl Fn() -> bool) {
    for _ in 0..max {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("not within {max}s: {what}");
}

fn daemon_settings(rig: &Rig) -> DaemonSettings {
    DaemonSettings {
        every: Duration::from_secs(60),
        max_passes: None,
        state_dir: rig.dir.path().to_path_buf(),
        lock_poll: Duration::from_secs(1),
        measure: false,
    }
}

/// The daemon of the rig's engine on `file`, as `hangar reconcile --every
/// 60s` runs it, stopped by the rig's stop signal.
async fn daemon_of(
    rig: &Rig,
    file: &EditableFile,
    events: &dyn Events,
) -> Result<daemon::Stopped, hangar::reconcile::Error> {
    let settings = daemon_settings(rig);
    let engine = rig.wiring.build(&rig.fleet);
    daemon::daemon(
        rig.fleet.clone(),
        engine,
        file,
        &rig.wiring,
        &settings,
        &rig.cancel,
        events,
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn daemon_reloads_the_file_keeps_the_last_good_one_waits_for_the_lock_and_stops_on_sigterm() {
    let one = fleet_yaml(&["h1"], &pool("build", 1, false, 1, false));
    let two = fleet_yaml(&["h1"], &pool("build", 2, false, 1, false));
    let rig = Rig::new(&one).await;
    let file = EditableFile::new(&one);
    let events = Recorded::default();
    let stop = rig.cancel.clone();
    let daemon = daemon_of(&rig, &file, &events);
    let driver = async {
        let mut seen: Vec<Event> = Vec::new();
        until(300, "the first slot online", || {
            online(&rig, &slot("build", 0))
        })
        .await;

        // A good edit: used from the next pass on.
        file.set(&two);
        until(300, "the second slot online", || {
            online(&rig, &slot("build", 1))
        })
        .await;
        seen.extend(events.take());
        assert_eq!(count(&seen, |e| matches!(e, Event::FileChanged { .. })), 1);

        // A bad edit: reported, and the last good file stays in use.
        file.set(&two.replace("count: 2", "count: many"));
        tokio::time::sleep(Duration::from_secs(200)).await;
        let batch = events.take();
        assert!(
            count(
                &batch,
                |e| matches!(e, Event::FileRejected { error, .. } if error.contains("count"))
            ) >= 2,
            "{batch:#?}"
        );
        assert!(count(&batch, |e| matches!(e, Event::PassFinished { .. })) >= 2);
        assert_eq!(
            rig.vms("h1").await.len(),
            2,
            "the fleet of the last good file"
        );
        assert!(online(&rig, &slot("build", 0)) && online(&rig, &slot("build", 1)));

        // Another run holds the lock: the daemon waits, passing nothing.
        let lock = loop {
            match FleetLock::try_acquire(rig.dir.path(), FLEET) {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        events.take();
        tokio::time::sleep(Duration::from_secs(300)).await;
        let batch = events.take();
        assert_eq!(
            count(
                &batch,
                |e| matches!(e, Event::WaitingForLock { holder: Some(pid), .. } if *pid == std::process::id())
            ),
            1,
            "said once: {batch:#?}"
        );
        assert_eq!(count(&batch, |e| matches!(e, Event::PassStarted { .. })), 0);
        drop(lock);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let batch = events.take();
        assert_eq!(
            count(&batch, |e| matches!(e, Event::PassStarted { .. })),
            1,
            "the pass goes ahead once the lock is free: {batch:#?}"
        );

        // SIGTERM (the stop signal) while asleep: the daemon ends at once.
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.cancel();
        tokio::time::Instant::now()
    };
    let (stopped, cancelled_at) = tokio::join!(daemon, driver);
    let stopped = stopped.unwrap();
    assert!(
        tokio::time::Instant::now() - cancelled_at < Duration::from_secs(1),
        "stopped {:?} after the signal",
        tokio::time::Instant::now() - cancelled_at
    );
    assert!(stopped.passes >= 5, "{stopped:?}");
    assert!(matches!(events.take().last(), Some(Event::Stopping)));
}

/// Issue 17, item 11: a 429 with `retry-after: 120` must not keep a
/// SIGTERMed daemon alive; the retry's sleep ends with the signal.
#[tokio::test(start_paused = true)]
async fn issue_17_item_11_sigterm_ends_a_daemon_that_waits_out_a_rate_limit() {
    let yaml = fleet_yaml(&["h1"], &pool("build", 1, false, 1, false));
    let rig = Rig::new(&yaml).await;
    rig.converge(10).await;
    rig.sim.inject(
        Fault::new(
            FaultKind::RateLimited {
                retry_after_secs: 120,
            },
            100,
        )
        .on_route("GET /repos/{owner}/{repo}/actions/runners"),
    );
    let file = EditableFile::new(&yaml);
    let events = Recorded::default();
    let stop = rig.cancel.clone();
    let daemon = daemon_of(&rig, &file, &events);
    let driver = async {
        // Inside the first pass's observation, asleep in the backoff.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            count(&events.take(), |e| matches!(e, Event::PassFinished { .. })),
            0,
            "the pass waits for GitHub's rate limit"
        );
        stop.cancel();
        tokio::time::Instant::now()
    };
    let (stopped, cancelled_at) = tokio::join!(daemon, driver);
    stopped.unwrap();
    assert!(
        tokio::time::Instant::now() - cancelled_at < Duration::from_secs(1),
        "a SIGTERMed daemon lived {:?} on",
        tokio::time::Instant::now() - cancelled_at
    );
}

/// Issue 17, item 12: `destroy` while the daemon runs would be undone
/// within a pass. It is refused, naming the daemon, unless forced.
#[tokio::test(start_paused = true)]
async fn issue_17_item_12_destroy_refuses_while_the_daemon_runs() {
    let yaml = fleet_yaml(&["h1"], &pool("build", 1, false, 1, false));
    let rig = Rig::new(&yaml).await;
    let file = EditableFile::new(&yaml);
    let stop = rig.cancel.clone();
    let daemon = daemon_of(&rig, &file, &Ignore);
    let driver = async {
        until(300, "the slot online", || online(&rig, &slot("build", 0))).await;
        match check_no_daemon(rig.dir.path(), FLEET, false) {
            Err(hangar::reconcile::Error::DaemonRunning { fleet, pid }) => {
                assert_eq!((fleet.as_str(), pid), (FLEET, std::process::id()));
            }
            other => panic!("destroy went ahead beside a daemon: {other:?}"),
        }
        check_no_daemon(rig.dir.path(), FLEET, true).expect("--force goes ahead");
        stop.cancel();
    };
    let (stopped, ()) = tokio::join!(daemon, driver);
    stopped.unwrap();
    // The daemon gone, destroy goes ahead and leaves nothing.
    check_no_daemon(rig.dir.path(), FLEET, false).unwrap();
    let stop = CancellationToken::new();
    let settings = DestroySettings {
        force: false,
        wait: Duration::from_secs(60),
        poll: Duration::from_secs(2),
        pools: vec!["build".into()],
    };
    // A new process: its providers are not stopped.
    let mut wiring = rig.wiring.clone();
    wiring.cancel = stop.clone();
    destroy::destroy(&wiring.build(&rig.fleet), settings, &stop, &Ignore)
        .await
        .unwrap();
    assert!(rig.vms("h1").await.is_empty());
    assert!(rig.runners().is_empty());
}

fn converge_settings(wait: u64) -> ConvergeSettings {
    ConvergeSettings {
        wait: Duration::from_secs(wait),
        prune_confirmed: false,
    }
}

/// `apply` of the rig's file in process: passes until converged or
/// `wait` seconds are up.
async fn apply(
    rig: &Rig,
    wait: u64,
    events: &dyn Events,
) -> Result<Converged, hangar::reconcile::Error> {
    converge::converge(
        &rig.engine,
        &rig.fleet,
        converge_settings(wait),
        &rig.cancel,
        events,
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn apply_converges_in_process_and_says_what_it_still_waits_for() {
    let mut rig = Rig::new(&fleet_yaml(&["h1"], &pool("build", 2, false, 1, false))).await;
    let events = Recorded::default();
    let done = apply(&rig, 600, &events).await.unwrap();
    assert!(done.last.plan.in_sync());
    assert!(done.passes >= 2, "{}", done.passes);
    let all = events.take();
    assert_eq!(
        count(
            &all,
            |e| matches!(e, Event::ActionFinished { outcome } if outcome.outcome == Outcome::Done && matches!(outcome.action, Action::Create { .. }))
        ),
        2
    );

    // A spec change while one runner is busy: the idle one is replaced,
    // the busy one's replacement waits on its job. That is not in sync, and
    // waiting longer in this apply would not change it.
    let busy = rig.runner_id(&slot("build", 1));
    rig.sim.start_job(busy).unwrap();
    rig.set_fleet(&fleet_yaml(&["h1"], &pool("build", 2, false, 2, false)));
    let e = apply(&rig, 600, &events).await.unwrap_err();
    match e {
        hangar::reconcile::Error::NotConverged {
            why: NotConverged::WaitsOnOthers,
            remaining,
        } => {
            assert!(remaining.iter().all(is_wait_busy), "{remaining:#?}");
            assert_eq!(remaining[0].subject(), slot("build", 1));
        }
        other => panic!("{other:?}"),
    }
    // diff says so too: only waits, yet not in sync.
    let d = rig.diff().await;
    assert!(!d.plan.has_changes() && !d.plan.in_sync(), "{:#?}", d.plan);

    // A pool that left the file is not pruned without confirmation.
    rig.sim.finish_job(busy).unwrap();
    rig.set_fleet(&fleet_yaml(&["h1"], &pool("other", 1, false, 1, false)));
    let e = apply(&rig, 600, &events).await.unwrap_err();
    assert!(
        matches!(&e, hangar::reconcile::Error::PruneNotConfirmed { pools } if pools == &["build"]),
        "{e:?}"
    );
    assert_eq!(rig.vms("h1").await.len(), 2, "nothing changed");
}

#[tokio::test(start_paused = true)]
async fn apply_ends_when_its_wait_ends_or_the_stop_signal_comes() {
    let rig = Rig::new(&fleet_yaml(&["h1"], &pool("build", 1, false, 1, false))).await;
    let mut rig = rig;
    // Nothing boots: the stand-in guests stay still.
    rig.play_guests(false);
    let started = tokio::time::Instant::now();
    let e = apply(&rig, 30, &Ignore).await.unwrap_err();
    assert!(
        matches!(
            &e,
            hangar::reconcile::Error::NotConverged {
                why: NotConverged::WaitEnded(_),
                remaining,
            } if matches!(remaining.as_slice(), [Action::Wait { reason: WaitReason::Booting { .. }, .. }])
        ),
        "{e:?}"
    );
    let took = tokio::time::Instant::now() - started;
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(32),
        "{took:?}"
    );

    rig.cancel.cancel();
    let e = apply(&rig, 600, &Ignore).await.unwrap_err();
    assert!(matches!(e, hangar::reconcile::Error::Interrupted), "{e:?}");
}

/// A create cut short leaves a generation's volumes that no domain uses (a
/// seed among them carries credentials). Observation reports them, the
/// plan shows their removal, and it is carried out; a volume of the fleet's
/// name pattern that does not look like hangar's is refused and kept.
#[tokio::test(start_paused = true)]
async fn leftover_volumes_are_planned_shown_and_removed_and_odd_ones_kept() {
    let yaml = fleet_yaml(&["h1"], &pool("build", 1, false, 1, false));
    let rig = Rig::with_seed(&yaml, |hosts| {
        let made = ["t-build-0-g7-seed.iso", "t-build-0-g7-root.qcow2"];
        // hangar records a volume (its intent) before it makes it.
        let record = hosts["h1"]
            .libvirt()
            .config()
            .volume_record
            .clone()
            .unwrap();
        let keys: Vec<String> = made.iter().map(|v| format!("default/{v}")).collect();
        std::fs::write(record, serde_json::to_vec(&keys).unwrap()).unwrap();
        for (name, format) in [(made[0], "raw"), (made[1], "raw")] {
            support::wiring::foreign_volume(&hosts["h1"], "default", name, format, 16);
        }
    })
    .await;
    let d = rig.diff().await;
    let leftovers: Vec<&str> = d
        .plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::RemoveLeftover { leftover, .. } => Some(leftover.name()),
            _ => None,
        })
        .collect();
    assert_eq!(
        leftovers,
        ["t-build-0-g7-root.qcow2", "t-build-0-g7-seed.iso"]
    );
    let text = hangar::plan::render::human(&d.plan, false);
    assert!(
        text.contains("- remove  volume t-build-0-g7-seed.iso on h1 (no domain uses it)"),
        "{text}"
    );

    let r = rig.pass().await;
    let outcome = |name: &str| {
        r.report
            .as_ref()
            .unwrap()
            .outcomes
            .iter()
            .find(|o| matches!(&o.action, Action::RemoveLeftover { leftover, .. } if leftover.name() == name))
            .map(|o| o.outcome.clone())
            .unwrap()
    };
    assert_eq!(outcome("t-build-0-g7-seed.iso"), Outcome::Done);
    assert!(
        matches!(outcome("t-build-0-g7-root.qcow2"), Outcome::Failed { error } if error.message.contains("does not look like hangar's")),
    );
    let vols = rig.volumes("h1");
    assert!(!vols.contains_key("t-build-0-g7-seed.iso"), "{vols:?}");
    assert!(
        vols.contains_key("t-build-0-g7-root.qcow2"),
        "not ours: kept"
    );
}
