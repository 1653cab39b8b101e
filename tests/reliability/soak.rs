//! Scenario 15: many daemon passes with random faults from a seeded RNG, in
//! a process of its own (this test binary, run again on one ignored test)
//! so that its memory is measured alone.

use std::time::Duration;

use hangar::providers::Hypervisor;
use hangar::sim::{Fault, FaultKind, Latency};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::results::Scenario;
use super::rig::{fleet_yaml, pool, Rig, FLEET};

const PASSES: usize = 600;
const SEED: u64 = 0x6a6e_6761_7200_0015;

#[derive(Debug, Serialize, Deserialize)]
struct SoakReport {
    passes: usize,
    libvirt_faults: u64,
    github_faults: u64,
    jobs: u64,
    power_offs: u64,
    rss_kib_at_100: u64,
    rss_kib_at_end: u64,
    settle_passes: usize,
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[test]
fn s15_daemon_survives_many_passes_with_random_faults() {
    let sc = Scenario::begin(15);
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "soak::s15_soak_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HANGAR_SOAK_OUT", out.path())
        .status()
        .unwrap();
    assert!(status.success(), "the soak process failed");
    let r: SoakReport = serde_json::from_slice(&std::fs::read(out.path()).unwrap()).unwrap();
    let growth = r.rss_kib_at_end.saturating_sub(r.rss_kib_at_100);
    assert!(
        growth < 24 * 1024,
        "memory grew by {growth} KiB between pass 100 and pass {}",
        r.passes
    );
    assert!(r.libvirt_faults > 20 && r.github_faults > 20, "{r:?}");
    sc.pass(
        &format!(
            "{} passes of the engine under paused time (2 hosts, 3 persistent + 3 ephemeral slots), seed {SEED:#x}: \
             {} libvirt call failures (before/after the effect, transient/refused, observe), {} GitHub fault bursts \
             (5xx, 429, secondary limit, latency), {} jobs, {} guest power-offs",
            r.passes, r.libvirt_faults, r.github_faults, r.jobs, r.power_offs
        ),
        1,
        &format!(
            "no panic; never two domains for a slot in any pass; converged {} pass(es) after the faults stopped, \
             no leaked volume or registration; VmRSS {} MiB at pass 100, {} MiB at the end",
            r.settle_passes,
            r.rss_kib_at_100 / 1024,
            r.rss_kib_at_end / 1024
        ),
    );
}

/// The soak itself; runs only when started by the test above.
#[test]
#[ignore = "run by s15_daemon_survives_many_passes_with_random_faults in its own process"]
fn s15_soak_child() {
    let Some(out) = std::env::var_os("HANGAR_SOAK_OUT") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let report = rt.block_on(soak());
    std::fs::write(out, serde_json::to_vec(&report).unwrap()).unwrap();
}

async fn soak() -> SoakReport {
    let yaml = fleet_yaml(
        &["h1", "h2"],
        &[pool("p", 3, false, 1), pool("e", 3, true, 1)],
    );
    let rig = Rig::new(&yaml).await;
    let mut rng = StdRng::seed_from_u64(SEED);
    rig.random_faults(SEED, Some(0.08));
    let mut github_faults = 0u64;
    let mut jobs = 0u64;
    let mut power_offs = 0u64;
    let mut rss_at_100 = 0;
    let mut busy: Vec<u64> = Vec::new();
    for n in 1..=PASSES {
        if rng.random_bool(0.1) {
            let kind = match rng.random_range(0..4) {
                0 => FaultKind::ServerError { status: 502 },
                1 => FaultKind::ServerError { status: 500 },
                2 => FaultKind::RateLimited {
                    retry_after_secs: rng.random_range(1..30),
                },
                _ => FaultKind::SecondaryLimit {
                    retry_after_secs: Some(rng.random_range(1..30)),
                },
            };
            rig.sim.inject(Fault::new(kind, rng.random_range(1..8)));
            github_faults += 1;
        }
        if rng.random_bool(0.05) {
            rig.sim.set_latency(Some(Latency {
                ms: rng.random_range(100..3000),
                route: None,
            }));
            github_faults += 1;
        } else if rng.random_bool(0.2) {
            rig.sim.set_latency(None);
        }
        // Jobs start and end on online runners.
        for r in rig.runners() {
            if r.status == "online"
                && !r.busy
                && rng.random_bool(0.05)
                && rig.sim.start_job(r.id).is_ok()
            {
                busy.push(r.id);
                jobs += 1;
            }
        }
        busy.retain(|id| {
            if rng.random_bool(0.3) {
                let _ = rig.sim.finish_job(*id);
                false
            } else {
                true
            }
        });
        // Now and then a guest dies.
        if rng.random_bool(0.03) {
            let h = if rng.random_bool(0.5) { "h1" } else { "h2" };
            if let Ok(vms) = rig.host(h).observe(FLEET).await {
                if !vms.is_empty() {
                    let vm = &vms[rng.random_range(0..vms.len())];
                    if rig.host(h).guest_power_off(&vm.name).await.is_ok() {
                        power_offs += 1;
                    }
                }
            }
        }
        let _ = rig.pass().await;
        let mut count = std::collections::BTreeMap::new();
        for h in ["h1", "h2"] {
            for (s, d) in rig.view(h).ours(FLEET) {
                *count.entry(s).or_insert(0usize) += d.len();
            }
        }
        assert!(
            count.values().all(|c| *c <= 1),
            "pass {n}: two domains for a slot: {count:?}"
        );
        if n == 100 {
            rss_at_100 = vm_rss_kib();
        }
        tokio::time::advance(Duration::from_secs(rng.random_range(1..60))).await;
    }
    let libvirt_faults = rig.struck();
    // The faults stop, the jobs end: the daemon converges.
    rig.random_faults(SEED, None);
    rig.sim.clear_faults();
    for id in busy {
        let _ = rig.sim.finish_job(id);
    }
    let mut settle_passes = 0;
    for n in 1..=60 {
        settle_passes = n;
        if rig.pass().await.converged() {
            break;
        }
        assert!(
            n < 60,
            "not converged 60 passes after the faults stopped: {:#?}",
            rig.diff().await.plan.actions
        );
        tokio::time::advance(Duration::from_secs(30)).await;
    }
    rig.assert_converged("after the soak");
    SoakReport {
        passes: PASSES,
        libvirt_faults,
        github_faults,
        jobs,
        power_offs,
        rss_kib_at_100: rss_at_100,
        rss_kib_at_end: vm_rss_kib(),
        settle_passes,
    }
}
