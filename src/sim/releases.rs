//! Releases of a repository (what hangar reads for actions/runner):
//! `GET /repos/{owner}/{repo}/releases` (paged), `.../releases/latest`,
//! `.../releases/tags/{tag}`, each with an `ETag`, and the assets' bytes at
//! their `browser_download_url`. Shapes: the `release` and `release-asset`
//! schemas of GitHub's OpenAPI description and
//! https://docs.github.com/rest/releases/releases; the asset `digest`
//! (`sha256:<hex>`) is GitHub's since June 2025
//! (https://github.blog/changelog/2025-06-03-releases-now-expose-digests-for-release-assets/).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::layer::{gh_error, json_with_etag, link_pages, paging, Sim};
use super::world::{sha256_hex, SimError, SimWorld};
use super::Shared;

const DOC_RELEASES: &str = "https://docs.github.com/rest/releases/releases";

/// The repository hangar takes runner releases from.
pub const RUNNER_REPO: &str = "actions/runner";

/// Architectures actions/runner publishes Linux tarballs for.
pub const RUNNER_ARCHES: [&str; 3] = ["x64", "arm64", "arm"];

/// The release a fresh simulator holds, so `runner.version: latest`
/// resolves offline.
pub const SEED_RUNNER_VERSION: &str = "2.330.0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimRelease {
    pub id: u64,
    pub tag_name: String,
    pub name: String,
    pub prerelease: bool,
    pub created_at: DateTime<Utc>,
    pub published_at: DateTime<Utc>,
    pub assets: Vec<SimAsset>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimAsset {
    pub id: u64,
    pub name: String,
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// The bytes, base64 (assets are small stand-ins).
    pub content_base64: String,
}

/// What `POST /_sim/releases` and [`super::SimHandle::publish_release`]
/// take: a runner release with one tarball per architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRelease {
    /// `OWNER/REPO`; actions/runner when absent.
    #[serde(default = "runner_repo")]
    pub repo: String,
    /// `2.331.0`; the tag is `v2.331.0`.
    pub version: String,
    /// Now when absent.
    #[serde(default)]
    pub published_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub prerelease: bool,
    /// x64, arm64 and arm when empty.
    #[serde(default)]
    pub arches: Vec<String>,
    /// The tarball of every architecture (base64); a generated fake runner
    /// when absent.
    #[serde(default)]
    pub tarball_base64: Option<String>,
}

fn runner_repo() -> String {
    RUNNER_REPO.to_string()
}

impl PublishRelease {
    pub fn runner(version: &str) -> Self {
        PublishRelease {
            repo: runner_repo(),
            version: version.to_string(),
            published_at: None,
            prerelease: false,
            arches: Vec::new(),
            tarball_base64: None,
        }
    }
}

impl SimWorld {
    /// Publish (or replace) the release `v<version>` of `req.repo`.
    pub fn publish_release(
        &mut self,
        req: &PublishRelease,
        now: DateTime<Utc>,
    ) -> Result<SimRelease, SimError> {
        let repo = repo_key(&req.repo)
            .ok_or_else(|| SimError::Invalid(format!("repo {:?} is not OWNER/REPO", req.repo)))?;
        if crate::model::runner::RunnerVersion::parse(&req.version).is_none() {
            return Err(SimError::Invalid(format!(
                "version {:?} is not like 2.331.0",
                req.version
            )));
        }
        let given = match &req.tarball_base64 {
            Some(b) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|_| SimError::Invalid("tarball_base64 is not base64".into()))?,
            ),
            None => None,
        };
        let arches: Vec<String> = if req.arches.is_empty() {
            RUNNER_ARCHES.iter().map(|a| a.to_string()).collect()
        } else {
            req.arches.clone()
        };
        let published_at = req.published_at.unwrap_or(now);
        let tag = format!("v{}", req.version);
        let mut assets = Vec::new();
        for arch in &arches {
            let bytes = given
                .clone()
                .unwrap_or_else(|| super::tarball::fake_runner_tarball(&req.version, arch));
            self.next_release_id = self.next_release_id.max(100) + 1;
            assets.push(SimAsset {
                id: self.next_release_id,
                name: crate::model::runner::tarball_name(arch, &req.version),
                size: bytes.len() as u64,
                sha256: sha256_hex(&bytes),
                content_base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
            });
        }
        self.next_release_id = self.next_release_id.max(100) + 1;
        let release = SimRelease {
            id: self.next_release_id,
            tag_name: tag.clone(),
            name: tag.clone(),
            prerelease: req.prerelease,
            created_at: published_at,
            published_at,
            assets,
        };
        let list = self.releases.entry(repo).or_default();
        list.retain(|r| r.tag_name != tag);
        list.push(release.clone());
        // Newest first, as GitHub lists them.
        list.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(release)
    }
}

/// `owner/repo`, lowercased (GitHub's names are case-insensitive).
fn repo_key(repo: &str) -> Option<String> {
    let (owner, name) = repo.trim_matches('/').split_once('/')?;
    (!owner.is_empty() && !name.is_empty() && !name.contains('/'))
        .then(|| format!("{owner}/{name}").to_lowercase())
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/repos/{owner}/{repo}/releases", get(list_releases))
        .route("/repos/{owner}/{repo}/releases/latest", get(latest_release))
        .route(
            "/repos/{owner}/{repo}/releases/tags/{tag}",
            get(release_by_tag),
        )
        .route(
            "/{owner}/{repo}/releases/download/{tag}/{name}",
            get(download_asset),
        )
}

fn not_found() -> Response {
    gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_RELEASES)
}

fn base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The `simple-user` GitHub shows as a release's author and uploader.
fn bot(base: &str) -> Value {
    let login = "github-actions[bot]";
    let url = format!("{base}/users/{login}");
    json!({
        "login": login, "id": 41898282, "node_id": "MDM6Qm90NDE4OTgyODI=",
        "avatar_url": "https://avatars.githubusercontent.com/in/15368?v=4",
        "gravatar_id": "", "url": url, "html_url": format!("{base}/apps/github-actions"),
        "followers_url": format!("{url}/followers"),
        "following_url": format!("{url}/following{{/other_user}}"),
        "gists_url": format!("{url}/gists{{/gist_id}}"),
        "starred_url": format!("{url}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{url}/subscriptions"),
        "organizations_url": format!("{url}/orgs"),
        "repos_url": format!("{url}/repos"),
        "events_url": format!("{url}/events{{/privacy}}"),
        "received_events_url": format!("{url}/received_events"),
        "type": "Bot", "site_admin": false,
    })
}

pub(crate) fn release_json(base: &str, repo: &str, r: &SimRelease) -> Value {
    let api = format!("{base}/repos/{repo}/releases");
    let author = bot(base);
    let assets: Vec<Value> = r
        .assets
        .iter()
        .map(|a| {
            json!({
                "url": format!("{api}/assets/{}", a.id),
                "browser_download_url":
                    format!("{base}/{repo}/releases/download/{}/{}", r.tag_name, a.name),
                "id": a.id,
                "node_id": format!("RA_sim{}", a.id),
                "name": a.name,
                "label": null,
                "state": "uploaded",
                "content_type": "application/gzip",
                "size": a.size,
                "digest": format!("sha256:{}", a.sha256),
                "download_count": 0,
                "created_at": time(r.created_at),
                "updated_at": time(r.created_at),
                "uploader": author,
            })
        })
        .collect();
    json!({
        "url": format!("{api}/{}", r.id),
        "html_url": format!("{base}/{repo}/releases/tag/{}", r.tag_name),
        "assets_url": format!("{api}/{}/assets", r.id),
        "upload_url": format!("{base}/uploads/repos/{repo}/releases/{}/assets{{?name,label}}", r.id),
        "tarball_url": format!("{base}/repos/{repo}/tarball/{}", r.tag_name),
        "zipball_url": format!("{base}/repos/{repo}/zipball/{}", r.tag_name),
        "id": r.id,
        "node_id": format!("RE_sim{}", r.id),
        "tag_name": r.tag_name,
        "target_commitish": "main",
        "name": r.name,
        "body": "",
        "draft": false,
        "prerelease": r.prerelease,
        "immutable": false,
        "created_at": time(r.created_at),
        "published_at": time(r.published_at),
        "author": author,
        "assets": assets,
    })
}

fn repo_of(params: &HashMap<String, String>) -> Option<String> {
    repo_key(&format!("{}/{}", params.get("owner")?, params.get("repo")?))
}

#[derive(Deserialize)]
struct PageQuery {
    per_page: Option<String>,
    page: Option<String>,
}

/// Newest first; `per_page`/`page`, `Link`, `ETag`.
async fn list_releases(
    State(shared): Sim,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(repo) = repo_of(&params) else {
        return not_found();
    };
    let (per_page, page) = paging(q.per_page.as_deref(), q.page.as_deref());
    let base = base(&headers);
    let (total, items): (u64, Vec<Value>) = {
        let inner = shared.lock();
        let all = inner.world.releases.get(&repo).cloned().unwrap_or_default();
        (
            all.len() as u64,
            all.iter()
                .skip(((page - 1) * per_page) as usize)
                .take(per_page as usize)
                .map(|r| release_json(&base, &repo, r))
                .collect(),
        )
    };
    let mut response = json_with_etag(Value::Array(items).to_string(), &headers);
    link_pages(
        &mut response,
        &headers,
        &format!("repos/{repo}/releases"),
        "",
        (per_page, page),
        total,
    );
    response
}

fn one_release(
    shared: &Shared,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    pick: impl Fn(&SimRelease) -> bool,
) -> Response {
    let Some(repo) = repo_of(params) else {
        return not_found();
    };
    let found = {
        let inner = shared.lock();
        inner
            .world
            .releases
            .get(&repo)
            .and_then(|l| l.iter().find(|r| pick(r)).cloned())
    };
    match found {
        Some(r) => json_with_etag(release_json(&base(headers), &repo, &r).to_string(), headers),
        None => not_found(),
    }
}

/// "The most recent non-prerelease, non-draft release, sorted by the
/// `created_at` attribute" (GitHub's docs); the list is kept in that order.
async fn latest_release(
    State(shared): Sim,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    one_release(&shared, &params, &headers, |r| !r.prerelease)
}

async fn release_by_tag(
    State(shared): Sim,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let tag = params.get("tag").cloned().unwrap_or_default();
    one_release(&shared, &params, &headers, |r| r.tag_name == tag)
}

async fn download_asset(
    State(shared): Sim,
    Path(params): Path<HashMap<String, String>>,
) -> Response {
    let (Some(repo), Some(tag), Some(name)) =
        (repo_of(&params), params.get("tag"), params.get("name"))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let asset = {
        let inner = shared.lock();
        inner
            .world
            .releases
            .get(&repo)
            .and_then(|l| l.iter().find(|r| &r.tag_name == tag))
            .and_then(|r| r.assets.iter().find(|a| &a.name == name))
            .cloned()
    };
    let Some(bytes) = asset.and_then(|a| {
        base64::engine::general_purpose::STANDARD
            .decode(a.content_base64)
            .ok()
    }) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response()
}

/// `POST /_sim/releases`.
pub(crate) async fn publish(
    State(shared): Sim,
    headers: HeaderMap,
    Json(req): Json<PublishRelease>,
) -> Response {
    match shared.change(|w| w.publish_release(&req, Utc::now())) {
        Ok(r) => {
            let repo = repo_key(&req.repo).unwrap_or_default();
            (
                StatusCode::CREATED,
                Json(release_json(&base(&headers), &repo, &r)),
            )
                .into_response()
        }
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "message": e.to_string() })),
        )
            .into_response(),
    }
}
