//! What the world does not say about time, remembered across passes and
//! processes: since when each runner has been offline (GitHub reports only
//! "offline"; a persistent runner is replaced once offline past
//! `offlineTimeout`), and since when each guest has been at its stage (the
//! console says what, not when; the boot timeout counts from the last stage
//! reached). A pass from cron is a new process each time, so both live in
//! the state directory. Losing a file only moves such a deadline. Beside
//! them, the runner groups' access as last read, for a pass that cannot
//! read it (losing that file only means counting by labels until the next
//! read).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use async_trait::async_trait;

use super::Clock;
use crate::files::state;
use crate::model::guest::GuestStage;
use crate::model::host::HostFacts;
use crate::plan::model::{
    GroupAccess, Leftover, ObservedHost, ObservedJob, ObservedRunner, ObservedVm, RunnerStatus,
    VmRef,
};
use crate::providers::{
    CacheUsage, Hypervisor, JitRunner, ProviderError, RateBudget, RemoveOutcome, RunnerRegistry,
    VmCreate,
};
use crate::secret::Secret;

/// The file `<state dir>/<fleet>.offline.json`: runner id → first seen
/// offline; beside it `<fleet>.scale.json`: scaled pool → since when it has
/// had more slots than its target (the scale-down cooldown counts from
/// there), and `<fleet>.access.json`: runner group → the repositories it
/// admits, as last read.
pub struct OfflineMemory {
    path: PathBuf,
    scale_path: PathBuf,
    access_path: PathBuf,
}

impl OfflineMemory {
    pub fn new(state_dir: &Path, fleet: &str) -> Self {
        OfflineMemory {
            path: state_dir.join(format!("{fleet}.offline.json")),
            scale_path: state_dir.join(format!("{fleet}.scale.json")),
            access_path: state_dir.join(format!("{fleet}.access.json")),
        }
    }

    /// Runner group → its access as last read.
    pub fn access(&self) -> BTreeMap<String, GroupAccess> {
        load(&self.access_path)
    }

    /// Keep what a read of the `asked` groups answered: a group asked and
    /// not answered (not found, or of a visibility not known) is forgotten,
    /// groups not asked stay as they were.
    pub fn remember_access(&self, asked: &[String], read: &BTreeMap<String, GroupAccess>) {
        let before = self.access();
        let mut after = before.clone();
        for group in asked {
            match read.get(group) {
                Some(access) => after.insert(group.clone(), access.clone()),
                None => after.remove(group),
            };
        }
        if after != before {
            save(&self.access_path, &after);
        }
    }

    /// Scaled pool → since when above its target, as last saved.
    pub fn scale(&self) -> BTreeMap<String, DateTime<Utc>> {
        load(&self.scale_path)
    }

    /// Save what [`OfflineMemory::scale`] answers next (only when changed).
    pub fn remember_scale(&self, above_target_since: &BTreeMap<String, DateTime<Utc>>) {
        if self.scale() != *above_target_since {
            save(&self.scale_path, above_target_since);
        }
    }

    fn load(&self) -> BTreeMap<u64, DateTime<Utc>> {
        load(&self.path)
    }

    /// Fill `offline_since` of every offline runner (the earlier of what the
    /// provider and the file know), forget runners that are online or gone,
    /// and save. Failing to save is logged, not fatal.
    pub fn apply(&self, items: &mut [ObservedRunner], now: DateTime<Utc>) {
        let before = self.load();
        let mut after = BTreeMap::new();
        for r in items.iter_mut() {
            if r.status != RunnerStatus::Offline {
                continue;
            }
            let since = [before.get(&r.id).copied(), r.offline_since, Some(now)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now);
            r.offline_since = Some(since);
            after.insert(r.id, since);
        }
        if after != before {
            save(&self.path, &after);
        }
    }
}

/// A registry that fills `offline_since` from an [`OfflineMemory`]. A failed
/// list says nothing about who is offline, so it leaves the memory alone.
pub struct Remembering<R> {
    pub inner: R,
    pub memory: OfflineMemory,
    pub clock: std::sync::Arc<dyn Clock>,
}

#[async_trait]
impl<R: RunnerRegistry> RunnerRegistry for Remembering<R> {
    fn scope(&self) -> String {
        self.inner.scope()
    }

    async fn observe(&self) -> Result<Vec<ObservedRunner>, ProviderError> {
        let mut runners = self.inner.observe().await?;
        self.memory.apply(&mut runners, self.clock.now());
        Ok(runners)
    }

    async fn jit_config(
        &self,
        name: &str,
        labels: &[String],
        runner_group: &str,
    ) -> Result<JitRunner, ProviderError> {
        self.inner.jit_config(name, labels, runner_group).await
    }

    async fn registration_token(&self) -> Result<Secret<String>, ProviderError> {
        self.inner.registration_token().await
    }

    fn registration_url(&self) -> String {
        self.inner.registration_url()
    }

    async fn remove(&self, runner_id: u64) -> Result<RemoveOutcome, ProviderError> {
        self.inner.remove(runner_id).await
    }

    fn rate_budget(&self) -> Option<RateBudget> {
        self.inner.rate_budget()
    }

    async fn jobs(&self, repositories: &[String]) -> Result<Vec<ObservedJob>, ProviderError> {
        self.inner.jobs(repositories).await
    }

    /// A read that fails (GitHub down, a token that lost the scope) answers
    /// the access last read, so that a pool does not start counting jobs
    /// its group does not admit; only a group never read counts by labels.
    async fn group_access(
        &self,
        groups: &[String],
    ) -> Result<BTreeMap<String, GroupAccess>, ProviderError> {
        match self.inner.group_access(groups).await {
            Ok(read) => {
                self.memory.remember_access(groups, &read);
                Ok(read)
            }
            Err(e) => {
                let last = self.memory.access();
                let kept: BTreeMap<String, GroupAccess> = groups
                    .iter()
                    .filter_map(|g| Some((g.clone(), last.get(g)?.clone())))
                    .collect();
                if kept.is_empty() {
                    return Err(e);
                }
                tracing::warn!(
                    target: "hangar::scale",
                    error = %e,
                    groups = ?kept.keys().collect::<Vec<_>>(),
                    "runner group access not read: the access last read is used"
                );
                Ok(kept)
            }
        }
    }

    fn scale_memory(&self) -> BTreeMap<String, DateTime<Utc>> {
        self.memory.scale()
    }

    fn remember_scale(&self, above_target_since: &BTreeMap<String, DateTime<Utc>>) {
        self.memory.remember_scale(above_target_since)
    }
}

/// The file `<state dir>/<fleet>.stages.<host>.json`: VM uuid → the stage
/// its guest was at and since when.
pub struct StageMemory {
    path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stage {
    stage: GuestStage,
    since: DateTime<Utc>,
}

impl StageMemory {
    pub fn new(state_dir: &Path, fleet: &str, host: &str) -> Self {
        StageMemory {
            path: state_dir.join(format!("{fleet}.stages.{host}.json")),
        }
    }

    /// Fill `guest_since` of every VM whose guest reported a stage past
    /// booting (when it was first seen there, `now` for a new stage),
    /// forget VMs that are gone, and save.
    pub fn apply(&self, vms: &mut [ObservedVm], now: DateTime<Utc>) {
        let before: BTreeMap<String, Stage> = load(&self.path);
        let mut after = BTreeMap::new();
        for vm in vms.iter_mut() {
            let Some(stage) = vm.guest.filter(|g| *g != GuestStage::Booting) else {
                continue;
            };
            let since = match before.get(&vm.uuid) {
                Some(s) if s.stage == stage => s.since,
                _ => now,
            };
            vm.guest_since = Some(since);
            after.insert(vm.uuid.clone(), Stage { stage, since });
        }
        if after != before {
            save(&self.path, &after);
        }
    }
}

/// What the file remembers; nothing when it is missing, unreadable or not
/// a regular file (a symlink is not followed), which only costs memory.
fn load<T: serde::de::DeserializeOwned + Default>(path: &Path) -> T {
    match state::read(path, state::MAX_STATE_BYTES) {
        Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_default(),
        Ok(None) => T::default(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read what the engine remembers");
            T::default()
        }
    }
}

fn save<T: serde::Serialize>(path: &Path, value: &T) {
    let bytes = serde_json::to_vec(value).expect("remembered maps serialize");
    if let Err(e) = state::write_atomic(path, &bytes) {
        tracing::warn!(path = %path.display(), error = %e, "cannot save what the engine remembers");
    }
}

/// A hypervisor whose observed VMs carry `guest_since` from a
/// [`StageMemory`].
pub struct RememberingStages<H: ?Sized> {
    pub inner: std::sync::Arc<H>,
    pub memory: StageMemory,
    pub clock: std::sync::Arc<dyn Clock>,
}

#[async_trait]
impl<H: Hypervisor + ?Sized> Hypervisor for RememberingStages<H> {
    fn host(&self) -> &str {
        self.inner.host()
    }

    fn simulated(&self) -> bool {
        self.inner.simulated()
    }

    async fn facts(&self) -> Result<HostFacts, ProviderError> {
        self.inner.facts().await
    }

    async fn observe(&self, fleet: &str) -> Result<Vec<ObservedVm>, ProviderError> {
        let mut vms = self.inner.observe(fleet).await?;
        self.memory.apply(&mut vms, self.clock.now());
        Ok(vms)
    }

    fn foreign_names(&self) -> Vec<String> {
        self.inner.foreign_names()
    }

    async fn create(&self, vm: &VmCreate) -> Result<(), ProviderError> {
        self.inner.create(vm).await
    }

    async fn start(&self, vm: &VmRef) -> Result<(), ProviderError> {
        self.inner.start(vm).await
    }

    async fn delete(&self, vm: &VmRef, remove_cache: bool) -> Result<(), ProviderError> {
        self.inner.delete(vm, remove_cache).await
    }

    async fn remove_seed(&self, vm: &VmRef) -> Result<(), ProviderError> {
        self.inner.remove_seed(vm).await
    }

    async fn drain(&self, vm: &VmRef) -> Result<crate::plan::model::DrainState, ProviderError> {
        self.inner.drain(vm).await
    }

    async fn cache_usage(&self, fleet: &str) -> Result<Vec<CacheUsage>, ProviderError> {
        self.inner.cache_usage(fleet).await
    }

    fn host_state(&self) -> ObservedHost {
        self.inner.host_state()
    }

    async fn ensure_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        self.inner.ensure_network(network, filter).await
    }

    async fn ensure_runner_volume(
        &self,
        volume: &str,
        local: &crate::model::runner::LocalTarball,
    ) -> Result<(), ProviderError> {
        self.inner.ensure_runner_volume(volume, local).await
    }

    async fn remove_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        self.inner.remove_network(network, filter).await
    }

    async fn remove_leftover(&self, leftover: &Leftover) -> Result<(), ProviderError> {
        self.inner.remove_leftover(leftover).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(id: u64, status: RunnerStatus) -> ObservedRunner {
        ObservedRunner {
            id,
            name: format!("f-p-{id}"),
            status,
            busy: false,
            labels: vec![],
            offline_since: None,
        }
    }

    #[test]
    fn group_access_read_replaces_what_was_asked_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let all = GroupAccess {
            visibility: crate::plan::model::GroupVisibility::All,
            allows_public: false,
        };
        let private = GroupAccess {
            visibility: crate::plan::model::GroupVisibility::Private,
            allows_public: true,
        };
        let asked = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let read = |pairs: &[(&str, &GroupAccess)]| {
            pairs
                .iter()
                .map(|(n, a)| (n.to_string(), (*a).clone()))
                .collect::<BTreeMap<_, _>>()
        };
        let m = OfflineMemory::new(dir.path(), "f");
        m.remember_access(
            &asked(&["gpu", "arm"]),
            &read(&[("gpu", &all), ("arm", &all)]),
        );
        // Another process: gpu read again (changed), arm not asked, big
        // asked and not found.
        let m = OfflineMemory::new(dir.path(), "f");
        m.remember_access(&asked(&["gpu", "big"]), &read(&[("gpu", &private)]));
        assert_eq!(m.access(), read(&[("arm", &all), ("gpu", &private)]));
        // Asked and no longer found: forgotten.
        m.remember_access(&asked(&["arm"]), &BTreeMap::new());
        assert_eq!(m.access(), read(&[("gpu", &private)]));
    }

    #[test]
    fn offline_time_survives_a_new_process_and_resets_when_online() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t1 = t0 + chrono::TimeDelta::minutes(7);

        let mut o = vec![runner(1, RunnerStatus::Offline)];
        OfflineMemory::new(dir.path(), "f").apply(&mut o, t0);
        // A later pass in another process still knows the first sighting.
        let mut o = vec![runner(1, RunnerStatus::Offline)];
        OfflineMemory::new(dir.path(), "f").apply(&mut o, t1);
        assert_eq!(o[0].offline_since, Some(t0));

        // Online in between: the clock starts again.
        let mut o = vec![runner(1, RunnerStatus::Online)];
        OfflineMemory::new(dir.path(), "f").apply(&mut o, t1);
        let mut o = vec![runner(1, RunnerStatus::Offline)];
        OfflineMemory::new(dir.path(), "f").apply(&mut o, t1);
        assert_eq!(o[0].offline_since, Some(t1));
    }

    #[test]
    fn a_stage_keeps_its_first_sighting_until_the_guest_moves_on() {
        use crate::model::ownership::{Ownership, SpecHash, VmShape};
        let dir = tempfile::tempdir().unwrap();
        let t0 = Utc::now();
        let t1 = t0 + chrono::TimeDelta::minutes(3);
        let vm = |stage| ObservedVm {
            name: "f-p-0".into(),
            uuid: "u1".into(),
            host: "h".into(),
            state: crate::plan::model::VmState::Running,
            owner: Ownership {
                fleet: "f".into(),
                pool: "p".into(),
                slot: "f-p-0".into(),
                index: 0,
                generation: 1,
                spec_hash: SpecHash("s".into()),
                created_at: t0,
                ephemeral: false,
                boot_failures: 0,
                shape: VmShape {
                    cpus: 1,
                    memory_bytes: 1,
                    disk_bytes: 1,
                    image: "i".into(),
                    cache_bytes: None,
                },
            },
            guest: Some(stage),
            guest_since: None,
            seed_attached: true,
            drain: None,
        };
        let m = || StageMemory::new(dir.path(), "f", "h");
        let mut v = [vm(GuestStage::Booting)];
        m().apply(&mut v, t0);
        assert_eq!(v[0].guest_since, None, "nothing printed yet");
        let mut v = [vm(GuestStage::DockerReady)];
        m().apply(&mut v, t0);
        assert_eq!(v[0].guest_since, Some(t0));
        // A later process, same stage: the first sighting stays.
        let mut v = [vm(GuestStage::DockerReady)];
        m().apply(&mut v, t1);
        assert_eq!(v[0].guest_since, Some(t0));
        // Moved on: counts from now.
        let mut v = [vm(GuestStage::CacheMounted)];
        m().apply(&mut v, t1);
        assert_eq!(v[0].guest_since, Some(t1));
    }

    #[test]
    fn the_scale_cooldown_start_survives_a_new_process() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Utc::now();
        let mut m = BTreeMap::new();
        m.insert("build".to_string(), t0);
        OfflineMemory::new(dir.path(), "f").remember_scale(&m);
        assert_eq!(OfflineMemory::new(dir.path(), "f").scale(), m);
        assert!(OfflineMemory::new(dir.path(), "g").scale().is_empty());
        OfflineMemory::new(dir.path(), "f").remember_scale(&BTreeMap::new());
        assert!(OfflineMemory::new(dir.path(), "f").scale().is_empty());
    }

    #[test]
    fn runners_that_are_gone_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Utc::now();
        let m = OfflineMemory::new(dir.path(), "f");
        m.apply(&mut [runner(1, RunnerStatus::Offline)], t0);
        assert_eq!(m.load().get(&1), Some(&t0));
        m.apply(&mut [runner(2, RunnerStatus::Offline)], t0);
        assert_eq!(m.load().keys().copied().collect::<Vec<_>>(), vec![2]);
    }
}
