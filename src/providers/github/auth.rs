//! Credentials: a static token, or a GitHub App whose installation token is
//! minted from a short-lived RS256 JWT and cached until shortly before it
//! expires. Every request gets its `Authorization` header from here, so the
//! rest of the provider never sees how we authenticate.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::transport::Transport;
use super::Auth;
use crate::providers::{ErrorKind, ProviderError};
use crate::secret::Secret;

/// An installation token is replaced this long before GitHub says it
/// expires, so a request never races the expiry.
pub const REFRESH_MARGIN_SECS: i64 = 5 * 60;

pub(crate) enum Credentials {
    Token(Secret<String>),
    App {
        app_id: u64,
        installation_id: u64,
        key: Secret<EncodingKey>,
        cached: Mutex<Option<InstallationToken>>,
    },
}

pub(crate) struct InstallationToken {
    token: Secret<String>,
    expires_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct AppClaims {
    iat: i64,
    exp: i64,
    iss: String,
}

#[derive(Deserialize)]
struct AccessTokenAnswer {
    token: String,
    expires_at: DateTime<Utc>,
}

impl Credentials {
    pub fn new(auth: Auth, target: &str) -> Result<Self, ProviderError> {
        Ok(match auth {
            Auth::Token(token) => Credentials::Token(token),
            Auth::App {
                app_id,
                installation_id,
                private_key_pem,
            } => {
                // The key's parse error says nothing about its content.
                let key = EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes()).map_err(
                    |_| {
                        ProviderError::new(
                            target,
                            ErrorKind::Refused,
                            "github app private key is not an rsa pem key",
                        )
                    },
                )?;
                Credentials::App {
                    app_id,
                    installation_id,
                    key: Secret::new(key),
                    cached: Mutex::new(None),
                }
            }
        })
    }

    /// The `Authorization` header value for the next request.
    pub async fn authorization(
        &self,
        transport: &Transport,
    ) -> Result<Secret<String>, ProviderError> {
        match self {
            Credentials::Token(token) => Ok(Secret::new(format!("Bearer {}", token.expose()))),
            Credentials::App {
                app_id,
                installation_id,
                key,
                cached,
            } => {
                // Held across the mint so concurrent callers share one token.
                let mut slot = cached.lock().await;
                let fresh_until = Utc::now() + ChronoDuration::seconds(REFRESH_MARGIN_SECS);
                if let Some(current) = slot.as_ref() {
                    if current.expires_at > fresh_until {
                        return Ok(Secret::new(format!("Bearer {}", current.token.expose())));
                    }
                }
                let minted = mint(transport, *app_id, *installation_id, key).await?;
                let header = Secret::new(format!("Bearer {}", minted.token.expose()));
                tracing::debug!(
                    target: "hangar::github",
                    installation_id,
                    expires_at = %minted.expires_at,
                    "installation token minted"
                );
                *slot = Some(minted);
                Ok(header)
            }
        }
    }

    /// Drop a cached installation token GitHub no longer accepts. Returns
    /// whether there was one to drop (then one retry with a new token makes
    /// sense).
    pub async fn forget(&self) -> bool {
        match self {
            Credentials::Token(_) => false,
            Credentials::App { cached, .. } => cached.lock().await.take().is_some(),
        }
    }
}

/// The App's JWT: RS256, issued a minute in the past against clock drift,
/// valid nine minutes (GitHub allows ten).
fn app_jwt(app_id: u64, key: &Secret<EncodingKey>) -> Result<Secret<String>, String> {
    let now = Utc::now().timestamp();
    let claims = AppClaims {
        iat: now - 60,
        exp: now + 9 * 60,
        iss: app_id.to_string(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key.expose())
        .map(Secret::new)
        .map_err(|e| format!("signing app jwt: {e}"))
}

async fn mint(
    transport: &Transport,
    app_id: u64,
    installation_id: u64,
    key: &Secret<EncodingKey>,
) -> Result<InstallationToken, ProviderError> {
    const WHAT: &str = "installation token";
    let jwt = app_jwt(app_id, key).map_err(|m| transport.error(ErrorKind::Refused, m))?;
    let answer = transport
        .send(
            WHAT,
            Method::POST,
            &format!("/app/installations/{installation_id}/access_tokens"),
            Some(&Secret::new(format!("Bearer {}", jwt.expose()))),
            &[],
            None,
        )
        .await?;
    if answer.status.as_u16() != 201 {
        let mut err = transport.classify(WHAT, &answer);
        if err.kind == ErrorKind::NotFound {
            err.kind = ErrorKind::Refused;
        }
        return Err(err);
    }
    let parsed: AccessTokenAnswer = answer.json(transport.target(), WHAT)?;
    Ok(InstallationToken {
        token: Secret::new(parsed.token),
        expires_at: parsed.expires_at,
    })
}
