//! P6 (issue 15): pools that scale with the queue. What autoscaling costs
//! in GitHub's rate limit while the queue is idle and during a burst, and
//! how long a queued job waits for a runner when a guest takes a while to
//! boot, polling and with webhooks. The sandbox's stand-in guests act at
//! once; here they act only once their VM has run for the boot time, on
//! their own clock as a real guest does, not at the engine's passes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hangar::fleet::LoadedFleet;
use hangar::plan::model::Desired;
use hangar::providers::{Hypervisor, RunnerRegistry};
use hangar::reconcile::engine::{Engine, GuestPlay};
use hangar::reconcile::webhook::Webhooks;
use hangar::reconcile::SystemClock;
use hangar::secret::Secret;
use hangar::sim::{EnqueueJob, JobStatus, SimStats, SimWebhook};
use tokio_util::sync::CancellationToken;

use super::{ms, wiring, Options, Report};

const FLEET: &str = "scale";
const OWNER: &str = "bench-org";
const REPO: &str = "queue";
const TOKEN: &str = "bench-token";
const LABEL: &str = "burst";
const HOOK_SECRET: &str = "bench-hook";

/// A fleet on one sandbox host with one scaled pool of up to `max`
/// runners, persistent, 1 vCPU and 1 GiB each.
fn fleet_yaml(max: u32) -> String {
    format!(
        "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: {FLEET}\nspec:\n  github:\n    \
         repository: {OWNER}/{REPO}\n    simulator: true\n  policy:\n    bootTimeout: 5m\n  \
         hosts:\n    - name: h1\n      uri: sandbox\n      maxMemory: 100%\n      \
         cpuOvercommit: 2.0\n  pools:\n    - name: {LABEL}\n      \
         scale: {{min: 0, max: {max}, idle: 0, cooldown: 10m}}\n      labels: [{LABEL}]\n      \
         vm:\n        cpus: 1\n        memory: 1GiB\n        disk: 4GiB\n        \
         image: base.qcow2\n"
    )
}

/// The engine of a scaled fleet on a sandbox host and the simulator, its
/// guests played by the caller.
struct ScaleRig {
    sandbox: wiring::Sandbox,
    engine: Engine,
    guests: Arc<dyn GuestPlay>,
    /// What the last pass wanted, for the guests.
    desired: Mutex<Option<Desired>>,
    stop: CancellationToken,
}

impl ScaleRig {
    async fn new(max: u32) -> ScaleRig {
        let yaml = fleet_yaml(max);
        let sandbox = wiring::sandbox(&yaml, TOKEN, |_| {}).await;
        let registry = wiring::registry(
            &sandbox.sim,
            OWNER,
            REPO,
            TOKEN,
            Some(Duration::from_secs(30)),
        )
        .with_pools(&sandbox.fleet.fleet);
        let hosts: BTreeMap<String, Arc<dyn Hypervisor>> = sandbox
            .hosts
            .iter()
            .map(|(n, h)| (n.clone(), h.clone() as Arc<dyn Hypervisor>))
            .collect();
        let registry: Arc<dyn RunnerRegistry> = Arc::new(registry);
        let engine = wiring::engine(&sandbox.fleet, hosts, registry, Arc::new(SystemClock), None);
        let guests = wiring::sandbox_guests(&sandbox.sim, &scope(), &sandbox.hosts);
        ScaleRig {
            sandbox,
            engine,
            guests,
            desired: Mutex::new(None),
            stop: CancellationToken::new(),
        }
    }

    fn fleet(&self) -> &LoadedFleet {
        &self.sandbox.fleet
    }

    async fn pass(&self, every: Duration) -> Desired {
        let desired = wiring::pass(&self.engine, self.fleet(), false, &self.stop, every)
            .await
            .desired;
        *self.desired.lock().expect("desired") = Some(desired.clone());
        desired
    }

    fn enqueue(&self) -> u64 {
        self.sandbox
            .sim
            .enqueue_job(&EnqueueJob::new(&format!("{OWNER}/{REPO}"), &[LABEL]))
            .expect("enqueue a job")
            .id
    }

    fn assigned(&self, id: u64) -> bool {
        self.sandbox
            .sim
            .jobs()
            .iter()
            .any(|j| j.id == id && j.status == JobStatus::InProgress)
    }

    async fn shutdown(self) {
        self.stop.cancel();
        let sim = Arc::try_unwrap(self.sandbox.sim).ok();
        if let Some(sim) = sim {
            let _ = sim.shutdown().await;
        }
    }
}

fn scope() -> String {
    format!("repos/{OWNER}/{REPO}")
}

/// Requests, 304s and charged requests of `stats`.
fn tally(stats: &SimStats) -> (u64, u64, u64) {
    (stats.total, stats.not_modified, stats.rate_limited_cost)
}

/// Charged requests per hour at `per_pass` charged a pass, a pass each
/// `every`.
fn per_hour(per_pass: f64, every: Duration) -> f64 {
    per_pass * 3600.0 / every.as_secs_f64()
}

pub(crate) async fn p6_scale(rep: &mut Report, opt: &Options) {
    // The daemon's default interval, for the hourly figures.
    let every = Duration::from_secs(30);
    let idle_passes = if opt.quick { 5 } else { 60 };
    let burst = 20u32;

    // (a) Idle: nothing queued, nothing running.
    let rig = ScaleRig::new(burst).await;
    rig.pass(every).await;
    rig.sandbox.sim.reset_stats();
    for _ in 0..idle_passes {
        rig.pass(every).await;
    }
    let (total, not_modified, charged) = tally(&rig.sandbox.sim.stats());
    let idle_hour = per_hour(charged as f64 / idle_passes as f64, every);
    rep.row(
        "P6",
        format!(
            "idle queue: charged requests / hour (pass every {} s)",
            every.as_secs()
        ),
        idle_hour,
        "req/h",
        "0 (all 304)",
        Some(charged == 0),
    );
    rep.notes.push(format!(
        "P6 idle: {idle_passes} passes, {total} requests, {not_modified} of them 304, \
         {charged} charged"
    ));

    // (b) A burst of 20 queued jobs, guests at once, until all are assigned.
    rig.sandbox.sim.reset_stats();
    let jobs: Vec<u64> = (0..burst).map(|_| rig.enqueue()).collect();
    let mut passes = 0u32;
    while !jobs.iter().all(|id| rig.assigned(*id)) {
        assert!(
            passes < 20,
            "a burst of {burst} jobs not assigned in 20 passes"
        );
        let desired = rig.pass(every).await;
        rig.guests
            .play(&rig.engine.world, &desired, rig.engine.clock.as_ref())
            .await;
        passes += 1;
    }
    let (total, not_modified, charged) = tally(&rig.sandbox.sim.stats());
    rep.row(
        "P6",
        format!("burst of {burst} jobs: charged requests until all assigned"),
        charged as f64,
        "req",
        "informational",
        None,
    );
    let burst_hour = per_hour(charged as f64 / passes as f64, every);
    rep.row(
        "P6",
        format!("burst of {burst} jobs: charged requests / hour while it lasts"),
        burst_hour,
        "req/h",
        "≤ 5,000 (the token's budget)",
        Some(burst_hour <= super::BUDGET_PER_HOUR),
    );
    rep.notes.push(format!(
        "P6 burst: {passes} passes, {total} requests, {not_modified} of them 304, \
         {charged} charged"
    ));
    rig.shutdown().await;

    // (c) Queued to assigned with a boot time, polling and with webhooks.
    let (boot, interval) = if opt.quick {
        (Duration::from_millis(500), Duration::from_secs(2))
    } else {
        (Duration::from_secs(5), Duration::from_secs(15))
    };
    let polled = queued_to_assigned(boot, interval, false).await;
    let over = polled.saturating_sub(boot);
    rep.row(
        "P6",
        format!(
            "polling every {} s, boot {} ms: queued to assigned / ideal (boot)",
            interval.as_secs(),
            boot.as_millis()
        ),
        polled.as_secs_f64() / boot.as_secs_f64(),
        "x",
        format!("over ideal ≤ one interval ({} s)", interval.as_secs()),
        Some(over <= interval),
    );
    let hooked = queued_to_assigned(boot, Duration::from_secs(3600), true).await;
    let over = hooked.saturating_sub(boot);
    rep.row(
        "P6",
        format!(
            "webhook (poll 1 h), boot {} ms: queued to assigned / ideal (boot)",
            boot.as_millis()
        ),
        hooked.as_secs_f64() / boot.as_secs_f64(),
        "x",
        "over ideal ≤ 1 s",
        Some(over <= Duration::from_secs(1)),
    );
    rep.notes.push(format!(
        "P6 latency: boot {:.0} ms; polling every {} s {:.0} ms, webhook {:.0} ms",
        ms(boot),
        interval.as_secs(),
        ms(polled),
        ms(hooked)
    ));
}

/// The stand-in guests, each acting only once its VM has run for `boot`.
/// Returns when `stop` is cancelled.
async fn booting_guests(rig: &ScaleRig, boot: Duration, stop: CancellationToken) {
    let mut up_since: BTreeMap<String, Instant> = BTreeMap::new();
    let host = rig.sandbox.hosts.values().next().expect("a host").clone();
    while !stop.is_cancelled() {
        let desired = rig.desired.lock().expect("desired").clone();
        let Some(desired) = desired else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let running = host.observe(FLEET).await.unwrap_or_default();
        let now = Instant::now();
        up_since.retain(|name, _| running.iter().any(|vm| &vm.name == name));
        for vm in &running {
            up_since.entry(vm.name.clone()).or_insert(now);
        }
        // Only the slots whose guest has booted: the others' runners do not
        // register yet.
        let mut booted = desired;
        booted
            .slots
            .retain(|s| up_since.get(&s.name).is_some_and(|t| now - *t >= boot));
        rig.guests
            .play(&rig.engine.world, &booted, rig.engine.clock.as_ref())
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// From a job queued (half an interval after a pass, when polling) to
/// a runner assigned, on a daemon's loop: a pass every `interval`, or when
/// a signed webhook delivery wakes it (`webhook`).
async fn queued_to_assigned(boot: Duration, interval: Duration, webhook: bool) -> Duration {
    let hooks = if webhook {
        Some(
            Webhooks::listen(
                "127.0.0.1:0".parse().expect("loopback"),
                Secret::new(HOOK_SECRET.to_string()),
            )
            .await
            .expect("webhook listener"),
        )
    } else {
        None
    };
    let rig = ScaleRig::new(2).await;
    if let Some(h) = &hooks {
        rig.sandbox.sim.set_webhook(Some(SimWebhook {
            url: format!("http://{}/", h.addr),
            secret: HOOK_SECRET.into(),
        }));
    }
    let wake = hooks.as_ref().map(|h| h.receiver.wake.clone());
    let stop = CancellationToken::new();
    rig.pass(interval).await;
    let next_at = std::cell::Cell::new(tokio::time::Instant::now() + interval);
    let (taken, ()) = tokio::join!(
        async {
            let mut queued: Option<(u64, Instant)> = None;
            loop {
                if let Some((id, at)) = queued {
                    if rig.assigned(id) {
                        stop.cancel();
                        return at.elapsed();
                    }
                    assert!(
                        at.elapsed() < boot + interval * 3,
                        "job #{id} waited past {:?}",
                        boot + interval * 3
                    );
                } else {
                    if wake.is_none() {
                        // Polling: queued mid-interval, the average moment
                        // (the worst is a pass's time later than a whole one).
                        tokio::time::sleep(interval / 2).await;
                    }
                    queued = Some((rig.enqueue(), Instant::now()));
                }
                let step = Duration::from_millis(10);
                let next_pass = async {
                    match &wake {
                        Some(w) => {
                            tokio::select! {
                                _ = w.notified() => {}
                                _ = tokio::time::sleep_until(next_at.get()) => {}
                            }
                        }
                        None => tokio::time::sleep_until(next_at.get()).await,
                    }
                    rig.pass(interval).await;
                    next_at.set(tokio::time::Instant::now() + interval);
                };
                // Watch the job while the loop waits for its next pass.
                tokio::pin!(next_pass);
                loop {
                    tokio::select! {
                        _ = &mut next_pass => break,
                        _ = tokio::time::sleep(step) => {
                            if queued.is_some_and(|(id, _)| rig.assigned(id)) {
                                break;
                            }
                        }
                    }
                }
            }
        },
        booting_guests(&rig, boot, stop.clone()),
    );
    if let Some(h) = hooks {
        h.stop().await;
    }
    rig.shutdown().await;
    taken
}
