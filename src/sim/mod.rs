//! A stateful simulator of GitHub's self-hosted runner REST API.
//!
//! An axum app that keeps runners, runner groups and tokens in memory
//! (optionally in a JSON state file, loaded at start and saved after each
//! change) and answers, for `/repos/{owner}/{repo}` and `/orgs/{org}`, with
//! GitHub's field names, status codes, `Link` pagination, ETags and rate-limit
//! headers. A control API under `/_sim/` plays the VM's part and injects
//! faults. See `src/sim/README.md` for the routes and the GitHub documentation
//! pages the shapes come from.
//!
//! In tests: [`start`] binds `127.0.0.1:0` in-process and returns a
//! [`SimHandle`] whose methods change the world directly. `hangar github-sim`
//! calls [`serve`].

mod api;
mod app;
mod control;
mod groups;
mod jobs;
mod layer;
mod releases;
mod tarball;
mod world;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};

pub use groups::repo_id;
pub use jobs::{EnqueueJob, JobStatus, SimJob, SimRun, SimWebhook};
pub use releases::{
    PublishRelease, SimAsset, SimRelease, RUNNER_ARCHES, RUNNER_REPO, SEED_RUNNER_VERSION,
};
pub use tarball::fake_runner_tarball;
pub use world::{
    check_labels, scope_key, IssuedToken, RegisterRunner, SimError, SimGroup, SimLabel, SimRunner,
    SimScope, SimWorld, TokenKind,
};

/// A GitHub App the simulator knows: installation tokens are issued for
/// `installation_id` to a JWT signed with the key whose public half is
/// `public_key_pem` and whose `iss` is `app_id`.
#[derive(Debug, Clone)]
pub struct SimApp {
    pub app_id: u64,
    pub installation_id: u64,
    pub public_key_pem: String,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The token accepted as `Authorization: Bearer T` or `token T`.
    pub token: String,
    /// Load the world from here at start (if the file exists) and save it
    /// after each change.
    pub state_file: Option<PathBuf>,
    pub app: Option<SimApp>,
    /// The primary rate limit per hour (`x-ratelimit-limit`); GitHub's is
    /// 5,000 for a token.
    pub rate_limit: u64,
    /// Publish actions/runner [`SEED_RUNNER_VERSION`] (a fake runner) when
    /// the world holds no runner release, so `runner.version: latest`
    /// resolves without the internet.
    pub seed_runner_release: bool,
    /// Keep every API request and answer ([`SimHandle::exchanges`]), for
    /// checking them against GitHub's description.
    pub record_exchanges: bool,
}

impl SimConfig {
    pub fn new(token: impl Into<String>) -> Self {
        SimConfig {
            token: token.into(),
            state_file: None,
            app: None,
            rate_limit: 5000,
            seed_runner_release: true,
            record_exchanges: false,
        }
    }
}

/// A fault to inject into the next `count` matching API requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(flatten)]
    pub kind: FaultKind,
    pub count: u32,
    /// Only requests whose route key (e.g. `POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig`)
    /// contains this text.
    #[serde(default)]
    pub route: Option<String>,
    /// Carry the request out, then answer with the fault instead of the
    /// real answer: the client cannot know whether it took effect.
    #[serde(default)]
    pub after: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// A 5xx answer with GitHub's error body.
    ServerError { status: u16 },
    /// `422` "Validation Failed" (what GitHub answers when a request is
    /// invalid or "the endpoint has been spammed").
    ValidationFailed,
    /// `429` with `retry-after`.
    RateLimited { retry_after_secs: u64 },
    /// `403` "You have exceeded a secondary rate limit", with `retry-after`
    /// when given.
    SecondaryLimit { retry_after_secs: Option<u64> },
}

impl Fault {
    pub fn new(kind: FaultKind, count: u32) -> Self {
        Fault {
            kind,
            count,
            route: None,
            after: false,
        }
    }

    pub fn on_route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    pub fn after_effect(mut self) -> Self {
        self.after = true;
        self
    }
}

/// Delay added to matching API answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    pub ms: u64,
    #[serde(default)]
    pub route: Option<String>,
}

/// Request counters of the GitHub API routes (the control API is not
/// counted). Route keys are `METHOD TEMPLATE`, e.g.
/// `GET /repos/{owner}/{repo}/actions/runners`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    pub total: u64,
    pub by_route: BTreeMap<String, u64>,
    pub by_status: BTreeMap<u16, u64>,
    pub by_route_status: BTreeMap<String, BTreeMap<u16, u64>>,
    /// Answers that were `304 Not Modified`.
    pub not_modified: u64,
    /// Requests charged to the primary rate limit.
    pub rate_limited_cost: u64,
}

impl SimStats {
    /// Requests whose route key contains `route` (all statuses).
    pub fn count(&self, route: &str) -> u64 {
        self.by_route
            .iter()
            .filter(|(k, _)| k.contains(route))
            .map(|(_, v)| v)
            .sum()
    }

    /// Requests whose route key contains `route` answered with `status`.
    pub fn count_status(&self, route: &str, status: u16) -> u64 {
        self.by_route_status
            .iter()
            .filter(|(k, _)| k.contains(route))
            .filter_map(|(_, m)| m.get(&status))
            .sum()
    }

    fn record(&mut self, route: &str, status: u16) {
        self.total += 1;
        *self.by_route.entry(route.to_string()).or_default() += 1;
        *self.by_status.entry(status).or_default() += 1;
        *self
            .by_route_status
            .entry(route.to_string())
            .or_default()
            .entry(status)
            .or_default() += 1;
        if status == 304 {
            self.not_modified += 1;
        }
    }
}

/// The primary rate-limit window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateWindow {
    pub limit: u64,
    pub remaining: u64,
    /// Epoch seconds.
    pub reset: u64,
}

impl RateWindow {
    fn fresh(limit: u64) -> Self {
        RateWindow {
            limit,
            remaining: limit,
            reset: Utc::now().timestamp().max(0) as u64 + 3600,
        }
    }

    fn roll(&mut self) {
        if Utc::now().timestamp().max(0) as u64 >= self.reset {
            *self = RateWindow::fresh(self.limit);
        }
    }
}

/// One API request and its answer, as the simulator saw them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    pub method: String,
    /// The route, e.g. `/repos/{owner}/{repo}/actions/runners`.
    pub template: String,
    pub path: String,
    pub query: String,
    pub request_body: String,
    pub status: u16,
    /// Empty for a release asset's bytes.
    pub response_body: String,
}

pub(crate) struct Inner {
    pub exchanges: Vec<Exchange>,
    pub world: SimWorld,
    pub faults: Vec<Fault>,
    pub latency: Option<Latency>,
    pub stats: SimStats,
    pub rate: RateWindow,
    /// Where `workflow_job` webhooks go, and the base URL their payloads'
    /// links name.
    pub webhook: Option<(jobs::SimWebhook, String)>,
}

pub(crate) struct Shared {
    pub config: SimConfig,
    inner: Mutex<Inner>,
}

impl Shared {
    fn load(config: SimConfig) -> std::io::Result<Shared> {
        let world = match &config.state_file {
            Some(path) => {
                match crate::files::state::read(path, crate::files::state::MAX_STATE_BYTES)
                    .map_err(std::io::Error::other)?
                {
                    Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{}: {e}", path.display()),
                        )
                    })?,
                    None => SimWorld::default(),
                }
            }
            None => SimWorld::default(),
        };
        let mut world = world;
        if config.seed_runner_release && !world.releases.contains_key(RUNNER_REPO) {
            world
                .publish_release(&PublishRelease::runner(SEED_RUNNER_VERSION), Utc::now())
                .map_err(std::io::Error::other)?;
        }
        let rate = RateWindow::fresh(config.rate_limit);
        Ok(Shared {
            config,
            inner: Mutex::new(Inner {
                exchanges: Vec::new(),
                world,
                faults: Vec::new(),
                latency: None,
                stats: SimStats::default(),
                rate,
                webhook: None,
            }),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the world and save it (when a state file is configured).
    pub(crate) fn change<T>(&self, f: impl FnOnce(&mut SimWorld) -> T) -> T {
        let mut inner = self.lock();
        let before = inner
            .webhook
            .is_some()
            .then(|| jobs::job_statuses(&inner.world));
        let out = f(&mut inner.world);
        // GitHub hands queued jobs to runners as soon as one fits: after
        // any change (a runner online, idle, relabelled).
        inner.world.assign_jobs(Utc::now());
        self.save(&inner.world);
        if let (Some(before), Some((hook, base))) = (before, inner.webhook.clone()) {
            let sent = jobs::deliveries(&inner.world, &before, &base);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                for (delivery, body) in sent {
                    rt.spawn(jobs::deliver(hook.clone(), delivery, body));
                }
            }
        }
        out
    }

    fn save(&self, world: &SimWorld) {
        let Some(path) = &self.config.state_file else {
            return;
        };
        let result = serde_json::to_vec_pretty(world)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                crate::files::state::write_atomic(path, &bytes).map_err(std::io::Error::other)
            });
        if let Err(e) = result {
            tracing::warn!(target: "hangar::sim", path = %path.display(), error = %e, "saving state failed");
        }
    }
}

fn app(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .merge(api::routes())
        .merge(app::routes())
        .merge(groups::routes())
        .merge(releases::routes())
        .merge(jobs::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            layer::github_layer,
        ))
        .with_state(shared.clone())
        .merge(control::router(shared))
}

/// Serve the simulator on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, config: SimConfig) -> std::io::Result<()> {
    let shared = Arc::new(Shared::load(config)?);
    axum::serve(listener, app(shared)).await
}

/// Start the simulator in-process on `127.0.0.1:0`.
pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
    let shared = Arc::new(Shared::load(config)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = app(shared.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(SimHandle {
        base_url: format!("http://{addr}"),
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}

/// A running in-process simulator. Its methods act on the world directly
/// (no HTTP), for tests that play the VM's part.
pub struct SimHandle {
    /// `http://127.0.0.1:PORT`: the API URL to give the provider.
    pub base_url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    pub fn stats(&self) -> SimStats {
        self.shared.lock().stats.clone()
    }

    /// The requests and answers kept with `SimConfig::record_exchanges`.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.lock().exchanges.clone()
    }

    pub fn reset_stats(&self) {
        self.shared.lock().stats = SimStats::default();
    }

    /// A copy of the whole world.
    pub fn world(&self) -> SimWorld {
        self.shared.lock().world.clone()
    }

    pub fn runner(&self, id: u64) -> Option<SimRunner> {
        self.shared
            .lock()
            .world
            .find_runner(id)
            .map(|(_, r)| r.clone())
    }

    /// The runner of that name in `scope` (`repos/o/r` or `orgs/o`).
    pub fn runner_by_name(&self, scope: &str, name: &str) -> Option<SimRunner> {
        let key = scope_key(scope).ok()?;
        let inner = self.shared.lock();
        inner
            .world
            .scope(&key)?
            .runners
            .values()
            .find(|r| r.name == name)
            .cloned()
    }

    /// Issue a registration token for `scope`, as the API route does.
    pub fn registration_token(&self, scope: &str) -> Result<String, SimError> {
        let key = scope_key(scope)?;
        Ok(self.shared.change(|w| {
            w.issue_token(TokenKind::Registration, Some(key), Utc::now())
                .token
        }))
    }

    /// Register a runner as `config.sh` would (checks the token).
    pub fn register_runner(&self, req: &RegisterRunner) -> Result<SimRunner, SimError> {
        self.shared.change(|w| w.register(req, Utc::now()))
    }

    /// Add `count` idle online runners named `PREFIX-0..` to `scope`.
    pub fn add_runners(
        &self,
        scope: &str,
        prefix: &str,
        count: u32,
        labels: &[String],
    ) -> Result<Vec<u64>, SimError> {
        self.shared
            .change(|w| w.add_runners(scope, prefix, count, labels))
    }

    /// The guest's `run.sh --jitconfig CONFIG`: its runner goes online.
    pub fn run_jit(&self, encoded_jit_config: &str) -> Result<SimRunner, SimError> {
        self.shared.change(|w| w.run_jit(encoded_jit_config))
    }

    pub fn set_online(&self, runner_id: u64, online: bool) -> Result<SimRunner, SimError> {
        self.shared.change(|w| w.set_online(runner_id, online))
    }

    pub fn start_job(&self, runner_id: u64) -> Result<SimRunner, SimError> {
        self.shared.change(|w| w.start_job(runner_id))
    }

    /// Returns the runner as left; `None` when it was ephemeral and is gone.
    pub fn finish_job(&self, runner_id: u64) -> Result<Option<SimRunner>, SimError> {
        self.shared.change(|w| w.finish_job(runner_id))
    }

    /// A new workflow run with one queued job with `labels`; GitHub's
    /// assignment follows at once when a runner fits.
    pub fn enqueue_job(&self, req: &EnqueueJob) -> Result<SimJob, SimError> {
        self.shared.change(|w| w.enqueue_job(req, Utc::now()))
    }

    /// End a job: a running one succeeds and frees its runner (an
    /// ephemeral runner is removed), a queued one is cancelled.
    pub fn end_job(&self, job_id: u64) -> Result<SimJob, SimError> {
        self.shared
            .change(|w| w.finish_queued_or_running_job(job_id, "success", Utc::now()))
    }

    /// Deliver `workflow_job` webhooks (signed with its secret) to `hook`
    /// from now on; `None` stops.
    pub fn set_webhook(&self, hook: Option<SimWebhook>) {
        let base = self.base_url.clone();
        self.shared.lock().webhook = hook.map(|h| (h, base));
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Vec<SimJob> {
        self.shared.lock().world.jobs()
    }

    /// Publish a release ("a new runner release appears").
    pub fn publish_release(&self, req: &PublishRelease) -> Result<SimRelease, SimError> {
        self.shared.change(|w| w.publish_release(req, Utc::now()))
    }

    pub fn add_runner_group(&self, org: &str, name: &str) -> Result<u64, SimError> {
        self.shared.change(|w| w.add_group(org, name))
    }

    /// Forget every installation token issued (as if they expired or were
    /// revoked): the next request with one answers 401.
    pub fn revoke_installation_tokens(&self) {
        self.shared
            .change(|w| w.tokens.retain(|t| t.kind != TokenKind::Installation));
    }

    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        let mut inner = self.shared.lock();
        inner.faults.clear();
        inner.latency = None;
    }

    pub fn set_latency(&self, latency: Option<Latency>) {
        self.shared.lock().latency = latency;
    }

    pub fn rate(&self) -> RateWindow {
        self.shared.lock().rate
    }

    /// Set the remaining primary budget (e.g. 0 to see the limit hit).
    pub fn set_rate_remaining(&self, remaining: u64) {
        let mut inner = self.shared.lock();
        inner.rate.remaining = remaining.min(inner.rate.limit);
    }

    /// Stop serving and wait for the server task to end.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// How long a latency fault delays an answer.
pub(crate) fn latency_for(inner: &Inner, route: &str) -> Option<Duration> {
    let l = inner.latency.as_ref()?;
    if l.route.as_deref().is_none_or(|r| route.contains(r)) {
        Some(Duration::from_millis(l.ms))
    } else {
        None
    }
}
