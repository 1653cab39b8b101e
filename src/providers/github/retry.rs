//! Backoff as a wrapper around any [`RunnerRegistry`].
//!
//! Transient failures (5xx, timeouts, dropped connections) and rate limits
//! are retried with exponential backoff and jitter, waiting at least what
//! GitHub asked for (`retry-after`, or until `x-ratelimit-reset`), within a
//! bounded number of attempts and a bounded total wait. Sleeps go through
//! `tokio::time::sleep`, so tests run them under paused time.
//!
//! Which calls are safe to send again:
//! - `observe` (GET) and `remove` (DELETE; a repeat of a delete that went
//!   through answers 404, which is `Gone`) are idempotent.
//! - `registration_token` mints a new token each time; an extra token is
//!   harmless (it expires in an hour).
//! - `jit_config` registers a runner. A rate-limit answer (403/429) means
//!   GitHub did not act, so it is simply sent again. A transient failure is
//!   ambiguous: the runner may have been registered while the answer, which
//!   carries the only copy of its JIT config, was lost. Before minting
//!   again we observe the scope: if a runner of that name exists, is offline,
//!   idle and carries every label we asked for, it is our lost registration
//!   (nobody can ever run it without that config), so we remove it and mint
//!   afresh; if it exists and looks otherwise, the name is taken and we stop
//!   with `Refused`. If GitHub registered the runner but does not list it
//!   yet, the repeated POST answers 409 (`Refused`); that registration is then
//!   an orphan of ours, which the planner removes after its grace period.

use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;

use crate::plan::model::{ObservedRunner, RunnerStatus};
use crate::providers::{
    ErrorKind, JitRunner, ProviderError, RateBudget, RemoveOutcome, RunnerRegistry,
};
use crate::secret::Secret;

/// Bounds of the backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles with each further one.
    pub base_delay: Duration,
    /// Upper bound of one backoff step (a longer `retry-after` still wins,
    /// within `max_total_wait`).
    pub max_delay: Duration,
    /// Give up rather than wait longer than this in total for one call.
    pub max_total_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_total_wait: Duration::from_secs(5 * 60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `failures + 1`, or `None` to give up.
    /// Exponential with "equal jitter" (half fixed, half random), never less
    /// than what GitHub asked for.
    fn delay(&self, failures: u32, error: &ProviderError, waited: Duration) -> Option<Duration> {
        if !error.is_retryable() || failures >= self.max_attempts {
            return None;
        }
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
            .min(self.max_delay);
        let half = exp / 2;
        let jitter = if half.is_zero() {
            Duration::ZERO
        } else {
            rand::rng().random_range(Duration::ZERO..=half)
        };
        let mut delay = half + jitter;
        if let ErrorKind::RateLimited { retry_after_secs } = error.kind {
            delay = delay.max(Duration::from_secs(retry_after_secs));
        }
        (waited + delay <= self.max_total_wait).then_some(delay)
    }
}

/// A registry that retries its inner registry's retryable failures.
pub struct Retrying<R> {
    inner: R,
    policy: RetryPolicy,
}

impl<R: RunnerRegistry> Retrying<R> {
    pub fn new(inner: R, policy: RetryPolicy) -> Self {
        Retrying { inner, policy }
    }

    pub fn inner(&self) -> &R {
        &self.inner
    }

    async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<T, ProviderError>> + Send,
    {
        let mut failures = 0u32;
        let mut waited = Duration::ZERO;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    failures += 1;
                    let Some(delay) = self.policy.delay(failures, &e, waited) else {
                        return Err(e);
                    };
                    tracing::warn!(
                        target: "hangar::github",
                        call = what,
                        attempt = failures,
                        delay_ms = delay.as_millis() as u64,
                        error = %e,
                        "retrying"
                    );
                    tokio::time::sleep(delay).await;
                    waited += delay;
                }
            }
        }
    }
}

/// A registration that can only be one we minted and whose config we lost.
fn is_lost_mint(runner: &ObservedRunner, labels: &[String]) -> bool {
    runner.status == RunnerStatus::Offline
        && !runner.busy
        && labels.iter().all(|l| runner.labels.contains(l))
}

#[async_trait]
impl<R: RunnerRegistry> RunnerRegistry for Retrying<R> {
    fn scope(&self) -> String {
        self.inner.scope()
    }

    async fn observe(&self) -> Result<Vec<ObservedRunner>, ProviderError> {
        self.retry("observe", || self.inner.observe()).await
    }

    async fn jit_config(
        &self,
        name: &str,
        labels: &[String],
        runner_group: &str,
    ) -> Result<JitRunner, ProviderError> {
        let mut failures = 0u32;
        let mut waited = Duration::ZERO;
        loop {
            let error = match self.inner.jit_config(name, labels, runner_group).await {
                Ok(jit) => return Ok(jit),
                Err(e) => e,
            };
            failures += 1;
            let Some(delay) = self.policy.delay(failures, &error, waited) else {
                return Err(error);
            };
            tracing::warn!(
                target: "hangar::github",
                call = "jit_config",
                runner = name,
                attempt = failures,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "retrying"
            );
            tokio::time::sleep(delay).await;
            waited += delay;
            if error.kind != ErrorKind::Transient {
                continue;
            }
            // Ambiguous: did the POST register the runner?
            let runners = self.observe().await?;
            let Some(existing) = runners.iter().find(|r| r.name == name) else {
                continue;
            };
            if !is_lost_mint(existing, labels) {
                return Err(ProviderError::new(
                    self.inner.scope(),
                    ErrorKind::Refused,
                    format!("generate jit config: a runner named {name:?} already exists"),
                ));
            }
            tracing::info!(
                target: "hangar::github",
                runner = name,
                runner_id = existing.id,
                "removing a registration whose jit config was lost in transit"
            );
            match self.remove(existing.id).await? {
                RemoveOutcome::Removed | RemoveOutcome::Gone => {}
                RemoveOutcome::Busy => {
                    return Err(ProviderError::new(
                        self.inner.scope(),
                        ErrorKind::Refused,
                        format!("generate jit config: runner {name:?} is busy"),
                    ))
                }
            }
        }
    }

    async fn registration_token(&self) -> Result<Secret<String>, ProviderError> {
        self.retry("registration_token", || self.inner.registration_token())
            .await
    }

    fn registration_url(&self) -> String {
        self.inner.registration_url()
    }

    async fn remove(&self, runner_id: u64) -> Result<RemoveOutcome, ProviderError> {
        self.retry("remove", || self.inner.remove(runner_id)).await
    }

    fn rate_budget(&self) -> Option<RateBudget> {
        self.inner.rate_budget()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind) -> ProviderError {
        ProviderError::new("orgs/acme", kind, "x")
    }

    #[test]
    fn delay_grows_is_bounded_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(16),
            max_total_wait: Duration::from_secs(1000),
        };
        let t = err(ErrorKind::Transient);
        for (failures, lo, hi) in [(1, 1, 2), (2, 2, 4), (3, 4, 8), (4, 8, 16), (9, 8, 16)] {
            let d = p.delay(failures, &t, Duration::ZERO).unwrap();
            assert!(
                d >= Duration::from_secs(lo) && d <= Duration::from_secs(hi),
                "{failures}: {d:?}"
            );
        }
        let limited = err(ErrorKind::RateLimited {
            retry_after_secs: 120,
        });
        assert!(p.delay(1, &limited, Duration::ZERO).unwrap() >= Duration::from_secs(120));
        assert_eq!(p.delay(10, &t, Duration::ZERO), None, "attempts bounded");
        assert_eq!(
            p.delay(1, &limited, Duration::from_secs(900)),
            None,
            "total wait bounded"
        );
        assert_eq!(p.delay(1, &err(ErrorKind::Refused), Duration::ZERO), None);
        assert_eq!(p.delay(1, &err(ErrorKind::NotFound), Duration::ZERO), None);
    }
}
