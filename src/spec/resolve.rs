//! Resolution: the fleet file plus the hosts' facts and where slots live
//! today → the planner's `Desired`. Pure and deterministic: the same inputs
//! give the same slots, whatever the order of hosts and pools in the file.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::{Locator, Problem, SpecError};
use super::load::LoadedFleet;
use super::node::FieldPath;
use super::types::{Arch, DockerSource, DomainTypeSpec, Host, Pool, RunnerInstall};
use super::units::{human_bytes, MemorySpec};
use crate::plan::model::{slot_name, Desired, DesiredSlot, SpecHash, VmShape};
use crate::providers::{HostFacts, NetworkAttachment};

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
    /// no new slots. Overcommit is an error naming host, pools and numbers.
    pub fn resolve(
        &self,
        facts: &BTreeMap<String, HostFacts>,
        placement: &BTreeMap<String, String>,
    ) -> Result<Desired, SpecError> {
        let (file, text, index) = self.locator();
        let loc = Locator {
            file: &file,
            text,
            index,
        };
        let fleet = &self.fleet;
        let name = &fleet.metadata.name;
        let hosts_path = FieldPath::root().key("spec").key("hosts");
        let pools_path = FieldPath::root().key("spec").key("pools");
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

        let mut problems: Vec<Problem> = Vec::new();
        let mut usage: BTreeMap<&str, Usage> = BTreeMap::new();
        let mut placed: BTreeMap<String, (&Pool, u32, &Host, u64)> = BTreeMap::new();
        let mut unplaced: Vec<(&Pool, u32, String)> = Vec::new();

        // Pools by name, so that the file's order never matters.
        for (&pool_name, &pi) in &pool_index {
            let pool = &fleet.spec.pools[pi];
            let allowed = allowed_hosts(pool, &host_index);
            for i in 0..pool.count {
                let slot = slot_name(name, pool_name, i);
                let kept = placement
                    .get(&slot)
                    .filter(|h| allowed.contains(h.as_str()))
                    .and_then(|h| host_index.get(h.as_str()));
                match kept {
                    Some(&hi) => {
                        let host = &fleet.spec.hosts[hi];
                        match vm_memory(pool.vm.memory, facts.get(&host.name)) {
                            Some(mem) => {
                                usage.entry(&host.name).or_default().add(
                                    pool_name,
                                    mem,
                                    pool.vm.cpus,
                                );
                                placed.insert(slot, (pool, i, host, mem));
                            }
                            None => problems.push(loc.at_path(
                                &hosts_path.index(hi),
                                format!(
                                    "no facts for host `{}`, which holds slot {slot} whose memory is a share ({})",
                                    host.name, pool.vm.memory
                                ),
                            )),
                        }
                    }
                    None => unplaced.push((pool, i, slot)),
                }
            }
        }

        for (pool, i, slot) in unplaced {
            let allowed = allowed_hosts(pool, &host_index);
            let best = allowed
                .iter()
                .filter_map(|h| {
                    let host = &fleet.spec.hosts[host_index[h]];
                    let f = facts.get(*h)?;
                    let cap = capacity(host, f);
                    let used = usage.get(h);
                    let free_mem =
                        i128::from(cap.memory) - i128::from(used.map_or(0, |u| u.memory));
                    let free_cpu =
                        i128::from(cap.cpu_millis) - i128::from(used.map_or(0, |u| u.cpus)) * 1000;
                    Some(((free_mem, free_cpu, Reverse(*h)), host, f))
                })
                .max_by(|a, b| a.0.cmp(&b.0));
            match best {
                Some((_, host, f)) => {
                    let mem = pool.vm.memory.bytes_on(f.memory_bytes);
                    usage
                        .entry(&host.name)
                        .or_default()
                        .add(&pool.name, mem, pool.vm.cpus);
                    placed.insert(slot, (pool, i, host, mem));
                }
                None => {
                    let pi = pool_index[pool.name.as_str()];
                    problems.push(loc.at_path(
                        &pools_path.index(pi).key("hosts"),
                        format!(
                            "no host with known capacity for slot {slot} (allowed: {})",
                            allowed.iter().copied().collect::<Vec<_>>().join(", ")
                        ),
                    ));
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
                    image: pool.vm.image.clone(),
                    cache_bytes: pool.cache.as_ref().map(|c| c.size.bytes()),
                };
                let spec_hash = spec_hash(pool, host, &vm);
                DesiredSlot {
                    name: slot,
                    pool: pool.name.clone(),
                    index,
                    host: host.name.clone(),
                    ephemeral: pool.ephemeral,
                    labels: pool.labels.clone(),
                    runner_group: pool.runner_group.clone(),
                    vm,
                    spec_hash,
                }
            })
            .collect();

        Ok(Desired {
            fleet: name.clone(),
            hosts: fleet.spec.hosts.iter().map(|h| h.name.clone()).collect(),
            pools: fleet.spec.pools.iter().map(|p| p.name.clone()).collect(),
            slots,
            policy: fleet.spec.policy.resolved(),
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
    runner_group: &'a str,
    ephemeral: bool,
    network: NetworkAttachment,
    domain_type: DomainTypeSpec,
    storage_pool: &'a str,
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
        runner_group: &pool.runner_group,
        ephemeral: pool.ephemeral,
        network: host.network_attachment(),
        domain_type: host.domain_type,
        storage_pool: &host.storage_pool,
    };
    let json = serde_json::to_vec(&input).expect("hash input serializes");
    let digest = Sha256::digest(&json);
    SpecHash(hex::encode(digest)[..16].to_string())
}
