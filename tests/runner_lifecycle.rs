//! The runner release lifecycle through the engine, against the simulator's
//! releases routes and sandbox hosts: `runner.version: latest` resolves to
//! the simulator's newest release and reaches the VMs on a read-only runner
//! volume; a new release replaces idle VMs (a busy one after its job), and
//! the old volume goes once no VM uses it. A pinned version past GitHub's
//! 30-day window is warned about; one that does not exist creates nothing.

mod support;

use std::time::Duration;

use hangar::model::runner::{runner_volume_name, RunnerTarball};
use hangar::plan::model::{Action, ReplaceReason, WaitReason};
use hangar::reconcile::event::{Event, Recorded};
use hangar::sim::{PublishRelease, SEED_RUNNER_VERSION};

use support::{actions_for, fleet_yaml, pool, slot, Rig, FLEET};

fn volume_of(version: &str) -> String {
    runner_volume_name(
        FLEET,
        &RunnerTarball {
            version: version.into(),
            arch: "x64".into(),
            sha256: String::new(),
            size: 0,
        },
    )
}

fn two_pools(runner: &str) -> String {
    format!(
        "{}{runner}{}{runner}",
        pool("pr", 1, true, 1, false),
        pool("build", 1, false, 1, false)
    )
}

#[tokio::test(start_paused = true)]
async fn a_new_release_replaces_idle_vms_and_drains_the_busy_one() {
    let mut rig = Rig::new(&fleet_yaml(&["h1"], &two_pools(""))).await;
    rig.supply_runners();
    let passes = rig.converge(8).await;
    let last = passes.last().unwrap();
    assert!(last.converged(), "{:#?}", last.plan);
    let versions: Vec<_> = last
        .desired
        .runners
        .iter()
        .map(|r| (r.pool.as_str(), r.version.as_deref()))
        .collect();
    assert_eq!(
        versions,
        [
            ("pr", Some(SEED_RUNNER_VERSION)),
            ("build", Some(SEED_RUNNER_VERSION))
        ]
    );
    let old = volume_of(SEED_RUNNER_VERSION);
    assert!(rig.volumes("h1").contains_key(&old));
    let uploads = passes
        .iter()
        .flat_map(|p| &p.plan.actions)
        .filter(|a| matches!(a, Action::EnsureRunnerVolume { .. }))
        .count();
    assert_eq!(uploads, 1, "one upload per host and release");
    for name in [slot("pr", 0), slot("build", 0)] {
        assert!(rig.domains("h1")[&name].xml.contains(&old), "{name}");
    }

    let build = rig.runner_id(&slot("build", 0));
    rig.sim.start_job(build).unwrap();
    rig.sim
        .publish_release(&PublishRelease::runner("2.331.0"))
        .unwrap();
    // The list is asked again at most hourly: nothing moves before that.
    let r = rig.diff().await;
    assert!(r.plan.in_sync(), "{:#?}", r.plan);

    tokio::time::advance(Duration::from_secs(61 * 60)).await;
    let r = rig.pass().await;
    assert_eq!(r.desired.runners[0].version.as_deref(), Some("2.331.0"));
    let new = volume_of("2.331.0");
    assert!(r
        .plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::EnsureRunnerVolume { runner, .. } if runner.volume == new)));
    assert!(
        matches!(
            actions_for(&r, &slot("pr", 0))[..],
            [Action::Replace {
                reason: ReplaceReason::SpecChanged { .. },
                next_generation: 2,
                ..
            }]
        ),
        "{:#?}",
        r.plan
    );
    // Busy: told to take no new job, replaced once this one ends.
    assert!(
        matches!(
            actions_for(&r, &slot("build", 0))[..],
            [Action::Drain { .. }]
                | [Action::Wait {
                    reason: WaitReason::Busy { .. } | WaitReason::Draining { .. },
                    ..
                }]
        ),
        "{:#?}",
        r.plan
    );
    // The old release stays while the busy VM uses it.
    assert!(rig.volumes("h1").contains_key(&old));

    rig.sim.finish_job(build).unwrap();
    let passes = rig.converge(8).await;
    assert!(passes.last().unwrap().converged());
    let vms = rig.vms("h1").await;
    for name in [slot("pr", 0), slot("build", 0)] {
        assert_eq!(vms[&name].owner.generation, 2, "{name}");
        assert!(rig.domains("h1")[&name].xml.contains(&new), "{name}");
    }
    let volumes = rig.volumes("h1");
    assert!(volumes.contains_key(&new));
    assert!(
        !volumes.contains_key(&old),
        "no VM installs {SEED_RUNNER_VERSION} any more: {volumes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pin_past_the_window_is_warned_about_and_a_missing_release_creates_nothing() {
    let pinned = format!("      runner:\n        version: {SEED_RUNNER_VERSION}\n");
    let mut rig = Rig::new(&fleet_yaml(&["h1"], &two_pools(&pinned))).await;
    rig.supply_runners();
    rig.sim
        .publish_release(&PublishRelease {
            published_at: Some(chrono::Utc::now() - chrono::Duration::days(40)),
            ..PublishRelease::runner("2.331.0")
        })
        .unwrap();
    let events = Recorded::default();
    let r = rig
        .engine
        .pass(
            &rig.fleet,
            false,
            &rig.cancel,
            &events,
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    let warning = r.desired.runners[0].warning.clone().expect("a warning");
    assert!(warning.contains("30-day window"), "{warning}");
    assert!(warning.contains("2.331.0"), "{warning}");
    assert!(events.take().iter().any(|e| matches!(
        e,
        Event::RunnerVersionWarning { pool, message } if pool == "pr" && *message == warning
    )));
    // A pinned release still installs: the VMs are made with it.
    assert!(r.plan.actions.iter().any(
        |a| matches!(a, Action::Create { slot, .. } if slot.runner.as_ref()
            .is_some_and(|v| v.volume == volume_of(SEED_RUNNER_VERSION)))
    ));

    let missing = "      runner:\n        version: 2.399.0\n";
    let mut rig = Rig::new(&fleet_yaml(&["h2"], &two_pools(missing))).await;
    rig.supply_runners();
    let r = rig.pass().await;
    assert!(!r.converged());
    for name in [slot("pr", 0), slot("build", 0)] {
        match actions_for(&r, &name)[..] {
            [Action::Wait {
                reason: WaitReason::RunnerUnavailable { error },
                ..
            }] => assert!(error.message.contains("2.399.0"), "{error}"),
            ref other => panic!("{name}: {other:#?}"),
        }
    }
    assert!(rig.domains("h2").is_empty());
    assert!(!hangar::reconcile::policy::ends_by_itself(
        &WaitReason::RunnerUnavailable {
            error: r.desired.runners[0].error.clone().unwrap()
        }
    ));
}
