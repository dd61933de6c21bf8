//! The extender's HTTP routes (`/filter`, `/prioritize`, `/bind`, `/preempt`,
//! `/metrics`, `/healthz`, `/readyz`): decode with [`super::wire::parse`], evaluate
//! on the blocking pool, answer JSON (`400 {"error"}` for a bad body).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::Extender;
use super::wire::*;

fn bad_request(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": msg })),
    )
        .into_response()
}

fn ok<T: Serialize>(v: &T) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// The extender's routes.
pub fn router(ext: Arc<Extender>) -> Router {
    Router::new()
        .route(
            "/filter",
            post(|State(e): State<Arc<Extender>>, body: Bytes| async move {
                // CPU-bound: on the blocking pool, so /healthz and other requests
                // keep their async workers.
                blocking(move || match parse::<ExtenderArgs>(&body, "ExtenderArgs") {
                    Ok(a) => ok(&e.filter(a)),
                    Err(m) => bad_request(m),
                })
                .await
            }),
        )
        .route(
            "/prioritize",
            post(|State(e): State<Arc<Extender>>, body: Bytes| async move {
                blocking(move || {
                    match parse::<ExtenderArgs>(&body, "ExtenderArgs").and_then(|a| e.prioritize(a))
                    {
                        Ok(r) => ok(&r),
                        Err(m) => bad_request(m),
                    }
                })
                .await
            }),
        )
        .route(
            "/bind",
            post(|State(e): State<Arc<Extender>>, body: Bytes| async move {
                match parse::<ExtenderBindingArgs>(&body, "ExtenderBindingArgs") {
                    Ok(a) => ok(&e.bind(a).await),
                    Err(m) => bad_request(m),
                }
            }),
        )
        .route(
            "/preempt",
            post(|State(e): State<Arc<Extender>>, body: Bytes| async move {
                blocking(move || {
                    match parse::<ExtenderPreemptionArgs>(&body, "ExtenderPreemptionArgs")
                        .and_then(|a| e.preempt(a))
                    {
                        Ok(r) => ok(&r),
                        Err(m) => bad_request(m),
                    }
                })
                .await
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|State(e): State<Arc<Extender>>| async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    e.metrics.encode(),
                )
            }),
        )
        .layer(axum::middleware::from_fn(crate::http_server::require_json))
        .layer(axum::extract::DefaultBodyLimit::max(
            corral_limits::MAX_EXTENDER_BODY_BYTES,
        ))
        .with_state(ext)
}

/// Runs `f` on the blocking pool.
async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({ "error": format!("internal error: {e}") })),
        )
            .into_response()
    })
}
