//! Workflow runs and their jobs, and GitHub's assignment of a queued job to
//! a runner: `GET /repos/{owner}/{repo}/actions/runs` and
//! `GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs`, in the
//! `workflow-run` and `job` shapes of GitHub's description
//! (https://docs.github.com/rest/actions/workflow-runs,
//! https://docs.github.com/rest/actions/workflow-jobs).
//!
//! A run holds the jobs a test enqueued (one per enqueue). The assignment
//! rule is GitHub's routing rule for self-hosted runners: a queued job goes
//! to an idle online runner of the repository or of its owner organization
//! whose labels contain all of the job's labels, compared without case
//! (https://docs.github.com/actions/hosting-your-own-runners/managing-self-hosted-runners/using-self-hosted-runners-in-a-workflow),
//! and, for an organization's runner, whose runner group admits the job's
//! repository (`visibility` `all`, or `selected` with the repository among
//! `selected_repository_ids`; see [`super::groups::admits`])
//! (https://docs.github.com/actions/hosting-your-own-runners/managing-self-hosted-runners/managing-access-to-self-hosted-runners-using-groups).
//! A repository's own runners are in no group and take its jobs. The
//! simulator has no public repositories, so `allows_public_repositories`
//! changes no assignment and `private` admits as `all` does; workflow
//! restrictions are not applied.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::groups::{admits, minimal_repository, repo_id};
use super::layer::{base_url, gh_error, json_with_etag, link_pages, paging, simple_user, Sim};
use super::world::{check_labels, scope_key, sha256_hex, SimError, SimWorld};
use super::Shared;

const DOC_RUNS: &str = "https://docs.github.com/rest/actions/workflow-runs";
const DOC_JOBS: &str = "https://docs.github.com/rest/actions/workflow-jobs";

/// A job's phase, as GitHub spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    InProgress,
    Completed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::InProgress => "in_progress",
            JobStatus::Completed => "completed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimJob {
    pub id: u64,
    pub run_id: u64,
    pub name: String,
    /// The job's `runs-on` labels.
    pub labels: Vec<String>,
    pub status: JobStatus,
    /// `success`, `failure`, `cancelled` once completed.
    pub conclusion: Option<String>,
    pub runner_id: Option<u64>,
    pub runner_name: Option<String>,
    pub runner_group_id: Option<u64>,
    pub runner_group_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimRun {
    pub id: u64,
    /// `owner/repo`, lowercased.
    pub repo: String,
    pub run_number: u64,
    pub workflow: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub jobs: Vec<SimJob>,
}

impl SimRun {
    /// The run's status from its jobs: completed when all are, queued while
    /// none has started, in progress otherwise.
    pub fn status(&self) -> JobStatus {
        if self.jobs.iter().all(|j| j.status == JobStatus::Completed) {
            JobStatus::Completed
        } else if self.jobs.iter().all(|j| j.status == JobStatus::Queued) {
            JobStatus::Queued
        } else {
            JobStatus::InProgress
        }
    }

    pub fn conclusion(&self) -> Option<&str> {
        if self.status() != JobStatus::Completed {
            return None;
        }
        let bad = self
            .jobs
            .iter()
            .filter_map(|j| j.conclusion.as_deref())
            .find(|c| *c != "success");
        Some(bad.unwrap_or("success"))
    }
}

/// A job to enqueue: a new run of `workflow` in `repo` with one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnqueueJob {
    /// `owner/repo`.
    pub repo: String,
    pub labels: Vec<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub workflow: Option<String>,
}

impl EnqueueJob {
    pub fn new(repo: &str, labels: &[&str]) -> Self {
        EnqueueJob {
            repo: repo.to_string(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            name: None,
            workflow: None,
        }
    }
}

fn labels_match(runner: &super::SimRunner, wanted: &[String]) -> bool {
    wanted
        .iter()
        .all(|w| runner.labels.iter().any(|l| l.name.eq_ignore_ascii_case(w)))
}

impl SimWorld {
    /// A new run in `repo` with one queued job, then assignment.
    pub fn enqueue_job(
        &mut self,
        req: &EnqueueJob,
        now: DateTime<Utc>,
    ) -> Result<SimJob, SimError> {
        let key = scope_key(&format!("repos/{}", req.repo))?;
        let repo = key.trim_start_matches("repos/").to_string();
        check_labels(&req.labels, true)?;
        self.next_run_id = self.next_run_id.max(5000) + 1;
        self.next_job_id = self.next_job_id.max(90000) + 1;
        let run_number = self.runs.values().filter(|r| r.repo == repo).count() as u64 + 1;
        let workflow = req.workflow.clone().unwrap_or_else(|| "build".into());
        let job = SimJob {
            id: self.next_job_id,
            run_id: self.next_run_id,
            name: req.name.clone().unwrap_or_else(|| "build".into()),
            labels: req.labels.clone(),
            status: JobStatus::Queued,
            conclusion: None,
            runner_id: None,
            runner_name: None,
            runner_group_id: None,
            runner_group_name: None,
            created_at: now,
            started_at: None,
            completed_at: None,
        };
        self.runs.insert(
            job.run_id,
            SimRun {
                id: job.run_id,
                repo,
                run_number,
                workflow,
                created_at: now,
                updated_at: now,
                jobs: vec![job.clone()],
            },
        );
        self.assign_jobs(now);
        Ok(self.job(job.id).cloned().unwrap_or(job))
    }

    pub fn job(&self, id: u64) -> Option<&SimJob> {
        self.runs
            .values()
            .flat_map(|r| r.jobs.iter())
            .find(|j| j.id == id)
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Vec<SimJob> {
        let mut jobs: Vec<SimJob> = self
            .runs
            .values()
            .flat_map(|r| r.jobs.iter().cloned())
            .collect();
        jobs.sort_by_key(|j| j.id);
        jobs
    }

    /// GitHub's assignment: each queued job, oldest first, goes to the
    /// idle online runner with the lowest id in its repository's scope or
    /// its owner's organization whose labels hold all of the job's (and,
    /// in the organization, whose group admits the repository).
    pub fn assign_jobs(&mut self, now: DateTime<Utc>) {
        let queued: Vec<(u64, u64, String, Vec<String>)> = {
            let mut q: Vec<_> = self
                .runs
                .values()
                .flat_map(|r| {
                    r.jobs
                        .iter()
                        .filter(|j| j.status == JobStatus::Queued)
                        .map(|j| (j.id, r.id, r.repo.clone(), j.labels.clone()))
                })
                .collect();
            q.sort_by_key(|(id, ..)| *id);
            q
        };
        for (job_id, run_id, repo, labels) in queued {
            let owner = repo.split('/').next().unwrap_or("").to_string();
            let scopes = [format!("repos/{repo}"), format!("orgs/{owner}")];
            let found = scopes.iter().find_map(|key| {
                let scope = self.scope(key)?;
                // A runner whose group is not (any more) there counts as
                // the default group's, as its name below says.
                let group_of = |r: &super::SimRunner| {
                    scope
                        .groups
                        .iter()
                        .find(|g| g.id == r.runner_group_id)
                        .or_else(|| scope.groups.iter().find(|g| g.default))
                };
                let r = scope.runners.values().find(|r| {
                    r.status == "online"
                        && !r.busy
                        && labels_match(r, &labels)
                        && (!key.starts_with("orgs/")
                            || group_of(r).is_none_or(|g| admits(g, &repo)))
                })?;
                let group = group_of(r)
                    .map(|g| g.name.clone())
                    .unwrap_or_else(|| "Default".into());
                Some((r.id, r.name.clone(), r.runner_group_id, group))
            });
            let Some((runner_id, runner_name, group_id, group_name)) = found else {
                continue;
            };
            if let Some(r) = self.find_runner_mut(runner_id) {
                r.busy = true;
            }
            if let Some(run) = self.runs.get_mut(&run_id) {
                run.updated_at = now;
                if let Some(j) = run.jobs.iter_mut().find(|j| j.id == job_id) {
                    j.status = JobStatus::InProgress;
                    j.runner_id = Some(runner_id);
                    j.runner_name = Some(runner_name);
                    j.runner_group_id = Some(group_id);
                    j.runner_group_name = Some(group_name);
                    j.started_at = Some(now);
                }
            }
        }
    }

    /// End the job a runner is running, if any (the runner itself is left
    /// to the caller).
    pub(crate) fn end_job_of_runner(
        &mut self,
        runner_id: u64,
        conclusion: &str,
        now: DateTime<Utc>,
    ) {
        for run in self.runs.values_mut() {
            let mut changed = false;
            for j in run
                .jobs
                .iter_mut()
                .filter(|j| j.status == JobStatus::InProgress && j.runner_id == Some(runner_id))
            {
                j.status = JobStatus::Completed;
                j.conclusion = Some(conclusion.to_string());
                j.completed_at = Some(now);
                changed = true;
            }
            if changed {
                run.updated_at = now;
            }
        }
    }

    /// A job ends with `conclusion`: a running one frees its runner (an
    /// ephemeral runner unregisters, as [`SimWorld::finish_job`]); a queued
    /// one is cancelled.
    pub fn finish_queued_or_running_job(
        &mut self,
        job_id: u64,
        conclusion: &str,
        now: DateTime<Utc>,
    ) -> Result<SimJob, SimError> {
        let job = self
            .job(job_id)
            .cloned()
            .ok_or_else(|| SimError::NotFound(format!("job {job_id}")))?;
        match (job.status, job.runner_id) {
            (JobStatus::Completed, _) => {
                return Err(SimError::Invalid(format!("job {job_id} is completed")))
            }
            (JobStatus::InProgress, Some(runner)) if self.find_runner(runner).is_some() => {
                self.end_job_of_runner(runner, conclusion, now);
                self.release_runner(runner)?;
            }
            _ => {
                let conclusion = if job.status == JobStatus::Queued {
                    "cancelled"
                } else {
                    conclusion
                };
                // A job is found through its run, so both are there; an
                // answer, not a panic, should that ever not hold.
                let run = self.runs.get_mut(&job.run_id).ok_or_else(|| {
                    SimError::NotFound(format!("run {} of job {job_id}", job.run_id))
                })?;
                run.updated_at = now;
                let j = run
                    .jobs
                    .iter_mut()
                    .find(|j| j.id == job_id)
                    .ok_or_else(|| SimError::NotFound(format!("job {job_id}")))?;
                j.status = JobStatus::Completed;
                j.conclusion = Some(conclusion.to_string());
                j.completed_at = Some(now);
            }
        }
        self.assign_jobs(now);
        self.job(job_id)
            .cloned()
            .ok_or_else(|| SimError::NotFound(format!("job {job_id}")))
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn head_sha(run: &SimRun) -> String {
    sha256_hex(format!("{}#{}", run.repo, run.id).as_bytes())[..40].to_string()
}

/// The `job` schema.
fn job_json(base: &str, run: &SimRun, j: &SimJob) -> Value {
    let api = format!("{base}/repos/{}", run.repo);
    json!({
        "id": j.id,
        "run_id": run.id,
        "run_url": format!("{api}/actions/runs/{}", run.id),
        "run_attempt": 1,
        "node_id": format!("CR_sim{}", j.id),
        "head_sha": head_sha(run),
        "url": format!("{api}/actions/jobs/{}", j.id),
        "html_url": format!("{base}/{}/actions/runs/{}/job/{}", run.repo, run.id, j.id),
        "status": j.status.as_str(),
        "conclusion": j.conclusion,
        "created_at": time(j.created_at),
        // GitHub gives a queued job its creation time here.
        "started_at": time(j.started_at.unwrap_or(j.created_at)),
        "completed_at": j.completed_at.map(time),
        "name": j.name,
        "steps": [],
        "check_run_url": format!("{api}/check-runs/{}", j.id),
        "labels": j.labels,
        "runner_id": j.runner_id,
        "runner_name": j.runner_name,
        "runner_group_id": j.runner_group_id,
        "runner_group_name": j.runner_group_name,
        "workflow_name": run.workflow,
        "head_branch": "main",
    })
}

/// The `workflow-run` schema.
fn run_json(base: &str, run: &SimRun) -> Value {
    let api = format!("{base}/repos/{}", run.repo);
    let url = format!("{api}/actions/runs/{}", run.id);
    let workflow_id = repo_id(&format!("{}/{}", run.repo, run.workflow));
    let owner = run.repo.split('/').next().unwrap_or("");
    let actor = simple_user(base, owner, repo_id(owner), "Organization");
    let repository = minimal_repository(base, &run.repo);
    json!({
        "id": run.id,
        "name": run.workflow,
        "node_id": format!("WFR_sim{}", run.id),
        "check_suite_id": run.id,
        "check_suite_node_id": format!("CS_sim{}", run.id),
        "head_branch": "main",
        "head_sha": head_sha(run),
        "path": format!(".github/workflows/{}.yml", run.workflow),
        "run_number": run.run_number,
        "run_attempt": 1,
        "referenced_workflows": [],
        "event": "push",
        "status": run.status().as_str(),
        "conclusion": run.conclusion(),
        "workflow_id": workflow_id,
        "url": url,
        "html_url": format!("{base}/{}/actions/runs/{}", run.repo, run.id),
        "pull_requests": [],
        "created_at": time(run.created_at),
        "updated_at": time(run.updated_at),
        "actor": actor,
        "triggering_actor": actor,
        "run_started_at": time(run.created_at),
        "jobs_url": format!("{url}/jobs"),
        "logs_url": format!("{url}/logs"),
        "check_suite_url": format!("{api}/check-suites/{}", run.id),
        "artifacts_url": format!("{url}/artifacts"),
        "cancel_url": format!("{url}/cancel"),
        "rerun_url": format!("{url}/rerun"),
        "previous_attempt_url": null,
        "workflow_url": format!("{api}/actions/workflows/{workflow_id}"),
        "head_commit": null,
        "repository": repository,
        "head_repository": repository,
        "head_repository_id": repo_id(&run.repo),
        "display_title": run.workflow,
    })
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/repos/{owner}/{repo}/actions/runs", get(list_runs))
        .route(
            "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
            get(list_jobs),
        )
}

fn repo_of(params: &HashMap<String, String>) -> Option<String> {
    let key = scope_key(&format!(
        "repos/{}/{}",
        params.get("owner")?,
        params.get("repo")?
    ))
    .ok()?;
    Some(key.trim_start_matches("repos/").to_string())
}

#[derive(Deserialize)]
struct RunsQuery {
    status: Option<String>,
    per_page: Option<String>,
    page: Option<String>,
}

/// `status` as GitHub reads it: a run's status or its conclusion.
fn run_has(run: &SimRun, status: &str) -> bool {
    run.status().as_str() == status || run.conclusion() == Some(status)
}

/// `GET /repos/{owner}/{repo}/actions/runs`: newest first, optional
/// `status`; `Link`, `ETag`/304 as GitHub.
async fn list_runs(
    State(shared): Sim,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<RunsQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(repo) = repo_of(&params) else {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_RUNS);
    };
    let (per_page, page) = paging(q.per_page.as_deref(), q.page.as_deref());
    let base = base_url(&headers);
    let (total, runs) = {
        let inner = shared.lock();
        let all: Vec<&SimRun> = inner
            .world
            .runs
            .values()
            .rev()
            .filter(|r| r.repo == repo)
            .filter(|r| q.status.as_deref().is_none_or(|s| run_has(r, s)))
            .collect();
        let skip = ((page - 1) * per_page) as usize;
        let runs: Vec<Value> = all
            .iter()
            .skip(skip)
            .take(per_page as usize)
            .map(|r| run_json(&base, r))
            .collect();
        (all.len() as u64, runs)
    };
    let body = json!({ "total_count": total, "workflow_runs": runs }).to_string();
    let mut response = json_with_etag(body, &headers);
    let status_q = q
        .status
        .as_ref()
        .map(|s| {
            format!(
                "&status={}",
                url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
            )
        })
        .unwrap_or_default();
    link_pages(
        &mut response,
        &headers,
        &format!("repos/{repo}/actions/runs"),
        &status_q,
        (per_page, page),
        total,
    );
    response
}

#[derive(Deserialize)]
struct JobsQuery {
    per_page: Option<String>,
    page: Option<String>,
}

/// `GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs`: the run's jobs
/// (one attempt, so `filter` changes nothing); `Link`, `ETag`/304.
async fn list_jobs(
    State(shared): Sim,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<JobsQuery>,
    headers: HeaderMap,
) -> Response {
    let not_found = || gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_JOBS);
    let (Some(repo), Some(run_id)) = (
        repo_of(&params),
        params.get("run_id").and_then(|s| s.parse::<u64>().ok()),
    ) else {
        return not_found();
    };
    let (per_page, page) = paging(q.per_page.as_deref(), q.page.as_deref());
    let base = base_url(&headers);
    let found = {
        let inner = shared.lock();
        inner
            .world
            .runs
            .get(&run_id)
            .filter(|r| r.repo == repo)
            .map(|run| {
                let skip = ((page - 1) * per_page) as usize;
                let jobs: Vec<Value> = run
                    .jobs
                    .iter()
                    .skip(skip)
                    .take(per_page as usize)
                    .map(|j| job_json(&base, run, j))
                    .collect();
                (run.jobs.len() as u64, jobs)
            })
    };
    let Some((total, jobs)) = found else {
        return not_found();
    };
    let body = json!({ "total_count": total, "jobs": jobs }).to_string();
    let mut response = json_with_etag(body, &headers);
    link_pages(
        &mut response,
        &headers,
        &format!("repos/{repo}/actions/runs/{run_id}/jobs"),
        "",
        (per_page, page),
        total,
    );
    response
}

/// Where the simulator delivers `workflow_job` webhooks, as a repository
/// webhook of GitHub's would: every job's change of status, signed with
/// `secret` (`X-Hub-Signature-256`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimWebhook {
    pub url: String,
    pub secret: String,
}

/// Job id → status, to see what a change of the world changed.
pub(crate) fn job_statuses(world: &SimWorld) -> HashMap<u64, JobStatus> {
    world
        .runs
        .values()
        .flat_map(|r| r.jobs.iter().map(|j| (j.id, j.status)))
        .collect()
}

/// The `workflow_job` deliveries for what changed between `before` and now:
/// (delivery id, body).
pub(crate) fn deliveries(
    world: &SimWorld,
    before: &HashMap<u64, JobStatus>,
    base: &str,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for run in world.runs.values() {
        for j in &run.jobs {
            if before.get(&j.id) == Some(&j.status) {
                continue;
            }
            let body = json!({
                "action": j.status.as_str(),
                "workflow_job": job_json(base, run, j),
                "repository": minimal_repository(base, &run.repo),
                "sender": simple_user(base, "hangar-sim", 1, "Bot"),
            });
            out.push((uuid::Uuid::new_v4().to_string(), body.to_string()));
        }
    }
    out
}

/// POST one delivery; failures are logged (GitHub does not retry either).
pub(crate) async fn deliver(hook: SimWebhook, delivery: String, body: String) {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let signature = crate::reconcile::webhook::signature(hook.secret.as_bytes(), body.as_bytes());
    let request = http::Request::post(&hook.url)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/hangar-sim")
        .header("x-github-event", "workflow_job")
        .header("x-github-delivery", &delivery)
        .header("x-hub-signature-256", signature)
        .body(Full::new(axum::body::Bytes::from(body)));
    let Ok(request) = request else {
        tracing::warn!(target: "hangar::sim", url = %hook.url, "webhook url is not valid");
        return;
    };
    let client: Client<_, Full<axum::body::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    match client.request(request).await {
        Ok(r) => {
            tracing::debug!(target: "hangar::sim", %delivery, status = r.status().as_u16(), "webhook delivered")
        }
        Err(e) => {
            tracing::warn!(target: "hangar::sim", %delivery, error = %e, "webhook not delivered")
        }
    }
}

/// The control API's view of a job: the `job` schema.
pub(crate) fn job_answer(world: &SimWorld, base: &str, job_id: u64) -> Option<Value> {
    let j = world.job(job_id)?;
    let run = world.runs.get(&j.run_id)?;
    Some(job_json(base, run, j))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world_with(labels: &[&[&str]]) -> (SimWorld, Vec<u64>) {
        let mut w = SimWorld::default();
        let ids = labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let l: Vec<String> = l.iter().map(|s| s.to_string()).collect();
                w.add_runners("repos/o/r", &format!("r{i}"), 1, &l).unwrap()[0]
            })
            .collect();
        (w, ids)
    }

    #[test]
    fn a_queued_job_goes_to_an_idle_runner_holding_all_its_labels() {
        let (mut w, ids) = world_with(&[&["cpu"], &["GPU"]]);
        let now = Utc::now();
        let j = w
            .enqueue_job(&EnqueueJob::new("O/R", &["self-hosted", "gpu"]), now)
            .unwrap();
        assert_eq!(j.status, JobStatus::InProgress);
        assert_eq!(j.runner_id, Some(ids[1]));
        assert!(w.find_runner(ids[1]).unwrap().1.busy);
        // Nothing fits: it waits; the runner that would fit is busy.
        let waiting = w
            .enqueue_job(&EnqueueJob::new("o/r", &["gpu"]), now)
            .unwrap();
        assert_eq!(waiting.status, JobStatus::Queued);
        let none = w
            .enqueue_job(&EnqueueJob::new("o/r", &["arm64"]), now)
            .unwrap();
        assert_eq!(none.status, JobStatus::Queued);
        // The first ends: its runner is free and takes the waiting job.
        w.finish_queued_or_running_job(j.id, "success", now)
            .unwrap();
        assert_eq!(w.job(j.id).unwrap().status, JobStatus::Completed);
        assert_eq!(w.job(waiting.id).unwrap().runner_id, Some(ids[1]));
        // A runner that goes offline fails its job.
        w.set_online(ids[1], false).unwrap();
        let lost = w.job(waiting.id).unwrap();
        assert_eq!(
            (lost.status, lost.conclusion.as_deref()),
            (JobStatus::Completed, Some("failure"))
        );
        // A queued job that is finished is cancelled.
        w.finish_queued_or_running_job(none.id, "success", now)
            .unwrap();
        assert_eq!(
            w.job(none.id).unwrap().conclusion.as_deref(),
            Some("cancelled")
        );
    }

    #[test]
    fn ending_a_job_whose_run_is_gone_answers_not_found_instead_of_panicking() {
        let mut w = SimWorld::default();
        let now = Utc::now();
        let j = w.enqueue_job(&EnqueueJob::new("o/r", &["x"]), now).unwrap();
        // A state file edited by hand: the job names a run that is not there.
        for run in w.runs.values_mut() {
            for job in &mut run.jobs {
                job.run_id += 1000;
            }
        }
        let e = w
            .finish_queued_or_running_job(j.id, "success", now)
            .unwrap_err();
        assert!(
            matches!(e, SimError::NotFound(ref m) if m.contains("run")),
            "{e}"
        );
    }

    #[test]
    fn an_organizations_runner_takes_its_repositories_jobs() {
        let mut w = SimWorld::default();
        let id = w.add_runners("orgs/o", "org", 1, &["x".into()]).unwrap()[0];
        let j = w
            .enqueue_job(&EnqueueJob::new("o/r", &["x"]), Utc::now())
            .unwrap();
        assert_eq!(j.runner_id, Some(id));
        let other = w
            .enqueue_job(&EnqueueJob::new("p/r", &["x"]), Utc::now())
            .unwrap();
        assert_eq!(other.status, JobStatus::Queued, "another owner's job");
    }

    /// Organization `o` with runner `lone` (label `x`) in a new group `G`
    /// of `visibility`, nothing else.
    fn org_group(visibility: &str, selected: &[&str]) -> (SimWorld, u64, u64) {
        let mut w = SimWorld::default();
        let group = w.add_group("o", "G").unwrap();
        let g = w
            .scope_mut("orgs/o")
            .groups
            .iter_mut()
            .find(|g| g.id == group)
            .unwrap();
        g.visibility = visibility.into();
        g.selected_repository_ids = selected.iter().map(|r| repo_id(r)).collect();
        let id = w.add_runners("orgs/o", "lone", 1, &["x".into()]).unwrap()[0];
        w.find_runner_mut(id).unwrap().runner_group_id = group;
        (w, id, group)
    }

    #[test]
    fn a_selected_group_takes_only_its_repositories_jobs() {
        let now = Utc::now();
        let (mut w, id, group) = org_group("selected", &["o/a"]);
        let b = w.enqueue_job(&EnqueueJob::new("o/b", &["x"]), now).unwrap();
        assert_eq!(b.status, JobStatus::Queued, "o/b is not the group's");
        let a = w.enqueue_job(&EnqueueJob::new("O/A", &["x"]), now).unwrap();
        assert_eq!(
            (
                a.runner_id,
                a.runner_group_id,
                a.runner_group_name.as_deref()
            ),
            (Some(id), Some(group), Some("G"))
        );
        // o/b joins the group: its job goes once the runner is free.
        w.finish_queued_or_running_job(a.id, "success", now)
            .unwrap();
        assert_eq!(w.job(b.id).unwrap().status, JobStatus::Queued);
        w.scope_mut("orgs/o").groups[1]
            .selected_repository_ids
            .push(repo_id("o/b"));
        w.assign_jobs(now);
        assert_eq!(w.job(b.id).unwrap().runner_id, Some(id));
    }

    #[test]
    fn a_job_passes_over_a_runner_whose_group_refuses_its_repository() {
        let now = Utc::now();
        // `lone` (the lower id) is in a group with no repository; a later
        // runner in the default group (visibility all) takes the job.
        let (mut w, lone, _) = org_group("selected", &[]);
        let other = w.add_runners("orgs/o", "other", 1, &["x".into()]).unwrap()[0];
        assert!(lone < other);
        let j = w.enqueue_job(&EnqueueJob::new("o/r", &["x"]), now).unwrap();
        assert_eq!(
            (j.runner_id, j.runner_group_name.as_deref()),
            (Some(other), Some("Default"))
        );
        assert!(!w.find_runner(lone).unwrap().1.busy);
    }

    #[test]
    fn all_and_private_groups_take_every_repositorys_jobs_whatever_public_access_says() {
        for visibility in ["all", "private"] {
            for public in [false, true] {
                let now = Utc::now();
                let (mut w, id, _) = org_group(visibility, &[]);
                w.scope_mut("orgs/o").groups[1].allows_public_repositories = public;
                let j = w
                    .enqueue_job(&EnqueueJob::new("o/any", &["x"]), now)
                    .unwrap();
                assert_eq!(j.runner_id, Some(id), "{visibility}, public {public}");
            }
        }
    }

    #[test]
    fn a_repositorys_own_runner_is_in_no_group_and_takes_its_jobs() {
        let now = Utc::now();
        let (mut w, org_runner, _) = org_group("selected", &[]);
        let own = w.add_runners("repos/o/r", "own", 1, &["x".into()]).unwrap()[0];
        let j = w.enqueue_job(&EnqueueJob::new("o/r", &["x"]), now).unwrap();
        assert_eq!(j.runner_id, Some(own));
        let k = w.enqueue_job(&EnqueueJob::new("o/r", &["x"]), now).unwrap();
        assert_eq!(k.status, JobStatus::Queued, "the org's runner may not");
        assert!(!w.find_runner(org_runner).unwrap().1.busy);
    }
}
