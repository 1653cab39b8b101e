//! `apply`'s view of slots booting: one line per stage change, a line of
//! what is still awaited when nothing changed for a while, and on a terminal
//! a live summary on the progress bar. Only printing; the stages come from
//! the engine's [`Event::Progress`](crate::reconcile::Event::Progress).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::plan::render;
use crate::reconcile::progress::{SlotProgress, SlotStage};

/// How long `apply` may stay silent off a terminal before it says what it
/// still waits for.
pub const QUIET_AT_MOST: Duration = Duration::from_secs(30);

/// What was last shown of each slot.
#[derive(Default)]
pub struct Stages {
    seen: BTreeMap<String, (SlotStage, Instant)>,
}

/// What one observation gives to print.
pub struct Update {
    /// One line per slot whose stage changed.
    pub lines: Vec<String>,
    /// The slots not up yet, with how long each has been at its stage.
    pub waiting: Vec<String>,
    pub up: usize,
    pub total: usize,
}

impl Stages {
    pub fn update(&mut self, slots: &[SlotProgress], now: Instant) -> Update {
        let mut lines = Vec::new();
        let mut waiting = Vec::new();
        for s in slots {
            let first = !self.seen.contains_key(&s.slot);
            let entry = self.seen.entry(s.slot.clone()).or_insert((s.stage, now));
            let changed = entry.0 != s.stage;
            if changed {
                *entry = (s.stage, now);
            }
            // At first sight only what is on its way is news: not a slot
            // without a VM yet, nor one already up.
            let news = changed || (first && !s.stage.is_up() && s.stage != SlotStage::Absent);
            if news {
                lines.push(format!(
                    "  stage    {} on {}: {}",
                    s.slot,
                    s.host,
                    s.stage.describe()
                ));
            }
            if !s.stage.is_up() {
                waiting.push(format!(
                    "{} ({} for {})",
                    s.slot,
                    s.stage.describe(),
                    render::duration(Duration::from_secs(now.duration_since(entry.1).as_secs()))
                ));
            }
        }
        Update {
            lines,
            up: slots.len() - waiting.len(),
            total: slots.len(),
            waiting,
        }
    }
}

impl Update {
    /// The bar's message on a terminal.
    pub fn summary(&self) -> String {
        match self.waiting.first() {
            None => format!("{}/{} runners up", self.up, self.total),
            Some(w) => format!(
                "{}/{} runners up; waiting for {w}{}",
                self.up,
                self.total,
                match self.waiting.len() {
                    1 => String::new(),
                    n => format!(" and {} more", n - 1),
                }
            ),
        }
    }

    /// The line said when nothing was said for [`QUIET_AT_MOST`].
    pub fn still_waiting(&self) -> Option<String> {
        (!self.waiting.is_empty()).then(|| {
            format!(
                "  waiting  {} of {} runners not up yet: {}",
                self.waiting.len(),
                self.total,
                self.waiting.join(", ")
            )
        })
    }
}
