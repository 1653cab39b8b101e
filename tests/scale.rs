//! Pools that follow demand, against real parts: the engine on sandbox
//! hosts (libvirt's test driver), the GitHub simulator over loopback with
//! its workflow runs, jobs and GitHub's assignment of a queued job to a
//! matching idle runner, the stand-in guests registering their runners, and
//! paused time for the cooldown.

mod support;

#[path = "support/raw_http.rs"]
mod raw_http;

use std::time::Duration;

use hangar::plan::model::{Action, WaitReason};
use hangar::plan::render;
use hangar::reconcile::daemon::{self, DaemonSettings};
use hangar::reconcile::event::{Event, Ignore, Recorded};
use hangar::reconcile::webhook::{signature, Webhooks};
use hangar::secret::Secret;
use hangar::sim::{JobStatus, SimWebhook};
use support::ports::free_port;
use support::scale::{ephemeral_scaled_pool, org_scaled_fleet, scaled_fleet, scaled_pool};
use support::{slot, EditableFile, Rig, TOKEN};

fn creates(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Create { slot, .. } => Some(slot.name.clone()),
            _ => None,
        })
        .collect()
}

/// Passes until the plan is in sync (a second of paused time apart).
async fn settle(rig: &Rig, max: usize) {
    rig.converge(max).await;
}

#[tokio::test(start_paused = true)]
async fn a_pool_follows_its_queue_up_and_back_to_zero_after_the_cooldown() {
    let yaml = scaled_fleet(&["h1"], "100%", &scaled_pool("burst", 0, 3, 0, None));
    let rig = Rig::new(&yaml).await;

    // Nothing queued: no VM, nothing to do.
    let first = rig.pass().await;
    assert!(first.plan.actions.is_empty(), "{:#?}", first.plan.actions);
    assert!(rig.vm_names("h1").await.is_empty());

    // Three jobs with the pool's labels: three runners, which take them.
    let jobs: Vec<u64> = (0..3)
        .map(|_| rig.enqueue(&["self-hosted", "burst"]).id)
        .collect();
    let grow = rig.pass().await;
    assert_eq!(
        creates(&grow.plan.actions),
        [slot("burst", 0), slot("burst", 1), slot("burst", 2)]
    );
    settle(&rig, 10).await;
    let mut takers: Vec<String> = jobs
        .iter()
        .map(|id| {
            let j = rig.job(*id);
            assert_eq!(j.status, JobStatus::InProgress, "{j:?}");
            j.runner_name.unwrap()
        })
        .collect();
    takers.sort();
    assert_eq!(
        takers,
        [slot("burst", 0), slot("burst", 1), slot("burst", 2)]
    );
    for name in &takers {
        assert!(rig.runner(name).unwrap().busy, "{name}");
    }
    // `status` says what the queue asks of the pool.
    let view = hangar::reconcile::status::status(&rig.engine, &rig.fleet).await;
    assert_eq!(view.scale.len(), 1, "{:?}", view.scale);
    let p = &view.scale[0];
    assert_eq!(
        (
            p.pool.as_str(),
            p.busy,
            p.queued.len(),
            p.target,
            p.slots.len()
        ),
        ("burst", 3, 0, 3, 3),
        "{p:?}"
    );
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["scale"][0]["target"], 3, "{json}");

    // A job with labels no pool has creates nothing.
    let stray = rig.enqueue(&["self-hosted", "gpu"]);
    let r = rig.pass().await;
    assert!(creates(&r.plan.actions).is_empty(), "{:#?}", r.plan.actions);
    assert_eq!(rig.job(stray.id).status, JobStatus::Queued);

    // The jobs end: the runners stay through the cooldown (10 minutes by
    // default), then the pool returns to zero.
    for id in &jobs {
        rig.sim.end_job(*id).unwrap();
    }
    let r = rig.pass().await;
    assert!(r.plan.actions.is_empty(), "{:#?}", r.plan.actions);
    tokio::time::advance(Duration::from_secs(9 * 60)).await;
    let r = rig.pass().await;
    assert!(
        r.plan.actions.is_empty(),
        "within the cooldown: {:#?}",
        r.plan.actions
    );
    assert_eq!(rig.vm_names("h1").await.len(), 3);

    tokio::time::advance(Duration::from_secs(61)).await;
    let shrink = rig.pass().await;
    let deleted: Vec<&str> = shrink
        .plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Delete { .. }))
        .map(|a| a.subject())
        .collect();
    assert_eq!(deleted.len(), 3, "{:#?}", shrink.plan.actions);
    settle(&rig, 10).await;
    assert!(rig.vm_names("h1").await.is_empty());
    assert!(
        rig.runners()
            .iter()
            .all(|r| !r.name.starts_with("t-burst-")),
        "{:?}",
        rig.runners()
    );
    // The stray job still waits, and asks for nothing.
    assert_eq!(rig.job(stray.id).status, JobStatus::Queued);
    assert!(rig.diff().await.plan.actions.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_busy_runner_is_never_removed_and_idle_ones_go_highest_first() {
    let yaml = scaled_fleet(&["h1"], "100%", &scaled_pool("burst", 0, 3, 0, Some("1m")));
    let rig = Rig::new(&yaml).await;
    let jobs: Vec<u64> = (0..3).map(|_| rig.enqueue(&["burst"]).id).collect();
    settle(&rig, 10).await;
    // The job on slot 0 runs on; the others end.
    let on_zero = jobs
        .iter()
        .copied()
        .find(|id| rig.job(*id).runner_name.as_deref() == Some(slot("burst", 0).as_str()))
        .unwrap();
    for id in jobs.iter().filter(|id| **id != on_zero) {
        rig.sim.end_job(*id).unwrap();
    }
    rig.pass().await;
    tokio::time::advance(Duration::from_secs(61)).await;
    settle(&rig, 10).await;
    assert_eq!(rig.vm_names("h1").await, [slot("burst", 0)]);
    assert!(rig.runner(&slot("burst", 0)).unwrap().busy);

    // Demand again: the lowest free index comes back first.
    let next = rig.enqueue(&["burst"]);
    let r = rig.pass().await;
    assert_eq!(creates(&r.plan.actions), [slot("burst", 1)]);
    settle(&rig, 10).await;
    assert_eq!(
        rig.job(next.id).runner_name.as_deref(),
        Some(slot("burst", 1).as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn two_pools_share_a_host_as_the_queue_moves_and_the_plan_names_what_waits() {
    // Room for three 1GiB runners; each pool could have two.
    let pools = scaled_pool("amd", 0, 2, 0, Some("1m")) + &scaled_pool("ppc", 0, 2, 0, Some("1m"));
    let yaml = scaled_fleet(&["h1"], "3GiB", &pools);
    let rig = Rig::new(&yaml).await;
    let amd: Vec<u64> = (0..2).map(|_| rig.enqueue(&["amd"]).id).collect();
    let ppc: Vec<u64> = (0..2).map(|_| rig.enqueue(&["ppc"]).id).collect();

    let r = rig.pass().await;
    assert_eq!(
        creates(&r.plan.actions),
        [slot("amd", 0), slot("amd", 1), slot("ppc", 0)]
    );
    let waits: Vec<(&str, &WaitReason)> = r
        .plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Wait { subject, reason } => Some((subject.as_str(), reason)),
            _ => None,
        })
        .collect();
    let expected = slot("ppc", 1);
    assert_eq!(
        waits,
        [(
            expected.as_str(),
            &WaitReason::NoCapacity {
                hosts: vec!["h1".into()],
                jobs: vec![ppc[1]],
            }
        )]
    );
    let text = render::human(&r.plan, false);
    assert!(
        text.contains(&format!(
            "no room on h1 for another runner: queued job #{} waits for capacity",
            ppc[1]
        )),
        "{text}"
    );

    // Passes until only the wait is left; three jobs run, one waits.
    for _ in 0..6 {
        rig.pass().await;
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(
        rig.queued_jobs().iter().map(|j| j.id).collect::<Vec<_>>(),
        [ppc[1]]
    );

    // amd's jobs end; after its cooldown its runners go and ppc's second
    // runner takes the waiting job.
    for id in &amd {
        rig.sim.end_job(*id).unwrap();
    }
    rig.pass().await;
    tokio::time::advance(Duration::from_secs(61)).await;
    settle(&rig, 12).await;
    assert_eq!(rig.vm_names("h1").await, [slot("ppc", 0), slot("ppc", 1)]);
    assert_eq!(rig.job(ppc[1]).status, JobStatus::InProgress);
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_queue_costs_no_rate_limit() {
    let yaml = scaled_fleet(&["h1"], "100%", &scaled_pool("burst", 0, 20, 0, Some("1m")));
    let rig = Rig::new(&yaml).await;
    rig.pass().await;

    // Idle: every queue list is a 304, free.
    rig.sim.reset_stats();
    for _ in 0..5 {
        rig.pass().await;
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    let idle = rig.sim.stats();
    let runs = idle.count("/actions/runs");
    assert_eq!(runs, 10, "two status lists a pass: {:?}", idle.by_route);
    assert_eq!(idle.count_status("/actions/runs", 304), runs);
    assert_eq!(idle.rate_limited_cost, 0, "{:?}", idle.by_route_status);

    // A burst of 20 queued jobs, until all run.
    rig.sim.reset_stats();
    let jobs: Vec<u64> = (0..20).map(|_| rig.enqueue(&["burst"]).id).collect();
    settle(&rig, 10).await;
    assert!(jobs
        .iter()
        .all(|id| rig.job(*id).status == JobStatus::InProgress));
    let burst = rig.sim.stats();
    let queue_cost = burst.count("/actions/runs") - burst.count_status("/actions/runs", 304);
    eprintln!(
        "burst of 20: {} requests to the queue routes, {} charged; {} charged in all",
        burst.count("/actions/runs"),
        queue_cost,
        burst.rate_limited_cost
    );
    // Each run's job list is charged when it changed: listed queued, then
    // assigned (twice per job), plus the two status lists of the passes that
    // saw the queue move.
    assert!(queue_cost <= 2 * 20 + 2 * 10, "{:?}", burst.by_route_status);

    // Steady again (all running): free once more.
    rig.sim.reset_stats();
    rig.pass().await;
    let steady = rig.sim.stats();
    assert_eq!(
        steady.count_status("/actions/runs", 304),
        steady.count("/actions/runs"),
        "{:?}",
        steady.by_route_status
    );
}

/// `PATCH` organization `acme`'s runner group `id` over the simulator's
/// REST API, as an owner would on GitHub.
async fn patch_group(rig: &Rig, id: u64, body: serde_json::Value) {
    let auth = format!("Bearer {TOKEN}");
    let path = format!("/orgs/acme/actions/runner-groups/{id}");
    let a = raw_http::http(
        &rig.sim,
        "PATCH",
        &path,
        &[("authorization", auth.as_str())],
        Some(body),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

/// An organization fleet (repositories `widgets` and `other`) whose pool
/// `gpu` (0 to 2, cooldown 1m) is in runner group GPU, made on the
/// simulator with `access` (a runner-group PATCH body); and GPU's id.
async fn gpu_group(access: serde_json::Value) -> (Rig, u64) {
    let pool = scaled_pool("gpu", 0, 2, 0, Some("1m"))
        .replace("      labels:", "      runnerGroup: GPU\n      labels:");
    let yaml = org_scaled_fleet(&["h1"], "100%", &["widgets", "other"], &pool);
    let rig = Rig::new(&yaml).await;
    let gpu = rig.sim.add_runner_group("acme", "GPU").unwrap();
    patch_group(&rig, gpu, access).await;
    (rig, gpu)
}

/// GPU admits `acme/widgets` alone.
fn widgets_only() -> serde_json::Value {
    serde_json::json!({
        "visibility": "selected",
        "selected_repository_ids": [hangar::sim::repo_id("acme/widgets")],
    })
}

#[tokio::test(start_paused = true)]
async fn a_queued_job_counts_only_for_a_pool_whose_runner_group_admits_its_repository() {
    let (rig, gpu) = gpu_group(widgets_only()).await;

    // A job of a repository the group does not admit: no runner, and
    // `status` says why it waits.
    let other = rig.enqueue_in("acme/other", &["gpu"]);
    let r = rig.pass().await;
    assert!(creates(&r.plan.actions).is_empty(), "{:#?}", r.plan.actions);
    assert_eq!(r.desired.scale[0].not_admitted, [other.id]);
    assert!(r.desired.scale[0].queued.is_empty());
    settle(&rig, 3).await;
    assert!(rig.vm_names("h1").await.is_empty());
    let view = hangar::reconcile::status::status(&rig.engine, &rig.fleet).await;
    assert_eq!(view.scale[0].not_admitted, [other.id], "{:?}", view.scale);

    // One of the admitted repository: a runner in the group, which takes it.
    let widgets = rig.enqueue_in("acme/widgets", &["gpu"]);
    let r = rig.pass().await;
    assert_eq!(creates(&r.plan.actions), [slot("gpu", 0)]);
    settle(&rig, 10).await;
    let taken = rig.job(widgets.id);
    assert_eq!(
        (
            taken.status,
            taken.runner_name.as_deref(),
            taken.runner_group_name.as_deref()
        ),
        (
            JobStatus::InProgress,
            Some(slot("gpu", 0).as_str()),
            Some("GPU")
        ),
        "{taken:?}"
    );
    assert_eq!(rig.job(other.id).status, JobStatus::Queued);

    // Unchanged, the group's access costs no rate limit either.
    rig.sim.reset_stats();
    rig.pass().await;
    let stats = rig.sim.stats();
    let groups = stats.count("/runner-groups");
    assert_eq!(
        groups, 2,
        "the list and GPU's repositories: {:?}",
        stats.by_route
    );
    assert_eq!(stats.count_status("/runner-groups", 304), groups);
    assert_eq!(stats.rate_limited_cost, 0, "{:?}", stats.by_route_status);

    // Opened to every repository on GitHub: the next pass follows, and
    // the other repository's job gets a runner of its own.
    patch_group(&rig, gpu, serde_json::json!({"visibility": "all"})).await;
    let r = rig.pass().await;
    assert_eq!(creates(&r.plan.actions), [slot("gpu", 1)]);
    assert_eq!(r.desired.scale[0].queued, [other.id]);
    assert!(r.desired.scale[0].not_admitted.is_empty());
    settle(&rig, 10).await;
    let served = rig.job(other.id);
    assert_eq!(
        (served.status, served.runner_name.as_deref()),
        (JobStatus::InProgress, Some(slot("gpu", 1).as_str())),
        "{served:?}"
    );

    // Nothing queued: the groups are not asked at all, and the queue is free.
    rig.sim.reset_stats();
    rig.pass().await;
    let stats = rig.sim.stats();
    assert_eq!(stats.count("/runner-groups"), 0, "{:?}", stats.by_route);
    assert_eq!(stats.rate_limited_cost, 0, "{:?}", stats.by_route_status);
}

#[tokio::test(start_paused = true)]
async fn where_a_groups_access_cannot_be_read_jobs_count_by_labels_as_before() {
    let (rig, _) = gpu_group(serde_json::json!({"visibility": "selected"})).await;
    // GitHub fails every read of the group's repositories.
    rig.sim.inject(
        hangar::sim::Fault::new(
            hangar::sim::FaultKind::ServerError { status: 502 },
            u32::MAX,
        )
        .on_route("/runner-groups/{runner_group_id}/repositories"),
    );
    let other = rig.enqueue_in("acme/other", &["gpu"]);
    let r = rig.pass().await;
    assert_eq!(creates(&r.plan.actions), [slot("gpu", 0)]);
    assert_eq!(r.desired.scale[0].queued, [other.id]);
    assert!(rig.sim.stats().count_status("/repositories", 502) > 0);

    // Read again: the job no longer counts, and its idle runner goes after
    // the cooldown.
    rig.sim.clear_faults();
    settle(&rig, 10).await;
    assert_eq!(rig.job(other.id).status, JobStatus::Queued);
    assert_eq!(rig.diff().await.desired.scale[0].not_admitted, [other.id]);
    tokio::time::advance(Duration::from_secs(61)).await;
    settle(&rig, 10).await;
    assert!(rig.vm_names("h1").await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_groups_access_read_once_still_holds_in_a_new_process_when_github_fails() {
    let (mut rig, _) = gpu_group(widgets_only()).await;
    let widgets = rig.enqueue_in("acme/widgets", &["gpu"]);
    let other = rig.enqueue_in("acme/other", &["gpu"]);
    let r = rig.pass().await;
    assert_eq!(creates(&r.plan.actions), [slot("gpu", 0)]);
    assert_eq!(r.desired.scale[0].queued, [widgets.id]);
    assert_eq!(r.desired.scale[0].not_admitted, [other.id]);

    // The next pass is a new process (cron), its caches empty, and GitHub
    // fails every read of the runner groups: the access last read holds,
    // the job of the repository not admitted still gets no runner (by
    // labels alone it would get the pool's second).
    rig.engine = rig.wiring.build(&rig.fleet);
    rig.sim.inject(
        hangar::sim::Fault::new(
            hangar::sim::FaultKind::ServerError { status: 502 },
            u32::MAX,
        )
        .on_route("/runner-groups"),
    );
    rig.sim.reset_stats();
    let r = rig.pass().await;
    assert!(rig.sim.stats().count_status("/runner-groups", 502) > 0);
    assert!(creates(&r.plan.actions).is_empty(), "{:#?}", r.plan.actions);
    assert_eq!(r.desired.scale[0].not_admitted, [other.id]);
    assert_eq!(r.desired.scale[0].target, 1);
}

#[tokio::test(start_paused = true)]
async fn jit_runners_take_one_job_each_and_the_pool_returns_to_zero() {
    let yaml = scaled_fleet(&["h1"], "100%", &ephemeral_scaled_pool("pr", 2, "2m"));
    let rig = Rig::new(&yaml).await;
    let jobs: Vec<u64> = (0..2)
        .map(|_| rig.enqueue(&["self-hosted", "linux", "x64", "pr"]).id)
        .collect();
    settle(&rig, 10).await;
    for id in &jobs {
        assert_eq!(
            rig.job(*id).status,
            JobStatus::InProgress,
            "{:?}",
            rig.job(*id)
        );
    }
    // The jobs end: each JIT runner unregisters and its guest powers off.
    for id in &jobs {
        rig.sim.end_job(*id).unwrap();
    }
    for _ in 0..4 {
        rig.pass().await;
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    tokio::time::advance(Duration::from_secs(121)).await;
    settle(&rig, 12).await;
    assert!(rig.vm_names("h1").await.is_empty());
    assert!(rig.runners().iter().all(|r| !r.name.starts_with("t-pr-")));
}

/// `yaml` with a webhook on `listen`, its secret in `secret_file`.
fn with_webhook(yaml: &str, listen: &str, secret_file: &std::path::Path) -> String {
    yaml.replace(
        "    simulator: true\n",
        &format!(
            "    simulator: true\n    webhook: {{listen: '{listen}', secretFile: {}}}\n",
            secret_file.display()
        ),
    )
}

#[tokio::test]
async fn a_signed_webhook_wakes_the_daemon_long_before_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hook-secret");
    std::fs::write(&secret_file, "hook-s3cret\n").unwrap();
    let port = free_port();
    let yaml = with_webhook(
        &scaled_fleet(&["h1"], "100%", &scaled_pool("burst", 0, 2, 0, None)),
        &format!("127.0.0.1:{port}"),
        &secret_file,
    );
    let rig = Rig::new(&yaml).await;
    rig.sim.set_webhook(Some(SimWebhook {
        url: format!("http://127.0.0.1:{port}/hooks/github"),
        secret: "hook-s3cret".into(),
    }));
    let settings = DaemonSettings {
        // Polling alone would not pass again within this test.
        every: Duration::from_secs(3600),
        max_passes: Some(2),
        state_dir: rig.dir.path().to_path_buf(),
        lock_poll: Duration::from_millis(100),
        measure: false,
    };
    let source = EditableFile::new(&yaml);
    let fleet = rig.fleet.clone();
    let engine = rig.wiring.build(&fleet);
    let stop = rig.cancel.clone();
    let started = std::time::Instant::now();
    let run = daemon::daemon(
        fleet,
        engine,
        &source,
        &rig.wiring,
        &settings,
        &stop,
        &Ignore,
    );
    let queue = async {
        // Once the first pass has run (nothing queued, no VM), a job is
        // queued: the simulator's webhook is what wakes the daemon.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        (rig.enqueue(&["burst"]), std::time::Instant::now())
    };
    let (stopped, job) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(run, queue) })
            .await
            .expect("the daemon passed again within a minute, not an hour");
    let (job, queued_at) = job;
    assert_eq!(stopped.unwrap().passes, 2);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(rig.vm_names("h1").await, [slot("burst", 0)], "{job:?}");
    // The sandbox's guests boot at once: queued to assigned is the webhook,
    // one pass and the guest's registration.
    let taken = rig.job(job.id);
    assert_eq!(taken.status, JobStatus::InProgress, "{taken:?}");
    eprintln!(
        "webhook: job queued to runner assigned in {} ms (interval 1 h)",
        queued_at.elapsed().as_millis()
    );
}

#[tokio::test]
async fn a_forged_webhook_is_refused_and_wakes_nothing() {
    let hooks = Webhooks::listen("127.0.0.1:0".parse().unwrap(), Secret::new("right".into()))
        .await
        .unwrap();
    let rig = Rig::new(&scaled_fleet(
        &["h1"],
        "100%",
        &scaled_pool("burst", 0, 1, 0, None),
    ))
    .await;
    let wake = hooks.receiver.wake.clone();
    rig.sim.set_webhook(Some(SimWebhook {
        url: format!("http://{}/", hooks.addr),
        secret: "wrong".into(),
    }));
    rig.enqueue(&["burst"]);
    let woken = tokio::time::timeout(Duration::from_secs(2), wake.notified()).await;
    assert!(
        woken.is_err(),
        "a delivery signed with another secret woke the loop"
    );

    // The same delivery with the right secret does.
    rig.sim.set_webhook(Some(SimWebhook {
        url: format!("http://{}/", hooks.addr),
        secret: "right".into(),
    }));
    rig.enqueue(&["burst"]);
    tokio::time::timeout(Duration::from_secs(10), wake.notified())
        .await
        .expect("a signed delivery wakes the loop");
    hooks.stop().await;
}

// ---- a changed `webhook`, applied at the daemon's next pass ----

/// A signed `workflow_job` delivery to the listener at `addr`: its status.
async fn deliver(addr: &str, delivery: &str, secret: &str) -> u16 {
    let body = serde_json::json!({"action": "queued", "workflow_job": {"labels": ["burst"]}});
    let sig = signature(secret.as_bytes(), body.to_string().as_bytes());
    let headers = [
        ("x-github-event", "workflow_job"),
        ("x-github-delivery", delivery),
        ("x-hub-signature-256", sig.as_str()),
    ];
    raw_http::http_at(addr, "POST", "/hooks/github", &headers, Some(body))
        .await
        .status
}

fn refuses(addr: &str) -> bool {
    std::net::TcpStream::connect(addr).is_err()
}

/// The daemon's passes as its events tell them.
struct Passes<'a> {
    events: &'a Recorded,
    seen: Vec<Event>,
}

impl<'a> Passes<'a> {
    fn new(events: &'a Recorded) -> Self {
        Passes {
            events,
            seen: Vec::new(),
        }
    }

    fn started(&mut self, n: u64) -> bool {
        self.seen.extend(self.events.take());
        self.seen
            .iter()
            .any(|e| matches!(e, Event::PassStarted { pass } if *pass == n))
    }

    fn finished(&mut self, n: u64) -> bool {
        self.seen.extend(self.events.take());
        self.seen
            .iter()
            .any(|e| matches!(e, Event::PassFinished { pass, .. } if *pass == n))
    }

    /// Wait (real time, at most 20 s) until `done`.
    async fn until(&mut self, what: &str, done: impl Fn(&mut Self) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "not within 20 s: {what}; events: {:#?}",
                self.seen
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn hook_settings(rig: &Rig, every: Duration) -> DaemonSettings {
    DaemonSettings {
        every,
        max_passes: None,
        state_dir: rig.dir.path().to_path_buf(),
        lock_poll: Duration::from_millis(100),
        measure: false,
    }
}

/// Run the rig's daemon on `source` beside `drive`, which ends it.
async fn with_daemon(
    rig: &Rig,
    source: &EditableFile,
    settings: &DaemonSettings,
    events: &Recorded,
    drive: impl std::future::Future<Output = ()>,
) {
    let run = daemon::daemon(
        rig.fleet.clone(),
        rig.wiring.build(&rig.fleet),
        source,
        &rig.wiring,
        settings,
        &rig.cancel,
        events,
    );
    let drive = async {
        drive.await;
        rig.cancel.cancel();
    };
    let (stopped, ()) =
        tokio::time::timeout(Duration::from_secs(90), async { tokio::join!(run, drive) })
            .await
            .expect("the daemon and the test's edits ended");
    stopped.unwrap();
}

/// A scaled pool on one sandbox host whose file has a webhook on `listen`,
/// its secret `secret` in a file of the test's, read by the daemon through
/// an editable source.
struct HookCase {
    _dir: tempfile::TempDir,
    secret_file: std::path::PathBuf,
    /// The file without a webhook.
    base: String,
    rig: Rig,
    source: EditableFile,
    events: Recorded,
}

impl HookCase {
    async fn new(listen: &str, secret: &str) -> HookCase {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("hook-secret");
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        let base = scaled_fleet(&["h1"], "100%", &scaled_pool("burst", 0, 2, 0, None));
        let yaml = with_webhook(&base, listen, &secret_file);
        HookCase {
            _dir: dir,
            secret_file,
            base,
            rig: Rig::new(&yaml).await,
            source: EditableFile::new(&yaml),
            events: Recorded::default(),
        }
    }

    /// The file with its webhook moved to `listen`.
    fn listening(&self, listen: &str) -> String {
        with_webhook(&self.base, listen, &self.secret_file)
    }
}

#[tokio::test]
async fn a_moved_webhook_lets_its_old_port_go_and_wakes_the_daemon_on_the_new_one() {
    let (old, new) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let case = HookCase::new(&old, "hook-s3cret").await;
    let (rig, source, events) = (&case.rig, &case.source, &case.events);
    // Polling alone would not pass again within this test: each pass
    // after the first is a delivery's.
    let settings = hook_settings(rig, Duration::from_secs(3600));
    with_daemon(rig, source, &settings, events, async {
        let mut passes = Passes::new(events);
        passes.until("the first pass", |p| p.finished(1)).await;
        source.set(&case.listening(&new));
        // The edit is read at the next pass, which a delivery to the old
        // address (still the file in use) brings at once.
        assert_eq!(deliver(&old, "d1", "hook-s3cret").await, 200);
        passes
            .until("the pass that reads the edit", |p| p.started(2))
            .await;
        assert!(refuses(&old), "the old address still accepts");
        passes.until("its end", |p| p.finished(2)).await;
        // The delivery ids seen stay across the move: a replay wakes
        // nothing, a new delivery does.
        assert_eq!(deliver(&new, "d1", "hook-s3cret").await, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!passes.started(3), "a replayed delivery woke the daemon");
        assert_eq!(deliver(&new, "d2", "hook-s3cret").await, 200);
        passes
            .until("a pass woken on the new address", |p| p.started(3))
            .await;
    })
    .await;
    assert!(refuses(&new), "the stopped daemon still listens");
}

#[tokio::test]
async fn a_rotated_webhook_secret_is_taken_at_the_next_pass_and_the_old_one_refused() {
    let addr = format!("127.0.0.1:{}", free_port());
    // The fleet file stays the same: only the secret file's content changes.
    let case = HookCase::new(&addr, "old-s3cret").await;
    let (rig, source, events, secret_file) =
        (&case.rig, &case.source, &case.events, &case.secret_file);
    let settings = hook_settings(rig, Duration::from_secs(3600));
    with_daemon(rig, source, &settings, events, async {
        let mut passes = Passes::new(events);
        passes.until("the first pass", |p| p.finished(1)).await;
        std::fs::write(secret_file, "new-s3cret\n").unwrap();
        assert_eq!(deliver(&addr, "d1", "old-s3cret").await, 200);
        passes
            .until("the pass that reads the new secret", |p| p.started(2))
            .await;
        passes.until("its end", |p| p.finished(2)).await;
        assert_eq!(
            deliver(&addr, "d2", "old-s3cret").await,
            401,
            "a delivery signed with the old secret is taken"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!passes.started(3), "the refused delivery woke the daemon");
        // Same address: the listener stayed; the new secret wakes it.
        assert_eq!(deliver(&addr, "d3", "new-s3cret").await, 200);
        passes
            .until("a pass woken with the new secret", |p| p.started(3))
            .await;
    })
    .await;
}

#[tokio::test]
async fn a_removed_webhook_stops_listening_and_one_added_back_listens() {
    let (first, second) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let case = HookCase::new(&first, "hook-s3cret").await;
    let (rig, source, events) = (&case.rig, &case.source, &case.events);
    // Without a listener only polling reads the file again: a short
    // interval.
    let settings = hook_settings(rig, Duration::from_secs(1));
    with_daemon(rig, source, &settings, events, async {
        let mut passes = Passes::new(events);
        passes.until("the first pass", |p| p.finished(1)).await;
        assert!(!refuses(&first));
        source.set(&case.base);
        passes
            .until("the port of a removed webhook let go", |_| refuses(&first))
            .await;
        source.set(&case.listening(&second));
        passes
            .until("a webhook added back listening", |_| !refuses(&second))
            .await;
        assert_eq!(deliver(&second, "d1", "hook-s3cret").await, 200);
        assert_eq!(deliver(&second, "d2", "a-guess").await, 401);
        assert!(refuses(&first));
    })
    .await;
}

#[tokio::test]
async fn a_webhook_moved_to_a_taken_port_keeps_the_last_good_listener_until_the_port_is_free() {
    let old = format!("127.0.0.1:{}", free_port());
    // Another program holds the address the edit asks for.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let new = taken.local_addr().unwrap().to_string();
    let case = HookCase::new(&old, "hook-s3cret").await;
    let (rig, source, events) = (&case.rig, &case.source, &case.events);
    let settings = hook_settings(rig, Duration::from_secs(3600));
    with_daemon(rig, source, &settings, events, async {
        let mut passes = Passes::new(events);
        passes.until("the first pass", |p| p.finished(1)).await;
        source.set(&case.listening(&new));
        assert_eq!(deliver(&old, "d1", "hook-s3cret").await, 200);
        passes
            .until("the pass that reads the edit", |p| p.started(2))
            .await;
        passes.until("its end", |p| p.finished(2)).await;
        // The new address cannot be had: the old listener still wakes the
        // daemon, and each pass tries the new one again.
        assert_eq!(deliver(&old, "d2", "hook-s3cret").await, 200);
        passes
            .until("a pass woken on the old address", |p| p.started(3))
            .await;
        passes.until("its end", |p| p.finished(3)).await;
        drop(taken);
        assert_eq!(deliver(&old, "d3", "hook-s3cret").await, 200);
        passes.until("the pass that moves", |p| p.started(4)).await;
        assert!(refuses(&old), "the old address still accepts");
        assert_eq!(deliver(&new, "d4", "hook-s3cret").await, 200);
        passes
            .until("a pass woken on the new address", |p| p.started(5))
            .await;
    })
    .await;
}
