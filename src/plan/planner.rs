//! The planner: `plan(desired, observed, now)` and `destroy(fleet, observed, force)`.
//!
//! Both are pure functions of their inputs (time is injected), so every rule
//! below is a table test and the whole is a property test. The rules, in the
//! order a slot meets them:
//!
//! * Ownership: a VM is ours when its ownership metadata names this fleet and
//!   it was listed under the host it claims; a runner is ours when its name
//!   is a slot name of this fleet *and* it carries [`ownership_label`].
//! * A failed list is not an empty list: a host missing from the observation
//!   counts as failed. Slots on a failed host get only a wait. When GitHub's
//!   list failed, nothing destructive is planned anywhere (not even removing a
//!   seed, which needs the runner seen up); creates and starts go ahead.
//! * Drain: a busy persistent runner whose VM is due to be replaced or
//!   deleted is told once (`Drain`) to take no job after its current one;
//!   then it is waited for (`Draining`) until idle. Undeliverable: a plain
//!   wait while busy, as for an ephemeral runner.
//! * Busy means GitHub says busy, or the guest printed its job-started marker
//!   while the VM can still run it (GitHub's flag lags). A busy runner's VM is
//!   never replaced or deleted; the plan says what waits for the job.
//! * A slot's VM is the newest generation on the slot's host; older ones
//!   there are duplicates. VMs of the slot on other hosts are deleted; when
//!   the slot has no VM on its host yet, the delete and the create are
//!   planned together, the delete first within the subject: the old VM holds
//!   the runner name the new one must register under, so make-before-break
//!   would collide.
//! * Boot: a VM "came up" once its seed is gone (removed after the runner was
//!   seen up) or the guest reported the runner started. Until then it gets
//!   `boot_timeout`, plus the crash-loop backoff after earlier failed boots.
//!   "Up" means online or busy for both kinds: a JIT registration exists,
//!   offline, from the moment its config is minted, so being registered says
//!   nothing about an ephemeral boot.
//! * A registration of ours with no VM on any host (all hosts seen): removed
//!   when offline and idle; waited for when busy or online (its VM is
//!   somewhere we cannot see). GitHub gives no timestamps; the engine
//!   remembers when it first saw each runner offline (`offline_since`), and a
//!   persistent runner offline past `offline_timeout` is replaced.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::model::{
    Action, CreateReason, DeleteReason, Desired, DesiredSlot, DrainState, ErrorKind, Failure,
    FieldChange, Leftover, Observation, Observed, ObservedHost, ObservedRunner, ObservedVm, Plan,
    Policy, RemoveRunnerReason, ReplaceReason, RunnerStatus, RunnerVolume, VmState, WaitReason,
};

use super::model::BOOT_CAP_FACTOR;
use super::render::bytes;
use crate::model::guest::GuestStage;
use crate::model::names::parse_slot_name;

use crate::model::ownership::VmShape;

/// Subject of the wait emitted when GitHub's runner list failed.
pub const GITHUB_SUBJECT: &str = "github";

const WHAT_GITHUB: &str = "GitHub runners";

/// Plan the actions that make `observed` equal to `desired` at `now`.
pub fn plan(desired: &Desired, observed: &Observed, now: DateTime<Utc>) -> Plan {
    let world = Ours::new(&desired.fleet, observed, &desired.hosts);
    let mut planner = Planner {
        world: &world,
        policy: &desired.policy,
        now,
        actions: Vec::new(),
    };

    for slot in &desired.slots {
        planner.slot(slot);
    }
    // A set, not `desired.slot()` (a scan) per VM and runner: that made a
    // pass quadratic in the fleet's size.
    let wanted: HashSet<&str> = desired.slots.iter().map(|s| s.name.as_str()).collect();
    for (name, vms) in &world.vms {
        if !wanted.contains(name) {
            let pool = &vms[0].owner.pool;
            let reason = if desired.pools.iter().any(|p| p == pool) {
                DeleteReason::ScaledDown
            } else {
                DeleteReason::PoolRemoved
            };
            planner.delete_all(vms, true, reason);
        }
    }
    if let Some(runners) = &world.runners {
        for (name, runner) in &runners.owned {
            if !world.vms.contains_key(name) && !wanted.contains(name) {
                planner.orphan(runner, true);
            }
        }
    }
    // Slots the queue asks for that no host has room for: the plan says so,
    // naming the jobs that wait.
    for wait in &desired.no_room {
        planner.actions.push(Action::Wait {
            subject: wait.slot.clone(),
            reason: WaitReason::NoCapacity {
                hosts: wait.hosts.clone(),
                jobs: wait.jobs.clone(),
            },
        });
    }
    planner.scope_waits(|host| desired.slots.iter().any(|s| s.host == host));
    let mut actions =
        super::room::room_waits(desired, observed, without_runner_waits(planner.actions));
    let ours = |slot: &str| is_our_slot(&world, &desired.fleet, &desired.pools, slot);
    host_actions(
        observed,
        &mut actions,
        |host| desired.slots.iter().any(|s| s.host == host),
        ours,
        |host, volume| {
            desired
                .slots
                .iter()
                .any(|s| s.host == host && s.runner.as_ref().is_some_and(|r| r.volume == volume))
        },
    );
    finish(&desired.fleet, actions)
}

/// A create or replace whose slot's runner release is not at hand waits
/// instead: what runs stays (the replaced VM too), nothing new is made.
fn without_runner_waits(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .map(|a| match &a {
            Action::Create { slot, .. } | Action::Replace { slot, .. } => {
                match &slot.runner_unavailable {
                    Some(error) => Action::Wait {
                        subject: slot.name.clone(),
                        reason: WaitReason::RunnerUnavailable {
                            error: error.clone(),
                        },
                    },
                    None => a,
                }
            }
            _ => a,
        })
        .collect()
}

/// Whether a leftover named for `slot` is this fleet's: its pool is one of
/// the file's, or a VM or registration of ours has its name. A name alone
/// could be another fleet's whose name starts like ours (`t` and `t-x`).
fn is_our_slot(world: &Ours<'_>, fleet: &str, pools: &[String], slot: &str) -> bool {
    parse_slot_name(fleet, slot).is_some_and(|(pool, _)| pools.iter().any(|p| p == pool))
        || world.vms.contains_key(slot)
        || world.owned_runner(slot).is_some()
}

/// Per observed host: the fleet's network ensured where a slot needs it and
/// it is missing, or where a VM is about to be made (ensuring is cheap and
/// catches a network changed by hand); leftovers removed, except a volume
/// of the very generation a create of this plan adopts and a cache volume.
fn host_actions(
    observed: &Observed,
    actions: &mut Vec<Action>,
    has_slots: impl Fn(&str) -> bool,
    ours: impl Fn(&str) -> bool,
    wants_runner: impl Fn(&str, &str) -> bool,
) {
    let mut creates: HashSet<(&str, &str, u64)> = HashSet::new();
    for a in actions.iter() {
        match a {
            Action::Create {
                slot, generation, ..
            } => {
                creates.insert((slot.host.as_str(), slot.name.as_str(), *generation));
            }
            Action::Replace {
                slot,
                next_generation,
                ..
            } => {
                creates.insert((slot.host.as_str(), slot.name.as_str(), *next_generation));
            }
            _ => {}
        }
    }
    let mut extra = Vec::new();
    // Every seen host: one with nothing besides VMs to report has no
    // `host_state` entry, and still needs what its creates install.
    let nothing = ObservedHost::default();
    for host in observed.hosts.keys() {
        if !matches!(observed.hosts.get(host), Some(Observation::Seen { .. })) {
            continue;
        }
        let state = observed.host_state.get(host).unwrap_or(&nothing);
        if let Some(net) = &state.network {
            let creating = creates.iter().any(|(h, _, _)| h == host);
            if (!net.present && has_slots(host)) || creating {
                extra.push(Action::EnsureNetwork {
                    host: host.clone(),
                    network: net.network.clone(),
                    filter: net.filter.clone(),
                });
            }
        }
        // The runner tarballs this pass's creates here install, each
        // uploaded once before them.
        let mut runners: Vec<&RunnerVolume> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Create { slot, .. } | Action::Replace { slot, .. }
                    if &slot.host == host =>
                {
                    slot.runner.as_ref()
                }
                _ => None,
            })
            .filter(|r| !state.runner_volumes.contains(&r.volume))
            .collect();
        runners.sort();
        runners.dedup();
        for r in runners {
            extra.push(Action::EnsureRunnerVolume {
                host: host.clone(),
                runner: r.clone(),
            });
        }
        for l in &state.leftovers {
            match l {
                // Reported only for this fleet's; kept while the file's
                // slots here still install that release.
                Leftover::RunnerVolume { name } => {
                    if wants_runner(host, name) {
                        continue;
                    }
                }
                Leftover::Volume {
                    slot, generation, ..
                } => {
                    if !ours(slot) || creates.contains(&(host.as_str(), slot.as_str(), *generation))
                    {
                        continue;
                    }
                }
                // A cache outlives its VMs: only `destroy` removes one.
                Leftover::Cache { .. } => continue,
                Leftover::ConsoleLog { slot, .. } => {
                    if !ours(slot) {
                        continue;
                    }
                }
            }
            extra.push(Action::RemoveLeftover {
                host: host.clone(),
                leftover: l.clone(),
            });
        }
    }
    actions.extend(extra);
}

/// Plan the removal of everything `fleet` owns: every VM (with its volumes
/// and registration), every registration, leftovers of the file's `pools`
/// (and of slots seen), and, once no VM is left on a host, the fleet's
/// network there. Busy runners are waited for unless `force`; where an
/// observation failed nothing is removed at all.
pub fn destroy(fleet: &str, pools: &[String], observed: &Observed, force: bool) -> Plan {
    let world = Ours::new(fleet, observed, &[]);
    let mut actions = Vec::new();
    let known = world.runners.is_some();
    for (name, vms) in &world.vms {
        let runner = world.owned_runner(name);
        let carrier = vms.len() - 1;
        for (i, vm) in vms.iter().enumerate() {
            let action = if is_busy(vm, runner) && !force {
                busy_wait(&vm.name, "delete")
            } else if !known {
                github_wait(&vm.name, &world)
            } else {
                Action::Delete {
                    vm: vm.vm_ref(),
                    runner: runner
                        .filter(|_| i == carrier)
                        .map(ObservedRunner::runner_ref),
                    reason: DeleteReason::Destroy,
                }
            };
            actions.push(action);
        }
    }
    if let Some(runners) = &world.runners {
        for (name, runner) in &runners.owned {
            if world.vms.contains_key(name) {
                continue;
            }
            let action = if let Some((host, error)) = world.failed_hosts.iter().next() {
                host_wait(name, host, error)
            } else if runner.busy && !force {
                busy_wait(name, "remove the registration")
            } else {
                Action::RemoveRunner {
                    runner: runner.runner_ref(),
                    reason: RemoveRunnerReason::Destroy,
                }
            };
            actions.push(action);
        }
    }
    for (host, error) in &world.failed_hosts {
        actions.push(host_wait(host, host, error));
    }
    // The network goes last, once no VM of the fleet is left on its host
    // (the executor runs it after the deletes, and only if they all went).
    for (host, state) in &observed.host_state {
        if world.failed_hosts.contains_key(host.as_str()) {
            continue;
        }
        for l in state.leftovers.iter().filter(|l| {
            l.slot()
                .is_none_or(|slot| is_our_slot(&world, fleet, pools, slot))
        }) {
            actions.push(Action::RemoveLeftover {
                host: host.clone(),
                leftover: l.clone(),
            });
        }
        let Some(net) = state.network.as_ref().filter(|n| n.present) else {
            continue;
        };
        let held = actions.iter().any(|a| match a {
            Action::Wait { subject, .. } => world
                .vms
                .get(subject.as_str())
                .is_some_and(|vms| vms.iter().any(|vm| vm.host == *host)),
            _ => false,
        });
        if !held {
            actions.push(Action::RemoveNetwork {
                host: host.clone(),
                network: net.network.clone(),
                filter: net.filter.clone(),
            });
        }
    }
    if let Some(error) = world.runner_error {
        actions.push(Action::Wait {
            subject: GITHUB_SUBJECT.to_string(),
            reason: WaitReason::ObservationFailed {
                what: WHAT_GITHUB.to_string(),
                error: (*error).clone(),
            },
        });
    }
    finish(fleet, actions)
}

/// The observation, reduced to what this fleet owns.
struct Ours<'a> {
    /// Hosts whose observation failed or is missing, with the error.
    failed_hosts: BTreeMap<&'a str, Failure>,
    /// Our VMs on hosts that were seen, by name, oldest generation first.
    /// Hashed: looked up once per slot, and `finish` orders the actions, so
    /// iteration order never shows (a tree's pointer-chasing string
    /// compares made planning grow faster than the fleet).
    vms: HashMap<&'a str, Vec<&'a ObservedVm>>,
    /// `None` when GitHub's list failed.
    runners: Option<Runners<'a>>,
    runner_error: Option<&'a Failure>,
    /// Per host, names held by domains that are not ours.
    foreign_names: &'a BTreeMap<String, std::collections::BTreeSet<String>>,
}

struct Runners<'a> {
    owned: HashMap<&'a str, &'a ObservedRunner>,
    foreign: HashMap<&'a str, &'a ObservedRunner>,
}

impl<'a> Ours<'a> {
    fn new(fleet: &str, observed: &'a Observed, expected_hosts: &'a [String]) -> Ours<'a> {
        let mut failed_hosts = BTreeMap::new();
        let seen = observed
            .hosts
            .values()
            .map(|o| o.seen().map_or(0, |v| v.len()))
            .sum();
        let mut vms: HashMap<&str, Vec<&ObservedVm>> = HashMap::with_capacity(seen);
        for (host, observation) in &observed.hosts {
            match observation {
                Observation::Failed { error } => {
                    failed_hosts.insert(host.as_str(), error.clone());
                }
                Observation::Seen { items } => {
                    // A VM listed under another host than it claims would let
                    // an action reach a host whose observation failed.
                    let ours = items.iter().filter(|vm| {
                        vm.owner.fleet == fleet && vm.host == *host && vm.owner.slot == vm.name
                    });
                    for vm in ours {
                        vms.entry(vm.name.as_str()).or_default().push(vm);
                    }
                }
            }
        }
        for host in expected_hosts {
            if !observed.hosts.contains_key(host) {
                failed_hosts.insert(
                    host.as_str(),
                    Failure::new(ErrorKind::Transient, "missing from the observation"),
                );
            }
        }
        for list in vms.values_mut() {
            list.sort_by(|a, b| {
                (a.owner.generation, &a.uuid, &a.host).cmp(&(b.owner.generation, &b.uuid, &b.host))
            });
        }

        let (runners, runner_error) = match &observed.runners {
            Observation::Failed { error } => (None, Some(error)),
            Observation::Seen { items } => {
                let mut owned: HashMap<&str, &ObservedRunner> = HashMap::with_capacity(items.len());
                let mut foreign: HashMap<&str, &ObservedRunner> = HashMap::new();
                for runner in items {
                    let map = if runner.is_owned_by(fleet) {
                        &mut owned
                    } else {
                        &mut foreign
                    };
                    // GitHub keeps names unique in a scope; should it not,
                    // the busiest registration stands for the name so the
                    // busy guard errs on the safe side.
                    let slot = map.entry(runner.name.as_str()).or_insert(runner);
                    if runner_rank(runner) > runner_rank(slot) {
                        *slot = runner;
                    }
                }
                (Some(Runners { owned, foreign }), None)
            }
        };
        Ours {
            failed_hosts,
            vms,
            runners,
            runner_error,
            foreign_names: &observed.foreign_names,
        }
    }

    fn owned_runner(&self, name: &str) -> Option<&'a ObservedRunner> {
        self.runners.as_ref()?.owned.get(name).copied()
    }
}

fn runner_rank(r: &ObservedRunner) -> (bool, bool, std::cmp::Reverse<u64>) {
    (
        r.busy,
        r.status == RunnerStatus::Online,
        std::cmp::Reverse(r.id),
    )
}

struct Planner<'w, 'a> {
    world: &'w Ours<'a>,
    policy: &'w Policy,
    now: DateTime<Utc>,
    actions: Vec<Action>,
}

impl Planner<'_, '_> {
    fn slot(&mut self, slot: &DesiredSlot) {
        let world = self.world;
        if let Some(error) = world.failed_hosts.get(slot.host.as_str()) {
            self.actions.push(host_wait(&slot.name, &slot.host, error));
            return;
        }
        let runner = world.owned_runner(&slot.name);
        if let (Some(runners), None) = (&world.runners, runner) {
            if let Some(foreign) = runners.foreign.get(slot.name.as_str()) {
                self.actions.push(Action::Wait {
                    subject: slot.name.clone(),
                    reason: WaitReason::NameTaken {
                        runner_id: foreign.id,
                    },
                });
                return;
            }
        }

        let vms: &[&ObservedVm] = world.vms.get(slot.name.as_str()).map_or(&[], Vec::as_slice);
        let next_generation = vms.iter().map(|vm| vm.owner.generation).max().unwrap_or(0) + 1;
        // The newest VM on the slot's host stands for the slot; older ones
        // there are duplicates, ones on other hosts are moved away. (No
        // partition into vectors: that was two allocations per slot.)
        let here = |vm: &&ObservedVm| vm.host == slot.host;
        if let Some(kept) = vms.iter().rposition(here) {
            for (_, vm) in vms
                .iter()
                .enumerate()
                .filter(|(i, vm)| *i != kept && here(vm))
            {
                self.delete(vm, runner, false, DeleteReason::Duplicate);
            }
            for vm in vms.iter().filter(|vm| !here(vm)) {
                self.delete(vm, runner, false, DeleteReason::HostRemoved);
            }
            self.kept(slot, vms[kept], runner, next_generation);
            return;
        }
        // None is on the slot's host: every one is elsewhere.
        let elsewhere = vms;

        if world
            .foreign_names
            .get(&slot.host)
            .is_some_and(|names| names.contains(&slot.name))
        {
            self.actions.push(Action::Wait {
                subject: slot.name.clone(),
                reason: WaitReason::DomainNameTaken {
                    host: slot.host.clone(),
                },
            });
            return;
        }
        let create = Action::Create {
            slot: slot.clone(),
            generation: next_generation,
            boot_failures: 0,
            reason: CreateReason::Missing,
        };
        if !elsewhere.is_empty() {
            if self.delete_all(elsewhere, true, DeleteReason::HostRemoved) {
                self.actions.push(create);
            }
            return;
        }
        match runner {
            // Neither GitHub nor every host could be seen: the slot's VM may
            // be on the unseen host, and no registration can tell.
            None if world.runners.is_none() && !world.failed_hosts.is_empty() => {
                if let Some((host, error)) = world.failed_hosts.iter().next() {
                    self.actions.push(host_wait(&slot.name, host, error));
                }
            }
            // No registration: nothing to collide with.
            None => self.actions.push(create),
            Some(runner) => {
                // The registration may belong to a VM on a host we cannot see.
                if let Some((host, error)) = world.failed_hosts.iter().next() {
                    self.actions.push(host_wait(&slot.name, host, error));
                } else if self.orphan(runner, false) {
                    self.actions.push(create);
                }
            }
        }
    }

    /// Rules for the VM that stands for a desired slot on the slot's host.
    fn kept(
        &mut self,
        slot: &DesiredSlot,
        vm: &ObservedVm,
        runner: Option<&ObservedRunner>,
        next_generation: u64,
    ) {
        let world = self.world;
        let failures = vm.owner.boot_failures;
        let replace = |reason: ReplaceReason, boot_failures: u32| Action::Replace {
            vm: vm.vm_ref(),
            runner: runner.map(ObservedRunner::runner_ref),
            slot: slot.clone(),
            next_generation,
            boot_failures,
            reason,
        };
        let guarded = |reason: ReplaceReason, boot_failures: u32| {
            if is_busy(vm, runner) {
                drain_or_wait(vm, "replace")
            } else if world.runners.is_none() {
                github_wait(&vm.name, world)
            } else {
                replace(reason, boot_failures)
            }
        };

        if vm.owner.spec_hash != slot.spec_hash {
            let changes = shape_changes(&vm.owner.shape, &slot.vm);
            self.actions
                .push(guarded(ReplaceReason::SpecChanged { changes }, 0));
            return;
        }
        if vm.state == VmState::Crashed || vm.guest == Some(GuestStage::Failed) {
            let until = after(vm.owner.created_at, self.backoff(failures));
            let action = if failures > 0 && self.now < until {
                Action::Wait {
                    subject: vm.name.clone(),
                    reason: WaitReason::Backoff { until, failures },
                }
            } else {
                guarded(ReplaceReason::Broken, failures.saturating_add(1))
            };
            self.actions.push(action);
            return;
        }
        match vm.state {
            VmState::ShutOff if vm.owner.ephemeral => {
                // Never restarted: its JIT config is spent.
                self.actions.push(guarded(ReplaceReason::JobDone, 0));
            }
            VmState::ShutOff => {
                // A persistent runner whose registration is gone cannot come
                // back by booting; its VM is rebuilt instead.
                let deregistered = self.world.runners.is_some() && runner.is_none();
                let action = if came_up(vm) && deregistered {
                    guarded(ReplaceReason::RunnerOffline, 0)
                } else {
                    Action::Start { vm: vm.vm_ref() }
                };
                self.actions.push(action);
            }
            VmState::Running => {
                if self.world.runners.is_none() {
                    // Covered by the scope-wide wait: up or not is unknown.
                    return;
                }
                let up = runner.is_some_and(|r| r.status == RunnerStatus::Online || r.busy);
                if up {
                    if vm.seed_attached {
                        self.actions.push(Action::RemoveSeed { vm: vm.vm_ref() });
                    }
                } else if !came_up(vm) {
                    let action = self.booting(vm, failures, &replace);
                    self.actions.push(action);
                } else if is_busy(vm, runner) {
                    self.actions.push(busy_wait(&vm.name, "replace"));
                } else {
                    let action = match runner {
                        // GitHub drops an ephemeral registration after its job.
                        None if vm.owner.ephemeral => replace(ReplaceReason::JobDone, 0),
                        // The guest says its runner started, but hangar never
                        // saw it up (the seed is still there): its
                        // registration may not be listed yet. That is still
                        // booting, bounded by the boot timeout.
                        None if vm.seed_attached => self.booting(vm, failures, &replace),
                        None => replace(ReplaceReason::RunnerOffline, 0),
                        Some(r) => match r.offline_since {
                            Some(since) => {
                                let deadline = after(since, self.policy.offline_timeout);
                                if self.now >= deadline {
                                    replace(ReplaceReason::RunnerOffline, 0)
                                } else {
                                    Action::Wait {
                                        subject: vm.name.clone(),
                                        reason: WaitReason::RunnerOffline {
                                            deadline: Some(deadline),
                                        },
                                    }
                                }
                            }
                            None => Action::Wait {
                                subject: vm.name.clone(),
                                reason: WaitReason::RunnerOffline { deadline: None },
                            },
                        },
                    };
                    self.actions.push(action);
                }
            }
            // Paused by someone, or in passing (shutting down): not ours to
            // second-guess this pass. Crashed was handled above.
            VmState::Paused | VmState::Other | VmState::Crashed => {}
        }
    }

    /// A running VM whose runner never came up.
    fn booting(
        &self,
        vm: &ObservedVm,
        failures: u32,
        replace: &dyn Fn(ReplaceReason, u32) -> Action,
    ) -> Action {
        let created = vm.owner.created_at;
        let deadline = boot_deadline(vm, self.policy);
        if self.now <= deadline {
            return Action::Wait {
                subject: vm.name.clone(),
                reason: WaitReason::Booting { deadline },
            };
        }
        if failures > 0 {
            let until = after(deadline, self.backoff(failures));
            if self.now < until {
                return Action::Wait {
                    subject: vm.name.clone(),
                    reason: WaitReason::Backoff { until, failures },
                };
            }
        }
        let waited = (self.now - created).to_std().unwrap_or(Duration::ZERO);
        replace(
            ReplaceReason::BootTimeout { waited },
            failures.saturating_add(1),
        )
    }

    /// `min(base * 2^(failures-1), max)`.
    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(63);
        self.policy
            .backoff_base
            .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX)
            .min(self.policy.backoff_max)
    }

    /// Delete `vms` (one slot name, oldest first); the newest carries the
    /// registration when `with_runner`. Returns whether all were deleted.
    fn delete_all(&mut self, vms: &[&ObservedVm], with_runner: bool, reason: DeleteReason) -> bool {
        let runner = vms.first().and_then(|vm| self.world.owned_runner(&vm.name));
        let mut all = true;
        for (i, vm) in vms.iter().enumerate() {
            let carries = with_runner && i + 1 == vms.len();
            all &= self.delete(vm, runner, carries, reason.clone());
        }
        all
    }

    fn delete(
        &mut self,
        vm: &ObservedVm,
        runner: Option<&ObservedRunner>,
        carries_runner: bool,
        reason: DeleteReason,
    ) -> bool {
        // The registration is per name, so a busy one may be any of the
        // name's VMs: all of them wait.
        let action = if is_busy(vm, runner) {
            drain_or_wait(vm, "delete")
        } else if self.world.runners.is_none() {
            github_wait(&vm.name, self.world)
        } else {
            Action::Delete {
                vm: vm.vm_ref(),
                runner: runner
                    .filter(|_| carries_runner)
                    .map(ObservedRunner::runner_ref),
                reason,
            }
        };
        let deleted = matches!(action, Action::Delete { .. });
        self.actions.push(action);
        deleted
    }

    /// A registration of ours without any VM. Returns whether it is removed.
    /// A registration of ours with no VM anywhere. With `grace` (its slot is
    /// not wanted), it is removed only once it has been offline for
    /// `orphanGrace`, counted from when hangar first saw it offline; a
    /// wanted slot's stale registration goes at once, so that its VM can be
    /// made again under that name.
    fn orphan(&mut self, runner: &ObservedRunner, grace: bool) -> bool {
        let grace_until = runner
            .offline_since
            .filter(|_| grace)
            .map(|since| after(since, self.policy.orphan_grace))
            .filter(|until| *until > self.now);
        let action = if let Some((host, error)) = self.world.failed_hosts.iter().next() {
            host_wait(&runner.name, host, error)
        } else if runner.busy {
            busy_wait(&runner.name, "remove the registration")
        } else if runner.status == RunnerStatus::Online {
            Action::Wait {
                subject: runner.name.clone(),
                reason: WaitReason::OrphanOnline {
                    runner_id: runner.id,
                },
            }
        } else if let Some(until) = grace_until {
            Action::Wait {
                subject: runner.name.clone(),
                reason: WaitReason::Grace { until },
            }
        } else {
            Action::RemoveRunner {
                runner: runner.runner_ref(),
                reason: RemoveRunnerReason::NoVm,
            }
        };
        let removed = matches!(action, Action::RemoveRunner { .. });
        self.actions.push(action);
        removed
    }

    /// One wait per failed scope that no slot's wait already names.
    fn scope_waits(&mut self, has_slots: impl Fn(&str) -> bool) {
        for (host, error) in &self.world.failed_hosts {
            if !has_slots(host) {
                self.actions.push(host_wait(host, host, error));
            }
        }
        if let Some(error) = self.world.runner_error {
            self.actions.push(Action::Wait {
                subject: GITHUB_SUBJECT.to_string(),
                reason: WaitReason::ObservationFailed {
                    what: WHAT_GITHUB.to_string(),
                    error: error.clone(),
                },
            });
        }
    }
}

/// Busy: GitHub says so, or the guest started a job and can still be
/// running it (the job-started marker stays the newest stage until the job
/// ends; a powered-off or crashed guest runs nothing).
pub fn is_busy(vm: &ObservedVm, runner: Option<&ObservedRunner>) -> bool {
    runner.is_some_and(|r| r.busy)
        || (vm.guest == Some(GuestStage::JobStarted)
            && !matches!(vm.state, VmState::ShutOff | VmState::Crashed))
}

/// The runner was up at some point: its seed was removed (only done once
/// the runner is seen up) or the guest reported it started.
fn came_up(vm: &ObservedVm) -> bool {
    !vm.seed_attached
        || matches!(
            vm.guest,
            Some(
                GuestStage::RunnerStarted
                    | GuestStage::JobStarted
                    | GuestStage::JobFinished
                    | GuestStage::Drained
            )
        )
}

/// The boot timeout counts from the last stage the guest reached (from
/// creation before any), capped at [`BOOT_CAP_FACTOR`] timeouts after
/// creation.
fn boot_deadline(vm: &ObservedVm, policy: &Policy) -> DateTime<Utc> {
    let created = vm.owner.created_at;
    let progressed = vm
        .guest_since
        .filter(|_| vm.guest.is_some_and(|g| g != GuestStage::Booting))
        .map_or(created, |since| since.max(created));
    let cap = after(created, policy.boot_timeout.saturating_mul(BOOT_CAP_FACTOR));
    after(progressed, policy.boot_timeout).min(cap)
}

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A busy VM that is due to be replaced or deleted (`then`): a persistent
/// runner is told to drain (it would take job after job otherwise), once;
/// then it is waited for. An ephemeral one takes no other job anyway, and
/// a drain that could not be delivered leaves the plain wait while busy.
fn drain_or_wait(vm: &ObservedVm, then: &str) -> Action {
    if vm.owner.ephemeral || vm.state != VmState::Running {
        return busy_wait(&vm.name, then);
    }
    match vm.drain {
        None => Action::Drain {
            vm: vm.vm_ref(),
            then: then.to_string(),
        },
        Some(DrainState::Delivered) => Action::Wait {
            subject: vm.name.clone(),
            reason: WaitReason::Draining {
                then: then.to_string(),
            },
        },
        Some(DrainState::Undeliverable) => busy_wait(&vm.name, then),
    }
}

fn busy_wait(subject: &str, then: &str) -> Action {
    Action::Wait {
        subject: subject.to_string(),
        reason: WaitReason::Busy {
            then: then.to_string(),
        },
    }
}

fn host_wait(subject: &str, host: &str, error: &Failure) -> Action {
    Action::Wait {
        subject: subject.to_string(),
        reason: WaitReason::ObservationFailed {
            what: format!("host {host}"),
            error: error.clone(),
        },
    }
}

fn github_wait(subject: &str, world: &Ours<'_>) -> Action {
    Action::Wait {
        subject: subject.to_string(),
        reason: WaitReason::ObservationFailed {
            what: WHAT_GITHUB.to_string(),
            error: world
                .runner_error
                .cloned()
                .unwrap_or_else(|| Failure::new(ErrorKind::Transient, "not observed")),
        },
    }
}

/// The fields of a VM's recorded shape that differ from the slot's, with
/// values as a person would write them.
pub fn shape_changes(from: &VmShape, to: &VmShape) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            changes.push(FieldChange {
                field: name.to_string(),
                from: a,
                to: b,
            });
        }
    };
    field("cpus", from.cpus.to_string(), to.cpus.to_string());
    field("memory", bytes(from.memory_bytes), bytes(to.memory_bytes));
    field("disk", bytes(from.disk_bytes), bytes(to.disk_bytes));
    field("image", from.image.clone(), to.image.clone());
    let cache = |c: Option<u64>| c.map_or_else(|| "none".to_string(), bytes);
    field("cache", cache(from.cache_bytes), cache(to.cache_bytes));
    changes
}

/// Within one subject the order is the order of execution: registrations
/// and old VMs go before the VM that reuses their name.
fn kind_rank(action: &Action) -> u8 {
    match action {
        Action::EnsureNetwork { .. } | Action::EnsureRunnerVolume { .. } => 0,
        Action::RemoveRunner { .. } => 1,
        Action::Delete { .. } => 2,
        Action::RemoveLeftover { .. } => 3,
        Action::Replace { .. } | Action::Drain { .. } => 4,
        Action::Start { .. } => 5,
        Action::RemoveSeed { .. } => 6,
        Action::Create { .. } => 7,
        Action::RemoveNetwork { .. } => 8,
        Action::Wait { .. } => 9,
    }
}

fn finish(fleet: &str, actions: Vec<Action>) -> Plan {
    // The serialized form breaks ties (two deletes of one name) so that the
    // order never depends on the order of the inputs.
    let mut keyed: Vec<(String, u8, String, Action)> = actions
        .into_iter()
        .map(|a| {
            let json = serde_json::to_string(&a).unwrap_or_default();
            (a.subject().to_string(), kind_rank(&a), json, a)
        })
        .collect();
    keyed.sort_by(|a, b| (&a.0, a.1, &a.2).cmp(&(&b.0, b.1, &b.2)));
    keyed.dedup_by(|a, b| a.2 == b.2);
    Plan {
        fleet: fleet.to_string(),
        actions: keyed.into_iter().map(|k| k.3).collect(),
    }
}
