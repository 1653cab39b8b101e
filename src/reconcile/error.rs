//! How the engine's loops end when they do not end well: one error type,
//! which the CLI maps to an exit code in one place.

use std::time::Duration;

use super::execute::ActionOutcome;
use super::lock::LockError;
use crate::fleet::FleetError;
use crate::plan::model::{Action, Failure};

/// Why a run ended short of its goal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be resolved against the hosts (e.g. overcommit).
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Lock(#[from] LockError),
    /// `apply`'s first plan deletes every VM of a pool that left the file,
    /// and nobody confirmed it. Nothing was changed.
    #[error(
        "this deletes every VM of a pool that left the file ({}), which was not confirmed",
        pools.join(", ")
    )]
    PruneNotConfirmed { pools: Vec<String> },
    /// The stop signal came: no other action started; the ones under way
    /// finished or were abandoned after the stop grace.
    #[error("interrupted: no new action started")]
    Interrupted,
    /// The world is not yet what the file says and this run stopped
    /// waiting. `remaining` is the last plan's actions and waits.
    #[error("not converged: {why}")]
    NotConverged {
        why: NotConverged,
        remaining: Vec<Action>,
    },
    /// A pass changed nothing and every failure was one that retrying does
    /// not fix: the next pass would fail the same way.
    #[error("{} action(s) failed and none succeeded", failures.len())]
    Stuck { failures: Vec<ActionOutcome> },
    /// Part of the world could not be observed, so nothing there can be
    /// removed.
    #[error("could not observe {}", failures.iter().map(|(w, e)| format!("{w} ({e})")).collect::<Vec<_>>().join(", "))]
    Unobserved { failures: Vec<(String, Failure)> },
    /// `destroy` while a daemon reconciles the fleet: the daemon would make
    /// it all again.
    #[error("a hangar daemon (pid {pid}) is reconciling fleet {fleet}")]
    DaemonRunning { fleet: String, pid: u32 },
}

/// Why a run stopped waiting for convergence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotConverged {
    #[error("still not in sync after {}", crate::plan::render::duration(*.0))]
    WaitEnded(Duration),
    /// Only waits that hangar cannot end by waiting remain (a runner's job,
    /// a name another owner holds).
    #[error("only waits on others remain")]
    WaitsOnOthers,
    /// GitHub's rate limit resets after the wait would end.
    #[error("GitHub's rate limit resets in {}, after --wait ends", crate::plan::render::duration(*.0))]
    RateLimited(Duration),
}
