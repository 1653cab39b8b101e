//! What the engine's loops report while they run: one stream of [`Event`]s.
//! The CLI renders it (a progress bar on a terminal, plain lines otherwise,
//! JSON lines with `-o json`); tests collect it.

use std::sync::Mutex;

use serde::Serialize;

use super::execute::ActionOutcome;
use super::policy::Requeue;
use crate::plan::model::{Action, Failure, Plan};

/// One thing that happened.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// A pass begins (counted from 1 in this run).
    PassStarted {
        pass: u64,
    },
    /// Part of the world could not be observed; nothing destructive is
    /// planned there.
    ObservationFailed {
        what: String,
        error: Failure,
    },
    /// A pool's runner release is one GitHub stops (or stopped) sending
    /// jobs to: a newer release is out and the 30-day window runs.
    RunnerVersionWarning {
        pool: String,
        message: String,
    },
    /// The plan of a pass, before any of it is executed.
    Planned {
        plan: Plan,
    },
    ActionStarted {
        action: Action,
    },
    ActionFinished {
        #[serde(flatten)]
        outcome: ActionOutcome,
    },
    /// What the sandbox's stand-in guests did.
    GuestPlayed {
        line: String,
    },
    /// A pass ended.
    PassFinished {
        pass: u64,
        planned: usize,
        done: usize,
        failed: usize,
        waiting: usize,
        next: Requeue,
    },
    /// The daemon found the fleet file changed and uses the new version.
    FileChanged {
        file: String,
    },
    /// The daemon found the fleet file changed but cannot use it; the last
    /// good version stays in use.
    FileRejected {
        file: String,
        error: String,
    },
    /// Another run holds the fleet's lock; the daemon waits for it.
    WaitingForLock {
        fleet: String,
        holder: Option<u32>,
    },
    /// The stop signal came: actions under way finish, nothing new starts.
    Stopping,
}

/// Where events go.
pub trait Events: Send + Sync {
    fn emit(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> Events for F {
    fn emit(&self, event: Event) {
        self(event)
    }
}

/// Events nobody looks at.
pub struct Ignore;

impl Events for Ignore {
    fn emit(&self, _: Event) {}
}

/// Events kept in order, for tests and for reports built afterwards.
#[derive(Default)]
pub struct Recorded(Mutex<Vec<Event>>);

impl Recorded {
    /// Everything emitted since the last call.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Events for Recorded {
    fn emit(&self, event: Event) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}
