//! What one reconcile pass costs, measured on an in-process world: N hosts on
//! libvirt's test driver (a private `test:///…/node.xml` each), the GitHub
//! simulator over loopback HTTP, the real provisioner and engine.
//!
//! Calls are counted three ways: `Metered` wraps each host's `Hypervisor`
//! (calls by kind, injectable latency), `LibvirtHost::libvirt_calls` counts
//! libvirt round trips under it, and the simulator counts requests by route
//! and status. The cases (P1–P9) are described in `docs/performance.md`;
//! the table is printed and written to `target/bench/report.json`.
//!
//! `cargo bench --bench fleet`. After `--`: `--quick` (a smoke run),
//! `--cases=p2,p3` (a subset; P1 always runs, it builds the rig),
//! `--cases=alone` (P4 with the hosts in libvirtd and GitHub in a process
//! of its own; needs libvirtd, not in the default set),
//! `--plan-scan` (`plan()` alone from 1,000 to 100,000 slots),
//! `--converge=N` (time a cold converge of N slots on 10 hosts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hangar::fleet::{load_str, LoadedFleet};
use hangar::model::host::{DomainType, HostFacts, NetworkAttachment};
use hangar::model::names::ownership_label;
use hangar::model::ownership::Ownership;
use hangar::plan::model::{
    Action, Desired, Observation, Observed, ObservedRunner, ObservedVm, RunnerStatus, VmState,
};
use hangar::plan::planner;
use hangar::providers::hooked::{Hook, Hooked, HvCall, HvOp, Made};
use hangar::providers::libvirt::{HostConfig, LibvirtHost};
use hangar::providers::{Hypervisor, RetryPolicy, RunnerRegistry};
use hangar::reconcile::engine::{Engine, PassResult};
use hangar::reconcile::{Limits, SystemClock};
use hangar::sim::{self, Latency, SimConfig, SimHandle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

#[path = "../tests/support/served.rs"]
mod served;
#[path = "../tests/support/wiring.rs"]
mod wiring;

// Under `cases/`: a file directly in `benches/` would be a bench target
// of its own.
#[path = "cases/alone_case.rs"]
mod alone_case;
#[path = "cases/cron_case.rs"]
mod cron_case;
#[path = "cases/heap.rs"]
mod heap;
#[path = "cases/hung_case.rs"]
mod hung_case;
#[path = "cases/pace_case.rs"]
mod pace_case;
#[path = "cases/scale_case.rs"]
mod scale_case;
#[path = "../tests/kit/virsh.rs"]
mod virsh;

/// Counts the Rust heap for P4 (see `heap`).
#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;

const FLEET: &str = "bench";
const OWNER: &str = "bench-org";
const REPO: &str = "fleet";
const STORAGE_POOL: &str = "hangar-bench";
const BASE_IMAGE: &str = "base.qcow2";
const TOKEN: &str = "bench-token";
/// GitHub's primary budget for a token, per hour.
const BUDGET_PER_HOUR: f64 = 5000.0;
/// Runners per page of the list (GitHub's maximum).
const PAGE: u64 = 100;

// ---------------------------------------------------------------------------
// The counting, slowable hypervisor.

/// Counts every call made of a host by kind, and delays the mutating ones by
/// the injected latency.
#[derive(Default)]
struct Meter {
    calls: [AtomicU64; HvOp::ALL.len()],
    mutation_ms: AtomicU64,
}

/// A host as the engine sees it, metered.
type Metered = Hooked<LibvirtHost, Meter>;

impl Meter {
    fn count(&self, op: HvOp) -> u64 {
        self.calls[op as usize].load(Ordering::Relaxed)
    }

    fn mutations(&self) -> u64 {
        HvOp::ALL
            .iter()
            .filter(|op| op.mutating())
            .map(|op| self.count(*op))
            .sum()
    }
}

impl Hook for Meter {
    fn around<'a, T: Send + 'a>(
        &'a self,
        _host: &'a str,
        call: HvCall<'a>,
        made: Made<'a, T>,
    ) -> Made<'a, T> {
        let op = call.op();
        self.calls[op as usize].fetch_add(1, Ordering::Relaxed);
        let ms = if op.mutating() {
            self.mutation_ms.load(Ordering::Relaxed)
        } else {
            0
        };
        Box::pin(async move {
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            made.await
        })
    }
}

// ---------------------------------------------------------------------------
// The in-process world.

/// A test-driver host `name` at `uri`, its console logs under `dir`.
fn host_config(name: &str, uri: String, dir: &Path) -> HostConfig {
    HostConfig {
        name: name.to_string(),
        uri,
        storage_pool: STORAGE_POOL.into(),
        network: NetworkAttachment::None,
        domain_type: None,
        console_dir: Some(dir.join("console")),
        volume_record: None,
        observed: None,
        image_dirs: Vec::new(),
    }
}

/// A test-driver node big enough for any case here: 1,024 cpus, 2 TiB, and
/// a 1 PB dir pool holding the base image.
fn node_xml() -> String {
    format!(
        "<node>
  <cpu><mhz>2000</mhz><model>bench</model><active>1024</active><nodes>1</nodes>
    <sockets>1</sockets><cores>512</cores><threads>2</threads></cpu>
  <memory>{mem_kib}</memory>
  <pool type='dir'>
    <name>{STORAGE_POOL}</name>
    <capacity unit='bytes'>{cap}</capacity>
    <allocation unit='bytes'>0</allocation>
    <available unit='bytes'>{cap}</available>
    <source/>
    <target><path>/{STORAGE_POOL}</path></target>
    <volume type='file'>
      <name>{BASE_IMAGE}</name>
      <capacity unit='bytes'>2147483648</capacity>
      <allocation unit='bytes'>536870912</allocation>
      <target><path>/{STORAGE_POOL}/{BASE_IMAGE}</path><format type='qcow2'/></target>
    </volume>
  </pool>
</node>
",
        mem_kib = 2u64 << 30,
        cap = 1u64 << 50,
    )
}

fn host_name(i: usize) -> String {
    format!("h{i:02}")
}

/// One ephemeral pool of `runners` slots over `hosts` hosts.
fn fleet_yaml(runners: usize, hosts: usize, concurrency: Option<(u32, u32)>) -> String {
    let mut y = format!(
        "apiVersion: hangar/v1
kind: Fleet
metadata:
  name: {FLEET}
spec:
  github:
    repository: {OWNER}/{REPO}
    simulator: true
  hosts:
"
    );
    for i in 0..hosts {
        y.push_str(&format!(
            "    - name: {}\n      uri: sandbox\n      storagePool: {STORAGE_POOL}\n",
            host_name(i)
        ));
    }
    y.push_str(&format!(
        "  pools:
    - name: pr
      count: {runners}
      ephemeral: true
      labels: [bench]
      vm:
        cpus: 1
        memory: 512MiB
        disk: 4GiB
        image: {BASE_IMAGE}
"
    ));
    if let Some((global, per_host)) = concurrency {
        y.push_str(&format!(
            "  policy:\n    concurrency:\n      global: {global}\n      perHost: {per_host}\n"
        ));
    }
    y
}

fn load(runners: usize, hosts: usize, concurrency: Option<(u32, u32)>) -> LoadedFleet {
    let text = fleet_yaml(runners, hosts, concurrency);
    load_str("bench.yaml", &text).unwrap_or_else(|e| panic!("bench fleet file: {e}"))
}

/// GitHub, the hosts and the engine of one fleet.
struct Rig {
    _dir: tempfile::TempDir,
    sim: SimHandle,
    hosts: Vec<Arc<Metered>>,
    engine: Engine,
    fleet: LoadedFleet,
    runners: usize,
}

/// Call counters at one moment, to subtract.
#[derive(Debug, Clone, Default)]
struct Tally {
    libvirt: Vec<u64>,
    by_kind: BTreeMap<&'static str, u64>,
    mutations: u64,
    github: sim::SimStats,
}

impl Rig {
    async fn new(runners: usize, hosts: usize, concurrency: Option<(u32, u32)>) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let fleet = load(runners, hosts, concurrency);
        let mut metered = Vec::new();
        let mut world_hosts: BTreeMap<String, Arc<dyn Hypervisor>> = BTreeMap::new();
        for i in 0..hosts {
            let name = host_name(i);
            let node = dir.path().join(format!("{name}.xml"));
            std::fs::write(&node, node_xml()).expect("node file");
            let lv = LibvirtHost::connect(host_config(
                &name,
                format!("test://{}", node.display()),
                dir.path(),
            ))
            .unwrap_or_else(|e| panic!("test driver host {name}: {e}"));
            assert_eq!(lv.domain_type(), DomainType::Test);
            let m = Arc::new(Metered::new(Arc::new(lv), Meter::default()));
            metered.push(m.clone());
            world_hosts.insert(name, wiring::retrying(m, RetryPolicy::LIBVIRT, None));
        }
        Rig::assemble(dir, metered, fleet, world_hosts, runners).await
    }

    /// The rig around `world_hosts`: the simulator, and the engine with the
    /// fleet's concurrency limits.
    async fn assemble(
        dir: tempfile::TempDir,
        hosts: Vec<Arc<Metered>>,
        fleet: LoadedFleet,
        world_hosts: BTreeMap<String, Arc<dyn Hypervisor>>,
        runners: usize,
    ) -> Rig {
        // JIT mints draw on GitHub's registration bucket (10,000/h), not the
        // core 5,000/h the simulator models; building 5,000 slots would
        // exhaust the latter. The budget *cost* is read from the counters.
        let mut config = SimConfig::new(TOKEN);
        config.rate_limit = 1_000_000;
        let sim = sim::start(config).await.expect("github simulator");
        let registry = wiring::registry(&sim, OWNER, REPO, TOKEN, Some(Duration::from_secs(30)));
        let registry = wiring::retrying_registry(registry, RetryPolicy::GITHUB, None);
        let engine = measured_engine(&fleet, world_hosts, Arc::new(registry));
        Rig {
            _dir: dir,
            sim,
            hosts,
            engine,
            fleet,
            runners,
        }
    }

    async fn pass(&self) -> PassResult {
        let cancel = CancellationToken::new();
        wiring::pass(
            &self.engine,
            &self.fleet,
            false,
            &cancel,
            Duration::from_secs(60),
        )
        .await
    }

    /// What booted guests do: every offline runner of the scope runs its
    /// JIT config and comes online (through the simulator, as `run.sh`).
    fn guests_come_up(&self) -> usize {
        let offline: Vec<u64> = wiring::runners(&self.sim, &format!("repos/{OWNER}/{REPO}"))
            .into_iter()
            .filter(|r| r.status == "offline")
            .map(|r| r.id)
            .collect();
        for id in &offline {
            self.sim.set_online(*id, true).expect("runner online");
        }
        offline.len()
    }

    /// Passes until converged, the guests coming up between passes.
    async fn converge(&self) -> usize {
        let mut kinds = BTreeMap::new();
        for n in 1..=8 {
            let r = self.pass().await;
            if let Some(report) = &r.report {
                assert_eq!(
                    report.failed(),
                    0,
                    "failed actions: {:?}",
                    report.failures().next()
                );
            }
            if r.converged() {
                return n;
            }
            kinds.clear();
            for a in &r.plan.actions {
                let json = serde_json::to_value(a).unwrap_or_default();
                let kind = json["action"].as_str().unwrap_or_default().to_string();
                *kinds.entry(kind).or_insert(0) += 1;
            }
            if let Some(a) = r.plan.actions.first() {
                kinds.insert(format!("first: {a:?}"), 1);
            }
            self.guests_come_up();
        }
        panic!(
            "{} runners did not converge in 8 passes; last plan: {kinds:?}",
            self.runners
        );
    }

    fn tally(&self) -> Tally {
        let mut by_kind = BTreeMap::new();
        for (op, name) in HvOp::ALL.iter().zip([
            "facts",
            "observe",
            "create",
            "start",
            "delete",
            "remove_seed",
            "cache_usage",
            "ensure_network",
            "remove_network",
            "remove_leftover",
            "ensure_runner_volume",
        ]) {
            by_kind.insert(name, self.hosts.iter().map(|h| h.hook.count(*op)).sum());
        }
        Tally {
            libvirt: self.hosts.iter().map(|h| h.inner.libvirt_calls()).collect(),
            by_kind,
            mutations: self.hosts.iter().map(|h| h.hook.mutations()).sum(),
            github: self.sim.stats(),
        }
    }

    fn set_latency(&self, libvirt_mutation_ms: u64, github_ms: u64) {
        for h in &self.hosts {
            h.hook
                .mutation_ms
                .store(libvirt_mutation_ms, Ordering::Relaxed);
        }
        self.sim.set_latency((github_ms > 0).then_some(Latency {
            ms: github_ms,
            route: None,
        }));
    }

    async fn shutdown(self) {
        let Rig { sim, engine, .. } = self;
        drop(engine);
        let _ = sim.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// The report.

#[derive(Debug, Clone, Serialize)]
struct Row {
    case: &'static str,
    metric: String,
    value: f64,
    unit: &'static str,
    goal: String,
    /// `None`: informational.
    met: Option<bool>,
}

#[derive(Default, Serialize)]
struct Report {
    command: String,
    machine: String,
    started: String,
    seconds: f64,
    notes: Vec<String>,
    rows: Vec<Row>,
}

impl Report {
    fn row(
        &mut self,
        case: &'static str,
        metric: impl Into<String>,
        value: f64,
        unit: &'static str,
        goal: impl Into<String>,
        met: Option<bool>,
    ) {
        let row = Row {
            case,
            metric: metric.into(),
            value,
            unit,
            goal: goal.into(),
            met,
        };
        eprintln!(
            "  {:<3} {:<58} {:>12} {}",
            row.case,
            row.metric,
            fmt_value(row.value),
            row.unit
        );
        self.rows.push(row);
    }

    fn table(&self) -> String {
        let mut out = String::new();
        out.push_str("| case | metric | value | unit | goal | met |\n");
        out.push_str("|---|---|---:|---|---|---|\n");
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.case,
                r.metric,
                fmt_value(r.value),
                r.unit,
                r.goal,
                met
            ));
        }
        out
    }
}

fn fmt_value(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e12 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    (status_kib("VmRSS:"), status_kib("VmHWM:"))
}

/// The anonymous part of this process's RSS (`RssAnon`: heap and stacks,
/// what a leak grows) and the file-backed part (`RssFile`: mapped
/// binaries and libraries, paged in as code first runs), in KiB.
fn rss_parts_kib() -> (u64, u64) {
    (status_kib("RssAnon:"), status_kib("RssFile:"))
}

/// One `kB` field of `/proc/self/status`; 0 where the kernel has none.
fn status_kib(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Reset `VmHWM` to the current RSS (Linux ≥ 4.0), so that the next peak
/// read belongs to what runs after.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// From `from` to `to` KiB, in MiB, negative when it shrank.
fn growth_mib(from: u64, to: u64) -> f64 {
    if to >= from {
        mib(to - from)
    } else {
        -mib(from - to)
    }
}

/// P4's flatness goal: grown by at most 2 % or 2 MiB.
fn is_flat(from: u64, to: u64) -> bool {
    to.saturating_sub(from) as f64 <= (from as f64 * 0.02).max(2048.0)
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

// ---------------------------------------------------------------------------
// The cases.

struct Options {
    quick: bool,
}

/// P1: a converged fleet of 500 runners on 10 hosts, passes that change
/// nothing. Returns the rig for P2 and P4.
async fn p1_steady_state(rep: &mut Report, opt: &Options) -> Rig {
    let (runners, hosts) = if opt.quick { (120, 4) } else { (500, 10) };
    reset_peak_rss();
    let (rss_before, _) = rss_kib();
    let rig = Rig::new(runners, hosts, Some((64, 16))).await;
    let t = Instant::now();
    let passes = rig.converge().await;
    let converge_time = t.elapsed();
    let (_, hwm_converge) = rss_kib();
    rep.notes.push(format!(
        "P1 setup: {runners} runners on {hosts} hosts converged in {passes} passes, {:.1} s \
         (limits 64/16 for setup only)",
        converge_time.as_secs_f64()
    ));

    // Warm: one pass after convergence fills every cache.
    rig.pass().await;
    let steady = if opt.quick { 3 } else { 10 };
    let before = rig.tally();
    for _ in 0..steady {
        let r = rig.pass().await;
        assert!(r.converged() && r.plan.actions.is_empty(), "not steady");
    }
    let after = rig.tally();
    let n = steady as f64;
    let per_host: Vec<f64> = after
        .libvirt
        .iter()
        .zip(&before.libvirt)
        .map(|(a, b)| (a - b) as f64 / n)
        .collect();
    let worst = per_host.iter().cloned().fold(0.0, f64::max);
    rep.row(
        "P1",
        format!("libvirt round trips per host per pass (worst of {hosts})"),
        worst,
        "calls",
        "1",
        Some(worst <= 1.0),
    );
    for kind in ["facts", "observe"] {
        rep.row(
            "P1",
            format!("Hypervisor::{kind} calls per host per pass"),
            (after.by_kind[kind] - before.by_kind[kind]) as f64 / n / hosts as f64,
            "calls",
            "",
            None,
        );
    }
    let gh_total = (after.github.total - before.github.total) as f64 / n;
    let gh_304 = (after.github.not_modified - before.github.not_modified) as f64 / n;
    let gh_cost = (after.github.rate_limited_cost - before.github.rate_limited_cost) as f64 / n;
    let pages = (runners as u64).div_ceil(PAGE) as f64;
    rep.row(
        "P1",
        "GitHub requests per pass",
        gh_total,
        "requests",
        format!("{pages} (⌈{runners}/100⌉)"),
        Some(gh_total <= pages),
    );
    rep.row(
        "P1",
        "GitHub answers 304 Not Modified per pass",
        gh_304,
        "requests",
        format!("{pages} (all)"),
        Some(gh_304 == gh_total),
    );
    let mutations = (after.mutations - before.mutations) as f64
        + (wiring::github_writes(&after.github) - wiring::github_writes(&before.github)) as f64;
    rep.row(
        "P1",
        "mutating calls per pass (libvirt + GitHub)",
        mutations / n,
        "calls",
        "0",
        Some(mutations == 0.0),
    );
    rep.row(
        "P1",
        "GitHub requests per hour at a 1-minute interval",
        gh_total * 60.0,
        "req/h",
        "",
        None,
    );
    rep.row(
        "P1",
        "GitHub budget cost per hour at a 1-minute interval",
        gh_cost * 60.0,
        "req/h",
        format!("≤ {BUDGET_PER_HOUR} (304s are free)"),
        Some(gh_cost * 60.0 <= BUDGET_PER_HOUR),
    );
    rep.row(
        "P1",
        "budget share used at a 1-minute interval",
        gh_cost * 60.0 / BUDGET_PER_HOUR * 100.0,
        "%",
        "",
        None,
    );

    rep.row(
        "P4",
        format!("peak RSS, cold converge of {runners} runners (whole process)"),
        mib(hwm_converge),
        "MiB",
        "",
        None,
    );
    rep.notes.push(format!(
        "P4: RSS before the {runners}-runner rig was built: {} MiB; the process holds the \
         simulator and {hosts} test-driver hosts too",
        mib(rss_before)
    ));
    rig
}

/// Median time of `count` steady passes.
async fn steady_pass_time(rig: &Rig, count: usize) -> Duration {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        let r = rig.pass().await;
        times.push(t.elapsed());
        assert!(r.plan.actions.is_empty(), "not steady");
    }
    median(times)
}

/// Where a steady pass's time goes: observation (hosts and GitHub at
/// once), resolution, planning.
async fn pass_breakdown(rep: &mut Report, rig: &Rig) {
    let (mut observe, mut resolve, mut plan) = (Vec::new(), Vec::new(), Vec::new());
    let (mut github, mut libvirt) = (Vec::new(), Vec::new());
    let clock = SystemClock;
    for _ in 0..10 {
        let t = Instant::now();
        rig.engine.world.registry.observe().await.expect("runners");
        github.push(t.elapsed());
        let t = Instant::now();
        futures::future::join_all(rig.hosts.iter().map(|h| async move {
            let _ = tokio::join!(h.facts(), h.observe(FLEET));
        }))
        .await;
        libvirt.push(t.elapsed());
        let t = Instant::now();
        let snapshot = rig.engine.world.observe(&clock).await;
        observe.push(t.elapsed());
        let t = Instant::now();
        let desired = rig
            .fleet
            .resolve(&snapshot.known_facts(), &snapshot.placement())
            .unwrap_or_else(|e| panic!("resolve: {e}"));
        resolve.push(t.elapsed());
        let t = Instant::now();
        let p = planner::plan(&desired, &snapshot.observed, snapshot.taken_at);
        plan.push(t.elapsed());
        assert!(p.actions.is_empty(), "not steady");
    }
    for (what, times) in [
        ("observe (10 hosts + GitHub, concurrent)", observe),
        ("GitHub list alone", github),
        ("10 hosts' facts + listing alone", libvirt),
        ("resolve", resolve),
        ("plan", plan),
    ] {
        rep.row(
            "P2",
            format!("  of which {what} at {} (median)", rig.runners),
            ms(median(times)),
            "ms",
            "",
            None,
        );
    }
}

/// P2: pass time at three sizes (no injected latency), and `plan()` alone.
async fn p2_pass_time(rep: &mut Report, opt: &Options, rig500: &Rig) {
    let sizes: Vec<usize> = if opt.quick {
        vec![50, rig500.runners, 1000]
    } else {
        vec![50, 500, 5000]
    };
    let mut per_slot = Vec::new();
    for &n in &sizes {
        let (time, setup) = if n == rig500.runners {
            (steady_pass_time(rig500, 20).await, None)
        } else {
            let rig = Rig::new(n, 10, Some((64, 16))).await;
            let t = Instant::now();
            rig.converge().await;
            let setup = t.elapsed();
            rig.pass().await;
            let time = steady_pass_time(&rig, if n >= 5000 { 10 } else { 20 }).await;
            if n == sizes[sizes.len() - 1] {
                pass_breakdown(rep, &rig).await;
            }
            rig.shutdown().await;
            (time, Some(setup))
        };
        if let Some(s) = setup {
            rep.notes.push(format!(
                "P2 setup: {n} runners converged in {:.1} s",
                s.as_secs_f64()
            ));
        }
        rep.row(
            "P2",
            format!("steady pass, {n} runners on 10 hosts (median)"),
            ms(time),
            "ms",
            "",
            None,
        );
        let us = ms(time) * 1000.0 / n as f64;
        rep.row("P2", format!("  per slot at {n}"), us, "µs", "", None);
        per_slot.push((n, us));
    }
    let (n0, a) = per_slot[per_slot.len() - 2];
    let (n1, b) = per_slot[per_slot.len() - 1];
    let growth = b / a;
    rep.row(
        "P2",
        format!("pass growth: time per slot at {n1} / at {n0}"),
        growth,
        "×",
        "≈ 1 (linear), ≤ 1.5",
        Some(growth <= 1.5),
    );

    // plan() alone on a synthetic converged world, and on an empty one.
    let big = if opt.quick { 2000 } else { 10_000 };
    let small = big / 10;
    let mut converged = Vec::new();
    for n in [small, big] {
        let (desired, observed) = synthetic(n, 10);
        let now = Utc::now();
        let check = planner::plan(&desired, &observed, now);
        assert!(check.actions.is_empty(), "synthetic world not converged");
        let reps = if n >= 10_000 { 7 } else { 21 };
        let mut times = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let p = planner::plan(&desired, &observed, now);
            times.push(t.elapsed());
            std::hint::black_box(p);
        }
        let t = median(times);
        rep.row(
            "P2",
            format!("plan() alone, {n} slots converged (median)"),
            ms(t),
            "ms",
            "",
            None,
        );
        converged.push((n, ms(t) * 1000.0 / n as f64));

        let empty = Observed {
            hosts: observed
                .hosts
                .keys()
                .map(|h| (h.clone(), Observation::Seen { items: Vec::new() }))
                .collect(),
            runners: Observation::Seen { items: Vec::new() },
            foreign_names: Default::default(),
            host_state: Default::default(),
        };
        let t = Instant::now();
        let p = planner::plan(&desired, &empty, now);
        let cold = t.elapsed();
        assert_eq!(
            p.actions
                .iter()
                .filter(|a| matches!(a, Action::Create { .. }))
                .count(),
            n
        );
        if n == big {
            rep.row(
                "P2",
                format!("plan() alone, {n} slots from nothing ({n} creates)"),
                ms(cold),
                "ms",
                "",
                None,
            );
        }
    }
    rep.row(
        "P2",
        format!("  plan() per slot at {big}"),
        converged[1].1,
        "µs",
        "",
        None,
    );
    let growth = converged[1].1 / converged[0].1;
    rep.row(
        "P2",
        format!("plan() growth: time per slot at {big} / at {small}"),
        growth,
        "×",
        "≈ 1 (linear), ≤ 1.5",
        Some(growth <= 1.5),
    );
}

/// A converged world of `n` slots on `hosts` hosts, without any I/O.
fn synthetic(n: usize, hosts: usize) -> (Desired, Observed) {
    let fleet = load(n, hosts, None);
    let facts: BTreeMap<String, HostFacts> = (0..hosts)
        .map(|i| {
            (
                host_name(i),
                HostFacts {
                    memory_bytes: 1 << 50,
                    cpus: 1 << 20,
                    pool_free_bytes: None,
                    domain_type: DomainType::Test,
                    domain_type_reason: "synthetic".into(),
                    identity: None,
                    foreign: Default::default(),
                },
            )
        })
        .collect();
    let desired = fleet
        .resolve(&facts, &BTreeMap::new())
        .unwrap_or_else(|e| panic!("resolve: {e}"));
    let label = ownership_label(FLEET);
    let created_at = Utc::now() - chrono::Duration::hours(1);
    let mut vms: BTreeMap<String, Vec<ObservedVm>> = BTreeMap::new();
    let mut runners = Vec::new();
    for (i, slot) in desired.slots.iter().enumerate() {
        vms.entry(slot.host.clone()).or_default().push(ObservedVm {
            name: slot.name.clone(),
            uuid: format!("00000000-0000-4000-8000-{i:012}"),
            host: slot.host.clone(),
            state: VmState::Running,
            owner: Ownership {
                fleet: FLEET.into(),
                pool: slot.pool.clone(),
                slot: slot.name.clone(),
                index: slot.index,
                generation: 1,
                spec_hash: slot.spec_hash.clone(),
                created_at,
                ephemeral: slot.ephemeral,
                boot_failures: 0,
                shape: slot.vm.clone(),
            },
            guest: None,
            guest_since: None,
            seed_attached: false,
            drain: None,
        });
        let mut labels = slot.labels.clone();
        labels.push(label.clone());
        runners.push(ObservedRunner {
            id: i as u64 + 1,
            name: slot.name.clone(),
            status: RunnerStatus::Online,
            busy: false,
            labels,
            offline_since: None,
        });
    }
    let observed = Observed {
        hosts: (0..hosts)
            .map(|i| {
                let h = host_name(i);
                let items = vms.remove(&h).unwrap_or_default();
                (h, Observation::Seen { items })
            })
            .collect(),
        runners: Observation::Seen { items: runners },
        foreign_names: Default::default(),
        host_state: Default::default(),
    };
    (desired, observed)
}

/// The engine the bench measures: `fleet`'s concurrency limits, a 1 s
/// poll, the system clock, no runner supply.
fn measured_engine(
    fleet: &LoadedFleet,
    world_hosts: BTreeMap<String, Arc<dyn Hypervisor>>,
    registry: Arc<dyn hangar::providers::RunnerRegistry>,
) -> Engine {
    let c = fleet.concurrency();
    Engine {
        limits: Limits {
            global: c.global as usize,
            per_host: c.per_host.map(|n| n as usize),
        },
        poll: Duration::from_secs(1),
        ..wiring::engine(fleet, world_hosts, registry, Arc::new(SystemClock), None)
    }
}

/// The schedule of one pass's actions under the limits, in ideal form:
/// `k` equal actions of `d` each, `per_host` of them on each of `hosts`
/// hosts, `global`/`per_host` permits. Returns the lower bound on its time.
fn ideal_phase(k: u64, hosts: u64, global: u64, per_host: u64, d: Duration) -> Duration {
    if k == 0 {
        return Duration::ZERO;
    }
    let per_host_actions = k.div_ceil(hosts);
    let rounds = k
        .div_ceil(global.min(hosts * per_host))
        .max(per_host_actions.div_ceil(per_host));
    d * rounds as u32
}

/// P3: cold converge of 100 slots, 200 ms per libvirt mutation, 300 ms per
/// GitHub request; hangar's limits against one action at a time.
async fn p3_cold_converge(rep: &mut Report, opt: &Options) {
    let (slots, hosts) = if opt.quick { (20, 4) } else { (100, 10) };
    let (mut_ms, gh_ms) = (200u64, 300u64);
    let mut results = Vec::new();
    for sequential in [false, true] {
        // The limits this case models (8/2, the file's defaults before
        // issue 18), not today's defaults, which come from each host's cpus.
        let concurrency = Some(if sequential { (1, 1) } else { (8, 2) });
        let rig = Rig::new(slots, hosts, concurrency).await;
        let limits = rig.engine.limits;
        rig.set_latency(mut_ms, gh_ms);
        let before = rig.tally();
        let t = Instant::now();
        let mut passes = Vec::new();
        loop {
            let p = Instant::now();
            let r = rig.pass().await;
            let actions = r.plan.actions.iter().filter(|a| a.is_mutating()).count();
            passes.push((p.elapsed(), actions));
            if r.converged() {
                break;
            }
            assert!(passes.len() < 8, "cold converge did not finish");
            rig.guests_come_up();
        }
        let wall = t.elapsed();
        let after = rig.tally();
        results.push((limits, wall, passes, before, after));
        rig.shutdown().await;
    }
    let (limits, wall, passes, before, after) = &results[0];
    let (_, seq_wall, seq_passes, ..) = &results[1];
    let creates = after.by_kind["create"] - before.by_kind["create"];
    let seeds = after.by_kind["remove_seed"] - before.by_kind["remove_seed"];
    let gh = after.github.total - before.github.total;
    assert_eq!(creates as usize, slots, "creates");
    assert_eq!(seeds as usize, slots, "seed removals");
    assert_eq!(
        passes.iter().map(|p| p.1).collect::<Vec<_>>(),
        seq_passes.iter().map(|p| p.1).collect::<Vec<_>>(),
        "both runs must do the same actions"
    );

    // Ideal: per pass, the runner list (one page per 100 runners, in
    // sequence) plus the execution phase scheduled perfectly under the
    // limits; a create holds its permits for its JIT mint and its libvirt
    // create, a seed removal for its libvirt call.
    let gh_d = Duration::from_millis(gh_ms);
    let mut_d = Duration::from_millis(mut_ms);
    let (g, h) = (
        limits.global as u64,
        limits.per_host.expect("P3 sets its limits") as u64,
    );
    let n = hosts as u64;
    let k = slots as u64;
    let list = |runners: u64| gh_d * runners.div_ceil(PAGE).max(1) as u32;
    let ideal = list(0)
        + ideal_phase(k, n, g, h, gh_d + mut_d)
        + list(k)
        + ideal_phase(k, n, g, h, mut_d)
        + list(k);
    let serial = list(0) + (gh_d + mut_d) * k as u32 + list(k) + mut_d * k as u32 + list(k);

    rep.row(
        "P3",
        format!(
            "cold converge of {slots} slots on {hosts} hosts, limits {g}/{h} ({} passes)",
            passes.len()
        ),
        wall.as_secs_f64(),
        "s",
        "",
        None,
    );
    rep.row(
        "P3",
        "same actions one at a time (limits 1/1)",
        seq_wall.as_secs_f64(),
        "s",
        format!("model {:.1} s", serial.as_secs_f64()),
        None,
    );
    rep.row(
        "P3",
        "speed-up over one at a time",
        seq_wall.as_secs_f64() / wall.as_secs_f64(),
        "×",
        format!("model {:.1}×", serial.as_secs_f64() / ideal.as_secs_f64()),
        None,
    );
    rep.row(
        "P3",
        format!("ideal bound under limits {g}/{h}"),
        ideal.as_secs_f64(),
        "s",
        "",
        None,
    );
    let over = wall.as_secs_f64() / ideal.as_secs_f64();
    rep.row(
        "P3",
        "hangar / ideal bound",
        over,
        "×",
        "≤ 1.15",
        Some(over <= 1.15),
    );
    rep.row(
        "P3",
        "GitHub requests during the cold converge",
        gh as f64,
        "requests",
        format!("{} (list per pass + 1 JIT per slot)", passes.len() + slots),
        Some(gh as usize <= passes.len() + slots),
    );
    for (i, (d, actions)) in passes.iter().enumerate() {
        rep.notes.push(format!(
            "P3 pass {}: {actions} mutating actions, {:.2} s (one at a time: {:.2} s)",
            i + 1,
            d.as_secs_f64(),
            seq_passes[i].0.as_secs_f64()
        ));
    }
}

/// P4: RSS over many steady passes at 500 runners.
/// P5 (issue 18): the runner list of 5,000 runners (50 pages) with 300 ms
/// of GitHub latency per request: the pages after the first go at once.
async fn p5_runner_pages(rep: &mut Report, opt: &Options) {
    let (runners, latency_ms) = if opt.quick { (1000, 100) } else { (5000, 300) };
    let mut config = SimConfig::new(TOKEN);
    config.rate_limit = 1_000_000;
    let sim = sim::start(config).await.expect("github simulator");
    sim.add_runners(
        &format!("repos/{OWNER}/{REPO}"),
        "other",
        runners as u32,
        &[],
    )
    .expect("runners");
    let registry = wiring::registry(&sim, OWNER, REPO, TOKEN, Some(Duration::from_secs(30)));
    sim.set_latency(Some(Latency {
        ms: latency_ms,
        route: Some("actions/runners".into()),
    }));
    let latency = Duration::from_millis(latency_ms);
    for what in ["first (200s)", "next (304s)"] {
        let t = Instant::now();
        let seen = registry.observe().await.expect("runner list");
        let took = t.elapsed();
        assert_eq!(seen.len(), runners);
        let ratio = took.as_secs_f64() / latency.as_secs_f64();
        rep.row(
            "P5",
            format!(
                "runner list {runners} runners, {latency_ms} ms latency: {what} pass / latency"
            ),
            ratio,
            "x",
            "≤ 2 (issue 18)",
            Some(ratio <= 2.0),
        );
    }
    let stats = sim.stats();
    let list = "GET /repos/{owner}/{repo}/actions/runners";
    rep.notes.push(format!(
        "P5: {} list requests over two passes, {} of them 304",
        stats.count(list),
        stats.count_status(list, 304)
    ));
    let _ = sim.shutdown().await;
}

async fn p4_memory(rep: &mut Report, opt: &Options, rig: &Rig) {
    let wanted = if opt.quick { 500 } else { 10_000 };
    let budget = Duration::from_secs(if opt.quick { 20 } else { 100 });
    reset_peak_rss();
    let warm = 200;
    for _ in 0..warm {
        rig.pass().await;
    }
    let (rss_warm, peak_pass) = rss_kib();
    let (anon_warm, file_warm) = rss_parts_kib();
    let heap_warm = heap::Heap::now();
    rep.row(
        "P4",
        format!("peak RSS during steady passes at {} runners", rig.runners),
        mib(peak_pass),
        "MiB",
        "",
        None,
    );
    let t = Instant::now();
    let mut done = warm;
    let mut series = vec![(done, rss_warm)];
    while done < wanted {
        rig.pass().await;
        done += 1;
        if done % 1000 == 0 {
            series.push((done, rss_kib().0));
            if t.elapsed() > budget && done >= 2000 {
                break;
            }
        }
    }
    let (rss_end, _) = rss_kib();
    let (anon_end, file_end) = rss_parts_kib();
    let heap_end = heap::Heap::now();
    if done < wanted {
        rep.notes.push(format!(
            "P4: scaled down from {wanted} to {done} passes to stay within the time budget"
        ));
    }
    rep.row(
        "P4",
        format!("RSS after {warm} passes (warm)"),
        mib(rss_warm),
        "MiB",
        "",
        None,
    );
    rep.row(
        "P4",
        format!("RSS after {done} passes"),
        mib(rss_end),
        "MiB",
        "flat",
        None,
    );
    rep.row(
        "P4",
        format!("RSS growth from pass {warm} to {done}"),
        growth_mib(rss_warm, rss_end),
        "MiB",
        "≤ max(2 %, 2 MiB)",
        Some(is_flat(rss_warm, rss_end)),
    );
    // What a leak would grow is the anonymous part; the file-backed part
    // grows as code and libraries are paged in for the first time.
    rep.row(
        "P4",
        format!("  of which anonymous (RssAnon: heap, stacks) from pass {warm} to {done}"),
        growth_mib(anon_warm, anon_end),
        "MiB",
        "≤ max(2 %, 2 MiB)",
        Some(is_flat(anon_warm, anon_end)),
    );
    rep.row(
        "P4",
        format!("  of which file-backed (RssFile: code, libraries) from pass {warm} to {done}"),
        growth_mib(file_warm, file_end),
        "MiB",
        "",
        None,
    );
    rep.row(
        "P4",
        format!("mean steady pass over those {} passes", done - warm),
        ms(t.elapsed()) / (done - warm) as f64,
        "ms",
        "",
        None,
    );
    heap::report_growth(rep, (warm, done), (heap_warm, heap_end), anon_end);
    rep.notes.push(format!(
        "P4 RSS series (pass: MiB): {}",
        series
            .iter()
            .map(|(n, kib)| format!("{n}: {}", mib(*kib)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown cpu".into());
    format!("{cpus} cores, {model}")
}

fn report_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench").join("report.json")
}

fn main() {
    // As hangar's own `main` does, before any thread starts.
    hangar::malloc::limit_arenas();
    let args: Vec<String> = std::env::args().collect();
    // `RUST_LOG=…`: hangar's log on stderr (a retried call, a failure).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it, as a smoke test: the quick sizes, in debug mode.
    let opt = Options {
        quick: args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let mut rep = Report {
        command: if opt.quick {
            "cargo bench --bench fleet -- --quick".into()
        } else {
            "cargo bench --bench fleet".into()
        },
        machine: machine(),
        started: Utc::now().to_rfc3339(),
        ..Report::default()
    };
    eprintln!("hangar fleet bench ({})", rep.machine);
    if args.iter().any(|a| a == "--plan-scan") {
        for n in [1000usize, 3000, 10_000, 30_000, 100_000] {
            let (desired, observed) = synthetic(n, 10);
            let now = Utc::now();
            let mut times = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                std::hint::black_box(planner::plan(&desired, &observed, now));
                times.push(t.elapsed());
            }
            let t = median(times);
            eprintln!(
                "{n}: {:.2} ms, {:.3} µs/slot",
                ms(t),
                ms(t) * 1000.0 / n as f64
            );
        }
        return;
    }
    if let Some(n) = args.iter().find_map(|a| a.strip_prefix("--converge=")) {
        let n: usize = n.parse().expect("--converge=N");
        rt.block_on(async {
            let t = Instant::now();
            let rig = Rig::new(n, 10, Some((64, 16))).await;
            let passes = rig.converge().await;
            eprintln!("{n} runners: {passes} passes, {:?}", t.elapsed());
        });
        return;
    }
    // `--cases=p2,p3` runs a subset (P1 runs with any of P1-P4 and P8: it builds
    // the rig).
    // P9 needs the real libvirtd and makes real VMs: in a full run, or
    // when asked for (not in the smoke run of `cargo test --all-targets`).
    let cases = args
        .iter()
        .find_map(|a| a.strip_prefix("--cases="))
        .unwrap_or(if opt.quick {
            "p1,p2,p3,p4,p5,p6,p7,p8"
        } else {
            "p1,p2,p3,p4,p5,p6,p7,p8,p9"
        })
        .to_lowercase();
    rt.block_on(async {
        // P4 with the hosts and GitHub out of process: first, before any
        // in-process world is in this process's memory.
        if cases.contains("alone") {
            alone_case::p4_alone(&mut rep, &opt).await;
        }
        // P5 alone needs no rig.
        if ["p1", "p2", "p3", "p4", "p8"]
            .iter()
            .any(|c| cases.contains(c))
        {
            let rig = p1_steady_state(&mut rep, &opt).await;
            if cases.contains("p4") {
                p4_memory(&mut rep, &opt, &rig).await;
            }
            if cases.contains("p2") {
                p2_pass_time(&mut rep, &opt, &rig).await;
            }
            // After P4: the second world it connects would be in P4's RSS.
            if cases.contains("p8") {
                cron_case::p8_cron_mode(&mut rep, &opt, &rig).await;
            }
            rig.shutdown().await;
        }
        if cases.contains("p3") {
            p3_cold_converge(&mut rep, &opt).await;
        }
        if cases.contains("p5") {
            p5_runner_pages(&mut rep, &opt).await;
        }
        if cases.contains("p6") {
            scale_case::p6_scale(&mut rep, &opt).await;
        }
        if cases.contains("p7") {
            hung_case::p7_hung_host(&mut rep, &opt).await;
        }
        if cases.contains("p9") {
            pace_case::p9_host_pace(&mut rep, &opt).await;
        }
    });
    rep.seconds = started.elapsed().as_secs_f64();

    println!("\n{}", rep.table());
    for n in &rep.notes {
        println!("- {n}");
    }
    println!("- total {:.0} s on {}", rep.seconds, rep.machine);
    let path = report_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("report dir");
    }
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&rep).expect("report json"),
    )
    .expect("write report");
    println!("- written to {}", path.display());
    let missed = rep.rows.iter().filter(|r| r.met == Some(false)).count();
    if missed > 0 {
        println!("- {missed} goal(s) missed");
    }
}
