//! HTTP serving with limits, for the extender and `run`'s `/metrics` `/healthz`
//! `/readyz` (instead of `axum::serve`, which has no timeouts or connection limit).
//!
//! - **Header timeout** ([`ServerLimits::header_timeout`]): a connection must deliver
//!   a complete request head within it, counted from when the server starts waiting
//!   for one — this is also the **idle timeout** of keep-alive connections (hyper
//!   arms the same timer while waiting for the next request). A slowloris client
//!   trickling header bytes is closed when it runs out.
//! - **Request timeout** ([`ServerLimits::request_timeout`]): reading the body and
//!   producing the response; past it the client gets `408` and the connection closes.
//!   Handlers run CPU-heavy work on the blocking pool, so a long request never holds
//!   an async worker and `/healthz` keeps answering.
//! - **Connection limit** ([`ServerLimits::max_connections`]): connections beyond it
//!   are closed right after accept (a full server stays responsive instead of queueing).
//! - **Body size** ([`ServerLimits::max_body_bytes`]): `413` for a larger
//!   `Content-Length` before reading, and a cut-off for chunked bodies.
//! - Header size: hyper's defaults (at most 100 headers, ~400 KiB head).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Timeouts and limits of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Complete request head within this (also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// Body read + handling of one request.
    pub request_timeout: Duration,
    /// Concurrent connections; more are closed at accept.
    pub max_connections: usize,
    /// Largest request body: a larger `Content-Length` is answered `413` before the
    /// body is read; a chunked body is cut off at this size (axum's body limit).
    pub max_body_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_body_bytes: 1 << 20,
        }
    }
}

/// `Content-Type: application/json` (parameters such as `charset` allowed) or
/// `415 Unsupported Media Type` — for the extender's POST endpoints.
pub async fn require_json(req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if ok || req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    (
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        axum::Json(serde_json::json!({"error": "Content-Type must be application/json"})),
    )
        .into_response()
}

/// Serves `app` on `listener` with `lim` until the listener fails.
pub async fn serve(listener: TcpListener, app: Router, lim: ServerLimits) -> std::io::Result<()> {
    serve_until(listener, app, lim, std::future::pending(), Duration::ZERO).await
}

/// Serves `app` until `shutdown` completes, then stops accepting, lets every open
/// connection finish its request in progress (hyper's graceful shutdown: idle
/// keep-alive connections close at once) and returns when all are closed or after
/// `grace`, whichever is first.
pub async fn serve_until(
    listener: TcpListener,
    app: Router,
    lim: ServerLimits,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let timeout = lim.request_timeout;
    let max_body = lim.max_body_bytes;
    let app = app
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| async move {
                let declared = req
                    .headers()
                    .get(axum::http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if declared.is_some_and(|n| n > max_body as u64) {
                    let mut r = (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body is larger than the limit of {max_body} bytes\n"),
                    )
                        .into_response();
                    r.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                    return r;
                }
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(r) => r,
                    Err(_) => {
                        let mut r =
                            (StatusCode::REQUEST_TIMEOUT, "request timeout\n").into_response();
                        r.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                        r
                    }
                }
            },
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body));
    let slots = Arc::new(Semaphore::new(lim.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning or exiting.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                "connection limit ({}) reached: closing a new connection",
                lim.max_connections
            );
            drop(stream);
            continue;
        };
        let svc = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(lim.header_timeout)
                .serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!("connection: {e}");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it closes.
    let all = u32::try_from(lim.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "shutdown: {} connection(s) still open after {grace:?}",
            lim.max_connections - slots.available_permits()
        );
    }
    Ok(())
}
