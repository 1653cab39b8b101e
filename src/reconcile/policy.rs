//! The error policy: when to look again after a pass, from what the pass
//! planned, did and failed at (in the manner of kube-runtime's
//! `error_policy` returning `Action::requeue`). Failures keep their
//! [`ErrorKind`] up to here, so a rate limit is waited out to its reset, a
//! host that is down is asked again after a while, and a refusal that no
//! retry fixes (a bad spec) does not bring the next pass any sooner.

use std::time::Duration;

use rand::Rng;
use serde::Serialize;

use super::execute::{Outcome, Report};
use super::Snapshot;
use crate::plan::model::{Action, ErrorKind, Plan, WaitReason};

/// How soon a pass that changed something (or failed transiently) is
/// followed by the next: soon enough to see a VM come up.
pub const SOON: Duration = Duration::from_secs(15);

/// How soon a host that could not be observed is asked again.
pub const HOST_DOWN: Duration = Duration::from_secs(60);

/// When the next pass should run, and why then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Requeue {
    #[serde(with = "crate::plan::model::duration_secs", rename = "afterSecs")]
    pub after: Duration,
    pub because: Because,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Because {
    /// All quiet: the regular interval.
    Interval,
    /// Something was changed or failed transiently: look again soon.
    InProgress,
    /// A wait ends then (a boot timeout, a backoff, a grace period).
    Deadline,
    /// A host could not be observed.
    HostDown,
    /// GitHub's rate limit resets then; nothing sooner would be answered.
    RateLimited,
    /// Failures that retrying does not fix (a bad spec, a refusal): the
    /// regular interval, for the file or the world to be fixed.
    Refused,
}

impl Because {
    pub fn describe(self) -> &'static str {
        match self {
            Because::Interval => "the regular interval",
            Because::InProgress => "changes under way",
            Because::Deadline => "a wait ends",
            Because::HostDown => "a host could not be observed",
            Because::RateLimited => "GitHub's rate limit",
            Because::Refused => "failures that retrying does not fix",
        }
    }
}

impl Requeue {
    fn sooner(&mut self, after: Duration, because: Because) {
        if after < self.after {
            *self = Requeue { after, because };
        }
    }
}

/// Decide the requeue of a pass with the regular interval `every`.
pub fn requeue(
    plan: &Plan,
    report: Option<&Report>,
    snapshot: &Snapshot,
    every: Duration,
) -> Requeue {
    let mut next = Requeue {
        after: every,
        because: Because::Interval,
    };
    let mut refused = false;
    let mut rate_reset = Duration::ZERO;
    let mut kinds: Vec<ErrorKind> = Vec::new();

    if let Some(r) = report {
        if r.done() > 0 {
            next.sooner(SOON, Because::InProgress);
        }
        for o in r.failures() {
            if let Outcome::Failed { error } = &o.outcome {
                kinds.push(error.kind);
            }
        }
    }
    for (what, error) in snapshot.failures() {
        kinds.push(error.kind);
        if what.starts_with("host ") && error.kind == ErrorKind::Transient {
            next.sooner(HOST_DOWN, Because::HostDown);
        }
    }
    for kind in kinds {
        match kind {
            ErrorKind::RateLimited { retry_after_secs } => {
                rate_reset = rate_reset.max(Duration::from_secs(retry_after_secs));
            }
            ErrorKind::Transient => {}
            ErrorKind::Refused | ErrorKind::NotFound => refused = true,
        }
    }
    if report.is_some_and(|r| r.failures().any(|o| o.outcome.is_retryable())) {
        next.sooner(SOON, Because::InProgress);
    }

    for (_, reason) in plan.waits() {
        let until = match reason {
            WaitReason::Booting { deadline } => Some(*deadline),
            WaitReason::Backoff { until, .. } | WaitReason::Grace { until } => Some(*until),
            WaitReason::RunnerOffline {
                deadline: Some(deadline),
            } => Some(*deadline),
            _ => None,
        };
        if let Some(until) = until {
            let d = (until - snapshot.taken_at)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_secs(1));
            next.sooner(d, Because::Deadline);
            // Booting VMs are looked at at least every SOON to see them come up.
            if matches!(reason, WaitReason::Booting { .. }) {
                next.sooner(SOON, Because::Deadline);
            }
        }
    }
    if refused && next.because == Because::Interval {
        next.because = Because::Refused;
    }
    // GitHub answers nothing before its reset: not even a pass that would
    // only look. A libvirt-only change can wait that long too.
    if rate_reset > next.after {
        next = Requeue {
            after: rate_reset,
            because: Because::RateLimited,
        };
    }
    next
}

/// The interval with ±10 % jitter, so that many fleets on one GitHub
/// account don't all poll at the same second.
pub fn jittered(every: Duration) -> Duration {
    let ms = every.as_millis() as f64;
    let j = rand::rng().random_range(-0.1..=0.1);
    Duration::from_millis((ms * (1.0 + j)).max(1.0) as u64)
}

/// Whether a wait ends without anyone but hangar acting: a boot, a
/// backoff, a grace period, an offline deadline, a host or GitHub coming
/// back. The others (a runner's job, a name another owner holds, a runner
/// online without a VM anywhere) wait on someone else.
pub fn ends_by_itself(reason: &WaitReason) -> bool {
    match reason {
        WaitReason::Booting { .. }
        | WaitReason::Backoff { .. }
        | WaitReason::Grace { .. }
        | WaitReason::ObservationFailed { .. }
        | WaitReason::RunnerOffline { deadline: Some(_) } => true,
        // GitHub or the download answering again; a release that does not
        // exist needs the file changed.
        WaitReason::RunnerUnavailable { error } => error.is_retryable(),
        WaitReason::Busy { .. }
        | WaitReason::Draining { .. }
        | WaitReason::NameTaken { .. }
        | WaitReason::DomainNameTaken { .. }
        | WaitReason::OrphanOnline { .. }
        // Another pool's runners must end their jobs first.
        | WaitReason::NoCapacity { .. }
        // Something else on the host must end first.
        | WaitReason::NoRoomOnHost { .. }
        | WaitReason::RunnerOffline { deadline: None } => false,
    }
}

/// Whether the plan holds only actions of `kind` waits; used to stop an
/// `apply` that can only wait on someone else.
pub(crate) fn only_waits_on_others(plan: &Plan) -> bool {
    !plan.in_sync()
        && plan.actions.iter().all(|a| match a {
            Action::Wait { reason, .. } => !ends_by_itself(reason),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::plan::model::{Failure, Observation, Observed};
    use crate::reconcile::execute::ActionOutcome;

    fn snapshot(runners: Observation<Vec<crate::plan::model::ObservedRunner>>) -> Snapshot {
        Snapshot {
            observed: Observed {
                hosts: Default::default(),
                runners,
                foreign_names: Default::default(),
                host_state: Default::default(),
            },
            facts: Default::default(),
            taken_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        }
    }

    fn seen() -> Snapshot {
        snapshot(Observation::Seen { items: vec![] })
    }

    fn empty() -> Plan {
        Plan {
            fleet: "f".into(),
            actions: vec![],
        }
    }

    fn failed(kind: ErrorKind) -> Report {
        Report {
            outcomes: vec![ActionOutcome {
                action: Action::Wait {
                    subject: "f-p-0".into(),
                    reason: WaitReason::Busy { then: "x".into() },
                },
                outcome: Outcome::Failed {
                    error: Failure::new(kind, "x"),
                },
                millis: 0,
            }],
        }
    }

    const EVERY: Duration = Duration::from_secs(120);

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let d = jittered(EVERY);
            assert!(d >= Duration::from_secs(108) && d <= Duration::from_secs(132));
        }
    }

    #[test]
    fn quiet_passes_wait_the_interval() {
        let r = requeue(&empty(), None, &seen(), EVERY);
        assert_eq!((r.after, r.because), (EVERY, Because::Interval));
    }

    #[test]
    fn a_rate_limit_is_waited_out_to_its_reset_even_past_the_interval() {
        let snap = snapshot(Observation::Failed {
            error: Failure::new(
                ErrorKind::RateLimited {
                    retry_after_secs: 900,
                },
                "github: rate limited",
            ),
        });
        let r = requeue(&empty(), None, &snap, EVERY);
        assert_eq!(
            (r.after, r.because),
            (Duration::from_secs(900), Because::RateLimited)
        );
        // An action that hit the limit: the same.
        let rep = failed(ErrorKind::RateLimited {
            retry_after_secs: 300,
        });
        let r = requeue(&empty(), Some(&rep), &seen(), EVERY);
        assert_eq!(
            (r.after, r.because),
            (Duration::from_secs(300), Because::RateLimited)
        );
    }

    #[test]
    fn transient_failures_come_back_soon_refusals_at_the_interval() {
        let rep = failed(ErrorKind::Transient);
        let r = requeue(&empty(), Some(&rep), &seen(), EVERY);
        assert_eq!((r.after, r.because), (SOON, Because::InProgress));
        let rep = failed(ErrorKind::Refused);
        let r = requeue(&empty(), Some(&rep), &seen(), EVERY);
        assert_eq!((r.after, r.because), (EVERY, Because::Refused));
    }

    #[test]
    fn a_host_down_is_asked_again_after_a_minute() {
        let mut snap = seen();
        snap.observed.hosts.insert(
            "h1".into(),
            Observation::Failed {
                error: Failure::new(ErrorKind::Transient, "h1: connection refused"),
            },
        );
        let r = requeue(&empty(), None, &snap, EVERY);
        assert_eq!((r.after, r.because), (HOST_DOWN, Because::HostDown));
        // Never later than the interval.
        let r = requeue(&empty(), None, &snap, Duration::from_secs(10));
        assert_eq!(r.after, Duration::from_secs(10));
    }

    #[test]
    fn a_booting_vm_is_looked_at_soon_a_backoff_at_its_end() {
        let snap = seen();
        let at = |mins| snap.taken_at + chrono::TimeDelta::minutes(mins);
        let plan = Plan {
            fleet: "f".into(),
            actions: vec![Action::Wait {
                subject: "f-p-0".into(),
                reason: WaitReason::Booting { deadline: at(10) },
            }],
        };
        assert_eq!(requeue(&plan, None, &snap, EVERY).after, SOON);
        let plan = Plan {
            fleet: "f".into(),
            actions: vec![Action::Wait {
                subject: "f-p-0".into(),
                reason: WaitReason::Backoff {
                    until: at(1),
                    failures: 2,
                },
            }],
        };
        let r = requeue(&plan, None, &snap, EVERY);
        assert_eq!(
            (r.after, r.because),
            (Duration::from_secs(60), Because::Deadline)
        );
    }
}
