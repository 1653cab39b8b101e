//! `hangar apply` / `destroy` through the binary against a real libvirtd at
//! `qemu:///system` (started by `.ci/start-libvirtd`): a 2-slot persistent
//! pool in a temp dir storage pool, GitHub played by an in-process simulator
//! the binary reaches over loopback. The guests do not boot (the base image
//! is empty); the test brings their runners online through the simulator.
//!
//! Without a reachable daemon the test says why and skips, unless
//! `HANGAR_REQUIRE_LIBVIRTD=1` (as in `.ci/run`), which makes that a failure.
//! A drop guard removes the run's domains, volumes and pool even when an
//! assertion fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hangar::sim::{self, RegisterRunner, SimConfig, SimHandle};

#[path = "kit/virsh.rs"]
mod virsh;
use virsh::{console_logs, domains, running, virsh, volumes, Cleanup, PrivatePool, SYSTEM as URI};

const BIN: &str = env!("CARGO_BIN_EXE_hangar");
const TOKEN: &str = "apply-system-token";
const TOKEN_ENV: &str = "HANGAR_APPLY_SYSTEM_TOKEN";
const SCOPE: &str = "repos/acme/widgets";
const CONSOLE_DIR: &str = hangar::providers::libvirt::DEFAULT_CONSOLE_DIR;

struct Run {
    args: String,
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hangar {} exited {}\n--- stdout\n{}--- stderr\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

/// Run the binary off the runtime's threads (the simulator keeps serving).
async fn hangar(state: &Path, args: &[&str]) -> Run {
    let mut c = Command::new(BIN);
    c.args(["--color", "never"])
        .args(args)
        .env("HANGAR_STATE_DIR", state)
        .env(TOKEN_ENV, TOKEN)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    let out: Output = tokio::task::spawn_blocking(move || c.output())
        .await
        .unwrap()
        .unwrap();
    Run {
        args: args.join(" "),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What a booted guest's `config.sh` and runner service would do.
fn runner_comes_up(sim: &SimHandle, name: &str, fleet: &str) {
    let token = sim.registration_token(SCOPE).unwrap();
    let r = sim
        .register_runner(&RegisterRunner {
            scope: SCOPE.into(),
            name: name.into(),
            labels: vec!["sys".into(), format!("hangar-{fleet}")],
            token,
            group: None,
            replace: true,
            ephemeral: false,
            no_default_labels: false,
        })
        .unwrap();
    sim.set_online(r.id, true).unwrap();
}

/// A 2-slot persistent fleet on a fresh dir pool of the real libvirtd, its
/// GitHub an in-process simulator. `None`: skipped (no daemon).
struct System {
    sim: SimHandle,
    state: PathBuf,
    file: PathBuf,
    fleet: String,
    pool: String,
    slots: [String; 2],
    /// The isolated network and filter, when the fleet has one.
    isolation: Option<(String, String)>,
    // Last: fields drop in order, so the cleanup runs after the rest.
    _guard: Cleanup,
}

impl System {
    async fn start() -> Option<System> {
        System::start_with(false).await
    }

    /// With `isolated`, the host's network mode is `isolated`: hangar makes
    /// a NAT network and an nwfilter of the fleet's (a private subnet).
    async fn start_with(isolated: bool) -> Option<System> {
        let mut private = PrivatePool::new("sys")?;
        private.guard.fleet = Some(private.fleet.clone());
        private.guard.console_dir = Some(PathBuf::from(CONSOLE_DIR));
        let state = private.dir.join("state");
        let PrivatePool {
            fleet, pool, guard, ..
        } = private;

        let sim = sim::start(SimConfig::new(TOKEN)).await.unwrap();
        let file: PathBuf = state.with_file_name("fleet.yaml");
        std::fs::write(
            &file,
            format!(
                "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: {fleet}\nspec:\n  github:\n    \
                 repository: acme/widgets\n    apiUrl: {api}\n    auth:\n      tokenEnv: {TOKEN_ENV}\n  \
                 hosts:\n    - name: local\n      uri: {URI}\n      storagePool: {pool}\n      \
                 domainType: qemu\n      cpuOvercommit: 16\n      network:\n        mode: none\n  pools:\n    - name: sys\n      \
                 count: 2\n      labels: [sys]\n      vm:\n        cpus: 1\n        memory: 256MiB\n        \
                 disk: 1GiB\n        image: base.qcow2\n      cache:\n        size: 1GiB\n",
                api = sim.base_url
            ),
        )
        .unwrap();
        let slots = [format!("{fleet}-sys-0"), format!("{fleet}-sys-1")];
        let isolation = isolated.then(|| {
            let text = std::fs::read_to_string(&file).unwrap();
            // A subnet of its own, so that no other fleet's network overlaps.
            let x = 100 + (std::process::id() % 100);
            let y = chrono::Utc::now().timestamp_subsec_nanos() % 250;
            let text = text.replace(
                "      network:\n        mode: none\n",
                &format!(
                    "      network:\n        mode: isolated\n        subnet: 10.{x}.{y}.0/24\n"
                ),
            );
            std::fs::write(&file, text).unwrap();
            (
                format!("hangar-{fleet}"),
                format!("hangar-isolated-{fleet}"),
            )
        });

        Some(System {
            sim,
            state,
            file,
            fleet,
            pool,
            slots,
            isolation,
            _guard: guard,
        })
    }

    async fn hangar(&self, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend(["-f", self.file.to_str().unwrap()]);
        hangar(&self.state, &all).await
    }

    /// Apply until the VMs run and, GitHub's part played, converged.
    async fn converge(&self) {
        // One pass: both VMs made and started; their runners cannot be up yet.
        let r = self.hangar(&["apply", "--wait", "0s"]).await;
        assert!(r.stdout.contains("Plan: 2 to create"), "{r}");
        assert_eq!(r.code, 5, "not converged within 0s: {r}");
        assert!(r.stderr.contains("not converged"), "{r}");
        assert_eq!(domains(&self.fleet), self.slots);
        assert_eq!(running(&self.fleet), self.slots);
        let vols = volumes(&self.pool);
        for s in &self.slots {
            for v in [
                format!("{s}-g1-root.qcow2"),
                format!("{s}-g1-seed.iso"),
                format!("{s}-cache.qcow2"),
            ] {
                assert!(vols.contains(&v), "{v} missing: {vols:?}");
            }
        }

        // GitHub's part: both runners register and come online; the next
        // apply removes the seeds and converges.
        for s in &self.slots {
            runner_comes_up(&self.sim, s, &self.fleet);
        }
        let r = self.hangar(&["apply", "--wait", "60s"]).await;
        assert_eq!(r.code, 0, "{r}");
        assert!(r.stderr.contains("converged"), "{r}");
        let vols = volumes(&self.pool);
        assert!(!vols.iter().any(|v| v.ends_with("-seed.iso")), "{vols:?}");
        assert_eq!(running(&self.fleet), self.slots);
    }

    /// `destroy --yes`, then nothing of the fleet is left.
    async fn destroy(&self) {
        let r = self.hangar(&["destroy", "--yes"]).await;
        assert_eq!(r.code, 0, "{r}");
        assert_eq!(domains(&self.fleet), Vec::<String>::new());
        assert_eq!(
            volumes(&self.pool),
            ["base.qcow2"],
            "only the base image is left"
        );
        assert_eq!(
            console_logs(Path::new(CONSOLE_DIR), &format!("{}-", self.fleet)),
            Vec::<PathBuf>::new()
        );
        for s in &self.slots {
            assert!(
                self.sim.runner_by_name(SCOPE, s).is_none(),
                "{s} still registered"
            );
        }
        if let Some((network, filter)) = &self.isolation {
            let nets = virsh(&["net-list", "--all", "--name"]).unwrap();
            assert!(
                !nets.lines().any(|n| n == network),
                "{network} left: {nets}"
            );
            let filters = virsh(&["nwfilter-list"]).unwrap();
            assert!(
                !filters.contains(filter.as_str()),
                "{filter} left: {filters}"
            );
        }
    }
}

/// The seed lines of a domain's live and persistent definitions.
fn seed_lines(name: &str) -> String {
    let grep = |xml: String| {
        xml.lines()
            .filter(|l| l.contains("seed"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "live: {}\ninactive: {}",
        grep(virsh(&["dumpxml", name]).unwrap_or_default()),
        grep(virsh(&["dumpxml", "--inactive", name]).unwrap_or_default())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_converges_and_destroy_leaves_nothing_on_real_libvirtd() {
    let Some(sys) = System::start().await else {
        return;
    };
    sys.converge().await;
    let status = sys.hangar(&["status", "-o", "json"]).await;
    assert_eq!(status.code, 0, "{status}");
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    for slot in status["slots"].as_array().unwrap() {
        assert_eq!(slot["vm"], "running", "{slot}");
        assert_eq!(slot["runner"], "online", "{slot}");
        assert_eq!(slot["simulated"], false, "{slot}");
    }
    sys.destroy().await;
}

/// A later process must see the seeds gone too: `diff` after a converged
/// apply is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_after_a_converged_apply_is_empty_on_real_libvirtd() {
    let Some(sys) = System::start().await else {
        return;
    };
    sys.converge().await;
    let r = sys.hangar(&["diff"]).await;
    let evidence = seed_lines(&sys.slots[0]);
    sys.destroy().await;
    assert_eq!(r.code, 0, "{r}\n{evidence}");
}

/// Issue 11: `destroy` removes the fleet's isolated network and nwfilter
/// too (`virsh net-list --all`, `nwfilter-list`), after its VMs; `apply`
/// shows the network's ensure as an action of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_removes_the_isolated_network_and_filter_on_real_libvirtd() {
    let Some(sys) = System::start_with(true).await else {
        return;
    };
    let (network, filter) = sys.isolation.clone().unwrap();
    let d = sys.hangar(&["diff"]).await;
    assert_eq!(d.code, 1, "{d}");
    assert!(
        d.stdout.contains(&format!("+ network {network} on local")),
        "{d}"
    );
    sys.converge().await;
    let nets = virsh(&["net-list", "--all", "--name"]).unwrap();
    assert!(nets.lines().any(|n| n == network), "{nets}");
    assert!(virsh(&["nwfilter-list"]).unwrap().contains(filter.as_str()));
    sys.destroy().await;
}

/// Issue 17, defect 1: one libvirtd listed twice (`local` and `other`, as
/// `qemu:///system` twice or as `qemu+unix:///system`) never destroys data.
/// Each host would see the other's VMs as moved off it; hangar reads every
/// host's identity and refuses the file, located at the second entry and
/// naming both, before anything is planned: pass after pass, the fleet's VMs
/// (same UUIDs) and volumes are left exactly as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_libvirtd_listed_twice_never_destroys_data() {
    let Some(sys) = System::start().await else {
        return;
    };
    let r = sys.hangar(&["apply", "--wait", "0s"]).await;
    assert!(r.stdout.contains("Plan: 2 to create"), "{r}");
    let world = || {
        let uuids: Vec<String> = domains(&sys.fleet)
            .iter()
            .map(|d| virsh(&["domuuid", d]).unwrap().trim().to_string())
            .collect();
        (domains(&sys.fleet), uuids, volumes(&sys.pool))
    };
    let before = world();
    assert_eq!(before.0, sys.slots);
    let single = std::fs::read_to_string(&sys.file).unwrap();
    let local_entry = single
        .find("    - name: local")
        .map(|i| &single[i..single.find("  pools:").unwrap()])
        .unwrap()
        .to_string();
    for other_uri in ["qemu:///system", "qemu+unix:///system"] {
        let other_entry = local_entry
            .replace("name: local", "name: other")
            .replace(&format!("uri: {URI}"), &format!("uri: {other_uri}"));
        let twice = single.replace("  pools:", &format!("{other_entry}  pools:"));
        std::fs::write(&sys.file, &twice).unwrap();
        let other_line = twice
            .lines()
            .position(|l| l.contains("name: other"))
            .unwrap()
            + 2;
        for pass in 0..3 {
            for args in [
                &["diff"][..],
                &["apply", "--wait", "0s"],
                &["reconcile", "--once"],
            ] {
                let r = sys.hangar(args).await;
                assert_eq!(r.code, 2, "{other_uri}, pass {pass}: {r}");
                assert!(
                    r.stderr.contains("hosts `local`")
                        && r.stderr.contains("and `other`")
                        && r.stderr.contains("are the same libvirtd"),
                    "{r}"
                );
                assert!(
                    r.stderr.contains(&format!("fleet.yaml:{other_line}:")),
                    "located at the second entry's uri (line {other_line}): {r}"
                );
                assert_eq!(world(), before, "{other_uri}, pass {pass}: {r}");
            }
        }
    }
    std::fs::write(&sys.file, &single).unwrap();
    sys.destroy().await;
}
