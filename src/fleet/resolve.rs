//! Resolution: the fleet file plus the hosts' facts and where slots live
//! today → the planner's `Desired`. Pure and deterministic: the same inputs
//! give the same slots, whatever the order of hosts and pools in the file.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::{FleetError, Locator, Problem};
use super::load::LoadedFleet;
use super::node::FieldPath;
use super::types::{Arch, DockerSource, DomainTypeSpec, Host, Pool, RunnerInstall};
use super::units::{human_bytes, MemorySpec};
use crate::model::host::{HostFacts, NetworkAttachment};
use crate::model::names::slot_name;
use crate::model::ownership::{SpecHash, VmShape};
use crate::plan::model::{Desired, DesiredSlot, HostRoom, NoRoom, PoolScale, ScaledPool};

/// What a host offers the fleet: memory budget and vCPU budget in
/// thousandths, so that fractional overcommit compares exactly.
#[derive(Debug, Clone, Copy)]
struct Capacity {
    memory: u64,
    cpu_millis: u64,
}

#[derive(Debug, Default)]
struct Usage {
    memory: u64,
    cpus: u64,
    /// Per pool: how many slots and their total memory.
    pools: BTreeMap<String, (u32, u64, u32)>,
}

impl Usage {
    fn add(&mut self, pool: &str, memory: u64, cpus: u32) {
        self.memory += memory;
        self.cpus += u64::from(cpus);
        let e = self.pools.entry(pool.to_string()).or_insert((0, 0, cpus));
        e.0 += 1;
        e.1 += memory;
    }
}

/// Memory left for one more VM on a host: within the fleet's share
/// (`cap`, `maxMemory`) after `used` by the fleet, and within the host's
/// memory after the fleet and the foreign domains (a `maxMemory` that holds
/// memory back for other VMs does not count them twice).
fn free_memory(cap: u64, facts: &HostFacts, used: u64) -> i128 {
    let share = i128::from(cap) - i128::from(used);
    let host =
        i128::from(facts.memory_bytes) - i128::from(used) - i128::from(facts.foreign.memory_bytes);
    share.min(host)
}

fn capacity(host: &Host, facts: &HostFacts) -> Capacity {
    let memory = host
        .max_memory
        .map_or(facts.memory_bytes, |m| m.bytes_on(facts.memory_bytes));
    let cpu_millis = (f64::from(facts.cpus) * host.cpu_overcommit * 1000.0).floor() as u64;
    Capacity { memory, cpu_millis }
}

impl LoadedFleet {
    /// The desired slots: `facts` by host name, `placement` = slot name →
    /// the host the slot's VM lives on now (from observation).
    ///
    /// A slot keeps its host while the pool still allows it. A new slot goes
    /// to the allowed host with the most free memory, then the most free
    /// vCPUs, then the smallest name, after the slots already placed. New
    /// slots are placed in pool-name, index order. Hosts without facts take
    /// no new slots, and while one of a pool's hosts has none, the pool's
    /// unseen slots are not placed at all (they may live there).
    /// Overcommit is an error naming host, pools and numbers.
    pub fn resolve(
        &self,
        facts: &BTreeMap<String, HostFacts>,
        placement: &BTreeMap<String, String>,
    ) -> Result<Desired, FleetError> {
        self.resolve_scaled(facts, placement, &[])
    }

    /// [`LoadedFleet::resolve`] with the slots each scaled pool keeps this
    /// pass (`scale`; a scaled pool missing there keeps `0..min`). A scaled
    /// pool's slot that exists keeps its host; a new one is placed only
    /// where it fits, after every fixed pool's slots, and otherwise waits
    /// ([`Desired::no_room`]) instead of overcommitting. A runner that fits
    /// on none of its pool's hosts even when they are empty is an error.
    pub fn resolve_scaled(
        &self,
        facts: &BTreeMap<String, HostFacts>,
        placement: &BTreeMap<String, String>,
        scale: &[PoolScale],
    ) -> Result<Desired, FleetError> {
        let (file, text, index) = self.locator();
        let loc = Locator {
            file: &file,
            text,
            index,
        };
        let fleet = &self.fleet;
        let name = &fleet.metadata.name;
        let hosts_path = FieldPath::root().key("spec").key("hosts");
        let host_index: BTreeMap<&str, usize> = fleet
            .spec
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.as_str(), i))
            .collect();
        let pool_index: BTreeMap<&str, usize> = fleet
            .spec
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();

        let mut problems: Vec<Problem> =
            super::same_daemon::same_daemon_problems(&fleet.spec.hosts, facts, &loc);
        if !problems.is_empty() {
            return Err(self.error(problems));
        }
        let mut usage: BTreeMap<&str, Usage> = BTreeMap::new();
        let mut placed: BTreeMap<String, (&Pool, u32, &Host, u64)> = BTreeMap::new();
        let mut unplaced: Vec<(&Pool, u32, String)> = Vec::new();
        let mut unplaced_scaled: Vec<(&Pool, u32, String)> = Vec::new();

        // Pools by name, so that the file's order never matters.
        for (&pool_name, &pi) in &pool_index {
            let pool = &fleet.spec.pools[pi];
            let allowed = allowed_hosts(pool, &host_index);
            let indexes: Vec<u32> = match &pool.scale {
                None => (0..pool.count).collect(),
                Some(sc) => scale
                    .iter()
                    .find(|p| p.pool == pool.name)
                    .map_or_else(|| (0..sc.min).collect(), |p| p.slots.clone()),
            };
            for i in indexes {
                let slot = slot_name(name, pool_name, i);
                let kept = placement
                    .get(&slot)
                    .filter(|h| allowed.contains(h.as_str()))
                    .and_then(|h| host_index.get(h.as_str()));
                match kept {
                    Some(&hi) => {
                        let host = &fleet.spec.hosts[hi];
                        // A host that cannot be seen this pass keeps its
                        // slots; their size in bytes is unknown (0) when it is
                        // a share of the host's memory, which is harmless: the
                        // planner touches nothing on a host it could not see.
                        let mem = vm_memory(pool.vm.memory, facts.get(&host.name)).unwrap_or(0);
                        usage
                            .entry(&host.name)
                            .or_default()
                            .add(pool_name, mem, pool.vm.cpus);
                        placed.insert(slot, (pool, i, host, mem));
                    }
                    None if pool.scale.is_some() => unplaced_scaled.push((pool, i, slot)),
                    None => unplaced.push((pool, i, slot)),
                }
            }
        }

        for (pool, i, slot) in unplaced {
            let allowed = allowed_hosts(pool, &host_index);
            // A slot not seen anywhere may live on a host not seen this
            // pass: placing it elsewhere would make a second VM for it
            // when that host answers again. It waits (the plan names the
            // unobserved host) instead.
            if allowed.iter().any(|h| !facts.contains_key(*h)) {
                continue;
            }
            let best = allowed
                .iter()
                .filter_map(|h| {
                    let host = &fleet.spec.hosts[host_index[h]];
                    let f = facts.get(*h)?;
                    let cap = capacity(host, f);
                    let used = usage.get(h);
                    // Foreign domains rank the hosts (a new slot goes where
                    // there is room now), but do not make the file wrong.
                    let free_mem = free_memory(cap.memory, f, used.map_or(0, |u| u.memory));
                    let free_cpu = i128::from(cap.cpu_millis)
                        - i128::from(used.map_or(0, |u| u.cpus) + f.foreign.vcpus) * 1000;
                    Some(((free_mem, free_cpu, Reverse(*h)), host, f))
                })
                .max_by(|a, b| a.0.cmp(&b.0));
            // No allowed host could be seen this pass: the slot waits (it may
            // even live on an unseen host); the planner reports the hosts it
            // could not observe.
            if let Some((_, host, f)) = best {
                let mem = pool.vm.memory.bytes_on(f.memory_bytes);
                usage
                    .entry(&host.name)
                    .or_default()
                    .add(&pool.name, mem, pool.vm.cpus);
                placed.insert(slot, (pool, i, host, mem));
            }
        }

        let mut no_room: Vec<(&Pool, String)> = Vec::new();
        let mut never_fits: BTreeSet<&str> = BTreeSet::new();
        for (pool, i, slot) in unplaced_scaled {
            let allowed = allowed_hosts(pool, &host_index);
            if allowed.iter().any(|h| !facts.contains_key(*h)) {
                continue;
            }
            let fitting = allowed
                .iter()
                .filter_map(|h| {
                    let host = &fleet.spec.hosts[host_index[h]];
                    let f = facts.get(*h)?;
                    let cap = capacity(host, f);
                    let mem = pool.vm.memory.bytes_on(f.memory_bytes);
                    let cpus = u64::from(pool.vm.cpus);
                    let used = usage.get(h);
                    let free_mem = u64::try_from(
                        free_memory(cap.memory, f, used.map_or(0, |u| u.memory)).max(0),
                    )
                    .unwrap_or(0);
                    let free_cpu = cap
                        .cpu_millis
                        .saturating_sub((used.map_or(0, |u| u.cpus) + f.foreign.vcpus) * 1000);
                    (mem <= free_mem && cpus * 1000 <= free_cpu).then_some((
                        (free_mem, free_cpu, Reverse(*h)),
                        host,
                        mem,
                    ))
                })
                .max_by(|a, b| a.0.cmp(&b.0));
            match fitting {
                Some((_, host, mem)) => {
                    usage
                        .entry(&host.name)
                        .or_default()
                        .add(&pool.name, mem, pool.vm.cpus);
                    placed.insert(slot, (pool, i, host, mem));
                }
                None => {
                    let fits_empty = allowed.iter().any(|h| {
                        let host = &fleet.spec.hosts[host_index[h]];
                        facts.get(*h).is_some_and(|f| {
                            let cap = capacity(host, f);
                            pool.vm.memory.bytes_on(f.memory_bytes) <= cap.memory
                                && u64::from(pool.vm.cpus) * 1000 <= cap.cpu_millis
                        })
                    });
                    if fits_empty {
                        no_room.push((pool, slot));
                    } else if never_fits.insert(pool.name.as_str()) {
                        problems.push(
                            loc.at_path(
                                &FieldPath::root()
                                    .key("spec")
                                    .key("pools")
                                    .index(pool_index[pool.name.as_str()])
                                    .key("vm"),
                                format!(
                                "one runner of pool `{}` ({} vCPUs, {}) fits on none of its hosts",
                                pool.name,
                                pool.vm.cpus,
                                pool.vm.memory
                            ),
                            ),
                        );
                    }
                }
            }
        }

        for (host_name, used) in &usage {
            let hi = host_index[host_name];
            let host = &fleet.spec.hosts[hi];
            let Some(f) = facts.get(*host_name) else {
                continue;
            };
            let cap = capacity(host, f);
            let hp = hosts_path.index(hi);
            if used.memory > cap.memory {
                let limit = match host.max_memory {
                    Some(MemorySpec::Percent(p)) => format!(
                        "{} (maxMemory {p} of {})",
                        human_bytes(cap.memory),
                        human_bytes(f.memory_bytes)
                    ),
                    Some(MemorySpec::Size(_)) => format!("{} (maxMemory)", human_bytes(cap.memory)),
                    None => format!("{} (the host's memory)", human_bytes(cap.memory)),
                };
                let at = if host.max_memory.is_some() {
                    hp.key("maxMemory")
                } else {
                    hp.clone()
                };
                problems.push(loc.at_path(
                    &at,
                    format!(
                        "host `{host_name}` is overcommitted: VM memory {} for {} exceeds {limit}",
                        human_bytes(used.memory),
                        breakdown(used, |n, total, _| format!(
                            "{n} × {}",
                            human_bytes(total / u64::from(n))
                        ))
                    ),
                ));
            }
            if used.cpus * 1000 > cap.cpu_millis {
                let at = if loc.index.key_pos(&hp.key("cpuOvercommit")).is_some() {
                    hp.key("cpuOvercommit")
                } else {
                    hp.clone()
                };
                problems.push(loc.at_path(
                    &at,
                    format!(
                        "host `{host_name}` is overcommitted: {} vCPUs for {} exceed {} ({} cpus × cpuOvercommit {})",
                        used.cpus,
                        breakdown(used, |n, _, cpus| format!("{n} × {cpus}")),
                        cap.cpu_millis / 1000,
                        f.cpus,
                        host.cpu_overcommit
                    ),
                ));
            }
        }

        if !problems.is_empty() {
            return Err(self.error(problems));
        }

        let slots = placed
            .into_iter()
            .map(|(slot, (pool, index, host, memory_bytes))| {
                let vm = VmShape {
                    cpus: pool.vm.cpus,
                    memory_bytes,
                    disk_bytes: pool.vm.disk.bytes(),
                    // A URL image carries its checksum to the provider,
                    // which downloads it once and verifies it.
                    image: match &pool.vm.image_sha256 {
                        Some(sha) if pool.vm.image.starts_with("https://") => {
                            format!("{}#sha256={}", pool.vm.image, sha.to_ascii_lowercase())
                        }
                        _ => pool.vm.image.clone(),
                    },
                    cache_bytes: pool.cache.as_ref().map(|c| c.size.bytes()),
                };
                let spec_hash = spec_hash(pool, host, &vm);
                DesiredSlot {
                    name: slot,
                    pool: pool.name.clone(),
                    index,
                    host: host.name.clone(),
                    ephemeral: pool.ephemeral,
                    labels: slot_labels(pool),
                    runner_group: pool.runner_group.clone(),
                    vm,
                    spec_hash,
                    // Supplied by the engine (the tarball source).
                    runner: None,
                    runner_unavailable: None,
                }
            })
            .collect();

        // The queued jobs that wait: a pool's last ones, one per slot that
        // found no room.
        let mut no_room_out = Vec::new();
        for (pool, slot) in &no_room {
            let waiting = no_room.iter().filter(|(p, _)| p.name == pool.name).count();
            let nth = no_room_out
                .iter()
                .filter(|n: &&NoRoom| n.pool == pool.name)
                .count();
            let queued = scale
                .iter()
                .find(|p| p.pool == pool.name)
                .map(|p| p.queued.as_slice())
                .unwrap_or(&[]);
            let first = queued.len().saturating_sub(waiting);
            no_room_out.push(NoRoom {
                slot: slot.clone(),
                pool: pool.name.clone(),
                hosts: allowed_hosts(pool, &host_index)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                jobs: queued.get(first + nth).copied().into_iter().collect(),
            });
        }

        Ok(Desired {
            fleet: name.clone(),
            hosts: fleet.spec.hosts.iter().map(|h| h.name.clone()).collect(),
            pools: fleet.spec.pools.iter().map(|p| p.name.clone()).collect(),
            slots,
            policy: fleet.spec.policy.resolved(),
            runners: Vec::new(),
            scale: scale.to_vec(),
            no_room: no_room_out,
            capacity: fleet
                .spec
                .hosts
                .iter()
                .filter_map(|h| {
                    let f = facts.get(&h.name)?;
                    let cap = capacity(h, f);
                    Some((
                        h.name.clone(),
                        HostRoom {
                            memory_bytes: cap.memory,
                            host_memory_bytes: f.memory_bytes,
                            cpu_millis: cap.cpu_millis,
                            pool_free_bytes: f.pool_free_bytes,
                        },
                    ))
                })
                .collect(),
        })
    }

    /// Concurrency limits with defaults applied.
    pub fn concurrency(&self) -> super::types::Concurrency {
        self.fleet.spec.policy.concurrency.resolved()
    }
}

/// `umn (4 × 18GiB), ci (2 × 4GiB)`
fn breakdown(used: &Usage, each: impl Fn(u32, u64, u32) -> String) -> String {
    let parts: Vec<String> = used
        .pools
        .iter()
        .map(|(pool, (n, total, cpus))| format!("pool {pool} ({})", each(*n, *total, *cpus)))
        .collect();
    parts.join(", ")
}

fn allowed_hosts<'a>(pool: &'a Pool, hosts: &BTreeMap<&'a str, usize>) -> BTreeSet<&'a str> {
    match &pool.hosts {
        Some(list) => list
            .iter()
            .map(String::as_str)
            .filter(|h| hosts.contains_key(h))
            .collect(),
        None => hosts.keys().copied().collect(),
    }
}

fn vm_memory(memory: MemorySpec, facts: Option<&HostFacts>) -> Option<u64> {
    match (memory, facts) {
        (MemorySpec::Size(s), _) => Some(s.bytes()),
        (m, Some(f)) => Some(m.bytes_on(f.memory_bytes)),
        (MemorySpec::Percent(_), None) => None,
    }
}

/// Everything about a slot that needs a new VM when it changes, in a fixed
/// field order with units resolved (so `64GiB` and `65536MiB` hash alike).
/// Not the count and not the pool's host list: those move or add slots,
/// they do not change one.
#[derive(Serialize)]
struct HashInput<'a> {
    format: u32,
    cpus: u32,
    memory_bytes: u64,
    disk_bytes: u64,
    image: &'a str,
    image_sha256: Option<String>,
    boot: Option<(&'a str, Option<&'a str>, Option<&'a str>)>,
    emulate: BTreeSet<Arch>,
    ssh_authorized_keys: Vec<&'a str>,
    cache: Option<(u64, u32, &'a str, bool)>,
    runner: Option<RunnerInstall>,
    work_folder: &'a str,
    docker: DockerSource,
    user: (&'a str, bool),
    labels: BTreeSet<&'a str>,
    /// Only when `false`, so the hashes of existing slots stay as they were.
    #[serde(skip_serializing_if = "is_true")]
    default_labels: bool,
    runner_group: &'a str,
    ephemeral: bool,
    network: NetworkAttachment,
    domain_type: DomainTypeSpec,
    /// Only when not the default, so existing slots keep their hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_model: Option<crate::model::host::CpuModel>,
    storage_pool: &'a str,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The labels hangar asks for a slot's runner, besides the ownership label:
/// a JIT runner gets exactly what its request names, so GitHub's default
/// labels are named there (unless the pool opts out); `config.sh` adds them
/// by itself for a persistent runner.
/// Every label a runner of `pool` carries on GitHub: what hangar asks for,
/// the ownership label, and for a `config.sh` runner GitHub's defaults.
pub fn runner_labels(pool: &Pool, fleet: &str) -> Vec<String> {
    let mut labels = Vec::new();
    if !pool.ephemeral {
        labels.extend(crate::model::runner::default_labels(
            crate::model::runner::GUEST_ARCH,
        ));
    }
    labels.extend(slot_labels(pool));
    labels.push(crate::model::names::ownership_label(fleet));
    labels
}

/// The fleet's pools with `scale`, in name order, as the planner needs them.
pub fn scaled_pools(fleet: &super::types::Fleet) -> Vec<ScaledPool> {
    let organization = matches!(
        fleet.spec.github.scope(),
        Some(super::types::Scope::Organization { .. })
    );
    let mut pools: Vec<ScaledPool> = fleet
        .spec
        .pools
        .iter()
        .filter_map(|p| {
            let sc = p.scale.as_ref()?;
            Some(ScaledPool {
                name: p.name.clone(),
                runner_labels: runner_labels(p, &fleet.metadata.name),
                min: sc.min,
                max: sc.max,
                idle: sc.idle,
                cooldown: sc.cooldown(),
                runner_group: organization.then(|| p.runner_group.clone()),
                access: None,
            })
        })
        .collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    pools
}

fn slot_labels(pool: &Pool) -> Vec<String> {
    let mut labels = Vec::new();
    if pool.ephemeral && pool.default_labels {
        labels.extend(crate::model::runner::default_labels(
            crate::model::runner::GUEST_ARCH,
        ));
    }
    labels.extend(pool.labels.iter().cloned());
    labels
}

/// First 16 hex digits of the SHA-256 of the slot's canonical spec.
pub fn spec_hash(pool: &Pool, host: &Host, vm: &VmShape) -> SpecHash {
    let input = HashInput {
        format: 1,
        cpus: vm.cpus,
        memory_bytes: vm.memory_bytes,
        disk_bytes: vm.disk_bytes,
        image: &pool.vm.image,
        image_sha256: pool
            .vm
            .image_sha256
            .as_ref()
            .map(|s| s.to_ascii_lowercase()),
        boot: pool
            .vm
            .boot
            .as_ref()
            .map(|b| (b.kernel.as_str(), b.initrd.as_deref(), b.cmdline.as_deref())),
        emulate: pool.vm.emulate.iter().copied().collect(),
        ssh_authorized_keys: pool
            .vm
            .ssh_authorized_keys
            .iter()
            .map(|k| k.trim())
            .collect(),
        cache: pool.cache.as_ref().map(|c| {
            (
                c.size.bytes(),
                c.prune_above.hundredths(),
                c.mount_path.as_str(),
                c.docker_data_root,
            )
        }),
        runner: pool.runner.install(),
        work_folder: &pool.runner.work_folder,
        docker: pool.docker.source,
        user: (&pool.user.name, pool.user.sudo),
        labels: pool.labels.iter().map(String::as_str).collect(),
        default_labels: pool.default_labels,
        runner_group: &pool.runner_group,
        ephemeral: pool.ephemeral,
        network: host.network_attachment(),
        domain_type: host.domain_type,
        cpu_model: (pool.vm.cpu_model != Default::default()).then_some(pool.vm.cpu_model),
        storage_pool: &host.storage_pool,
    };
    let json = serde_json::to_vec(&input).expect("hash input serializes");
    let digest = Sha256::digest(&json);
    SpecHash(hex::encode(digest)[..16].to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::fleet::load_str;
    use crate::model::host::DomainType;

    const GIB: u64 = 1 << 30;

    fn facts(memory_gib: u64, cpus: u32) -> HostFacts {
        HostFacts {
            memory_bytes: memory_gib * GIB,
            cpus,
            pool_free_bytes: None,
            domain_type: DomainType::Kvm,
            domain_type_reason: "test".into(),
            identity: None,
            foreign: Default::default(),
        }
    }

    fn pool_scale(pool: &str, slots: &[u32], queued: &[u64]) -> PoolScale {
        PoolScale {
            pool: pool.into(),
            busy: 0,
            queued: queued.to_vec(),
            target: slots.len() as u32,
            slots: slots.to_vec(),
            above_target_since: None,
            unknown: None,
            not_admitted: Vec::new(),
        }
    }

    fn with_foreign(mut f: HostFacts, memory_gib: u64, vcpus: u64) -> HostFacts {
        f.foreign = crate::model::host::ForeignUse {
            domains: 1,
            memory_bytes: memory_gib * GIB,
            vcpus,
        };
        f
    }

    #[test]
    fn foreign_domains_steer_new_slots_but_never_make_the_file_wrong() {
        // Two equal hosts: by name, the slot would go to `a`; a foreign
        // 12 GiB domain there sends it to `b`.
        let y = fleet(&[("a", ""), ("b", "")], &[("p", 1, 2, "4GiB", None)]);
        let f: BTreeMap<String, HostFacts> = [
            ("a".to_string(), with_foreign(facts(16, 8), 12, 2)),
            ("b".to_string(), facts(16, 8)),
        ]
        .into();
        let d = resolve(&y, &f, &BTreeMap::new()).unwrap();
        assert_eq!(hosts_of(&d), [("f-p-0".to_string(), "b".to_string())]);
        // The capacity the planner places into is the host's own; what the
        // foreign domains hold is subtracted from it at plan time.
        assert_eq!(d.capacity["a"].memory_bytes, 16 * GIB);
        assert_eq!(d.capacity["a"].cpu_millis, 8000);
        // A host full of foreign domains is no error in the file: the
        // slot's VM waits for room (see plan::room).
        let y = fleet(&[("a", "")], &[("p", 2, 2, "8GiB", None)]);
        let f: BTreeMap<String, HostFacts> =
            [("a".to_string(), with_foreign(facts(16, 8), 16, 8))].into();
        assert_eq!(resolve(&y, &f, &BTreeMap::new()).unwrap().slots.len(), 2);
    }

    #[test]
    fn a_scaled_pool_takes_what_fits_and_the_rest_waits_for_room() {
        // Fixed pool `a` holds 4 of h's 8 vCPUs; scaled `b` asks for 6
        // runners of 1 vCPU: 4 fit, 2 wait with the last two queued jobs.
        let y = fleet(&[("h", "")], &[("a", 2, 2, "1GiB", None)])
            + "    - name: b\n      scale: {max: 6}\n      vm: {cpus: 1, memory: 1GiB, disk: 10GiB, image: /i}\n";
        let f = load_str("f.yaml", &y).unwrap();
        let facts: BTreeMap<String, HostFacts> = [("h".to_string(), facts(64, 8))].into();
        let d = f
            .resolve_scaled(
                &facts,
                &BTreeMap::new(),
                &[pool_scale(
                    "b",
                    &[0, 1, 2, 3, 4, 5],
                    &[11, 12, 13, 14, 15, 16],
                )],
            )
            .unwrap();
        let names: Vec<&str> = d.slots.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["f-a-0", "f-a-1", "f-b-0", "f-b-1", "f-b-2", "f-b-3"]
        );
        let waits: Vec<(&str, &[u64])> = d
            .no_room
            .iter()
            .map(|n| (n.slot.as_str(), n.jobs.as_slice()))
            .collect();
        assert_eq!(waits, [("f-b-4", &[15][..]), ("f-b-5", &[16][..])]);
        // Without the queue's word, a scaled pool keeps `min` (0 here).
        let d = f.resolve(&facts, &BTreeMap::new()).unwrap();
        assert_eq!(d.slots.len(), 2);
    }

    #[test]
    fn a_scaled_runner_that_fits_no_empty_host_is_an_error() {
        let y = fleet(&[("h", "")], &[("a", 0, 1, "1GiB", None)])
            + "    - name: b\n      scale: {max: 2}\n      vm: {cpus: 16, memory: 1GiB, disk: 10GiB, image: /i}\n";
        let f = load_str("f.yaml", &y).unwrap();
        let facts: BTreeMap<String, HostFacts> = [("h".to_string(), facts(64, 8))].into();
        let e = f
            .resolve_scaled(&facts, &BTreeMap::new(), &[pool_scale("b", &[0, 1], &[1])])
            .unwrap_err();
        assert_eq!(e.problems().len(), 1, "{e}");
        assert_eq!(e.problems()[0].path, "spec.pools[1].vm", "{e}");
        assert!(e.to_string().contains("fits on none of its hosts"), "{e}");
    }

    /// A fleet with the given hosts (name, extra YAML) and pools (name,
    /// count, cpus, memory, hosts) in that order.
    fn fleet(hosts: &[(&str, &str)], pools: &[(&str, u32, u32, &str, Option<&str>)]) -> String {
        let mut y = String::from(
            "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: f\nspec:\n  github:\n    simulator: true\n  hosts:\n",
        );
        for (name, extra) in hosts {
            y += &format!("    - name: {name}\n      uri: test:///default\n{extra}");
        }
        y += "  pools:\n";
        for (name, count, cpus, memory, on) in pools {
            y += &format!(
                "    - name: {name}\n      count: {count}\n      vm: {{cpus: {cpus}, memory: {memory}, disk: 10GiB, image: /i}}\n"
            );
            if let Some(on) = on {
                y += &format!("      hosts: [{on}]\n");
            }
        }
        y
    }

    fn resolve(
        yaml: &str,
        f: &BTreeMap<String, HostFacts>,
        placement: &BTreeMap<String, String>,
    ) -> Result<Desired, FleetError> {
        load_str("f.yaml", yaml)
            .unwrap_or_else(|e| panic!("{e}"))
            .resolve(f, placement)
    }

    fn hosts_of(d: &Desired) -> Vec<(String, String)> {
        d.slots
            .iter()
            .map(|s| (s.name.clone(), s.host.clone()))
            .collect()
    }

    #[test]
    fn new_slots_go_to_the_host_with_most_free_memory_then_cpus_then_name() {
        // (what, (memory GiB, cpus) of hosts a b c, slots, expected hosts)
        type Case = (&'static str, [(u64, u32); 3], usize, [&'static str; 3]);
        let cases: &[Case] = &[
            (
                "memory decides",
                [(16, 8), (64, 8), (32, 8)],
                3,
                ["b", "b", "b"],
            ),
            (
                "spreads as memory fills",
                [(20, 8), (20, 8), (20, 8)],
                3,
                ["a", "b", "c"],
            ),
            (
                "cpus break a memory tie",
                [(16, 8), (16, 16), (16, 8)],
                1,
                ["b", "", ""],
            ),
            (
                "name breaks a full tie",
                [(16, 8), (16, 8), (16, 8)],
                1,
                ["a", "", ""],
            ),
        ];
        for (what, caps, count, want) in cases {
            let yaml = fleet(
                &[("a", ""), ("b", ""), ("c", "")],
                &[("p", *count as u32, 1, "4GiB", None)],
            );
            let f: BTreeMap<String, HostFacts> = ["a", "b", "c"]
                .iter()
                .zip(caps)
                .map(|(n, (m, c))| (n.to_string(), facts(*m, *c)))
                .collect();
            let d = resolve(&yaml, &f, &BTreeMap::new()).unwrap();
            let got: Vec<&str> = d.slots.iter().map(|s| s.host.as_str()).collect();
            assert_eq!(got, want[..*count].to_vec(), "{what}");
        }
    }

    #[test]
    fn a_slot_keeps_its_host_while_the_pool_allows_it() {
        let f: BTreeMap<String, HostFacts> = [
            ("a".to_string(), facts(16, 8)),
            ("b".to_string(), facts(64, 8)),
        ]
        .into();
        let placement: BTreeMap<String, String> = [("f-p-0".to_string(), "a".to_string())].into();
        let yaml = fleet(&[("a", ""), ("b", "")], &[("p", 2, 1, "4GiB", None)]);
        let d = resolve(&yaml, &f, &placement).unwrap();
        assert_eq!(
            hosts_of(&d),
            [("f-p-0".into(), "a".into()), ("f-p-1".into(), "b".into())]
        );
        // Once the pool no longer allows host a, the slot moves.
        let yaml = fleet(&[("a", ""), ("b", "")], &[("p", 2, 1, "4GiB", Some("b"))]);
        let d = resolve(&yaml, &f, &placement).unwrap();
        assert!(d.slots.iter().all(|s| s.host == "b"));
    }

    /// A slot with no VM seen may live on a host that is down: it is not
    /// placed elsewhere (that would be a second VM for it once the host
    /// answers), while slots seen on the hosts that answer stay.
    #[test]
    fn a_slot_unseen_while_one_of_its_hosts_is_down_is_not_placed_elsewhere() {
        let only_b: BTreeMap<String, HostFacts> = [("b".to_string(), facts(64, 8))].into();
        let placement: BTreeMap<String, String> = [("f-p-1".to_string(), "b".to_string())].into();
        let yaml = fleet(&[("a", ""), ("b", "")], &[("p", 2, 1, "4GiB", None)]);
        let d = resolve(&yaml, &only_b, &placement).unwrap();
        assert_eq!(hosts_of(&d), [("f-p-1".into(), "b".into())]);
        // A pool that may not use the down host places as usual.
        let yaml = fleet(&[("a", ""), ("b", "")], &[("p", 2, 1, "4GiB", Some("b"))]);
        let d = resolve(&yaml, &only_b, &placement).unwrap();
        assert_eq!(d.slots.len(), 2);
        // The host answers again: the slot is placed once.
        let both: BTreeMap<String, HostFacts> = [
            ("a".to_string(), facts(64, 8)),
            ("b".to_string(), facts(64, 8)),
        ]
        .into();
        let yaml = fleet(&[("a", ""), ("b", "")], &[("p", 2, 1, "4GiB", None)]);
        let d = resolve(&yaml, &both, &placement).unwrap();
        assert_eq!(d.slots.len(), 2);
    }

    #[test]
    fn percent_memory_is_a_share_of_the_slots_host_floored_to_mib() {
        let f: BTreeMap<String, HostFacts> = [(
            "a".to_string(),
            HostFacts {
                memory_bytes: 10 * GIB + 12345,
                ..facts(0, 8)
            },
        )]
        .into();
        let d = resolve(
            &fleet(&[("a", "")], &[("p", 1, 1, "18%", None)]),
            &f,
            &BTreeMap::new(),
        )
        .unwrap();
        let mem = d.slots[0].vm.memory_bytes;
        assert_eq!(mem % (1 << 20), 0);
        assert_eq!(mem, (10 * GIB + 12345) * 18 / 100 / (1 << 20) * (1 << 20));
    }

    #[test]
    fn overcommit_names_the_host_the_pools_and_the_numbers() {
        let f: BTreeMap<String, HostFacts> = [("a".to_string(), facts(32, 4))].into();
        let yaml = fleet(
            &[("a", "      maxMemory: 50%\n")],
            &[("big", 2, 2, "6GiB", None), ("small", 2, 1, "4GiB", None)],
        );
        let err = resolve(&yaml, &f, &BTreeMap::new()).unwrap_err();
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(
            lines[0],
            "f.yaml:11:18: spec.hosts[0].maxMemory: host `a` is overcommitted: VM memory 20GiB for \
             pool big (2 × 6GiB), pool small (2 × 4GiB) exceeds 16GiB (maxMemory 50% of 32GiB)"
        );
        assert_eq!(
            lines[1],
            "f.yaml:9:7: spec.hosts[0]: host `a` is overcommitted: 6 vCPUs for pool big (2 × 2), \
             pool small (2 × 1) exceed 4 (4 cpus × cpuOvercommit 1)"
        );
        // cpuOvercommit makes room for the vCPUs.
        let yaml = fleet(
            &[("a", "      cpuOvercommit: 1.5\n")],
            &[("big", 2, 2, "6GiB", None), ("small", 2, 1, "4GiB", None)],
        );
        assert!(resolve(&yaml, &f, &BTreeMap::new()).is_ok());
    }

    #[test]
    fn spec_hash_covers_what_needs_a_new_vm_and_not_count_or_hosts() {
        let f: BTreeMap<String, HostFacts> = [
            ("a".to_string(), facts(64, 16)),
            ("b".to_string(), facts(64, 16)),
        ]
        .into();
        let hash = |yaml: &str| {
            resolve(yaml, &f, &BTreeMap::new()).unwrap().slots[0]
                .spec_hash
                .clone()
        };
        let base = fleet(&[("a", ""), ("b", "")], &[("p", 1, 2, "4GiB", None)]);
        let h = hash(&base);
        assert_eq!(h.0.len(), 16);
        // Same VM: more slots, a host list, another spelling of a size.
        assert_eq!(hash(&base.replace("count: 1", "count: 3")), h);
        assert_eq!(hash(&format!("{base}      hosts: [a, b]\n")), h);
        assert_eq!(hash(&base.replace("4GiB", "4096MiB")), h);
        // A new VM: cpus, memory, image, labels, ephemeral, network.
        for changed in [
            base.replace("cpus: 2", "cpus: 4"),
            base.replace("4GiB", "8GiB"),
            base.replace("image: /i", "image: /j"),
            format!("{base}      labels: [gpu]\n"),
            format!("{base}      ephemeral: true\n"),
            base.replace(
                "uri: test:///default\n",
                "uri: test:///default\n      network: {mode: user}\n",
            ),
        ] {
            assert_ne!(hash(&changed), h, "{changed}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Placement depends on the hosts, pools and current placement, not
        /// on the order the file lists them in, and re-resolving with the
        /// result as placement changes nothing.
        #[test]
        fn placement_is_deterministic_stable_and_order_independent(
            caps in proptest::collection::vec((8u64..128, 2u32..32), 1..5),
            pools in proptest::collection::vec((0u32..5, 1u32..3, 1u64..5), 1..4),
            rotate_hosts in 0usize..5,
            rotate_pools in 0usize..4,
        ) {
            let host_names: Vec<String> = (0..caps.len()).map(|i| format!("h{i}")).collect();
            let f: BTreeMap<String, HostFacts> = host_names
                .iter()
                .zip(&caps)
                .map(|(n, (m, c))| (n.clone(), facts(*m * 4, *c * 4)))
                .collect();
            let mems: Vec<String> = pools.iter().map(|(_, _, m)| format!("{m}GiB")).collect();
            let pool_specs: Vec<(String, u32, u32, &str)> = pools
                .iter()
                .zip(&mems)
                .enumerate()
                .map(|(i, ((count, cpus, _), mem))| (format!("p{i}"), *count, *cpus, mem.as_str()))
                .collect();
            let build = |hr: usize, pr: usize| {
                let mut hs: Vec<(&str, &str)> = host_names.iter().map(|h| (h.as_str(), "")).collect();
                let n = hs.len();
                hs.rotate_left(hr % n);
                let mut ps: Vec<(&str, u32, u32, &str, Option<&str>)> = pool_specs
                    .iter()
                    .map(|(n, c, cpu, m)| (n.as_str(), *c, *cpu, *m, None))
                    .collect();
                let n = ps.len();
                ps.rotate_left(pr % n);
                fleet(&hs, &ps)
            };
            let first = resolve(&build(0, 0), &f, &BTreeMap::new());
            let again = resolve(&build(0, 0), &f, &BTreeMap::new());
            let reordered = resolve(&build(rotate_hosts, rotate_pools), &f, &BTreeMap::new());
            match (first, again, reordered) {
                (Ok(a), Ok(b), Ok(c)) => {
                    prop_assert_eq!(&a.slots, &b.slots);
                    prop_assert_eq!(&a.slots, &c.slots);
                    let placement: BTreeMap<String, String> =
                        a.slots.iter().map(|s| (s.name.clone(), s.host.clone())).collect();
                    let kept = resolve(&build(0, 0), &f, &placement).unwrap();
                    prop_assert_eq!(&a.slots, &kept.slots);
                    let names: Vec<&String> = a.slots.iter().map(|s| &s.name).collect();
                    let mut sorted = names.clone();
                    sorted.sort();
                    prop_assert_eq!(names, sorted);
                }
                (Err(a), Err(b), Err(c)) => {
                    prop_assert_eq!(a.to_string(), b.to_string());
                    // Overcommit is found whatever the order (lines may differ).
                    prop_assert!(c.to_string().contains("overcommitted"));
                }
                (a, b, c) => prop_assert!(false, "outcomes differ: {:?} {:?} {:?}", a.is_ok(), b.is_ok(), c.is_ok()),
            }
        }
    }
}
