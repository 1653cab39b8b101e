//! Prometheus metrics, fed from the engine's [`Event`] stream alone: slots
//! by pool and stage, runners online and busy, cache use per slot and host
//! capacity used (the host's view, from [`Event::Measured`]), the GitHub
//! rate-limit budget, pass durations, actions by kind and outcome, and the
//! time of the last successful pass. [`Metrics::encode`] gives the
//! OpenMetrics text exposition; `crate::metrics` serves it.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::event::{Event, Events};
use super::execute::Outcome;
use super::progress::SlotStage;
use crate::plan::render;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    pool: String,
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabels {
    pool: String,
    slot: String,
    host: String,
}

/// A slot's file system inside its guest: `root` or `cache`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FsLabels {
    pool: String,
    slot: String,
    host: String,
    fs: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    kind: String,
    outcome: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The daemon's metrics; an [`Events`] sink.
pub struct Metrics {
    registry: Registry,
    slots: Family<StageLabels, Gauge>,
    runners: Family<StateLabels, Gauge>,
    cache_used: Family<SlotLabels, Gauge>,
    cache_size: Family<SlotLabels, Gauge>,
    guest_fs_used: Family<FsLabels, Gauge>,
    guest_fs_size: Family<FsLabels, Gauge>,
    host_cpus: Family<HostLabels, Gauge>,
    host_cpus_used: Family<HostLabels, Gauge>,
    host_memory: Family<HostLabels, Gauge>,
    host_memory_used: Family<HostLabels, Gauge>,
    host_foreign_memory: Family<HostLabels, Gauge>,
    host_foreign_vcpus: Family<HostLabels, Gauge>,
    rate_limit: Gauge,
    rate_remaining: Gauge,
    passes: Counter,
    pass_duration: FloatGauge,
    last_success: FloatGauge,
    actions: Family<ActionLabels, Counter>,
    observation_failures: Counter,
    /// When the current pass started, and whether part of the world could
    /// not be observed in it.
    pass: Mutex<(Option<Instant>, bool)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hangar");
        let m = Metrics {
            slots: Family::default(),
            runners: Family::default(),
            cache_used: Family::default(),
            cache_size: Family::default(),
            guest_fs_used: Family::default(),
            guest_fs_size: Family::default(),
            host_cpus: Family::default(),
            host_cpus_used: Family::default(),
            host_memory: Family::default(),
            host_memory_used: Family::default(),
            host_foreign_memory: Family::default(),
            host_foreign_vcpus: Family::default(),
            rate_limit: Gauge::default(),
            rate_remaining: Gauge::default(),
            passes: Counter::default(),
            pass_duration: FloatGauge::default(),
            last_success: FloatGauge::default(),
            actions: Family::default(),
            observation_failures: Counter::default(),
            pass: Mutex::new((None, false)),
            registry: Registry::default(),
        };
        registry.register(
            "slots",
            "Slots of the file by pool and stage, as the last pass saw them",
            m.slots.clone(),
        );
        registry.register(
            "runners",
            "The fleet's runners that are online, and of those the busy ones",
            m.runners.clone(),
        );
        registry.register_with_unit(
            "cache_used",
            "Bytes allocated in a slot's cache volume (the host's view)",
            Unit::Bytes,
            m.cache_used.clone(),
        );
        registry.register_with_unit(
            "cache_size",
            "Capacity of a slot's cache volume",
            Unit::Bytes,
            m.cache_size.clone(),
        );
        registry.register_with_unit(
            "guest_fs_used",
            "Bytes used in a VM's root or cache file system, as its guest agent reports",
            Unit::Bytes,
            m.guest_fs_used.clone(),
        );
        registry.register_with_unit(
            "guest_fs_size",
            "Size of a VM's root or cache file system, as its guest agent reports",
            Unit::Bytes,
            m.guest_fs_size.clone(),
        );
        registry.register("host_cpus", "A host's cpus", m.host_cpus.clone());
        registry.register(
            "host_cpus_used",
            "vCPUs of the fleet's VMs on a host",
            m.host_cpus_used.clone(),
        );
        registry.register_with_unit(
            "host_memory",
            "A host's memory",
            Unit::Bytes,
            m.host_memory.clone(),
        );
        registry.register_with_unit(
            "host_memory_used",
            "Memory of the fleet's VMs on a host",
            Unit::Bytes,
            m.host_memory_used.clone(),
        );
        registry.register_with_unit(
            "host_foreign_memory",
            "Memory of running domains on a host that are not the fleet's",
            Unit::Bytes,
            m.host_foreign_memory.clone(),
        );
        registry.register(
            "host_foreign_vcpus",
            "vCPUs of running domains on a host that are not the fleet's",
            m.host_foreign_vcpus.clone(),
        );
        registry.register(
            "github_rate_limit",
            "GitHub's request budget per window, as last reported",
            m.rate_limit.clone(),
        );
        registry.register(
            "github_rate_limit_remaining",
            "GitHub requests left in the current window, as last reported",
            m.rate_remaining.clone(),
        );
        registry.register("passes", "Passes run", m.passes.clone());
        registry.register_with_unit(
            "pass_duration",
            "How long the last pass took",
            Unit::Seconds,
            m.pass_duration.clone(),
        );
        registry.register_with_unit(
            "last_successful_pass_timestamp",
            "When the last pass that observed everything and failed at nothing ended (Unix time)",
            Unit::Seconds,
            m.last_success.clone(),
        );
        registry.register(
            "actions",
            "Actions executed, by kind and outcome",
            m.actions.clone(),
        );
        registry.register(
            "observation_failures",
            "Parts of the world (a host, GitHub) a pass could not observe",
            m.observation_failures.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The Prometheus text format (0.0.4), for scrapers that do not ask
    /// for OpenMetrics (and `promtool check metrics`): a counter's HELP and
    /// TYPE name its `_total` series, and there is no UNIT or EOF line.
    pub fn encode_text(&self) -> String {
        let open = self.encode();
        let counters: std::collections::BTreeSet<&str> = open
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let meta = ["# HELP ", "# TYPE "]
                .into_iter()
                .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
            match meta.and_then(|(p, rest)| rest.split_once(' ').map(|(n, t)| (p, n, t))) {
                Some((p, name, tail)) if counters.contains(name) => {
                    out.push_str(&format!("{p}{name}_total {tail}\n"));
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    fn measured(&self, status: &super::status::StatusView) {
        self.cache_used.clear();
        self.cache_size.clear();
        self.guest_fs_used.clear();
        self.guest_fs_size.clear();
        for s in status.slots.iter().filter(|s| s.desired) {
            let l = SlotLabels {
                pool: s.pool.clone(),
                slot: s.slot.clone(),
                host: s.host.clone(),
            };
            if let (Some(used), Some(size)) = (s.cache_used_bytes, s.cache_size_bytes) {
                self.cache_used.get_or_create(&l).set(gauge(used));
                self.cache_size.get_or_create(&l).set(gauge(size));
            }
            let disks = s.guest_disks.as_ref();
            for (fs, one) in [
                ("root", disks.and_then(|d| d.root.as_ref())),
                ("cache", disks.and_then(|d| d.cache.as_ref())),
            ] {
                if let Some(one) = one {
                    let l = FsLabels {
                        pool: s.pool.clone(),
                        slot: s.slot.clone(),
                        host: s.host.clone(),
                        fs: fs.to_string(),
                    };
                    self.guest_fs_used
                        .get_or_create(&l)
                        .set(gauge(one.used_bytes));
                    self.guest_fs_size
                        .get_or_create(&l)
                        .set(gauge(one.total_bytes));
                }
            }
        }
        for h in &status.hosts {
            let l = HostLabels {
                host: h.host.clone(),
            };
            if let Some(f) = &h.facts {
                self.host_cpus.get_or_create(&l).set(i64::from(f.cpus));
                self.host_memory
                    .get_or_create(&l)
                    .set(gauge(f.memory_bytes));
                self.host_foreign_memory
                    .get_or_create(&l)
                    .set(gauge(f.foreign.memory_bytes));
                self.host_foreign_vcpus
                    .get_or_create(&l)
                    .set(gauge(f.foreign.vcpus));
            }
            self.host_cpus_used
                .get_or_create(&l)
                .set(i64::from(h.cpus_used));
            self.host_memory_used
                .get_or_create(&l)
                .set(gauge(h.memory_used_bytes));
        }
        if let Some(b) = &status.rate_limit {
            self.rate_limit.set(gauge(b.limit));
            self.rate_remaining.set(gauge(b.remaining));
        }
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Events for Metrics {
    fn emit(&self, event: Event) {
        match &event {
            Event::PassStarted { .. } => {
                if let Ok(mut p) = self.pass.lock() {
                    *p = (Some(Instant::now()), false);
                }
            }
            Event::ObservationFailed { .. } => {
                self.observation_failures.inc();
                if let Ok(mut p) = self.pass.lock() {
                    p.1 = true;
                }
            }
            Event::Progress { slots } => {
                self.slots.clear();
                let pools: std::collections::BTreeSet<&str> =
                    slots.iter().map(|s| s.pool.as_str()).collect();
                // Every stage of every pool gets a series, 0 when empty, so
                // that an alert on `hangar_slots{stage="failed"} > 0` sees
                // the series go back to 0.
                for pool in pools {
                    for stage in SlotStage::ALL {
                        let n = slots
                            .iter()
                            .filter(|s| s.pool == pool && s.stage == stage)
                            .count();
                        self.slots
                            .get_or_create(&StageLabels {
                                pool: pool.to_string(),
                                stage: stage.label().to_string(),
                            })
                            .set(n as i64);
                    }
                }
                let online = slots.iter().filter(|s| s.stage.is_up()).count();
                let busy = slots.iter().filter(|s| s.stage == SlotStage::Busy).count();
                for (state, n) in [("online", online), ("busy", busy)] {
                    self.runners
                        .get_or_create(&StateLabels {
                            state: state.to_string(),
                        })
                        .set(n as i64);
                }
            }
            Event::ActionFinished { outcome } => {
                let result = match outcome.outcome {
                    Outcome::Done => "done",
                    Outcome::Skipped { .. } => "skipped",
                    Outcome::Failed { .. } => "failed",
                };
                self.actions
                    .get_or_create(&ActionLabels {
                        kind: render::verb(&outcome.action).to_string(),
                        outcome: result.to_string(),
                    })
                    .inc();
            }
            Event::Measured { status } => self.measured(status),
            Event::PassFinished { failed, .. } => {
                self.passes.inc();
                let (started, unobserved) = self.pass.lock().map(|p| *p).unwrap_or((None, true));
                if let Some(t) = started {
                    self.pass_duration.set(t.elapsed().as_secs_f64());
                }
                if *failed == 0 && !unobserved {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    self.last_success.set(now);
                }
            }
            _ => {}
        }
    }
}
