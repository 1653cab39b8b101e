//! Scenario tests of the engine, in-process: sandbox hosts (libvirt's test
//! driver in a temp dir), the GitHub simulator over loopback, and paused
//! tokio time driving the engine's clock. Each test asserts the world
//! afterwards (domains, volumes, registrations), not only the plan.

mod support;

use std::time::Duration;

use hangar::plan::model::{
    Action, CreateReason, DeleteReason, RemoveRunnerReason, ReplaceReason, VmState, WaitReason,
};
use hangar::providers::libvirt::xml::{cache_volume_name, root_volume_name};
use hangar::providers::Hypervisor;
use hangar::reconcile::Outcome;
use support::{actions_for, fleet_yaml, pool, slot, HvCall, Rig};

fn is_wait_busy(a: &Action) -> bool {
    matches!(
        a,
        Action::Wait {
            reason: WaitReason::Busy { .. },
            ..
        }
    )
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
            } => Some(slot.as_str()),
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
/// directory") and an older dump could overwrite a newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_actions_on_one_sandbox_host_all_save_their_state() {
    let mut rig = Rig::new(&fleet_yaml(&["h1"], &pool("build", 12, false, 1, true))).await;
    rig.engine.limits.per_host = 12;
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
