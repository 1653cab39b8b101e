//! Defects 2–4: a name is not ownership, ownership is re-read before
//! acting, and a copy of one of our domains is a wait, not a failing
//! create.

use std::path::PathBuf;

use chrono::Utc;
use hangar::model::host::NetworkAttachment;
use hangar::model::names::{cache_volume_name, root_volume_name, seed_volume_name};
use hangar::model::ownership::{Ownership, VmShape};
use hangar::plan::model::Leftover;
use hangar::providers::libvirt::{HostConfig, LibvirtHost};
use hangar::providers::{ErrorKind, Hypervisor, VmCreate};

use super::kit::{self, MIB};
use super::virsh::{self, virsh, Cleanup, PrivatePool, SYSTEM as URI};

/// A private pool (with an empty `base.qcow2`) on the real daemon, removed
/// with every domain named after the fleet on drop.
struct Rig {
    fleet: String,
    pool: String,
    /// The pool's temp dir, for hangar's record and the test's files.
    dir: PathBuf,
    _guard: Cleanup,
}

impl Rig {
    fn new() -> Option<Rig> {
        let private = PrivatePool::new("trust")?;
        Some(Rig {
            fleet: private.fleet,
            pool: private.pool,
            dir: private.dir,
            _guard: private.guard,
        })
    }

    /// A volume made by someone else (virsh), named as the test says.
    fn make_volume(&self, name: &str, format: &str) {
        virsh(&["vol-create-as", &self.pool, name, "64M", "--format", format]).unwrap();
    }

    fn volumes(&self) -> Vec<String> {
        virsh::volumes(&self.pool)
    }

    fn record(&self) -> PathBuf {
        self.dir.join("volumes.json")
    }

    /// A fresh provider (a new hangar process, as far as caches go) with
    /// hangar's record of what it made in the rig's directory.
    async fn host(&self) -> LibvirtHost {
        self.host_with_image_dirs(vec![]).await
    }

    /// A fresh provider and our VM of slot `index` (generation 1) made by it.
    async fn host_with_vm(&self, index: u32) -> (LibvirtHost, Ownership) {
        let host = self.host().await;
        let a = self.owner(index, 1);
        host.create(&vm(a.clone())).await.unwrap();
        (host, a)
    }

    async fn host_with_image_dirs(&self, image_dirs: Vec<PathBuf>) -> LibvirtHost {
        kit::connect(HostConfig {
            console_dir: Some(self.dir.join("consoles")),
            volume_record: Some(self.record()),
            observed: None,
            image_dirs,
            ..kit::host_config("local", URI, &self.pool)
        })
        .await
    }

    fn owner(&self, index: u32, generation: u64) -> Ownership {
        let shape = VmShape {
            disk_bytes: 128 * MIB,
            ..kit::small_vm(Some(64 * MIB))
        };
        kit::ownership(&self.fleet, "p", index, generation, Utc::now(), shape)
    }
}

fn vm(owner: Ownership) -> VmCreate {
    kit::vm_create(owner, NetworkAttachment::None, "jit")
}

fn leftover_names(host: &LibvirtHost) -> Vec<String> {
    host.host_state()
        .leftovers
        .iter()
        .filter_map(|l| match l {
            Leftover::Volume { name, .. }
            | Leftover::Cache { name, .. }
            | Leftover::RunnerVolume { name } => Some(name.clone()),
            Leftover::ConsoleLog { .. } => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_02_foreign_volumes_named_like_ours_are_never_deleted_or_adopted() {
    let Some(rig) = Rig::new() else { return };
    let (a, b, c) = (rig.owner(2, 1), rig.owner(3, 1), rig.owner(4, 1));
    // Made by someone else before hangar's first apply.
    let foreign = [
        seed_volume_name(&a.slot, 7),
        seed_volume_name(&b.slot, 1),
        cache_volume_name(&c.slot),
    ];
    rig.make_volume(&foreign[0], "raw");
    rig.make_volume(&foreign[1], "raw");
    rig.make_volume(&foreign[2], "qcow2");

    let host = rig.host().await;
    host.create(&vm(a.clone())).await.unwrap();
    // Its seed is someone else's: not deleted to write ours.
    let err = host.create(&vm(b.clone())).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("hangar did not make it"), "{err}");
    // Its cache is someone else's: not attached to our VM.
    let err = host.create(&vm(c.clone())).await.unwrap_err();
    assert!(err.to_string().contains(&foreign[2]), "{err}");

    // A fresh process: leftovers are what hangar made, never what is
    // merely named like it (b's root, made before the refusal, is ours).
    let host = rig.host().await;
    let seen = host.observe(&rig.fleet).await.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    // b's cache too, as a cache no domain uses (issue 18): only
    // `destroy` plans its removal, so a pass keeps it for the slot.
    let left = leftover_names(&host);
    assert_eq!(
        left,
        vec![
            root_volume_name(&b.slot, 1),
            root_volume_name(&c.slot, 1),
            cache_volume_name(&b.slot)
        ]
    );
    for l in host.host_state().leftovers {
        if !matches!(l, Leftover::Cache { .. }) {
            host.remove_leftover(&l).await.unwrap();
        }
    }
    // destroy's delete of our VM, its cache included.
    host.delete(&seen[0].vm_ref(), true).await.unwrap();
    // b's cache is hangar's (made before the refusal) and kept for the slot.
    let mut expected = vec!["base.qcow2".to_string(), cache_volume_name(&b.slot)];
    expected.extend(foreign.iter().cloned());
    expected.sort();
    assert_eq!(rig.volumes(), expected, "only the foreign volumes remain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_03_a_domain_redefined_without_our_metadata_is_not_deleted() {
    let Some(rig) = Rig::new() else { return };
    let (host, a) = rig.host_with_vm(0).await;
    let seen = host.observe(&rig.fleet).await.unwrap();
    assert_eq!(seen.len(), 1);
    // What `virsh edit` does when someone removes the metadata: same UUID.
    virsh(&["destroy", &a.slot]).unwrap();
    let xml = virsh(&["dumpxml", "--inactive", &a.slot]).unwrap();
    let start = xml.find("<metadata>").expect("metadata element");
    let end = xml.find("</metadata>").unwrap() + "</metadata>".len();
    let edited = format!("{}{}", &xml[..start], &xml[end..]);
    let file = rig.dir.join("edited.xml");
    std::fs::write(&file, edited).unwrap();
    virsh(&["define", file.to_str().unwrap()]).unwrap();

    // The long-lived process still has it cached as ours.
    let err = host.delete(&seen[0].vm_ref(), true).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("not hangar's"), "{err}");
    assert!(
        virsh(&["dominfo", &a.slot]).is_ok(),
        "the domain is still there"
    );
    assert!(rig.volumes().contains(&root_volume_name(&a.slot, 1)));
    assert!(host.observe(&rig.fleet).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_04_a_copy_naming_another_slot_is_foreign_so_the_slot_waits() {
    let Some(rig) = Rig::new() else { return };
    let (_first, a) = rig.host_with_vm(0).await;
    // A copy of a's definition under slot 1's name, new UUID, a's metadata.
    let xml = virsh(&["dumpxml", "--inactive", &a.slot]).unwrap();
    let uuid_start = xml.find("<uuid>").unwrap();
    let uuid_end = xml.find("</uuid>").unwrap() + "</uuid>".len();
    let copy_name = rig.owner(1, 1).slot;
    let copy = format!("{}{}", &xml[..uuid_start], &xml[uuid_end..]).replacen(
        &format!("<name>{}</name>", a.slot),
        &format!("<name>{copy_name}</name>"),
        1,
    );
    let file = rig.dir.join("copy.xml");
    std::fs::write(&file, copy).unwrap();
    virsh(&["define", file.to_str().unwrap()]).unwrap();

    let host = rig.host().await;
    let seen = host.observe(&rig.fleet).await.unwrap();
    assert_eq!(
        seen.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        vec![a.slot.as_str()],
        "the copy is not one of the fleet's VMs"
    );
    // The planner waits on a name a foreign domain holds
    // (`WaitReason::DomainNameTaken`), instead of a create that fails.
    assert!(host.foreign_names().contains(&copy_name));
    // And the copy's disks (a's) are not leftovers: it uses them.
    assert!(leftover_names(&host).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_08_a_host_path_image_outside_pools_and_image_dirs_is_refused() {
    let Some(rig) = Rig::new() else { return };
    let images = rig.dir.join("images");
    std::fs::create_dir(&images).unwrap();
    let outside = rig.dir.join("secret.img");
    std::fs::write(&outside, b"not for guests").unwrap();
    // A symlink inside the allowed directory that leads out of it.
    std::os::unix::fs::symlink(&outside, images.join("link.img")).unwrap();
    std::fs::write(images.join("ok.img"), vec![0u8; 4096]).unwrap();
    let with_image = |index: u32, image: &std::path::Path| {
        let mut o = rig.owner(index, 1);
        o.shape.image = image.display().to_string();
        o.shape.cache_bytes = None;
        vm(o)
    };

    let host = rig.host().await;
    let err = host.create(&with_image(0, &outside)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("imageDirs"), "{err}");

    let host = rig.host_with_image_dirs(vec![images.clone()]).await;
    let err = host
        .create(&with_image(1, &images.join("link.img")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("in no imageDirs"), "{err}");
    host.create(&with_image(2, &images.join("ok.img")))
        .await
        .unwrap();
    let seen = host.observe(&rig.fleet).await.unwrap();
    assert_eq!(seen.len(), 1, "only the image inside imageDirs is used");
}
