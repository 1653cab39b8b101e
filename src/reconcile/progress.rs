//! Where each slot of the file is on its way to a runner that takes jobs,
//! from one pass's observation alone: the VM (libvirt), the guest's own
//! reports (its console markers) and the runner (GitHub). Pure; the CLI
//! renders the changes, the metrics count the stages.

use std::collections::HashMap;

use serde::Serialize;

use crate::model::guest::GuestStage;
use crate::plan::model::{Desired, Observed, ObservedRunner, ObservedVm, RunnerStatus, VmState};

/// A slot's stage, in the order a booting slot goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotStage {
    /// Its host could not be observed this pass.
    Unknown,
    /// No VM yet.
    Absent,
    /// The VM exists and runs; the guest has said nothing yet.
    Created,
    UserOk,
    DockerOk,
    CacheMounted,
    RunnerStarted,
    /// The runner is online in GitHub and idle.
    Online,
    /// The runner runs a job.
    Busy,
    /// The guest's job is done (ephemeral: powering off).
    Finished,
    /// The VM is shut off, paused or crashed.
    Down,
    /// The guest reported that provisioning failed.
    Failed,
}

impl SlotStage {
    /// Every stage, for metrics that give each one a series.
    pub const ALL: [SlotStage; 12] = [
        SlotStage::Unknown,
        SlotStage::Absent,
        SlotStage::Created,
        SlotStage::UserOk,
        SlotStage::DockerOk,
        SlotStage::CacheMounted,
        SlotStage::RunnerStarted,
        SlotStage::Online,
        SlotStage::Busy,
        SlotStage::Finished,
        SlotStage::Down,
        SlotStage::Failed,
    ];

    /// The name people read: `docker ok`, `runner started`.
    pub fn describe(self) -> &'static str {
        match self {
            SlotStage::Unknown => "unknown (host not observed)",
            SlotStage::Absent => "no vm",
            SlotStage::Created => "created",
            SlotStage::UserOk => "user ok",
            SlotStage::DockerOk => "docker ok",
            SlotStage::CacheMounted => "cache mounted",
            SlotStage::RunnerStarted => "runner started",
            SlotStage::Online => "online",
            SlotStage::Busy => "busy",
            SlotStage::Finished => "job finished",
            SlotStage::Down => "vm down",
            SlotStage::Failed => "failed",
        }
    }

    /// The label value in metrics: `docker_ok`.
    pub fn label(self) -> &'static str {
        match self {
            SlotStage::Unknown => "unknown",
            SlotStage::Absent => "absent",
            SlotStage::Created => "created",
            SlotStage::UserOk => "user_ok",
            SlotStage::DockerOk => "docker_ok",
            SlotStage::CacheMounted => "cache_mounted",
            SlotStage::RunnerStarted => "runner_started",
            SlotStage::Online => "online",
            SlotStage::Busy => "busy",
            SlotStage::Finished => "finished",
            SlotStage::Down => "down",
            SlotStage::Failed => "failed",
        }
    }

    /// A runner that takes (or runs) jobs: nothing more to wait for.
    pub fn is_up(self) -> bool {
        matches!(self, SlotStage::Online | SlotStage::Busy)
    }
}

/// One slot of the file and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotProgress {
    pub slot: String,
    pub pool: String,
    pub host: String,
    pub stage: SlotStage,
}

/// Every slot of `desired` with its stage in `observed`, in slot order.
pub fn progress(desired: &Desired, observed: &Observed) -> Vec<SlotProgress> {
    // Indexed once: a scan per slot made each pass quadratic in the fleet.
    let runners: Option<HashMap<&str, &ObservedRunner>> = observed
        .runners
        .seen()
        .map(|rs| rs.iter().rev().map(|r| (r.name.as_str(), r)).collect());
    // Reversed: the first listed stands for a name, as a scan found it.
    let vms: HashMap<(&str, &str), &ObservedVm> = observed
        .seen_vms()
        .rev()
        .map(|(host, v)| ((host, v.name.as_str()), v))
        .collect();
    desired
        .slots
        .iter()
        .map(|s| {
            let runner = runners
                .as_ref()
                .and_then(|rs| rs.get(s.name.as_str()).copied());
            let stage = match observed.hosts.get(&s.host).and_then(|o| o.seen()) {
                None => SlotStage::Unknown,
                Some(_) => match vms.get(&(s.host.as_str(), s.name.as_str())).copied() {
                    None => SlotStage::Absent,
                    Some(vm) if vm.state != VmState::Running => SlotStage::Down,
                    Some(vm) => match (runner, vm.guest) {
                        (_, Some(GuestStage::Failed)) => SlotStage::Failed,
                        (Some(r), _) if r.status == RunnerStatus::Online && r.busy => {
                            SlotStage::Busy
                        }
                        (_, Some(GuestStage::JobStarted)) => SlotStage::Busy,
                        (_, Some(GuestStage::JobFinished | GuestStage::Drained)) => {
                            SlotStage::Finished
                        }
                        (Some(r), _) if r.status == RunnerStatus::Online => SlotStage::Online,
                        (_, None | Some(GuestStage::Booting)) => SlotStage::Created,
                        (_, Some(GuestStage::UserReady)) => SlotStage::UserOk,
                        (_, Some(GuestStage::DockerReady)) => SlotStage::DockerOk,
                        (_, Some(GuestStage::CacheMounted)) => SlotStage::CacheMounted,
                        (_, Some(GuestStage::RunnerStarted)) => SlotStage::RunnerStarted,
                    },
                },
            };
            SlotProgress {
                slot: s.name.clone(),
                pool: s.pool.clone(),
                host: s.host.clone(),
                stage,
            }
        })
        .collect()
}
