//! Fleets with scaled pools for tests/scale.rs: a host with a memory
//! budget, pools with `scale`, and the queue played through the simulator.

use hangar::sim::{EnqueueJob, JobStatus, SimJob};

use super::{Rig, FLEET, OWNER, REPO};

/// A fleet `t` on sandbox hosts `hosts` (each allowing `max_memory` to the
/// fleet), registering in `acme/widgets`, with the given `pools:` entries.
pub fn scaled_fleet(hosts: &[&str], max_memory: &str, pools: &str) -> String {
    let mut y = format!(
        "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: {FLEET}\nspec:\n  github:\n    \
         repository: {OWNER}/{REPO}\n    simulator: true\n  policy:\n    bootTimeout: 5m\n    \
         backoffBase: 1m\n    backoffMax: 10m\n  hosts:\n"
    );
    for h in hosts {
        y.push_str(&format!(
            "    - name: {h}\n      uri: sandbox\n      maxMemory: {max_memory}\n      cpuOvercommit: 2.0\n"
        ));
    }
    y.push_str("  pools:\n");
    y.push_str(pools);
    y
}

/// [`scaled_fleet`] for organization `acme`, following the queues of
/// `repositories` (names in `acme`): its runners register in the
/// organization, in their pools' `runnerGroup`.
pub fn org_scaled_fleet(
    hosts: &[&str],
    max_memory: &str,
    repositories: &[&str],
    pools: &str,
) -> String {
    scaled_fleet(hosts, max_memory, pools).replace(
        &format!("    repository: {OWNER}/{REPO}\n"),
        &format!(
            "    organization: {OWNER}\n    repositories: [{}]\n",
            repositories.join(", ")
        ),
    )
}

/// A persistent pool entry with `scale: {min, max, idle}` (and
/// `cooldown` when given), labelled `name`, 1 vCPU and 1GiB each.
pub fn scaled_pool(name: &str, min: u32, max: u32, idle: u32, cooldown: Option<&str>) -> String {
    let cooldown = cooldown
        .map(|c| format!(", cooldown: {c}"))
        .unwrap_or_default();
    format!(
        "    - name: {name}\n      scale: {{min: {min}, max: {max}, idle: {idle}{cooldown}}}\n      \
         labels: [{name}]\n      vm:\n        cpus: 1\n        memory: 1GiB\n        \
         disk: 4GiB\n        image: base.qcow2\n"
    )
}

/// [`scaled_pool`] with JIT runners (`ephemeral: true`).
pub fn ephemeral_scaled_pool(name: &str, max: u32, cooldown: &str) -> String {
    scaled_pool(name, 0, max, 0, Some(cooldown))
        .replace("      labels:", "      ephemeral: true\n      labels:")
}

impl Rig {
    /// Queue a job with `labels` in the fleet's repository.
    pub fn enqueue(&self, labels: &[&str]) -> SimJob {
        self.enqueue_in(&format!("{OWNER}/{REPO}"), labels)
    }

    /// Queue a job with `labels` in repository `repo` (`OWNER/REPO`).
    pub fn enqueue_in(&self, repo: &str, labels: &[&str]) -> SimJob {
        self.sim
            .enqueue_job(&EnqueueJob::new(repo, labels))
            .unwrap()
    }

    /// The job as the simulator holds it now.
    pub fn job(&self, id: u64) -> SimJob {
        self.sim
            .jobs()
            .into_iter()
            .find(|j| j.id == id)
            .unwrap_or_else(|| panic!("no job {id}"))
    }

    /// Jobs still queued.
    pub fn queued_jobs(&self) -> Vec<SimJob> {
        self.sim
            .jobs()
            .into_iter()
            .filter(|j| j.status == JobStatus::Queued)
            .collect()
    }

    /// The fleet's VM names on `host`, sorted.
    pub async fn vm_names(&self, host: &str) -> Vec<String> {
        self.vms(host).await.into_keys().collect()
    }
}
