//! P7 (issue 14): one host that does not answer. A fleet on the usual
//! test-driver hosts plus one more host, all reached through
//! `hangar::assemble::LazyHost` (the connection path `assemble` gives every
//! libvirt host) with a short call deadline. The extra host answers for the
//! baseline; then it is a libvirt URI, `qemu+tcp://127.0.0.1:PORT/system`,
//! on a loopback listener that accepts every connection and never sends a
//! byte: libvirt's remote driver connects, sends its first RPC call and
//! waits for a reply that never comes, as with a libvirtd that hangs.
//!
//! Measured in one run: the steady pass with every host answering; the
//! first pass that meets the silent host (a fresh `LazyHost` each time, as
//! a `reconcile --once` or a reload meets it); a scale change on the
//! answering hosts made in such a pass; and the daemon's later passes,
//! whose connect is still parked.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar::assemble::LazyHost;
use hangar::fleet::{load_str, LoadedFleet};
use hangar::plan::model::{Action, Observation, WaitReason};
use hangar::providers::libvirt::HostConfig;
use hangar::providers::{Hypervisor, RetryPolicy};
use hangar::reconcile::engine::PassResult;
use tokio::task::JoinHandle;

use super::{
    host_config, host_name, median, ms, node_xml, wiring, Options, Report, Rig, BASE_IMAGE, OWNER,
    REPO, STORAGE_POOL,
};

const FLEET: &str = "far";
/// The pool on the answering hosts, and the one on the host that goes silent.
const NEAR: &str = "near";
const AWAY: &str = "away";

/// A fleet on `hosts` answering hosts (pool `near`, `near` runners) and
/// one more, the last (pool `away`, `away` runners), all ephemeral.
fn fleet_yaml(hosts: usize, near: usize, away: usize) -> String {
    let mut y = format!(
        "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: {FLEET}\nspec:\n  github:\n    \
         repository: {OWNER}/{REPO}\n    simulator: true\n  policy:\n    concurrency:\n      \
         global: 64\n      perHost: 16\n  hosts:\n"
    );
    for i in 0..=hosts {
        y.push_str(&format!(
            "    - name: {}\n      uri: sandbox\n      storagePool: {STORAGE_POOL}\n",
            host_name(i)
        ));
    }
    let near_hosts: Vec<String> = (0..hosts).map(host_name).collect();
    y.push_str("  pools:\n");
    for (pool, count, on) in [
        (NEAR, near, near_hosts.join(", ")),
        (AWAY, away, host_name(hosts)),
    ] {
        y.push_str(&format!(
            "    - name: {pool}\n      count: {count}\n      ephemeral: true\n      \
             labels: [bench]\n      hosts: [{on}]\n      vm:\n        cpus: 1\n        \
             memory: 512MiB\n        disk: 4GiB\n        image: {BASE_IMAGE}\n"
        ));
    }
    y
}

fn load(hosts: usize, near: usize, away: usize) -> LoadedFleet {
    load_str("far.yaml", &fleet_yaml(hosts, near, away))
        .unwrap_or_else(|e| panic!("P7 fleet file: {e}"))
}

/// A loopback listener that accepts every connection and holds it without
/// reading or writing. Counts the connections.
struct Silent {
    port: u16,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Silent {
    async fn start() -> Silent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback listener");
        let port = listener.local_addr().expect("its port").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let accepted = accepted.clone();
            async move {
                let mut held = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    held.push(socket);
                }
            }
        });
        Silent {
            port,
            accepted,
            task,
        }
    }

    fn uri(&self) -> String {
        format!("qemu+tcp://127.0.0.1:{}/system", self.port)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// A host through `assemble`'s connection path, under the retry wrapper.
fn lazy(config: HostConfig, limit: Duration) -> Arc<dyn Hypervisor> {
    let host = LazyHost::new(config, None).with_call_timeout(limit);
    wiring::retrying(Arc::new(host), RetryPolicy::LIBVIRT, None)
}

/// The rig: `hosts` test-driver hosts and one more (the last), answering.
async fn rig(hosts: usize, near: usize, away: usize, limit: Duration) -> Rig {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = load(hosts, near, away);
    let mut world_hosts: BTreeMap<String, Arc<dyn Hypervisor>> = BTreeMap::new();
    for i in 0..=hosts {
        let name = host_name(i);
        let node = dir.path().join(format!("{name}.xml"));
        std::fs::write(&node, node_xml()).expect("node file");
        let uri = format!("test://{}", node.display());
        world_hosts.insert(
            name.clone(),
            lazy(host_config(&name, uri, dir.path()), limit),
        );
    }
    Rig::assemble(dir, Vec::new(), fleet, world_hosts, near + away).await
}

/// What a pass with the silent host must show: the host unobserved and
/// waited on, every other host seen, nothing changed on the silent host or
/// for its pool's slots. Returns the mutating actions.
fn check_hung_pass<'a>(r: &'a PassResult, silent: &str, hosts: usize) -> Vec<&'a Action> {
    for (name, obs) in &r.snapshot.observed.hosts {
        match obs {
            Observation::Failed { error } if name == silent => assert!(
                error.message.contains("not answering"),
                "{silent}: {}",
                error.message
            ),
            Observation::Failed { error } => panic!("{name} not observed: {}", error.message),
            Observation::Seen { .. } if name == silent => panic!("{silent} was observed"),
            Observation::Seen { .. } => {}
        }
    }
    assert_eq!(r.snapshot.observed.hosts.len(), hosts + 1);
    let waited = r.plan.waits().any(|(_, reason)| {
        matches!(reason, WaitReason::ObservationFailed { what, .. } if what == &format!("host {silent}"))
    });
    assert!(waited, "the plan does not say it waits for {silent}");
    let away_prefix = format!("{FLEET}-{AWAY}-");
    let mutating: Vec<&Action> = r.plan.mutating().collect();
    for a in &mutating {
        assert!(
            a.host() != Some(silent) && !a.subject().starts_with(&away_prefix),
            "a change planned for the silent host or its slots: {a:?}"
        );
    }
    mutating
}

pub(crate) async fn p7_hung_host(rep: &mut Report, opt: &Options) {
    let (hosts, near, away) = if opt.quick {
        (4, 120, 8)
    } else {
        (10, 500, 20)
    };
    let limit = Duration::from_secs(if opt.quick { 1 } else { 2 });
    let (fresh, later) = if opt.quick { (3, 3) } else { (5, 10) };
    let added = 10;
    let silent_name = host_name(hosts);
    let silent = Silent::start().await;
    let mut rig = rig(hosts, near, away, limit).await;

    // (a) Every host answering.
    let t = Instant::now();
    let passes = rig.converge().await;
    rep.notes.push(format!(
        "P7 setup: {near} runners on {hosts} hosts and {away} on {silent_name}, all through \
         LazyHost, converged in {passes} passes, {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    rig.pass().await;
    let baseline = super::steady_pass_time(&rig, if opt.quick { 5 } else { 20 }).await;

    // (b) The last host silent, each pass meeting it afresh.
    let silent_host = |rig: &mut Rig| {
        let config = host_config(&silent_name, silent.uri(), Path::new("/nonexistent"));
        rig.engine
            .world
            .hosts
            .insert(silent_name.clone(), lazy(config, limit));
    };
    let mut first = Vec::new();
    for _ in 0..fresh {
        silent_host(&mut rig);
        let t = Instant::now();
        let r = rig.pass().await;
        first.push(t.elapsed());
        let changes = check_hung_pass(&r, &silent_name, hosts);
        assert!(changes.is_empty(), "changes planned: {changes:?}");
    }
    let first_med = median(first.clone());

    // (c) A scale change on the answering hosts, in a pass that meets the
    // silent host afresh: made in that pass, nothing for the silent one.
    let grown = load(hosts, near + added, away);
    rig.engine.provisioner = wiring::provisioner(&grown, None);
    rig.fleet = grown;
    rig.runners += added;
    silent_host(&mut rig);
    let t = Instant::now();
    let r = rig.pass().await;
    let scale_pass = t.elapsed();
    let changes = check_hung_pass(&r, &silent_name, hosts);
    let creates = changes
        .iter()
        .filter(|a| matches!(a, Action::Create { .. }))
        .count();
    assert_eq!(
        (creates, changes.len()),
        (added, added),
        "the scale change: {changes:?}"
    );
    let report = r.report.as_ref().expect("the pass acted");
    assert_eq!(report.failed(), 0, "failed: {:?}", report.failures().next());
    let made = report.done();

    // (d) The daemon's later passes: the same LazyHost, its connect parked.
    for n in 0.. {
        assert!(n < 6, "the scale change did not settle");
        rig.guests_come_up();
        let r = rig.pass().await;
        if check_hung_pass(&r, &silent_name, hosts).is_empty() {
            break;
        }
    }
    let mut times = Vec::new();
    for _ in 0..later {
        let t = Instant::now();
        let r = rig.pass().await;
        times.push(t.elapsed());
        assert!(check_hung_pass(&r, &silent_name, hosts).is_empty());
    }
    let later_med = median(times);
    // Every connection the listener took is in the accept queue by now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let connections = silent.accepted();

    let t_ms = ms(limit);
    rep.row(
        "P7",
        format!(
            "steady pass, {near} + {away} runners on {} hosts, all answering (median)",
            hosts + 1
        ),
        ms(baseline),
        "ms",
        "",
        None,
    );
    rep.row(
        "P7",
        "call timeout (connect deadline) of every host",
        t_ms,
        "ms",
        "",
        None,
    );
    rep.row(
        "P7",
        format!("same, {silent_name} not answering: first pass to meet it (median of {fresh})"),
        ms(first_med),
        "ms",
        "≤ baseline + timeout + 10 %",
        Some(first_med <= baseline + limit + limit / 10),
    );
    let ratio = (ms(first_med) - ms(baseline)) / t_ms;
    rep.row(
        "P7",
        "  (that pass − baseline) / call timeout",
        ratio,
        "×",
        "≤ 1.1 (waited once)",
        Some(ratio <= 1.1),
    );
    let later_ratio = (ms(later_med) - ms(baseline)) / t_ms;
    rep.row(
        "P7",
        format!("later passes, its connect still parked: (pass − baseline) / call timeout (median of {later})"),
        later_ratio,
        "×",
        "≤ 0.1 (fails at once)",
        Some(later_ratio <= 0.1),
    );
    rep.row(
        "P7",
        format!("scale +{added} on the answering hosts in a pass meeting it: slots created"),
        made as f64,
        "creates",
        format!("{added} (all), 0 failed"),
        Some(made == added),
    );
    rep.row("P7", "  that pass's time", ms(scale_pass), "ms", "", None);
    let meetings = fresh + 1;
    rep.row(
        "P7",
        format!(
            "connections opened to the silent host over {} passes",
            meetings + later
        ),
        connections as f64,
        "conn",
        format!("{meetings} (one per LazyHost)"),
        Some(connections == meetings),
    );
    rep.notes.push(format!(
        "P7 first passes meeting the silent host: {} ms; later passes: median {:.1} ms",
        first
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", "),
        ms(later_med)
    ));
    silent.task.abort();
    rig.shutdown().await;
}
