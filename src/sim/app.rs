//! `GET /rate_limit` and the GitHub App routes.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};

use super::layer::{base_url, gh_error, simple_user, Sim, DOC_AUTH};
use super::world::TokenKind;

const DOC_APP_TOKEN: &str =
    "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app";

const DOC_APPS: &str = "https://docs.github.com/rest/apps/apps";

pub(crate) fn routes() -> Router<std::sync::Arc<super::Shared>> {
    Router::new()
        .route("/rate_limit", get(rate_limit))
        .route(
            "/app/installations/{installation_id}/access_tokens",
            post(installation_token),
        )
        .route("/app", get(get_app))
        .route(
            "/app/installations/{installation_id}",
            get(get_installation),
        )
        .route(
            "/repos/{owner}/{repo}/installation",
            get(scope_installation),
        )
        .route("/orgs/{org}/installation", get(scope_installation))
}

/// The configured App, when the request carries a valid JWT of it (the
/// App routes take the JWT, not an installation token:
/// https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/authenticating-as-a-github-app).
fn app_of(shared: &super::Shared, headers: &HeaderMap) -> Result<super::SimApp, Box<Response>> {
    let Some(app) = shared.config.app.clone() else {
        return Err(Box::new(gh_error(
            StatusCode::NOT_FOUND,
            "Not Found",
            DOC_APPS,
        )));
    };
    let jwt = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if jwt.is_empty() {
        return Err(Box::new(gh_error(
            StatusCode::UNAUTHORIZED,
            "Requires authentication",
            DOC_AUTH,
        )));
    }
    if let Err(message) = verify_app_jwt(jwt, app.app_id, &app.public_key_pem) {
        return Err(Box::new(gh_error(
            StatusCode::UNAUTHORIZED,
            message,
            DOC_APP_TOKEN,
        )));
    }
    Ok(app)
}

const CREATED: &str = "2025-01-01T00:00:00Z";

fn permissions() -> Value {
    json!({ "administration": "write", "organization_self_hosted_runners": "write" })
}

/// `GET /app`: the `integration` schema.
async fn get_app(State(shared): Sim, headers: HeaderMap) -> Response {
    let app = match app_of(&shared, &headers) {
        Ok(app) => app,
        Err(r) => return *r,
    };
    let base = base_url(&headers);
    Json(json!({
        "id": app.app_id,
        "slug": "hangar-sim",
        "node_id": format!("A_sim{}", app.app_id),
        "client_id": format!("Iv1.sim{}", app.app_id),
        "owner": simple_user(&base, "hangar-sim", 1, "Organization"),
        "name": "hangar simulator",
        "description": "the GitHub App of hangar's simulator",
        "external_url": base,
        "html_url": format!("{base}/apps/hangar-sim"),
        "created_at": CREATED,
        "updated_at": CREATED,
        "permissions": permissions(),
        "events": [],
        "installations_count": 1,
    }))
    .into_response()
}

/// The `installation` schema of the configured installation.
fn installation_json(app: &super::SimApp, base: &str) -> Value {
    let id = app.installation_id;
    json!({
        "id": id,
        "account": simple_user(base, "hangar-sim", 1, "Organization"),
        "repository_selection": "all",
        "access_tokens_url": format!("{base}/app/installations/{id}/access_tokens"),
        "repositories_url": format!("{base}/installation/repositories"),
        "html_url": format!("{base}/organizations/hangar-sim/settings/installations/{id}"),
        "app_id": app.app_id,
        "app_slug": "hangar-sim",
        "target_id": 1,
        "target_type": "Organization",
        "permissions": permissions(),
        "events": [],
        "created_at": CREATED,
        "updated_at": CREATED,
        "single_file_name": null,
        "suspended_by": null,
        "suspended_at": null,
    })
}

/// `GET /app/installations/{installation_id}`.
async fn get_installation(
    State(shared): Sim,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let app = match app_of(&shared, &headers) {
        Ok(app) => app,
        Err(r) => return *r,
    };
    let id: Option<u64> = params.get("installation_id").and_then(|s| s.parse().ok());
    if id != Some(app.installation_id) {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", DOC_APPS);
    }
    Json(installation_json(&app, &base_url(&headers))).into_response()
}

/// `GET /repos/{owner}/{repo}/installation`, `GET /orgs/{org}/installation`:
/// the simulator's one installation covers every repository and
/// organization (`repository_selection: all`).
async fn scope_installation(State(shared): Sim, headers: HeaderMap) -> Response {
    match app_of(&shared, &headers) {
        Ok(app) => Json(installation_json(&app, &base_url(&headers))).into_response(),
        Err(r) => *r,
    }
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
    // Buckets hangar never draws from are shown full, with GitHub's limits
    // for an authenticated caller (rate-limit docs); `core` and `search`
    // are the ones the description requires.
    let full =
        |limit: u64| json!({ "limit": limit, "remaining": limit, "reset": rate.reset, "used": 0 });
    Json(json!({
        "resources": {
            "core": core,
            "search": full(30),
            "graphql": full(5000),
            "code_search": full(10),
            "integration_manifest": full(5000),
            "actions_runner_registration": full(10000),
        },
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
    let app = match app_of(&shared, &headers) {
        Ok(app) => app,
        Err(r) => return *r,
    };
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
            "permissions": permissions(),
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
