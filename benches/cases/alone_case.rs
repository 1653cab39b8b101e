//! P4 with the hosts and GitHub out of process (issue 18: "≤ 16 MiB
//! RssAnon for hangar alone"). In-process P4 measures a process that also
//! holds ten test-driver hosts and the simulator. Here the same fleet (500
//! runners on 10 hosts, limits 64/16) runs on hosts served by the system
//! libvirtd (`test+unix:///…/node.xml`: the daemon opens the test driver,
//! with a private node file of ours) and on `hangar github-sim` in a child
//! process (`tests/support/served.rs`). What this process holds is then
//! hangar's own: the engine, tokio, the GitHub client, and libvirt's remote
//! client (its RPC buffers); the counting allocator and `mallinfo2` tell the
//! Rust side from the C side as in P4.
//!
//! Each connection to a private node file is a world of its own, in a
//! daemon as in process: a `test+unix://` host keeps one connection (as
//! `test://` hosts do), which the case checks.
//!
//! Run alone (`--cases=alone`), in a process of its own: after another
//! case's rig, that rig's freed memory would be counted here.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar::model::host::DomainType;
use hangar::providers::github::{Auth, GithubConfig, GithubRegistry, Scope};
use hangar::providers::libvirt::LibvirtHost;
use hangar::providers::{Hypervisor, RetryPolicy};
use hangar::reconcile::engine::{Engine, PassResult};
use hangar::secret::Secret;
use tokio_util::sync::CancellationToken;

use super::{
    growth_mib, heap, host_config, host_name, is_flat, load, mib, ms, node_xml, rss_kib,
    rss_parts_kib, served, status_kib, wiring, Meter, Metered, Options, Report, OWNER, REPO,
};

const CASE: &str = "P4 (hosts and GitHub out of process)";
/// The token the served simulator accepts (`served::serve`).
const SIM_TOKEN: &str = "not-the-apps";

/// The engine on daemon-served hosts and a served simulator.
struct Alone {
    _dir: tempfile::TempDir,
    sim: served::Served,
    hosts: Vec<Arc<Metered>>,
    engine: Engine,
    fleet: hangar::fleet::LoadedFleet,
}

impl Alone {
    async fn pass(&self) -> PassResult {
        wiring::pass(
            &self.engine,
            &self.fleet,
            false,
            &CancellationToken::new(),
            Duration::from_secs(60),
        )
        .await
    }

    fn libvirt_calls(&self) -> u64 {
        self.hosts.iter().map(|h| h.inner.libvirt_calls()).sum()
    }
}

/// The rig, or why not (no libvirtd to serve the test driver).
async fn build(runners: usize, hosts: usize) -> Result<Alone, String> {
    // Under /tmp: the daemon (root) reads the node files by their path.
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = load(runners, hosts, Some((64, 16)));
    let mut metered = Vec::new();
    let mut world_hosts: BTreeMap<String, Arc<dyn Hypervisor>> = BTreeMap::new();
    for i in 0..hosts {
        let name = host_name(i);
        let node = dir.path().join(format!("{name}.xml"));
        std::fs::write(&node, node_xml()).expect("node file");
        let config = host_config(&name, format!("test+unix://{}", node.display()), dir.path());
        let lv = tokio::task::spawn_blocking(move || LibvirtHost::connect(config))
            .await
            .expect("connect task")
            .map_err(|e| format!("host {name} over test+unix: {e}"))?;
        assert_eq!(lv.domain_type(), DomainType::Test);
        let m = Arc::new(Metered::new(Arc::new(lv), Meter::default()));
        metered.push(m.clone());
        world_hosts.insert(name, wiring::retrying(m, RetryPolicy::LIBVIRT, None));
    }
    let sim = tokio::task::spawn_blocking(|| served::serve(&[]))
        .await
        .expect("serve task");
    let registry = GithubRegistry::new(GithubConfig {
        scope: Scope::Repository {
            owner: OWNER.into(),
            repo: REPO.into(),
        },
        api_url: format!("http://127.0.0.1:{}", sim.port),
        auth: Auth::Token(Secret::new(SIM_TOKEN.to_string())),
        timeout: Some(Duration::from_secs(30)),
    })
    .unwrap_or_else(|e| panic!("github registry: {e}"));
    let registry = wiring::retrying_registry(registry, RetryPolicy::GITHUB, None);
    let engine = super::measured_engine(&fleet, world_hosts, Arc::new(registry));
    Ok(Alone {
        _dir: dir,
        sim,
        hosts: metered,
        engine,
        fleet,
    })
}

/// Passes until converged, the guests (`served::play_guests`, a thread
/// that sets every offline runner online) coming up meanwhile.
async fn converge(rig: &Alone, runners: usize) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let guests = {
        let (port, stop) = (rig.sim.port, stop.clone());
        std::thread::spawn(move || served::play_guests(port, stop))
    };
    let mut passes = 0;
    let converged = loop {
        passes += 1;
        let r = rig.pass().await;
        if let Some(report) = &r.report {
            assert_eq!(
                report.failed(),
                0,
                "failed actions: {:?}",
                report.failures().next()
            );
        }
        if r.converged() {
            break true;
        }
        if passes == 30 {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    guests.join().expect("guests thread");
    assert!(
        converged,
        "{runners} runners did not converge in {passes} passes"
    );
    passes
}

pub(crate) async fn p4_alone(rep: &mut Report, opt: &Options) {
    let (runners, hosts) = if opt.quick { (120, 4) } else { (500, 10) };
    let (anon_start, _) = rss_parts_kib();
    let (rss_start, _) = rss_kib();
    let t = Instant::now();
    let rig = match build(runners, hosts).await {
        Ok(rig) => rig,
        Err(why) => {
            eprintln!("{CASE} skipped: {why}");
            rep.notes.push(format!("{CASE} skipped: {why}"));
            return;
        }
    };
    let passes = converge(&rig, runners).await;
    rep.notes.push(format!(
        "{CASE}: {runners} runners on {hosts} hosts served by libvirtd (test+unix, a private \
         node file each), GitHub simulator in its own process; converged in {passes} passes, \
         {:.1} s; RSS before the rig {} MiB (RssAnon {} MiB)",
        t.elapsed().as_secs_f64(),
        mib(rss_start),
        mib(anon_start)
    ));
    for h in &rig.hosts {
        assert_eq!(
            h.inner.libvirt_connections(),
            1,
            "a test+unix host keeps one connection"
        );
    }
    rig.pass().await;

    let wanted = if opt.quick { 500 } else { 10_000 };
    let budget = Duration::from_secs(if opt.quick { 20 } else { 100 });
    let warm = 200;
    for _ in 0..warm {
        let r = rig.pass().await;
        assert!(r.converged() && r.plan.actions.is_empty(), "not steady");
    }
    let (rss_warm, _) = rss_kib();
    let (anon_warm, _) = rss_parts_kib();
    let heap_warm = heap::Heap::now();
    let calls_warm = rig.libvirt_calls();
    let t = Instant::now();
    let mut done = warm;
    let mut series = vec![(done, anon_warm, heap_warm)];
    while done < wanted {
        rig.pass().await;
        done += 1;
        if done % 1000 == 0 {
            series.push((done, rss_parts_kib().0, heap::Heap::now()));
            if t.elapsed() > budget && done >= 2000 {
                break;
            }
        }
    }
    let pass_ms = ms(t.elapsed()) / (done - warm) as f64;
    let calls = (rig.libvirt_calls() - calls_warm) as f64 / (done - warm) as f64;
    let (rss_end, _) = rss_kib();
    let (anon_end, _) = rss_parts_kib();
    let heap_end = heap::Heap::now();
    if done < wanted {
        rep.notes.push(format!(
            "{CASE}: scaled down from {wanted} to {done} passes to stay within the time budget"
        ));
    }
    rep.row(
        CASE,
        format!("RSS after {warm} passes (warm)"),
        mib(rss_warm),
        "MiB",
        "",
        None,
    );
    rep.row(
        CASE,
        format!("RSS after {done} passes"),
        mib(rss_end),
        "MiB",
        "",
        None,
    );
    rep.row(
        CASE,
        format!("RssAnon after {warm} passes (warm)"),
        mib(anon_warm),
        "MiB",
        "",
        None,
    );
    rep.row(
        CASE,
        format!("RssAnon after {done} passes"),
        mib(anon_end),
        "MiB",
        "≤ 16 (issue 18, hangar alone)",
        Some(anon_end <= 16 * 1024),
    );
    rep.row(
        CASE,
        format!("RssAnon growth from pass {warm} to {done}"),
        growth_mib(anon_warm, anon_end),
        "MiB",
        "≤ max(2 %, 2 MiB)",
        Some(is_flat(anon_warm, anon_end)),
    );
    heap::heap_rows(
        rep,
        CASE,
        [
            "live Rust heap (hangar, tokio)",
            "C heap in use (libvirt's remote client)",
            "free bytes in malloc's arenas (each pass trims their pages)",
        ],
        (warm, done),
        (heap_warm, heap_end),
    );
    heap::trim();
    let (anon_trimmed, _) = rss_parts_kib();
    rep.row(
        CASE,
        format!("  RssAnon at pass {done}, then after malloc_trim(0)"),
        mib(anon_trimmed),
        "MiB",
        "",
        None,
    );
    rep.row(
        CASE,
        format!("mean steady pass over those {} passes", done - warm),
        pass_ms,
        "ms",
        "",
        None,
    );
    rep.row(
        CASE,
        "libvirt round trips per pass (all hosts)",
        calls,
        "calls",
        format!("{hosts}"),
        Some(calls <= hosts as f64),
    );
    rep.notes.push(format!(
        "{CASE} series (pass: RssAnon / Rust heap / C heap / malloc free, MiB): {}; {} threads",
        series
            .iter()
            .map(|(n, anon, h)| format!(
                "{n}: {} / {} / {} / {}",
                mib(*anon),
                mib(h.rust),
                mib(h.c_side()),
                mib(h.malloc_free)
            ))
            .collect::<Vec<_>>()
            .join(", "),
        status_kib("Threads:")
    ));
    let Alone { engine, sim, .. } = rig;
    drop(engine);
    drop(sim);
}
