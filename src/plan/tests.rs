//! One test per planner rule, named after what it guards, plus snapshots of
//! the renderings. Worlds are built from a healthy baseline and changed in
//! the one way the rule is about.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::model::*;
use super::{destroy, plan, render};
use crate::model::*;

pub(super) const FLEET: &str = "ldmx-umn";
pub(super) const MIN: i64 = 60;

pub(super) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn ago(minutes: i64) -> DateTime<Utc> {
    now() - chrono::TimeDelta::seconds(minutes * MIN)
}

pub(super) fn shape() -> VmShape {
    VmShape {
        cpus: 2,
        memory_bytes: 6 << 30,
        disk_bytes: 64 << 30,
        image: "/var/lib/hangar/images/jammy.img".into(),
        cache_bytes: Some(70 << 30),
    }
}

pub(super) fn slot(pool: &str, index: u32, host: &str) -> DesiredSlot {
    DesiredSlot {
        name: slot_name(FLEET, pool, index),
        pool: pool.into(),
        index,
        host: host.into(),
        ephemeral: false,
        labels: vec!["UMN".into()],
        runner_group: "Default".into(),
        vm: shape(),
        spec_hash: SpecHash("s1".into()),
        runner: None,
        runner_unavailable: None,
    }
}

pub(super) fn desired(slots: Vec<DesiredSlot>) -> Desired {
    Desired {
        fleet: FLEET.into(),
        hosts: vec!["h1".into(), "h2".into()],
        pools: vec!["umn".into(), "gpu".into()],
        slots,
        policy: Policy::default(),
        runners: Vec::new(),
        scale: Vec::new(),
        no_room: Vec::new(),
        capacity: Default::default(),
    }
}

/// A VM of `slot` that is up and settled: running, runner started, seed gone.
pub(super) fn vm_of(slot: &DesiredSlot) -> ObservedVm {
    ObservedVm {
        name: slot.name.clone(),
        uuid: format!("uuid-{}-1", slot.name),
        host: slot.host.clone(),
        state: VmState::Running,
        owner: Ownership {
            fleet: FLEET.into(),
            pool: slot.pool.clone(),
            slot: slot.name.clone(),
            index: slot.index,
            generation: 1,
            spec_hash: slot.spec_hash.clone(),
            created_at: ago(60),
            ephemeral: slot.ephemeral,
            boot_failures: 0,
            shape: slot.vm.clone(),
        },
        guest: Some(GuestStage::RunnerStarted),
        guest_since: None,
        seed_attached: false,
        drain: None,
    }
}

/// A VM fresh from create: seed attached, guest still booting.
fn booting_vm(slot: &DesiredSlot, minutes: i64, failures: u32) -> ObservedVm {
    let mut vm = vm_of(slot);
    vm.owner.created_at = ago(minutes);
    vm.owner.boot_failures = failures;
    vm.guest = Some(GuestStage::Booting);
    vm.seed_attached = true;
    vm
}

pub(super) fn runner(name: &str, id: u64) -> ObservedRunner {
    ObservedRunner {
        id,
        name: name.into(),
        status: RunnerStatus::Online,
        busy: false,
        labels: vec!["UMN".into(), ownership_label(FLEET)],
        offline_since: None,
    }
}

fn offline(mut r: ObservedRunner) -> ObservedRunner {
    r.status = RunnerStatus::Offline;
    r
}

fn busy(mut r: ObservedRunner) -> ObservedRunner {
    r.busy = true;
    r
}

pub(super) fn observed(vms: Vec<ObservedVm>, runners: Vec<ObservedRunner>) -> Observed {
    let mut hosts: BTreeMap<String, Vec<ObservedVm>> =
        [("h1".to_string(), vec![]), ("h2".to_string(), vec![])].into();
    for vm in vms {
        hosts.entry(vm.host.clone()).or_default().push(vm);
    }
    Observed {
        hosts: hosts
            .into_iter()
            .map(|(h, items)| (h, Observation::Seen { items }))
            .collect(),
        runners: Observation::Seen { items: runners },
        foreign_names: BTreeMap::new(),
        host_state: Default::default(),
    }
}

fn fail_host(mut o: Observed, host: &str) -> Observed {
    o.hosts.insert(
        host.into(),
        Observation::Failed {
            error: Failure::new(ErrorKind::Transient, "connection refused"),
        },
    );
    o
}

fn fail_github(mut o: Observed) -> Observed {
    o.runners = Observation::Failed {
        error: Failure::new(ErrorKind::Transient, "502 bad gateway"),
    };
    o
}

fn actions(d: &Desired, o: &Observed) -> Vec<Action> {
    plan(d, o, now()).actions
}

fn wait(subject: &str, reason: WaitReason) -> Action {
    Action::Wait {
        subject: subject.into(),
        reason,
    }
}

fn busy_wait(subject: &str, then: &str) -> Action {
    wait(subject, WaitReason::Busy { then: then.into() })
}

fn github_failed(subject: &str) -> Action {
    wait(
        subject,
        WaitReason::ObservationFailed {
            what: "GitHub runners".into(),
            error: Failure::new(ErrorKind::Transient, "502 bad gateway"),
        },
    )
}

fn host_failed(subject: &str, host: &str) -> Action {
    wait(
        subject,
        WaitReason::ObservationFailed {
            what: format!("host {host}"),
            error: Failure::new(ErrorKind::Transient, "connection refused"),
        },
    )
}

fn create(slot: &DesiredSlot, generation: u64) -> Action {
    Action::Create {
        slot: slot.clone(),
        generation,
        boot_failures: 0,
        reason: CreateReason::Missing,
    }
}

fn replace(
    slot: &DesiredSlot,
    vm: &ObservedVm,
    runner: Option<&ObservedRunner>,
    failures: u32,
    reason: ReplaceReason,
) -> Action {
    Action::Replace {
        vm: vm.vm_ref(),
        runner: runner.map(ObservedRunner::runner_ref),
        slot: slot.clone(),
        next_generation: vm.owner.generation + 1,
        boot_failures: failures,
        reason,
    }
}

fn delete(vm: &ObservedVm, runner: Option<&ObservedRunner>, reason: DeleteReason) -> Action {
    Action::Delete {
        vm: vm.vm_ref(),
        runner: runner.map(ObservedRunner::runner_ref),
        reason,
    }
}

// ---- baseline and ownership -------------------------------------------------

#[test]
fn a_settled_fleet_plans_nothing() {
    let s = slot("umn", 0, "h1");
    let d = desired(vec![s.clone()]);
    let o = observed(vec![vm_of(&s)], vec![runner(&s.name, 1)]);
    assert_eq!(actions(&d, &o), vec![]);
}

#[test]
fn missing_slot_vm_is_created_at_generation_one() {
    let s = slot("umn", 0, "h1");
    let d = desired(vec![s.clone()]);
    assert_eq!(actions(&d, &observed(vec![], vec![])), vec![create(&s, 1)]);
}

#[test]
fn another_fleets_vm_is_invisible_even_under_our_name() {
    let s = slot("umn", 0, "h1");
    let d = desired(vec![]);
    let mut vm = vm_of(&s);
    vm.owner.fleet = "other".into();
    assert_eq!(actions(&d, &observed(vec![vm], vec![])), vec![]);
}

#[test]
fn vm_listed_under_another_host_than_it_claims_is_ignored() {
    let s = slot("umn", 0, "h1");
    let mut vm = vm_of(&s);
    vm.host = "h9".into();
    let mut o = observed(vec![], vec![]);
    o.hosts.insert(
        "h1".into(),
        Observation::Seen {
            items: vec![vm.clone()],
        },
    );
    assert_eq!(actions(&desired(vec![]), &o), vec![]);
}

#[test]
fn runner_without_ownership_label_is_never_touched() {
    let mut r = offline(runner(&slot_name(FLEET, "umn", 7), 7));
    r.labels = vec!["UMN".into()];
    assert_eq!(
        actions(&desired(vec![]), &observed(vec![], vec![r])),
        vec![]
    );
}

#[test]
fn labelled_runner_with_a_name_outside_the_slot_pattern_is_not_ours() {
    let r = offline(runner("ldmx-umn-builder", 7));
    let r2 = offline(runner("ldmx-umn-umn-07", 8));
    assert_eq!(
        actions(&desired(vec![]), &observed(vec![], vec![r, r2])),
        vec![]
    );
}

#[test]
fn foreign_runner_holding_a_slot_name_blocks_the_create() {
    let s = slot("umn", 0, "h1");
    let mut r = runner(&s.name, 42);
    r.labels = vec!["self-hosted".into()];
    assert_eq!(
        actions(&desired(vec![s.clone()]), &observed(vec![], vec![r])),
        vec![wait(&s.name, WaitReason::NameTaken { runner_id: 42 })]
    );
}

// ---- a failed list is not an empty list ------------------------------------

#[test]
fn failed_host_gets_waits_not_creates() {
    let s = slot("umn", 0, "h1");
    let o = fail_host(observed(vec![], vec![]), "h1");
    assert_eq!(
        actions(&desired(vec![s.clone()]), &o),
        vec![host_failed(&s.name, "h1")]
    );
}

#[test]
fn host_missing_from_the_observation_counts_as_failed() {
    let s = slot("umn", 0, "h2");
    let mut o = observed(vec![], vec![]);
    o.hosts.remove("h2");
    let expected = wait(
        &s.name,
        WaitReason::ObservationFailed {
            what: "host h2".into(),
            error: Failure::new(ErrorKind::Transient, "missing from the observation"),
        },
    );
    assert_eq!(actions(&desired(vec![s]), &o), vec![expected]);
}

#[test]
fn a_slot_whose_name_a_foreign_domain_holds_waits_instead_of_creating() {
    let s = slot("umn", 0, "h1");
    let mut o = observed(vec![], vec![]);
    o.foreign_names
        .insert("h1".into(), [s.name.clone()].into_iter().collect());
    assert_eq!(
        actions(&desired(vec![s.clone()]), &o),
        vec![wait(
            &s.name,
            WaitReason::DomainNameTaken { host: "h1".into() }
        )]
    );
    // The same name on another host is no obstacle.
    let mut o = observed(vec![], vec![]);
    o.foreign_names
        .insert("h2".into(), [s.name.clone()].into_iter().collect());
    assert_eq!(actions(&desired(vec![s.clone()]), &o), vec![create(&s, 1)]);
}

#[test]
fn no_create_when_github_and_another_host_are_both_unobserved() {
    // The slot's VM may live on the host that could not be seen, and with
    // GitHub's list missing no registration can say so.
    let s = slot("umn", 0, "h1");
    let o = fail_github(fail_host(observed(vec![], vec![]), "h2"));
    let got = actions(&desired(vec![s.clone()]), &o);
    assert!(!got.iter().any(Action::is_mutating), "{got:#?}");
    assert!(got.contains(&host_failed(&s.name, "h2")), "{got:#?}");
}

#[test]
fn orphan_registration_is_kept_while_any_host_is_unobserved() {
    let name = slot_name(FLEET, "umn", 5);
    let o = fail_host(observed(vec![], vec![offline(runner(&name, 5))]), "h2");
    assert_eq!(
        actions(&desired(vec![]), &o),
        vec![host_failed("h2", "h2"), host_failed(&name, "h2")]
    );
}

#[test]
fn failed_runner_list_allows_creates_and_starts_but_nothing_destructive() {
    let a = slot("umn", 0, "h1");
    let b = slot("umn", 1, "h1");
    let mut c = slot("umn", 2, "h2");
    c.spec_hash = SpecHash("s2".into());
    let gone = slot("umn", 9, "h2");
    let mut shut = vm_of(&b);
    shut.state = VmState::ShutOff;
    let mut seeded = vm_of(&c);
    seeded.owner.spec_hash = SpecHash("s1".into());
    seeded.seed_attached = true;
    let o = fail_github(observed(
        vec![shut.clone(), seeded.clone(), vm_of(&gone)],
        vec![],
    ));
    let d = desired(vec![a.clone(), b.clone(), c.clone()]);
    assert_eq!(
        actions(&d, &o),
        vec![
            github_failed("github"),
            create(&a, 1),
            Action::Start { vm: shut.vm_ref() },
            github_failed(&c.name),
            github_failed(&gone.name),
        ]
    );
}

// ---- drift and busy runners ------------------------------------------------

#[test]
fn spec_change_replaces_an_idle_vm_with_the_changes_spelled_out() {
    let mut s = slot("umn", 0, "h1");
    let vm = vm_of(&s);
    let r = runner(&s.name, 1);
    s.spec_hash = SpecHash("s2".into());
    s.vm.cpus = 4;
    s.vm.memory_bytes = 8 << 30;
    let expected = replace(
        &s,
        &vm,
        Some(&r),
        0,
        ReplaceReason::SpecChanged {
            changes: vec![
                FieldChange {
                    field: "cpus".into(),
                    from: "2".into(),
                    to: "4".into(),
                },
                FieldChange {
                    field: "memory".into(),
                    from: "6GiB".into(),
                    to: "8GiB".into(),
                },
            ],
        },
    );
    assert_eq!(
        actions(&desired(vec![s]), &observed(vec![vm], vec![r])),
        vec![expected]
    );
}

fn drain(vm: &ObservedVm, then: &str) -> Action {
    Action::Drain {
        vm: vm.vm_ref(),
        then: then.into(),
    }
}

#[test]
fn busy_persistent_runner_on_spec_change_is_drained_not_replaced() {
    let mut s = slot("umn", 0, "h1");
    let vm = vm_of(&s);
    s.spec_hash = SpecHash("s2".into());
    let o = observed(vec![vm.clone()], vec![busy(runner(&s.name, 1))]);
    assert_eq!(
        actions(&desired(vec![s.clone()]), &o),
        vec![drain(&vm, "replace")]
    );
}

#[test]
fn busy_ephemeral_runner_on_spec_change_is_only_waited_for() {
    let mut s = slot("umn", 0, "h1");
    s.ephemeral = true;
    let vm = vm_of(&s);
    s.spec_hash = SpecHash("s2".into());
    let o = observed(vec![vm], vec![busy(runner(&s.name, 1))]);
    assert_eq!(
        actions(&desired(vec![s.clone()]), &o),
        vec![busy_wait(&s.name, "replace")]
    );
}

#[test]
fn a_delivered_drain_is_asked_once_then_waited_for_until_idle_then_replaced() {
    let mut s = slot("umn", 0, "h1");
    let mut vm = vm_of(&s);
    vm.drain = Some(DrainState::Delivered);
    s.spec_hash = SpecHash("s2".into());
    let d = desired(vec![s.clone()]);
    let busy_world = observed(vec![vm.clone()], vec![busy(runner(&s.name, 1))]);
    assert_eq!(
        actions(&d, &busy_world),
        vec![wait(
            &s.name,
            WaitReason::Draining {
                then: "replace".into()
            }
        )]
    );
    let p = plan(&d, &busy_world, now());
    assert!(!p.in_sync(), "a pending drain is not converged");
    assert!(!p.has_changes());
    // The drained runner stopped after its job: offline, idle, replaced.
    vm.guest = Some(GuestStage::Drained);
    let r = offline(runner(&s.name, 1));
    let idle = observed(vec![vm.clone()], vec![r.clone()]);
    let acts = actions(&d, &idle);
    assert!(
        matches!(
            acts.as_slice(),
            [Action::Replace {
                reason: ReplaceReason::SpecChanged { .. },
                ..
            }]
        ),
        "{acts:?}"
    );
}

#[test]
fn an_undeliverable_drain_falls_back_to_waiting_while_busy() {
    let mut s = slot("umn", 0, "h1");
    let mut vm = vm_of(&s);
    vm.drain = Some(DrainState::Undeliverable);
    s.spec_hash = SpecHash("s2".into());
    let o = observed(vec![vm], vec![busy(runner(&s.name, 1))]);
    assert_eq!(
        actions(&desired(vec![s.clone()]), &o),
        vec![busy_wait(&s.name, "replace")]
    );
}

#[test]
fn an_idle_persistent_runner_is_replaced_without_a_drain() {
    let mut s = slot("umn", 0, "h1");
    let vm = vm_of(&s);
    s.spec_hash = SpecHash("s2".into());
    let o = observed(vec![vm], vec![runner(&s.name, 1)]);
    let acts = actions(&desired(vec![s.clone()]), &o);
    assert!(
        matches!(acts.as_slice(), [Action::Replace { .. }]),
        "{acts:?}"
    );
}

#[test]
fn guest_job_marker_counts_as_busy_when_github_lags() {
    let mut s = slot("umn", 0, "h1");
    let mut vm = vm_of(&s);
    vm.guest = Some(GuestStage::JobStarted);
    s.spec_hash = SpecHash("s2".into());
    let o = observed(vec![vm.clone()], vec![runner(&s.name, 1)]);
    assert_eq!(
        actions(&desired(vec![s.clone()]), &o),
        vec![drain(&vm, "replace")]
    );
}

// ---- lifecycles ------------------------------------------------------------

#[test]
fn ephemeral_vm_that_powered_off_is_replaced_with_failures_reset() {
    let mut s = slot("umn", 0, "h1");
    s.ephemeral = true;
    let mut vm = vm_of(&s);
    vm.state = VmState::ShutOff;
    vm.guest = Some(GuestStage::JobStarted);
    vm.owner.boot_failures = 2;
    let r = offline(runner(&s.name, 1));
    assert_eq!(
        actions(
            &desired(vec![s.clone()]),
            &observed(vec![vm.clone()], vec![r.clone()])
        ),
        vec![replace(&s, &vm, Some(&r), 0, ReplaceReason::JobDone)]
    );
}

#[test]
fn ephemeral_vm_whose_registration_went_after_its_job_is_replaced() {
    let mut s = slot("umn", 0, "h1");
    s.ephemeral = true;
    let mut vm = vm_of(&s);
    vm.guest = Some(GuestStage::JobFinished);
    assert_eq!(
        actions(
            &desired(vec![s.clone()]),
            &observed(vec![vm.clone()], vec![])
        ),
        vec![replace(&s, &vm, None, 0, ReplaceReason::JobDone)]
    );
}

#[test]
fn persistent_vm_shut_off_by_a_host_reboot_is_started() {
    let s = slot("umn", 0, "h1");
    let mut vm = vm_of(&s);
    vm.state = VmState::ShutOff;
    let o = observed(vec![vm.clone()], vec![offline(runner(&s.name, 1))]);
    assert_eq!(
        actions(&desired(vec![s]), &o),
        vec![Action::Start { vm: vm.vm_ref() }]
    );
}

#[test]
fn persistent_vm_shut_off_without_its_registration_is_rebuilt_not_started() {
    let s = slot("umn", 0, "h1");
    let mut vm = vm_of(&s);
    vm.state = VmState::ShutOff;
    assert_eq!(
        actions(
            &desired(vec![s.clone()]),
            &observed(vec![vm.clone()], vec![])
        ),
        vec![replace(&s, &vm, None, 0, ReplaceReason::RunnerOffline)]
    );
}

#[test]
fn crashed_vm_is_replaced_and_counts_a_boot_failure() {
    let s = slot("umn", 0, "h1");
    let mut vm = vm_of(&s);
    vm.state = VmState::Crashed;
    let r = offline(runner(&s.name, 1));
    assert_eq!(
        actions(
            &desired(vec![s.clone()]),
            &observed(vec![vm.clone()], vec![r.clone()])
        ),
        vec![replace(&s, &vm, Some(&r), 1, ReplaceReason::Broken)]
    );
}

#[test]
fn failed_provisioning_after_failed_boots_waits_out_the_backoff() {
    let s = slot("umn", 0, "h1");
    let mut vm = booting_vm(&s, 1, 2);
    vm.guest = Some(GuestStage::Failed);
    // backoff for 2 failures: 60 s * 2 = 2 min after creation.
    assert_eq!(
        actions(&desired(vec![s.clone()]), &observed(vec![vm], vec![])),
        vec![wait(
            &s.name,
            WaitReason::Backoff {
                until: ago(-1),
                failures: 2
            }
        )]
    );
}

#[test]
fn booting_vm_inside_its_timeout_is_not_reaped() {
    let s = slot("umn", 0, "h1");
    let vm = booting_vm(&s, 14, 0);
    let o = observed(vec![vm], vec![offline(runner(&s.name, 1))]);
    assert_eq!(
        actions(&desired(vec![s.clone()]), &o),
        vec![wait(&s.name, WaitReason::Booting { deadline: ago(-1) })]
    );
}

/// The guest prints "runner started" right after `config.sh` registered it;
/// GitHub's list may not show the registration yet. Not a reason to rebuild
/// the VM while it is inside its boot timeout.
#[test]
fn runner_started_but_not_yet_listed_is_still_booting() {
    let s = slot("umn", 0, "h1");
    let mut vm = booting_vm(&s, 2, 0);
    vm.guest = Some(GuestStage::RunnerStarted);
    let o = observed(vec![vm.clone()], vec![]);
    assert_eq!(
        actions(&desired(vec![s.clone()]), &o),
        vec![wait(&s.name, WaitReason::Booting { deadline: ago(-13) })]
    );
    // Past the boot timeout it is a failed boot like any other.
    let mut late = booting_vm(&s, 16, 0);
    late.guest = Some(GuestStage::RunnerStarted);
    let got = actions(&desired(vec![s.clone()]), &observed(vec![late], vec![]));
    assert!(
        matches!(
            got[..],
            [Action::Replace {
                reason: ReplaceReason::BootTimeout { .. },
                boot_failures: 1,
                ..
            }]
        ),
        "{got:#?}"
    );
}

#[test]
fn runner_that_never_came_up_is_replaced_after_the_boot_timeout() {
    let s = slot("umn", 0, "h1");
    let vm = booting_vm(&s, 16, 0);
    let r = offline(runner(&s.name, 1));
    let expected = replace(
        &s,
        &vm,
        Some(&r),
        1,
        ReplaceReason::BootTimeout {
            waited: Duration::from_secs(16 * 60),
        },
    );
    assert_eq!(
        actions(&desired(vec![s]), &observed(vec![vm], vec![r])),
        vec![expected]
    );
}

#[test]
fn crash_loop_backoff_delays_the_replacement_and_is_capped() {
    let s = slot("umn", 0, "h1");
    let d = desired(vec![s.clone()]);
    // 3 failures: 15 min timeout + min(60 s * 4, 1 h) = 19 min.
    let vm = booting_vm(&s, 18, 3);
    assert_eq!(
        actions(&d, &observed(vec![vm], vec![])),
        vec![wait(
            &s.name,
            WaitReason::Backoff {
                until: ago(-1),
                failures: 3
            }
        )]
    );
    let vm = booting_vm(&s, 19, 3);
    let expected = replace(
        &s,
        &vm,
        None,
        4,
        ReplaceReason::BootTimeout {
            waited: Duration::from_secs(19 * 60),
        },
    );
    assert_eq!(actions(&d, &observed(vec![vm], vec![])), vec![expected]);
    // 30 failures: capped at backoff_max (1 h), no overflow.
    let vm = booting_vm(&s, 15 + 59, 30);
    assert!(matches!(
        actions(&d, &observed(vec![vm], vec![]))[..],
        [Action::Wait {
            reason: WaitReason::Backoff { .. },
            ..
        }]
    ));
    let vm = booting_vm(&s, 15 + 60, 30);
    assert!(matches!(
        actions(&d, &observed(vec![vm], vec![]))[..],
        [Action::Replace { .. }]
    ));
}

#[test]
fn ephemeral_jit_registration_offline_from_mint_is_still_a_boot() {
    let mut s = slot("umn", 0, "h1");
    s.ephemeral = true;
    let vm = booting_vm(&s, 5, 0);
    let o = observed(vec![vm], vec![offline(runner(&s.name, 1))]);
    assert_eq!(
        actions(&desired(vec![s.clone()]), &o),
        vec![wait(&s.name, WaitReason::Booting { deadline: ago(-10) })]
    );
}

#[test]
fn runner_offline_past_the_timeout_is_replaced_and_not_before() {
    let s = slot("umn", 0, "h1");
    let d = desired(vec![s.clone()]);
    let vm = vm_of(&s);
    let mut r = offline(runner(&s.name, 1));
    r.offline_since = Some(ago(9));
    assert_eq!(
        actions(&d, &observed(vec![vm.clone()], vec![r.clone()])),
        vec![wait(
            &s.name,
            WaitReason::RunnerOffline {
                deadline: Some(ago(-1))
            }
        )]
    );
    r.offline_since = Some(ago(10));
    assert_eq!(
        actions(&d, &observed(vec![vm.clone()], vec![r.clone()])),
        vec![replace(&s, &vm, Some(&r), 0, ReplaceReason::RunnerOffline)]
    );
}

#[test]
fn runner_offline_for_an_unknown_time_is_not_replaced() {
    let s = slot("umn", 0, "h1");
    let o = observed(vec![vm_of(&s)], vec![offline(runner(&s.name, 1))]);
    assert_eq!(
        actions(&desired(vec![s.clone()]), &o),
        vec![wait(&s.name, WaitReason::RunnerOffline { deadline: None })]
    );
}

#[test]
fn seed_is_removed_once_the_runner_is_up() {
    let s = slot("umn", 0, "h1");
    let vm = booting_vm(&s, 3, 0);
    let o = observed(vec![vm.clone()], vec![busy(offline(runner(&s.name, 1)))]);
    assert_eq!(
        actions(&desired(vec![s]), &o),
        vec![Action::RemoveSeed { vm: vm.vm_ref() }]
    );
}

// ---- scale-down, moves, duplicates, orphans ---------------------------------

#[test]
fn scale_down_deletes_with_the_registration_and_spares_busy_runners() {
    let s1 = slot("umn", 1, "h1");
    let s2 = slot("umn", 2, "h1");
    let r1 = runner(&s1.name, 1);
    let o = observed(
        vec![vm_of(&s1), vm_of(&s2)],
        vec![r1.clone(), busy(runner(&s2.name, 2))],
    );
    assert_eq!(
        actions(&desired(vec![]), &o),
        vec![
            delete(&vm_of(&s1), Some(&r1), DeleteReason::ScaledDown),
            drain(&vm_of(&s2), "delete"),
        ]
    );
}

#[test]
fn removed_pool_is_deleted_as_such() {
    let s = slot("old", 0, "h2");
    let o = observed(vec![vm_of(&s)], vec![]);
    assert_eq!(
        actions(&desired(vec![]), &o),
        vec![delete(&vm_of(&s), None, DeleteReason::PoolRemoved)]
    );
}

#[test]
fn slot_moved_to_another_host_deletes_first_then_creates() {
    let old = slot("umn", 0, "h1");
    let new = slot("umn", 0, "h2");
    let r = runner(&old.name, 1);
    let o = observed(vec![vm_of(&old)], vec![r.clone()]);
    assert_eq!(
        actions(&desired(vec![new.clone()]), &o),
        vec![
            delete(&vm_of(&old), Some(&r), DeleteReason::HostRemoved),
            create(&new, 2),
        ]
    );
}

#[test]
fn slot_moved_while_busy_keeps_the_old_vm_and_creates_nothing() {
    let old = slot("umn", 0, "h1");
    let new = slot("umn", 0, "h2");
    let o = observed(vec![vm_of(&old)], vec![busy(runner(&old.name, 1))]);
    assert_eq!(
        actions(&desired(vec![new.clone()]), &o),
        vec![drain(&vm_of(&old), "delete")]
    );
}

#[test]
fn duplicate_generations_keep_the_newest_and_its_registration() {
    let s = slot("umn", 0, "h1");
    let old = vm_of(&s);
    let mut newer = vm_of(&s);
    newer.uuid = "uuid-new".into();
    newer.owner.generation = 2;
    let o = observed(vec![newer, old.clone()], vec![runner(&s.name, 1)]);
    assert_eq!(
        actions(&desired(vec![s]), &o),
        vec![delete(&old, None, DeleteReason::Duplicate)]
    );
}

#[test]
fn offline_orphan_registration_is_removed_busy_or_online_ones_wait() {
    let gone = offline(runner(&slot_name(FLEET, "umn", 5), 5));
    let working = busy(runner(&slot_name(FLEET, "umn", 6), 6));
    let elsewhere = runner(&slot_name(FLEET, "umn", 7), 7);
    let o = observed(vec![], vec![gone.clone(), working, elsewhere]);
    assert_eq!(
        actions(&desired(vec![]), &o),
        vec![
            Action::RemoveRunner {
                runner: gone.runner_ref(),
                reason: RemoveRunnerReason::NoVm,
            },
            busy_wait(&slot_name(FLEET, "umn", 6), "remove the registration"),
            wait(
                &slot_name(FLEET, "umn", 7),
                WaitReason::OrphanOnline { runner_id: 7 }
            ),
        ]
    );
}

#[test]
fn an_orphan_registration_is_removed_only_after_its_grace_period() {
    let grace = Policy::default().orphan_grace;
    let mut recent = offline(runner(&slot_name(FLEET, "umn", 5), 5));
    recent.offline_since = Some(ago(1));
    let mut old = offline(runner(&slot_name(FLEET, "umn", 6), 6));
    old.offline_since =
        Some(now() - chrono::TimeDelta::from_std(grace).unwrap() - chrono::TimeDelta::seconds(1));
    let o = observed(vec![], vec![recent.clone(), old.clone()]);
    assert_eq!(
        actions(&desired(vec![]), &o),
        vec![
            wait(
                &recent.name,
                WaitReason::Grace {
                    until: ago(1) + chrono::TimeDelta::from_std(grace).unwrap()
                }
            ),
            Action::RemoveRunner {
                runner: old.runner_ref(),
                reason: RemoveRunnerReason::NoVm,
            },
        ]
    );
    // A wanted slot's stale registration is not kept waiting: its VM needs
    // the name now.
    let s = slot("umn", 5, "h1");
    assert_eq!(
        actions(
            &desired(vec![s.clone()]),
            &observed(vec![], vec![recent.clone()])
        ),
        vec![
            Action::RemoveRunner {
                runner: recent.runner_ref(),
                reason: RemoveRunnerReason::NoVm,
            },
            create(&s, 1),
        ]
    );
}

#[test]
fn stale_registration_of_a_missing_slot_goes_before_its_create() {
    let s = slot("umn", 0, "h1");
    let r = offline(runner(&s.name, 3));
    assert_eq!(
        actions(
            &desired(vec![s.clone()]),
            &observed(vec![], vec![r.clone()])
        ),
        vec![
            Action::RemoveRunner {
                runner: r.runner_ref(),
                reason: RemoveRunnerReason::NoVm,
            },
            create(&s, 1),
        ]
    );
}

#[test]
fn actions_are_ordered_by_subject_then_kind() {
    let slots: Vec<_> = (0..3).rev().map(|i| slot("umn", i, "h1")).collect();
    let plan = plan(&desired(slots), &observed(vec![], vec![]), now());
    let subjects: Vec<_> = plan.actions.iter().map(Action::subject).collect();
    assert_eq!(
        subjects,
        ["ldmx-umn-umn-0", "ldmx-umn-umn-1", "ldmx-umn-umn-2"]
    );
}

// ---- destroy ---------------------------------------------------------------

#[test]
fn destroy_removes_everything_owned_and_waits_for_busy_runners() {
    let a = slot("umn", 0, "h1");
    let b = slot("umn", 1, "h2");
    let ra = runner(&a.name, 1);
    let orphan = offline(runner(&slot_name(FLEET, "gpu", 0), 9));
    let mut foreign = runner(&slot_name(FLEET, "gpu", 1), 10);
    foreign.labels.clear();
    let o = observed(
        vec![vm_of(&a), vm_of(&b)],
        vec![
            ra.clone(),
            busy(runner(&b.name, 2)),
            orphan.clone(),
            foreign,
        ],
    );
    let removed = Action::RemoveRunner {
        runner: orphan.runner_ref(),
        reason: RemoveRunnerReason::Destroy,
    };
    assert_eq!(
        destroy(FLEET, &[], &o, false).actions,
        vec![
            removed.clone(),
            delete(&vm_of(&a), Some(&ra), DeleteReason::Destroy),
            busy_wait(&b.name, "delete"),
        ]
    );
    let forced = destroy(FLEET, &[], &o, true).actions;
    assert_eq!(forced.len(), 3);
    assert!(forced.iter().all(Action::is_destructive));
}

#[test]
fn destroy_with_failed_observations_removes_nothing() {
    let a = slot("umn", 0, "h1");
    let o = fail_github(fail_host(observed(vec![vm_of(&a)], vec![]), "h2"));
    let plan = destroy(FLEET, &[], &o, true);
    assert!(!plan.has_changes(), "{plan:#?}");
    assert_eq!(
        plan.actions,
        vec![
            github_failed("github"),
            host_failed("h2", "h2"),
            github_failed(&a.name),
        ]
    );
}

// ---- rendering ---------------------------------------------------------------

/// A plan with one of every kind of line.
fn showcase() -> Plan {
    let mut changed = slot("umn", 1, "h1");
    let vm1 = vm_of(&changed);
    changed.spec_hash = SpecHash("s2".into());
    changed.vm.cpus = 4;
    changed.vm.memory_bytes = 8 << 30;
    let missing = slot("umn", 0, "h1");
    let busy_slot = slot("umn", 2, "h2");
    let mut shut = vm_of(&slot("umn", 3, "h2"));
    shut.state = VmState::ShutOff;
    let seeded = booting_vm(&slot("umn", 4, "h1"), 2, 0);
    let mut ephemeral = slot("gpu", 0, "h2");
    ephemeral.ephemeral = true;
    let mut done = vm_of(&ephemeral);
    done.state = VmState::ShutOff;
    let booting = booting_vm(&slot("gpu", 1, "h1"), 5, 0);
    let gone = slot("umn", 9, "h1");
    let mut busy_vm = vm_of(&busy_slot);
    let d = desired(vec![
        missing,
        changed.clone(),
        busy_slot.clone(),
        slot("umn", 3, "h2"),
        slot("umn", 4, "h1"),
        ephemeral,
        slot("gpu", 1, "h1"),
    ]);
    busy_vm.owner.spec_hash = SpecHash("s0".into());
    let o = observed(
        vec![vm1, busy_vm, shut, seeded, done, booting, vm_of(&gone)],
        vec![
            runner(&changed.name, 2),
            busy(runner(&busy_slot.name, 3)),
            offline(runner(&slot_name(FLEET, "umn", 3), 4)),
            runner(&slot_name(FLEET, "umn", 4), 5),
            offline(runner(&slot_name(FLEET, "umn", 8), 8)),
        ],
    );
    plan(&d, &o, now())
}

#[test]
fn human_rendering_snapshot() {
    insta::assert_snapshot!(render::human(&showcase(), false));
}

#[test]
fn human_rendering_colours_only_when_asked() {
    let plain = render::human(&showcase(), false);
    let coloured = render::human(&showcase(), true);
    assert!(!plain.contains('\x1b'));
    assert!(coloured.contains("\x1b[32m+ create\x1b[0m  ldmx-umn-umn-0 on h1"));
    assert!(coloured.contains("\x1b[33m~ replace\x1b[0m ldmx-umn-umn-1"));
    let stripped = coloured
        .replace("\x1b[32m", "")
        .replace("\x1b[31m", "")
        .replace("\x1b[33m", "")
        .replace("\x1b[36m", "")
        .replace("\x1b[0m", "");
    assert_eq!(stripped, plain);
}

#[test]
fn converged_plan_says_so() {
    let plan = Plan {
        fleet: FLEET.into(),
        actions: vec![],
    };
    assert_eq!(
        render::human(&plan, true),
        "No changes. The fleet matches the file.\n"
    );
}

#[test]
fn json_rendering_snapshot() {
    insta::assert_snapshot!(render::json(&showcase()));
}

#[test]
fn json_rendering_round_trips() {
    let plan = showcase();
    let back: Plan = serde_json::from_str(&render::json(&plan)).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn slot_names_parse_back_only_in_canonical_form() {
    assert_eq!(
        parse_slot_name("ldmx-umn", "ldmx-umn-umn-3"),
        Some(("umn", 3))
    );
    assert_eq!(
        parse_slot_name("ldmx-umn", "ldmx-umn-a-b-12"),
        Some(("a-b", 12))
    );
    for bad in [
        "ldmx-umn-umn-03",
        "ldmx-umn-umn-",
        "ldmx-umn--3",
        "ldmx-umn-3",
        "ldmx-umnx-umn-3",
        "other-umn-3",
        "ldmx-umn-umn-99999999999",
    ] {
        assert_eq!(parse_slot_name("ldmx-umn", bad), None, "{bad}");
    }
}

/// Issue 12: the boot timeout follows progress. It counts from the last
/// stage the guest reached, so a slow first boot that keeps moving (package
/// installs) is not crash-looped, with a hard cap after creation.
#[test]
fn boot_timeout_counts_from_the_last_stage_reached_with_a_hard_cap() {
    let s = slot("umn", 0, "h1");
    let o = |vm: ObservedVm| observed(vec![vm], vec![]);
    let d = desired(vec![s.clone()]);
    let cap = BOOT_CAP_FACTOR as i64 * 15;

    // Created 20 min ago (past the 15 min timeout), docker ready 10 min ago.
    let mut vm = booting_vm(&s, 20, 0);
    vm.guest = Some(GuestStage::DockerReady);
    vm.guest_since = Some(ago(10));
    assert_eq!(
        actions(&d, &o(vm.clone())),
        vec![wait(&s.name, WaitReason::Booting { deadline: ago(-5) })]
    );

    // No progress for the timeout since the last stage: replaced.
    vm.guest_since = Some(ago(16));
    assert!(matches!(
        &actions(&d, &o(vm.clone()))[..],
        [Action::Replace {
            reason: ReplaceReason::BootTimeout { .. },
            ..
        }]
    ));

    // Still moving, but past the cap after creation: replaced all the same.
    let mut slow = booting_vm(&s, cap + 1, 0);
    slow.guest = Some(GuestStage::CacheMounted);
    slow.guest_since = Some(ago(1));
    assert!(matches!(
        &actions(&d, &o(slow.clone()))[..],
        [Action::Replace {
            reason: ReplaceReason::BootTimeout { .. },
            ..
        }]
    ));
    // Just inside the cap: the cap is the deadline.
    slow.owner.created_at = ago(cap - 1);
    assert_eq!(
        actions(&d, &o(slow)),
        vec![wait(&s.name, WaitReason::Booting { deadline: ago(-1) })]
    );

    // Nothing printed yet: from creation, whatever was remembered.
    let mut quiet = booting_vm(&s, 16, 0);
    quiet.guest_since = Some(ago(1));
    assert!(matches!(
        &actions(&d, &o(quiet))[..],
        [Action::Replace { .. }]
    ));
}
