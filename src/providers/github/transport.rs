//! One HTTP exchange with GitHub: octocrab's client underneath (base URI,
//! timeouts, no retries), our own `Authorization` header on top, rate-limit
//! headers read from every answer, and GitHub's status codes mapped onto
//! [`ErrorKind`].

use std::sync::Mutex;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION};
use http::{Method, StatusCode};
use octocrab::Octocrab;
use serde_json::Value;

use crate::providers::{ErrorKind, ProviderError, RateBudget};
use crate::secret::Secret;

/// What a request answered, whatever the status.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        target: &str,
        what: &str,
    ) -> Result<T, ProviderError> {
        serde_json::from_str(&self.body).map_err(|e| {
            ProviderError::new(
                target,
                ErrorKind::Transient,
                // serde's own message may quote a value, and values here
                // can be secrets: say only where parsing stopped.
                format!(
                    "{what}: unexpected answer ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
        })
    }
}

/// Used when GitHub reports a secondary limit without saying how long to
/// wait; GitHub's guidance is "at least one minute".
const SECONDARY_LIMIT_DEFAULT_SECS: u64 = 60;

pub(crate) struct Transport {
    octo: Octocrab,
    target: String,
    budget: Mutex<Option<RateBudget>>,
}

impl Transport {
    /// octocrab is built without authentication (we add the header per
    /// request, so App tokens can rotate) and, because its `retry` feature
    /// is not enabled, with no retry layer at all: backoff is `Retrying`'s job.
    pub fn new(
        api_url: &str,
        target: String,
        timeout: Option<Duration>,
    ) -> Result<Self, ProviderError> {
        let builder = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| {
                ProviderError::new(&target, ErrorKind::Refused, format!("bad api url: {e}"))
            })?
            .set_connect_timeout(timeout)
            .set_read_timeout(timeout)
            .set_write_timeout(timeout);
        let octo = builder.build().map_err(|e| {
            ProviderError::new(&target, ErrorKind::Refused, format!("http client: {e}"))
        })?;
        Ok(Transport {
            octo,
            target,
            budget: Mutex::new(None),
        })
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn budget(&self) -> Option<RateBudget> {
        *self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send one request. `path` is path and query, relative to the API URL.
    /// Transport failures (connect, timeout, dropped connection) are
    /// `Transient`; any HTTP answer is returned as is for the caller to judge.
    pub async fn send(
        &self,
        what: &str,
        method: Method,
        path: &str,
        authorization: Option<&Secret<String>>,
        extra: &[(HeaderName, HeaderValue)],
        body: Option<&Value>,
    ) -> Result<Answer, ProviderError> {
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(ACCEPT, "application/vnd.github+json");
        if let Some(authorization) = authorization {
            let mut auth = HeaderValue::from_str(authorization.expose()).map_err(|_| {
                ProviderError::new(
                    &self.target,
                    ErrorKind::Refused,
                    "credential is not a valid header value",
                )
            })?;
            auth.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, auth);
        }
        for (name, value) in extra {
            builder = builder.header(name, value);
        }
        let request = self
            .octo
            .build_request(builder, body)
            .map_err(|e| self.error(ErrorKind::Refused, format!("{what}: bad request: {e}")))?;
        tracing::debug!(target: "hangar::github", %method, path, "request");
        let response = self
            .octo
            .execute(request)
            .await
            .map_err(|e| self.error(ErrorKind::Transient, format!("{what}: {e}")))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = self.octo.body_to_string(response).await.map_err(|e| {
            self.error(ErrorKind::Transient, format!("{what}: reading answer: {e}"))
        })?;
        self.note_budget(&headers);
        tracing::debug!(target: "hangar::github", %method, path, status = status.as_u16(), "answer");
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    fn note_budget(&self, headers: &HeaderMap) {
        let num = |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.parse().ok() };
        if let (Some(limit), Some(remaining), Some(reset)) = (
            num("x-ratelimit-limit"),
            num("x-ratelimit-remaining"),
            num("x-ratelimit-reset"),
        ) {
            *self.budget.lock().unwrap_or_else(|p| p.into_inner()) = Some(RateBudget {
                limit,
                remaining,
                reset,
            });
        }
    }

    pub fn error(&self, kind: ErrorKind, message: impl Into<String>) -> ProviderError {
        ProviderError::new(&self.target, kind, message)
    }

    /// Map an unexpected answer to an error, the way GitHub documents its
    /// status codes (rate limits: "Rate limits for the REST API").
    pub fn classify(&self, what: &str, answer: &Answer) -> ProviderError {
        let status = answer.status;
        let message = serde_json::from_str::<Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        let shown = if message.is_empty() {
            format!("{what}: {}", status.as_u16())
        } else {
            format!("{what}: {}: {}", status.as_u16(), message.to_lowercase())
        };
        let num = |name: &str| {
            answer
                .header(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let kind = match status.as_u16() {
            403 | 429 => {
                if let Some(secs) = num("retry-after") {
                    ErrorKind::RateLimited {
                        retry_after_secs: secs,
                    }
                } else if num("x-ratelimit-remaining") == Some(0) {
                    let now = chrono::Utc::now().timestamp().max(0) as u64;
                    let reset = num("x-ratelimit-reset").unwrap_or(now);
                    ErrorKind::RateLimited {
                        retry_after_secs: reset.saturating_sub(now).max(1),
                    }
                } else if status == StatusCode::TOO_MANY_REQUESTS
                    || message.to_lowercase().contains("secondary rate limit")
                {
                    ErrorKind::RateLimited {
                        retry_after_secs: SECONDARY_LIMIT_DEFAULT_SECS,
                    }
                } else {
                    ErrorKind::Refused
                }
            }
            404 => ErrorKind::NotFound,
            500..=599 => ErrorKind::Transient,
            _ => ErrorKind::Refused,
        };
        self.error(kind, shown)
    }
}
