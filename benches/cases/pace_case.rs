//! P9 (issue 18): creates and deletes at the host's pace, on the real
//! libvirtd at `qemu:///system` (`.ci/start-libvirtd`). In one run, side by
//! side: hangar's engine creates `n` VMs that never boot (an empty qcow2
//! base image: no OS to find) with the fleet file's default limits, then
//! `hangar destroy`'s path removes them; and the same libvirt work by hand,
//! one `virsh` per VM under `xargs -P n`: the same volumes and domain XML,
//! rendered by hangar's own functions (`volume_xml`, `render_domain`,
//! `seed_iso`), created, uploaded, defined and started, then stopped,
//! deleted and undefined. Reported: the times and hangar / xargs for
//! create and for destroy (goal ≤ 1.2), libvirt round trips per created
//! VM, and the connections hangar opened to the host.
//!
//! Every object is named `p8…` and lives in a dir pool of the run's own,
//! removed (with the domains) even when the case fails. Without a
//! reachable daemon the case says so and is skipped.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar::fleet::{load_str, LoadedFleet};
use hangar::model::host::{DomainType, NetworkAttachment};
use hangar::model::ownership::{Ownership, SpecHash, VmShape};
use hangar::providers::libvirt::seed::seed_iso;
use hangar::providers::libvirt::xml::{Backing, VolumeFormat, VolumeSpec};
use hangar::providers::libvirt::{volume_xml, HostConfig, LibvirtHost};
use hangar::providers::{Hypervisor, RetryPolicy, Seed};
use hangar::reconcile::destroy::{destroy, DestroySettings};
use hangar::reconcile::event::{Event, Recorded};
use hangar::secret::Secret;
use tokio_util::sync::CancellationToken;

use super::{median, ms, virsh, wiring, Meter, Metered, Options, Report, Rig};

const URI: &str = virsh::SYSTEM;
const HOST: &str = "local";
const POOL: &str = "pr";
const MIB: u64 = 1 << 20;

/// The fleet: one host, one ephemeral pool of `n` never-booting VMs, no
/// network, no concurrency set (the defaults under test).
fn fleet_yaml(fleet: &str, storage_pool: &str, n: usize) -> String {
    format!(
        "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: {fleet}\nspec:\n  github:\n    \
         repository: {}/{}\n    simulator: true\n  hosts:\n    - name: {HOST}\n      uri: {URI}\n      \
         storagePool: {storage_pool}\n      cpuOvercommit: 8\n  pools:\n    - name: {POOL}\n      count: {n}\n      \
         ephemeral: true\n      labels: [bench]\n      vm:\n        cpus: 1\n        \
         memory: 256MiB\n        disk: 1GiB\n        image: base.qcow2\n      cache:\n        \
         size: 1GiB\n",
        super::OWNER,
        super::REPO,
    )
}

/// The shape hangar makes for that pool (for the by-hand side).
fn shape() -> VmShape {
    VmShape {
        cpus: 1,
        memory_bytes: 256 * MIB,
        disk_bytes: 1 << 30,
        image: "base.qcow2".into(),
        cache_bytes: Some(1 << 30),
    }
}

/// What one by-hand VM is: its name, and the `virsh` command strings that
/// make and remove it (`;`-separated commands, one connection each).
struct ByHand {
    create: String,
    destroy: String,
}

/// Writes the XML and the seed of by-hand VM `index` of fleet `fleet` into
/// `dir`, as hangar renders them for `host`.
fn by_hand(
    host: &LibvirtHost,
    dir: &Path,
    storage_pool: &str,
    pool_dir: &Path,
    fleet: &str,
    index: u32,
) -> ByHand {
    let slot = format!("{fleet}-{POOL}-{index}");
    let owner = Ownership {
        fleet: fleet.into(),
        pool: POOL.into(),
        slot: slot.clone(),
        index,
        generation: 1,
        spec_hash: SpecHash(format!("{:016x}", 1)),
        created_at: chrono::Utc::now(),
        ephemeral: true,
        boot_failures: 0,
        shape: shape(),
    };
    let root = hangar::model::names::root_volume_name(&slot, 1);
    let cache = hangar::model::names::cache_volume_name(&slot);
    let seed = hangar::model::names::seed_volume_name(&slot, 1);
    let iso = seed_iso(&Seed {
        user_data: "#cloud-config\n".into(),
        meta_data: format!("instance-id: {slot}-g1\nlocal-hostname: {slot}\n"),
        credential: Secret::new("p8-not-a-secret".into()),
    })
    .expect("seed image");
    let write = |name: &str, text: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("by-hand file");
        path.display().to_string()
    };
    let vol = |name: &str, capacity_bytes: u64, format, backing| {
        volume_xml(&VolumeSpec {
            name: name.to_string(),
            capacity_bytes,
            format,
            backing,
        })
    };
    let base = Backing {
        path: pool_dir.join("base.qcow2").display().to_string(),
        format: VolumeFormat::Qcow2,
    };
    let root_xml = write(
        &format!("{slot}.root.xml"),
        vol(&root, 1 << 30, VolumeFormat::Qcow2, Some(base)).as_bytes(),
    );
    let cache_xml = write(
        &format!("{slot}.cache.xml"),
        vol(&cache, 1 << 30, VolumeFormat::Qcow2, None).as_bytes(),
    );
    let seed_xml = write(
        &format!("{slot}.seed.xml"),
        vol(&seed, iso.len() as u64, VolumeFormat::Raw, None).as_bytes(),
    );
    let seed_file = write(&format!("{slot}.iso"), &iso);
    let domain = write(
        &format!("{slot}.domain.xml"),
        host.render_domain(&owner, None).as_bytes(),
    );
    let p = storage_pool;
    ByHand {
        create: format!(
            "vol-create {p} {root_xml} ; vol-create {p} {cache_xml} ; vol-create {p} {seed_xml} ; \
             vol-upload --pool {p} {seed} {seed_file} ; define {domain} ; start {slot}"
        ),
        destroy: format!(
            "destroy {slot} ; vol-delete --pool {p} {root} ; vol-delete --pool {p} {cache} ; \
             vol-delete --pool {p} {seed} ; undefine {slot}"
        ),
    }
}

/// `xargs -P <lines> -n 1 virsh -c URI -q`, one command string a line.
fn xargs(lines: &[String]) -> Duration {
    let t = Instant::now();
    let mut child = Command::new("xargs")
        .args(["-d", "\\n", "-n", "1", "-P", &lines.len().to_string()])
        .args(["virsh", "-c", URI, "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run xargs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("xargs stdin");
        stdin
            .write_all(lines.join("\n").as_bytes())
            .expect("feed xargs");
    }
    let status = child.wait().expect("wait for xargs");
    assert!(status.success(), "xargs virsh failed: {status}");
    t.elapsed()
}

fn load(fleet: &str, storage_pool: &str, n: usize) -> LoadedFleet {
    load_str("p8.yaml", &fleet_yaml(fleet, storage_pool, n))
        .unwrap_or_else(|e| panic!("P9 fleet file: {e}"))
}

pub(crate) async fn p9_host_pace(rep: &mut Report, opt: &Options) {
    if let Some(why) = virsh::unavailable() {
        eprintln!("P9 skipped: no libvirtd at {URI}: {why}");
        rep.notes
            .push(format!("P9 skipped: no libvirtd at {URI} ({why})"));
        return;
    }
    let n: usize = if opt.quick { 4 } else { 10 };
    let rounds = if opt.quick { 1 } else { 5 };
    let Some(private) = virsh::PrivatePool::new("p8") else {
        return;
    };
    let fleet = private.fleet.clone();
    let hand_fleet = format!("p8x{}", &fleet[2..]);
    // Removes the by-hand domains too (dropped before `private.guard`,
    // which removes the pool and its volumes).
    let _hand_guard = virsh::Cleanup::domains(&format!("{hand_fleet}-"));
    let pool_dir = private.pool_dir();
    let consoles = private.dir.join("consoles");
    std::fs::create_dir_all(&consoles).expect("console dir");
    let config = HostConfig {
        name: HOST.into(),
        uri: URI.into(),
        storage_pool: private.pool.clone(),
        network: NetworkAttachment::None,
        domain_type: None,
        console_dir: Some(consoles),
        volume_record: Some(private.dir.join("volumes.json")),
        observed: Some(private.dir.join("observed.json")),
        image_dirs: Vec::new(),
    };
    let lv = tokio::task::spawn_blocking(move || LibvirtHost::connect(config))
        .await
        .expect("connect task")
        .unwrap_or_else(|e| panic!("connect to {URI}: {e}"));
    assert_ne!(lv.domain_type(), DomainType::Test);
    let metered = Arc::new(Metered::new(Arc::new(lv.clone()), Meter::default()));
    let mut world_hosts: BTreeMap<String, Arc<dyn Hypervisor>> = BTreeMap::new();
    world_hosts.insert(
        HOST.into(),
        wiring::retrying(metered.clone(), RetryPolicy::LIBVIRT, None),
    );
    let loaded = load(&fleet, &private.pool, n);
    let dir = tempfile::tempdir().expect("temp dir");
    let rig = Rig::assemble(dir, vec![metered], loaded, world_hosts, n).await;
    let facts = lv.facts().await.expect("host facts");
    let limits = rig.engine.limits;
    let per_host = limits.for_host(Some(facts.cpus));
    let per_connection = hangar::providers::libvirt::calls_per_connection(URI);

    let work = private.dir.join("by-hand");
    std::fs::create_dir_all(&work).expect("by-hand dir");
    let hand: Vec<ByHand> = (0..n as u32)
        .map(|i| by_hand(&lv, &work, &private.pool, &pool_dir, &hand_fleet, i))
        .collect();
    let creates: Vec<String> = hand.iter().map(|h| h.create.clone()).collect();
    let destroys: Vec<String> = hand.iter().map(|h| h.destroy.clone()).collect();
    let running = |prefix: &str| virsh::running(prefix).len();
    // qemu settles after its start before anything is stopped, on both
    // sides alike.
    let settle = Duration::from_secs(2);

    let (mut h_create, mut h_destroy, mut x_create, mut x_destroy) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut calls_per_create, mut connections) = (0.0, 0);
    let mut destroy_notes = Vec::new();
    for round in 0..rounds {
        // Alternate which side goes first.
        for hangar_side in [round % 2 == 0, round % 2 != 0] {
            if hangar_side {
                let c0 = lv.libvirt_calls();
                let t = Instant::now();
                let r = rig.pass().await;
                h_create.push(t.elapsed());
                let report = r.report.as_ref().expect("the pass created");
                let failures: Vec<String> = report
                    .failures()
                    .map(|o| match &o.outcome {
                        hangar::reconcile::execute::Outcome::Failed { error } => {
                            error.message.clone()
                        }
                        _ => String::new(),
                    })
                    .collect();
                assert!(failures.is_empty(), "creates failed: {failures:#?}");
                assert_eq!(report.done(), n, "creates done");
                calls_per_create = (lv.libvirt_calls() - c0) as f64 / n as f64;
                connections = connections.max(lv.libvirt_connections());
                assert_eq!(running(&format!("{fleet}-")), n, "hangar's VMs running");
                tokio::time::sleep(settle).await;
                let t = Instant::now();
                let events = Recorded::default();
                let done = destroy(
                    &rig.engine,
                    DestroySettings {
                        force: false,
                        wait: Duration::from_secs(120),
                        poll: Duration::from_millis(200),
                        pools: vec![POOL.into()],
                    },
                    &CancellationToken::new(),
                    &events,
                )
                .await
                .unwrap_or_else(|e| panic!("destroy: {e}"));
                h_destroy.push(t.elapsed());
                let mut slowest = Vec::new();
                for e in events.take() {
                    if let Event::ActionFinished { outcome } = e {
                        slowest.push(outcome.millis);
                    }
                }
                slowest.sort_unstable();
                destroy_notes.push(format!("{} passes, actions {slowest:?} ms", done.passes));
                assert!(virsh::domains(&format!("{fleet}-")).is_empty());
            } else {
                x_create.push(xargs(&creates));
                assert_eq!(running(&format!("{hand_fleet}-")), n, "by-hand VMs running");
                tokio::time::sleep(settle).await;
                x_destroy.push(xargs(&destroys));
                assert!(virsh::domains(&format!("{hand_fleet}-")).is_empty());
            }
        }
    }
    let left = virsh::volumes(&private.pool);
    assert_eq!(left, vec!["base.qcow2".to_string()], "volumes left");

    let fmt = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rep.notes.push(format!(
        "P9 on {URI}, {} cpus, {n} VMs, {rounds} rounds (s): hangar create {}; xargs create {}; \
         hangar destroy {}; xargs destroy {}",
        facts.cpus,
        fmt(&h_create),
        fmt(&x_create),
        fmt(&h_destroy),
        fmt(&x_destroy)
    ));
    rep.notes
        .push(format!("P9 hangar destroys: {}", destroy_notes.join("; ")));
    let (hc, hd, xc, xd) = (
        median(h_create),
        median(h_destroy),
        median(x_create),
        median(x_destroy),
    );
    let s = |d: Duration| (d.as_secs_f64() * 100.0).round() / 100.0;
    rep.row(
        "P9",
        format!(
            "hangar's default limits on this host ({} cpus): per host",
            facts.cpus
        ),
        per_host as f64,
        "actions",
        "",
        None,
    );
    rep.row(
        "P9",
        format!("create {n} VMs: hangar pass (median of {rounds})"),
        s(hc),
        "s",
        "",
        None,
    );
    rep.row(
        "P9",
        format!("create {n} VMs: virsh under xargs -P {n}"),
        s(xc),
        "s",
        "",
        None,
    );
    let rc = ms(hc) / ms(xc);
    rep.row(
        "P9",
        "  create: hangar / xargs",
        (rc * 100.0).round() / 100.0,
        "×",
        "≤ 1.2",
        Some(rc <= 1.2),
    );
    rep.row(
        "P9",
        format!("destroy {n} VMs: hangar destroy (median of {rounds})"),
        s(hd),
        "s",
        "",
        None,
    );
    rep.row(
        "P9",
        format!("destroy {n} VMs: virsh under xargs -P {n}"),
        s(xd),
        "s",
        "",
        None,
    );
    let rd = ms(hd) / ms(xd);
    rep.row(
        "P9",
        "  destroy: hangar / xargs",
        (rd * 100.0).round() / 100.0,
        "×",
        "≤ 1.2",
        Some(rd <= 1.2),
    );
    rep.row(
        "P9",
        "libvirt round trips per created VM (create pass / VMs, observation included)",
        (calls_per_create * 10.0).round() / 10.0,
        "calls",
        "",
        None,
    );
    rep.row(
        "P9",
        "libvirt connections hangar held to the host",
        connections as f64,
        "conn",
        format!("⌈min({per_host}, {n})/{per_connection}⌉"),
        Some(connections == per_host.min(n).div_ceil(per_connection)),
    );
    rig.shutdown().await;
}
