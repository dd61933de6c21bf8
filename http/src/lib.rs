//! corral-http: the HTTP pieces every Corral server and scraper shares.
//!
//! - [`server`]: serving an axum `Router` with header/request timeouts, a connection
//!   limit and a body limit (`run`'s `/metrics`, the extender);
//! - [`client`]: the one HTTP client (hyper-util + rustls with the system roots):
//!   `http://` and `https://`, optional bearer token, timeout, bounded body — used by
//!   the scheduler's health scraping.
//!
//! Invariant: no Corral crate below it; no Kubernetes client.

pub mod client;
pub mod server;
