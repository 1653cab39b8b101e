//! `destroy`: passes of the destroy plan until nothing of the fleet is
//! left. The actions carry what they need, so the file is not resolved: a
//! file that no longer fits its hosts can still be destroyed.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::engine::Engine;
use super::error::NotConverged;
use super::event::{Event, Events};
use super::lock::DaemonRecord;
use super::Error;
use crate::plan;

#[derive(Debug, Clone)]
pub struct DestroySettings {
    /// Also delete VMs whose runner is running a job, and go ahead while a
    /// daemon runs the fleet.
    pub force: bool,
    /// How long to wait for busy runners to finish.
    pub wait: Duration,
    /// How often to look again while waiting.
    pub poll: Duration,
    /// The file's pool names.
    pub pools: Vec<String>,
}

/// A destroyed fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destroyed {
    pub passes: u64,
}

/// Refuse while a daemon reconciles the fleet (it would make everything
/// again within a pass), unless forced (issue 17, item 12).
pub fn check_no_daemon(state_dir: &Path, fleet: &str, force: bool) -> Result<(), Error> {
    match DaemonRecord::running(state_dir, fleet)? {
        Some(pid) if !force => Err(Error::DaemonRunning {
            fleet: fleet.to_string(),
            pid,
        }),
        _ => Ok(()),
    }
}

pub async fn destroy(
    engine: &Engine,
    settings: DestroySettings,
    stop: &CancellationToken,
    events: &dyn Events,
) -> Result<Destroyed, Error> {
    let fleet = engine.world.fleet.as_str();
    let deadline = Instant::now() + settings.wait;
    let mut passes = 0u64;
    loop {
        passes += 1;
        events.emit(Event::PassStarted { pass: passes });
        let snap = engine.world.observe(engine.clock.as_ref()).await;
        let plan = plan::destroy(fleet, &settings.pools, &snap.observed, settings.force);
        for (what, error) in snap.failures() {
            events.emit(Event::ObservationFailed {
                what,
                error: error.clone(),
            });
        }
        events.emit(Event::Planned { plan: plan.clone() });
        if plan.in_sync() {
            return Ok(Destroyed { passes });
        }
        let failures = snap.failures();
        if !failures.is_empty() && !plan.has_changes() {
            return Err(Error::Unobserved {
                failures: failures.into_iter().map(|(w, e)| (w, e.clone())).collect(),
            });
        }
        let progressed = if plan.has_changes() {
            let report = engine.execute_seen(&plan, &snap.facts, stop, events).await;
            report.done() > 0 && report.failed() == 0
        } else {
            false
        };
        if stop.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::NotConverged {
                why: NotConverged::WaitEnded(settings.wait),
                remaining: plan.actions,
            });
        }
        // What was removed is gone at once: look again without a pause
        // unless something is waited for (a busy runner) or failed.
        if !progressed || plan.waits().next().is_some() {
            tokio::select! {
                _ = tokio::time::sleep(settings.poll.min(deadline - now)) => {}
                _ = stop.cancelled() => return Err(Error::Interrupted),
            }
        }
    }
}
