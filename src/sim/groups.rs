//! An organization's runner groups: list (with an `ETag`), create, read,
//! update, and each group's runners and repositories, in the shapes of
//! https://docs.github.com/rest/actions/self-hosted-runner-groups
//! (`runner-groups-org`, `runner`, `minimal-repository`), and which
//! repositories' jobs a group's runners may take ([`admits`]).
//!
//! The simulator has no public repositories: every repository it answers
//! for is private (`"private": true`). So a group of visibility `private`
//! admits every repository, as `all` does, and `allows_public_repositories`
//! is kept and answered but changes no assignment. Workflow restrictions
//! (`restricted_to_workflows`, `selected_workflows`) are kept and answered,
//! not applied either.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{runner_json, scope_of};
use super::layer::{base_url, gh_error, json_with_etag, sim_error, simple_user, Sim};
use super::world::{sha256_hex, SimError, SimGroup};
use super::Shared;

const DOC_GROUPS: &str = "https://docs.github.com/rest/actions/self-hosted-runner-groups";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    let g = "/orgs/{org}/actions/runner-groups";
    Router::new()
        .route(g, get(list_groups).post(create_group))
        .route(
            &format!("{g}/{{runner_group_id}}"),
            get(get_group).patch(update_group),
        )
        .route(
            &format!("{g}/{{runner_group_id}}/runners"),
            get(group_runners),
        )
        .route(
            &format!("{g}/{{runner_group_id}}/repositories"),
            get(group_repositories),
        )
}

fn group_json(base: &str, key: &str, g: &SimGroup) -> Value {
    let url = format!("{base}/{key}/actions/runner-groups/{}", g.id);
    let mut v = json!({
        "id": g.id,
        "name": g.name,
        "visibility": g.visibility,
        "default": g.default,
        "runners_url": format!("{url}/runners"),
        "inherited": false,
        "allows_public_repositories": g.allows_public_repositories,
        "restricted_to_workflows": g.restricted_to_workflows,
        "selected_workflows": g.selected_workflows,
        "workflow_restrictions_read_only": false,
    });
    if g.visibility == "selected" {
        v["selected_repositories_url"] = json!(format!("{url}/repositories"));
    }
    v
}

/// Whether the runners of organization group `g` may take a job of
/// repository `repo` (`owner/name`, of that organization), by the group's
/// repository access: `visibility` `all` admits every repository of the
/// organization, `selected` those of `selected_repository_ids`, `private`
/// its private repositories (all of the simulator's: see the module doc).
/// https://docs.github.com/actions/hosting-your-own-runners/managing-self-hosted-runners/managing-access-to-self-hosted-runners-using-groups
pub(crate) fn admits(g: &SimGroup, repo: &str) -> bool {
    match g.visibility.as_str() {
        "selected" => g.selected_repository_ids.contains(&repo_id(repo)),
        // `all`, and `private` with no public repository to refuse.
        _ => true,
    }
}

/// A repository's id in the simulator: stable, from its name.
pub fn repo_id(full_name: &str) -> u64 {
    u64::from_str_radix(&sha256_hex(full_name.to_lowercase().as_bytes())[..8], 16).unwrap_or(1)
}

type Params = Path<HashMap<String, String>>;

/// The organization's scope key and the group id of a group route.
fn group_of(params: &HashMap<String, String>) -> Option<(String, u64)> {
    let key = scope_of(params)?;
    let id = params.get("runner_group_id")?.parse().ok()?;
    Some((key, id))
}

async fn list_groups(State(shared): Sim, Path(params): Params, headers: HeaderMap) -> Response {
    let Some(key) = scope_of(&params) else {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_GROUPS);
    };
    let base = base_url(&headers);
    let groups: Vec<Value> = shared.change(|w| {
        w.scope_mut(&key)
            .groups
            .iter()
            .map(|g| group_json(&base, &key, g))
            .collect()
    });
    json_with_etag(
        json!({ "total_count": groups.len(), "runner_groups": groups }).to_string(),
        &headers,
    )
}

/// The settable fields of a group (create and update).
#[derive(Deserialize)]
struct GroupBody {
    name: Option<String>,
    visibility: Option<String>,
    selected_repository_ids: Option<Vec<u64>>,
    runners: Option<Vec<u64>>,
    allows_public_repositories: Option<bool>,
    restricted_to_workflows: Option<bool>,
    selected_workflows: Option<Vec<String>>,
}

fn apply(g: &mut SimGroup, b: &GroupBody) -> Result<(), SimError> {
    if let Some(v) = &b.visibility {
        if !["all", "selected", "private"].contains(&v.as_str()) {
            return Err(SimError::Invalid(format!("visibility {v:?} is not valid")));
        }
        g.visibility = v.clone();
    }
    if let Some(n) = &b.name {
        g.name = n.clone();
    }
    if let Some(ids) = &b.selected_repository_ids {
        g.selected_repository_ids = ids.clone();
    }
    if let Some(x) = b.allows_public_repositories {
        g.allows_public_repositories = x;
    }
    if let Some(x) = b.restricted_to_workflows {
        g.restricted_to_workflows = x;
    }
    if let Some(x) = &b.selected_workflows {
        g.selected_workflows = x.clone();
    }
    Ok(())
}

async fn create_group(
    State(shared): Sim,
    Path(params): Params,
    headers: HeaderMap,
    Json(body): Json<GroupBody>,
) -> Response {
    let Some(key) = scope_of(&params) else {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_GROUPS);
    };
    let Some(name) = body.name.clone().filter(|n| !n.trim().is_empty()) else {
        return gh_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid input: name is required",
            DOC_GROUPS,
        );
    };
    let org = key.trim_start_matches("orgs/").to_string();
    let result = shared.change(|w| {
        let id = w.add_group(&org, &name)?;
        let g = w
            .scope_mut(&key)
            .groups
            .iter_mut()
            .find(|g| g.id == id)
            .ok_or_else(|| SimError::NotFound(format!("group {id}")))?;
        apply(g, &body)?;
        let g = g.clone();
        for r in body.runners.iter().flatten() {
            if let Some(runner) = w.scope_mut(&key).runners.get_mut(r) {
                runner.runner_group_id = id;
            }
        }
        Ok::<_, SimError>(g)
    });
    match result {
        Ok(g) => (
            StatusCode::CREATED,
            Json(group_json(&base_url(&headers), &key, &g)),
        )
            .into_response(),
        Err(e) => sim_error(e, DOC_GROUPS),
    }
}

async fn get_group(State(shared): Sim, Path(params): Params, headers: HeaderMap) -> Response {
    let Some((key, id)) = group_of(&params) else {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_GROUPS);
    };
    let found = shared.change(|w| {
        w.scope_mut(&key)
            .groups
            .iter()
            .find(|g| g.id == id)
            .cloned()
    });
    match found {
        Some(g) => Json(group_json(&base_url(&headers), &key, &g)).into_response(),
        None => gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_GROUPS),
    }
}

async fn update_group(
    State(shared): Sim,
    Path(params): Params,
    headers: HeaderMap,
    Json(body): Json<GroupBody>,
) -> Response {
    let Some((key, id)) = group_of(&params) else {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_GROUPS);
    };
    let result = shared.change(|w| {
        let g = w
            .scope_mut(&key)
            .groups
            .iter_mut()
            .find(|g| g.id == id)
            .ok_or_else(|| SimError::NotFound(format!("group {id}")))?;
        apply(g, &body)?;
        Ok::<_, SimError>(g.clone())
    });
    match result {
        Ok(g) => Json(group_json(&base_url(&headers), &key, &g)).into_response(),
        Err(e) => sim_error(e, DOC_GROUPS),
    }
}

async fn group_runners(State(shared): Sim, Path(params): Params) -> Response {
    let Some((key, id)) = group_of(&params) else {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_GROUPS);
    };
    let runners: Option<Vec<Value>> = shared.change(|w| {
        let s = w.scope_mut(&key);
        s.groups.iter().any(|g| g.id == id).then(|| {
            s.runners
                .values()
                .filter(|r| r.runner_group_id == id)
                .map(runner_json)
                .collect()
        })
    });
    match runners {
        Some(r) => Json(json!({ "total_count": r.len(), "runners": r })).into_response(),
        None => gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_GROUPS),
    }
}

/// The group's selected repositories, among those the simulator has seen
/// (runners or workflow runs of their own).
/// Answered with an `ETag`, as GitHub answers its GETs.
async fn group_repositories(
    State(shared): Sim,
    Path(params): Params,
    headers: HeaderMap,
) -> Response {
    let Some((key, id)) = group_of(&params) else {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_GROUPS);
    };
    let base = base_url(&headers);
    let repos: Option<Vec<Value>> = shared.change(|w| {
        let ids = w
            .scope_mut(&key)
            .groups
            .iter()
            .find(|g| g.id == id)?
            .selected_repository_ids
            .clone();
        // Seen: with a runner scope of its own, or with workflow runs.
        let seen: std::collections::BTreeSet<&str> = w
            .scopes
            .keys()
            .filter_map(|k| k.strip_prefix("repos/"))
            .chain(w.runs.values().map(|r| r.repo.as_str()))
            .collect();
        Some(
            seen.into_iter()
                .filter(|full| ids.contains(&repo_id(full)))
                .map(|full| minimal_repository(&base, full))
                .collect(),
        )
    });
    match repos {
        Some(r) => json_with_etag(
            json!({ "total_count": r.len(), "repositories": r }).to_string(),
            &headers,
        ),
        None => gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_GROUPS),
    }
}

/// The `minimal-repository` schema for `owner/name`.
pub(crate) fn minimal_repository(base: &str, full: &str) -> Value {
    let (owner, name) = full.split_once('/').unwrap_or((full, full));
    let api = format!("{base}/repos/{full}");
    let mut v = json!({
        "id": repo_id(full), "node_id": format!("R_sim{}", repo_id(full)),
        "name": name, "full_name": full, "private": true, "fork": false,
        "description": null, "html_url": format!("{base}/{full}"), "url": api,
        "owner": simple_user(base, owner, repo_id(owner), "Organization"),
    });
    // The `*_url` links GitHub gives every repository, as URI templates.
    for (field, tail) in [
        ("archive_url", "/{archive_format}{/ref}"),
        ("assignees_url", "/assignees{/user}"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("branches_url", "/branches{/branch}"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("comments_url", "/comments{/number}"),
        ("commits_url", "/commits{/sha}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("contents_url", "/contents/{+path}"),
        ("contributors_url", "/contributors"),
        ("deployments_url", "/deployments"),
        ("downloads_url", "/downloads"),
        ("events_url", "/events"),
        ("forks_url", "/forks"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("hooks_url", "/hooks"),
        ("issue_comment_url", "/issues/comments{/number}"),
        ("issue_events_url", "/issues/events{/number}"),
        ("issues_url", "/issues{/number}"),
        ("keys_url", "/keys{/key_id}"),
        ("labels_url", "/labels{/name}"),
        ("languages_url", "/languages"),
        ("merges_url", "/merges"),
        ("milestones_url", "/milestones{/number}"),
        (
            "notifications_url",
            "/notifications{?since,all,participating}",
        ),
        ("pulls_url", "/pulls{/number}"),
        ("releases_url", "/releases{/id}"),
        ("stargazers_url", "/stargazers"),
        ("statuses_url", "/statuses/{sha}"),
        ("subscribers_url", "/subscribers"),
        ("subscription_url", "/subscription"),
        ("tags_url", "/tags"),
        ("teams_url", "/teams"),
        ("trees_url", "/git/trees{/sha}"),
    ] {
        v[field] = json!(format!("{api}{tail}"));
    }
    v
}
