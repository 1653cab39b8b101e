//! The layer every GitHub route of the simulator passes (latency and fault
//! injection, authentication, the primary rate limit, `x-ratelimit-*`
//! headers, request counters) and what the route families share: GitHub's
//! error body, ETags and `Link` pagination.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::json;

use super::world::{sha256_hex, SimError, TokenKind};
use super::{latency_for, FaultKind, Shared};

pub(crate) const DOC_AUTH: &str = "https://docs.github.com/rest";
pub(crate) const DOC_RATE: &str =
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";

pub(crate) type Sim = State<Arc<Shared>>;

pub(crate) fn gh_error(status: StatusCode, message: &str, doc: &str) -> Response {
    (
        status,
        Json(json!({ "message": message, "documentation_url": doc })),
    )
        .into_response()
}

pub(crate) fn sim_error(e: SimError, doc: &str) -> Response {
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

pub(crate) async fn github_layer(State(shared): Sim, req: Request, next: Next) -> Response {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let route = format!("{} {}", req.method(), template);
    // `GET /rate_limit` costs nothing (rate-limit docs); neither does
    // downloading a release asset, which on GitHub is a github.com page,
    // not the API.
    let download = template.contains("/releases/download/");
    let free = template == "/rate_limit" || download;
    let app_route = template.starts_with("/app/");
    // A public repository's releases need no authentication (a bad
    // credential is still refused); actions/runner is public.
    let public =
        template.contains("/releases") && !req.headers().contains_key(header::AUTHORIZATION);

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
        if !app_route && !public {
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

pub(crate) fn etag_matches(if_none_match: Option<&str>, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    if_none_match.is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim() == "*" || strip(t) == strip(etag))
    })
}

/// A JSON answer with a weak `ETag` (SHA-256 of the body), or `304` with
/// no body when `If-None-Match` names it: GitHub's conditional requests
/// (https://docs.github.com/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate).
pub(crate) fn json_with_etag(body: String, headers: &HeaderMap) -> Response {
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
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// `per_page` (1..=100, default 30) and `page` (from 1) as GitHub reads them.
pub(crate) fn paging(per_page: Option<&str>, page: Option<&str>) -> (u64, u64) {
    let per_page = per_page
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = page.and_then(|v| v.parse::<u64>().ok()).unwrap_or(1).max(1);
    (per_page, page)
}

/// Set GitHub's `Link` header (`prev`, `next`, `last`, `first`) on a page of
/// `total` items at `path` (no leading slash) with `extra` query text
/// (`&name=...`).
pub(crate) fn link_pages(
    response: &mut Response,
    headers: &HeaderMap,
    path: &str,
    extra: &str,
    (per_page, page): (u64, u64),
    total: u64,
) {
    let last = total.div_ceil(per_page).max(1);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let url = |p: u64| format!("<http://{host}/{path}?per_page={per_page}&page={p}{extra}>");
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
    if !links.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
}
