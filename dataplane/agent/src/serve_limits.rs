//! Bounded serving for the agent's unix-socket API and its `/metrics` HTTP endpoint.
//!
//! - Socket API (one JSON request per line): a request line is at most
//!   [`corral_limits::MAX_AGENT_REQUEST_BYTES`] and nests at most
//!   [`corral_limits::MAX_NESTING_DEPTH`] levels (an error response naming the
//!   limit; an over-long line also closes the connection, it cannot be resynced); a
//!   connection idle for [`API_IDLE_TIMEOUT`] is closed; at most
//!   [`MAX_API_CONNECTIONS`] at once (more are closed at accept).
//! - HTTP (`/metrics`, `/healthz`, `/readyz`, an axum router served by corral-http's
//!   bounded server with [`http_limits`]): the request head must arrive within
//!   [`HTTP_HEAD_TIMEOUT`] and fit in [`MAX_HTTP_HEAD_BYTES`] (`431` beyond); one
//!   request per connection, and a connection ends [`HTTP_WRITE_TIMEOUT`] after that
//!   at the latest; at most [`MAX_HTTP_CONNECTIONS`] at once (more are closed at
//!   accept).
//! - A socket API request may turn its connection into a stream ([`Reply::Stream`],
//!   the agent's `monitor`): the stream keeps the connection's slot; the line
//!   limits no longer apply (the streamer bounds its own reads and writes).
//! - Accept errors (EMFILE, ...) are logged and retried after a pause instead of
//!   ending the server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tracing::warn;

pub const MAX_API_CONNECTIONS: usize = 64;
pub const API_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_HTTP_CONNECTIONS: usize = 32;
pub const HTTP_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
pub const HTTP_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_HTTP_HEAD_BYTES: usize = 16 << 10;
pub const MAX_HTTP_BODY_BYTES: usize = 64 << 10;

/// Limits of a line-protocol server (tests use small ones).
#[derive(Debug, Clone, Copy)]
pub struct LineLimits {
    pub max_line: usize,
    pub idle: Duration,
    pub max_connections: usize,
}

impl Default for LineLimits {
    fn default() -> Self {
        LineLimits {
            max_line: corral_limits::MAX_AGENT_REQUEST_BYTES,
            idle: API_IDLE_TIMEOUT,
            max_connections: MAX_API_CONNECTIONS,
        }
    }
}

/// One read of a request line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Line(String),
    Eof,
    TooLong,
    NotUtf8,
    TimedOut,
}

/// Reads one `\n`-terminated line of at most `max` bytes (without the newline)
/// within `idle`.
pub async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, max: usize, idle: Duration) -> Line {
    let fut = async {
        let mut line = Vec::new();
        loop {
            let buf = match r.fill_buf().await {
                Ok(b) => b,
                Err(_) => return Line::Eof,
            };
            if buf.is_empty() {
                return if line.is_empty() {
                    Line::Eof
                } else {
                    to_line(line)
                };
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            if line.len() + take > max {
                return Line::TooLong;
            }
            line.extend_from_slice(&buf[..take]);
            r.consume(if done { take + 1 } else { take });
            if done {
                return to_line(line);
            }
        }
    };
    tokio::time::timeout(idle, fut)
        .await
        .unwrap_or(Line::TimedOut)
}

fn to_line(mut v: Vec<u8>) -> Line {
    if v.last() == Some(&b'\r') {
        v.pop();
    }
    String::from_utf8(v).map_or(Line::NotUtf8, Line::Line)
}

async fn accept_pause(e: std::io::Error) {
    warn!(error = %e, "accept failed; retrying");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Takes over a connection after a request that starts a stream (the agent's
/// `monitor`): it gets the connection's reader (with what is buffered) and writer
/// and runs until it returns; the connection keeps its slot meanwhile.
pub type Streamer = Box<
    dyn FnOnce(
            BufReader<tokio::net::unix::OwnedReadHalf>,
            tokio::net::unix::OwnedWriteHalf,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send,
>;

/// What a request line gets.
pub enum Reply {
    /// one response line (without newline)
    Line(Vec<u8>),
    /// the connection becomes a stream (see [`Streamer`])
    Stream(Streamer),
}

/// Serves a line protocol on `listener`: `handle` maps a request line to a response
/// line (without newline) or a stream; a line beyond the limits gets `error(reason)`.
pub async fn serve_lines<H, F, E>(listener: UnixListener, lim: LineLimits, handle: H, error: E)
where
    H: Fn(String) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send,
    E: Fn(String) -> Vec<u8> + Clone + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(lim.max_connections));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                accept_pause(e).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(
                limit = lim.max_connections,
                "API connection limit reached: closing a new connection"
            );
            continue;
        };
        let (handle, error) = (handle.clone(), error.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            loop {
                let (out, close) = match read_line(&mut r, lim.max_line, lim.idle).await {
                    Line::Eof | Line::TimedOut => break,
                    Line::TooLong => (
                        error(format!(
                            "bad request: line exceeds the limit of {} bytes",
                            lim.max_line
                        )),
                        true,
                    ),
                    Line::NotUtf8 => (error("bad request: not UTF-8".into()), false),
                    Line::Line(l) => match corral_limits::check_json(
                        l.as_bytes(),
                        corral_limits::MAX_NESTING_DEPTH,
                        lim.max_line,
                    ) {
                        Err(e) => (error(format!("bad request: {e}")), false),
                        Ok(()) => match handle(l).await {
                            Reply::Line(out) => (out, false),
                            Reply::Stream(st) => {
                                st(r, w).await;
                                return;
                            }
                        },
                    },
                };
                let mut out = out;
                out.push(b'\n');
                let wrote = tokio::time::timeout(lim.idle, w.write_all(&out)).await;
                if close || !matches!(wrote, Ok(Ok(()))) {
                    break;
                }
            }
        });
    }
}

/// Limits of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`), served by
/// corral-http's bounded server: one request per connection (no keep-alive, so no
/// idle connections are kept); the head must arrive within [`HTTP_HEAD_TIMEOUT`]
/// (a slowloris connection is closed) and fit in [`MAX_HTTP_HEAD_BYTES`] (`431`
/// beyond); the whole connection ends [`HTTP_HEAD_TIMEOUT`] + [`HTTP_WRITE_TIMEOUT`]
/// after accept whatever the client does (a client that does not read its response
/// cannot hold a slot); at most [`MAX_HTTP_CONNECTIONS`] at once; GET endpoints, so
/// a request body is at most [`MAX_HTTP_BODY_BYTES`].
pub fn http_limits() -> corral_http::server::ServerLimits {
    corral_http::server::ServerLimits {
        header_timeout: HTTP_HEAD_TIMEOUT,
        request_timeout: HTTP_WRITE_TIMEOUT,
        max_connections: MAX_HTTP_CONNECTIONS,
        max_body_bytes: MAX_HTTP_BODY_BYTES,
        max_head_bytes: Some(MAX_HTTP_HEAD_BYTES),
        keep_alive: false,
        connection_timeout: Some(HTTP_HEAD_TIMEOUT + HTTP_WRITE_TIMEOUT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn read_line_bounds_length_and_time() {
        let mut r = BufReader::new(&b"abc\r\ndef\nlong-line-here\n"[..]);
        let d = Duration::from_secs(1);
        assert_eq!(read_line(&mut r, 8, d).await, Line::Line("abc".into()));
        assert_eq!(read_line(&mut r, 8, d).await, Line::Line("def".into()));
        assert_eq!(read_line(&mut r, 8, d).await, Line::TooLong);
        let mut r = BufReader::new(&b""[..]);
        assert_eq!(read_line(&mut r, 8, d).await, Line::Eof);
        let (a, _b) = tokio::io::duplex(64);
        let mut r = BufReader::new(a);
        assert_eq!(
            read_line(&mut r, 8, Duration::from_millis(50)).await,
            Line::TimedOut
        );
    }

    fn echo_server(lim: LineLimits) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("api.sock");
        let l = UnixListener::bind(&path).expect("bind");
        tokio::spawn(serve_lines(
            l,
            lim,
            |line: String| async move {
                if line == "\"stream\"" {
                    let st: Streamer = Box::new(|_r, mut w| {
                        Box::pin(async move {
                            let _ = w.write_all(b"s1\ns2\n").await;
                        })
                    });
                    return Reply::Stream(st);
                }
                Reply::Line(format!("ok {}", line.len()).into_bytes())
            },
            |e: String| format!("error {e}").into_bytes(),
        ));
        (dir, path)
    }

    async fn roundtrip(path: &std::path::Path, req: &[u8]) -> Vec<String> {
        let s = tokio::net::UnixStream::connect(path)
            .await
            .expect("connect");
        let (r, mut w) = s.into_split();
        // Written concurrently: the server may stop reading (and close) early.
        let req = req.to_vec();
        tokio::spawn(async move {
            let _ = w.write_all(&req).await;
            let _ = w.shutdown().await;
        });
        // read_to_end keeps what arrived before a reset (the server closes with
        // unread input after an over-long line).
        let mut out = Vec::new();
        let mut r = BufReader::new(r);
        let _ = tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut out))
            .await
            .expect("the server closes the connection");
        String::from_utf8_lossy(&out)
            .lines()
            .map(String::from)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn socket_api_limits_lines_depth_idle_and_connections() {
        let lim = LineLimits {
            max_line: 1000,
            idle: Duration::from_millis(1000),
            max_connections: 2,
        };
        let (_dir, path) = echo_server(lim);
        let deep = "[".repeat(100_000);
        let mut req = b"{}\n".to_vec();
        req.extend_from_slice(format!("{}\n", &deep[..500]).as_bytes());
        req.extend_from_slice(b"{\"a\":1}\n");
        let out = roundtrip(&path, &req).await;
        assert_eq!(out[0], "ok 2");
        assert!(out[1].contains("limit of 100 levels"), "{out:?}");
        assert_eq!(out[2], "ok 7", "the connection keeps working");
        // A stream request hands the connection over (after the earlier replies).
        let out = roundtrip(&path, b"{}\n\"stream\"\n{}\n").await;
        assert_eq!(out, ["ok 2", "s1", "s2"]);
        // An over-long line: error naming the limit, then the connection closes.
        let out = roundtrip(&path, format!("{deep}\n{{}}\n").as_bytes()).await;
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("limit of 1000 bytes"), "{out:?}");
        // Two idle connections fill the slots; a third is closed at accept; after
        // the idle timeout the slots are free again.
        // (each answers one request first, so both are surely accepted and held,
        // however slow the machine; a sleep alone raced the accept loop. A client
        // sees EOF before its task's slot is freed, so a slot still held by the
        // connections above is retried, bounded.)
        let held = |path: std::path::PathBuf| async move {
            for _ in 0..100 {
                let s = tokio::net::UnixStream::connect(&path)
                    .await
                    .expect("connect");
                let (r, mut w) = s.into_split();
                let _ = w.write_all(b"{}\n").await;
                let mut line = String::new();
                let mut r = BufReader::new(r);
                let _ = r.read_line(&mut line).await;
                if line.trim() == "ok 2" {
                    return (r, w);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("no connection slot became free");
        };
        let a = held(path.clone()).await;
        let b = held(path.clone()).await;
        let out = roundtrip(&path, b"{}\n").await;
        assert!(out.is_empty(), "{out:?}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let out = roundtrip(&path, b"{}\n").await;
        assert_eq!(out, ["ok 2"]);
        drop((a, b));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_times_out_slow_heads_limits_size_and_connections() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let app = axum::Router::new().route("/metrics", axum::routing::get(|| async { "m 1\n" }));
        // The agent's limits with short times and 3 connections.
        let lim = corral_http::server::ServerLimits {
            header_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_millis(300),
            max_connections: 3,
            connection_timeout: Some(Duration::from_millis(600)),
            ..http_limits()
        };
        tokio::spawn(corral_http::server::serve(l, app, lim));
        // Slowloris: a partial head, never finished.
        let mut slow = tokio::net::TcpStream::connect(addr).await.expect("slow");
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let get = |req: Vec<u8>| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let _ = s.write_all(&req).await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
                .await
                .expect("the server closes the connection");
            String::from_utf8_lossy(&out).into_owned()
        };
        let r = get(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("m 1\n"), "{r}");
        // The slow connection is closed within the bound, unanswered.
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut out))
            .await
            .expect("slow connection closed within the bound");
        assert!(!out.starts_with(b"HTTP/1.1 200"), "{out:?}");
        let r = get(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let mut big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HTTP_HEAD_BYTES + 10));
        let r = get(big).await;
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        // Three silent connections fill the slots; a fourth is closed at accept
        // without an answer; once the silent ones time out, requests are served.
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(tokio::net::TcpStream::connect(addr).await.expect("idle"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = get(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
        assert!(r.is_empty(), "{r}");
        tokio::time::sleep(Duration::from_millis(800)).await;
        let r = get(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        drop(idle);
    }
}
