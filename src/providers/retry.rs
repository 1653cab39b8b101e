//! Backoff as one wrapper around either provider trait: [`Retrying`] over a
//! [`Hypervisor`] or a [`RunnerRegistry`].
//!
//! Transient failures (dropped connections, 5xx, timeouts) and rate limits
//! are retried with exponential backoff and jitter, waiting at least what the
//! provider asked for (`retry-after`, or until `x-ratelimit-reset`), within a
//! bounded number of attempts and a bounded total wait. Sleeps go through
//! `tokio::time`, so tests run them under paused time, and every sleep ends
//! when the stop signal comes: a process asked to stop never sits out a
//! two-minute `retry-after`. Reads in flight are dropped on the stop signal
//! too; a change in flight is given [`STOP_GRACE`] to finish (cutting it
//! short may leave the world half-changed), and then abandoned: a call that
//! hangs must not keep a process that was asked to stop. What it left half
//! made is found by the next run (every change is idempotent, and a create
//! records its volumes before it makes them).
//!
//! Which calls are sent again:
//! - reads (`facts`, `observe`, `cache_usage`) and the idempotent changes:
//!   libvirt's create adopts what an earlier attempt made, start, delete and
//!   seed removal are no-ops when already done, a repeated GitHub delete
//!   answers 404 (`Gone`), and an extra registration token is harmless;
//! - `jit_config` only after a rate-limit answer, which means GitHub did not
//!   act. Any other failure is ambiguous (the runner may be registered while
//!   the answer carrying its only config was lost), so it is not sent again:
//!   the action fails, and the next plan sees the registration without a VM
//!   and removes it (the planner's orphan rule) before creating the slot.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::{
    CacheUsage, ErrorKind, Hypervisor, JitRunner, ProviderError, RateBudget, RemoveOutcome,
    RunnerRegistry, VmCreate,
};
use crate::model::HostFacts;
use crate::plan::model::{
    GroupAccess, Leftover, ObservedHost, ObservedJob, ObservedRunner, ObservedVm, VmRef,
};
use crate::secret::Secret;

/// How long a change in flight may go on after the stop signal.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

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

impl RetryPolicy {
    /// GitHub: rate limits can ask for minutes.
    pub const GITHUB: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(60),
        max_total_wait: Duration::from_secs(5 * 60),
    };

    /// libvirt: a dropped connection is reopened at once; a busy daemon
    /// answers within seconds.
    pub const LIBVIRT: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(8),
        max_total_wait: Duration::from_secs(30),
    };

    /// The wait before attempt `failures + 1`, or `None` to give up.
    /// Exponential with "equal jitter" (half fixed, half random), never less
    /// than what the provider asked for.
    pub fn delay(
        &self,
        failures: u32,
        error: &ProviderError,
        waited: Duration,
    ) -> Option<Duration> {
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

/// A provider whose retryable failures are tried again, until the stop
/// signal.
pub struct Retrying<P: ?Sized> {
    inner: Arc<P>,
    policy: RetryPolicy,
    stop: CancellationToken,
}

/// Whether a call may be dropped mid-flight when the stop signal comes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Read,
    Change,
}

impl<P: ?Sized> Retrying<P> {
    /// Retries that only end by their bounds.
    pub fn new(inner: impl Into<Arc<P>>, policy: RetryPolicy) -> Self {
        Retrying {
            inner: inner.into(),
            policy,
            stop: CancellationToken::new(),
        }
    }

    /// Backoff sleeps (and reads in flight) end when `stop` is cancelled;
    /// the call then fails with the last error it had.
    pub fn stopped_by(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    pub fn inner(&self) -> &Arc<P> {
        &self.inner
    }

    fn stopped(&self, target: &str, what: &str) -> ProviderError {
        ProviderError::new(
            target,
            ErrorKind::Transient,
            format!("{what}: stopped (shutting down)"),
        )
    }

    async fn retry<T, F, Fut>(
        &self,
        target: &str,
        what: &str,
        call: Call,
        retryable: impl Fn(&ProviderError) -> bool,
        mut op: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut failures = 0u32;
        let mut waited = Duration::ZERO;
        loop {
            let result = match call {
                Call::Change => {
                    let grace = async {
                        self.stop.cancelled().await;
                        tokio::time::sleep(STOP_GRACE).await;
                    };
                    tokio::select! {
                        r = op() => r,
                        _ = grace => return Err(ProviderError::new(
                            target,
                            ErrorKind::Transient,
                            format!(
                                "{what}: abandoned {}s after the stop signal (left half done; the next run finishes or removes it)",
                                STOP_GRACE.as_secs()
                            ),
                        )),
                    }
                }
                Call::Read => tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return Err(self.stopped(target, what)),
                    r = op() => r,
                },
            };
            let error = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            failures += 1;
            let delay = match self.policy.delay(failures, &error, waited) {
                Some(d) if retryable(&error) && !self.stop.is_cancelled() => d,
                _ => return Err(error),
            };
            tracing::warn!(
                target: "hangar::retry",
                %target,
                call = what,
                attempt = failures,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "retrying"
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => return Err(error),
            }
            waited += delay;
        }
    }
}

fn any(_: &ProviderError) -> bool {
    true
}

#[async_trait]
impl<H: Hypervisor + ?Sized> Hypervisor for Retrying<H> {
    fn host(&self) -> &str {
        self.inner.host()
    }

    fn simulated(&self) -> bool {
        self.inner.simulated()
    }

    async fn facts(&self) -> Result<HostFacts, ProviderError> {
        self.retry(self.host(), "facts", Call::Read, any, || self.inner.facts())
            .await
    }

    async fn observe(&self, fleet: &str) -> Result<Vec<ObservedVm>, ProviderError> {
        self.retry(self.host(), "observe", Call::Read, any, || {
            self.inner.observe(fleet)
        })
        .await
    }

    fn foreign_names(&self) -> Vec<String> {
        self.inner.foreign_names()
    }

    async fn create(&self, vm: &VmCreate) -> Result<(), ProviderError> {
        self.retry(self.host(), "create", Call::Change, any, || {
            self.inner.create(vm)
        })
        .await
    }

    async fn start(&self, vm: &VmRef) -> Result<(), ProviderError> {
        self.retry(self.host(), "start", Call::Change, any, || {
            self.inner.start(vm)
        })
        .await
    }

    async fn delete(&self, vm: &VmRef, remove_cache: bool) -> Result<(), ProviderError> {
        self.retry(self.host(), "delete", Call::Change, any, || {
            self.inner.delete(vm, remove_cache)
        })
        .await
    }

    async fn remove_seed(&self, vm: &VmRef) -> Result<(), ProviderError> {
        self.retry(self.host(), "remove seed", Call::Change, any, || {
            self.inner.remove_seed(vm)
        })
        .await
    }

    async fn drain(&self, vm: &VmRef) -> Result<crate::plan::model::DrainState, ProviderError> {
        // Asking twice is harmless: the guest's request is a flag.
        self.retry(self.host(), "drain", Call::Change, any, || {
            self.inner.drain(vm)
        })
        .await
    }

    async fn cache_usage(&self, fleet: &str) -> Result<Vec<CacheUsage>, ProviderError> {
        self.retry(self.host(), "cache usage", Call::Read, any, || {
            self.inner.cache_usage(fleet)
        })
        .await
    }

    fn host_state(&self) -> ObservedHost {
        self.inner.host_state()
    }

    async fn ensure_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        self.retry(self.host(), "ensure network", Call::Change, any, || {
            self.inner.ensure_network(network, filter)
        })
        .await
    }

    async fn ensure_runner_volume(
        &self,
        volume: &str,
        local: &crate::model::runner::LocalTarball,
    ) -> Result<(), ProviderError> {
        self.retry(
            self.host(),
            "ensure runner volume",
            Call::Change,
            any,
            || self.inner.ensure_runner_volume(volume, local),
        )
        .await
    }

    async fn remove_network(&self, network: &str, filter: &str) -> Result<(), ProviderError> {
        self.retry(self.host(), "remove network", Call::Change, any, || {
            self.inner.remove_network(network, filter)
        })
        .await
    }

    async fn remove_leftover(&self, leftover: &Leftover) -> Result<(), ProviderError> {
        self.retry(self.host(), "remove leftover", Call::Change, any, || {
            self.inner.remove_leftover(leftover)
        })
        .await
    }
}

#[async_trait]
impl<R: RunnerRegistry + ?Sized> RunnerRegistry for Retrying<R> {
    fn scope(&self) -> String {
        self.inner.scope()
    }

    async fn observe(&self) -> Result<Vec<ObservedRunner>, ProviderError> {
        let scope = self.inner.scope();
        self.retry(&scope, "list runners", Call::Read, any, || {
            self.inner.observe()
        })
        .await
    }

    async fn jit_config(
        &self,
        name: &str,
        labels: &[String],
        runner_group: &str,
    ) -> Result<JitRunner, ProviderError> {
        let scope = self.inner.scope();
        // Only a rate-limit answer says GitHub did not register the runner.
        let not_carried_out = |e: &ProviderError| matches!(e.kind, ErrorKind::RateLimited { .. });
        self.retry(
            &scope,
            "generate jit config",
            Call::Change,
            not_carried_out,
            || self.inner.jit_config(name, labels, runner_group),
        )
        .await
    }

    async fn registration_token(&self) -> Result<Secret<String>, ProviderError> {
        let scope = self.inner.scope();
        self.retry(&scope, "registration token", Call::Change, any, || {
            self.inner.registration_token()
        })
        .await
    }

    fn registration_url(&self) -> String {
        self.inner.registration_url()
    }

    async fn remove(&self, runner_id: u64) -> Result<RemoveOutcome, ProviderError> {
        let scope = self.inner.scope();
        self.retry(&scope, "remove runner", Call::Change, any, || {
            self.inner.remove(runner_id)
        })
        .await
    }

    fn rate_budget(&self) -> Option<RateBudget> {
        self.inner.rate_budget()
    }

    async fn jobs(&self, repositories: &[String]) -> Result<Vec<ObservedJob>, ProviderError> {
        let scope = self.inner.scope();
        self.retry(&scope, "list jobs", Call::Read, any, || {
            self.inner.jobs(repositories)
        })
        .await
    }

    async fn group_access(
        &self,
        groups: &[String],
    ) -> Result<BTreeMap<String, GroupAccess>, ProviderError> {
        let scope = self.inner.scope();
        self.retry(&scope, "read runner group access", Call::Read, any, || {
            self.inner.group_access(groups)
        })
        .await
    }

    fn scale_memory(&self) -> BTreeMap<String, DateTime<Utc>> {
        self.inner.scale_memory()
    }

    fn remember_scale(&self, above_target_since: &BTreeMap<String, DateTime<Utc>>) {
        self.inner.remember_scale(above_target_since)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

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

    /// A registry that answers every call with a rate limit of
    /// `retry-after: 120`, counting the calls.
    struct RateLimited(Arc<AtomicU32>);

    impl RateLimited {
        fn no(&self) -> ProviderError {
            self.0.fetch_add(1, Ordering::SeqCst);
            err(ErrorKind::RateLimited {
                retry_after_secs: 120,
            })
        }
    }

    #[async_trait]
    impl RunnerRegistry for RateLimited {
        fn scope(&self) -> String {
            "orgs/acme".into()
        }
        async fn observe(&self) -> Result<Vec<ObservedRunner>, ProviderError> {
            Err(self.no())
        }
        async fn jit_config(
            &self,
            _: &str,
            _: &[String],
            _: &str,
        ) -> Result<JitRunner, ProviderError> {
            Err(self.no())
        }
        async fn registration_token(&self) -> Result<Secret<String>, ProviderError> {
            Err(self.no())
        }
        fn registration_url(&self) -> String {
            String::new()
        }
        async fn remove(&self, _: u64) -> Result<RemoveOutcome, ProviderError> {
            Err(self.no())
        }
        fn rate_budget(&self) -> Option<RateBudget> {
            None
        }
    }

    /// Issue 17, item 11: a 429 with `retry-after: 120` kept a SIGTERMed
    /// daemon alive for over 200 s. The backoff sleep ends with the stop
    /// signal, and the call fails with the rate limit it had.
    #[tokio::test(start_paused = true)]
    async fn issue_17_item_11_a_retry_after_of_120s_ends_at_the_stop_signal() {
        let calls = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        let reg = Arc::new(
            Retrying::new(RateLimited(calls.clone()), RetryPolicy::GITHUB).stopped_by(stop.clone()),
        );
        let started = tokio::time::Instant::now();
        let call = tokio::spawn({
            let reg = reg.clone();
            async move { reg.remove(7).await }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one attempt, then asleep");
        stop.cancel();
        let e = call.await.unwrap().unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::RateLimited {
                retry_after_secs: 120
            }
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "ended {:?} after the start",
            started.elapsed()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no attempt after the stop");
    }

    /// Issue 17, item 11: once stopped, a call is tried once and not
    /// retried at all.
    #[tokio::test(start_paused = true)]
    async fn issue_17_item_11_after_the_stop_signal_nothing_is_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        stop.cancel();
        let reg = Retrying::new(RateLimited(calls.clone()), RetryPolicy::GITHUB).stopped_by(stop);
        let started = tokio::time::Instant::now();
        reg.registration_token().await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
        // A read is not even sent.
        let e = reg.observe().await.unwrap_err();
        assert!(e.message.contains("stopped"), "{e}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// A registry whose every call never answers (issue 18: a libvirt
    /// call waited over 200 s and SIGTERM was ignored).
    struct Hung;

    #[async_trait]
    impl RunnerRegistry for Hung {
        fn scope(&self) -> String {
            "hung".into()
        }
        async fn observe(&self) -> Result<Vec<ObservedRunner>, ProviderError> {
            std::future::pending().await
        }
        async fn jit_config(
            &self,
            _: &str,
            _: &[String],
            _: &str,
        ) -> Result<JitRunner, ProviderError> {
            std::future::pending().await
        }
        async fn registration_token(&self) -> Result<Secret<String>, ProviderError> {
            std::future::pending().await
        }
        fn registration_url(&self) -> String {
            String::new()
        }
        async fn remove(&self, _: u64) -> Result<RemoveOutcome, ProviderError> {
            std::future::pending().await
        }
        fn rate_budget(&self) -> Option<RateBudget> {
            None
        }
    }

    /// Issue 18: a change that hangs is abandoned `STOP_GRACE` after the
    /// stop signal, not waited for; a read ends at the signal.
    #[tokio::test(start_paused = true)]
    async fn issue_18_a_hung_change_is_abandoned_after_the_stop_grace() {
        let stop = CancellationToken::new();
        let reg = Arc::new(Retrying::new(Hung, RetryPolicy::GITHUB).stopped_by(stop.clone()));
        let change = tokio::spawn({
            let reg = reg.clone();
            async move { reg.remove(7).await }
        });
        let read = tokio::spawn({
            let reg = reg.clone();
            async move { reg.observe().await }
        });
        // Without the signal a change is waited for, however long.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!change.is_finished() && !read.is_finished());
        let stopped = tokio::time::Instant::now();
        stop.cancel();
        let e = read.await.unwrap().unwrap_err();
        assert!(e.message.contains("stopped"), "{e}");
        assert!(stopped.elapsed() < Duration::from_secs(1));
        let e = change.await.unwrap().unwrap_err();
        assert!(e.message.contains("abandoned"), "{e}");
        let took = stopped.elapsed();
        assert!(
            took >= STOP_GRACE && took < STOP_GRACE + Duration::from_secs(1),
            "abandoned {took:?} after the signal"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_jit_mint_is_sent_again_after_the_wait() {
        let calls = Arc::new(AtomicU32::new(0));
        let reg = Retrying::new(RateLimited(calls.clone()), RetryPolicy::GITHUB);
        let started = tokio::time::Instant::now();
        reg.jit_config("x", &[], "default").await.unwrap_err();
        // 120 s each; the fourth would pass the 5-minute bound.
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(started.elapsed() >= Duration::from_secs(240));
    }
}
