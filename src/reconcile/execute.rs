//! Executing a plan: bounded concurrency per host and overall, safe ordering
//! inside each action, and a report.
//! A failure of one action never stops the others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use serde::Serialize;
use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;

use super::event::{Event, Events};
use super::{Clock, Provisioner, World};

use crate::model::credential::RunnerCredential;
use crate::model::names::ownership_label;
use crate::model::ownership::Ownership;
use crate::plan::model::{Action, DesiredSlot, ErrorKind, Failure, Plan, RunnerRef, VmRef};
use crate::providers::{Hypervisor, RemoveOutcome};
use crate::secret::Secret;

/// Concurrency limits of one pass. Retries are the providers' wrapper's
/// business ([`crate::providers::Retrying`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Actions in flight across the fleet.
    pub global: usize,
    /// Actions in flight on one host; `None`: each host's
    /// [`per_host_for_cpus`] of its cpus as last observed.
    pub per_host: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            global: 16,
            per_host: Some(4),
        }
    }
}

/// Mutations per host cpu by default: a mutation mostly waits (on qemu-img,
/// on a qemu starting or exiting: a destroy is 1.5-2 s of qemu's exit),
/// so a host serves several per cpu at once. On 2 cpus, 10 at once destroyed
/// 10 VMs in 2.4 s, one after another in 20 s.
pub const MUTATIONS_PER_CPU: usize = 5;
/// The default's ceiling: what libvirtd serves at once with its default
/// worker pool (`max_workers = 20`): on a local host twenty connections of
/// one work, on a remote one five of four.
pub const MAX_DEFAULT_PER_HOST: usize = 20;

/// A host's default mutation limit: [`MUTATIONS_PER_CPU`] per cpu, at
/// least that many (a host whose cpus are unknown counts as one), at most
/// [`MAX_DEFAULT_PER_HOST`].
pub fn per_host_for_cpus(cpus: Option<u32>) -> usize {
    let cpus = cpus.unwrap_or(1).max(1) as usize;
    (cpus * MUTATIONS_PER_CPU).min(MAX_DEFAULT_PER_HOST)
}

impl Limits {
    /// The limit of a host with `cpus`.
    pub fn for_host(&self, cpus: Option<u32>) -> usize {
        self.per_host
            .unwrap_or_else(|| per_host_for_cpus(cpus))
            .max(1)
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
        error: Failure,
    },
}

impl Outcome {
    /// A failure that the next pass may well not have.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Outcome::Failed { error } if error.is_retryable())
    }
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

    /// Actions done that change a slot (not a host's preparation for them:
    /// its network, its runner volume).
    pub fn slot_changes_done(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Done))
            .filter(|o| {
                !matches!(
                    o.action,
                    Action::EnsureNetwork { .. } | Action::EnsureRunnerVolume { .. }
                )
            })
            .count()
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

/// Everything an execution needs besides the plan.
pub struct Execution<'a> {
    pub world: &'a World,
    pub provisioner: &'a dyn Provisioner,
    pub clock: &'a dyn Clock,
    pub limits: Limits,
    /// Each host's cpus as the pass observed them (for the default
    /// per-host limit); a host not in it counts as one cpu.
    pub host_cpus: BTreeMap<String, u32>,
    /// Cancelled on SIGTERM: actions not yet started are skipped; started
    /// ones finish.
    pub cancel: CancellationToken,
    pub events: &'a dyn Events,
}

/// Execute the plan's mutating actions; waits are reported as skipped.
pub async fn execute(ex: &Execution<'_>, plan: &Plan) -> Report {
    let global = Arc::new(Semaphore::new(ex.limits.global.max(1)));
    let per_host: BTreeMap<&str, Arc<Semaphore>> = ex
        .world
        .hosts
        .keys()
        .map(|h| {
            let limit = ex.limits.for_host(ex.host_cpus.get(h).copied());
            (h.as_str(), Arc::new(Semaphore::new(limit)))
        })
        .collect();
    // One registration token serves every persistent create of a pass (it is
    // valid for an hour); it is minted only if a pass creates such a VM.
    let token: OnceCell<Secret<String>> = OnceCell::new();

    let global = &global;
    let per_host = &per_host;
    let token = &token;
    let host_sem = |action: &Action| action.host().and_then(|h| per_host.get(h).cloned());
    let skipped = |action: &Action, why: &str| ActionOutcome {
        action: action.clone(),
        outcome: Outcome::Skipped { why: why.into() },
        millis: 0,
    };

    // First the hosts' networks, which the VMs made next attach to.
    let ensures: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::EnsureNetwork { .. } | Action::EnsureRunnerVolume { .. }
            )
        })
        .collect();
    let mut outcomes: Vec<ActionOutcome> = join_all(
        ensures
            .into_iter()
            .map(|a| one(ex, a, global, host_sem(a), token)),
    )
    .await;
    let not_ready: Vec<String> = outcomes
        .iter()
        .filter(|o| o.outcome != Outcome::Done)
        .filter_map(|o| o.action.host().map(str::to_string))
        .collect();

    // Then everything else. Actions on one subject run in plan order (the
    // planner puts a moved slot's delete before its create, a stale
    // registration's removal before the VM that reuses the name); different
    // subjects run concurrently.
    let mut groups: Vec<Vec<&Action>> = Vec::new();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for action in plan.actions.iter().filter(|a| {
        !matches!(
            a,
            Action::EnsureNetwork { .. }
                | Action::EnsureRunnerVolume { .. }
                | Action::RemoveNetwork { .. }
        )
    }) {
        let i = *index.entry(action.subject()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(action);
    }
    let not_ready = &not_ready;
    let runs = groups.into_iter().map(|group| async move {
        let mut outcomes: Vec<ActionOutcome> = Vec::with_capacity(group.len());
        for action in group {
            // A create after a delete that did not happen would collide.
            if action.is_mutating()
                && outcomes
                    .iter()
                    .any(|o| o.action.is_mutating() && o.outcome != Outcome::Done)
            {
                outcomes.push(skipped(
                    action,
                    "an earlier action on this slot did not complete",
                ));
                continue;
            }
            if matches!(action, Action::Create { .. } | Action::Replace { .. })
                && action
                    .host()
                    .is_some_and(|h| not_ready.iter().any(|n| n == h))
            {
                outcomes.push(skipped(action, "the host's isolated network is not ready"));
                continue;
            }
            outcomes.push(one(ex, action, global, host_sem(action), token).await);
        }
        outcomes
    });
    let middle: Vec<ActionOutcome> = join_all(runs).await.into_iter().flatten().collect();

    // Last the networks of hosts whose VMs are all gone.
    let mut last = Vec::new();
    for action in plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::RemoveNetwork { .. }))
    {
        let held = middle.iter().any(|o| {
            o.action.host() == action.host() && o.action.is_mutating() && o.outcome != Outcome::Done
        });
        last.push(if held {
            skipped(action, "VMs of the fleet on this host were not all removed")
        } else {
            one(ex, action, global, host_sem(action), token).await
        });
    }
    outcomes.extend(middle);
    outcomes.extend(last);
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
            ex.events.emit(Event::ActionStarted {
                action: action.clone(),
            });
            let _under_way = super::under_way::begin(crate::plan::render::line(action, false));
            run(ex, action, token).await
        }
    };
    let done = ActionOutcome {
        action: action.clone(),
        outcome,
        millis: started.elapsed().as_millis() as u64,
    };
    if action.is_mutating() {
        ex.events.emit(Event::ActionFinished {
            outcome: done.clone(),
        });
    }
    match &done.outcome {
        Outcome::Failed { error, .. } => {
            // The event stream reports it (once); the log has it with -v.
            tracing::info!(subject = action.subject(), error = %error.message, "action failed")
        }
        Outcome::Done => tracing::debug!(subject = action.subject(), "action done"),
        Outcome::Skipped { .. } => {}
    }
    done
}

fn failed(e: impl Into<Failure>) -> Outcome {
    Outcome::Failed { error: e.into() }
}

fn busy() -> Outcome {
    Outcome::Skipped {
        why: "runner is running a job".into(),
    }
}

async fn run(ex: &Execution<'_>, action: &Action, token: &OnceCell<Secret<String>>) -> Outcome {
    let result = match action {
        Action::Create {
            slot,
            generation,
            boot_failures,
            ..
        } => create(ex, slot, *generation, *boot_failures, token).await,
        Action::Start { vm } => match hypervisor(ex, &vm.host) {
            Ok(hv) => hv.start(vm).await.map_err(Failure::from),
            Err(e) => Err(e),
        },
        Action::RemoveSeed { vm } => match hypervisor(ex, &vm.host) {
            Ok(hv) => hv.remove_seed(vm).await.map_err(Failure::from),
            Err(e) => Err(e),
        },
        // An undeliverable drain is recorded by the provider and is no
        // failure: the VM is then waited for while busy, as before drains.
        Action::Drain { vm, .. } => match hypervisor(ex, &vm.host) {
            Ok(hv) => hv.drain(vm).await.map(|_| ()).map_err(Failure::from),
            Err(e) => Err(e),
        },
        Action::Replace {
            vm,
            runner,
            slot,
            next_generation,
            boot_failures,
            ..
        } => {
            match unregister_then_delete(ex, vm, runner.as_ref(), false).await {
                Ok(true) => {}
                Ok(false) => return busy(),
                Err(e) => return failed(e),
            }
            create(ex, slot, *next_generation, *boot_failures, token).await
        }
        Action::Delete { vm, runner, .. } => {
            match unregister_then_delete(ex, vm, runner.as_ref(), true).await {
                Ok(true) => Ok(()),
                Ok(false) => return busy(),
                Err(e) => Err(e),
            }
        }
        Action::RemoveRunner { runner, .. } => match ex.world.registry.remove(runner.id).await {
            Ok(RemoveOutcome::Removed | RemoveOutcome::Gone) => Ok(()),
            Ok(RemoveOutcome::Busy) => return busy(),
            Err(e) => Err(e.into()),
        },
        Action::EnsureNetwork {
            host,
            network,
            filter,
        } => match hypervisor(ex, host) {
            Ok(hv) => hv
                .ensure_network(network, filter)
                .await
                .map_err(Failure::from),
            Err(e) => Err(e),
        },
        Action::EnsureRunnerVolume { host, runner } => match hypervisor(ex, host) {
            Ok(hv) => hv
                .ensure_runner_volume(&runner.volume, &runner.local)
                .await
                .map_err(Failure::from),
            Err(e) => Err(e),
        },
        Action::RemoveNetwork {
            host,
            network,
            filter,
        } => match hypervisor(ex, host) {
            Ok(hv) => hv
                .remove_network(network, filter)
                .await
                .map_err(Failure::from),
            Err(e) => Err(e),
        },
        Action::RemoveLeftover { host, leftover } => match hypervisor(ex, host) {
            Ok(hv) => hv.remove_leftover(leftover).await.map_err(Failure::from),
            Err(e) => Err(e),
        },
        Action::Wait { .. } => unreachable!("waits are not executed"),
    };
    match result {
        Ok(()) => Outcome::Done,
        Err(e) => failed(e),
    }
}

fn hypervisor(ex: &Execution<'_>, host: &str) -> Result<Arc<dyn Hypervisor>, Failure> {
    ex.world.hosts.get(host).cloned().ok_or_else(|| {
        Failure::new(
            ErrorKind::Refused,
            format!("host {host} is not in the fleet"),
        )
    })
}

/// Remove the registration first (GitHub refuses while a job runs, which
/// aborts the whole action), then the VM. Returns `Ok(false)` when busy.
async fn unregister_then_delete(
    ex: &Execution<'_>,
    vm: &VmRef,
    runner: Option<&RunnerRef>,
    remove_cache: bool,
) -> Result<bool, Failure> {
    let hv = hypervisor(ex, &vm.host)?;
    if let Some(r) = runner {
        match ex.world.registry.remove(r.id).await? {
            RemoveOutcome::Busy => return Ok(false),
            RemoveOutcome::Removed | RemoveOutcome::Gone => {}
        }
    }
    fault_point_reached("delete-before-vm");
    fail::fail_point!("delete-before-vm", |_| Err(Failure::new(
        ErrorKind::Refused,
        "fail point delete-before-vm"
    )));
    hv.delete(vm, remove_cache).await?;
    Ok(true)
}

/// Mint the slot's credential, then make its VM. A registration left under
/// the slot's name, or one this create mints and then cannot use, is not
/// cleaned up here: the next plan sees a registration of ours without a VM
/// and removes it (the planner's orphan rule) before it creates the slot.
async fn create(
    ex: &Execution<'_>,
    slot: &DesiredSlot,
    generation: u64,
    boot_failures: u32,
    token: &OnceCell<Secret<String>>,
) -> Result<(), Failure> {
    let hv = hypervisor(ex, &slot.host)?;
    let registry = &ex.world.registry;
    let credential = if slot.ephemeral {
        let mut labels = slot.labels.clone();
        labels.push(ownership_label(&ex.world.fleet));
        let jit = registry
            .jit_config(&slot.name, &labels, &slot.runner_group)
            .await?;
        fault_point_reached("after-jit-mint");
        fail::fail_point!("after-jit-mint", |_| Err(Failure::new(
            ErrorKind::Refused,
            "fail point after-jit-mint"
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
        fleet: ex.world.fleet.clone(),
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
        .map_err(|e| Failure::new(ErrorKind::Refused, e.to_string()))?;
    hv.create(&vm).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_per_host_limit_is_five_per_cpu_up_to_twenty() {
        for (cpus, limit) in [
            (None, 5),
            (Some(0), 5),
            (Some(1), 5),
            (Some(2), 10),
            (Some(3), 15),
            (Some(4), 20),
            (Some(64), 20),
        ] {
            assert_eq!(per_host_for_cpus(cpus), limit, "{cpus:?} cpus");
        }
        let fixed = Limits {
            global: 8,
            per_host: Some(2),
        };
        assert_eq!(fixed.for_host(Some(64)), 2);
        let by_cpus = Limits {
            global: 8,
            per_host: None,
        };
        assert_eq!(by_cpus.for_host(Some(2)), 10);
    }
}
