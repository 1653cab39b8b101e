//! Scenarios on a real libvirtd with the qemu driver: the daemon restarted
//! mid-pass (9) and a storage pool that is full (10).
//!
//! The daemon is the suite's own: `libvirtd` in session mode as user
//! `nobody`, its socket and state in a temp dir, reached as
//! `qemu+unix:///session?socket=…`. The machine's `qemu:///system` daemon is
//! shared with other tests and not this suite's to restart. Skipped with a
//! printed reason where libvirtd, qemu or runuser are missing, unless
//! `HANGAR_REQUIRE_LIBVIRTD=1`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use hangar::model::host::DomainType;
use hangar::model::names::ownership_label;
use hangar::providers::hooked::{Hook, Hooked, HvCall, HvOp, Made};
use hangar::providers::libvirt::HostConfig;
use hangar::providers::RetryPolicy;
use hangar::reconcile::engine::Engine;
use hangar::reconcile::SystemClock;
use hangar::sim::{self, SimConfig};
use tokio_util::sync::CancellationToken;
use virt::connect::Connect;

use super::cli::{text, State};
use super::kit;
use super::results::Scenario;
use super::wiring;

const SCOPE: &str = "repos/acme/widgets";

/// A libvirtd of the suite's own.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub restarts: u32,
}

fn missing() -> Option<String> {
    for tool in ["libvirtd", "runuser", "qemu-img", "qemu-system-x86_64"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
            || Path::new("/usr/sbin").join(tool).is_file();
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// Skip (return `None`) with a reason, or fail when the daemon is required.
fn daemon_or_skip(what: &str) -> Option<Daemon> {
    let why = match missing() {
        None => match Daemon::start() {
            Ok(d) => return Some(d),
            Err(e) => e,
        },
        Some(why) => why,
    };
    if std::env::var("HANGAR_REQUIRE_LIBVIRTD").as_deref() == Ok("1") {
        panic!("{what}: a private libvirtd is required (HANGAR_REQUIRE_LIBVIRTD=1) but {why}");
    }
    eprintln!("skipping {what}: {why}");
    None
}

impl Daemon {
    fn start() -> Result<Daemon, String> {
        let dir = tempfile::Builder::new()
            .prefix("hangar-libvirtd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        let mut d = Daemon {
            dir,
            child: None,
            restarts: 0,
        };
        d.spawn()?;
        Ok(d)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/libvirt/libvirt-sock")
    }

    pub fn uri(&self) -> String {
        format!("qemu+unix:///session?socket={}", self.socket().display())
    }

    fn spawn(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new("runuser")
            .args(["-u", "nobody", "--", "env"])
            .arg(format!("HOME={}", d.display()))
            .arg(format!("XDG_RUNTIME_DIR={}/run", d.display()))
            .arg(format!("XDG_CONFIG_HOME={}/config", d.display()))
            .arg(format!("XDG_CACHE_HOME={}/cache", d.display()))
            .arg(format!("XDG_DATA_HOME={}/data", d.display()))
            .args(["libvirtd", "--timeout", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start libvirtd: {e}"))?;
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(20);
        virt::error::clear_error_callback();
        while Instant::now() < end {
            if self.socket().exists() && Connect::open(Some(&self.uri())).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop();
        Err("the private libvirtd did not answer within 20s".into())
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join("run/libvirt/libvirtd.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// SIGTERM to the daemon this suite started (by its pid), then wait.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain kill(2) on the pid our own libvirtd wrote.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if let Some(mut c) = self.child.take() {
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn().expect("libvirtd restarts");
        self.restarts += 1;
    }

    fn conn(&self) -> Connect {
        Connect::open(Some(&self.uri())).expect("connect to the private libvirtd")
    }

    /// A started dir pool `name` at `path` (owned by nobody).
    pub fn pool(&self, name: &str, path: &Path) {
        std::fs::create_dir_all(path).unwrap();
        chown_nobody(path);
        let conn = self.conn();
        let xml = format!(
            "<pool type='dir'><name>{name}</name><target><path>{}</path></target></pool>",
            path.display()
        );
        let p = conn.define_storage_pool_xml(&xml, 0).expect("define pool");
        p.create(0).expect("start pool");
    }

    /// Destroy every domain, undefine every domain and pool (deleting their
    /// volumes): the daemon is left empty.
    pub fn clean(&self) {
        let conn = self.conn();
        for d in conn.list_all_domains(0).unwrap_or_default() {
            if d.is_active().unwrap_or(false) {
                let _ = d.destroy();
            }
            let _ = d.undefine();
        }
        for p in conn.list_all_storage_pools(0).unwrap_or_default() {
            for v in p.list_all_volumes(0).unwrap_or_default() {
                let _ = v.delete(0);
            }
            if p.is_active().unwrap_or(false) {
                let _ = p.destroy();
            }
            let _ = p.undefine();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.clean();
            self.stop();
        }
    }
}

fn chown_nobody(path: &Path) {
    // SAFETY: getpwnam on a constant name; the result is read at once.
    let (uid, gid) = unsafe {
        let pw = libc::getpwnam(c"nobody".as_ptr());
        assert!(!pw.is_null(), "no user nobody");
        ((*pw).pw_uid, (*pw).pw_gid)
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

fn qemu_img(args: &[&str]) {
    let o = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img");
    assert!(o.status.success(), "qemu-img {args:?}: {}", text(&o.stderr));
}

/// A hook that restarts the daemon right before the call `restart_before`
/// (once), so the call meets a connection that died under it: the daemon
/// restarted mid-pass.
struct Restarting {
    daemon: Arc<Mutex<Daemon>>,
    restart_before: Mutex<Option<HvOp>>,
}

impl Hook for Restarting {
    fn around<'a, T: Send + 'a>(
        &'a self,
        _host: &'a str,
        call: HvCall<'a>,
        made: Made<'a, T>,
    ) -> Made<'a, T> {
        let hit = {
            let mut r = self.restart_before.lock().unwrap();
            let hit = *r == Some(call.op());
            if hit {
                *r = None;
            }
            hit
        };
        if !hit {
            return made;
        }
        let d = self.daemon.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || d.lock().unwrap().restart())
                .await
                .unwrap();
            made.await
        })
    }
}

fn real_yaml(count: u32) -> String {
    format!(
        "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: rel\nspec:\n  github:\n    \
         repository: acme/widgets\n    simulator: true\n  hosts:\n    - name: real\n      \
         uri: qemu:///session\n      storagePool: rel\n      domainType: qemu\n  pools:\n    \
         - name: p\n      count: {count}\n      labels: [rel]\n      vm:\n        cpus: 1\n        \
         memory: 256MiB\n        disk: 1GiB\n        image: base.qcow2\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s09_libvirtd_restarted_mid_pass() {
    let sc = Scenario::begin(9);
    let Some(daemon) = tokio::task::spawn_blocking(|| daemon_or_skip("libvirtd restart"))
        .await
        .unwrap()
    else {
        sc.pass(
            "libvirtd restarted mid-pass",
            0,
            "skipped: no private libvirtd could be started here",
        );
        return;
    };
    let pool_dir = daemon.dir.path().join("pool");
    let console_dir = daemon.dir.path().join("console");
    std::fs::create_dir_all(&console_dir).unwrap();
    chown_nobody(&console_dir);
    std::fs::set_permissions(&console_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    daemon.pool("rel", &pool_dir);
    let base = pool_dir.join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"]);
    chown_nobody(&base);
    {
        let conn = daemon.conn();
        let p = conn.lookup_storage_pool_by_name("rel").unwrap();
        p.refresh(0).unwrap();
    }
    let uri = daemon.uri();
    let daemon = Arc::new(Mutex::new(daemon));

    let sim = Arc::new(sim::start(SimConfig::new("libvirtd-test")).await.unwrap());
    let registry = wiring::registry(
        &sim,
        "acme",
        "widgets",
        "libvirtd-test",
        Some(Duration::from_secs(30)),
    );
    let host = kit::connect(HostConfig {
        domain_type: Some(DomainType::Qemu),
        console_dir: Some(console_dir),
        ..kit::host_config("real", &uri, "rel")
    })
    .await;
    let restarting = Arc::new(Hooked::new(
        Arc::new(host),
        Restarting {
            daemon: daemon.clone(),
            restart_before: Mutex::new(None),
        },
    ));
    let mut fleet = wiring::load(&real_yaml(1));
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(300),
        max_delay: Duration::from_secs(2),
        max_total_wait: Duration::from_secs(10),
    };
    let hosts = BTreeMap::from([(
        "real".to_string(),
        wiring::retrying(restarting.clone(), policy, None),
    )]);
    let registry = wiring::retrying_registry(registry, RetryPolicy::GITHUB, None);
    let mut engine = Engine {
        poll: Duration::from_secs(1),
        ..wiring::engine(
            &fleet,
            hosts,
            Arc::new(registry),
            Arc::new(SystemClock),
            None,
        )
    };
    let cancel = CancellationToken::new();
    // The guests' part: a running VM's runner registers and comes online.
    let play = |engine: &Engine, fleet: &hangar::fleet::LoadedFleet| {
        let sim = sim.clone();
        let desired_labels = vec!["rel".to_string(), ownership_label("rel")];
        let names: Vec<String> = (0..fleet.fleet.spec.pools[0].count)
            .map(|i| format!("rel-p-{i}"))
            .collect();
        let _ = engine;
        for n in names {
            if sim.runner_by_name(SCOPE, &n).is_none() {
                if let Ok(r) = wiring::register(&sim, SCOPE, &n, desired_labels.clone(), true) {
                    sim.set_online(r.id, true).unwrap();
                }
            }
        }
    };
    async fn converge(
        engine: &Engine,
        fleet: &hangar::fleet::LoadedFleet,
        cancel: &CancellationToken,
        play: &dyn Fn(&Engine, &hangar::fleet::LoadedFleet),
    ) -> (usize, usize) {
        let mut failed = 0;
        for n in 1..=8 {
            let r = wiring::pass(engine, fleet, false, cancel, Duration::from_secs(60)).await;
            failed += r.report.as_ref().map_or(0, |r| r.failed()) + r.snapshot.failures().len();
            play(engine, fleet);
            if r.converged() {
                return (n, failed);
            }
        }
        panic!("not converged on the real daemon");
    }
    converge(&engine, &fleet, &cancel, &play).await;
    let uuid_of = |name: &str| {
        let d = daemon.lock().unwrap();
        d.conn()
            .lookup_domain_by_name(name)
            .unwrap()
            .uuid_string()
            .unwrap()
    };
    let first = uuid_of("rel-p-0");
    let mut notes = Vec::new();
    for (op, count) in [
        (HvOp::Observe, 1u32),
        (HvOp::Create, 2),
        (HvOp::Delete, 1),
        (HvOp::RemoveSeed, 2),
    ] {
        fleet = wiring::load(&real_yaml(count));
        engine.provisioner = wiring::provisioner(&fleet, None);
        *restarting.hook.restart_before.lock().unwrap() = Some(op);
        let (passes, failed) = converge(&engine, &fleet, &cancel, &play).await;
        assert!(
            restarting.hook.restart_before.lock().unwrap().is_none(),
            "the restart before {op:?} did not happen"
        );
        notes.push(format!("{op:?}: {passes} pass(es), {failed} failure(s)"));
        // The untouched VM lives on across the restart.
        assert_eq!(
            uuid_of("rel-p-0"),
            first,
            "rel-p-0 was rebuilt by a restart"
        );
        let d = daemon.lock().unwrap();
        let conn = d.conn();
        let names: Vec<String> = conn
            .list_all_domains(0)
            .unwrap()
            .iter()
            .map(|d| d.name().unwrap())
            .collect();
        assert_eq!(names.len(), count as usize, "{op:?}: {names:?}");
        let p = conn.lookup_storage_pool_by_name("rel").unwrap();
        p.refresh(0).unwrap();
        let vols = p.list_volumes().unwrap();
        let ours: Vec<&String> = vols.iter().filter(|v| v.starts_with("rel-")).collect();
        // One root overlay per VM (seeds removed once the runner was up).
        assert_eq!(ours.len(), count as usize, "{op:?}: volumes {vols:?}");
    }
    let restarts = daemon.lock().unwrap().restarts;
    assert_eq!(restarts, 4);
    let _ = Utc::now();
    sim.clear_faults();
    sc.pass(
        "private libvirtd (qemu driver, session mode) stopped and started again right before observe, create, delete and remove-seed calls of a pass",
        restarts,
        &format!(
            "the provider reconnects; the pass fails or retries, the next converges; the untouched VM keeps its UUID; no leaked volume ({})",
            notes.join("; ")
        ),
    );
    tokio::task::spawn_blocking(move || drop(daemon))
        .await
        .unwrap();
}

#[test]
fn s10_full_storage_pool_stops_with_a_clear_error() {
    let sc = Scenario::begin(10);
    let Some(daemon) = daemon_or_skip("full storage pool") else {
        sc.pass(
            "storage pool full",
            0,
            "skipped: no private libvirtd could be started here",
        );
        return;
    };
    // A 64 KiB tmpfs: too small for any qcow2 overlay.
    let full = daemon.dir.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0777", "tmpfs"])
        .arg(&full)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    struct Unmount(PathBuf, bool);
    impl Drop for Unmount {
        fn drop(&mut self) {
            if self.1 {
                let _ = Command::new("umount").arg(&self.0).status();
            }
        }
    }
    let unmount = Unmount(full.clone(), mounted);
    if !mounted {
        // Without a mount, a pool directory nobody can write to refuses
        // every volume in the same place.
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    daemon.pool("full", &full);
    if !mounted {
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let base = daemon.dir.path().join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"]);
    let yaml = format!(
        "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: rel\nspec:\n  github:\n    \
         simulator: true\n  hosts:\n    - name: real\n      uri: {}\n      storagePool: full\n      \
         domainType: qemu\n      imageDirs: [{}]\n  pools:\n    - name: p\n      count: 2\n      labels: [rel]\n      \
         vm:\n        cpus: 1\n        memory: 256MiB\n        disk: 1GiB\n        image: {}\n",
        daemon.uri(),
        daemon.dir.path().display(),
        base.display()
    );
    let state = State::new(&yaml);
    let t0 = Instant::now();
    let o = state.run(&["apply", "--wait", "5m"]);
    let took = t0.elapsed();
    let err = text(&o.stderr);
    assert!(
        took < Duration::from_secs(60),
        "apply looped for {took:?}: {err}"
    );
    let mut trials = 1;
    if mounted {
        // The pool says it has 64 KiB free, less than a VM's disks: nothing
        // is tried, both slots wait for pool space, and apply, which cannot
        // wait that out, stops at once.
        assert_eq!(o.status.code(), Some(5), "{err}");
        assert_eq!(
            err.matches("no room on host real: its disks need 1GiB in the storage pool")
                .count(),
            2,
            "no clear wait: {err}"
        );
        // The daemon's way (`reconcile --once`, as from cron): the same
        // waits each pass, no create tried.
        for _ in 0..2 {
            let o = state.run(&["reconcile", "--once"]);
            let out = format!("{}{}", text(&o.stdout), text(&o.stderr));
            assert!(!out.contains("failed   create"), "{out}");
            assert!(out.contains("0 failed, 2 waiting"), "{out}");
            trials += 1;
        }
    } else {
        // A read-only directory reports free space: creates are tried and
        // fail with a clear error, once per slot and pass.
        assert_eq!(o.status.code(), Some(3), "{err}");
        assert!(
            err.contains("none succeeded") && err.contains("create volume"),
            "no clear error: {err}"
        );
        for _ in 0..2 {
            let o = state.run(&["reconcile", "--once"]);
            assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
            let fails = text(&o.stderr).matches("failed   create").count();
            assert_eq!(
                fails,
                2,
                "one create attempt per slot and pass: {}",
                text(&o.stderr)
            );
            trials += 1;
        }
    }
    let conn = daemon.conn();
    assert!(
        conn.list_all_domains(0).unwrap().is_empty(),
        "a domain was defined"
    );
    drop(conn);
    // Unmount first: the daemon's temp dir cannot be removed around a mount.
    drop(unmount);
    drop(daemon);
    sc.pass(
        &format!(
            "storage pool on a {}; `apply` and `reconcile --once`",
            if mounted {
                "64 KiB tmpfs (less free space than the disks)"
            } else {
                "read-only directory (volume creation fails)"
            }
        ),
        trials,
        &if mounted {
            format!(
                "apply exits 5 after one pass ({:.1}s): both slots wait, naming host, pool space needed and free; each reconcile pass says so again and tries no create; no domain defined",
                took.as_secs_f64()
            )
        } else {
            format!(
                "apply exits 3 after one pass ({:.1}s) naming the failed volume create (\"none succeeded\"); each reconcile pass tries each slot once and exits 3; no domain defined",
                took.as_secs_f64()
            )
        },
    );
}
