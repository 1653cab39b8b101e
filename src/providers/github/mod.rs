//! GitHub runner registry over octocrab.
//!
//! [`GithubRegistry`] speaks GitHub's self-hosted runner REST API for one
//! scope (a repository or an organization), with a token or as a GitHub App
//! installation. It makes exactly one HTTP request per call (plus, for an
//! App, the occasional installation-token mint) and never retries: wrap it in
//! [`crate::providers::Retrying`] for backoff. Secrets (tokens, JIT configs, the App key) stay
//! in [`Secret`] and never reach a log line or an error message.
//!
//! Routes used (`{scope}` = `/repos/{owner}/{repo}` or `/orgs/{org}`):
//! `GET {scope}/actions/runners`, `POST {scope}/actions/runners/generate-jitconfig`,
//! `POST {scope}/actions/runners/registration-token`,
//! `DELETE {scope}/actions/runners/{id}`, `GET /orgs/{org}/actions/runner-groups`,
//! `POST /app/installations/{id}/access_tokens`; for scaled pools
//! `GET /repos/{owner}/{repo}/actions/runs?status=` and
//! `GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs` (see `jobs.rs`), and
//! for an organization's scaled pools the access of their runner groups,
//! `GET /orgs/{org}/actions/runner-groups` and
//! `GET /orgs/{org}/actions/runner-groups/{id}/repositories` (see `access.rs`).

mod access;
mod auth;
mod jobs;
pub mod releases;
pub mod saved;
mod transport;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use http::header::{HeaderName, HeaderValue, IF_NONE_MATCH};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

pub use auth::REFRESH_MARGIN_SECS;

use self::auth::Credentials;
use self::transport::{Answer, Transport};
use crate::plan::model::{ObservedRunner, RunnerStatus};
use crate::providers::{
    ErrorKind, JitRunner, ProviderError, RateBudget, RemoveOutcome, RunnerRegistry,
};
use crate::secret::Secret;

/// GitHub.com's API; GHES is `https://HOST/api/v3`.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// Runners per page when listing (GitHub's maximum).
pub const PAGE_SIZE: u32 = 100;

/// The id of every scope's default runner group.
pub const DEFAULT_RUNNER_GROUP_ID: u64 = 1;

/// Where the runners live: the fleet file's scope.
pub use crate::fleet::Scope;

/// `OWNER/REPO` or `ORG`: the scope's page below the web host.
fn web_path(scope: &Scope) -> String {
    match scope {
        Scope::Repository { owner, repo } => format!("{owner}/{repo}"),
        Scope::Organization { org } => org.clone(),
    }
}

/// How to authenticate.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A classic or fine-grained token (`repo` / `admin:org`, or
    /// "Administration: write" / "Self-hosted runners: write").
    Token(Secret<String>),
    /// A GitHub App installation; `private_key_pem` is the App's RSA key.
    App {
        app_id: u64,
        installation_id: u64,
        private_key_pem: Secret<String>,
    },
}

#[derive(Debug, Clone)]
pub struct GithubConfig {
    pub scope: Scope,
    /// [`DEFAULT_API_URL`], `https://HOST/api/v3` for GHES, or a simulator.
    pub api_url: String,
    pub auth: Auth,
    /// Connect, read and write timeout of each request (`None`: wait
    /// forever; tests under paused tokio time need that, see `tests/github.rs`).
    pub timeout: Option<Duration>,
}

impl GithubConfig {
    /// GitHub.com, 30 s timeouts.
    pub fn new(scope: Scope, auth: Auth) -> Self {
        GithubConfig {
            scope,
            api_url: DEFAULT_API_URL.to_string(),
            auth,
            timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// The web URL `config.sh --url` takes, derived from the API URL:
/// `https://api.github.com` → `https://github.com`, `https://api.SUB.ghe.com`
/// → `https://SUB.ghe.com`, GHES `https://HOST/api/v3` → `https://HOST`, and
/// anything else (the simulator: `http://127.0.0.1:PORT`) is used as is.
pub fn web_base_url(api_url: &str) -> String {
    let trimmed = api_url.trim_end_matches('/');
    let trimmed = trimmed
        .strip_suffix("/api/v3")
        .or_else(|| trimmed.strip_suffix("/api"))
        .unwrap_or(trimmed);
    match trimmed.split_once("://") {
        Some((scheme, rest)) => match rest.strip_prefix("api.") {
            Some(host) => format!("{scheme}://{host}"),
            None => trimmed.to_string(),
        },
        None => trimmed.to_string(),
    }
}

/// One page of the runner list as last answered, for `If-None-Match`;
/// what [`saved::SavedPages`] keeps.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct CachedPage {
    /// The page's `ETag`, sent back as `If-None-Match`.
    pub etag: String,
    pub runners: Vec<ObservedRunner>,
    /// The `rel="next"` page's path and query.
    pub next: Option<String>,
    /// The list's `total_count`.
    pub total: Option<u64>,
}

/// One page of the runner list: its runners, the next page's path, and
/// how many runners the list says it has.
type Page = (Vec<ObservedRunner>, Option<String>, Option<u64>);

/// Pages of the runner list fetched at once after the first: 6,400
/// runners in two round trips, within GitHub's secondary limit of 100
/// concurrent requests.
const PAGES_IN_FLIGHT: usize = 64;

pub struct GithubRegistry {
    scope: Scope,
    web_url: String,
    transport: Transport,
    credentials: Credentials,
    /// Keyed by the page's path and query.
    pages: Mutex<HashMap<String, CachedPage>>,
    /// Where `pages` is kept for the next process, and whether a page
    /// changed since it was last written.
    saved: Option<saved::SavedPages>,
    pages_changed: std::sync::atomic::AtomicBool,
    /// Lowercased runner group name → id (organizations only).
    groups: tokio::sync::Mutex<Option<HashMap<String, u64>>>,
    /// The fleet's name and each pool's `runner.workFolder`, for the JIT
    /// config of a slot `<fleet>-<pool>-<index>`.
    work_folders: Option<(String, HashMap<String, String>)>,
    /// Workflow runs and jobs as last listed, for conditional requests.
    queue: Mutex<jobs::JobCache>,
}

impl std::fmt::Debug for GithubRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubRegistry")
            .field("scope", &self.scope)
            .field("web_url", &self.web_url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct RunnerList {
    #[serde(default)]
    total_count: Option<u64>,
    runners: Vec<ApiRunner>,
}

#[derive(Deserialize)]
struct ApiRunner {
    id: u64,
    name: String,
    status: String,
    busy: bool,
    #[serde(default)]
    labels: Vec<ApiLabel>,
}

#[derive(Deserialize)]
struct ApiLabel {
    name: String,
}

#[derive(Deserialize)]
struct JitAnswer {
    runner: ApiRunner,
    encoded_jit_config: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: String,
}

impl From<ApiRunner> for ObservedRunner {
    fn from(r: ApiRunner) -> Self {
        ObservedRunner {
            id: r.id,
            name: r.name,
            // GitHub documents "online" and "offline"; anything else is not
            // able to take a job, which is what offline means to the planner.
            status: if r.status == "online" {
                RunnerStatus::Online
            } else {
                RunnerStatus::Offline
            },
            busy: r.busy,
            labels: r.labels.into_iter().map(|l| l.name).collect(),
            offline_since: None,
        }
    }
}

/// The `rel="next"` target of a `Link` header, as path and query (the host
/// is dropped so credentials only ever go to the configured API URL).
fn next_link(link: Option<&str>) -> Option<String> {
    link?.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        if !params.split(';').any(|p| p.trim() == "rel=\"next\"") {
            return None;
        }
        let url = url.trim().trim_start_matches('<').trim_end_matches('>');
        let uri: http::Uri = url.parse().ok()?;
        uri.path_and_query().map(|pq| pq.as_str().to_string())
    })
}

impl GithubRegistry {
    /// Must be called inside a Tokio runtime (octocrab's client spawns its
    /// worker task). Makes no request: a bad token shows on first use.
    pub fn new(config: GithubConfig) -> Result<Self, ProviderError> {
        let target = config.scope.api_path();
        let transport = Transport::new(&config.api_url, target.clone(), config.timeout)?;
        let credentials = Credentials::new(config.auth, &target)?;
        let web_url = format!(
            "{}/{}",
            web_base_url(&config.api_url),
            web_path(&config.scope)
        );
        Ok(GithubRegistry {
            scope: config.scope,
            web_url,
            transport,
            credentials,
            pages: Mutex::new(HashMap::new()),
            saved: None,
            pages_changed: std::sync::atomic::AtomicBool::new(false),
            groups: tokio::sync::Mutex::new(None),
            work_folders: None,
            queue: Mutex::new(jobs::JobCache::default()),
        })
    }

    /// Keep the runner list's pages and their ETags in `path` for the next
    /// process (see `saved`), starting from what it holds.
    pub fn with_saved_pages(mut self, path: &std::path::Path, api_url: &str) -> Self {
        let saved = saved::SavedPages::new(path, api_url, &self.scope.api_path());
        *self.pages.lock().unwrap_or_else(|e| e.into_inner()) = saved.load();
        self.saved = Some(saved);
        self
    }

    /// JIT configs of `fleet`'s slots name their pool's `runner.workFolder`;
    /// other names, and every slot without this, get GitHub's default `_work`.
    pub fn with_pools(mut self, fleet: &crate::fleet::Fleet) -> Self {
        let folders = fleet
            .spec
            .pools
            .iter()
            .map(|p| (p.name.clone(), p.runner.work_folder.clone()))
            .collect();
        self.work_folders = Some((fleet.metadata.name.clone(), folders));
        self
    }

    fn work_folder(&self, slot: &str) -> &str {
        self.work_folders
            .as_ref()
            .and_then(|(fleet, folders)| {
                let (pool, _) = crate::model::names::parse_slot_name(fleet, slot)?;
                folders.get(pool)
            })
            .map(String::as_str)
            .unwrap_or("_work")
    }

    /// One authenticated request. An App installation token GitHub rejects
    /// (401) is dropped and the request sent once more with a fresh one:
    /// a 401 means the request was not carried out, so even a POST is safe.
    async fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        extra: &[(HeaderName, HeaderValue)],
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, ProviderError> {
        let mut retried = false;
        loop {
            let authorization = self.credentials.authorization(&self.transport).await?;
            let answer = self
                .transport
                .send(
                    what,
                    method.clone(),
                    path,
                    Some(&authorization),
                    extra,
                    body,
                )
                .await?;
            if answer.status == StatusCode::UNAUTHORIZED
                && !retried
                && self.credentials.forget().await
            {
                retried = true;
                continue;
            }
            return Ok(answer);
        }
    }

    fn scope_error(&self, what: &str, answer: &Answer) -> ProviderError {
        let mut err = self.transport.classify(what, answer);
        // A 404 on a scope route means the repository or organization is
        // unknown or invisible to our credentials, not that a runner is gone.
        if err.kind == ErrorKind::NotFound {
            err.kind = ErrorKind::Refused;
        }
        err
    }

    /// Runner group id by name. Repositories have only the default group;
    /// organizations are asked once and the answer cached (and asked again
    /// when a name is not found, in case the group was just made).
    async fn runner_group_id(&self, group: &str) -> Result<u64, ProviderError> {
        let wanted = group.to_lowercase();
        let org = match &self.scope {
            Scope::Repository { .. } => {
                return if wanted.is_empty() || wanted == "default" {
                    Ok(DEFAULT_RUNNER_GROUP_ID)
                } else {
                    Err(self.transport.error(
                        ErrorKind::Refused,
                        format!("runner group {group:?}: repositories have only the default group"),
                    ))
                };
            }
            Scope::Organization { org } => org,
        };
        if wanted.is_empty() {
            return Ok(DEFAULT_RUNNER_GROUP_ID);
        }
        let mut cache = self.groups.lock().await;
        if let Some(id) = cache.as_ref().and_then(|c| c.get(&wanted)) {
            return Ok(*id);
        }
        let found = access::group_ids(&self.runner_groups(org).await?);
        let id = found.get(&wanted).copied();
        *cache = Some(found);
        id.ok_or_else(|| {
            self.transport.error(
                ErrorKind::Refused,
                format!("runner group {group:?} does not exist"),
            )
        })
    }
}

impl GithubRegistry {
    /// One page of the runner list, asked with the ETag of its last answer
    /// (a 304 is free of the rate limit).
    async fn runner_page(&self, p: &str) -> Result<Page, ProviderError> {
        const WHAT: &str = "list runners";
        let etag = {
            let cache = self.pages.lock().unwrap_or_else(|e| e.into_inner());
            cache.get(p).map(|c| c.etag.clone())
        };
        // GitHub's description declares 304 only for some routes, not
        // this one; GitHub's guidance answers every conditional GET with
        // an unchanged ETag by 304, free of the rate limit
        // (https://docs.github.com/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate).
        let mut extra = Vec::new();
        if let Some(tag) = etag.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
            extra.push((IF_NONE_MATCH, tag));
        }
        let answer = self.call(WHAT, Method::GET, p, &extra, None).await?;
        match answer.status {
            StatusCode::NOT_MODIFIED => {
                let cache = self.pages.lock().unwrap_or_else(|e| e.into_inner());
                match cache.get(p) {
                    Some(c) => Ok((c.runners.clone(), c.next.clone(), c.total)),
                    None => Err(self.transport.error(
                        ErrorKind::Transient,
                        "list runners: 304 for a page not in the cache",
                    )),
                }
            }
            StatusCode::OK => {
                let list: RunnerList = answer.json(self.transport.target(), WHAT)?;
                let total = list.total_count;
                let page: Vec<ObservedRunner> =
                    list.runners.into_iter().map(ObservedRunner::from).collect();
                let next = next_link(answer.header("link"));
                let mut cache = self.pages.lock().unwrap_or_else(|e| e.into_inner());
                self.pages_changed
                    .store(true, std::sync::atomic::Ordering::Release);
                match answer.header("etag") {
                    Some(tag) => {
                        cache.insert(
                            p.to_string(),
                            CachedPage {
                                etag: tag.to_string(),
                                runners: page.clone(),
                                next: next.clone(),
                                total,
                            },
                        );
                    }
                    None => {
                        cache.remove(p);
                    }
                }
                Ok((page, next, total))
            }
            _ => Err(self.scope_error(WHAT, &answer)),
        }
    }
}

#[async_trait]
impl RunnerRegistry for GithubRegistry {
    fn scope(&self) -> String {
        self.scope.api_path()
    }

    /// The runner list: the pages it had last time at once (each
    /// conditional, so an unchanged list is one round trip of 304s), or the
    /// first page alone when there is no last time; then, once the first
    /// page says how many there are, any further pages at once, at most
    /// [`PAGES_IN_FLIGHT`] in flight; then any page a list that grew
    /// meanwhile links after them.
    async fn observe(&self) -> Result<Vec<ObservedRunner>, ProviderError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        let base = format!("/{}/actions/runners", self.scope.api_path());
        let page_path = |n: u64| format!("{base}?per_page={PAGE_SIZE}&page={n}");
        let pages_of = |total: Option<u64>| {
            total
                .map_or(1, |t| t.div_ceil(PAGE_SIZE as u64).max(1))
                .min(10_000)
        };
        let fetch = |pages: std::ops::RangeInclusive<u64>| {
            stream::iter(pages.map(&page_path))
                .map(|p| async move { self.runner_page(&p).await })
                .buffered(PAGES_IN_FLIGHT)
                .try_collect::<Vec<Page>>()
        };
        // How many pages the first page said last time. Asking for them
        // together with the first costs nothing more when the list is
        // unchanged; a list that shrank answers the pages past its end
        // with no runners.
        let known = {
            let cache = self.pages.lock().unwrap_or_else(|e| e.into_inner());
            cache.get(&page_path(1)).map_or(1, |c| pages_of(c.total))
        };
        let mut got = fetch(1..=known).await?;
        let count = pages_of(got.first().and_then(|(_, _, total)| *total));
        if count > known && got.last().is_some_and(|(_, next, _)| next.is_some()) {
            got.extend(fetch(known + 1..=count).await?);
        }
        let mut pages = got.len();
        let mut next = got.last().and_then(|(_, n, _)| n.clone());
        let mut runners: Vec<ObservedRunner> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut add = |page: Vec<ObservedRunner>, runners: &mut Vec<ObservedRunner>| {
            // A list that changes between pages can repeat a runner.
            runners.extend(page.into_iter().filter(|r| seen.insert(r.id)));
        };
        for (page, _, _) in got {
            add(page, &mut runners);
        }
        while let Some(p) = next.take() {
            pages += 1;
            if pages > 10_000 {
                return Err(self.transport.error(
                    ErrorKind::Transient,
                    "list runners: pagination does not end",
                ));
            }
            let (page, n, _) = self.runner_page(&p).await?;
            add(page, &mut runners);
            next = n;
        }
        if let Some(saved) = &self.saved {
            if self
                .pages_changed
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                let cache = self.pages.lock().unwrap_or_else(|e| e.into_inner());
                saved.save(&cache);
            }
        }
        tracing::debug!(target: "hangar::github", scope = %self.scope.api_path(), runners = runners.len(), pages, "observed");
        Ok(runners)
    }

    async fn jit_config(
        &self,
        name: &str,
        labels: &[String],
        runner_group: &str,
    ) -> Result<JitRunner, ProviderError> {
        const WHAT: &str = "generate jit config";
        let group_id = self.runner_group_id(runner_group).await?;
        let body = json!({
            "name": name,
            "runner_group_id": group_id,
            "labels": labels,
            "work_folder": self.work_folder(name),
        });
        let path = format!(
            "/{}/actions/runners/generate-jitconfig",
            self.scope.api_path()
        );
        let answer = self
            .call(WHAT, Method::POST, &path, &[], Some(&body))
            .await?;
        match answer.status {
            StatusCode::CREATED => {
                let parsed: JitAnswer = answer.json(self.transport.target(), WHAT)?;
                tracing::info!(target: "hangar::github", runner = name, runner_id = parsed.runner.id, "jit runner registered");
                Ok(JitRunner {
                    runner_id: parsed.runner.id,
                    config: Secret::new(parsed.encoded_jit_config),
                })
            }
            StatusCode::CONFLICT => Err(self.transport.error(
                ErrorKind::Refused,
                format!("{WHAT}: a runner named {name:?} already exists"),
            )),
            _ => Err(self.scope_error(WHAT, &answer)),
        }
    }

    async fn registration_token(&self) -> Result<Secret<String>, ProviderError> {
        const WHAT: &str = "registration token";
        let path = format!(
            "/{}/actions/runners/registration-token",
            self.scope.api_path()
        );
        let answer = self.call(WHAT, Method::POST, &path, &[], None).await?;
        if answer.status != StatusCode::CREATED {
            return Err(self.scope_error(WHAT, &answer));
        }
        let parsed: TokenAnswer = answer.json(self.transport.target(), WHAT)?;
        Ok(Secret::new(parsed.token))
    }

    fn registration_url(&self) -> String {
        self.web_url.clone()
    }

    async fn remove(&self, runner_id: u64) -> Result<RemoveOutcome, ProviderError> {
        const WHAT: &str = "remove runner";
        let path = format!("/{}/actions/runners/{runner_id}", self.scope.api_path());
        let answer = self.call(WHAT, Method::DELETE, &path, &[], None).await?;
        match answer.status {
            StatusCode::NO_CONTENT => {
                tracing::info!(target: "hangar::github", runner_id, "runner removed");
                Ok(RemoveOutcome::Removed)
            }
            // GitHub's description declares only 204 and 422 for this
            // route; a 404 for a runner id that no longer exists is what
            // GitHub answers for any unknown resource ("Troubleshooting the
            // REST API": https://docs.github.com/rest/using-the-rest-api/troubleshooting-the-rest-api#404-not-found-for-an-existing-resource),
            // and for a delete it means the runner is gone.
            StatusCode::NOT_FOUND => Ok(RemoveOutcome::Gone),
            // 422 is "Validation failed, or the endpoint has been spammed"
            // (https://docs.github.com/rest/actions/self-hosted-runners#delete-a-self-hosted-runner-from-a-repository).
            // Only the answer that says the runner is running a job
            // ("Bad request - Runner \"NAME\" is still running a job") means
            // busy; any other 422 is retried later, never read as busy.
            StatusCode::UNPROCESSABLE_ENTITY if says_busy(&answer.body) => {
                tracing::info!(target: "hangar::github", runner_id, "runner busy, not removed");
                Ok(RemoveOutcome::Busy)
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                let mut err = self.transport.classify(WHAT, &answer);
                err.kind = ErrorKind::Transient;
                Err(err)
            }
            _ => Err(self.transport.classify(WHAT, &answer)),
        }
    }

    async fn jobs(
        &self,
        repositories: &[String],
    ) -> Result<Vec<crate::plan::model::ObservedJob>, ProviderError> {
        self.list_jobs(repositories).await
    }

    async fn group_access(
        &self,
        groups: &[String],
    ) -> Result<std::collections::BTreeMap<String, crate::plan::model::GroupAccess>, ProviderError>
    {
        self.read_group_access(groups).await
    }

    fn rate_budget(&self) -> Option<RateBudget> {
        self.transport.budget()
    }
}

/// Whether a 422 body on runner delete says the runner is running a job.
fn says_busy(body: &str) -> bool {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_lowercase))
        .unwrap_or_default();
    message.contains("running a job") || message.contains("busy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_422_that_says_so_is_busy() {
        assert!(says_busy(
            r#"{"message":"Bad request - Runner \"a\" is still running a job\""}"#
        ));
        assert!(!says_busy(r#"{"message":"Validation Failed"}"#));
        assert!(!says_busy("not json"));
    }

    #[test]
    fn web_url_follows_the_api_host() {
        assert_eq!(web_base_url("https://api.github.com"), "https://github.com");
        assert_eq!(
            web_base_url("https://api.github.com/"),
            "https://github.com"
        );
        assert_eq!(
            web_base_url("https://ghe.example.com/api/v3"),
            "https://ghe.example.com"
        );
        assert_eq!(
            web_base_url("https://api.octo.ghe.com"),
            "https://octo.ghe.com"
        );
        assert_eq!(
            web_base_url("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn next_link_is_taken_as_path_only() {
        let link = r#"<https://evil.example/repos/o/r/actions/runners?per_page=100&page=2>; rel="next", <https://api.github.com/repos/o/r/actions/runners?per_page=100&page=3>; rel="last""#;
        assert_eq!(
            next_link(Some(link)).as_deref(),
            Some("/repos/o/r/actions/runners?per_page=100&page=2")
        );
        let last_only = r#"<https://api.github.com/x?page=1>; rel="first", <https://api.github.com/x?page=3>; rel="prev""#;
        assert_eq!(next_link(Some(last_only)), None);
        assert_eq!(next_link(None), None);
    }

    #[tokio::test]
    async fn debug_shows_no_credentials() {
        let reg = GithubRegistry::new(GithubConfig::new(
            Scope::Organization { org: "acme".into() },
            Auth::Token(Secret::new("ghp_canary_debug".into())),
        ))
        .unwrap();
        let shown = format!("{reg:?}");
        assert!(!shown.contains("ghp_canary_debug"), "{shown}");
        assert_eq!(reg.registration_url(), "https://github.com/acme");
        assert_eq!(reg.scope(), "orgs/acme");
    }
}
