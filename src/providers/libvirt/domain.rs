//! A VM's domain: defined with its disks and ownership, started, stopped
//! and undefined, and its seed detached once the runner is up.

use virt::sys;

use super::errors::optional;
use super::observe::Known;
use super::xml::{self, domain_xml, DomainSpec};
use super::{Inner, LibvirtHost};
use crate::model::host::{DirectBoot, DomainType};
use crate::model::names::{cache_volume_name, root_volume_name, seed_volume_name};
use crate::model::ownership::Ownership;
use crate::plan::model::VmRef;
use crate::providers::{ErrorKind, ProviderError, VmCreate};

impl LibvirtHost {
    /// The domain XML `create` would define for `owner` on this host (no
    /// UUID, with the seed disk), for `hangar render domain`.
    pub fn render_domain(&self, owner: &Ownership, boot: Option<&DirectBoot>) -> String {
        let i = &self.inner;
        domain_xml(&DomainSpec::for_vm(
            i.domain_type,
            &i.config.storage_pool,
            owner,
            boot,
            &i.config.network,
            true,
            Some(
                i.console_log_path(&owner.slot, owner.generation)
                    .display()
                    .to_string(),
            ),
        ))
    }
}

impl Inner {
    /// Make the VM: its volumes, its domain, started. About 10 round trips
    /// for a new slot (look up the name, then for each of root, cache and
    /// seed a lookup and a create, the seed's upload, define, start); the
    /// pool and the base image are looked up once per connection and once
    /// per [`super::connection::BASE_MAX_AGE`].
    pub(super) fn create(&self, vm: &VmCreate) -> Result<(), ProviderError> {
        let r = self.create_vm(vm);
        if r.is_err() {
            self.forget_looked_up();
        }
        r
    }

    fn create_vm(&self, vm: &VmCreate) -> Result<(), ProviderError> {
        self.pool_changed();
        let conn = self.conn()?;
        let owner = &vm.owner;
        let slot = &owner.slot;
        let pool = self.pool(&conn)?;
        let mut carried: Option<(String, Ownership)> = None;
        if let Some(dom) = optional(self.call(&format!("look up domain {slot}"), || {
            conn.lookup_domain_by_name(slot)
        }))? {
            let known = self.read_known(&dom, slot)?;
            match known {
                Some(Known::Ours { owner: theirs, .. })
                    if theirs.fleet == owner.fleet && theirs.slot == owner.slot =>
                {
                    if theirs.generation != owner.generation {
                        return Err(self.err(
                            ErrorKind::Refused,
                            format!(
                                "generation {} of {slot} is still defined: delete it before creating generation {}",
                                theirs.generation, owner.generation
                            ),
                        ));
                    }
                    if self.call(&format!("read state of {slot}"), || dom.is_active())? {
                        return Ok(());
                    }
                    let uuid =
                        self.local_read(&format!("read uuid of {slot}"), || dom.uuid_string())?;
                    carried = Some((uuid, *theirs));
                }
                Some(Known::Ours { owner: theirs, .. }) => {
                    return Err(self.err(
                        ErrorKind::Refused,
                        format!("name {slot} is taken by fleet {}'s domain", theirs.fleet),
                    ))
                }
                Some(Known::Foreign { .. }) => {
                    return Err(self.err(
                        ErrorKind::Refused,
                        format!("name {slot} is taken by a domain that is not hangar's"),
                    ))
                }
                None => {}
            }
        }
        // The network, and what earlier generations left, are the
        // planner's: `EnsureNetwork` runs before this, `RemoveLeftover`
        // removes the rest.
        let base = self.recent_base(&conn, &pool, &owner.shape.image)?;
        self.ensure_root(&pool, owner, &base)?;
        self.ensure_cache(&pool, owner)?;
        self.write_seed(&conn, &pool, vm)?;
        self.fault_point(&conn, "after-volume-create");

        let console = self.console_log_path(slot, owner.generation);
        if self.local && self.domain_type != DomainType::Test {
            if let Some(dir) = console.parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    self.err(
                        ErrorKind::Refused,
                        format!("console dir {}: {e}", dir.display()),
                    )
                })?;
            }
        }
        // A new generation gets a new UUID; a defined-but-not-started one of
        // the same generation keeps its UUID and its ownership record.
        let (uuid, kept_owner) = match carried {
            Some((uuid, o)) => (Some(uuid), o),
            None => (None, owner.clone()),
        };
        let mut spec = DomainSpec::for_vm(
            self.domain_type,
            &self.config.storage_pool,
            &kept_owner,
            vm.boot.as_ref(),
            &vm.network,
            true,
            Some(console.display().to_string()),
        );
        spec.uuid = uuid;
        spec.cpu_model = vm.cpu_model;
        // A session daemon puts the channel's socket under the user's home,
        // and a path longer than a UNIX socket's 108 bytes fails the start
        // ("UNIX socket path ... too long"): there the socket goes beside
        // the console log, in the host's consoleDir (the session user's),
        // where that path is short enough; otherwise the VM goes without an
        // agent, and a drain falls back to waiting for the job.
        if self.config.uri.contains("/session") {
            let socket = console.with_extension("agent");
            if socket.as_os_str().len() < UNIX_SOCKET_PATH_MAX {
                spec.agent_socket = Some(socket.display().to_string());
            } else {
                spec.agent_channel = false;
            }
        }
        if let Some(volume) = &vm.runner_volume {
            // Refused here rather than at start: the plan ensures it first.
            if self.lookup_volume(&pool, volume)?.is_none() {
                return Err(self.err(
                    ErrorKind::Refused,
                    format!("runner volume {volume} is not in the pool: ensure it before creating {slot}"),
                ));
            }
            spec.disks
                .push(super::runner_disk(&self.config.storage_pool, volume));
        }
        let text = domain_xml(&spec);
        let dom = self.call(&format!("define domain {slot}"), || {
            conn.define_domain_xml(&text)
        })?;
        // The handle holds the UUID: no round trip.
        let uuid = self.local_read(&format!("read uuid of {slot}"), || dom.uuid_string())?;
        self.known.lock().expect("ownership cache lock").insert(
            uuid,
            Known::Ours {
                volumes: vec![
                    root_volume_name(slot, kept_owner.generation),
                    cache_volume_name(slot),
                    seed_volume_name(slot, kept_owner.generation),
                ],
                owner: Box::new(kept_owner),
                seed_attached: true,
                drain: None,
            },
        );
        self.fault_point(&conn, "after-define");
        self.call(&format!("start domain {slot}"), || dom.create())?;
        self.fault_point(&conn, "after-start");
        Ok(())
    }

    pub(super) fn start(&self, vm: &VmRef) -> Result<(), ProviderError> {
        let conn = self.conn()?;
        let Some((dom, _)) = self.our_domain(&conn, vm)? else {
            return Err(self.err(ErrorKind::NotFound, format!("domain {} is gone", vm.name)));
        };
        if !self.call(&format!("read state of {}", vm.name), || dom.is_active())? {
            self.call(&format!("start domain {}", vm.name), || dom.create())?;
        }
        Ok(())
    }

    /// Stop and remove our VM: its domain is stopped at once (a VM the
    /// planner discards runs no job: see [`crate::plan`]), its root and
    /// seed volumes deleted, with `remove_cache` its cache too, the domain
    /// undefined last. The ownership check ([`Inner::our_domain`]) is the
    /// one read of the domain.
    pub(super) fn delete(&self, vm: &VmRef, remove_cache: bool) -> Result<(), ProviderError> {
        self.pool_changed();
        let conn = self.conn()?;
        let Some((dom, owner)) = self.our_domain(&conn, vm)? else {
            return Ok(());
        };
        let pool = self.pool(&conn)?;
        // The volumes its definition references, as the ownership check
        // just read them; of those in our pool, the ones named as this
        // slot's are in hangar's record now (`read_known` records them), so
        // `made_here` below is true for exactly those.
        let referenced_names = match self.known_volumes(&vm.uuid) {
            Some(v) => v,
            None => {
                let text = self.call(&format!("read domain {}", vm.name), || {
                    dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
                })?;
                let facts = xml::parse_domain(&text).map_err(|e| {
                    self.err(ErrorKind::Refused, format!("domain {}: {e}", vm.name))
                })?;
                facts.volumes.into_iter().map(|(_, v)| v).collect()
            }
        };
        if self.call(&format!("read state of {}", vm.name), || dom.is_active())? {
            // virDomainDestroy without VIR_DOMAIN_DESTROY_GRACEFUL: qemu
            // gets SIGTERM and, if it lingers, SIGKILL; nothing waits for
            // the guest.
            self.call(&format!("stop domain {}", vm.name), || {
                dom.destroy_flags(sys::VIR_DOMAIN_DESTROY_DEFAULT)
            })?;
        }
        let referenced = |name: &str| -> Result<bool, ProviderError> {
            Ok(referenced_names.iter().any(|v| v == name) && self.made_here(name)?)
        };
        let root = root_volume_name(&owner.slot, owner.generation);
        let seed = seed_volume_name(&owner.slot, owner.generation);
        let cache = cache_volume_name(&owner.slot);
        let mut doomed = Vec::new();
        if referenced(&root)? {
            doomed.push(root);
        }
        // The seed may already be detached (a remove_seed cut short between
        // detach and delete): then hangar's record says whose it is, as its
        // name cannot.
        if self.made_here(&seed)? {
            doomed.push(seed);
        }
        if remove_cache && referenced(&cache)? {
            doomed.push(cache);
        }
        let doomed: Vec<&str> = doomed.iter().map(String::as_str).collect();
        self.delete_volumes(&pool, &doomed)?;
        // The console log is left: once the domain is gone it is a
        // leftover the next plan removes.
        self.fault_point(&conn, "mid-delete");
        // Last: until here the domain's ownership record lets the next pass
        // finish a delete cut short.
        optional(self.call(&format!("undefine domain {}", vm.name), || dom.undefine()))?;
        self.known
            .lock()
            .expect("ownership cache lock")
            .remove(&vm.uuid);
        self.consoles.lock().expect("console lock").remove(&vm.uuid);
        Ok(())
    }

    /// The volumes our domain `uuid` references and whether its seed is
    /// attached to its definition, as the ownership cache holds them.
    fn known_ours(&self, uuid: &str) -> Option<(Vec<String>, bool)> {
        match self.known.lock().expect("ownership cache lock").get(uuid) {
            Some(Known::Ours {
                volumes,
                seed_attached,
                ..
            }) => Some((volumes.clone(), *seed_attached)),
            _ => None,
        }
    }

    fn known_volumes(&self, uuid: &str) -> Option<Vec<String>> {
        self.known_ours(uuid).map(|(v, _)| v)
    }

    pub(super) fn remove_seed(&self, vm: &VmRef) -> Result<(), ProviderError> {
        self.pool_changed();
        let conn = self.conn()?;
        let Some((dom, owner)) = self.our_domain(&conn, vm)? else {
            return Ok(());
        };
        let pool = self.pool(&conn)?;
        let disk = xml::seed_disk(&self.config.storage_pool, &owner.slot, owner.generation);
        let disk_text = xml::disk_xml(&disk);
        let has_seed = |flags: u32| -> Result<bool, ProviderError> {
            let text = self.call(&format!("read domain {}", vm.name), || dom.xml_desc(flags))?;
            let facts = xml::parse_domain(&text)
                .map_err(|e| self.err(ErrorKind::Refused, format!("domain {}: {e}", vm.name)))?;
            Ok(facts.seed_attached)
        };
        // As the ownership check just read the definition.
        let attached = match self.known_ours(&vm.uuid) {
            Some((_, attached)) => attached,
            None => has_seed(sys::VIR_DOMAIN_XML_INACTIVE)?,
        };
        // Attached to our domain, or in hangar's record: the proof that the
        // seed volume is ours to delete.
        let ours = attached || self.made_here(&disk.volume)?;
        if self.domain_type == DomainType::Test {
            // The test driver cannot detach devices: redefine the persistent
            // config without the seed (same UUID, same ownership). Nothing
            // runs there, so there is no live device to unplug.
            if attached {
                let text = self.call(&format!("read domain {}", vm.name), || {
                    dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
                })?;
                let edited = xml::without_seed_disk(&text).map_err(|e| {
                    self.err(ErrorKind::Refused, format!("domain {}: {e}", vm.name))
                })?;
                self.call(&format!("redefine {} without its seed", vm.name), || {
                    conn.define_domain_xml(&edited)
                })?;
            }
        } else {
            if attached {
                self.call(&format!("detach seed of {} (config)", vm.name), || {
                    dom.detach_device_flags(&disk_text, sys::VIR_DOMAIN_AFFECT_CONFIG)
                })?;
            }
            if self.call(&format!("read state of {}", vm.name), || dom.is_active())? && has_seed(0)?
            {
                // Hot-unplug needs the guest's cooperation and may complete
                // after this returns; the volume is deleted either way.
                self.call(&format!("detach seed of {} (live)", vm.name), || {
                    dom.detach_device_flags(&disk_text, sys::VIR_DOMAIN_AFFECT_LIVE)
                })?;
            }
        }
        if ours {
            self.delete_volume(&pool, &disk.volume)?;
        }
        if let Some(Known::Ours { seed_attached, .. }) = self
            .known
            .lock()
            .expect("ownership cache lock")
            .get_mut(&vm.uuid)
        {
            *seed_attached = false;
        }
        Ok(())
    }
}

/// The longest path a UNIX socket can be bound to, plus one (`sun_path`).
const UNIX_SOCKET_PATH_MAX: usize = 108;
