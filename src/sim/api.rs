//! The GitHub REST routes the simulator answers, and the layer every one of
//! them passes: latency and fault injection, authentication, the primary
//! rate limit, `x-ratelimit-*` headers and request counters.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::world::{scope_key, sha256_hex, SimError, SimRunner, TokenKind};
use super::{latency_for, FaultKind, Shared};

pub(crate) const DOC_RUNNERS: &str = "https://docs.github.com/rest/actions/self-hosted-runners";
const DOC_APP_TOKEN: &str =
    "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app";
const DOC_AUTH: &str = "https://docs.github.com/rest";
const DOC_RATE: &str =
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";

type Sim = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut r = Router::new();
    for prefix in ["/repos/{owner}/{repo}", "/orgs/{org}"] {
        r = r
            .route(&format!("{prefix}/actions/runners"), get(list_runners))
            .route(
                &format!("{prefix}/actions/runners/{{runner_id}}"),
                get(get_runner).delete(delete_runner),
            )
            .route(
                &format!("{prefix}/actions/runners/registration-token"),
                post(registration_token),
            )
            .route(
                &format!("{prefix}/actions/runners/remove-token"),
                post(remove_token),
            )
            .route(
                &format!("{prefix}/actions/runners/generate-jitconfig"),
                post(generate_jitconfig),
            )
            .route(
                &format!("{prefix}/actions/runners/{{runner_id}}/labels"),
                get(get_labels)
                    .post(add_labels)
                    .put(set_labels)
                    .delete(clear_labels),
            )
            .route(
                &format!("{prefix}/actions/runners/{{runner_id}}/labels/{{name}}"),
                axum::routing::delete(remove_label),
            );
    }
    r.route("/orgs/{org}/actions/runner-groups", get(list_groups))
        .route("/rate_limit", get(rate_limit))
        .route(
            "/app/installations/{installation_id}/access_tokens",
            post(installation_token),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            github_layer,
        ))
        .with_state(shared)
}

pub(crate) fn gh_error(status: StatusCode, message: &str, doc: &str) -> Response {
    (
        status,
        Json(json!({ "message": message, "documentation_url": doc })),
    )
        .into_response()
}

fn sim_error(e: SimError, doc: &str) -> Response {
    match e {
        SimError::NotFound(_) => gh_error(StatusCode::NOT_FOUND, "Not Found", doc),
        SimError::Conflict(m) => {
            gh_error(StatusCode::CONFLICT, &format!("Already exists - {m}"), doc)
        }
        SimError::Invalid(m) => gh_error(StatusCode::UNPROCESSABLE_ENTITY, &m, doc),
        SimError::Unauthorized(_) => {
            gh_error(StatusCode::UNAUTHORIZED, "Bad credentials", DOC_AUTH)
        }
    }
}

fn fault_response(kind: &FaultKind) -> Response {
    match kind {
        FaultKind::ServerError { status } => {
            let status = StatusCode::from_u16(*status)
                .ok()
                .filter(|s| s.is_server_error())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            gh_error(status, "Server Error", DOC_AUTH)
        }
        FaultKind::RateLimited { retry_after_secs } => {
            let mut r = gh_error(
                StatusCode::TOO_MANY_REQUESTS,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                DOC_RATE,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            r
        }
        FaultKind::SecondaryLimit { retry_after_secs } => {
            let mut r = gh_error(
                StatusCode::FORBIDDEN,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                DOC_RATE,
            );
            if let Some(secs) = retry_after_secs {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            r
        }
    }
}

/// `Authorization: Bearer T` or `token T`, against the configured token and
/// the installation tokens issued.
/// The error is GitHub's message for the 401.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<(), &'static str> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err("Requires authentication");
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .or_else(|| value.strip_prefix("token "))
        .unwrap_or("")
        .trim();
    let ok = !token.is_empty()
        && (token == shared.config.token
            || shared
                .lock()
                .world
                .token_valid(token, TokenKind::Installation, None, Utc::now()));
    if ok {
        Ok(())
    } else {
        Err("Bad credentials")
    }
}

async fn github_layer(State(shared): Sim, req: Request, next: Next) -> Response {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let route = format!("{} {}", req.method(), template);
    let free = template == "/rate_limit";
    let app_route = template.starts_with("/app/");

    let (delay, fault) = {
        let mut inner = shared.lock();
        let delay = latency_for(&inner, &route);
        let pos = inner
            .faults
            .iter()
            .position(|f| f.count > 0 && f.route.as_deref().is_none_or(|r| route.contains(r)));
        let fault = pos.map(|i| {
            let f = &mut inner.faults[i];
            f.count -= 1;
            let taken = f.clone();
            if f.count == 0 {
                inner.faults.remove(i);
            }
            taken
        });
        (delay, fault)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }

    let mut response = 'answer: {
        if let Some(f) = fault.as_ref().filter(|f| !f.after) {
            break 'answer fault_response(&f.kind);
        }
        if !app_route {
            if let Err(message) = authenticate(&shared, req.headers()) {
                break 'answer gh_error(StatusCode::UNAUTHORIZED, message, DOC_AUTH);
            }
        }
        let exhausted = {
            let mut inner = shared.lock();
            inner.rate.roll();
            inner.rate.remaining == 0
        };
        if exhausted && !free && !app_route {
            break 'answer gh_error(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for this token.",
                DOC_RATE,
            );
        }
        let response = next.run(req).await;
        if response.status() != StatusCode::NOT_MODIFIED && !free && !app_route {
            let mut inner = shared.lock();
            inner.rate.remaining = inner.rate.remaining.saturating_sub(1);
            inner.stats.rate_limited_cost += 1;
        }
        match fault.as_ref().filter(|f| f.after) {
            Some(f) => fault_response(&f.kind),
            None => response,
        }
    };

    let mut inner = shared.lock();
    let rate = inner.rate;
    let h = response.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(rate.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(rate.remaining));
    h.insert(
        "x-ratelimit-used",
        HeaderValue::from(rate.limit - rate.remaining),
    );
    h.insert("x-ratelimit-reset", HeaderValue::from(rate.reset));
    h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    inner.stats.record(&route, response.status().as_u16());
    response
}

fn not_found() -> Response {
    gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_RUNNERS)
}

/// The scope key of a route's path parameters.
fn scope_of(params: &HashMap<String, String>) -> Option<String> {
    let path = match (params.get("org"), params.get("owner"), params.get("repo")) {
        (Some(org), _, _) => format!("orgs/{org}"),
        (None, Some(owner), Some(repo)) => format!("repos/{owner}/{repo}"),
        _ => return None,
    };
    scope_key(&path).ok()
}

fn runner_id(params: &HashMap<String, String>) -> Option<u64> {
    params.get("runner_id").and_then(|s| s.parse().ok())
}

pub(crate) fn runner_json(r: &SimRunner) -> Value {
    json!({
        "id": r.id,
        "runner_group_id": r.runner_group_id,
        "name": r.name,
        "os": r.os,
        "status": r.status,
        "busy": r.busy,
        "ephemeral": r.ephemeral,
        "labels": labels_json(r),
    })
}

fn labels_json(r: &SimRunner) -> Value {
    Value::Array(
        r.labels
            .iter()
            .map(|l| json!({ "id": l.id, "name": l.name, "type": l.kind }))
            .collect(),
    )
}

#[derive(Deserialize)]
struct ListQuery {
    per_page: Option<String>,
    page: Option<String>,
    name: Option<String>,
}

fn etag_matches(if_none_match: Option<&str>, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    if_none_match.is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim() == "*" || strip(t) == strip(etag))
    })
}

/// `GET {scope}/actions/runners`: sorted by id, `per_page` ≤ 100 (default
/// 30), `page` from 1, optional exact `name`; `Link` and `ETag` as GitHub.
async fn list_runners(
    State(shared): Sim,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(key) = scope_of(&params) else {
        return not_found();
    };
    let per_page = q
        .per_page
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = q
        .page
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1)
        .max(1);
    let (total, runners): (u64, Vec<Value>) = {
        let inner = shared.lock();
        let all: Vec<&SimRunner> = inner
            .world
            .scope(&key)
            .map(|s| {
                s.runners
                    .values()
                    .filter(|r| q.name.as_ref().is_none_or(|n| &r.name == n))
                    .collect()
            })
            .unwrap_or_default();
        let skip = ((page - 1) * per_page) as usize;
        (
            all.len() as u64,
            all.iter()
                .skip(skip)
                .take(per_page as usize)
                .map(|r| runner_json(r))
                .collect(),
        )
    };
    let body = json!({ "total_count": total, "runners": runners }).to_string();
    let etag = format!("W/\"{}\"", sha256_hex(body.as_bytes()));
    let inm = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let mut response = if etag_matches(inm, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response()
    };
    let last = total.div_ceil(per_page).max(1);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let name_q = q
        .name
        .as_ref()
        .map(|n| {
            format!(
                "&name={}",
                url::form_urlencoded::byte_serialize(n.as_bytes()).collect::<String>()
            )
        })
        .unwrap_or_default();
    let url = |p: u64| {
        format!("<http://{host}/{key}/actions/runners?per_page={per_page}&page={p}{name_q}>")
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", url((page - 1).min(last))));
    }
    if page < last {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
    }
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if !links.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
            h.insert(header::LINK, v);
        }
    }
    response
}

async fn get_runner(State(shared): Sim, Path(params): Path<HashMap<String, String>>) -> Response {
    let (Some(key), Some(id)) = (scope_of(&params), runner_id(&params)) else {
        return not_found();
    };
    let inner = shared.lock();
    match inner.world.scope(&key).and_then(|s| s.runners.get(&id)) {
        Some(r) => Json(runner_json(r)).into_response(),
        None => gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_RUNNERS),
    }
}

async fn delete_runner(
    State(shared): Sim,
    Path(params): Path<HashMap<String, String>>,
) -> Response {
    let (Some(key), Some(id)) = (scope_of(&params), runner_id(&params)) else {
        return not_found();
    };
    match shared.change(|w| w.delete_runner(&key, id)) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => sim_error(e, DOC_RUNNERS),
    }
}

fn issue(shared: &Shared, params: &HashMap<String, String>, kind: TokenKind) -> Response {
    let Some(key) = scope_of(params) else {
        return not_found();
    };
    let t = shared.change(|w| {
        w.scope_mut(&key);
        w.issue_token(kind, Some(key.clone()), Utc::now())
    });
    (
        StatusCode::CREATED,
        Json(json!({ "token": t.token, "expires_at": t.expires_at.to_rfc3339() })),
    )
        .into_response()
}

async fn registration_token(
    State(shared): Sim,
    Path(params): Path<HashMap<String, String>>,
) -> Response {
    issue(&shared, &params, TokenKind::Registration)
}

async fn remove_token(State(shared): Sim, Path(params): Path<HashMap<String, String>>) -> Response {
    issue(&shared, &params, TokenKind::Remove)
}

fn invalid(message: &str) -> Response {
    gh_error(StatusCode::UNPROCESSABLE_ENTITY, message, DOC_RUNNERS)
}

fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array()?
        .iter()
        .map(|l| l.as_str().map(str::to_owned))
        .collect()
}

async fn generate_jitconfig(
    State(shared): Sim,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(key) = scope_of(&params) else {
        return not_found();
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return gh_error(
            StatusCode::BAD_REQUEST,
            "Problems parsing JSON",
            DOC_RUNNERS,
        );
    };
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return invalid("Invalid input: object is missing required key: name");
    };
    let Some(group_id) = body.get("runner_group_id").and_then(Value::as_u64) else {
        return invalid("Invalid input: object is missing required key: runner_group_id");
    };
    let Some(labels) = string_list(body.get("labels")) else {
        return invalid("Invalid input: object is missing required key: labels");
    };
    let work_folder = body
        .get("work_folder")
        .and_then(Value::as_str)
        .unwrap_or("_work");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let web_path = key
        .strip_prefix("repos/")
        .or_else(|| key.strip_prefix("orgs/"))
        .unwrap_or(&key);
    let web_url = format!("http://{host}/{web_path}");
    match shared.change(|w| w.mint_jit(&key, name, group_id, &labels, work_folder, &web_url)) {
        Ok((runner, encoded)) => (
            StatusCode::CREATED,
            Json(json!({ "runner": runner_json(&runner), "encoded_jit_config": encoded })),
        )
            .into_response(),
        Err(e) => sim_error(e, DOC_RUNNERS),
    }
}

fn labels_answer(r: &SimRunner) -> Response {
    Json(json!({ "total_count": r.labels.len(), "labels": labels_json(r) })).into_response()
}

/// Shared body of the label routes: `edit` changes the runner's custom
/// labels (read-only ones are kept).
fn edit_labels(
    shared: &Shared,
    params: &HashMap<String, String>,
    edit: impl FnOnce(&mut Vec<String>) -> Result<(), SimError>,
) -> Response {
    let (Some(key), Some(id)) = (scope_of(params), runner_id(params)) else {
        return not_found();
    };
    let result = shared.change(|w| {
        let runner = w
            .scope(&key)
            .and_then(|s| s.runners.get(&id))
            .cloned()
            .ok_or_else(|| SimError::NotFound(format!("runner {id}")))?;
        let mut custom: Vec<String> = runner
            .labels
            .iter()
            .filter(|l| l.kind == "custom")
            .map(|l| l.name.clone())
            .collect();
        let before = custom.clone();
        edit(&mut custom)?;
        super::world::check_labels(&custom, false)?;
        let mut labels: Vec<_> = runner
            .labels
            .iter()
            .filter(|l| {
                l.kind != "custom" || (custom.contains(&l.name) && before.contains(&l.name))
            })
            .cloned()
            .collect();
        let added: Vec<String> = custom
            .iter()
            .filter(|c| !labels.iter().any(|l| &l.name == *c))
            .cloned()
            .collect();
        labels.extend(w.make_labels(&added, &[]));
        let r = w
            .find_runner_mut(id)
            .ok_or_else(|| SimError::NotFound(format!("runner {id}")))?;
        r.labels = labels;
        Ok(r.clone())
    });
    match result {
        Ok(r) => labels_answer(&r),
        Err(e) => sim_error(e, DOC_RUNNERS),
    }
}

async fn get_labels(State(shared): Sim, Path(params): Path<HashMap<String, String>>) -> Response {
    edit_labels(&shared, &params, |_| Ok(()))
}

async fn add_labels(
    State(shared): Sim,
    Path(params): Path<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    let Some(new) = string_list(body.get("labels")).filter(|l| !l.is_empty()) else {
        return invalid("Invalid input: labels must have at least 1 item");
    };
    edit_labels(&shared, &params, |custom| {
        for l in new {
            if !custom.contains(&l) {
                custom.push(l);
            }
        }
        Ok(())
    })
}

async fn set_labels(
    State(shared): Sim,
    Path(params): Path<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    let Some(new) = string_list(body.get("labels")) else {
        return invalid("Invalid input: object is missing required key: labels");
    };
    edit_labels(&shared, &params, |custom| {
        *custom = new;
        Ok(())
    })
}

async fn clear_labels(State(shared): Sim, Path(params): Path<HashMap<String, String>>) -> Response {
    edit_labels(&shared, &params, |custom| {
        custom.clear();
        Ok(())
    })
}

async fn remove_label(State(shared): Sim, Path(params): Path<HashMap<String, String>>) -> Response {
    let name = params.get("name").cloned().unwrap_or_default();
    edit_labels(&shared, &params, |custom| {
        let before = custom.len();
        custom.retain(|l| *l != name);
        if custom.len() == before {
            return Err(SimError::NotFound(format!("label {name:?}")));
        }
        Ok(())
    })
}

async fn list_groups(State(shared): Sim, Path(params): Path<HashMap<String, String>>) -> Response {
    let Some(key) = scope_of(&params) else {
        return not_found();
    };
    let groups: Vec<Value> = shared.change(|w| {
        w.scope_mut(&key)
            .groups
            .iter()
            .map(|g| {
                json!({
                    "id": g.id,
                    "name": g.name,
                    "visibility": "all",
                    "default": g.default,
                    "runners_url": format!("/{key}/actions/runner-groups/{}/runners", g.id),
                    "inherited": false,
                    "allows_public_repositories": false,
                    "restricted_to_workflows": false,
                    "selected_workflows": [],
                    "workflow_restrictions_read_only": false,
                })
            })
            .collect()
    });
    Json(json!({ "total_count": groups.len(), "runner_groups": groups })).into_response()
}

async fn rate_limit(State(shared): Sim) -> Response {
    let rate = {
        let mut inner = shared.lock();
        inner.rate.roll();
        inner.rate
    };
    let core = json!({
        "limit": rate.limit,
        "remaining": rate.remaining,
        "reset": rate.reset,
        "used": rate.limit - rate.remaining,
    });
    let registration = json!({
        "limit": 10000, "remaining": 10000, "reset": rate.reset, "used": 0,
    });
    Json(json!({
        "resources": { "core": core, "actions_runner_registration": registration },
        "rate": core,
    }))
    .into_response()
}

/// `POST /app/installations/{id}/access_tokens`: the bearer must be an
/// RS256 JWT of the configured App (signature, `exp`, `iat`, `iss`).
async fn installation_token(
    State(shared): Sim,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(app) = shared.config.app.clone() else {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_APP_TOKEN);
    };
    let jwt = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if jwt.is_empty() {
        return gh_error(
            StatusCode::UNAUTHORIZED,
            "Requires authentication",
            DOC_AUTH,
        );
    }
    if let Err(message) = verify_app_jwt(jwt, app.app_id, &app.public_key_pem) {
        return gh_error(StatusCode::UNAUTHORIZED, message, DOC_APP_TOKEN);
    }
    let installation: Option<u64> = params.get("installation_id").and_then(|s| s.parse().ok());
    if installation != Some(app.installation_id) {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_APP_TOKEN);
    }
    let t = shared.change(|w| w.issue_token(TokenKind::Installation, None, Utc::now()));
    (
        StatusCode::CREATED,
        Json(json!({
            "token": t.token,
            "expires_at": t.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "permissions": {
                "administration": "write",
                "organization_self_hosted_runners": "write",
            },
            "repository_selection": "all",
        })),
    )
        .into_response()
}

fn verify_app_jwt(jwt: &str, app_id: u64, public_key_pem: &str) -> Result<(), &'static str> {
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
    let key = DecodingKey::from_rsa_pem(public_key_pem.as_bytes())
        .map_err(|_| "A JSON web token could not be decoded")?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.validate_aud = false;
    let data = decode::<Value>(jwt, &key, &validation)
        .map_err(|_| "A JSON web token could not be decoded")?;
    let claims = data.claims;
    let iss_ok = match claims.get("iss") {
        Some(Value::String(s)) => s == &app_id.to_string(),
        Some(Value::Number(n)) => n.as_u64() == Some(app_id),
        _ => false,
    };
    if !iss_ok {
        return Err("A JSON web token could not be decoded");
    }
    let (Some(iat), Some(exp)) = (
        claims.get("iat").and_then(Value::as_i64),
        claims.get("exp").and_then(Value::as_i64),
    ) else {
        return Err("A JSON web token could not be decoded");
    };
    let now = Utc::now().timestamp();
    if exp - iat > 600 || iat > now + 60 {
        return Err("'Expiration time' claim ('exp') is too far in the future");
    }
    Ok(())
}
