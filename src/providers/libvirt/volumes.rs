//! The host's storage pool and its volumes: look up, read, create, and the
//! one way bytes reach a volume ([`Inner::upload`]), over the libvirt
//! connection so that a remote host works the same as this machine.

use std::io::Read;

use virt::connect::Connect;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use super::errors::optional;
use super::xml::{self, volume_xml, VolumeSpec};
use super::Inner;
use crate::model::host::DomainType;
use crate::providers::{ErrorKind, ProviderError};

/// Bytes sent per stream write.
const UPLOAD_CHUNK: usize = 1 << 20;

impl Inner {
    /// The host's storage pool; a missing one is a refusal (the fleet file
    /// names it), not a "gone". Looked up once per connection: a pool's
    /// handle stays valid while the pool is defined, and any failed call
    /// forgets it.
    pub(super) fn pool(&self, conn: &Connect) -> Result<StoragePool, ProviderError> {
        if let Some(pool) = self.cached_pool() {
            return Ok(pool);
        }
        let name = &self.config.storage_pool;
        self.call("look up storage pool", || {
            conn.lookup_storage_pool_by_name(name)
        })
        .inspect(|pool| self.keep_pool(pool))
        .map_err(|e| match e.kind {
            ErrorKind::NotFound => self.err(
                ErrorKind::Refused,
                format!("storage pool {name} does not exist"),
            ),
            _ => e,
        })
    }

    pub(super) fn lookup_volume(
        &self,
        pool: &StoragePool,
        name: &str,
    ) -> Result<Option<StorageVol>, ProviderError> {
        optional(self.call(&format!("look up volume {name}"), || {
            pool.lookup_storage_vol_by_name(name)
        }))
    }

    pub(super) fn volume_facts(
        &self,
        vol: &StorageVol,
        name: &str,
    ) -> Result<xml::VolumeFacts, ProviderError> {
        let text = self.call(&format!("read volume {name}"), || vol.xml_desc(0))?;
        xml::parse_volume(&text)
            .map_err(|e| self.err(ErrorKind::Refused, format!("volume {name}: {e}")))
    }

    pub(super) fn create_volume(
        &self,
        pool: &StoragePool,
        spec: &VolumeSpec,
    ) -> Result<StorageVol, ProviderError> {
        let text = volume_xml(spec);
        self.call(&format!("create volume {}", spec.name), || {
            StorageVol::create_xml(pool, &text, 0)
        })
    }

    /// Delete `name` if it exists; already gone is fine. The caller has
    /// the proof that it is ours (see `made`); the record forgets it.
    pub(super) fn delete_volume(
        &self,
        pool: &StoragePool,
        name: &str,
    ) -> Result<(), ProviderError> {
        self.delete_volumes(pool, &[name])
    }

    /// [`Inner::delete_volume`] for each of `names`, and one write of the
    /// record for them all (each write is two fsyncs, taken in turn with
    /// the host's other changes of the record). The ones deleted are
    /// forgotten even when a later one fails.
    pub(super) fn delete_volumes(
        &self,
        pool: &StoragePool,
        names: &[&str],
    ) -> Result<(), ProviderError> {
        let mut gone = Vec::new();
        let mut deleted = || -> Result<(), ProviderError> {
            for &name in names {
                if let Some(vol) = self.lookup_volume(pool, name)? {
                    optional(self.call(&format!("delete volume {name}"), || vol.delete(0)))?;
                }
                gone.push(name);
            }
            Ok(())
        };
        let result = deleted();
        self.forget_made(gone)?;
        result
    }

    /// Stream `len` bytes of `content` into `vol`, from its start.
    ///
    /// The test driver has no `virStorageVolUpload`: there a volume keeps
    /// its size and holds no data. Nothing boots on the test driver, so
    /// nothing reads it.
    pub(super) fn upload(
        &self,
        conn: &Connect,
        vol: &StorageVol,
        name: &str,
        len: u64,
        content: &mut dyn Read,
    ) -> Result<(), ProviderError> {
        if self.domain_type == DomainType::Test {
            return Ok(());
        }
        let mut unreadable = None;
        let sent = self.call(&format!("upload {name}"), || {
            let stream = Stream::new(conn, 0)?;
            vol.upload(&stream, 0, len, 0)?;
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            loop {
                let n = match content.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        unreadable = Some(e);
                        return stream.abort();
                    }
                };
                let mut sent = 0usize;
                while sent < n {
                    let k = stream.send(&buf[sent..n])?;
                    if k <= 0 {
                        stream.abort()?;
                        return Err(virt::error::Error::last_error());
                    }
                    sent += k as usize;
                    super::connection::mark_progress();
                }
            }
            stream.finish()
        });
        if let Some(e) = unreadable {
            return Err(self.err(ErrorKind::Refused, format!("upload {name}: {e}")));
        }
        sent
    }

    /// Whether the complete volume `name` (see [`Inner::create_complete`])
    /// is in the pool; a `.partial` left by an interrupted upload is
    /// removed.
    pub(super) fn complete_volume_present(&self, name: &str) -> Result<bool, ProviderError> {
        let conn = self.conn()?;
        let pool = self.pool(&conn)?;
        let partial = partial_name(name);
        if let Some(old) = self.lookup_volume(&pool, &partial)? {
            if !self.made_here(&partial)? {
                return Err(self.not_made_here(&partial));
            }
            self.call(&format!("delete {partial}"), || old.delete(0))?;
            self.forget_made([partial.as_str()])?;
        }
        Ok(self.lookup_volume(&pool, name)?.is_some())
    }

    /// Make `spec` holding `content`, all or nothing: uploaded under a
    /// `.partial` name and copied to its final name only once complete, so
    /// that an interrupted upload is never taken for the volume. For
    /// volumes whose name says what they hold (a hash in it), never
    /// rewritten once made.
    pub(super) fn create_complete(
        &self,
        spec: &VolumeSpec,
        len: u64,
        content: &mut dyn Read,
    ) -> Result<(), ProviderError> {
        let conn = self.conn()?;
        let pool = self.pool(&conn)?;
        self.pool_changed();
        let partial = partial_name(&spec.name);
        self.record_made([partial.as_str()])?;
        let part = self.create_volume(
            &pool,
            &VolumeSpec {
                name: partial.clone(),
                ..spec.clone()
            },
        )?;
        let done = self
            .upload(&conn, &part, &partial, len, content)
            .and_then(|()| {
                self.call(&format!("copy {partial} to {}", spec.name), || {
                    StorageVol::create_xml_from(&pool, &volume_xml(spec), &part, 0)
                })
            });
        let removed = self.call(&format!("delete {partial}"), || part.delete(0));
        done?;
        removed?;
        self.forget_made([partial.as_str()])
    }
}

fn partial_name(name: &str) -> String {
    format!("{name}.partial")
}
