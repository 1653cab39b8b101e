//! `reconcile --every`: the periodic loop. Each pass re-reads the fleet
//! file (keeping the last good version when an edit is bad), waits for the
//! fleet's lock (an `apply` may hold it), passes, and sleeps a jittered
//! interval, or less when the error policy says so, until the stop signal.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::converge::finished;
use super::engine::Engine;
use super::event::{Event, Events};
use super::lock::{DaemonRecord, FleetLock, LockError};
use super::policy::{self, Because};
use super::status::status_of;
use super::webhook::Listening;
use super::Error;
use crate::fleet::{FleetError, LoadedFleet};

/// Where the daemon reads the fleet file from, each pass.
pub trait FleetSource: Send + Sync {
    /// The file's name, for messages.
    fn describe(&self) -> String;
    fn load(&self) -> Result<LoadedFleet, FleetError>;
    /// What identifies the current version of the credential files a
    /// version of the file names (`tokenFile`, an app's key): a rotated
    /// token is picked up at the next pass although the fleet file stayed
    /// the same. Sources without such files give the same value each time.
    fn credentials_version(&self, _fleet: &LoadedFleet) -> String {
        String::new()
    }
}

/// Builds an engine for a version of the fleet file (the composition
/// root, or a test's rig).
#[async_trait]
pub trait Assembler: Send + Sync {
    async fn engine(
        &self,
        fleet: &LoadedFleet,
    ) -> Result<Engine, Box<dyn std::error::Error + Send + Sync>>;
}

#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// The regular interval between passes (jittered by ±10 %).
    pub every: Duration,
    /// Stop after this many passes (tests and soak runs).
    pub max_passes: Option<u64>,
    /// The state directory: the fleet's lock and the daemon's record.
    pub state_dir: PathBuf,
    /// How often a held lock is tried again.
    pub lock_poll: Duration,
    /// After each pass, also measure (cache use, host capacity, GitHub
    /// budget) and report it ([`Event::Measured`]): for the metrics.
    pub measure: bool,
}

/// A daemon that stopped as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    pub passes: u64,
}

/// Run passes until the stop signal (or `max_passes`). `fleet` and `engine`
/// are the first version of the file and its engine; a later version that
/// loads and assembles replaces them, one that does not is reported and the
/// last good one stays in use.
pub async fn daemon(
    mut fleet: LoadedFleet,
    mut engine: Engine,
    source: &dyn FleetSource,
    assembler: &dyn Assembler,
    settings: &DaemonSettings,
    stop: &CancellationToken,
    events: &dyn Events,
) -> Result<Stopped, Error> {
    let name = fleet.name().to_string();
    let _record = match DaemonRecord::claim(&settings.state_dir, &name)? {
        Ok(r) => r,
        Err(pid) => {
            engine.shutdown().await;
            return Err(Error::DaemonRunning { fleet: name, pid });
        }
    };
    let every = settings.every;
    // Webhooks wake the loop early; the listener follows the version of
    // the file in use, and the secret as it reads at each pass.
    let mut hooks = Listening::new();
    let wake = hooks.wake();
    let mut passes = 0u64;
    let mut credentials = source.credentials_version(&fleet);
    let result = loop {
        match source.load() {
            Ok(f) => {
                let now = source.credentials_version(&f);
                let file = if f.fleet != fleet.fleet {
                    Some(source.describe())
                } else if now != credentials {
                    Some(format!("{}'s credentials file", source.describe()))
                } else {
                    None
                };
                if let Some(file) = file {
                    match assembler.engine(&f).await {
                        Ok(e) => {
                            events.emit(Event::FileChanged { file });
                            std::mem::replace(&mut engine, e).shutdown().await;
                            fleet = f;
                            credentials = now;
                        }
                        Err(e) => events.emit(Event::FileRejected {
                            file,
                            error: e.to_string(),
                        }),
                    }
                }
            }
            Err(e) => events.emit(Event::FileRejected {
                file: source.describe(),
                error: e.to_string(),
            }),
        }
        hooks.follow(fleet.fleet.spec.github.webhook.as_ref()).await;
        let lock = tokio::select! {
            l = wait_for_lock(settings, fleet.name(), events) => l,
            _ = stop.cancelled() => break Ok(()),
        };
        let lock = match lock {
            Ok(l) => l,
            Err(e) => break Err(Error::Lock(e)),
        };
        passes += 1;
        events.emit(Event::PassStarted { pass: passes });
        let next = match engine.pass(&fleet, false, stop, events, every).await {
            Ok(r) => {
                if settings.measure {
                    let status =
                        status_of(&engine, fleet.name(), Some(&r.desired), &r.snapshot).await;
                    events.emit(Event::Measured {
                        status: Box::new(status),
                    });
                }
                finished(events, passes, &r);
                r.requeue
            }
            // The file resolves no more against the hosts (an overcommit
            // after a host shrank): nothing was changed; look again at the
            // regular interval.
            Err(e) => {
                events.emit(Event::FileRejected {
                    file: source.describe(),
                    error: e.to_string(),
                });
                policy::Requeue {
                    after: every,
                    because: Because::Refused,
                }
            }
        };
        drop(lock);
        if stop.is_cancelled() || settings.max_passes.is_some_and(|m| passes >= m) {
            break Ok(());
        }
        let nap = match next.because {
            Because::Interval | Because::Refused => policy::jittered(every),
            _ => next.after,
        };
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = wake.notified() => tracing::debug!(target: "hangar::webhook", "woken by a webhook"),
            _ = stop.cancelled() => break Ok(()),
        }
    };
    hooks.stop().await;
    if stop.is_cancelled() {
        events.emit(Event::Stopping);
    }
    engine.shutdown().await;
    result.map(|()| Stopped { passes })
}

/// Take the fleet's lock, waiting (and saying so once) while another run
/// holds it.
async fn wait_for_lock(
    settings: &DaemonSettings,
    fleet: &str,
    events: &dyn Events,
) -> Result<FleetLock, LockError> {
    let mut told = false;
    loop {
        match FleetLock::try_acquire(&settings.state_dir, fleet) {
            Err(LockError::Held { holder, .. }) => {
                if !told {
                    events.emit(Event::WaitingForLock {
                        fleet: fleet.to_string(),
                        holder,
                    });
                    told = true;
                }
                tokio::time::sleep(settings.lock_poll).await;
            }
            other => return other,
        }
    }
}
