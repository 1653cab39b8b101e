//! P8 (issue 18): cron mode, each pass a new process. P1's converged world
//! (500 runners on 10 hosts) is saved to test-driver node files, and two
//! "processes" run one pass each on it, as `reconcile --once` from a timer
//! would: each connects every host afresh (`LibvirtHost::connect` on the
//! node file: the same domains, UUIDs and volumes) and makes a new GitHub
//! provider, both with the same state directory. The first starts with an
//! empty directory, the second with what the first kept there.
//!
//! Counted: libvirt calls per host after connecting (the connection's own
//! setup, open plus capabilities, driver type and hostname, is the same for
//! both and listed apart), and GitHub requests by answer.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar::providers::libvirt::test_node;
use hangar::providers::libvirt::{HostConfig, LibvirtHost};
use hangar::providers::{Hypervisor, RetryPolicy};
use hangar::reconcile::SystemClock;

use super::{host_config, host_name, ms, wiring, Options, Report, Rig, FLEET, OWNER, REPO, TOKEN};

/// What one process's pass cost.
struct Cost {
    /// Per host, libvirt calls after connecting.
    libvirt: Vec<u64>,
    github_total: u64,
    github_304: u64,
    github_cost: u64,
    time: Duration,
    actions: usize,
}

/// One pass of a fresh "process" on the saved world, state in `state`.
async fn process(rig: &Rig, nodes: &[(String, std::path::PathBuf)], state: &Path) -> Cost {
    let t = Instant::now();
    let mut lv = Vec::new();
    let mut hosts: BTreeMap<String, Arc<dyn Hypervisor>> = BTreeMap::new();
    for (name, node) in nodes {
        let config = HostConfig {
            observed: Some(state.join(format!("{FLEET}.{name}.observed.json"))),
            ..host_config(name, format!("test://{}", node.display()), rig._dir.path())
        };
        let host = tokio::task::spawn_blocking(move || LibvirtHost::connect(config))
            .await
            .expect("connect task")
            .unwrap_or_else(|e| panic!("host {name}: {e}"));
        lv.push(host.clone());
        hosts.insert(
            name.clone(),
            wiring::retrying(Arc::new(host), RetryPolicy::LIBVIRT, None),
        );
    }
    let registry = wiring::registry(&rig.sim, OWNER, REPO, TOKEN, Some(Duration::from_secs(30)))
        .with_saved_pages(
            &state.join(format!("{FLEET}.github.json")),
            &rig.sim.base_url,
        );
    let registry = wiring::retrying_registry(registry, RetryPolicy::GITHUB, None);
    let engine = wiring::engine(
        &rig.fleet,
        hosts,
        Arc::new(registry),
        Arc::new(SystemClock),
        None,
    );
    let before = rig.sim.stats();
    let cancel = tokio_util::sync::CancellationToken::new();
    let r = wiring::pass(&engine, &rig.fleet, false, &cancel, Duration::from_secs(60)).await;
    let after = rig.sim.stats();
    Cost {
        libvirt: lv.iter().map(|h| h.libvirt_calls()).collect(),
        github_total: after.total - before.total,
        github_304: after.not_modified - before.not_modified,
        github_cost: after.rate_limited_cost - before.rate_limited_cost,
        time: t.elapsed(),
        actions: r.plan.actions.len(),
    }
}

pub(super) async fn p8_cron_mode(rep: &mut Report, _opt: &Options, rig: &Rig) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes = Vec::new();
    for (i, h) in rig.hosts.iter().enumerate() {
        let name = host_name(i);
        let conn = h.inner.connection().expect("rig host connection");
        let xml = test_node::dump(&conn).expect("dump the test driver's state");
        let path = dir.path().join(format!("{name}.xml"));
        std::fs::write(&path, xml).expect("node file");
        nodes.push((name, path));
    }
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let hosts = nodes.len();
    let pages = (rig.runners as u64).div_ceil(super::PAGE);
    for (which, label) in [(1, "first"), (2, "second")] {
        let c = process(rig, &nodes, &state).await;
        let worst = c.libvirt.iter().copied().max().unwrap_or(0) as f64;
        let mean = c.libvirt.iter().sum::<u64>() as f64 / hosts as f64;
        rep.row(
            "P8",
            format!("{label} process: libvirt calls per host (worst of {hosts})"),
            worst,
            "calls",
            if which == 2 { "1" } else { "" },
            (which == 2).then_some(worst <= 1.0),
        );
        rep.row(
            "P8",
            format!("{label} process: libvirt calls per host (mean)"),
            mean,
            "calls",
            "",
            None,
        );
        rep.row(
            "P8",
            format!("{label} process: GitHub requests"),
            c.github_total as f64,
            "requests",
            format!("{pages} (⌈{}/100⌉)", rig.runners),
            (which == 2).then_some(c.github_total <= pages),
        );
        rep.row(
            "P8",
            format!("{label} process: GitHub answers 304"),
            c.github_304 as f64,
            "requests",
            if which == 2 { "all" } else { "" },
            (which == 2).then_some(c.github_304 == c.github_total),
        );
        rep.row(
            "P8",
            format!("{label} process: GitHub budget cost"),
            c.github_cost as f64,
            "requests",
            if which == 2 { "0" } else { "" },
            (which == 2).then_some(c.github_cost == 0),
        );
        rep.row(
            "P8",
            format!("{label} process: connect and one pass"),
            ms(c.time),
            "ms",
            "",
            None,
        );
        rep.notes.push(format!(
            "P8 {label} process: {} actions planned (a converged fleet: 0); libvirt calls per \
             host {:?}",
            c.actions, c.libvirt
        ));
    }
    rep.notes.push(
        "P8: each connection's setup (open, capabilities, driver type, hostname) is not in the \
         counts; it is the same for both processes (see docs/performance.md)"
            .to_string(),
    );
}
