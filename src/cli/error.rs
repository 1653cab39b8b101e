//! Every way a command can end other than success, and the one place that
//! maps each to its exit code and prints it (in the manner of
//! cargo-nextest's `ExpectedError` and `process_exit_code`).

use std::fmt::Write as _;

use super::output;
use crate::access::AccessError;
use crate::assemble::AssembleError;
use crate::exit::ExitStatus;
use crate::fleet::FleetError;
use crate::plan::model::Action;
use crate::plan::render;
use crate::reconcile::error::NotConverged;
use crate::reconcile::lock::LockError;
use crate::reconcile::{self, ProvisionError};

#[derive(Debug, thiserror::Error)]
pub enum ExpectedError {
    /// A flag's value or a combination of flags.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error(transparent)]
    Engine(#[from] reconcile::Error),
    #[error(transparent)]
    Render(#[from] ProvisionError),
    /// A slot of the file, or its console or log, cannot be had.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// A confirmation that only a person at a terminal can give.
    #[error("{0}; run again with --yes")]
    NotConfirmed(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl From<LockError> for ExpectedError {
    fn from(e: LockError) -> Self {
        ExpectedError::Engine(e.into())
    }
}

impl ExpectedError {
    /// The documented exit code of this ending (see `crate::exit`).
    pub fn process_exit_code(&self) -> ExitStatus {
        use reconcile::Error as E;
        match self {
            ExpectedError::Usage(_)
            | ExpectedError::Fleet(_)
            | ExpectedError::Render(_)
            | ExpectedError::Access(AccessError::NoSlot { .. })
            | ExpectedError::NotConfirmed(_) => ExitStatus::InvalidInput,
            ExpectedError::Assemble(e) if e.is_usage() => ExitStatus::InvalidInput,
            ExpectedError::Assemble(_)
            | ExpectedError::Runtime(_)
            | ExpectedError::Access(AccessError::Unavailable(_) | AccessError::Provider(_)) => {
                ExitStatus::ProviderError
            }
            ExpectedError::Engine(e) => match e {
                E::Fleet(_) | E::PruneNotConfirmed { .. } => ExitStatus::InvalidInput,
                E::Lock(LockError::Held { .. }) | E::DaemonRunning { .. } => ExitStatus::LockHeld,
                E::Lock(LockError::Io { .. } | LockError::Unsafe(_))
                | E::Stuck { .. }
                | E::Unobserved { .. } => ExitStatus::ProviderError,
                E::NotConverged { .. } => ExitStatus::NotConverged,
                E::Interrupted => ExitStatus::Interrupted,
            },
        }
    }

    /// What to print on stderr: the error, then whatever helps act on it.
    pub fn display(&self, color: bool) -> String {
        use reconcile::Error as E;
        match self {
            ExpectedError::Fleet(e) | ExpectedError::Engine(E::Fleet(e)) => {
                output::diagnostic(e, color)
            }
            ExpectedError::Engine(E::Interrupted) => {
                "interrupted: no new action started; run the command again to go on\n"
                    .to_string()
            }
            ExpectedError::Engine(E::PruneNotConfirmed { pools }) => format!(
                "error: refusing to delete the VMs of removed pools ({}) without confirmation; \
                 run again with --yes\n",
                pools.join(", ")
            ),
            ExpectedError::Engine(E::NotConverged { why, remaining }) => {
                let mut out = format!("error: not converged: {why}\n");
                let waits: Vec<&Action> = remaining.iter().filter(|a| !a.is_mutating()).collect();
                if !remaining.is_empty() {
                    out.push_str("still waiting for:\n");
                    for a in remaining {
                        let _ = writeln!(out, "  {}", render::line(a, color));
                    }
                }
                let hint = match why {
                    NotConverged::WaitsOnOthers => {
                        "the daemon (`hangar reconcile --every`) or a later apply finishes it \
                         once they end"
                    }
                    _ if waits.len() == remaining.len() => {
                        "`hangar diff` shows what is left; apply again, or give a longer --wait"
                    }
                    _ => "`hangar diff` shows what is left",
                };
                let _ = writeln!(out, "{hint}");
                out
            }
            // Each failure was printed as it happened (`failed ...`): said
            // once, not again here.
            ExpectedError::Engine(E::Stuck { failures }) => format!(
                "error: {} action(s) failed (above) and none succeeded; fix the cause and run again\n",
                failures.len()
            ),
            ExpectedError::Engine(E::DaemonRunning { fleet, pid }) => format!(
                "error: a hangar daemon (pid {pid}) is reconciling fleet {fleet}: it would make \
                 again what destroy removes.\nStop it first (`kill -TERM {pid}`, or \
                 `systemctl stop` its unit), or run destroy with --force.\n"
            ),
            other => format!("error: {other}\n"),
        }
    }
}
