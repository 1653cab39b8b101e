//! One pass (observe → resolve → plan → execute) and the loops built on it:
//! `apply` (passes until converged or out of time) and the daemon.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::execute::{execute, Execution, Limits, Progress, Report};
use super::{Clock, Provisioner, Snapshot, World};
use crate::fleet::{FleetError, LoadedFleet};
use crate::plan::model::{Action, Desired, Plan, WaitReason};
use crate::plan::{self};

/// Something outside the VMs that plays the guest's part: the sandbox, whose
/// guests never boot, registers their runners through the simulator after
/// each pass. Real fleets have none.
#[async_trait]
pub trait GuestPlay: Send + Sync {
    /// Make the guests of running VMs do what a booted guest would, and say
    /// what was done (one line each, shown to the user).
    async fn play(&self, world: &World, desired: &Desired, clock: &dyn Clock) -> Vec<String>;
}

/// The engine of one fleet.
pub struct Engine {
    pub world: World,
    pub provisioner: Arc<dyn Provisioner>,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    pub guests: Option<Arc<dyn GuestPlay>>,
}

/// A failure that stops a pass before anything was changed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The file cannot be resolved against the hosts (e.g. overcommit).
    #[error(transparent)]
    Spec(#[from] FleetError),
}

/// What one pass saw, decided and did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassResult {
    pub snapshot: Snapshot,
    pub desired: Desired,
    pub plan: Plan,
    /// `None` for a dry run.
    pub report: Option<Report>,
    /// Lines from the sandbox's stand-in guests.
    pub guest_play: Vec<String>,
    /// When the next pass should run.
    #[serde(with = "crate::plan::model::duration_secs")]
    pub requeue: Duration,
}

impl PassResult {
    /// Converged: nothing to change and nothing still coming up. A running
    /// VM that still has its seed is coming up: the seed goes only once its
    /// runner was seen online, and a guest that printed "runner started"
    /// whose runner GitHub does not show online yet gets a non-blocking
    /// `RunnerOffline` wait, not a `Booting` one.
    pub fn converged(&self) -> bool {
        let seeded = self.snapshot.observed.hosts.values().any(|obs| {
            obs.seen()
                .into_iter()
                .flatten()
                .any(|vm| vm.seed_attached && vm.state == crate::plan::model::VmState::Running)
        });
        !seeded
            && self.plan.is_converged()
            && !self.plan.actions.iter().any(|a| {
                matches!(
                    a,
                    Action::Wait {
                        reason: WaitReason::Booting { .. }
                            | WaitReason::Backoff { .. }
                            | WaitReason::ObservationFailed { .. },
                        ..
                    }
                )
            })
            && self.report.as_ref().is_none_or(|r| r.failed() == 0)
    }
}

impl Engine {
    /// Observe, resolve and plan; changes nothing.
    pub async fn plan(&self, fleet: &LoadedFleet) -> Result<(Snapshot, Desired, Plan), PassError> {
        let snapshot = self.world.observe(self.clock.as_ref()).await;
        let desired = fleet.resolve(&snapshot.known_facts(), &snapshot.placement())?;
        let plan = plan::plan(&desired, &snapshot.observed, snapshot.taken_at);
        Ok((snapshot, desired, plan))
    }

    /// A full pass. With `dry_run`, stops after planning.
    pub async fn pass(
        &self,
        fleet: &LoadedFleet,
        dry_run: bool,
        cancel: &CancellationToken,
        progress: &(dyn Fn(Progress<'_>) + Send + Sync),
        every: Duration,
    ) -> Result<PassResult, PassError> {
        let (snapshot, desired, plan) = self.plan(fleet).await?;
        let report = if dry_run || !plan.actions.iter().any(Action::is_mutating) {
            None
        } else {
            let ex = Execution {
                world: &self.world,
                desired: &desired,
                observed: &snapshot.observed,
                provisioner: self.provisioner.as_ref(),
                clock: self.clock.as_ref(),
                limits: self.limits,
                cancel: cancel.clone(),
                progress,
            };
            Some(execute(&ex, &plan).await)
        };
        let guest_play = match (&self.guests, dry_run) {
            (Some(g), false) => g.play(&self.world, &desired, self.clock.as_ref()).await,
            _ => Vec::new(),
        };
        let requeue = requeue_after(&plan, report.as_ref(), &snapshot, every);
        Ok(PassResult {
            snapshot,
            desired,
            plan,
            report,
            guest_play,
            requeue,
        })
    }
}

/// How soon to look again: sooner while something is in progress, at the
/// regular interval when all is quiet.
pub fn requeue_after(
    plan: &Plan,
    report: Option<&Report>,
    snapshot: &Snapshot,
    every: Duration,
) -> Duration {
    const SOON: Duration = Duration::from_secs(15);
    let mut next = every;
    if report.is_some_and(|r| r.done() > 0 || r.failed() > 0) {
        next = next.min(SOON);
    }
    for a in &plan.actions {
        if let Action::Wait { reason, .. } = a {
            let until = match reason {
                WaitReason::Booting { deadline } => Some(*deadline),
                WaitReason::Backoff { until, .. } | WaitReason::Grace { until } => Some(*until),
                _ => None,
            };
            if let Some(until) = until {
                let d = (until - snapshot.taken_at)
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .max(Duration::from_secs(1));
                // Booting VMs are checked at least every SOON to see them come up.
                next = next
                    .min(d)
                    .min(if matches!(reason, WaitReason::Booting { .. }) {
                        SOON
                    } else {
                        d
                    });
            }
        }
    }
    next
}

/// The daemon's interval with ±10 % jitter, so that many fleets on one
/// GitHub account don't all poll at the same second.
pub fn jittered(every: Duration) -> Duration {
    let ms = every.as_millis() as f64;
    let j = rand::rng().random_range(-0.1..=0.1);
    Duration::from_millis((ms * (1.0 + j)).max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(120));
            assert!(d >= Duration::from_secs(108) && d <= Duration::from_secs(132));
        }
    }
}
