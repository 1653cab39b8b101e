//! Scaled pools: the slots each keeps from the queue, the cooldown, and the
//! waits for capacity in the plan.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::TimeDelta;

use super::model::{
    Action, Failure, GroupAccess, GroupVisibility, JobStatus, NoRoom, Observation, Observed,
    ObservedJob, PoolScale, ScaledPool, WaitReason,
};
use super::scale::{groups_to_read, job_fits, scale};
use super::tests::{desired, now, runner, slot, vm_of, FLEET};
use crate::plan::model::ErrorKind;

const COOLDOWN: Duration = Duration::from_secs(600);

fn pool(name: &str, min: u32, max: u32, idle: u32) -> ScaledPool {
    ScaledPool {
        name: name.into(),
        runner_labels: vec![
            "self-hosted".into(),
            "linux".into(),
            "x64".into(),
            name.into(),
            format!("hangar-{FLEET}"),
        ],
        min,
        max,
        idle,
        cooldown: COOLDOWN,
        runner_group: None,
        access: None,
    }
}

fn job(id: u64, labels: &[&str], status: JobStatus) -> ObservedJob {
    ObservedJob {
        id,
        run_id: id + 1000,
        repository: "o/r".into(),
        name: "build".into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        status,
        runner_name: None,
        private: None,
    }
}

fn queued(ids: &[u64], labels: &[&str]) -> Vec<ObservedJob> {
    ids.iter()
        .map(|&id| job(id, labels, JobStatus::Queued))
        .collect()
}

/// The world with slots `indexes` of `pool` on h1, those in `busy` running
/// a job.
fn world(pool: &str, indexes: &[u32], busy: &[u32]) -> Observed {
    let mut vms = Vec::new();
    let mut runners = Vec::new();
    for &i in indexes {
        let s = slot(pool, i, "h1");
        vms.push(vm_of(&s));
        let mut r = runner(&s.name, 100 + u64::from(i));
        r.busy = busy.contains(&i);
        runners.push(r);
    }
    let mut hosts: BTreeMap<String, Vec<_>> = BTreeMap::new();
    hosts.insert("h1".into(), vms);
    hosts.insert("h2".into(), Vec::new());
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

fn one(
    p: &ScaledPool,
    observed: &Observed,
    jobs: Vec<ObservedJob>,
    above: &BTreeMap<String, chrono::DateTime<chrono::Utc>>,
    at: chrono::DateTime<chrono::Utc>,
) -> PoolScale {
    scale(
        FLEET,
        std::slice::from_ref(p),
        observed,
        &Observation::Seen { items: jobs },
        above,
        at,
    )
    .remove(0)
}

#[test]
fn githubs_routing_rule_needs_every_job_label_on_the_runner() {
    let runner: Vec<String> = vec!["self-hosted".into(), "Linux".into(), "gpu".into()];
    assert!(job_fits(&["self-hosted".into(), "linux".into()], &runner));
    assert!(job_fits(&["GPU".into()], &runner));
    assert!(!job_fits(&["gpu".into(), "arm64".into()], &runner));
}

#[test]
fn an_empty_queue_keeps_min_and_a_queue_grows_at_once_by_the_lowest_indexes() {
    let p = pool("umn", 0, 3, 0);
    let none = BTreeMap::new();
    let s = one(&p, &world("umn", &[], &[]), vec![], &none, now());
    assert_eq!((s.target, s.slots.clone()), (0, vec![]));

    let s = one(
        &p,
        &world("umn", &[1], &[1]),
        queued(&[7, 8], &["umn"]),
        &none,
        now(),
    );
    // busy 1 + queued 2 = 3: slot 1 stays, 0 and 2 are the lowest free.
    assert_eq!((s.busy, s.target), (1, 3));
    assert_eq!(s.slots, vec![0, 1, 2]);
    assert_eq!(s.queued, vec![7, 8]);

    // Never beyond max, never below min; idle runners on top of demand.
    let s = one(
        &pool("umn", 2, 3, 1),
        &world("umn", &[], &[]),
        queued(&[1, 2, 3, 4], &["umn"]),
        &none,
        now(),
    );
    assert_eq!((s.target, s.slots.len()), (3, 3));
    let s = one(
        &pool("umn", 2, 5, 1),
        &world("umn", &[], &[]),
        vec![],
        &none,
        now(),
    );
    assert_eq!(s.target, 2);
    let s = one(
        &pool("umn", 0, 5, 1),
        &world("umn", &[], &[]),
        queued(&[1], &["umn"]),
        &none,
        now(),
    );
    assert_eq!(s.target, 2);
}

#[test]
fn a_job_with_labels_no_pool_has_asks_for_nothing() {
    let p = pool("umn", 0, 3, 0);
    let s = one(
        &p,
        &world("umn", &[], &[]),
        queued(&[1], &["umn", "gpu"]),
        &BTreeMap::new(),
        now(),
    );
    assert_eq!(
        (s.target, s.slots.clone(), s.queued.clone()),
        (0, vec![], vec![])
    );
}

#[test]
fn one_job_asks_only_the_first_pool_it_fits() {
    let pools = [pool("a", 0, 3, 0), {
        let mut b = pool("b", 0, 3, 0);
        b.runner_labels.push("a".into());
        b
    }];
    let out = scale(
        FLEET,
        &pools,
        &world("a", &[], &[]),
        &Observation::Seen {
            items: queued(&[1], &["a"]),
        },
        &BTreeMap::new(),
        now(),
    );
    assert_eq!(out[0].target, 1);
    assert_eq!(out[1].target, 0);
}

fn selected(repos: &[&str]) -> GroupAccess {
    GroupAccess {
        visibility: GroupVisibility::Selected(repos.iter().map(|r| r.to_string()).collect()),
        allows_public: false,
    }
}

/// `queued` jobs of repository `repo`.
fn queued_in(repo: &str, ids: &[u64], labels: &[&str]) -> Vec<ObservedJob> {
    let mut jobs = queued(ids, labels);
    for j in &mut jobs {
        j.repository = repo.into();
    }
    jobs
}

#[test]
fn a_groups_access_admits_by_visibility_and_keeps_public_repositories_out_unless_allowed() {
    let mut all = GroupAccess {
        visibility: GroupVisibility::All,
        allows_public: false,
    };
    assert!(all.admits("o/r", Some(true)));
    assert!(all.admits("o/r", None), "not said: taken as private");
    assert!(!all.admits("o/r", Some(false)));
    all.allows_public = true;
    assert!(all.admits("o/r", Some(false)));

    let mut private = GroupAccess {
        visibility: GroupVisibility::Private,
        allows_public: true,
    };
    assert!(private.admits("o/r", Some(true)));
    assert!(!private.admits("o/r", Some(false)));
    private.allows_public = false;
    assert!(private.admits("o/r", None));

    let some = selected(&["o/widgets"]);
    assert!(some.admits("O/Widgets", Some(true)), "names without case");
    assert!(!some.admits("o/other", Some(true)));
    assert!(
        !some.admits("o/widgets", Some(false)),
        "public, not allowed"
    );
}

#[test]
fn a_job_counts_only_for_a_pool_whose_group_admits_its_repository() {
    let mut p = pool("gpu", 0, 3, 0);
    p.runner_group = Some("GPU".into());
    p.access = Some(selected(&["o/widgets"]));
    let mut jobs = queued_in("o/other", &[1, 2], &["gpu"]);
    jobs.extend(queued_in("o/widgets", &[3], &["gpu"]));
    let s = one(
        &p,
        &world("gpu", &[], &[]),
        jobs.clone(),
        &BTreeMap::new(),
        now(),
    );
    assert_eq!(
        (s.target, s.queued.clone(), s.not_admitted.clone()),
        (1, vec![3], vec![1, 2])
    );
    // Access not known: by labels, as before.
    p.access = None;
    let s = one(&p, &world("gpu", &[], &[]), jobs, &BTreeMap::new(), now());
    assert_eq!((s.target, s.not_admitted.len()), (3, 0));
}

#[test]
fn a_job_a_first_pools_group_refuses_goes_to_the_next_pool_that_admits_it() {
    let mut a = pool("a", 0, 3, 0);
    a.runner_labels.push("gpu".into());
    a.access = Some(selected(&["o/widgets"]));
    let mut b = pool("b", 0, 3, 0);
    b.runner_labels.push("gpu".into());
    b.access = Some(selected(&["o/other"]));
    let out = scale(
        FLEET,
        &[a, b],
        &world("a", &[], &[]),
        &Observation::Seen {
            items: queued_in("o/other", &[7], &["gpu"]),
        },
        &BTreeMap::new(),
        now(),
    );
    assert_eq!((out[0].target, out[1].queued.clone()), (0, vec![7]));
    assert!(out.iter().all(|p| p.not_admitted.is_empty()), "{out:?}");
}

#[test]
fn only_groups_of_pools_a_queued_job_fits_are_read() {
    let mut gpu = pool("gpu", 0, 3, 0);
    gpu.runner_group = Some("GPU".into());
    let mut cpu = pool("cpu", 0, 3, 0);
    cpu.runner_group = Some("CPU".into());
    let repo_pool = pool("plain", 0, 3, 0);
    let pools = [cpu, gpu, repo_pool];
    assert!(
        groups_to_read(&pools, &[]).is_empty(),
        "an idle queue asks nothing"
    );
    let running = vec![job(1, &["gpu"], JobStatus::InProgress)];
    assert!(groups_to_read(&pools, &running).is_empty());
    let mut jobs = queued(&[2, 3], &["gpu"]);
    jobs.extend(queued(&[4], &["plain"]));
    assert_eq!(groups_to_read(&pools, &jobs), ["GPU"]);
}

#[test]
fn idle_slots_go_only_after_the_cooldown_highest_first_and_never_a_busy_one() {
    let p = pool("umn", 0, 3, 0);
    let none = BTreeMap::new();
    // Demand fell: slot 1 is busy, 0 and 2 idle. Nothing goes yet.
    let w = world("umn", &[0, 1, 2], &[1]);
    let s = one(&p, &w, vec![], &none, now());
    assert_eq!(s.slots, vec![0, 1, 2]);
    assert_eq!(s.above_target_since, Some(now()));

    let mut above = BTreeMap::new();
    above.insert("umn".to_string(), now());
    let s = one(&p, &w, vec![], &above, now() + TimeDelta::minutes(9));
    assert_eq!(s.slots, vec![0, 1, 2], "within the cooldown");
    assert_eq!(s.above_target_since, Some(now()));

    // Past it: both idle slots go, the busy one stays (it is the target).
    let s = one(&p, &w, vec![], &above, now() + TimeDelta::minutes(10));
    assert_eq!((s.target, s.slots.clone()), (1, vec![1]));
    assert_eq!(s.above_target_since, None);

    // Busy slots above target (max lowered below them): they stay, and the
    // cooldown clock keeps running for them.
    let s = one(
        &pool("umn", 0, 1, 0),
        &world("umn", &[0, 1, 2], &[1, 2]),
        vec![],
        &above,
        now() + TimeDelta::minutes(10),
    );
    assert_eq!(s.slots, vec![1, 2]);
    assert_eq!(s.above_target_since, Some(now()));

    // Target 1 of three idle: the highest indexes go first.
    let w = world("umn", &[0, 1, 2], &[]);
    let s = one(
        &p,
        &w,
        queued(&[5], &["umn"]),
        &above,
        now() + TimeDelta::minutes(10),
    );
    assert_eq!(s.slots, vec![0]);
    assert_eq!(s.above_target_since, None);
}

#[test]
fn demand_back_within_the_cooldown_resets_it() {
    let p = pool("umn", 0, 3, 0);
    let mut above = BTreeMap::new();
    above.insert("umn".to_string(), now());
    let w = world("umn", &[0, 1], &[]);
    let s = one(
        &p,
        &w,
        queued(&[1, 2], &["umn"]),
        &above,
        now() + TimeDelta::minutes(5),
    );
    assert_eq!((s.slots.clone(), s.above_target_since), (vec![0, 1], None));
}

#[test]
fn without_the_queue_a_pool_neither_grows_nor_shrinks() {
    let p = pool("umn", 2, 3, 0);
    let out = scale(
        FLEET,
        std::slice::from_ref(&p),
        &world("umn", &[2], &[]),
        &Observation::Failed {
            error: Failure::new(ErrorKind::Transient, "down"),
        },
        &BTreeMap::new(),
        now(),
    );
    assert_eq!(
        out[0].slots,
        vec![0, 2],
        "min is kept, nothing else changes"
    );
    assert!(out[0].unknown.is_some());
}

#[test]
fn a_slot_without_room_is_a_wait_naming_the_jobs() {
    let s = slot("umn", 0, "h1");
    let mut d = desired(vec![s.clone()]);
    d.no_room.push(NoRoom {
        slot: format!("{FLEET}-umn-1"),
        pool: "umn".into(),
        hosts: vec!["h1".into()],
        jobs: vec![42],
    });
    let o = world("umn", &[0], &[]);
    let plan = super::plan(&d, &o, now());
    let wait = Action::Wait {
        subject: format!("{FLEET}-umn-1"),
        reason: WaitReason::NoCapacity {
            hosts: vec!["h1".into()],
            jobs: vec![42],
        },
    };
    assert!(plan.actions.contains(&wait), "{:#?}", plan.actions);
    assert!(!plan.in_sync());
    let text = super::render::human(&plan, false);
    assert!(
        text.contains("no room on h1 for another runner: queued job #42 waits for capacity"),
        "{text}"
    );
}
