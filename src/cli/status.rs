//! `hangar status` as a table: slots, then hosts, then GitHub.

use comfy_table::{presets, Table};

use crate::model::guest::GuestStage;
use crate::plan::model::{RunnerStatus, VmState};
use crate::plan::render::{bytes, duration};
use crate::reconcile::status::StatusView;

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
        GuestStage::Drained => "drained",
        GuestStage::Failed => "failed",
    }
}

/// The first address (IPv4 first) and how many more there are.
fn address(addresses: &[std::net::IpAddr]) -> String {
    match addresses {
        [] => "-".into(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (+{})", rest.len()),
    }
}

pub fn human(doc: &StatusView) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(vec![
        "POOL", "SLOT", "HOST", "VM", "GUEST", "RUNNER", "VERSION", "AGE", "SPEC", "CACHE", "ROOT",
        "ADDRESS",
    ]);
    for s in &doc.slots {
        let vm = match (s.vm, s.generation) {
            (Some(v), Some(g)) => format!("{} (gen {g})", state_name(v)),
            _ => "-".into(),
        };
        let mut runner = match s.runner {
            Some(RunnerStatus::Online) => "online".to_string(),
            Some(RunnerStatus::Offline) => "offline".to_string(),
            None => "-".to_string(),
        };
        if s.busy {
            runner.push_str(", busy");
        }
        if s.draining {
            runner.push_str(", draining");
        }
        if s.simulated && s.runner.is_some() {
            runner.push_str(" (simulated)");
        }
        let spec = match (s.desired, s.in_sync) {
            (false, _) => "not in file",
            (true, Some(true)) => "in sync",
            (true, Some(false)) => "changed",
            (true, None) => "missing",
        };
        let used = |u: u64, c: u64| {
            format!(
                "{} / {} ({}%)",
                bytes(u),
                bytes(c),
                u.saturating_mul(100) / c.max(1)
            )
        };
        let guest = s.guest_disks.as_ref();
        // The guest's own count where its agent answers; else the host's
        // allocation (a high-water mark until discards reach it).
        let cache = match (
            guest.and_then(|g| g.cache.as_ref()),
            s.cache_used_bytes,
            s.cache_size_bytes,
        ) {
            (Some(fs), _, _) => used(fs.used_bytes, fs.total_bytes),
            (None, Some(u), Some(c)) if c > 0 => format!("{} (host)", used(u, c)),
            _ => "-".into(),
        };
        let root = guest
            .and_then(|g| g.root.as_ref())
            .map_or_else(|| "-".to_string(), |fs| used(fs.used_bytes, fs.total_bytes));
        t.add_row(vec![
            s.pool.clone(),
            s.slot.clone(),
            s.host.clone(),
            vm,
            s.guest.map(stage_name).unwrap_or("-").to_string(),
            runner,
            s.runner_version.clone().unwrap_or_else(|| "-".into()),
            s.age_seconds
                .map(|a| duration(std::time::Duration::from_secs(a.max(0) as u64)))
                .unwrap_or_else(|| "-".into()),
            spec.to_string(),
            cache,
            root,
            address(&s.addresses),
        ]);
    }
    let mut out = format!("Fleet {}\n{t}\n\n", doc.fleet);

    let mut h = Table::new();
    h.load_preset(presets::NOTHING);
    h.set_header(vec![
        "HOST",
        "TYPE",
        "VMS",
        "CPUS",
        "MEMORY",
        "POOL FREE",
        "NOT THE FLEET'S",
    ]);
    for host in &doc.hosts {
        match &host.facts {
            Some(f) => h.add_row(vec![
                host.host.clone(),
                format!("{:?}", f.domain_type).to_lowercase(),
                host.vms.to_string(),
                format!("{} / {}", host.cpus_used, f.cpus),
                format!(
                    "{} / {}",
                    bytes(host.memory_used_bytes),
                    bytes(f.memory_bytes)
                ),
                f.pool_free_bytes.map(bytes).unwrap_or_else(|| "?".into()),
                match f.foreign.domains {
                    0 => "-".into(),
                    n => format!(
                        "{n} running: {}, {} vCPUs",
                        bytes(f.foreign.memory_bytes),
                        f.foreign.vcpus
                    ),
                },
            ]),
            None => h.add_row(vec![
                host.host.clone(),
                format!(
                    "unreachable: {}",
                    host.error
                        .as_ref()
                        .map(|e| e.message.as_str())
                        .unwrap_or_default()
                ),
            ]),
        };
    }
    out.push_str(&format!("{h}\n"));
    for host in &doc.hosts {
        if let Some(f) = &host.facts {
            out.push_str(&format!(
                "{}: {} ({})\n",
                host.host,
                format!("{:?}", f.domain_type).to_lowercase(),
                f.domain_type_reason
            ));
        }
    }
    for r in &doc.runners {
        let release = match (&r.version, &r.error) {
            (_, Some(e)) => format!("not at hand: {e}"),
            (Some(v), None) => v.clone(),
            (None, None) => "?".into(),
        };
        out.push_str(&format!("pool {}: runner {release}\n", r.pool));
        if let Some(w) = &r.warning {
            out.push_str(&format!("pool {}: warning: {w}\n", r.pool));
        }
    }
    for p in &doc.scale {
        out.push_str(&format!("pool {}: {}\n", p.pool, scale_line(p)));
    }
    out.push('\n');
    out.push_str(&match (&doc.github_error, &doc.rate_limit) {
        (Some(e), _) => format!("GitHub {}: unreachable: {}\n", doc.github_scope, e.message),
        (None, Some(r)) => format!(
            "GitHub {}: {} of {} requests left this hour\n",
            doc.github_scope, r.remaining, r.limit
        ),
        (None, None) => format!(
            "GitHub {}: no rate-limit budget reported\n",
            doc.github_scope
        ),
    });
    out
}

/// `follows the queue: 2 busy, 1 queued, target 3, 3 slots`.
fn scale_line(p: &crate::plan::model::PoolScale) -> String {
    let mut line = format!(
        "follows the queue: {} busy, {} queued, target {}, {} slot{}",
        p.busy,
        p.queued.len(),
        p.target,
        p.slots.len(),
        if p.slots.len() == 1 { "" } else { "s" }
    );
    if let Some(since) = p.above_target_since {
        line.push_str(&format!(
            "; above target since {}",
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    if let Some(e) = &p.unknown {
        line.push_str(&format!("; the queue could not be read: {}", e.message));
    }
    if !p.not_admitted.is_empty() {
        let ids: Vec<String> = p.not_admitted.iter().map(|j| format!("#{j}")).collect();
        line.push_str(&format!(
            "; its runner group does not admit the repository of queued job{} {}",
            if ids.len() == 1 { "" } else { "s" },
            ids.join(", ")
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::{address, scale_line};
    use crate::plan::model::{ErrorKind, Failure, PoolScale};
    use chrono::TimeZone;

    #[test]
    fn the_address_column_shows_the_first_and_counts_the_rest() {
        let a = |t: &str| t.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(address(&[]), "-");
        assert_eq!(address(&[a("10.213.7.20")]), "10.213.7.20");
        assert_eq!(
            address(&[a("10.213.7.20"), a("fd00::20")]),
            "10.213.7.20 (+1)"
        );
    }

    #[test]
    fn a_scaled_pools_line_says_what_the_queue_asks() {
        let mut p = PoolScale {
            pool: "burst".into(),
            busy: 2,
            queued: vec![41],
            target: 3,
            slots: vec![0, 1, 2],
            above_target_since: None,
            unknown: None,
            not_admitted: Vec::new(),
        };
        assert_eq!(
            scale_line(&p),
            "follows the queue: 2 busy, 1 queued, target 3, 3 slots"
        );
        p.above_target_since = Some(chrono::Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap());
        p.unknown = Some(Failure::new(ErrorKind::Transient, "rate limited"));
        assert_eq!(
            scale_line(&p),
            "follows the queue: 2 busy, 1 queued, target 3, 3 slots; \
             above target since 2026-03-01T12:00:00Z; the queue could not be read: rate limited"
        );
        p.above_target_since = None;
        p.unknown = None;
        p.not_admitted = vec![7, 9];
        assert_eq!(
            scale_line(&p),
            "follows the queue: 2 busy, 1 queued, target 3, 3 slots; \
             its runner group does not admit the repository of queued jobs #7, #9"
        );
    }
}
