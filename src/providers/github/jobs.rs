//! The queue scaled pools follow: the workflow runs of each repository that
//! are queued or in progress (`GET /repos/{owner}/{repo}/actions/runs?status=`),
//! then the jobs of those runs (`GET .../actions/runs/{run_id}/jobs`).
//! Every list is asked with the ETag of its last answer, so an unchanged
//! queue costs no rate limit (304). A run's `updated_at` is not trusted to
//! skip its job list: it has one-second precision, and a job assigned in
//! the second its run changed would be missed; the job list's 304 is free.

use std::collections::{BTreeSet, HashMap};

use http::header::{HeaderValue, IF_NONE_MATCH};
use http::{Method, StatusCode};
use serde::Deserialize;

use super::{next_link, GithubRegistry, PAGE_SIZE};
use crate::plan::model::{JobStatus, ObservedJob};
use crate::providers::{ErrorKind, ProviderError};

/// One list page as last answered, for `If-None-Match`.
pub(crate) struct CachedList {
    etag: String,
    body: String,
    next: Option<String>,
}

/// What the registry keeps between passes about the queue (and the runner
/// groups' access, see `access.rs`).
#[derive(Default)]
pub(crate) struct JobCache {
    /// Keyed by path and query.
    lists: HashMap<String, CachedList>,
}

#[derive(Deserialize)]
struct RunList {
    workflow_runs: Vec<ApiRun>,
}

#[derive(Deserialize)]
struct ApiRun {
    id: u64,
    #[serde(default)]
    repository: Option<ApiRunRepository>,
}

#[derive(Deserialize)]
struct ApiRunRepository {
    #[serde(default)]
    private: Option<bool>,
}

#[derive(Deserialize)]
struct JobList {
    jobs: Vec<ApiJob>,
}

#[derive(Deserialize)]
struct ApiJob {
    id: u64,
    run_id: u64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: Vec<String>,
    status: String,
    #[serde(default)]
    runner_name: Option<String>,
}

/// Run statuses that can hold a job waiting for or on a runner.
const RUN_STATUSES: [&str; 2] = ["queued", "in_progress"];

impl GithubRegistry {
    /// One page, conditionally: the body and the next page's path.
    pub(super) async fn list_page(
        &self,
        what: &str,
        path: &str,
    ) -> Result<(String, Option<String>), ProviderError> {
        let etag = {
            let cache = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            cache.lists.get(path).map(|c| c.etag.clone())
        };
        let mut extra = Vec::new();
        if let Some(tag) = etag.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
            extra.push((IF_NONE_MATCH, tag));
        }
        let answer = self.call(what, Method::GET, path, &extra, None).await?;
        let mut cache = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        match answer.status {
            StatusCode::NOT_MODIFIED => match cache.lists.get(path) {
                Some(c) => Ok((c.body.clone(), c.next.clone())),
                None => Err(self.transport.error(
                    ErrorKind::Transient,
                    format!("{what}: 304 for a page not in the cache"),
                )),
            },
            StatusCode::OK => {
                let next = next_link(answer.header("link"));
                match answer.header("etag") {
                    Some(tag) => {
                        cache.lists.insert(
                            path.to_string(),
                            CachedList {
                                etag: tag.to_string(),
                                body: answer.body.clone(),
                                next: next.clone(),
                            },
                        );
                    }
                    None => {
                        cache.lists.remove(path);
                    }
                }
                Ok((answer.body, next))
            }
            _ => Err(self.scope_error(what, &answer)),
        }
    }

    /// Every page of a list, each parsed with `parse`.
    pub(super) async fn all_pages<T>(
        &self,
        what: &str,
        first: String,
        parse: impl Fn(&str) -> Result<Vec<T>, ProviderError>,
    ) -> Result<Vec<T>, ProviderError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(p) = next.take() {
            pages += 1;
            if pages > 1000 {
                return Err(self.transport.error(
                    ErrorKind::Transient,
                    format!("{what}: pagination does not end"),
                ));
            }
            let (body, n) = self.list_page(what, &p).await?;
            out.extend(parse(&body)?);
            next = n;
        }
        Ok(out)
    }

    /// The queued and in-progress jobs of `repositories` (`OWNER/REPO`).
    pub(crate) async fn list_jobs(
        &self,
        repositories: &[String],
    ) -> Result<Vec<ObservedJob>, ProviderError> {
        let target = self.transport.target().to_string();
        let mut jobs = Vec::new();
        let mut live_runs = BTreeSet::new();
        for repo in repositories {
            let mut runs: Vec<ApiRun> = Vec::new();
            for status in RUN_STATUSES {
                const WHAT: &str = "list workflow runs";
                let first =
                    format!("/repos/{repo}/actions/runs?status={status}&per_page={PAGE_SIZE}");
                let page = self
                    .all_pages(WHAT, first, |body| {
                        let list: RunList = parse(&target, WHAT, body)?;
                        Ok(list.workflow_runs)
                    })
                    .await?;
                runs.extend(page);
            }
            for run in runs {
                if !live_runs.insert(run.id) {
                    continue;
                }
                let private = run.repository.and_then(|r| r.private);
                const WHAT: &str = "list jobs of a run";
                let first = format!(
                    "/repos/{repo}/actions/runs/{}/jobs?per_page={PAGE_SIZE}",
                    run.id
                );
                let listed = self
                    .all_pages(WHAT, first, |body| {
                        let list: JobList = parse(&target, WHAT, body)?;
                        Ok(list.jobs)
                    })
                    .await?;
                let run_jobs = listed.into_iter().filter_map(|j| {
                    let status = match j.status.as_str() {
                        "queued" => JobStatus::Queued,
                        "in_progress" => JobStatus::InProgress,
                        _ => return None,
                    };
                    Some(ObservedJob {
                        id: j.id,
                        run_id: j.run_id,
                        repository: repo.clone(),
                        name: j.name,
                        labels: j.labels,
                        status,
                        runner_name: j.runner_name.filter(|n| !n.is_empty()),
                        private,
                    })
                });
                jobs.extend(run_jobs);
            }
        }
        // The job lists of runs that ended are forgotten.
        let mut cache = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .lists
            .retain(|path, _| job_list_run(path).is_none_or(|id| live_runs.contains(&id)));
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }
}

/// The run id of a `.../actions/runs/{id}/jobs` path.
fn job_list_run(path: &str) -> Option<u64> {
    let (head, _) = path.split_once("/jobs")?;
    head.rsplit('/').next()?.parse().ok()
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(
    target: &str,
    what: &str,
    body: &str,
) -> Result<T, ProviderError> {
    serde_json::from_str(body).map_err(|e| {
        ProviderError::new(
            target,
            ErrorKind::Transient,
            format!(
                "{what}: unexpected answer ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_list_path_names_its_run() {
        assert_eq!(
            job_list_run("/repos/o/r/actions/runs/5001/jobs?per_page=100"),
            Some(5001)
        );
        assert_eq!(job_list_run("/repos/o/r/actions/runs?status=queued"), None);
    }
}
