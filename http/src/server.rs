//! HTTP serving with limits — the one HTTP server of Corral: the extender, `run`'s
//! and the node agent's `/metrics` `/healthz` `/readyz` (instead of `axum::serve`,
//! which has no timeouts or connection limit).
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
//! - Head size ([`ServerLimits::max_head_bytes`]): `431` beyond it; by default
//!   hyper's (at most 100 headers, ~400 KiB head).
//! - One request per connection ([`ServerLimits::keep_alive`] off, the agent): no
//!   idle connections are kept.
//! - Connection time bound ([`ServerLimits::connection_timeout`], the agent): the
//!   connection is closed that long after accept whatever the client does, so a
//!   client that never reads its response cannot hold a slot.

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
    /// Largest request head (hyper's read buffer, at least 8 KiB): `431` beyond.
    /// `None`: hyper's default (~400 KiB).
    pub max_head_bytes: Option<usize>,
    /// Keep-alive; `false`: one request per connection.
    pub keep_alive: bool,
    /// Whole-connection bound from accept; `None`: only the timeouts above.
    pub connection_timeout: Option<Duration>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_body_bytes: 1 << 20,
            max_head_bytes: None,
            keep_alive: true,
            connection_timeout: None,
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
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(lim.header_timeout)
                .keep_alive(lim.keep_alive);
            if let Some(n) = lim.max_head_bytes {
                b.max_buf_size(n.max(8192));
            }
            let conn = b.serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            let served = async {
                tokio::select! {
                    r = conn.as_mut() => r,
                    _ = stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                }
            };
            let r = match lim.connection_timeout {
                Some(t) => match tokio::time::timeout(t, served).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::debug!("connection over its time bound ({t:?}): closed");
                        return;
                    }
                },
                None => served.await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn exchange(addr: std::net::SocketAddr, req: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(req).await.expect("write");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("the server closes the connection");
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The agent's mode: one request per connection (the server closes after the
    /// response even when the client asked for keep-alive) and a whole-connection
    /// bound that ends a request still in progress, before the request timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_request_per_connection_and_connection_time_bound() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let app = Router::new()
            .route("/fast", axum::routing::get(|| async { "fast\n" }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    "slow\n"
                }),
            );
        let lim = ServerLimits {
            request_timeout: Duration::from_secs(5),
            keep_alive: false,
            connection_timeout: Some(Duration::from_millis(500)),
            max_head_bytes: Some(8192),
            ..ServerLimits::default()
        };
        tokio::spawn(serve(l, app, lim));
        let two = b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n";
        let r = exchange(addr, two).await;
        assert_eq!(r.matches("HTTP/1.1 200").count(), 1, "{r}");
        let t = std::time::Instant::now();
        let r = exchange(addr, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.is_empty(), "{r}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let mut big = b"GET /fast HTTP/1.1\r\nHost: x\r\nX-A: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 9000));
        big.extend_from_slice(b"\r\n\r\n");
        let r = exchange(addr, &big).await;
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        // Keep-alive (the default): both requests on one connection are answered;
        // the idle connection then closes at the header timeout.
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let app = Router::new().route("/fast", axum::routing::get(|| async { "fast\n" }));
        let lim = ServerLimits {
            header_timeout: Duration::from_millis(500),
            ..ServerLimits::default()
        };
        tokio::spawn(serve(l, app, lim));
        let r = exchange(addr, two).await;
        assert_eq!(r.matches("HTTP/1.1 200").count(), 2, "{r}");
    }
}
