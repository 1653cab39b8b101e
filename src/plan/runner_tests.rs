//! The runner volume: uploaded once per host, before the creates there that
//! install from it, and not again once the host has it.

use std::path::PathBuf;

use super::model::*;
use super::tests::{desired, now, slot};
use super::{plan, render};
use crate::model::runner::{runner_volume_name, LocalTarball, RunnerTarball};

fn runner_volume(version: &str) -> RunnerVolume {
    let tarball = RunnerTarball {
        version: version.into(),
        arch: "x64".into(),
        sha256: "a".repeat(64),
        size: 190 << 20,
    };
    RunnerVolume {
        volume: runner_volume_name(super::tests::FLEET, &tarball),
        local: LocalTarball {
            path: PathBuf::from("/var/lib/hangar/runner").join(tarball.file_name()),
            tarball,
        },
    }
}

fn observed_empty(runner_volumes: Vec<String>) -> Observed {
    Observed {
        hosts: [("h1".to_string(), Observation::Seen { items: vec![] })].into(),
        runners: Observation::Seen { items: vec![] },
        foreign_names: Default::default(),
        host_state: [(
            "h1".to_string(),
            ObservedHost {
                runner_volumes,
                ..Default::default()
            },
        )]
        .into(),
    }
}

#[test]
fn the_runner_volume_is_ensured_once_per_host_before_the_creates_that_need_it() {
    let rv = runner_volume("2.330.0");
    let slots: Vec<DesiredSlot> = (0..2)
        .map(|i| DesiredSlot {
            runner: Some(rv.clone()),
            ..slot("linux", i, "h1")
        })
        .collect();
    let p = plan(&desired(slots), &observed_empty(vec![]), now());
    let ensures: Vec<usize> = p
        .actions
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a, Action::EnsureRunnerVolume { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ensures.len(), 1, "{:#?}", p.actions);
    assert_eq!(
        p.actions[ensures[0]],
        Action::EnsureRunnerVolume {
            host: "h1".into(),
            runner: rv.clone()
        }
    );
    let creates = p
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Create { .. }))
        .count();
    assert_eq!(creates, 2);
    let text = render::human(&p, false);
    assert!(
        text.contains("ldmx-umn-runner-2.330.0-x64.tar.gz on h1 (runner 2.330.0 x64"),
        "{text}"
    );

    // Present on the host: no upload again.
    let p = plan(
        &desired(vec![DesiredSlot {
            runner: Some(rv.clone()),
            ..slot("linux", 0, "h1")
        }]),
        &observed_empty(vec![rv.volume.clone()]),
        now(),
    );
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::EnsureRunnerVolume { .. })),
        "{:#?}",
        p.actions
    );
}
