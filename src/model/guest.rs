//! What a guest reports about its provisioning, and the console-marker
//! protocol it reports it with.

use serde::{Deserialize, Serialize};

/// What the guest said on its serial console, newest stage reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestStage {
    /// Nothing printed by our provisioning yet.
    Booting,
    UserReady,
    DockerReady,
    CacheMounted,
    RunnerStarted,
    /// The runner started a job (job-started hook): busy, whatever GitHub says.
    JobStarted,
    /// The runner's job finished (ephemeral: the guest is powering off).
    JobFinished,
    /// A drained runner stopped after its last job (see `Action::Drain`).
    Drained,
    /// Provisioning reported an error.
    Failed,
}

pub const MARKER_USER_OK: &str = "hangar: user ok";
pub const MARKER_DOCKER_OK: &str = "hangar: docker ok";
pub const MARKER_CACHE_MOUNTED: &str = "hangar: cache mounted";
pub const MARKER_RUNNER_STARTED: &str = "hangar: runner started";
pub const MARKER_JOB_STARTED: &str = "hangar: job started";
pub const MARKER_JOB_FINISHED: &str = "hangar: job finished";
pub const MARKER_DRAINED: &str = "hangar: drained";
pub const MARKER_FAILED: &str = "hangar: failed";

/// Every marker with the stage it announces.
pub const MARKERS: [(&str, GuestStage); 8] = [
    (MARKER_USER_OK, GuestStage::UserReady),
    (MARKER_DOCKER_OK, GuestStage::DockerReady),
    (MARKER_CACHE_MOUNTED, GuestStage::CacheMounted),
    (MARKER_RUNNER_STARTED, GuestStage::RunnerStarted),
    (MARKER_JOB_STARTED, GuestStage::JobStarted),
    (MARKER_JOB_FINISHED, GuestStage::JobFinished),
    (MARKER_DRAINED, GuestStage::Drained),
    (MARKER_FAILED, GuestStage::Failed),
];

/// The stage a single console line announces, if any. Kernel and
/// cloud-init prefixes before the marker are allowed.
pub fn line_stage(line: &str) -> Option<GuestStage> {
    MARKERS
        .iter()
        .find(|(marker, _)| line.contains(marker))
        .map(|(_, stage)| *stage)
}

/// Fold lines into the newest stage: the last marker wins (a persistent
/// runner goes job started → finished → started again), except that a
/// failure stays a failure.
pub fn advance(mut stage: GuestStage, text: &str) -> GuestStage {
    for line in text.lines() {
        if stage == GuestStage::Failed {
            break;
        }
        if let Some(s) = line_stage(line) {
            stage = s;
        }
    }
    stage
}
