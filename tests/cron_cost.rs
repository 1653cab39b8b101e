//! Cron mode at the daemon's cost (issue 18): each `reconcile --once` is a
//! new process, and the second of two on an unchanged fleet asks each host
//! for its listing only (one libvirt call) and GitHub only with ETags that
//! come back 304, free of the rate limit. What makes that so, the
//! observation kept in the state directory, is never trusted for a
//! destructive act: a domain redefined without hangar's ownership under the
//! same UUID is left alone although the kept observation says it is ours.
//!
//! The binary against a served simulator (`hangar github-sim`) and sandbox
//! hosts (libvirt's test driver, persisted in node files), so that each
//! command really is a fresh process.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/served.rs"]
mod served;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bin::{Run, Sandbox};
use serde_json::Value;
use served::{control, play_guests, serve};

const RUNNERS_ROUTE: &str = "GET /repos/{owner}/{repo}/actions/runners";

fn fleet(port: u16, memory: &str) -> String {
    format!(
        "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: cron\nspec:\n  github:\n    \
         repository: acme/widgets\n    apiUrl: http://127.0.0.1:{port}\n    auth:\n      \
         tokenEnv: CRON_TEST_TOKEN\n  policy:\n    bootTimeout: 5m\n  hosts:\n    \
         - name: h1\n      uri: sandbox\n    - name: h2\n      uri: sandbox\n  pools:\n    \
         - name: p\n      count: 4\n      ephemeral: true\n      labels: [cron]\n      \
         vm: {{cpus: 1, memory: {memory}, disk: 4GiB, image: base.qcow2}}\n"
    )
}

/// The simulator served, a fleet file, and the guests' part played.
struct Rig {
    sandbox: Sandbox,
    port: u16,
    file: PathBuf,
    _sim: served::Served,
    stop: Arc<AtomicBool>,
    player: Option<std::thread::JoinHandle<()>>,
}

impl Rig {
    fn new() -> Rig {
        let sim = serve(&[]);
        let port = sim.port;
        let sandbox = Sandbox::new();
        let file = sandbox.state.path().join("fleet.yaml");
        std::fs::write(&file, fleet(port, "512MiB")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let player = {
            let stop = stop.clone();
            std::thread::spawn(move || play_guests(port, stop))
        };
        Rig {
            sandbox,
            port,
            file,
            _sim: sim,
            stop,
            player: Some(player),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = self
            .sandbox
            .command(args)
            .env("CRON_TEST_TOKEN", "not-the-apps")
            .output()
            .unwrap();
        Run::from(out, args)
    }

    fn f(&self) -> &str {
        self.file.to_str().unwrap()
    }

    fn apply(&self) {
        let r = self.run(&["apply", "-f", self.f(), "--wait", "60s"]);
        assert_eq!(r.code, 0, "{r}");
    }

    /// One `reconcile --once` process: what it cost each host in libvirt
    /// calls up to its first observation, and the simulator's counters.
    fn once(&self) -> (BTreeMap<String, u64>, Value, Run) {
        control(self.port, "DELETE", "/_sim/stats");
        let r = self.run(&["-vv", "reconcile", "-f", self.f(), "--once"]);
        assert_eq!(r.code, 0, "{r}");
        let stats: Value = serde_json::from_str(&control(self.port, "GET", "/_sim/stats")).unwrap();
        (first_observation_calls(&r.stderr), stats, r)
    }

    fn state(&self) -> &Path {
        self.sandbox.state.path()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.player.take() {
            let _ = p.join();
        }
    }
}

/// Host → libvirt calls since connecting, at its first observation, from
/// the `host observed` debug lines.
fn first_observation_calls(stderr: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in stderr.lines().filter(|l| l.contains("host observed")) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_string)
        };
        if let (Some(host), Some(calls)) = (field("host="), field("libvirt_calls=")) {
            out.entry(host).or_insert_with(|| calls.parse().unwrap());
        }
    }
    out
}

/// The `<domain>` element named `slot` in a test driver node file.
fn domain_block<'a>(node: &'a str, slot: &str) -> Option<&'a str> {
    let name_at = node.find(&format!("<name>{slot}</name>"))?;
    let start = node[..name_at].rfind("<domain")?;
    let end = name_at + node[name_at..].find("</domain>")? + "</domain>".len();
    Some(&node[start..end])
}

/// Files the kept observation lives in.
fn kept_files(state: &Path) -> Vec<PathBuf> {
    let mut out = vec![state.join("cron.github.json")];
    for h in ["h1", "h2"] {
        out.push(state.join("sandbox").join(format!("{h}.observed.json")));
    }
    out
}

#[test]
fn a_second_cron_process_costs_one_libvirt_call_per_host_and_only_304s() {
    let rig = Rig::new();
    rig.apply();
    for f in kept_files(rig.state()) {
        assert!(f.exists(), "{} was not kept", f.display());
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("not-the-apps"),
            "a secret in {}",
            f.display()
        );
    }

    // Without what was kept: every process pays the full observation.
    for f in kept_files(rig.state()) {
        std::fs::remove_file(f).unwrap();
    }
    let (calls, stats, r) = rig.once();
    assert_eq!(calls.len(), 2, "{r}");
    for (host, n) in &calls {
        // Node info, pool, volumes, the listing, and each domain's XML.
        assert!(*n >= 4 + 4 / 2, "{host}: {n} calls\n{r}");
    }
    assert!(
        stats["by_route_status"][RUNNERS_ROUTE]["200"].as_u64() >= Some(1),
        "{stats}"
    );

    // The next process starts from what that one kept.
    let (calls, stats, r) = rig.once();
    assert_eq!(
        calls,
        BTreeMap::from([("h1".to_string(), 1), ("h2".to_string(), 1)]),
        "{r}"
    );
    assert_eq!(
        stats["by_route_status"][RUNNERS_ROUTE],
        serde_json::json!({"304": 1}),
        "{stats}"
    );
    assert_eq!(stats["rate_limited_cost"], 0, "{stats}");

    // An unreadable file is read afresh, not trusted.
    let h1 = rig.state().join("sandbox/h1.observed.json");
    std::fs::write(&h1, b"{\"format\": 1, \"garbage").unwrap();
    let (calls, _, r) = rig.once();
    assert!(calls["h1"] > 1, "{r}");
    assert_eq!(calls["h2"], 1, "{r}");
}

#[test]
fn a_domain_redefined_without_ownership_is_left_alone_whatever_was_kept() {
    let rig = Rig::new();
    rig.apply();
    // Someone redefines h1's first VM without hangar's metadata, under the
    // same UUID (what `virsh edit` does), behind hangar's back: the kept
    // observation still says it is ours.
    let slot = "cron-p-0";
    let (node, text) = ["h1", "h2"]
        .iter()
        .map(|h| rig.state().join(format!("sandbox/{h}.xml")))
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p, t)
        })
        .find(|(_, t)| t.contains(&format!("<name>{slot}</name>")))
        .unwrap_or_else(|| panic!("{slot} on no host"));
    let domain = domain_block(&text, slot).unwrap();
    let uuid = domain
        .split_once("<uuid>")
        .and_then(|(_, r)| r.split_once("</uuid>"))
        .map(|(u, _)| u.to_string())
        .unwrap();
    let meta_start = domain.find("<metadata>").expect("hangar's metadata");
    let meta_end = domain.find("</metadata>").unwrap() + "</metadata>".len();
    let stripped = format!("{}{}", &domain[..meta_start], &domain[meta_end..]);
    std::fs::write(&node, text.replace(domain, &stripped)).unwrap();
    let host = node.file_stem().unwrap().to_str().unwrap().to_string();
    assert!(rig
        .state()
        .join(format!("sandbox/{host}.observed.json"))
        .exists());

    // A new shape replaces every VM: the stripped one must not be touched.
    std::fs::write(&rig.file, fleet(rig.port, "768MiB")).unwrap();
    let r = rig.run(&["reconcile", "-f", rig.f(), "--once"]);
    let after = std::fs::read_to_string(&node).unwrap();
    let kept = domain_block(&after, slot).unwrap_or_else(|| panic!("{slot} is gone\n{r}"));
    assert!(
        kept.contains(&uuid) && !kept.contains("<metadata>"),
        "the domain that is no longer hangar's was changed:\n{kept}\n{r}"
    );
    assert!(
        r.stderr.contains("not hangar's") || r.stdout.contains("not hangar's"),
        "{r}"
    );
}
