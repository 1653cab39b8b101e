//! One pass: observe → resolve → plan → execute, and what it reports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::event::{Event, Events};
use super::execute::{execute, Execution, Limits, Report};
use super::policy::{self, Requeue};
use super::progress;
use super::{Clock, Error, Provisioner, SlotRunner, Snapshot, World};
use crate::fleet::LoadedFleet;
use crate::model::host::HostFacts;
use crate::plan::model::{Desired, Failure, Observation, Plan};
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

/// Something the composition root started for the engine (the in-process
/// GitHub simulator), stopped with it.
#[async_trait]
pub trait Service: Send + Sync {
    async fn stop(self: Box<Self>);
}

/// The engine of one fleet.
pub struct Engine {
    pub world: World,
    pub provisioner: Arc<dyn Provisioner>,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    pub guests: Option<Arc<dyn GuestPlay>>,
    /// How often `apply` looks again while something is coming up: guests
    /// played by the sandbox act at once, real ones take a minute to boot.
    pub poll: Duration,
    pub services: Vec<Box<dyn Service>>,
}

/// What one pass saw, decided and did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassResult {
    pub snapshot: Snapshot,
    pub desired: Desired,
    pub plan: Plan,
    /// `None` for a dry run, or when the plan changes nothing.
    pub report: Option<Report>,
    /// Lines from the sandbox's stand-in guests.
    pub guest_play: Vec<String>,
    /// When the next pass should run, and why then.
    pub requeue: Requeue,
}

impl PassResult {
    /// The world equalled the file when the pass looked, and nothing the
    /// pass did failed. Waits count against it: a busy runner that holds up
    /// a replacement, a VM still booting or a host not observed mean the
    /// world is not yet what the file says.
    pub fn converged(&self) -> bool {
        self.plan.in_sync() && self.report.as_ref().is_none_or(|r| r.failed() == 0)
    }
}

impl Engine {
    /// Observe, resolve and plan; changes nothing.
    pub async fn plan(&self, fleet: &LoadedFleet) -> Result<(Snapshot, Desired, Plan), Error> {
        let (snapshot, desired) = self.desired(fleet).await;
        let desired = desired?;
        let plan = plan::plan(&desired, &snapshot.observed, snapshot.taken_at);
        Ok((snapshot, desired, plan))
    }

    /// Observe the world and resolve the file against it, with each pool's
    /// runner release (prepared at the same time as the observation).
    pub async fn desired(&self, fleet: &LoadedFleet) -> (Snapshot, Result<Desired, Error>) {
        let mut pools = crate::fleet::scaled_pools(&fleet.fleet);
        let repositories = fleet.fleet.spec.github.job_repositories();
        // The queue is asked only when a pool follows it; the access of
        // runner groups only when a job is queued for a pool in one.
        let jobs = async {
            if pools.is_empty() {
                return None;
            }
            let jobs = self.world.registry.jobs(&repositories).await;
            let groups = match &jobs {
                Ok(list) => plan::scale::groups_to_read(&pools, list),
                Err(_) => Vec::new(),
            };
            let access = if groups.is_empty() {
                Default::default()
            } else {
                self.world
                    .registry
                    .group_access(&groups)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::debug!(
                            target: "hangar::scale",
                            error = %e,
                            "runner group access not read, nor ever before: queued jobs count by labels alone"
                        );
                        Default::default()
                    })
            };
            Some((jobs, access))
        };
        let (snapshot, runners, jobs) = tokio::join!(
            self.world.observe(self.clock.as_ref()),
            self.provisioner.prepare(self.clock.now()),
            jobs
        );
        let scale = match jobs {
            None => Vec::new(),
            Some((jobs, access)) => {
                for pool in &mut pools {
                    pool.access = pool
                        .runner_group
                        .as_ref()
                        .and_then(|g| access.get(g))
                        .cloned();
                }
                let jobs = match jobs {
                    Ok(items) => Observation::Seen { items },
                    Err(e) => Observation::Failed { error: e.into() },
                };
                let remembered = self.world.registry.scale_memory();
                let scale = plan::scale::scale(
                    fleet.name(),
                    &pools,
                    &snapshot.observed,
                    &jobs,
                    &remembered,
                    snapshot.taken_at,
                );
                let above: BTreeMap<String, DateTime<Utc>> = scale
                    .iter()
                    .filter_map(|p| Some((p.pool.clone(), p.above_target_since?)))
                    .collect();
                self.world.registry.remember_scale(&above);
                scale
            }
        };
        let desired = fleet
            .resolve_scaled(&snapshot.known_facts(), &snapshot.placement(), &scale)
            .map(|mut desired| {
                for slot in &mut desired.slots {
                    self.supply_runner(slot);
                }
                desired.runners = runners;
                desired
            })
            .map_err(Error::from);
        (snapshot, desired)
    }

    fn supply_runner(&self, slot: &mut crate::plan::model::DesiredSlot) {
        match self.provisioner.runner(slot) {
            SlotRunner::Guest => {}
            SlotRunner::Volume { volume, latest } => {
                if latest {
                    let tarball = &volume.local.tarball;
                    let release = format!("runner {} {}", tarball.version, tarball.sha256);
                    slot.spec_hash = slot.spec_hash.with(&release);
                }
                slot.runner = Some(volume);
            }
            SlotRunner::Unavailable(failure) => slot.runner_unavailable = Some(failure),
        }
    }

    /// A full pass. With `dry_run`, stops after planning. `stop` keeps
    /// actions not yet started from starting; `every` is the regular
    /// interval the requeue is measured against.
    pub async fn pass(
        &self,
        fleet: &LoadedFleet,
        dry_run: bool,
        stop: &CancellationToken,
        events: &dyn Events,
        every: Duration,
    ) -> Result<PassResult, Error> {
        let (snapshot, desired, plan) = self.plan(fleet).await?;
        for runner in &desired.runners {
            if let Some(message) = &runner.warning {
                events.emit(Event::RunnerVersionWarning {
                    pool: runner.pool.clone(),
                    message: message.clone(),
                });
            }
        }
        if let Some(error) = desired.scale.iter().find_map(|p| p.unknown.as_ref()) {
            events.emit(Event::ObservationFailed {
                what: "GitHub jobs".to_string(),
                error: error.clone(),
            });
        }
        for (what, error) in snapshot.failures() {
            events.emit(Event::ObservationFailed {
                what,
                error: error.clone(),
            });
        }
        events.emit(Event::Progress {
            slots: progress::progress(&desired, &snapshot.observed),
        });
        events.emit(Event::Planned { plan: plan.clone() });
        let report = if dry_run || !plan.has_changes() {
            None
        } else {
            Some(
                self.execute_seen(&plan, &snapshot.facts, stop, events)
                    .await,
            )
        };
        let guest_play = match (&self.guests, dry_run) {
            (Some(g), false) => g.play(&self.world, &desired, self.clock.as_ref()).await,
            _ => Vec::new(),
        };
        for line in &guest_play {
            events.emit(Event::GuestPlayed { line: line.clone() });
        }
        let requeue = policy::requeue(&plan, report.as_ref(), &snapshot, every);
        // What the pass's work freed goes back to the kernel: between
        // passes the process holds what it keeps, not its busiest pass.
        crate::malloc::give_back();
        Ok(PassResult {
            snapshot,
            desired,
            plan,
            report,
            guest_play,
            requeue,
        })
    }

    /// Execute a plan's actions (its waits are reported as skipped), each
    /// host's default limit from one cpu (see [`Engine::execute_seen`]).
    pub async fn execute(
        &self,
        plan: &Plan,
        stop: &CancellationToken,
        events: &dyn Events,
    ) -> Report {
        execute(&self.execution(BTreeMap::new(), stop, events), plan).await
    }

    /// [`Engine::execute`], each host's default limit from its cpus in
    /// `facts` (the observation the plan was made from).
    pub async fn execute_seen(
        &self,
        plan: &Plan,
        facts: &BTreeMap<String, Result<HostFacts, Failure>>,
        stop: &CancellationToken,
        events: &dyn Events,
    ) -> Report {
        let cpus = facts
            .iter()
            .filter_map(|(h, f)| f.as_ref().ok().map(|f| (h.clone(), f.cpus)))
            .collect();
        execute(&self.execution(cpus, stop, events), plan).await
    }

    fn execution<'a>(
        &'a self,
        host_cpus: BTreeMap<String, u32>,
        stop: &CancellationToken,
        events: &'a dyn Events,
    ) -> Execution<'a> {
        Execution {
            world: &self.world,
            provisioner: self.provisioner.as_ref(),
            clock: self.clock.as_ref(),
            limits: self.limits,
            host_cpus,
            cancel: stop.clone(),
            events,
        }
    }

    /// Stop what was started for the engine (its state is already saved).
    pub async fn shutdown(self) {
        let Engine { services, .. } = self;
        for s in services {
            s.stop().await;
        }
    }
}
