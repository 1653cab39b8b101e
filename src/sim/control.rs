//! The control API under `/_sim/`: plays the VM's part and injects faults.
//! Not authenticated and not counted in the statistics.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::api::runner_json;
use super::jobs::{job_answer, EnqueueJob, SimWebhook};
use super::layer::base_url;
use super::world::{RegisterRunner, SimError};
use super::{Fault, Latency, Shared, SimStats};

type Sim = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_sim/state", get(state))
        .route("/_sim/stats", get(stats).delete(reset_stats))
        .route("/_sim/runners", post(register))
        .route("/_sim/runners/bulk", post(bulk))
        .route("/_sim/runners/{id}/online", post(online))
        .route("/_sim/runners/{id}/offline", post(offline))
        .route("/_sim/runners/{id}/job/start", post(job_start))
        .route("/_sim/runners/{id}/job/finish", post(job_finish))
        .route("/_sim/jit/run", post(jit_run))
        .route("/_sim/jobs", get(list_jobs).post(enqueue_job))
        .route("/_sim/jobs/{id}/finish", post(finish_job))
        .route("/_sim/webhook", put(set_webhook).delete(clear_webhook))
        .route("/_sim/registration-token", post(registration_token))
        .route("/_sim/groups", post(add_group))
        .route("/_sim/releases", post(super::releases::publish))
        .route("/_sim/faults", post(add_fault).delete(clear_faults))
        .route("/_sim/latency", put(set_latency).delete(clear_latency))
        .route("/_sim/rate", put(set_rate))
        .with_state(shared)
}

fn err(e: SimError) -> Response {
    let status = match e {
        SimError::NotFound(_) => StatusCode::NOT_FOUND,
        SimError::Conflict(_) => StatusCode::CONFLICT,
        SimError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        SimError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
    };
    (status, Json(json!({ "message": e.to_string() }))).into_response()
}

fn runner_answer(r: Result<super::SimRunner, SimError>) -> Response {
    match r {
        Ok(r) => Json(runner_json(&r)).into_response(),
        Err(e) => err(e),
    }
}

async fn state(State(shared): Sim) -> Response {
    Json(shared.lock().world.clone()).into_response()
}

async fn stats(State(shared): Sim) -> Json<SimStats> {
    Json(shared.lock().stats.clone())
}

async fn reset_stats(State(shared): Sim) -> StatusCode {
    shared.lock().stats = SimStats::default();
    StatusCode::NO_CONTENT
}

async fn register(State(shared): Sim, Json(req): Json<RegisterRunner>) -> Response {
    match shared.change(|w| w.register(&req, Utc::now())) {
        Ok(r) => (StatusCode::CREATED, Json(runner_json(&r))).into_response(),
        Err(e) => err(e),
    }
}

#[derive(Deserialize)]
struct Bulk {
    scope: String,
    prefix: String,
    count: u32,
    #[serde(default)]
    labels: Vec<String>,
}

async fn bulk(State(shared): Sim, Json(b): Json<Bulk>) -> Response {
    match shared.change(|w| w.add_runners(&b.scope, &b.prefix, b.count, &b.labels)) {
        Ok(ids) => (StatusCode::CREATED, Json(json!({ "ids": ids }))).into_response(),
        Err(e) => err(e),
    }
}

async fn online(State(shared): Sim, Path(id): Path<u64>) -> Response {
    runner_answer(shared.change(|w| w.set_online(id, true)))
}

async fn offline(State(shared): Sim, Path(id): Path<u64>) -> Response {
    runner_answer(shared.change(|w| w.set_online(id, false)))
}

async fn job_start(State(shared): Sim, Path(id): Path<u64>) -> Response {
    runner_answer(shared.change(|w| w.start_job(id)))
}

async fn job_finish(State(shared): Sim, Path(id): Path<u64>) -> Response {
    match shared.change(|w| w.finish_job(id)) {
        Ok(Some(r)) => Json(runner_json(&r)).into_response(),
        Ok(None) => Json(json!({ "removed": true })).into_response(),
        Err(e) => err(e),
    }
}

#[derive(Deserialize)]
struct JitRun {
    encoded_jit_config: String,
}

async fn jit_run(State(shared): Sim, Json(j): Json<JitRun>) -> Response {
    runner_answer(shared.change(|w| w.run_jit(&j.encoded_jit_config)))
}

#[derive(Deserialize)]
struct ScopeBody {
    scope: String,
}

async fn registration_token(State(shared): Sim, Json(b): Json<ScopeBody>) -> Response {
    let key = match super::scope_key(&b.scope) {
        Ok(k) => k,
        Err(e) => return err(e),
    };
    let t = shared.change(|w| w.issue_token(super::TokenKind::Registration, Some(key), Utc::now()));
    (
        StatusCode::CREATED,
        Json(json!({ "token": t.token, "expires_at": t.expires_at.to_rfc3339() })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct GroupBody {
    org: String,
    name: String,
}

async fn add_group(State(shared): Sim, Json(g): Json<GroupBody>) -> Response {
    match shared.change(|w| w.add_group(&g.org, &g.name)) {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(e) => err(e),
    }
}

async fn add_fault(State(shared): Sim, Json(f): Json<Fault>) -> StatusCode {
    shared.lock().faults.push(f);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(shared): Sim) -> StatusCode {
    shared.lock().faults.clear();
    StatusCode::NO_CONTENT
}

async fn set_latency(State(shared): Sim, Json(l): Json<Latency>) -> StatusCode {
    shared.lock().latency = Some(l);
    StatusCode::NO_CONTENT
}

async fn clear_latency(State(shared): Sim) -> StatusCode {
    shared.lock().latency = None;
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct RateBody {
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    remaining: Option<u64>,
}

async fn set_rate(State(shared): Sim, Json(b): Json<RateBody>) -> Response {
    let mut inner = shared.lock();
    if let Some(limit) = b.limit {
        inner.rate.limit = limit;
        inner.rate.remaining = inner.rate.remaining.min(limit);
    }
    if let Some(remaining) = b.remaining {
        inner.rate.remaining = remaining.min(inner.rate.limit);
    }
    Json(inner.rate).into_response()
}

async fn list_jobs(State(shared): Sim) -> Response {
    Json(shared.lock().world.jobs()).into_response()
}

async fn enqueue_job(
    State(shared): Sim,
    headers: HeaderMap,
    Json(req): Json<EnqueueJob>,
) -> Response {
    let base = base_url(&headers);
    let result = shared.change(|w| {
        let job = w.enqueue_job(&req, Utc::now())?;
        Ok(job_answer(w, &base, job.id))
    });
    match result {
        Ok(job) => (StatusCode::CREATED, Json(job)).into_response(),
        Err(e) => err(e),
    }
}

#[derive(Deserialize)]
struct FinishJob {
    #[serde(default)]
    conclusion: Option<String>,
}

async fn finish_job(
    State(shared): Sim,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Option<Json<FinishJob>>,
) -> Response {
    let base = base_url(&headers);
    let conclusion = body
        .and_then(|Json(b)| b.conclusion)
        .unwrap_or_else(|| "success".into());
    let result = shared.change(|w| {
        w.finish_queued_or_running_job(id, &conclusion, Utc::now())?;
        Ok(job_answer(w, &base, id))
    });
    match result {
        Ok(job) => Json(job).into_response(),
        Err(e) => err(e),
    }
}

async fn set_webhook(
    State(shared): Sim,
    headers: HeaderMap,
    Json(h): Json<SimWebhook>,
) -> StatusCode {
    shared.lock().webhook = Some((h, base_url(&headers)));
    StatusCode::NO_CONTENT
}

async fn clear_webhook(State(shared): Sim) -> StatusCode {
    shared.lock().webhook = None;
    StatusCode::NO_CONTENT
}
