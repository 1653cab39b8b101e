//! The fleet's read-only runner volume on a host: one per runner version
//! and architecture, uploaded once from the tarball hangar verified, and
//! attached to every VM that installs that runner.

use std::io::Read;

use sha2::{Digest, Sha256};

use super::xml::{DiskSpec, VolumeFormat, VolumeSpec};
use super::{Inner, LibvirtHost};
use crate::model::runner::{LocalTarball, RUNNER_DISK_SERIAL};
use crate::providers::{ErrorKind, ProviderError};

/// The runner disk as a VM gets it: raw, read-only, the serial the guest
/// looks for. `vdd`: after root, cache and seed.
pub fn runner_disk(storage_pool: &str, volume: &str) -> DiskSpec {
    DiskSpec {
        pool: storage_pool.to_string(),
        volume: volume.to_string(),
        format: VolumeFormat::Raw,
        target: "vdd".into(),
        serial: Some(RUNNER_DISK_SERIAL.into()),
        readonly: true,
    }
}

impl LibvirtHost {
    /// Make the fleet's runner volume for `local` present here, all or
    /// nothing. A volume of that name already there of the tarball's size is
    /// kept (its name carries version and architecture; it is never
    /// rewritten); one of another size is refused, not replaced.
    pub(super) async fn upload_runner_volume(
        &self,
        volume: &str,
        local: &LocalTarball,
    ) -> Result<(), ProviderError> {
        let _one = self.inner.fetching.lock().await;
        let volume = volume.to_string();
        let local = local.clone();
        self.blocking(move |i| {
            let _changing = i.changing();
            i.ensure_runner_volume(&volume, &local)
        })
        .await
    }
}

impl Inner {
    fn ensure_runner_volume(&self, name: &str, local: &LocalTarball) -> Result<(), ProviderError> {
        let name = name.to_string();
        let size = local.tarball.size;
        if self.complete_volume_present(&name)? {
            let conn = self.conn()?;
            let pool = self.pool(&conn)?;
            if let Some(vol) = self.lookup_volume(&pool, &name)? {
                let facts = self.volume_facts(&vol, &name)?;
                return match facts.capacity_bytes {
                    Some(c) if c == size => Ok(()),
                    other => Err(self.err(
                        ErrorKind::Refused,
                        format!(
                            "runner volume {name} holds {other:?} bytes, the tarball {size}: \
                             delete the volume to have it made again"
                        ),
                    )),
                };
            }
        }
        verify_file(local).map_err(|e| self.err(ErrorKind::Refused, e))?;
        let spec = VolumeSpec {
            name: name.clone(),
            capacity_bytes: size,
            format: VolumeFormat::Raw,
            backing: None,
        };
        let mut file = std::fs::File::open(&local.path)
            .map_err(|e| self.err(ErrorKind::Refused, format!("{}: {e}", local.path.display())))?;
        tracing::info!(host = %self.config.name, volume = %name, bytes = size, "uploading the runner tarball");
        // Recorded first: a volume hangar made is one it may remove once no
        // VM uses its release.
        self.record_made([name.as_str()])?;
        self.create_complete(&spec, size, &mut file)
    }
}

/// The file is the tarball it claims to be: its size, then its SHA-256.
fn verify_file(local: &LocalTarball) -> Result<(), String> {
    let path = local.path.display();
    let mut file = std::fs::File::open(&local.path).map_err(|e| format!("{path}: {e}"))?;
    let len = file.metadata().map_err(|e| format!("{path}: {e}"))?.len();
    if len != local.tarball.size {
        return Err(format!(
            "{path}: {len} bytes, the runner tarball {} has {}",
            local.tarball.version, local.tarball.size
        ));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("{path}: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let got = hex::encode(hasher.finalize());
    if !got.eq_ignore_ascii_case(&local.tarball.sha256) {
        return Err(format!(
            "{path}: sha256 {got}, the runner tarball {} has {}",
            local.tarball.version, local.tarball.sha256
        ));
    }
    Ok(())
}
