//! Runner groups' repository access reaches the simulator's job
//! assignment: a JIT runner that hangar's GitHub provider mints into an
//! organization's group by name takes a queued job only of a repository
//! the group admits, and a change of the group's access over the REST API
//! (`PATCH`) takes effect at once, as on GitHub.

#[path = "support/raw_http.rs"]
mod raw_http;

use hangar::providers::github::{Auth, GithubConfig, GithubRegistry, Scope};
use hangar::providers::RunnerRegistry;
use hangar::secret::Secret;
use hangar::sim::{self, EnqueueJob, JobStatus, SimHandle};
use raw_http::{get, http, start, AUTH, TOKEN};
use serde_json::json;

async fn patch_group(sim: &SimHandle, id: u64, body: serde_json::Value) {
    let path = format!("/orgs/acme/actions/runner-groups/{id}");
    let a = http(sim, "PATCH", &path, &[AUTH], Some(body)).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

/// A JIT runner in group `group`, online and idle (its guest ran
/// `run.sh --jitconfig`).
async fn gpu_runner(sim: &SimHandle, reg: &GithubRegistry, name: &str) -> u64 {
    let jit = reg
        .jit_config(name, &["gpu".to_string()], "GPU")
        .await
        .unwrap();
    sim.run_jit(jit.config.expose()).unwrap();
    jit.runner_id
}

#[tokio::test]
async fn a_groups_runner_takes_only_jobs_of_repositories_the_group_admits() {
    let sim = start().await;
    let gpu = sim.add_runner_group("acme", "GPU").unwrap();
    let reg = GithubRegistry::new(GithubConfig {
        scope: Scope::Organization { org: "acme".into() },
        api_url: sim.base_url.clone(),
        auth: Auth::Token(Secret::new(TOKEN.to_string())),
        timeout: None,
    })
    .unwrap();
    patch_group(
        &sim,
        gpu,
        json!({"visibility": "selected", "selected_repository_ids": [sim::repo_id("acme/widgets")]}),
    )
    .await;
    let first = gpu_runner(&sim, &reg, "t-gpu-0").await;

    let other = sim
        .enqueue_job(&EnqueueJob::new("acme/other", &["gpu"]))
        .unwrap();
    assert_eq!(other.status, JobStatus::Queued, "acme/other is not GPU's");
    let widgets = sim
        .enqueue_job(&EnqueueJob::new("acme/widgets", &["gpu"]))
        .unwrap();
    assert_eq!(
        (widgets.runner_id, widgets.runner_group_name.as_deref()),
        (Some(first), Some("GPU"))
    );
    // The group's repositories, as GitHub lists them: private ones.
    let repos = get(
        &sim,
        &format!("/orgs/acme/actions/runner-groups/{gpu}/repositories"),
        &[AUTH],
    )
    .await
    .json();
    assert_eq!(repos["total_count"], 1, "{repos}");
    assert_eq!(repos["repositories"][0]["full_name"], "acme/widgets");
    assert_eq!(repos["repositories"][0]["private"], true);

    // The job ends, the JIT runner with it; the next one waits idle beside
    // the job it may not take.
    sim.end_job(widgets.id).unwrap();
    assert!(sim.runner(first).is_none(), "an ephemeral runner goes");
    let second = gpu_runner(&sim, &reg, "t-gpu-1").await;
    assert_eq!(
        sim.jobs().iter().find(|j| j.id == other.id).unwrap().status,
        JobStatus::Queued
    );
    assert!(!sim.runner(second).unwrap().busy);

    // Opened to every repository: it takes the job at once.
    patch_group(&sim, gpu, json!({"visibility": "all"})).await;
    let taken = sim.jobs().into_iter().find(|j| j.id == other.id).unwrap();
    assert_eq!(
        (taken.status, taken.runner_id),
        (JobStatus::InProgress, Some(second))
    );
}
