//! `GET /rate_limit` and the GitHub App routes.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};

use super::layer::{gh_error, Sim, DOC_AUTH};
use super::world::TokenKind;

const DOC_APP_TOKEN: &str =
    "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app";

pub(crate) fn routes() -> Router<std::sync::Arc<super::Shared>> {
    Router::new().route("/rate_limit", get(rate_limit)).route(
        "/app/installations/{installation_id}/access_tokens",
        post(installation_token),
    )
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
