//! A sandbox host: hangar's libvirt provider on libvirt's own test driver,
//! whose state is saved to a node file after every change.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use async_trait::async_trait;

use crate::files::state;
use crate::model::host::{HostFacts, NetworkAttachment};
use crate::plan::model::{Leftover, ObservedHost, ObservedVm, VmRef};
use crate::providers::libvirt::image::{url_volume_name, ImageSource};
use crate::providers::libvirt::test_node::{self as node, SandboxShape};
use crate::providers::libvirt::xml::{volume_xml, VolumeFormat, VolumeSpec};
use crate::providers::libvirt::{HostConfig, LibvirtHost};
use crate::providers::{CacheUsage, ErrorKind, Hypervisor, ProviderError, VmCreate};

/// What a sandbox host pretends to have: 16 cpus and 64 GiB.
pub const SANDBOX_SHAPE: SandboxShape = SandboxShape {
    cpus: 16,
    memory_kib: 64 * 1024 * 1024,
};

/// The sandbox's stand-in for a libvirt host.
pub struct SandboxHost {
    /// Replaced when another process (an `apply` beside a daemon) changed
    /// the node file since this one last read or wrote it.
    inner: RwLock<LibvirtHost>,
    config: HostConfig,
    node_file: PathBuf,
    /// Modification time of the node file as this process last saw it.
    seen: Mutex<Option<(u64, u64, SystemTime)>>,
    /// One change at a time, each followed by its save: a save reads every
    /// domain and volume, and fails on one that a concurrent action removes
    /// meanwhile; concurrent saves would also race on the temporary file.
    changes: tokio::sync::Mutex<()>,
}

/// Where sandbox host `name` keeps its VMs' console logs.
pub fn console_dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("sandbox").join("console").join(name)
}

impl SandboxHost {
    /// Open (or create) the sandbox host `name` under `state_dir/sandbox/`.
    pub fn open(state_dir: &Path, name: &str, storage_pool: &str) -> Result<Self, ProviderError> {
        let dir = state_dir.join("sandbox");
        let err = |e: std::io::Error| {
            ProviderError::new(
                name,
                ErrorKind::Refused,
                format!("sandbox state in {}: {e}", dir.display()),
            )
        };
        let refused = |e: state::StateError| {
            ProviderError::new(name, ErrorKind::Refused, format!("sandbox state: {e}"))
        };
        state::ensure_dir(&console_dir(state_dir, name)).map_err(refused)?;
        let node_file = std::path::absolute(dir.join(format!("{name}.xml"))).map_err(err)?;
        if !node_file_present(&node_file).map_err(refused)? {
            let xml = node::initial(
                SANDBOX_SHAPE,
                storage_pool,
                &format!("/sandbox/{name}/{storage_pool}"),
            )
            .map_err(|e| ProviderError::new(name, ErrorKind::Refused, e.to_string()))?;
            state::write_atomic(&node_file, xml.as_bytes()).map_err(refused)?;
        }
        let config = HostConfig {
            name: name.to_string(),
            uri: format!("test://{}", node_file.display()),
            storage_pool: storage_pool.to_string(),
            network: NetworkAttachment::None,
            domain_type: None,
            // One directory per host: a host takes every console log in
            // its directory without a VM of its own for a leftover.
            console_dir: Some(console_dir(state_dir, name)),
            volume_record: Some(dir.join(format!("{name}.volumes.json"))),
            observed: Some(dir.join(format!("{name}.observed.json"))),
            image_dirs: Vec::new(),
        };
        let seen = modified(&node_file);
        let inner = LibvirtHost::connect(config.clone())?;
        Ok(SandboxHost {
            inner: RwLock::new(inner),
            config,
            node_file,
            seen: Mutex::new(seen),
            changes: tokio::sync::Mutex::new(()),
        })
    }

    /// The libvirt provider on this sandbox host's test driver.
    pub fn libvirt(&self) -> LibvirtHost {
        self.inner.read().expect("sandbox host lock").clone()
    }

    /// Start of a pass: if another process saved this host since we last
    /// looked, read the node file again (the test driver keeps its state in
    /// this process's memory only).
    async fn refresh(&self) -> Result<(), ProviderError> {
        let _change = self.changes.lock().await;
        let now = modified(&self.node_file);
        if now == *self.seen.lock().expect("sandbox seen lock") {
            return Ok(());
        }
        let config = self.config.clone();
        let host = config.name.clone();
        node_file_present(&self.node_file).map_err(|e| {
            ProviderError::new(&host, ErrorKind::Refused, format!("sandbox state: {e}"))
        })?;
        let fresh = tokio::task::spawn_blocking(move || LibvirtHost::connect(config))
            .await
            .map_err(|e| ProviderError::new(&host, ErrorKind::Transient, e.to_string()))??;
        *self.inner.write().expect("sandbox host lock") = fresh;
        *self.seen.lock().expect("sandbox seen lock") = now;
        Ok(())
    }

    /// What a guest's own `poweroff` does to a domain with
    /// `on_poweroff=destroy`: it stops. For the stand-in guests only.
    pub async fn guest_power_off(&self, name: &str) -> Result<(), ProviderError> {
        let _change = self.changes.lock().await;
        let conn = self.libvirt().connection()?;
        let host = self.config.name.clone();
        let name = name.to_string();
        let r = tokio::task::spawn_blocking(move || {
            let dom = conn.lookup_domain_by_name(&name)?;
            if dom.is_active()? {
                dom.destroy()?;
            }
            Ok::<(), virt::error::Error>(())
        })
        .await
        .map_err(|e| ProviderError::new(&host, ErrorKind::Transient, e.to_string()))?
        .map_err(|e| ProviderError::new(&host, ErrorKind::Refused, e.to_string()));
        self.saving(r).await
    }

    /// Write the test driver's whole state back to the node file.
    async fn save(&self) -> Result<(), ProviderError> {
        let conn = self.libvirt().connection()?;
        let path = self.node_file.clone();
        let host = self.config.name.clone();
        tokio::task::spawn_blocking(move || {
            let xml = node::dump(&conn).map_err(|e| e.to_string())?;
            state::write_atomic(&path, xml.as_bytes()).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| ProviderError::new(&host, ErrorKind::Transient, e.to_string()))?
        .map_err(|e| {
            ProviderError::new(&host, ErrorKind::Refused, format!("saving sandbox: {e}"))
        })?;
        *self.seen.lock().expect("sandbox seen lock") = modified(&self.node_file);
        Ok(())
    }

    async fn saving<T>(&self, result: Result<T, ProviderError>) -> Result<T, ProviderError> {
        // Save even after a failure: a half-done create is state too, and the
        // next command must see it to adopt it.
        let saved = self.save().await;
        let value = result?;
        saved?;
        Ok(value)
    }
}

impl SandboxHost {
    /// The sandbox has no real images: a base image named as a pool volume
    /// (or a URL's volume) is made as an empty qcow2 of the disk's size the
    /// first time a VM needs it, so that the provider's overlay logic runs as
    /// on a real host.
    async fn ensure_base_image(&self, image: &str, size: u64) -> Result<(), ProviderError> {
        // A URL image is stood in for by its pool volume, so that the
        // sandbox never downloads what it would never boot.
        let name = match ImageSource::parse(image)
            .map_err(|e| ProviderError::new(self.host(), ErrorKind::Refused, e.to_string()))?
        {
            ImageSource::PoolVolume(name) => name,
            ImageSource::Url { sha256, .. } => url_volume_name(&sha256),
            ImageSource::HostPath(_) => return Ok(()),
        };
        let conn = self.libvirt().connection()?;
        let pool = self.config.storage_pool.clone();
        let host = self.host().to_string();
        let made = tokio::task::spawn_blocking(move || {
            let pool = conn.lookup_storage_pool_by_name(&pool)?;
            if pool.lookup_storage_vol_by_name(&name).is_ok() {
                return Ok(false);
            }
            let xml = volume_xml(&VolumeSpec {
                name,
                capacity_bytes: size,
                format: VolumeFormat::Qcow2,
                backing: None,
            });
            virt::storage_vol::StorageVol::create_xml(&pool, &xml, 0)?;
            Ok::<bool, virt::error::Error>(true)
        })
        .await
        .map_err(|e| ProviderError::new(&host, ErrorKind::Transient, e.to_string()))?
        .map_err(|e| ProviderError::new(&host, ErrorKind::Refused, e.to_string()))?;
        if made {
            self.save().await?;
        }
        Ok(())
    }
}

/// What identifies one saved version of the node file: every save writes a
/// new file and renames it into place, so the inode changes even within one
/// tick of the file system's clock.
fn modified(path: &Path) -> Option<(u64, u64, SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.len(), m.modified().ok()?))
}

/// Whether the node file is there, checked before the test driver reads
/// it (which would follow a symlink, and quote a foreign file's first line
/// in its parse error): a symlink or a special file is refused.
fn node_file_present(path: &Path) -> Result<bool, state::StateError> {
    Ok(state::read(path, state::MAX_STATE_BYTES)?.is_some())
}

#[async_trait]
impl Hypervisor for SandboxHost {
    fn host(&self) -> &str {
        &self.config.name
    }

    fn simulated(&self) -> bool {
        true
    }

    async fn facts(&self) -> Result<HostFacts, ProviderError> {
        self.refresh().await?;
        self.libvirt().facts().await
    }

    async fn observe(&self, fleet: &str) -> Result<Vec<ObservedVm>, ProviderError> {
        self.refresh().await?;
        self.libvirt().observe(fleet).await
    }

    fn foreign_names(&self) -> Vec<String> {
        self.libvirt().foreign_names()
    }

    async fn create(&self, vm: &VmCreate) -> Result<(), ProviderError> {
        let _change = self.changes.lock().await;
        self.ensure_base_image(&vm.owner.shape.image, vm.owner.shape.disk_bytes)
            .await?;
        let r = self.libvirt().create(vm).await;
        self.saving(r).await
    }

    async fn start(&self, vm: &VmRef) -> Result<(), ProviderError> {
        let _change = self.changes.lock().await;
        let r = self.libvirt().start(vm).await;
        self.saving(r).await
    }

    async fn delete(&self, vm: &VmRef, remove_cache: bool) -> Result<(), ProviderError> {
        let _change = self.changes.lock().await;
        let r = self.libvirt().delete(vm, remove_cache).await;
        self.saving(r).await
    }

    async fn remove_seed(&self, vm: &VmRef) -> Result<(), ProviderError> {
        let _change = self.changes.lock().await;
        let r = self.libvirt().remove_seed(vm).await;
        self.saving(r).await
    }

    /// The sandbox's guests are played, not booted: no guest agent to
    /// tell, so the request is only recorded, as a delivered one is.
    async fn drain(&self, vm: &VmRef) -> Result<crate::plan::model::DrainState, ProviderError> {
        let _change = self.changes.lock().await;
        let r = self
            .libvirt()
            .record_drain(vm, crate::plan::model::DrainState::Delivered)
            .await
            .map(|()| crate::plan::model::DrainState::Delivered);
        self.saving(r).await
    }

    async fn cache_usage(&self, fleet: &str) -> Result<Vec<CacheUsage>, ProviderError> {
        self.libvirt().cache_usage(fleet).await
    }

    fn host_state(&self) -> ObservedHost {
        self.libvirt().host_state()
    }

    async fn ensure_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        let _change = self.changes.lock().await;
        let r = self.libvirt().ensure_network(network, filter).await;
        self.saving(r).await
    }

    async fn ensure_runner_volume(
        &self,
        volume: &str,
        local: &crate::model::runner::LocalTarball,
    ) -> Result<(), ProviderError> {
        let _change = self.changes.lock().await;
        let r = self.libvirt().ensure_runner_volume(volume, local).await;
        self.saving(r).await
    }

    async fn remove_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        let _change = self.changes.lock().await;
        let r = self.libvirt().remove_network(network, filter).await;
        self.saving(r).await
    }

    async fn remove_leftover(&self, leftover: &Leftover) -> Result<(), ProviderError> {
        let _change = self.changes.lock().await;
        let r = self.libvirt().remove_leftover(leftover).await;
        self.saving(r).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon and an `apply` are two processes with two in-memory test
    /// drivers: each must start its pass from what the other saved.
    #[tokio::test]
    async fn a_second_process_sees_what_the_first_saved() {
        let dir = tempfile::tempdir().unwrap();
        let first = SandboxHost::open(dir.path(), "h", "default").unwrap();
        let second = SandboxHost::open(dir.path(), "h", "default").unwrap();
        first
            .libvirt()
            .connection()
            .unwrap()
            .define_domain_xml(
                "<domain type='test'><name>made-by-first</name>\
                 <memory>524288</memory><os><type>hvm</type></os></domain>",
            )
            .unwrap();
        first.save().await.unwrap();

        second.facts().await.unwrap();
        let conn = second.libvirt().connection().unwrap();
        assert!(conn.lookup_domain_by_name("made-by-first").is_ok());

        // Its own save does not make it reload: a domain it holds in memory
        // only (not saved) is still there after the next pass starts.
        second.save().await.unwrap();
        conn.define_domain_xml(
            "<domain type='test'><name>unsaved</name>\
             <memory>524288</memory><os><type>hvm</type></os></domain>",
        )
        .unwrap();
        second.facts().await.unwrap();
        assert!(second
            .libvirt()
            .connection()
            .unwrap()
            .lookup_domain_by_name("unsaved")
            .is_ok());
    }
}
