//! Each pool's runner release for one pass: `runner.version` resolved
//! (GitHub's releases of actions/runner, cached hourly with their ETag) and
//! the tarball fetched and verified once on hangar's side, then handed to
//! the planner as the slots' read-only runner volume.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::fleet::Fleet;
use crate::model::runner::{runner_volume_name, RunnerChoice, VersionVerdict, GUEST_ARCH};
use crate::plan::model::{Failure, PoolRunner, RunnerVolume};
use crate::reconcile::SlotRunner;
use crate::runner_dist::RunnerSupply;

/// The last `prepare`'s answer per pool; without a supply, every pool's
/// guest gets its runner itself.
pub(super) struct PoolRunners {
    supply: Option<Arc<RunnerSupply>>,
    by_pool: Mutex<BTreeMap<String, SlotRunner>>,
}

impl PoolRunners {
    pub(super) fn new(supply: Option<Arc<RunnerSupply>>) -> Self {
        PoolRunners {
            supply,
            by_pool: Mutex::new(BTreeMap::new()),
        }
    }

    /// Resolve every pool's release as of `now` (pools asking for the same
    /// release share one resolution) and fetch its tarball.
    pub(super) async fn prepare(&self, fleet: &Fleet, now: DateTime<Utc>) -> Vec<PoolRunner> {
        let Some(supply) = &self.supply else {
            return Vec::new();
        };
        let mut answers: Vec<(RunnerChoice, SlotRunner, PoolRunner)> = Vec::new();
        let mut by_pool = BTreeMap::new();
        let mut report = Vec::new();
        for pool in &fleet.spec.pools {
            // Preinstalled in the image: nothing to supply.
            let Some(choice) = pool.runner.choice() else {
                continue;
            };
            let known = answers.iter().find(|(c, _, _)| *c == choice);
            let (runner, line) = match known {
                Some((_, runner, line)) => (runner.clone(), line.clone()),
                None => {
                    let (runner, line) = resolve(supply, fleet, &choice, now).await;
                    answers.push((choice, runner.clone(), line.clone()));
                    (runner, line)
                }
            };
            by_pool.insert(pool.name.clone(), runner);
            report.push(PoolRunner {
                pool: pool.name.clone(),
                ..line
            });
        }
        *self.lock() = by_pool;
        report
    }

    pub(super) fn for_pool(&self, pool: &str) -> SlotRunner {
        self.lock().get(pool).cloned().unwrap_or(SlotRunner::Guest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SlotRunner>> {
        self.by_pool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn resolve(
    supply: &RunnerSupply,
    fleet: &Fleet,
    choice: &RunnerChoice,
    now: DateTime<Utc>,
) -> (SlotRunner, PoolRunner) {
    match supply.tarball(choice, GUEST_ARCH, now).await {
        Ok((local, verdict)) => {
            let line = PoolRunner {
                pool: String::new(),
                version: Some(local.tarball.version.clone()),
                warning: match verdict {
                    VersionVerdict::Warning(w) => Some(w),
                    VersionVerdict::Ok | VersionVerdict::Refused(_) => None,
                },
                error: None,
            };
            let volume = RunnerVolume {
                volume: runner_volume_name(&fleet.metadata.name, &local.tarball),
                local,
            };
            let runner = SlotRunner::Volume {
                volume,
                latest: *choice == RunnerChoice::Latest,
            };
            (runner, line)
        }
        Err(e) => {
            let failure = Failure::from(&e);
            tracing::warn!(target: "hangar::runner", error = %failure,
                "the runner release is not at hand");
            let line = PoolRunner {
                pool: String::new(),
                version: match choice {
                    RunnerChoice::Pinned { version, .. } => Some(version.to_string()),
                    RunnerChoice::Latest => None,
                },
                warning: None,
                error: Some(failure.clone()),
            };
            (SlotRunner::Unavailable(failure), line)
        }
    }
}
