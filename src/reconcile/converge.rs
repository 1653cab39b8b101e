//! `apply`: passes until the world equals the file, or until it is clear
//! that waiting longer in this run will not get it there.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, PassResult};
use super::error::NotConverged;
use super::event::{Event, Events};
use super::execute::Outcome;
use super::policy::{self, Because};
use super::Error;
use crate::fleet::LoadedFleet;
use crate::plan::model::{Action, DeleteReason, Plan};

/// How an `apply` behaves.
#[derive(Debug, Clone, Copy)]
pub struct ConvergeSettings {
    /// Keep passing this long at most; zero means one pass.
    pub wait: Duration,
    /// Whether deleting every VM of a pool that left the file was
    /// confirmed (`--yes`, or a yes at the prompt).
    pub prune_confirmed: bool,
}

/// A converged apply.
#[derive(Debug)]
pub struct Converged {
    pub passes: u64,
    pub last: PassResult,
}

/// Pools whose every VM the plan deletes because the pool left the file.
pub fn pruned_pools(plan: &Plan) -> Vec<String> {
    let mut pools: Vec<String> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete {
                vm,
                reason: DeleteReason::PoolRemoved,
                ..
            } => crate::model::names::parse_slot_name(&plan.fleet, &vm.name)
                .map(|(pool, _)| pool.to_string()),
            _ => None,
        })
        .collect();
    pools.sort();
    pools.dedup();
    pools
}

/// Pass until converged. Stops early, with the reason, when the stop
/// signal comes ([`Error::Interrupted`]), when a pass changed nothing and
/// each of its failures is one that retrying does not fix
/// ([`Error::Stuck`]), when only waits on others remain, or when the wait
/// ends ([`Error::NotConverged`]).
pub async fn converge(
    engine: &Engine,
    fleet: &LoadedFleet,
    settings: ConvergeSettings,
    stop: &CancellationToken,
    events: &dyn Events,
) -> Result<Converged, Error> {
    let deadline = Instant::now() + settings.wait;
    let mut passes = 0u64;
    loop {
        passes += 1;
        events.emit(Event::PassStarted { pass: passes });
        if passes == 1 && !settings.prune_confirmed {
            // Ask before anything is changed: the first look decides what
            // this apply means.
            let (_, _, plan) = engine.plan(fleet).await?;
            let pools = pruned_pools(&plan);
            if !pools.is_empty() {
                return Err(Error::PruneNotConfirmed { pools });
            }
        }
        let r = engine
            .pass(fleet, false, stop, events, engine.poll.max(policy::SOON))
            .await?;
        finished(events, passes, &r);
        if stop.is_cancelled() {
            return Err(Error::Interrupted);
        }
        if r.converged() {
            return Ok(Converged { passes, last: r });
        }
        if let Some(rep) = &r.report {
            // Preparing a host (its network, a runner volume) is no progress
            // when every slot's action then fails for good.
            if rep.slot_changes_done() == 0
                && rep.failed() > 0
                && rep.failures().all(
                    |f| matches!(&f.outcome, Outcome::Failed { error } if !error.is_retryable()),
                )
            {
                return Err(Error::Stuck {
                    failures: rep.failures().cloned().collect(),
                });
            }
        }
        let not_converged = |why| Error::NotConverged {
            why,
            remaining: r.plan.actions.clone(),
        };
        if r.report.is_none() && policy::only_waits_on_others(&r.plan) {
            return Err(not_converged(NotConverged::WaitsOnOthers));
        }
        let now = Instant::now();
        if now >= deadline {
            if r.report.is_none() {
                return Err(not_converged(NotConverged::WaitEnded(settings.wait)));
            }
            // The pass changed the world: what is left is what a fresh look
            // shows, not the plan it executed (`--wait 0`: one pass, then
            // an honest answer).
            let (_, _, left) = engine.plan(fleet).await?;
            if left.in_sync() {
                return Ok(Converged { passes, last: r });
            }
            return Err(Error::NotConverged {
                why: NotConverged::WaitEnded(settings.wait),
                remaining: left.actions,
            });
        }
        let nap = if r.requeue.because == Because::RateLimited {
            if now + r.requeue.after > deadline {
                return Err(not_converged(NotConverged::RateLimited(r.requeue.after)));
            }
            r.requeue.after
        } else {
            r.requeue.after.min(engine.poll).min(deadline - now)
        };
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = stop.cancelled() => return Err(Error::Interrupted),
        }
    }
}

pub(crate) fn finished(events: &dyn Events, pass: u64, r: &PassResult) {
    let (done, failed) = r
        .report
        .as_ref()
        .map(|rep| (rep.done(), rep.failed()))
        .unwrap_or((0, 0));
    events.emit(Event::PassFinished {
        pass,
        planned: r.plan.mutating().count(),
        done,
        failed,
        waiting: r.plan.waits().count(),
        next: r.requeue,
    });
}
