//! The libvirt provider against a remote host, reached the way a user
//! reaches one: `qemu+ssh://` with a key and a checked host key, to the
//! session libvirtd of the user `hangar-remote` that
//! `.ci/start-remote-libvirtd` starts on this machine (its URI is in
//! `/var/lib/hangar-ci/remote/uri`).
//!
//! Without that host the test says why and skips, unless
//! `HANGAR_REQUIRE_LIBVIRTD=1` (as in `.ci/run`), which makes it a failure.
//! The domain never boots an OS (its base image is empty); the two-host e2e
//! boots one.

use std::process::Command;

use chrono::Utc;
use hangar::model::host::{DomainType, NetworkAttachment};
use hangar::model::ownership::{Ownership, SpecHash, VmShape};
use hangar::plan::model::VmState;
use hangar::providers::libvirt::{HostConfig, LibvirtHost};
use hangar::providers::{Hypervisor, Seed, VmCreate};
use hangar::secret::Secret;

#[path = "kit/virsh.rs"]
mod kit;
use kit::virsh_at as virsh;

const URI_FILE: &str = "/var/lib/hangar-ci/remote/uri";
const POOL: &str = "hangar-ci";
const CONSOLES: &str = "/var/lib/hangar-remote/consoles";
const MIB: u64 = 1 << 20;

/// One test at a time on the remote daemon: one of them stops it.
static REMOTE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The remote host's URI, or `None` (after saying why) when it is not
/// running here and not required.
fn remote_uri() -> Option<String> {
    let found = std::fs::read_to_string(URI_FILE)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("{URI_FILE}: {e} (run .ci/start-remote-libvirtd)"))
        .and_then(|uri| virsh(&uri, &["version"]).map(|_| uri));
    match found {
        Ok(uri) => {
            println!("remote libvirt host: {uri}");
            Some(uri)
        }
        Err(why) if std::env::var("HANGAR_REQUIRE_LIBVIRTD").as_deref() == Ok("1") => {
            panic!("the remote libvirt host is required (HANGAR_REQUIRE_LIBVIRTD=1): {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: no remote libvirt host: {why}");
            None
        }
    }
}

/// Removes what the run made on the remote host, even when an assertion
/// fails: its domains and volumes, all named with the run's prefix.
struct Cleanup {
    uri: String,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(names) = virsh(&self.uri, &["list", "--all", "--name"]) {
            for name in names.lines().filter(|n| n.starts_with(&self.prefix)) {
                let _ = virsh(&self.uri, &["destroy", name]);
                let _ = virsh(&self.uri, &["undefine", name]);
            }
        }
        let _ = virsh(&self.uri, &["pool-refresh", POOL]);
        for vol in vol_names(&self.uri) {
            if vol.starts_with(&self.prefix) {
                let _ = virsh(&self.uri, &["vol-delete", &vol, "--pool", POOL]);
            }
        }
    }
}

fn vol_names(uri: &str) -> Vec<String> {
    let _ = virsh(uri, &["pool-refresh", POOL]);
    let mut v: Vec<String> = virsh(uri, &["vol-list", POOL])
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    v.sort();
    v
}

fn owner(fleet: &str, image: &str, index: u32) -> Ownership {
    Ownership {
        fleet: fleet.into(),
        pool: "linux".into(),
        slot: format!("{fleet}-linux-{index}"),
        index,
        generation: 1,
        spec_hash: SpecHash("0000000000000001".into()),
        created_at: Utc::now(),
        ephemeral: true,
        boot_failures: 0,
        shape: VmShape {
            cpus: 1,
            memory_bytes: 128 * MIB,
            disk_bytes: 256 * MIB,
            image: image.into(),
            cache_bytes: Some(64 * MIB),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_works_over_qemu_ssh_to_a_remote_session_libvirtd() {
    let _one = REMOTE.lock().await;
    let Some(uri) = remote_uri() else {
        return;
    };
    let id = format!(
        "{:x}{:x}",
        std::process::id(),
        Utc::now().timestamp_subsec_nanos()
    );
    let fleet = format!("remote{id}");
    let guard = Cleanup {
        uri: uri.clone(),
        prefix: format!("{fleet}-"),
    };
    // An empty base image of the run's own, made in the remote pool over
    // the same transport.
    let base = format!("{fleet}-base.qcow2");
    virsh(
        &uri,
        &["vol-create-as", POOL, &base, "64M", "--format", "qcow2"],
    )
    .unwrap();

    let host = tokio::task::spawn_blocking({
        let uri = uri.clone();
        move || {
            LibvirtHost::connect(HostConfig {
                name: "remote".into(),
                uri,
                storage_pool: POOL.into(),
                network: NetworkAttachment::None,
                domain_type: Some(DomainType::Qemu),
                console_dir: Some(CONSOLES.into()),
                volume_record: None,
                image_dirs: Vec::new(),
            })
        }
    })
    .await
    .unwrap()
    .unwrap();

    let facts = host.facts().await.unwrap();
    assert_eq!(facts.domain_type, DomainType::Qemu);
    assert!(facts.cpus > 0 && facts.memory_bytes > 0, "{facts:?}");
    assert!(facts.pool_free_bytes.unwrap() > 0, "{facts:?}");
    assert!(host.observe(&fleet).await.unwrap().is_empty());

    let a = owner(&fleet, &base, 0);
    let create = VmCreate {
        seed: Seed {
            user_data: "#cloud-config\n".into(),
            meta_data: format!("instance-id: {}-g1\n", a.slot),
            credential: Secret::new("ghs_canary_secret".into()),
        },
        owner: a.clone(),
        boot: None,
        network: NetworkAttachment::None,
        cpu_model: Default::default(),
        runner_volume: None,
    };
    host.create(&create).await.unwrap();
    // Again: the create already happened, nothing changes.
    host.create(&create).await.unwrap();

    let seen = host.observe(&fleet).await.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].owner, a);
    assert_eq!(seen[0].state, VmState::Running);
    assert!(seen[0].seed_attached);
    let calls = host.libvirt_calls();
    host.observe(&fleet).await.unwrap();
    assert_eq!(
        host.libvirt_calls() - calls,
        1,
        "steady-state observe of a remote host is one round trip"
    );
    let dumped = virsh(&uri, &["dumpxml", &a.slot]).unwrap();
    assert!(!dumped.contains("ghs_canary_secret"));
    assert!(dumped.contains(hangar::model::ownership::OWNERSHIP_NS));
    assert!(dumped.contains("type='qemu'"), "{dumped}");

    // Root overlay, cache and seed are volumes in the remote pool.
    let vols = vol_names(&uri);
    for want in [
        hangar::model::names::root_volume_name(&a.slot, 1),
        hangar::model::names::cache_volume_name(&a.slot),
        hangar::model::names::seed_volume_name(&a.slot, 1),
    ] {
        assert!(vols.contains(&want), "{want} missing in {vols:?}");
    }
    let usage = host.cache_usage(&fleet).await.unwrap();
    assert_eq!(usage.len(), 1, "{usage:?}");

    // Delete with the cache: nothing of the VM is left remotely.
    host.delete(&seen[0].vm_ref(), true).await.unwrap();
    assert!(host.observe(&fleet).await.unwrap().is_empty());
    let ours: Vec<String> = vol_names(&uri)
        .into_iter()
        .filter(|v| v.starts_with(&guard.prefix))
        .collect();
    assert_eq!(ours, vec![base.clone()], "volumes left");
    let left: Vec<String> = virsh(&uri, &["list", "--all", "--name"])
        .unwrap()
        .lines()
        .filter(|n| n.starts_with(&guard.prefix))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "domains left: {left:?}");
}

/// Lets a stopped daemon run again, even when an assertion fails.
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

/// Connection health: a remote libvirtd that stops answering (SIGSTOP: its
/// socket stays open, nothing replies) fails a call within the call
/// deadline, further calls fail at once while the stuck one has not
/// returned, and once the daemon answers again the host is observed again
/// (the connection reopened as needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_host_that_stops_answering_fails_its_calls_within_the_deadline() {
    let _one = REMOTE.lock().await;
    let Some(uri) = remote_uri() else {
        return;
    };
    let host = tokio::task::spawn_blocking({
        let uri = uri.clone();
        move || {
            LibvirtHost::connect(HostConfig {
                name: "remote".into(),
                uri,
                storage_pool: POOL.into(),
                network: NetworkAttachment::None,
                domain_type: Some(DomainType::Qemu),
                console_dir: Some(CONSOLES.into()),
                volume_record: None,
                image_dirs: Vec::new(),
            })
        }
    })
    .await
    .unwrap()
    .unwrap();
    let deadline = std::time::Duration::from_secs(3);
    host.set_call_timeout(Some(deadline));
    host.observe("remote-none").await.unwrap();

    let pid = std::fs::read_to_string("/var/lib/hangar-remote/.cache/libvirt/libvirtd.pid")
        .unwrap()
        .trim()
        .to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let resume = Resume(pid);

    let t = std::time::Instant::now();
    let e = host.observe("remote-none").await.unwrap_err();
    let took = t.elapsed();
    assert!(e.message.contains("not answering"), "{e}");
    assert!(
        took >= deadline && took < deadline + std::time::Duration::from_secs(2),
        "failed after {took:?}"
    );
    let t = std::time::Instant::now();
    let e = host.facts().await.unwrap_err();
    assert!(e.message.contains("not answering"), "{e}");
    assert!(
        t.elapsed() < std::time::Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );

    drop(resume);
    let t = std::time::Instant::now();
    loop {
        match host.observe("remote-none").await {
            Ok(_) => break,
            Err(e) if t.elapsed() < std::time::Duration::from_secs(30) => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the host answers again but is not observed: {e}"),
        }
    }
}
