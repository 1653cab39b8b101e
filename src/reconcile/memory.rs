//! Since when each runner has been offline, remembered across passes and
//! processes. GitHub reports only "offline", not since when; a persistent
//! runner is replaced once it has been offline past `offlineTimeout`, so a
//! pass from cron (a new process each time) must know when an earlier pass
//! first saw it offline. Losing this file only delays such a replacement.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use async_trait::async_trait;

use super::Clock;
use crate::plan::model::{ObservedRunner, RunnerStatus};
use crate::providers::{JitRunner, ProviderError, RateBudget, RemoveOutcome, RunnerRegistry};
use crate::secret::Secret;

/// The file `<state dir>/<fleet>.offline.json`: runner id → first seen offline.
pub struct OfflineMemory {
    path: PathBuf,
}

impl OfflineMemory {
    pub fn new(state_dir: &Path, fleet: &str) -> Self {
        OfflineMemory {
            path: state_dir.join(format!("{fleet}.offline.json")),
        }
    }

    fn load(&self) -> BTreeMap<u64, DateTime<Utc>> {
        std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
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
            let saved = serde_json::to_vec(&after)
                .map_err(std::io::Error::other)
                .and_then(|b| {
                    if let Some(dir) = self.path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    let tmp = self.path.with_extension("json.tmp");
                    std::fs::write(&tmp, b)?;
                    std::fs::rename(&tmp, &self.path)
                });
            if let Err(e) = saved {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot save offline times");
            }
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
