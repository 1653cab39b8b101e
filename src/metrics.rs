//! Serving the daemon's [`Metrics`] over HTTP (`GET /metrics`) for
//! Prometheus to scrape.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

pub use crate::reconcile::metrics::Metrics;

/// The address metrics are served on when `--metrics` names none: loopback.
pub const DEFAULT_LISTEN: &str = crate::fleet::DEFAULT_METRICS_LISTEN;

/// Bind `listen`; a bad address or a port in use is the caller's error.
pub async fn bind(listen: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await
}

/// Serve `metrics` on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    // Content negotiation as Prometheus does it: OpenMetrics when asked for,
    // else the classic text format.
    let app = Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let m = metrics.clone();
            async move {
                let open = headers
                    .get_all(header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| v.contains("application/openmetrics-text"));
                let (kind, body) = if open {
                    (
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        m.encode(),
                    )
                } else {
                    ("text/plain; version=0.0.4; charset=utf-8", m.encode_text())
                };
                ([(header::CONTENT_TYPE, kind)], body).into_response()
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
