//! Plans as people and programs read them: a terraform-style diff and JSON.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use super::model::{
    Action, DeleteReason, Leftover, Plan, RemoveRunnerReason, ReplaceReason, RoomResource,
    WaitReason,
};

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

/// One line per action, then a summary line. ANSI colour only when `color`.
pub fn human(plan: &Plan, color: bool) -> String {
    let mut out = String::new();
    for action in &plan.actions {
        out.push_str(&line(action, color));
        out.push('\n');
    }
    out.push_str(&summary(plan));
    out.push('\n');
    out
}

/// One action as the plan shows it: `+ create  t-build-0 on h1`.
pub fn line(action: &Action, color: bool) -> String {
    let (symbol, verb, colour) = marker(action);
    let mut out = String::new();
    if color && !colour.is_empty() {
        let _ = write!(out, "{colour}{symbol} {verb}{RESET}");
    } else {
        let _ = write!(out, "{symbol} {verb}");
    }
    let pad = 8usize.saturating_sub(verb.len());
    let _ = write!(out, "{:pad$}{}", "", describe(action));
    out
}

/// The verb of an action, as the plan and the progress lines name it.
pub fn verb(action: &Action) -> &'static str {
    marker(action).1
}

/// The plan as pretty JSON; field order follows the model, so it is stable.
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).expect("a plan is plain data and always serializes")
}

fn marker(action: &Action) -> (char, &'static str, &'static str) {
    match action {
        Action::Create { .. } => ('+', "create", GREEN),
        Action::Delete { .. } => ('-', "delete", RED),
        Action::Replace { .. } => ('~', "replace", YELLOW),
        Action::Start { .. } => ('>', "start", CYAN),
        Action::Drain { .. } => ('~', "drain", YELLOW),
        Action::RemoveSeed { .. } => ('-', "unseed", RED),
        Action::RemoveRunner { .. } => ('-', "remove", RED),
        Action::EnsureNetwork { .. } => ('+', "network", GREEN),
        Action::EnsureRunnerVolume { .. } => ('+', "runner", GREEN),
        Action::RemoveNetwork { .. } => ('-', "network", RED),
        Action::RemoveLeftover { .. } => ('-', "remove", RED),
        Action::Wait { .. } => ('=', "wait", ""),
    }
}

fn describe(action: &Action) -> String {
    match action {
        Action::Create {
            slot, generation, ..
        } => {
            if *generation > 1 {
                format!("{} on {} (generation {generation})", slot.name, slot.host)
            } else {
                format!("{} on {}", slot.name, slot.host)
            }
        }
        Action::Delete { vm, reason, .. } => {
            let why = match reason {
                DeleteReason::ScaledDown => "scaled down",
                DeleteReason::PoolRemoved => "pool removed",
                DeleteReason::HostRemoved => "moved off this host",
                DeleteReason::Duplicate => "older duplicate",
                DeleteReason::Destroy => "destroy",
            };
            format!("{} on {} ({why})", vm.name, vm.host)
        }
        Action::Replace {
            vm,
            reason,
            boot_failures,
            ..
        } => {
            let why = match reason {
                ReplaceReason::SpecChanged { changes } if changes.is_empty() => {
                    "spec changed".to_string()
                }
                ReplaceReason::SpecChanged { changes } => changes
                    .iter()
                    .map(|c| format!("{} {} → {}", c.field, c.from, c.to))
                    .collect::<Vec<_>>()
                    .join(", "),
                ReplaceReason::JobDone => "job done".to_string(),
                ReplaceReason::BootTimeout { waited } => format!(
                    "runner not up after {}, boot failure {boot_failures}",
                    duration(*waited)
                ),
                ReplaceReason::RunnerOffline => "runner offline".to_string(),
                ReplaceReason::Broken => format!("broken, boot failure {boot_failures}"),
            };
            format!("{} on {} ({why})", vm.name, vm.host)
        }
        Action::Start { vm } => format!("{} on {} (shut off)", vm.name, vm.host),
        Action::Drain { vm, then } => format!(
            "{} on {} (busy: no new job after this one, then {then})",
            vm.name, vm.host
        ),
        Action::RemoveSeed { vm } => {
            format!(
                "{} on {} (runner up: seed volume removed)",
                vm.name, vm.host
            )
        }
        Action::RemoveRunner { runner, reason } => {
            let why = match reason {
                RemoveRunnerReason::NoVm => "registration without a VM",
                RemoveRunnerReason::Destroy => "destroy",
            };
            format!("{} runner #{} ({why})", runner.name, runner.id)
        }
        Action::EnsureNetwork {
            host,
            network,
            filter,
        } => format!("{network} on {host} (isolated network and filter {filter})"),
        Action::RemoveNetwork {
            host,
            network,
            filter,
        } => format!("{network} on {host} (and filter {filter}: no VM of the fleet left)"),
        Action::EnsureRunnerVolume { host, runner } => format!(
            "volume {} on {host} (runner {} {}, {}, read-only)",
            runner.volume,
            runner.local.tarball.version,
            runner.local.tarball.arch,
            crate::model::units::bytes(runner.local.tarball.size)
        ),
        Action::RemoveLeftover { host, leftover } => match leftover {
            Leftover::Volume { name, .. } => format!("volume {name} on {host} (no domain uses it)"),
            Leftover::RunnerVolume { name } => {
                format!("runner volume {name} on {host} (no VM installs that release)")
            }
            Leftover::Cache { name, .. } => {
                format!("cache volume {name} on {host} (its VM was never defined)")
            }
            Leftover::ConsoleLog { name, .. } => {
                format!("console log {name} on {host} (its VM is gone)")
            }
        },
        Action::Wait { subject, reason } => format!("{subject} ({})", wait_reason(reason)),
    }
}

fn wait_reason(reason: &WaitReason) -> String {
    match reason {
        WaitReason::Busy { then } => format!("busy: {then} after the job"),
        WaitReason::Draining { then } => {
            format!("draining: its last job runs, then {then}")
        }
        WaitReason::Booting { deadline } => {
            format!("booting: runner expected by {}", time(deadline))
        }
        WaitReason::Backoff { until, failures } => {
            format!(
                "crash-loop backoff after {failures} failed boots, until {}",
                time(until)
            )
        }
        WaitReason::ObservationFailed { what, error } => format!("{what} not observed: {error}"),
        WaitReason::Grace { until } => format!("grace period until {}", time(until)),
        WaitReason::RunnerUnavailable { error } => {
            format!("runner release not at hand: {error}")
        }
        WaitReason::DomainNameTaken { host } => {
            format!("a domain on {host} not owned by this fleet has this name")
        }
        WaitReason::NameTaken { runner_id } => {
            format!("name taken by runner #{runner_id}, not owned by this fleet")
        }
        WaitReason::RunnerOffline {
            deadline: Some(deadline),
        } => format!("runner offline, replaced at {}", time(deadline)),
        WaitReason::RunnerOffline { deadline: None } => {
            "runner offline since a time not observed".to_string()
        }
        WaitReason::OrphanOnline { runner_id } => {
            format!("runner #{runner_id} online without a VM on any host")
        }
        WaitReason::NoRoomOnHost {
            host,
            resource,
            needed,
            available,
        } => match resource {
            RoomResource::Memory => format!(
                "no room on host {host}: needs {} of memory, {} left beside what runs there",
                bytes(*needed),
                bytes(*available)
            ),
            RoomResource::Vcpus => format!(
                "no room on host {host}: needs {} vCPUs, {} left beside what runs there",
                vcpus(*needed),
                vcpus(*available)
            ),
            RoomResource::PoolSpace => format!(
                "no room on host {host}: its disks need {} in the storage pool, {} free",
                bytes(*needed),
                bytes(*available)
            ),
        },
        WaitReason::NoCapacity { hosts, jobs } => {
            let jobs: Vec<String> = jobs.iter().map(|j| format!("#{j}")).collect();
            let waiting = match jobs.len() {
                0 => "no queued job".to_string(),
                1 => format!("queued job {} waits", jobs[0]),
                _ => format!("queued jobs {} wait", jobs.join(", ")),
            };
            format!(
                "no room on {} for another runner: {waiting} for capacity",
                hosts.join(", ")
            )
        }
    }
}

fn summary(plan: &Plan) -> String {
    if plan.actions.is_empty() {
        return "No changes. The fleet matches the file.".to_string();
    }
    if !plan.has_changes() {
        let n = plan.actions.len();
        return format!(
            "Nothing to change now, but the fleet does not match the file yet: {n} waiting."
        );
    }
    let count = |f: fn(&Action) -> bool| plan.actions.iter().filter(|a| f(a)).count();
    let mut parts = vec![
        format!(
            "{} to create",
            count(|a| matches!(a, Action::Create { .. }))
        ),
        format!(
            "{} to replace",
            count(|a| matches!(a, Action::Replace { .. }))
        ),
        format!(
            "{} to delete",
            count(|a| matches!(a, Action::Delete { .. }))
        ),
    ];
    let extras = [
        (
            count(|a| matches!(a, Action::Start { .. })),
            "to start",
            "to start",
        ),
        (
            count(|a| matches!(a, Action::Drain { .. })),
            "to drain",
            "to drain",
        ),
        (
            count(|a| matches!(a, Action::RemoveSeed { .. })),
            "seed to remove",
            "seeds to remove",
        ),
        (
            count(|a| matches!(a, Action::RemoveRunner { .. })),
            "registration to remove",
            "registrations to remove",
        ),
        (
            count(|a| matches!(a, Action::EnsureNetwork { .. })),
            "network to ensure",
            "networks to ensure",
        ),
        (
            count(|a| matches!(a, Action::EnsureRunnerVolume { .. })),
            "runner volume to upload",
            "runner volumes to upload",
        ),
        (
            count(|a| matches!(a, Action::RemoveNetwork { .. })),
            "network to remove",
            "networks to remove",
        ),
        (
            count(|a| matches!(a, Action::RemoveLeftover { .. })),
            "leftover to remove",
            "leftovers to remove",
        ),
    ];
    for (n, one, many) in extras {
        if n > 0 {
            parts.push(format!("{n} {}", if n == 1 { one } else { many }));
        }
    }
    parts.push(format!(
        "{} waiting",
        count(|a| matches!(a, Action::Wait { .. }))
    ));
    format!("Plan: {}.", parts.join(", "))
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub use crate::model::units::{bytes, duration};

/// Thousandths of a vCPU as a count: `2`, `1.5`.
fn vcpus(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{:.1}", millis as f64 / 1000.0)
    }
}
