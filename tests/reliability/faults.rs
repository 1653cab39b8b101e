//! In-process scenarios under paused time: ambiguous creates (2), busy
//! runners (4), booting VMs (5), foreign objects (6), spent JIT configs (7),
//! GitHub storms (8), host reboots (11) and a removed pool's plan (13).

use std::collections::BTreeMap;
use std::time::Duration;

use hangar::model::guest::MARKER_JOB_STARTED;
use hangar::plan::model::{Action, DeleteReason, ReplaceReason, VmState, WaitReason};
use hangar::providers::{ErrorKind, Hypervisor};
use hangar::reconcile::event::Ignore;
use hangar::reconcile::execute::Outcome;
use hangar::sim::{Fault, FaultKind, Latency};

use super::results::Scenario;
use super::rig::{self, fleet_yaml, pool, slot, Op, Rig, Strike, FLEET, SCOPE};
use super::wiring;

/// Passes `step` apart until converged; panics after `max`.
async fn settle(rig: &Rig, max: usize, step: Duration) -> usize {
    for n in 1..=max {
        if rig.pass().await.converged() {
            return n;
        }
        tokio::time::advance(step).await;
    }
    let r = rig.diff().await;
    panic!("not converged after {max} passes: {:#?}", r.plan.actions);
}

/// A rig for `yaml`, settled (see [`settle`]).
async fn settled(yaml: &str) -> Rig {
    let rig = Rig::new(yaml).await;
    settle(&rig, 10, Duration::from_secs(1)).await;
    rig
}

fn at_most_one_domain_per_slot(rig: &Rig, what: &str) {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for h in rig.hosts.keys() {
        for (s, d) in rig.view(h).ours(FLEET) {
            *count.entry(s).or_default() += d.len();
        }
    }
    assert!(
        count.values().all(|n| *n <= 1),
        "{what}: two domains for one slot: {count:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn s02_ambiguous_create_is_adopted_not_duplicated() {
    let sc = Scenario::begin(2);
    let mut trials = 0;
    for (ephemeral, kind) in [
        (false, ErrorKind::Transient),
        (true, ErrorKind::Transient),
        (false, ErrorKind::Refused),
        (true, ErrorKind::Refused),
    ] {
        let yaml = fleet_yaml(&["h1", "h2"], &[pool("p", 2, ephemeral, 1)]);
        let rig = Rig::new(&yaml).await;
        // The first create of each host is carried out, then reported failed.
        rig.queue("h1", Op::Create, Strike::After(kind));
        rig.queue("h2", Op::Create, Strike::After(kind));
        for _ in 0..40 {
            let r = rig.pass().await;
            at_most_one_domain_per_slot(&rig, "ambiguous create");
            if r.converged() {
                break;
            }
            // Past the boot timeout when a refused JIT slot has to be rebuilt.
            tokio::time::advance(Duration::from_secs(30)).await;
        }
        rig.assert_converged(&format!(
            "ambiguous create ({kind:?}, ephemeral {ephemeral})"
        ));
        let creates: Vec<_> = rig
            .take_calls()
            .into_iter()
            .filter(|c| c.op == Op::Create)
            .collect();
        let failed = creates.iter().filter(|c| !c.ok).count();
        assert_eq!(failed, 2, "both injected failures struck: {creates:?}");
        if kind == ErrorKind::Transient {
            // Retried in the same pass and adopted: same generation.
            assert!(
                creates.iter().all(|c| c.generation == 1),
                "a transient ambiguous create is adopted, not remade: {creates:?}"
            );
        }
        trials += 1;
    }

    // GitHub's side: the JIT mint goes through but its answer is lost.
    let yaml = fleet_yaml(&["h1"], &[pool("e", 2, true, 1)]);
    let rig = Rig::new(&yaml).await;
    rig.sim.inject(
        Fault::new(FaultKind::ServerError { status: 502 }, 1)
            .on_route("generate-jitconfig")
            .after_effect(),
    );
    settle(&rig, 10, Duration::from_secs(1)).await;
    rig.assert_converged("lost JIT answer");
    assert_eq!(rig.sim.stats().count_status("generate-jitconfig", 502), 1);
    trials += 1;

    sc.pass(
        "libvirt create carried out then reported failed (transient: retried in-pass; refused: next pass), \
         persistent and ephemeral, 2 hosts; GitHub JIT mint applied but answer lost (502 after effect)",
        trials,
        "each ambiguous VM adopted at its generation or rebuilt once; never two domains for a slot, \
         one registration per slot, no leaked volume",
    );
}

#[tokio::test(start_paused = true)]
async fn s04_busy_runners_are_never_killed() {
    let sc = Scenario::begin(4);
    let mut rig = settled(&fleet_yaml(
        &["h1"],
        &[pool("p", 2, false, 1), pool("e", 2, true, 1)],
    ))
    .await;
    let mut trials = 0;

    // (a) GitHub says busy: scale-down and a spec change wait.
    let p1 = rig.runner(&slot("p", 1)).unwrap();
    rig.sim.start_job(p1.id).unwrap();
    // (b) GitHub lags: the guest printed its job-started marker, GitHub
    // still says idle.
    let e0 = rig.vm("h1", &slot("e", 0)).await.unwrap();
    rig.console("h1", &e0.name, e0.owner.generation, MARKER_JOB_STARTED);
    let before_p1 = rig.vm("h1", &slot("p", 1)).await.unwrap();

    rig.set_fleet(&fleet_yaml(
        &["h1"],
        &[pool("p", 1, false, 1), pool("e", 2, true, 2)],
    ));
    rig.take_calls();
    for _ in 0..5 {
        let r = rig.pass().await;
        for a in &r.plan.actions {
            if let Action::Wait { subject, reason } = a {
                if subject == &slot("p", 1) || subject == &slot("e", 0) {
                    assert!(
                        matches!(
                            reason,
                            WaitReason::Busy { .. } | WaitReason::Draining { .. }
                        ),
                        "{a:?}"
                    );
                }
            }
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        trials += 1;
    }
    let calls = rig.take_calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.op == Op::Delete && (c.name == slot("p", 1) || c.name == slot("e", 0))),
        "a busy runner's VM was deleted: {calls:?}"
    );
    let now_p1 = rig.vm("h1", &slot("p", 1)).await.unwrap();
    assert_eq!(now_p1.uuid, before_p1.uuid);
    assert_eq!(now_p1.state, VmState::Running);
    let now_e0 = rig.vm("h1", &slot("e", 0)).await.unwrap();
    assert_eq!(
        now_e0.uuid, e0.uuid,
        "the lagging-busy ephemeral VM was replaced"
    );
    assert_eq!(now_e0.state, VmState::Running);

    // (c) The plan was made while idle; the job starts before execution:
    // GitHub refuses the removal and the VM stays.
    rig.set_fleet(&fleet_yaml(
        &["h1"],
        &[pool("p", 1, false, 1), pool("e", 2, true, 3)],
    ));
    let e1 = rig.vm("h1", &slot("e", 1)).await.unwrap();
    let (_, _, plan) = rig.engine.plan(&rig.fleet).await.unwrap();
    assert!(plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::Replace { vm, .. } if vm.name == e1.name)));
    let e1_runner = rig.runner(&e1.name).unwrap();
    rig.sim.start_job(e1_runner.id).unwrap();
    let report = rig.engine.execute(&plan, &rig.cancel, &Ignore).await;
    let o = report
        .outcomes
        .iter()
        .find(|o| o.action.subject() == e1.name)
        .unwrap();
    assert!(
        matches!(&o.outcome, Outcome::Skipped { why } if why.contains("job")),
        "{o:?}"
    );
    assert_eq!(rig.vm("h1", &e1.name).await.unwrap().uuid, e1.uuid);
    trials += 1;

    // (d) destroy waits for every busy runner, removes the rest.
    let snap = rig.engine.world.observe(rig.engine.clock.as_ref()).await;
    let dplan = hangar::plan::destroy(FLEET, &[], &snap.observed, false);
    for busy in [slot("p", 1), slot("e", 0), slot("e", 1)] {
        assert!(
            !dplan
                .actions
                .iter()
                .any(|a| a.is_destructive() && a.subject() == busy),
            "destroy planned to remove busy {busy}: {:#?}",
            dplan.actions
        );
    }
    trials += 1;

    // Jobs end: everything converges to the new file.
    rig.sim.finish_job(p1.id).unwrap();
    rig.sim.finish_job(e1_runner.id).unwrap();
    rig.console("h1", &e0.name, e0.owner.generation, "hangar: job finished");
    rig.play_guests(true);
    settle(&rig, 20, Duration::from_secs(1)).await;
    rig.assert_converged("after the jobs ended");
    sc.pass(
        "jobs started on a persistent and two ephemeral runners; GitHub busy flag, lagging flag \
         (console job-started marker only), job started between plan and execution; \
         scale-down, spec change, destroy",
        trials,
        "busy VMs kept (same UUID, running) across every pass and the stale-plan execution \
         (GitHub 422 → skipped); destroy plans no removal of them; converged once the jobs ended",
    );
}

#[tokio::test(start_paused = true)]
async fn s05_booting_vms_are_not_reaped() {
    let sc = Scenario::begin(5);
    let yaml = fleet_yaml(&["h1"], &[pool("p", 1, false, 1), pool("e", 1, true, 1)]);
    let mut rig = Rig::new(&yaml).await;
    rig.play_guests(false);
    rig.pass().await;
    let first: Vec<_> = rig.take_calls();
    assert_eq!(first.iter().filter(|c| c.op == Op::Create).count(), 2);
    let mut trials = 0;
    // Within bootTimeout (5m) of creation: waits, nothing destroyed.
    let mut at = 0u64;
    for off in [1u64, 60, 150, 240, 299] {
        tokio::time::advance(Duration::from_secs(off - at)).await;
        at = off;
        let r = rig.pass().await;
        assert!(
            rig::destructive(&r).is_empty(),
            "at +{off}s: {:#?}",
            r.plan.actions
        );
        let booting = r
            .plan
            .waits()
            .filter(|(_, reason)| matches!(reason, WaitReason::Booting { .. }))
            .count();
        assert_eq!(booting, 2, "at +{off}s: {:#?}", r.plan.actions);
        trials += 1;
    }
    assert!(
        !rig.take_calls().iter().any(|c| c.op == Op::Delete),
        "a booting VM was deleted"
    );
    // Past the timeout, the same VMs are replaced (so the check above can fail).
    tokio::time::advance(Duration::from_secs(302 - at)).await;
    let r = rig.pass().await;
    let replaced = r
        .plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Replace { reason, .. } if matches!(reason, ReplaceReason::BootTimeout { .. })))
        .count();
    assert_eq!(replaced, 2, "{:#?}", r.plan.actions);
    sc.pass(
        "guests never come up (stand-in guests off); passes at +1s, 60s, 150s, 240s, 299s of a 5m boot timeout",
        trials,
        "only Booting waits, no delete or replace; at +302s both are replaced for boot timeout",
    );
}

#[tokio::test(start_paused = true)]
async fn s06_foreign_objects_are_never_touched() {
    let sc = Scenario::begin(6);
    let yaml = fleet_yaml(&["h1"], &[pool("p", 3, false, 1), pool("e", 1, true, 1)]);
    let mut rig = Rig::with_seed(&yaml, |hosts| {
        let conn = hosts["h1"].libvirt().connection().unwrap();
        let dom = |name: &str| {
            format!(
                "<domain type='test'><name>{name}</name><memory>262144</memory>\
                 <os><type>hvm</type></os></domain>"
            )
        };
        // Same name as slot p-1, no hangar metadata.
        conn.define_domain_xml(&dom(&slot("p", 1)))
            .unwrap()
            .create()
            .unwrap();
        conn.define_domain_xml(&dom("db"))
            .unwrap()
            .create()
            .unwrap();
        for v in [
            // Same name as e-0's first root overlay, but not an overlay.
            format!("{}-g1-root.qcow2", slot("e", 0)),
            "data.img".to_string(),
            // Named like a cache of a slot that does not exist.
            format!("{}-cache.qcow2", slot("p", 7)),
        ] {
            wiring::foreign_volume(&hosts["h1"], "default", &v, "raw", 1);
        }
    })
    .await;
    // Foreign runners: one holds slot p-0's name, one has the fleet's
    // custom label, one is another fleet's, one is named like a slot of ours
    // that is not in the file.
    for (name, labels) in [
        (slot("p", 0), vec!["rel".to_string()]),
        ("ci-1".to_string(), vec!["rel".to_string()]),
        ("oth-p-0".to_string(), vec!["hangar-oth".to_string()]),
        (slot("p", 9), vec!["rel".to_string()]),
    ] {
        let r = wiring::register(&rig.sim, SCOPE, &name, labels, false).unwrap();
        if r.name != slot("p", 9) {
            rig.sim.set_online(r.id, true).unwrap();
        }
    }
    // Another fleet's domain, with hangar's metadata for fleet `oth`.
    rig.pass().await;
    let donor = rig.vm("h1", &slot("p", 2)).await.expect("p-2 was created");
    let mut owner = donor.owner.clone();
    owner.fleet = "oth".into();
    owner.slot = "oth-p-0".into();
    let spec = hangar::providers::libvirt::xml::DomainSpec::for_vm(
        hangar::model::host::DomainType::Test,
        "default",
        &owner,
        None,
        &hangar::model::host::NetworkAttachment::None,
        false,
        None,
    );
    let conn = rig.host("h1").libvirt().connection().unwrap();
    conn.define_domain_xml(&hangar::providers::libvirt::xml::domain_xml(&spec))
        .unwrap()
        .create()
        .unwrap();

    let foreign_doms = [slot("p", 1), "db".to_string(), "oth-p-0".to_string()];
    let foreign_vols = [
        format!("{}-g1-root.qcow2", slot("e", 0)),
        "data.img".to_string(),
        format!("{}-cache.qcow2", slot("p", 7)),
    ];
    let foreign_runners = [slot("p", 0), "ci-1".into(), "oth-p-0".into(), slot("p", 9)];
    let snapshot = |rig: &Rig| {
        let v = rig.view("h1");
        let doms: Vec<String> = foreign_doms
            .iter()
            .map(|n| {
                let d = v
                    .dom(n)
                    .unwrap_or_else(|| panic!("foreign domain {n} is gone"));
                format!("{} {}", d.active, d.xml)
            })
            .collect();
        let vols: Vec<String> = foreign_vols
            .iter()
            .map(|n| {
                v.volumes
                    .get(n)
                    .unwrap_or_else(|| panic!("foreign volume {n} is gone"))
                    .clone()
            })
            .collect();
        let runners: Vec<String> = foreign_runners
            .iter()
            .map(|n| {
                serde_json::to_string(
                    &rig.runner(n)
                        .unwrap_or_else(|| panic!("foreign runner {n} is gone")),
                )
                .unwrap()
            })
            .collect();
        (doms, vols, runners)
    };
    let before = snapshot(&rig);
    let mut trials = 0;
    for _ in 0..8 {
        rig.pass().await;
        assert_eq!(
            snapshot(&rig),
            before,
            "a foreign object changed during apply"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        trials += 1;
    }
    // The free slot p-2 works; the blocked ones stay blocked.
    assert!(rig.vm("h1", &slot("p", 2)).await.is_some());
    assert!(
        rig.vm("h1", &slot("p", 1)).await.is_none(),
        "foreign p-1 adopted"
    );
    let r = rig.diff().await;
    assert!(r.plan.actions.iter().any(|a| matches!(
        a,
        Action::Wait { subject, reason: WaitReason::NameTaken { .. } } if subject == &slot("p", 0)
    )));

    // Scale to nothing, then destroy: still untouched.
    rig.set_fleet(&fleet_yaml(
        &["h1"],
        &[pool("p", 0, false, 1), pool("e", 0, true, 1)],
    ));
    for _ in 0..3 {
        rig.pass().await;
        trials += 1;
    }
    let snap = rig.engine.world.observe(rig.engine.clock.as_ref()).await;
    let plan = hangar::plan::destroy(FLEET, &[], &snap.observed, true);
    rig.engine.execute(&plan, &rig.cancel, &Ignore).await;
    trials += 1;
    assert_eq!(
        snapshot(&rig),
        before,
        "a foreign object changed during destroy"
    );
    assert!(
        rig.view("h1").ours(FLEET).is_empty(),
        "our own VMs are gone"
    );
    rig.play_guests(false);
    sc.pass(
        "foreign domain named like a slot, unrelated domain, another fleet's domain (hangar metadata, fleet oth); \
         foreign volumes named like our root overlay and like a cache; foreign runners named like a slot, \
         with our custom label, of another fleet, and named like an absent slot",
        trials,
        "byte-identical XML, volumes and registrations after 8 apply passes, scale to zero and destroy --force; \
         blocked slots wait (name taken) or fail refused, never adopt",
    );
}

#[tokio::test(start_paused = true)]
async fn s07_spent_jit_config_is_never_reused() {
    let sc = Scenario::begin(7);
    let rig = settled(&fleet_yaml(&["h1"], &[pool("e", 1, true, 1)])).await;
    let name = slot("e", 0);
    let mut seen_ids = Vec::new();
    let mut seen_sha = Vec::new();
    let mut trials = 0;
    for cycle in 0..6 {
        let vm = rig.vm("h1", &name).await.unwrap();
        let r = rig.runner(&name).unwrap();
        assert!(!seen_ids.contains(&r.id), "runner id {} reused", r.id);
        let sha = r.jit_config_sha256.clone().expect("a JIT runner");
        assert!(!seen_sha.contains(&sha), "JIT config reused");
        seen_ids.push(r.id);
        seen_sha.push(sha);
        rig.take_calls();
        if cycle % 2 == 0 {
            // One job, then the guest powers off (the stand-in does it).
            rig.sim.start_job(r.id).unwrap();
            rig.sim.finish_job(r.id).unwrap();
        } else {
            // The VM stops under the runner (host reboot, guest crash).
            rig.host("h1").guest_power_off(&name).await.unwrap();
        }
        settle(&rig, 10, Duration::from_secs(1)).await;
        let calls = rig.take_calls();
        assert!(
            !calls.iter().any(|c| c.op == Op::Start),
            "an ephemeral VM was started again: {calls:?}"
        );
        let next = rig.vm("h1", &name).await.unwrap();
        assert_eq!(next.owner.generation, vm.owner.generation + 1);
        assert_ne!(next.uuid, vm.uuid);
        rig.assert_converged("after an ephemeral cycle");
        trials += 1;
    }
    sc.pass(
        "ephemeral VM shut off after its job (3×) or under a registered runner (3×)",
        trials,
        "never started again: each time a new generation with a new runner id and a new JIT config",
    );
}

#[tokio::test(start_paused = true)]
async fn s08_github_storms_back_off_and_destroy_nothing() {
    let sc = Scenario::begin(8);
    let mut rig = settled(&fleet_yaml(
        &["h1"],
        &[pool("p", 2, false, 1), pool("e", 1, true, 1)],
    ))
    .await;
    // A file that, once GitHub answers, means deletes and replaces.
    rig.set_fleet(&fleet_yaml(
        &["h1"],
        &[pool("p", 1, false, 1), pool("e", 1, true, 2)],
    ));
    let storms = [
        ("502", FaultKind::ServerError { status: 502 }),
        ("503", FaultKind::ServerError { status: 503 }),
        (
            "429 retry-after 20s",
            FaultKind::RateLimited {
                retry_after_secs: 20,
            },
        ),
        (
            "secondary limit",
            FaultKind::SecondaryLimit {
                retry_after_secs: Some(10),
            },
        ),
        (
            "secondary limit, no retry-after",
            FaultKind::SecondaryLimit {
                retry_after_secs: None,
            },
        ),
    ];
    let mut trials = 0;
    let before: Vec<String> = rig
        .view("h1")
        .domains
        .iter()
        .map(|d| d.xml.clone())
        .collect();
    for (what, kind) in &storms {
        rig.sim.inject(Fault::new(kind.clone(), 10_000));
        rig.take_calls();
        let t0 = tokio::time::Instant::now();
        let r = rig.pass().await;
        let took = t0.elapsed();
        assert!(
            !r.snapshot.failures().is_empty(),
            "{what}: the list must have failed"
        );
        assert!(
            rig::destructive(&r).is_empty(),
            "{what}: {:#?}",
            r.plan.actions
        );
        let calls = rig.take_calls();
        assert!(
            !calls
                .iter()
                .any(|c| matches!(c.op, Op::Delete | Op::Create)),
            "{what}: {calls:?}"
        );
        assert!(
            took >= Duration::from_secs(3),
            "{what}: no backoff ({took:?})"
        );
        assert!(!r.converged());
        let stats = rig.sim.stats();
        assert!(
            stats.count("DELETE") == 0,
            "{what}: a registration was removed during the storm"
        );
        rig.sim.clear_faults();
        rig.sim.reset_stats();
        trials += 1;
    }
    let after: Vec<String> = rig
        .view("h1")
        .domains
        .iter()
        .map(|d| d.xml.clone())
        .collect();
    assert_eq!(
        before, after,
        "domains changed while GitHub could not be seen"
    );

    // Latency: every answer 3s late; the pass is slow but complete.
    rig.sim.set_latency(Some(Latency {
        ms: 3000,
        route: None,
    }));
    let r = rig.pass().await;
    assert!(r.snapshot.failures().is_empty());
    trials += 1;
    // A short burst the retries ride out inside one pass.
    rig.sim.set_latency(None);
    rig.sim
        .inject(Fault::new(FaultKind::ServerError { status: 500 }, 2));
    let r = rig.pass().await;
    assert!(
        r.snapshot.failures().is_empty(),
        "two 500s are retried within the pass"
    );
    trials += 1;

    settle(&rig, 20, Duration::from_secs(1)).await;
    rig.assert_converged("after the storms");
    sc.pass(
        "every GitHub request failing with 502, 503, 429 (retry-after 20s), secondary limit (with and without \
         retry-after) while the file asks for a delete and a replace; 3s latency on every answer; a burst of two 500s",
        trials,
        "each storm: backoff (≥3s of paused time per pass), no crash, no delete/replace/registration removal, \
         domains byte-identical; latency and the burst ridden out; converged after",
    );
}

#[tokio::test(start_paused = true)]
async fn s11_host_reboot_restarts_or_replaces() {
    let sc = Scenario::begin(11);
    let rig = settled(&fleet_yaml(
        &["h1", "h2"],
        &[pool("p", 2, false, 1), pool("e", 2, true, 1)],
    ))
    .await;
    let mut trials = 0;
    for _ in 0..3 {
        let mut before = BTreeMap::new();
        for h in ["h1", "h2"] {
            for vm in rig.host(h).observe(FLEET).await.unwrap() {
                before.insert(vm.name.clone(), (h, vm.uuid.clone(), vm.owner.generation));
                rig.host(h).guest_power_off(&vm.name).await.unwrap();
            }
        }
        rig.take_calls();
        let r = rig.diff().await;
        for name in before.keys() {
            let kinds: Vec<&Action> = r
                .plan
                .actions
                .iter()
                .filter(|a| a.subject() == name)
                .collect();
            let ok = if name.contains("-e-") {
                kinds.iter().any(|a| matches!(a, Action::Replace { .. }))
            } else {
                kinds.iter().any(|a| matches!(a, Action::Start { .. }))
            };
            assert!(ok, "{name}: {kinds:?}");
        }
        settle(&rig, 10, Duration::from_secs(1)).await;
        rig.assert_converged("after a host reboot");
        for (name, (h, uuid, generation)) in &before {
            let vm = rig.vm(h, name).await.unwrap();
            if name.contains("-e-") {
                assert_eq!(vm.owner.generation, generation + 1, "{name} replaced");
            } else {
                assert_eq!(&vm.uuid, uuid, "{name} started again, not rebuilt");
            }
        }
        let calls = rig.take_calls();
        assert!(!calls
            .iter()
            .any(|c| c.op == Op::Start && c.name.contains("-e-")));
        trials += 1;
    }
    sc.pass(
        "every domain on both hosts shut off under running runners (2 persistent, 2 ephemeral)",
        trials,
        "persistent VMs started again (same UUID), ephemeral ones replaced by a new generation, never started; converged",
    );
}

#[tokio::test(start_paused = true)]
async fn s13_removed_pool_drains_busy_runners_first() {
    let sc = Scenario::begin(13);
    let mut rig = settled(&fleet_yaml(
        &["h1"],
        &[pool("p", 2, false, 1), pool("q", 2, false, 1)],
    ))
    .await;
    let q1 = rig.runner(&slot("q", 1)).unwrap();
    rig.sim.start_job(q1.id).unwrap();
    let keep: Vec<String> = rig
        .view("h1")
        .domains
        .iter()
        .filter(|d| d.name.contains("-p-"))
        .map(|d| d.xml.clone())
        .collect();
    rig.set_fleet(&fleet_yaml(&["h1"], &[pool("p", 2, false, 1)]));
    let r = rig.diff().await;
    assert!(r.plan.actions.iter().any(|a| matches!(
        a,
        Action::Delete { vm, reason: DeleteReason::PoolRemoved, .. } if vm.name == slot("q", 0)
    )));
    // A busy persistent runner due for deletion is drained first.
    assert!(r.plan.actions.iter().any(|a| matches!(
        a,
        Action::Drain { vm, then } if vm.name == slot("q", 1) && then == "delete"
    )));
    assert!(
        !r.plan.actions.iter().any(|a| a.subject().contains("-p-")),
        "the other pool has actions: {:#?}",
        r.plan.actions
    );
    let mut trials = 0;
    for _ in 0..3 {
        rig.pass().await;
        tokio::time::advance(Duration::from_secs(60)).await;
        trials += 1;
    }
    assert!(
        rig.vm("h1", &slot("q", 0)).await.is_none(),
        "idle q-0 deleted"
    );
    assert!(
        rig.vm("h1", &slot("q", 1)).await.is_some(),
        "busy q-1 drains first"
    );
    rig.sim.finish_job(q1.id).unwrap();
    settle(&rig, 10, Duration::from_secs(1)).await;
    rig.assert_converged("after the pool left");
    let now: Vec<String> = rig
        .view("h1")
        .domains
        .iter()
        .filter(|d| d.name.contains("-p-"))
        .map(|d| d.xml.clone())
        .collect();
    assert_eq!(keep, now, "the other pool's domains changed");
    // The CLI half (`--yes`) runs in the binary scenarios.
    super::binary::s13_cli_removed_pool_needs_yes().await;
    trials += 2;
    sc.pass(
        "pool q (one runner busy) removed from the file; then the CLI without --yes on a non-TTY, and with --yes",
        trials,
        "plan: delete q-0 (pool removed), drain busy q-1 (then wait for its job), nothing for pool p; q-1 deleted only after its job; \
         p's domains byte-identical; no --yes → exit 2 and state files unchanged, --yes → exit 0",
    );
}
