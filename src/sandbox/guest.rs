//! The sandbox's stand-in guests. A sandbox VM never boots, so after each
//! pass the sandbox does, visibly, what a booted guest would: a persistent
//! runner registers itself (`config.sh`) and comes online, an ephemeral one
//! runs its JIT config and comes online, each after saying on its console
//! one boot stage a pass (user ok, docker ok, cache mounted), a guest whose
//! ephemeral job is done
//! powers off. Everything goes through the simulator and the test driver, so
//! hangar's engine sees exactly what it would see from real guests.

use std::sync::Arc;

use async_trait::async_trait;

use super::host::SandboxHost;
use crate::model::guest::{
    GuestStage, MARKER_CACHE_MOUNTED, MARKER_DOCKER_OK, MARKER_RUNNER_STARTED, MARKER_USER_OK,
};
use crate::model::names::ownership_label;
use crate::plan::model::{Desired, ObservedVm, VmState};
use crate::providers::Hypervisor;
use crate::reconcile::engine::GuestPlay;
use crate::reconcile::{Clock, World};
use crate::sim::{RegisterRunner, SimHandle};

pub struct SandboxGuests {
    pub sim: Arc<SimHandle>,
    /// `repos/OWNER/REPO` or `orgs/ORG`.
    pub scope: String,
    pub hosts: Vec<Arc<SandboxHost>>,
}

#[async_trait]
impl GuestPlay for SandboxGuests {
    async fn play(&self, _world: &World, desired: &Desired, _clock: &dyn Clock) -> Vec<String> {
        self.play_paced(desired, false).await
    }
}

/// The stand-in guests as the CLI's sandbox plays them: a booting guest
/// says one boot stage a pass (user ok, docker ok, cache mounted) before its
/// runner starts, so that `apply` shows the stages a real guest goes
/// through. The engine's tests use [`SandboxGuests`], which says them all at
/// once and comes online a pass after its VM is created.
pub struct PacedGuests(pub SandboxGuests);

#[async_trait]
impl GuestPlay for PacedGuests {
    async fn play(&self, _world: &World, desired: &Desired, _clock: &dyn Clock) -> Vec<String> {
        self.0.play_paced(desired, true).await
    }
}

impl SandboxGuests {
    async fn play_paced(&self, desired: &Desired, paced: bool) -> Vec<String> {
        let mut lines = Vec::new();
        for host in &self.hosts {
            let vms = match host.observe(&desired.fleet).await {
                Ok(vms) => vms,
                Err(e) => {
                    lines.push(format!("{}: cannot look at guests: {e}", host.host()));
                    continue;
                }
            };
            for vm in vms {
                let runner = self.sim.runner_by_name(&self.scope, &vm.name);
                let who = format!("{}/{}", host.host(), vm.name);
                let starting = match &runner {
                    None => !vm.owner.ephemeral,
                    Some(r) => r.status == "offline" && vm.owner.ephemeral,
                };
                if paced && vm.state == VmState::Running && starting {
                    // A booting guest says one thing a pass before its
                    // runner starts, as a real one takes a while for each.
                    if let Some(marker) = next_boot_marker(&vm) {
                        append_console(host, &vm, &format!("{marker}\n"));
                        lines.push(format!("{who}: guest said `{marker}`"));
                        continue;
                    }
                }
                match vm.state {
                    VmState::Running => match runner {
                        None if !vm.owner.ephemeral => {
                            let Some(slot) = desired.slot(&vm.name) else {
                                continue;
                            };
                            let mut labels = slot.labels.clone();
                            labels.push(ownership_label(&desired.fleet));
                            let registered = self
                                .sim
                                .registration_token(&self.scope)
                                .and_then(|token| {
                                    self.sim.register_runner(&RegisterRunner {
                                        scope: self.scope.clone(),
                                        name: vm.name.clone(),
                                        labels,
                                        token,
                                        group: Some(slot.runner_group.clone()),
                                        replace: true,
                                        ephemeral: false,
                                        no_default_labels: false,
                                    })
                                })
                                .and_then(|r| self.sim.set_online(r.id, true));
                            lines.push(match registered {
                                Ok(_) => {
                                    boot_console(host, &vm, &slot.labels);
                                    format!("{who}: guest ran config.sh; runner online")
                                }
                                Err(e) => format!("{who}: guest could not register: {e}"),
                            });
                        }
                        None if !vm.seed_attached => {
                            // An ephemeral guest whose runner took its job and
                            // is gone: it powers off, as a real one does.
                            lines.push(match host.guest_power_off(&vm.name).await {
                                Ok(()) => format!("{who}: job done; guest powered off"),
                                Err(e) => format!("{who}: could not power off: {e}"),
                            });
                        }
                        None => {}
                        Some(r) if r.status == "offline" => {
                            let labels: Vec<String> = r
                                .labels
                                .iter()
                                .filter(|l| l.kind == "custom")
                                .map(|l| l.name.clone())
                                .collect();
                            lines.push(match self.sim.set_online(r.id, true) {
                                Ok(_) if vm.owner.ephemeral => {
                                    boot_console(host, &vm, &labels);
                                    format!("{who}: guest ran run.sh --jitconfig; runner online")
                                }
                                Ok(_) => format!("{who}: guest started its runner; online"),
                                Err(e) => format!("{who}: runner could not come online: {e}"),
                            });
                        }
                        Some(_) => {}
                    },
                    VmState::ShutOff | VmState::Crashed => {
                        if let Some(r) = runner.filter(|r| r.status == "online") {
                            if self.sim.set_online(r.id, false).is_ok() {
                                lines.push(format!("{who}: guest is down; runner offline"));
                            }
                        }
                    }
                    VmState::Paused | VmState::Other => {}
                }
            }
        }
        lines
    }
}

/// What a booting guest says next before its runner starts, if anything:
/// user ok, docker ok, then cache mounted when it has a cache.
fn next_boot_marker(vm: &ObservedVm) -> Option<String> {
    match vm.guest {
        None | Some(GuestStage::Booting) => Some(MARKER_USER_OK.to_string()),
        Some(GuestStage::UserReady) => Some(MARKER_DOCKER_OK.to_string()),
        Some(GuestStage::DockerReady) => vm
            .owner
            .shape
            .cache_bytes
            .map(|size| format!("{MARKER_CACHE_MOUNTED} {size}")),
        _ => None,
    }
}

/// What a guest prints on its serial console when its runner starts, so
/// that `status` shows the same stages for a sandbox VM as for a real one.
fn boot_console(host: &SandboxHost, vm: &ObservedVm, labels: &[String]) {
    let mut text = String::new();
    let mut said = vm.clone();
    // What it has not said yet (all of it, unpaced) comes first.
    for _ in 0..3 {
        let Some(marker) = next_boot_marker(&said) else {
            break;
        };
        text.push_str(&format!("{marker}\n"));
        said.guest = crate::model::guest::line_stage(&marker);
    }
    text.push_str(&format!(
        "{MARKER_RUNNER_STARTED} {} {}\n",
        vm.name,
        labels.join(",")
    ));
    append_console(host, vm, &text);
}

fn append_console(host: &SandboxHost, vm: &ObservedVm, text: &str) {
    use std::io::Write;
    let path = host
        .libvirt()
        .console_log_path(&vm.name, vm.owner.generation);
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        tracing::debug!(path = %path.display(), error = %e, "sandbox console not written");
    }
}
