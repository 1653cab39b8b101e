//! `hangar status`: hosts, VMs, runners and cache use in one table.

use std::collections::BTreeMap;

use comfy_table::{presets, Table};
use serde::Serialize;

use super::args::Output;
use super::commands::Ctx;
use super::output;
use crate::assemble::Assembled;
use crate::exit::ExitStatus;
use crate::fleet::units::human_bytes;
use crate::fleet::LoadedFleet;
use crate::model::guest::GuestStage;
use crate::model::host::HostFacts;
use crate::plan::model::{ObservedRunner, ObservedVm, RunnerStatus, VmState};
use crate::providers::{CacheUsage, RateBudget};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SlotRow {
    pool: String,
    slot: String,
    host: String,
    desired: bool,
    vm: Option<String>,
    generation: Option<u64>,
    guest: Option<GuestStage>,
    runner: Option<String>,
    busy: bool,
    simulated: bool,
    age_seconds: Option<i64>,
    in_sync: Option<bool>,
    cache_used_bytes: Option<u64>,
    cache_size_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HostRow {
    host: String,
    facts: Option<HostFacts>,
    error: Option<String>,
    vms: usize,
    cpus_used: u32,
    memory_used_bytes: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusDoc {
    fleet: String,
    slots: Vec<SlotRow>,
    hosts: Vec<HostRow>,
    github_scope: String,
    github_error: Option<String>,
    rate_limit: Option<RateBudget>,
}

fn state_name(s: VmState) -> &'static str {
    match s {
        VmState::Running => "running",
        VmState::Paused => "paused",
        VmState::ShutOff => "shut off",
        VmState::Crashed => "crashed",
        VmState::Other => "other",
    }
}

fn stage_name(s: GuestStage) -> &'static str {
    match s {
        GuestStage::Booting => "booting",
        GuestStage::UserReady => "user ok",
        GuestStage::DockerReady => "docker ok",
        GuestStage::CacheMounted => "cache mounted",
        GuestStage::RunnerStarted => "runner started",
        GuestStage::JobStarted => "job running",
        GuestStage::JobFinished => "job finished",
        GuestStage::Failed => "failed",
    }
}

/// Observe and print; exit 3 when part of the world could not be seen.
pub async fn print(ctx: &Ctx, fleet: &LoadedFleet, a: &Assembled, out: Output) -> ExitStatus {
    let engine = &a.engine;
    let snap = engine.world.observe(engine.clock.as_ref()).await;
    let now = snap.taken_at;
    let desired = fleet.resolve(&snap.known_facts(), &snap.placement()).ok();
    let name = &fleet.fleet.metadata.name;

    let mut cache: BTreeMap<String, CacheUsage> = BTreeMap::new();
    for hv in engine.world.hosts.values() {
        if let Ok(usage) = hv.cache_usage(name).await {
            for u in usage {
                cache.insert(u.slot.clone(), u);
            }
        }
    }

    let vms: Vec<&ObservedVm> = snap
        .observed
        .hosts
        .values()
        .filter_map(|o| o.seen())
        .flatten()
        .collect();
    let runners: Vec<&ObservedRunner> = snap
        .observed
        .runners
        .seen()
        .map(|r| r.iter().filter(|r| r.is_owned_by(name)).collect())
        .unwrap_or_default();

    let mut names: Vec<(String, String, bool)> = desired
        .as_ref()
        .map(|d| {
            d.slots
                .iter()
                .map(|s| (s.pool.clone(), s.name.clone(), true))
                .collect()
        })
        .unwrap_or_default();
    for vm in &vms {
        if !names.iter().any(|(_, n, _)| *n == vm.name) {
            names.push((vm.owner.pool.clone(), vm.name.clone(), false));
        }
    }
    for r in &runners {
        if !names.iter().any(|(_, n, _)| *n == r.name) {
            names.push(("?".into(), r.name.clone(), false));
        }
    }
    names.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));

    let slots: Vec<SlotRow> = names
        .into_iter()
        .map(|(pool, slot, is_desired)| {
            let want = desired.as_ref().and_then(|d| d.slot(&slot));
            let vm = vms
                .iter()
                .filter(|v| v.name == slot)
                .max_by_key(|v| v.owner.generation);
            let runner = runners.iter().find(|r| r.name == slot);
            SlotRow {
                pool,
                host: vm
                    .map(|v| v.host.clone())
                    .or_else(|| want.map(|w| w.host.clone()))
                    .unwrap_or_default(),
                desired: is_desired,
                vm: vm.map(|v| state_name(v.state).to_string()),
                generation: vm.map(|v| v.owner.generation),
                guest: vm.and_then(|v| v.guest),
                runner: runner.map(|r| match r.status {
                    RunnerStatus::Online => "online".to_string(),
                    RunnerStatus::Offline => "offline".to_string(),
                }),
                busy: runner.is_some_and(|r| r.busy),
                simulated: vm.is_some_and(|v| a.simulated_hosts.contains(&v.host)),
                age_seconds: vm.map(|v| (now - v.owner.created_at).num_seconds()),
                in_sync: match (vm, want) {
                    (Some(v), Some(w)) => Some(v.owner.spec_hash == w.spec_hash),
                    _ => None,
                },
                cache_used_bytes: cache.get(&slot).map(|c| c.allocated_bytes),
                cache_size_bytes: cache.get(&slot).map(|c| c.capacity_bytes),
                slot,
            }
        })
        .collect();

    let hosts: Vec<HostRow> = snap
        .facts
        .iter()
        .map(|(host, f)| {
            let on_host: Vec<&&ObservedVm> = vms.iter().filter(|v| &v.host == host).collect();
            HostRow {
                host: host.clone(),
                facts: f.as_ref().ok().cloned(),
                error: f.as_ref().err().cloned(),
                vms: on_host.len(),
                cpus_used: on_host.iter().map(|v| v.owner.shape.cpus).sum(),
                memory_used_bytes: on_host.iter().map(|v| v.owner.shape.memory_bytes).sum(),
            }
        })
        .collect();

    let doc = StatusDoc {
        fleet: name.clone(),
        slots,
        hosts,
        github_scope: engine.world.registry.scope(),
        github_error: match &snap.observed.runners {
            crate::plan::model::Observation::Failed { error } => Some(error.clone()),
            _ => None,
        },
        rate_limit: engine.world.registry.rate_budget(),
    };
    match out {
        Output::Json => crate::outln!(
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
        ),
        Output::Human => print_human(&doc, ctx.color),
    }
    if snap.failures().is_empty() {
        ExitStatus::Ok
    } else {
        ExitStatus::ProviderError
    }
}

fn print_human(doc: &StatusDoc, _color: bool) {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(vec![
        "POOL", "SLOT", "HOST", "VM", "GUEST", "RUNNER", "AGE", "SPEC", "CACHE",
    ]);
    for s in &doc.slots {
        let vm = match (&s.vm, s.generation) {
            (Some(v), Some(g)) => format!("{v} (gen {g})"),
            _ => "-".into(),
        };
        let mut runner = s.runner.clone().unwrap_or_else(|| "-".into());
        if s.busy {
            runner.push_str(", busy");
        }
        if s.simulated && s.runner.is_some() {
            runner.push_str(" (simulated)");
        }
        let spec = match (s.desired, s.in_sync) {
            (false, _) => "not in file".to_string(),
            (true, Some(true)) => "in sync".into(),
            (true, Some(false)) => "changed".into(),
            (true, None) => "missing".into(),
        };
        let cache = match (s.cache_used_bytes, s.cache_size_bytes) {
            (Some(u), Some(c)) if c > 0 => format!(
                "{} / {} ({}%)",
                human_bytes(u),
                human_bytes(c),
                u.saturating_mul(100) / c
            ),
            _ => "-".into(),
        };
        t.add_row(vec![
            s.pool.clone(),
            s.slot.clone(),
            s.host.clone(),
            vm,
            s.guest.map(stage_name).unwrap_or("-").to_string(),
            runner,
            s.age_seconds
                .map(|a| output::age(chrono::TimeDelta::seconds(a)))
                .unwrap_or_else(|| "-".into()),
            spec,
            cache,
        ]);
    }
    crate::outln!("Fleet {}\n{t}\n", doc.fleet);

    let mut h = Table::new();
    h.load_preset(presets::NOTHING);
    h.set_header(vec!["HOST", "TYPE", "VMS", "CPUS", "MEMORY", "POOL FREE"]);
    for host in &doc.hosts {
        match &host.facts {
            Some(f) => h.add_row(vec![
                host.host.clone(),
                format!("{:?}", f.domain_type).to_lowercase(),
                host.vms.to_string(),
                format!("{} / {}", host.cpus_used, f.cpus),
                format!(
                    "{} / {}",
                    human_bytes(host.memory_used_bytes),
                    human_bytes(f.memory_bytes)
                ),
                f.pool_free_bytes
                    .map(human_bytes)
                    .unwrap_or_else(|| "?".into()),
            ]),
            None => h.add_row(vec![
                host.host.clone(),
                format!("unreachable: {}", host.error.clone().unwrap_or_default()),
            ]),
        };
    }
    crate::outln!("{h}\n");
    match (&doc.github_error, &doc.rate_limit) {
        (Some(e), _) => crate::outln!("GitHub {}: unreachable: {e}", doc.github_scope),
        (None, Some(r)) => crate::outln!(
            "GitHub {}: {} of {} requests left this hour",
            doc.github_scope,
            r.remaining,
            r.limit
        ),
        (None, None) => crate::outln!("GitHub {}: no rate-limit budget reported", doc.github_scope),
    }
}
