//! The one HTTP client: hyper-util's pooled client over rustls (ring, the system's
//! CA roots; plain `http://` too), with a per-request timeout, an optional bearer
//! token and a body limit. Replaces the scheduler's two hand-written HTTP/1.0 GETs.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A GET client for scrape endpoints.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    bearer: Option<Arc<str>>,
    max_body: usize,
}

impl HttpClient {
    /// `bearer`: sent as `Authorization: Bearer …` on every request; `max_body`:
    /// larger responses are errors. Without any system CA certificate `https://`
    /// requests fail verification (plain `http://` still works).
    pub fn new(bearer: Option<String>, max_body: usize) -> Result<HttpClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for c in found.certs {
            let _ = roots.add(c);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HttpClient {
            inner: Client::builder(TokioExecutor::new()).build(https),
            bearer: bearer.map(|t| Arc::from(t.trim())),
            max_body,
        })
    }

    /// GET `url` (`http://` or `https://`); the body of a `200` answer within
    /// `timeout`, else an error naming the URL.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<String, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(format!(
                    "{url}: only http:// and https:// URLs are supported"
                ));
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("{url}: missing host"));
        }
        let mut req = hyper::Request::get(uri).header("accept", "text/plain");
        if let Some(t) = &self.bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("{url}: {e}"))?;
        let fetch = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| format!("{url}: {}", chain(&e)))?;
            let status = resp.status();
            if status != hyper::StatusCode::OK {
                return Err(format!("{url}: HTTP {status}"));
            }
            let body = Limited::new(resp.into_body(), self.max_body)
                .collect()
                .await
                .map_err(|e| format!("{url}: body: {e}"))?
                .to_bytes();
            Ok(String::from_utf8_lossy(&body).into_owned())
        };
        match tokio::time::timeout(timeout, fetch).await {
            Ok(r) => r,
            Err(_) => Err(format!("{url}: timed out after {timeout:?}")),
        }
    }
}

/// An error with its sources ("client error (Connect): tcp connect error: ...").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Answers every connection with `answer`, returning the request heads seen.
    async fn serve(answer: &'static str) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                    if answer == "hang" {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        (format!("http://{addr}"), rx)
    }

    #[tokio::test]
    async fn get_body_status_token_limit_timeout() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nnode_load 1";
        let (url, mut heads) = serve(ok).await;
        let c = HttpClient::new(Some("s3cret\n".into()), 1 << 20).expect("client");
        let t = Duration::from_secs(5);
        assert_eq!(
            c.get(&format!("{url}/metrics"), t).await.unwrap(),
            "node_load 1"
        );
        let head = heads.recv().await.expect("head").to_ascii_lowercase();
        assert!(head.starts_with("get /metrics http/1.1"), "{head}");
        assert!(head.contains("authorization: bearer s3cret\r\n"), "{head}");
        // Body limit.
        let small = HttpClient::new(None, 4).expect("client");
        let e = small.get(&url, t).await.unwrap_err();
        assert!(e.contains("body"), "{e}");
        assert!(
            !heads
                .recv()
                .await
                .expect("head")
                .to_ascii_lowercase()
                .contains("authorization")
        );
        // Status.
        let (url, _h) =
            serve("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        let e = c.get(&url, t).await.unwrap_err();
        assert!(e.contains("503") && e.contains(&url), "{e}");
        // Timeout.
        let (url, _h) = serve("hang").await;
        let e = c.get(&url, Duration::from_millis(200)).await.unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        // Bad URLs and refused connections are errors naming the URL.
        assert!(
            c.get("ftp://x/", t)
                .await
                .unwrap_err()
                .contains("only http")
        );
        let e = c.get("http://127.0.0.1:1/m", t).await.unwrap_err();
        assert!(e.contains("127.0.0.1:1"), "{e}");
    }
}
