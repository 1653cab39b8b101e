//! Executing a plan: bounded concurrency per host and overall, safe ordering
//! inside each action, retries of idempotent hypervisor calls, and a report.
//! A failure of one action never stops the others.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::Serialize;
use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Clock, Provisioner, World};

use crate::model::credential::RunnerCredential;
use crate::model::names::ownership_label;
use crate::model::ownership::Ownership;
use crate::plan::model::{Action, Desired, Observed, Plan, RunnerRef, VmRef};
use crate::providers::{ProviderError, RemoveOutcome};
use crate::secret::Secret;

/// Concurrency limits of one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Actions in flight across the fleet.
    pub global: usize,
    /// Actions in flight on one host (libvirt copies and qemu starts are
    /// disk- and CPU-heavy).
    pub per_host: usize,
    /// Attempts of an idempotent hypervisor call that failed transiently.
    pub attempts: u32,
    /// First retry delay; doubles per attempt.
    #[serde(skip)]
    pub retry_base: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            global: 16,
            per_host: 4,
            attempts: 3,
            retry_base: Duration::from_secs(2),
        }
    }
}

/// What became of one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    Done,
    /// Not executed this pass, and why (a wait, a busy runner, shutdown).
    Skipped {
        why: String,
    },
    Failed {
        error: String,
        retryable: bool,
    },
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionOutcome {
    pub action: Action,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub millis: u64,
}

/// The report of one execution.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub outcomes: Vec<ActionOutcome>,
}

impl Report {
    pub fn done(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Done))
    }

    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed { .. }))
    }

    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped { .. }))
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|o| f(&o.outcome)).count()
    }

    pub fn failures(&self) -> impl Iterator<Item = &ActionOutcome> {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Failed { .. }))
    }
}

/// Progress events for the CLI (a progress bar on a TTY, lines otherwise).
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    Started(&'a Action),
    Finished(&'a ActionOutcome),
}

/// Everything an execution needs besides the plan.
pub struct Execution<'a> {
    pub world: &'a World,
    pub desired: &'a Desired,
    pub observed: &'a Observed,
    pub provisioner: &'a dyn Provisioner,
    pub clock: &'a dyn Clock,
    pub limits: Limits,
    /// Cancelled on SIGTERM: actions not yet started are skipped; started
    /// ones finish.
    pub cancel: CancellationToken,
    pub progress: &'a (dyn Fn(Progress<'_>) + Send + Sync),
}

/// Execute the plan's mutating actions; waits are reported as skipped.
pub async fn execute(ex: &Execution<'_>, plan: &Plan) -> Report {
    let global = Arc::new(Semaphore::new(ex.limits.global.max(1)));
    let per_host: BTreeMap<&str, Arc<Semaphore>> = ex
        .world
        .hosts
        .keys()
        .map(|h| {
            (
                h.as_str(),
                Arc::new(Semaphore::new(ex.limits.per_host.max(1))),
            )
        })
        .collect();
    // One registration token serves every persistent create of a pass (it is
    // valid for an hour); it is minted only if a pass creates such a VM.
    let token: OnceCell<Secret<String>> = OnceCell::new();

    // Actions on one subject run in plan order (the planner puts a moved
    // slot's delete before its create, a stale registration's removal before
    // the VM that reuses the name); different subjects run concurrently.
    let mut groups: Vec<Vec<&Action>> = Vec::new();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for action in &plan.actions {
        let i = *index.entry(action.subject()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(action);
    }
    let global = &global;
    let per_host = &per_host;
    let token = &token;
    let runs = groups.into_iter().map(|group| async move {
        let mut outcomes: Vec<ActionOutcome> = Vec::with_capacity(group.len());
        for action in group {
            // A create after a delete that did not happen would collide.
            if action.is_mutating()
                && outcomes
                    .iter()
                    .any(|o| o.action.is_mutating() && o.outcome != Outcome::Done)
            {
                outcomes.push(ActionOutcome {
                    action: action.clone(),
                    outcome: Outcome::Skipped {
                        why: "an earlier action on this slot did not complete".into(),
                    },
                    millis: 0,
                });
                continue;
            }
            let host_sem = action.host().and_then(|h| per_host.get(h).cloned());
            outcomes.push(one(ex, action, global, host_sem, token).await);
        }
        outcomes
    });
    let outcomes = join_all(runs).await.into_iter().flatten().collect();
    Report { outcomes }
}

async fn one(
    ex: &Execution<'_>,
    action: &Action,
    global: &Semaphore,
    host_sem: Option<Arc<Semaphore>>,
    token: &OnceCell<Secret<String>>,
) -> ActionOutcome {
    let started = Instant::now();
    let outcome = if let Action::Wait { reason, .. } = action {
        Outcome::Skipped {
            why: format!(
                "wait: {}",
                serde_json::to_string(reason).unwrap_or_default()
            ),
        }
    } else {
        // The host's permit first: an action waiting for a busy host must
        // not hold one of the fleet's permits that an idle host could use.
        let _h = match &host_sem {
            Some(s) => Some(s.acquire().await.expect("semaphore never closed")),
            None => None,
        };
        let _g = global.acquire().await.expect("semaphore never closed");
        if ex.cancel.is_cancelled() {
            Outcome::Skipped {
                why: "shutting down".into(),
            }
        } else {
            (ex.progress)(Progress::Started(action));
            run(ex, action, token).await
        }
    };
    let done = ActionOutcome {
        action: action.clone(),
        outcome,
        millis: started.elapsed().as_millis() as u64,
    };
    if action.is_mutating() {
        (ex.progress)(Progress::Finished(&done));
    }
    match &done.outcome {
        Outcome::Failed { error, .. } => {
            tracing::warn!(subject = action.subject(), %error, "action failed")
        }
        Outcome::Done => tracing::debug!(subject = action.subject(), "action done"),
        Outcome::Skipped { .. } => {}
    }
    done
}

fn failed(e: impl Into<ExecError>) -> Outcome {
    let e = e.into();
    Outcome::Failed {
        retryable: e.retryable,
        error: e.message,
    }
}

struct ExecError {
    message: String,
    retryable: bool,
}

impl From<ProviderError> for ExecError {
    fn from(e: ProviderError) -> Self {
        ExecError {
            retryable: e.is_retryable(),
            message: e.to_string(),
        }
    }
}

impl From<String> for ExecError {
    fn from(message: String) -> Self {
        ExecError {
            message,
            retryable: false,
        }
    }
}

async fn run(ex: &Execution<'_>, action: &Action, token: &OnceCell<Secret<String>>) -> Outcome {
    let result = match action {
        Action::Create {
            slot,
            host,
            generation,
            boot_failures,
            ..
        } => create(ex, slot, host, *generation, *boot_failures, token).await,
        Action::Start { vm } => {
            let hv = match hypervisor(ex, &vm.host) {
                Ok(hv) => hv,
                Err(e) => return failed(e),
            };
            retry(ex, || hv.start(vm)).await.map_err(ExecError::from)
        }
        Action::RemoveSeed { vm } => {
            let hv = match hypervisor(ex, &vm.host) {
                Ok(hv) => hv,
                Err(e) => return failed(e),
            };
            retry(ex, || hv.remove_seed(vm))
                .await
                .map_err(ExecError::from)
        }
        Action::Replace {
            vm,
            runner,
            next_generation,
            boot_failures,
            ..
        } => {
            match unregister_then_delete(ex, vm, runner.as_ref(), false).await {
                Ok(true) => {}
                Ok(false) => {
                    return Outcome::Skipped {
                        why: "runner is running a job".into(),
                    }
                }
                Err(e) => return failed(e),
            }
            create(
                ex,
                &vm.name,
                &vm.host,
                *next_generation,
                *boot_failures,
                token,
            )
            .await
        }
        Action::Delete { vm, runner, .. } => {
            match unregister_then_delete(ex, vm, runner.as_ref(), true).await {
                Ok(true) => Ok(()),
                Ok(false) => {
                    return Outcome::Skipped {
                        why: "runner is running a job".into(),
                    }
                }
                Err(e) => Err(e),
            }
        }
        Action::RemoveRunner { runner, .. } => match ex.world.registry.remove(runner.id).await {
            Ok(RemoveOutcome::Removed | RemoveOutcome::Gone) => Ok(()),
            Ok(RemoveOutcome::Busy) => {
                return Outcome::Skipped {
                    why: "runner is running a job".into(),
                }
            }
            Err(e) => Err(e.into()),
        },
        Action::Wait { .. } => unreachable!("waits are not executed"),
    };
    match result {
        Ok(()) => Outcome::Done,
        Err(e) => failed(e),
    }
}

fn hypervisor(
    ex: &Execution<'_>,
    host: &str,
) -> Result<Arc<dyn crate::providers::Hypervisor>, ExecError> {
    ex.world
        .hosts
        .get(host)
        .cloned()
        .ok_or_else(|| ExecError::from(format!("host {host} is not in the fleet")))
}

/// Remove the registration first (GitHub refuses while a job runs, which
/// aborts the whole action), then the VM. Returns `Ok(false)` when busy.
async fn unregister_then_delete(
    ex: &Execution<'_>,
    vm: &VmRef,
    runner: Option<&RunnerRef>,
    remove_cache: bool,
) -> Result<bool, ExecError> {
    let hv = hypervisor(ex, &vm.host)?;
    if let Some(r) = runner {
        match ex.world.registry.remove(r.id).await? {
            RemoveOutcome::Busy => return Ok(false),
            RemoveOutcome::Removed | RemoveOutcome::Gone => {}
        }
    }
    fault_point_reached("delete-before-vm");
    fail::fail_point!("delete-before-vm", |_| Err(ExecError::from(
        "fail point delete-before-vm".to_string()
    )));
    retry(ex, || hv.delete(vm, remove_cache)).await?;
    Ok(true)
}

async fn create(
    ex: &Execution<'_>,
    slot_name: &str,
    host: &str,
    generation: u64,
    boot_failures: u32,
    token: &OnceCell<Secret<String>>,
) -> Result<(), ExecError> {
    let slot = ex
        .desired
        .slot(slot_name)
        .ok_or_else(|| format!("slot {slot_name} is not in the desired state"))?;
    let hv = hypervisor(ex, host)?;
    let registry = &ex.world.registry;

    // A registration of ours left over under this name (a JIT runner whose VM
    // never came up) would make GitHub refuse the new one: remove it first.
    let label = ownership_label(&ex.desired.fleet);
    if let Some(runners) = ex.observed.runners.seen() {
        for r in runners
            .iter()
            .filter(|r| r.name == slot.name && r.labels.contains(&label))
        {
            if r.busy {
                return Err(format!("runner {} is busy", r.name).into());
            }
            registry.remove(r.id).await?;
        }
    }

    let credential = if slot.ephemeral {
        let mut labels = slot.labels.clone();
        labels.push(label);
        let jit = registry
            .jit_config(&slot.name, &labels, &slot.runner_group)
            .await?;
        fault_point_reached("after-jit-mint");
        fail::fail_point!("after-jit-mint", |_| Err(ExecError::from(
            "fail point after-jit-mint".to_string()
        )));
        RunnerCredential::Jit {
            runner_id: jit.runner_id,
            config: jit.config,
        }
    } else {
        let token = token
            .get_or_try_init(|| registry.registration_token())
            .await?;
        RunnerCredential::Registration {
            url: registry.registration_url(),
            token: token.clone(),
        }
    };

    let owner = Ownership {
        fleet: ex.desired.fleet.clone(),
        pool: slot.pool.clone(),
        slot: slot.name.clone(),
        index: slot.index,
        generation,
        spec_hash: slot.spec_hash.clone(),
        created_at: ex.clock.now(),
        ephemeral: slot.ephemeral,
        boot_failures,
        shape: slot.vm.clone(),
    };
    let vm = ex
        .provisioner
        .vm_create(slot, owner, &credential)
        .map_err(|e| e.to_string())?;
    let created = retry(ex, || hv.create(&vm)).await;
    if let Err(e) = created {
        // The minted JIT runner will never be used: give its name back.
        if let RunnerCredential::Jit { runner_id, .. } = credential {
            if let Err(cleanup) = registry.remove(runner_id).await {
                tracing::warn!(slot = %slot.name, error = %cleanup, "could not remove unused JIT runner");
            }
        }
        return Err(e.into());
    }
    Ok(())
}

/// Says on stderr that a configured fault point is reached (feature
/// `failpoints`; nothing without it), so that the reliability suite knows
/// where a process it kills stood.
fn fault_point_reached(name: &str) {
    #[cfg(feature = "failpoints")]
    if fail::list().iter().any(|(n, _)| n == name) {
        tracing::warn!(fault_point = name, "fault point reached");
    }
    let _ = name;
}

/// Retry an idempotent provider call on transient errors, with backoff.
async fn retry<F, Fut>(ex: &Execution<'_>, mut call: F) -> Result<(), ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), ProviderError>>,
{
    let mut delay = ex.limits.retry_base;
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.is_retryable() && attempt < ex.limits.attempts => {
                let wait = match e.kind {
                    crate::providers::ErrorKind::RateLimited { retry_after_secs } => {
                        delay.max(Duration::from_secs(retry_after_secs))
                    }
                    _ => delay,
                };
                tracing::debug!(error = %e, attempt, ?wait, "retrying");
                tokio::time::sleep(wait).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}
