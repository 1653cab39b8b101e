//! The fleet's runner volume on libvirt's test driver: made once from a
//! verified tarball, seen by observation, attached read-only to the VMs
//! that install from it; a tarball that is not what it claims is refused.

use hangar::model::runner::{runner_volume_name, LocalTarball, RunnerTarball};
use hangar::providers::{ErrorKind, Hypervisor};
use sha2::{Digest, Sha256};

use super::{owner, vm, Node, FLEET};

fn tarball(dir: &std::path::Path, bytes: &[u8]) -> LocalTarball {
    let t = RunnerTarball {
        version: "2.330.0".into(),
        arch: "x64".into(),
        sha256: hex::encode(Sha256::digest(bytes)),
        size: bytes.len() as u64,
    };
    let path = dir.join(t.file_name());
    std::fs::write(&path, bytes).unwrap();
    LocalTarball { tarball: t, path }
}

#[tokio::test]
async fn the_runner_volume_is_made_once_observed_and_attached_read_only() {
    let n = Node::new();
    let dir = tempfile::tempdir().unwrap();
    let local = tarball(
        dir.path(),
        b"not really a tarball, but its bytes are checked",
    );
    let name = runner_volume_name(FLEET, &local.tarball);

    // A create that needs it before it exists is refused, nothing defined.
    let mut create = vm(owner(0, 1, None));
    create.runner_volume = Some(name.clone());
    let err = n.host.create(&create).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err}");
    assert!(!n.domains().contains_key("ci-linux-0"));

    n.host.ensure_runner_volume(&name, &local).await.unwrap();
    n.host.ensure_runner_volume(&name, &local).await.unwrap();
    let vols = n.volumes();
    assert_eq!(vols.iter().filter(|v| **v == name).count(), 1, "{vols:?}");
    assert!(!vols.iter().any(|v| v.ends_with(".partial")), "{vols:?}");

    n.host.observe(FLEET).await.unwrap();
    assert!(
        n.host.host_state().runner_volumes.contains(&name),
        "{:?}",
        n.host.host_state()
    );

    n.host.create(&create).await.unwrap();
    let (_, xml) = &n.domains()["ci-linux-0"];
    let disk = xml
        .split("<disk")
        .find(|d| d.contains(&name))
        .unwrap_or_else(|| panic!("no runner disk in {xml}"));
    assert!(disk.contains("<readonly/>"), "{disk}");
    assert!(disk.contains("<serial>hangar-runner</serial>"), "{disk}");

    // Deleting the VM leaves the fleet's runner volume for the others.
    let seen = n.host.observe(FLEET).await.unwrap();
    n.host.delete(&seen[0].vm_ref(), true).await.unwrap();
    assert!(n.volumes().contains(&name));
}

#[tokio::test]
async fn a_tarball_that_is_not_what_it_claims_is_refused_and_nothing_is_made() {
    let n = Node::new();
    let dir = tempfile::tempdir().unwrap();
    let mut local = tarball(dir.path(), b"the real bytes");
    local.tarball.sha256 = "0".repeat(64);
    let name = runner_volume_name(FLEET, &local.tarball);
    let err = n
        .host
        .ensure_runner_volume(&name, &local)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert!(err.to_string().contains("sha256"), "{err}");
    local.tarball.size += 1;
    let err = n
        .host
        .ensure_runner_volume(&name, &local)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bytes"), "{err}");
    assert!(!n.volumes().iter().any(|v| v.contains("-runner-")));
}
