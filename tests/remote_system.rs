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
use hangar::model::ownership::{Ownership, VmShape};
use hangar::plan::model::VmState;
use hangar::providers::libvirt::{HostConfig, LibvirtHost};
use hangar::providers::Hypervisor;

#[path = "kit/host.rs"]
mod kit;
#[path = "kit/virsh.rs"]
mod virsh;
use kit::MIB;
use virsh::{virsh_at as virsh, volumes_at, Cleanup};

const URI_FILE: &str = "/var/lib/hangar-ci/remote/uri";
const POOL: &str = "hangar-ci";
const CONSOLES: &str = "/var/lib/hangar-remote/consoles";

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

fn vol_names(uri: &str) -> Vec<String> {
    volumes_at(uri, POOL)
}

/// The provider on the remote host, its domains of type qemu.
async fn remote_host(uri: &str) -> LibvirtHost {
    kit::connect(HostConfig {
        domain_type: Some(DomainType::Qemu),
        console_dir: Some(CONSOLES.into()),
        ..kit::host_config("remote", uri, POOL)
    })
    .await
}

fn owner(fleet: &str, image: &str, index: u32) -> Ownership {
    let shape = VmShape {
        image: image.into(),
        ..kit::small_vm(Some(64 * MIB))
    };
    kit::ownership(fleet, "linux", index, 1, Utc::now(), shape)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_works_over_qemu_ssh_to_a_remote_session_libvirtd() {
    let _one = REMOTE.lock().await;
    let Some(uri) = remote_uri() else {
        return;
    };
    let fleet = format!("remote{}", virsh::run_id());
    // What the run made on the remote host, removed even when an assertion
    // fails: its domains and volumes, all named with the run's prefix.
    let mut guard = Cleanup::domains_at(&uri, &format!("{fleet}-"));
    guard.shared_pool = Some(POOL.to_string());
    // An empty base image of the run's own, made in the remote pool over
    // the same transport.
    let base = format!("{fleet}-base.qcow2");
    virsh(
        &uri,
        &["vol-create-as", POOL, &base, "64M", "--format", "qcow2"],
    )
    .unwrap();

    let host = remote_host(&uri).await;

    let facts = host.facts().await.unwrap();
    assert_eq!(facts.domain_type, DomainType::Qemu);
    assert!(facts.cpus > 0 && facts.memory_bytes > 0, "{facts:?}");
    assert!(facts.pool_free_bytes.unwrap() > 0, "{facts:?}");
    assert!(host.observe(&fleet).await.unwrap().is_empty());

    let a = owner(&fleet, &base, 0);
    let create = kit::vm_create(a.clone(), NetworkAttachment::None, "ghs_canary_secret");
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
    // The listing, and one guest-agent ask for the guest's stage: on a
    // remote host it comes through the agent while the guest boots (this
    // one never runs an agent, so the ask fails at once).
    assert_eq!(
        host.libvirt_calls() - calls,
        2,
        "observe of a remote host with a booting guest: the listing and one agent ask"
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
    let left = virsh::domains_at(&uri, &guard.prefix);
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
    let host = remote_host(&uri).await;
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
