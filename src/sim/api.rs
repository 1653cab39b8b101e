//! The self-hosted runner routes (list, get, delete, tokens,
//! generate-jitconfig, labels) and the organization's runner groups, for
//! `/repos/{owner}/{repo}` and `/orgs/{org}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::layer::{gh_error, json_with_etag, link_pages, paging, sim_error, Sim};
use super::world::{scope_key, SimError, SimRunner, TokenKind};
use super::Shared;

pub(crate) const DOC_RUNNERS: &str = "https://docs.github.com/rest/actions/self-hosted-runners";

pub(crate) fn routes() -> Router<Arc<Shared>> {
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
    let (per_page, page) = paging(q.per_page.as_deref(), q.page.as_deref());
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
    let mut response = json_with_etag(body, &headers);
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
    link_pages(
        &mut response,
        &headers,
        &format!("{key}/actions/runners"),
        &name_q,
        (per_page, page),
        total,
    );
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
