//! A VM's own volumes: the generation's root overlay on the base image,
//! the slot's cache volume (kept across generations, grown, never shrunk),
//! the generation's NoCloud seed, and what a create cut short left of other
//! generations. Names come from [`crate::model::names`], so a create cut
//! short is adopted by the next one, never duplicated.

use virt::connect::Connect;
use virt::storage_pool::StoragePool;

use super::errors::optional;
use super::image::Base;
use super::xml::{self, VolumeFormat, VolumeSpec};
use super::{seed, Inner};
use crate::model::names::{cache_volume_name, root_volume_name, seed_volume_name};
use crate::model::ownership::Ownership;
use crate::providers::{CacheUsage, ErrorKind, ProviderError, VmCreate};
use virt::sys;

impl Inner {
    /// Volumes of other generations of this slot that a create cut short
    /// left behind: once no domain of the slot is left, the next create
    /// starts again at generation 1, and nothing else would ever remove
    /// them (a seed among them carries credentials). Removed only when they
    /// look like ours, by the tests adoption uses (a qcow2 overlay of this
    /// base; a raw seed), and no domain on the host uses them.
    pub(super) fn remove_stale_generations(
        &self,
        conn: &Connect,
        pool: &StoragePool,
        owner: &Ownership,
        base: &Base,
    ) -> Result<(), ProviderError> {
        let prefix = format!("{}-g", owner.slot);
        let names = self.call("list volumes", || pool.list_volumes())?;
        let stale: Vec<String> = names
            .into_iter()
            .filter(|n| {
                let Some(rest) = n.strip_prefix(&prefix) else {
                    return false;
                };
                let Some((generation, kind)) = rest.split_once('-') else {
                    return false;
                };
                matches!(kind, "root.qcow2" | "seed.iso")
                    && generation
                        .parse::<u64>()
                        .is_ok_and(|g| g != owner.generation)
            })
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let mut used = Vec::new();
        for dom in self.call("list domains", || conn.list_all_domains(0))? {
            let Some(text) =
                optional(self.call("read domain", || dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)))?
            else {
                continue;
            };
            let facts = xml::parse_domain(&text)
                .map_err(|e| self.err(ErrorKind::Refused, format!("domain: {e}")))?;
            used.extend(facts.volumes.into_iter().map(|(_, v)| v));
        }
        for name in stale {
            if used.contains(&name) {
                continue;
            }
            let Some(vol) = self.lookup_volume(pool, &name)? else {
                continue;
            };
            let facts = self.volume_facts(&vol, &name)?;
            let ours = if name.ends_with("root.qcow2") {
                facts.format.as_deref() == Some("qcow2")
                    && facts.backing_path.as_deref() == Some(base.backing.path.as_str())
            } else {
                facts.format.as_deref() == Some("raw") && facts.backing_path.is_none()
            };
            if ours {
                tracing::info!(host = %self.config.name, volume = %name, "removing a volume left by a create cut short");
                optional(self.call(&format!("delete volume {name}"), || vol.delete(0)))?;
            }
        }
        Ok(())
    }

    /// The generation's root overlay, made or adopted.
    pub(super) fn ensure_root(
        &self,
        pool: &StoragePool,
        owner: &Ownership,
        base: &Base,
    ) -> Result<(), ProviderError> {
        let name = root_volume_name(&owner.slot, owner.generation);
        if let Some(vol) = self.lookup_volume(pool, &name)? {
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
            self.call(&format!("delete old seed {name}"), || old.delete(0))?;
        }
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
            if vm.owner.shape.cache_bytes.is_none() {
                continue;
            }
            let name = cache_volume_name(&vm.owner.slot);
            if let Some(vol) = self.lookup_volume(&pool, &name)? {
                let info = self.call(&format!("read volume {name}"), || vol.info())?;
                out.push(CacheUsage {
                    slot: vm.owner.slot.clone(),
                    allocated_bytes: info.allocation,
                    capacity_bytes: info.capacity,
                });
            }
        }
        Ok(out)
    }
}
