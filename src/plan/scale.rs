//! Pools that follow demand: how many slots each scaled pool keeps this
//! pass, and which, from the jobs GitHub holds and the slots that exist.
//!
//! `target = clamp(busy + queued + idle, min, max)`. A pool below its
//! target grows at once, taking the lowest free indexes. A pool above it
//! shrinks only once it has been above for the cooldown, and then only by
//! idle slots, the highest indexes first: a busy runner is never removed.
//! Since when a pool has been above its target is the one thing remembered
//! between passes (the engine keeps it, in the state directory for cron).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

pub use super::model::ScaledPool;
use super::model::{JobStatus, Observation, Observed, ObservedJob, PoolScale};
use crate::model::names::parse_slot_name;

/// GitHub's routing rule for self-hosted runners: every label of the job
/// is one of the runner's, without regard to case.
pub fn job_fits(job_labels: &[String], runner_labels: &[String]) -> bool {
    job_labels
        .iter()
        .all(|l| runner_labels.iter().any(|r| r.eq_ignore_ascii_case(l)))
}

/// The runner groups whose access this pass needs: those of pools in a
/// group (an organization's) whose labels a queued job fits, each once.
/// With none queued, nothing is asked of GitHub.
pub fn groups_to_read(pools: &[ScaledPool], jobs: &[ObservedJob]) -> Vec<String> {
    let mut groups = BTreeSet::new();
    for job in jobs.iter().filter(|j| j.status == JobStatus::Queued) {
        for pool in pools {
            if let Some(g) = &pool.runner_group {
                if job_fits(&job.labels, &pool.runner_labels) {
                    groups.insert(g.clone());
                }
            }
        }
    }
    groups.into_iter().collect()
}

/// Each scaled pool's slots for this pass. `pools` in name order; a queued
/// job counts for the first pool its labels fit and whose runner group
/// admits its repository ([`ScaledPool::admits`]), so that one job never
/// asks for two runners, nor for one that could never take it; a job that
/// fits pools none of whose groups admit it is named on the first of them
/// (`not_admitted`). `above_since` is what the last pass remembered (pool
/// → since when above target); the answer carries the new value.
pub fn scale(
    fleet: &str,
    pools: &[ScaledPool],
    observed: &Observed,
    jobs: &Observation<Vec<ObservedJob>>,
    above_since: &BTreeMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<PoolScale> {
    let mut existing: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    let mut hosts_unseen = false;
    for obs in observed.hosts.values() {
        match obs.seen() {
            Some(vms) => {
                for vm in vms {
                    existing
                        .entry(vm.owner.pool.as_str())
                        .or_default()
                        .insert(vm.owner.index);
                }
            }
            None => hosts_unseen = true,
        }
    }
    let busy_slots: BTreeSet<(&str, u32)> = observed
        .runners
        .seen()
        .into_iter()
        .flatten()
        .filter(|r| r.busy)
        .filter_map(|r| parse_slot_name(fleet, &r.name))
        .collect();
    // A registration that says busy is a slot, even if its VM was not seen.
    for (pool, index) in &busy_slots {
        existing.entry(pool).or_default().insert(*index);
    }

    let mut queued_for: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut not_admitted: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    if let Some(list) = jobs.seen() {
        let mut queued: Vec<&ObservedJob> = list
            .iter()
            .filter(|j| j.status == JobStatus::Queued)
            .collect();
        queued.sort_by_key(|j| j.id);
        for job in queued {
            let mut fitting = pools
                .iter()
                .filter(|p| job_fits(&job.labels, &p.runner_labels))
                .peekable();
            let first = fitting.peek().map(|p| p.name.as_str());
            if let Some(p) = fitting.find(|p| p.admits(job)) {
                queued_for.entry(p.name.as_str()).or_default().push(job.id);
            } else if let Some(first) = first {
                // GitHub would give it to none of them: it asks for nothing.
                not_admitted.entry(first).or_default().push(job.id);
            }
        }
    }

    pools
        .iter()
        .map(|pool| {
            let have = existing
                .get(pool.name.as_str())
                .cloned()
                .unwrap_or_default();
            let busy: BTreeSet<u32> = have
                .iter()
                .copied()
                .filter(|i| busy_slots.contains(&(pool.name.as_str(), *i)))
                .collect();
            let queued = queued_for.remove(pool.name.as_str()).unwrap_or_default();
            let wanted = busy.len() as u64 + queued.len() as u64 + u64::from(pool.idle);
            let target = (wanted.min(u64::from(pool.max)) as u32).max(pool.min);
            let mut out = PoolScale {
                pool: pool.name.clone(),
                busy: busy.len() as u32,
                queued,
                target,
                slots: Vec::new(),
                above_target_since: None,
                unknown: None,
                not_admitted: not_admitted.remove(pool.name.as_str()).unwrap_or_default(),
            };
            if let Observation::Failed { error } = jobs {
                // Without the queue, keep what there is (within the bounds
                // that need no queue to know).
                out.unknown = Some(error.clone());
                out.slots = grow(&have, pool.min, pool.max).into_iter().collect();
                return out;
            }
            let have_n = have.len() as u32;
            if target >= have_n {
                out.slots = grow(&have, target, pool.max).into_iter().collect();
                return out;
            }
            let since = above_since.get(&pool.name).copied().unwrap_or(now);
            let cooled = now
                .signed_duration_since(since)
                .to_std()
                .unwrap_or_default()
                >= pool.cooldown;
            if !cooled || hosts_unseen {
                out.above_target_since = Some(since);
                out.slots = have.into_iter().collect();
                return out;
            }
            let mut keep = have.clone();
            for index in have.iter().rev() {
                if keep.len() as u32 <= target {
                    break;
                }
                if !busy.contains(index) {
                    keep.remove(index);
                }
            }
            if keep.len() as u32 > target {
                // Busy runners hold it above target: the rest goes once idle.
                out.above_target_since = Some(since);
            }
            out.slots = keep.into_iter().collect();
            out
        })
        .collect()
}

/// `have` plus the lowest free indexes below `max` until there are `to`.
fn grow(have: &BTreeSet<u32>, to: u32, max: u32) -> BTreeSet<u32> {
    let mut slots = have.clone();
    let mut next = 0u32;
    while (slots.len() as u32) < to && next < max.max(to) {
        slots.insert(next);
        next += 1;
    }
    slots
}
