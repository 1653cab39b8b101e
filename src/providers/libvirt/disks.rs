//! A VM's own volumes: the generation's root overlay on the base image,
//! the slot's cache volume (kept across generations, grown, never shrunk),
//! the generation's NoCloud seed. Names come from [`crate::model::names`], so a create cut
//! short is adopted by the next one, never duplicated.

use virt::connect::Connect;
use virt::storage_pool::StoragePool;

use super::agent::GuestReading;
use super::image::Base;
use super::xml::{VolumeFormat, VolumeSpec};
use super::{seed, Inner};
use crate::model::names::{cache_volume_name, root_volume_name, seed_volume_name};
use crate::model::ownership::Ownership;
use crate::providers::{CacheUsage, ErrorKind, ProviderError, VmCreate};

impl Inner {
    /// The generation's root overlay, made or adopted.
    pub(super) fn ensure_root(
        &self,
        pool: &StoragePool,
        owner: &Ownership,
        base: &Base,
    ) -> Result<(), ProviderError> {
        let name = root_volume_name(&owner.slot, owner.generation);
        if let Some(vol) = self.lookup_volume(pool, &name)? {
            if !self.made_here(&name)? {
                return Err(self.not_made_here(&name));
            }
            let facts = self.volume_facts(&vol, &name)?;
            if facts.format.as_deref() == Some("qcow2")
                && facts.backing_path.as_deref() == Some(base.backing.path.as_str())
            {
                return Ok(());
            }
            return Err(self.err(
                ErrorKind::Refused,
                format!(
                    "volume {name} exists but is not a qcow2 overlay of {}: not hangar's, left alone",
                    base.backing.path
                ),
            ));
        }
        let capacity = owner.shape.disk_bytes.max(base.capacity_bytes.unwrap_or(0));
        self.record_made([name.as_str()])?;
        self.create_volume(
            pool,
            &VolumeSpec {
                name,
                capacity_bytes: capacity,
                format: VolumeFormat::Qcow2,
                backing: Some(base.backing.clone()),
            },
        )?;
        Ok(())
    }

    /// The slot's cache volume: adopted, grown if smaller, never shrunk.
    pub(super) fn ensure_cache(
        &self,
        pool: &StoragePool,
        owner: &Ownership,
    ) -> Result<(), ProviderError> {
        let Some(want) = owner.shape.cache_bytes else {
            return Ok(());
        };
        let name = cache_volume_name(&owner.slot);
        match self.lookup_volume(pool, &name)? {
            Some(vol) => {
                // A name is not ownership: a cache volume someone else
                // made is neither attached nor, later, deleted.
                if !self.made_here(&name)? {
                    return Err(self.not_made_here(&name));
                }
                let facts = self.volume_facts(&vol, &name)?;
                if facts.format.as_deref() != Some("qcow2") || facts.backing_path.is_some() {
                    return Err(self.err(
                        ErrorKind::Refused,
                        format!("volume {name} exists but is not a plain qcow2 cache volume: left alone"),
                    ));
                }
                if facts.capacity_bytes.unwrap_or(0) < want {
                    self.call(&format!("grow cache volume {name}"), || vol.resize(want, 0))?;
                }
                Ok(())
            }
            None => {
                self.record_made([name.as_str()])?;
                self.create_volume(
                    pool,
                    &VolumeSpec {
                        name,
                        capacity_bytes: want,
                        format: VolumeFormat::Qcow2,
                        backing: None,
                    },
                )?;
                Ok(())
            }
        }
    }

    /// Write the generation's seed volume afresh (a retried create brings
    /// new credentials).
    pub(super) fn write_seed(
        &self,
        conn: &Connect,
        pool: &StoragePool,
        vm: &VmCreate,
    ) -> Result<(), ProviderError> {
        let owner = &vm.owner;
        let name = seed_volume_name(&owner.slot, owner.generation);
        let iso = seed::seed_iso(&vm.seed).map_err(|e| self.err(ErrorKind::Refused, e))?;
        if let Some(old) = self.lookup_volume(pool, &name)? {
            if !self.made_here(&name)? {
                return Err(self.not_made_here(&name));
            }
            self.call(&format!("delete old seed {name}"), || old.delete(0))?;
        }
        self.record_made([name.as_str()])?;
        let vol = self.create_volume(
            pool,
            &VolumeSpec {
                name: name.clone(),
                capacity_bytes: iso.len() as u64,
                format: VolumeFormat::Raw,
                backing: None,
            },
        )?;
        self.upload(conn, &vol, &name, iso.len() as u64, &mut iso.as_slice())
    }

    pub(super) fn cache_usage(&self, fleet: &str) -> Result<Vec<CacheUsage>, ProviderError> {
        let vms = self.observe(fleet)?;
        let conn = self.conn()?;
        let pool = self.pool(&conn)?;
        let mut out = Vec::new();
        for vm in vms {
            let reading = if vm.state == crate::plan::model::VmState::Running {
                self.guest_reading_of(&conn, &vm.uuid, &vm.name)
            } else {
                GuestReading::default()
            };
            let volume = match vm.owner.shape.cache_bytes {
                Some(_) => {
                    let name = cache_volume_name(&vm.owner.slot);
                    match self.lookup_volume(&pool, &name)? {
                        Some(vol) => {
                            Some(self.call(&format!("read volume {name}"), || vol.info())?)
                        }
                        None => None,
                    }
                }
                None => None,
            };
            if volume.is_none() && reading.disks.is_none() && reading.addresses.is_empty() {
                continue;
            }
            out.push(CacheUsage {
                slot: vm.owner.slot.clone(),
                allocated_bytes: volume.as_ref().map(|i| i.allocation),
                capacity_bytes: volume.as_ref().map(|i| i.capacity),
                guest: reading.disks,
                addresses: reading.addresses,
            });
        }
        Ok(out)
    }
}
