//! The pod reflector of the run loop, built for restart speed.
//!
//! - **List**: paginated (`limit` + `continue`). Each page is fetched as text; only
//!   its `metadata` (the continue token) is read on the async task, and the page is
//!   handed to the blocking pool, where it is decoded into `Pod`s and `PodInfo`s
//!   (rayon, in parallel) while the next page is already being fetched. Pages reach
//!   the loop in order, each as one message, so the loop only inserts ready-made
//!   `PodInfo`s into the snapshot.
//! - **Watch** from the list's resourceVersion (bookmarks on); a watch that ends is
//!   resumed from the last seen resourceVersion, `410 Gone` (or repeated errors)
//!   lead to a relist. `PodInfo`s of watch events are built here too, off the loop
//!   thread.
//!
//! The loop sees the same protocol as kube-runtime's watcher: `Init`, pages of
//! `InitApply`, `InitDone`, then `Apply`/`Delete`; a relist repeats it, and the loop
//! deletes what the relist did not show.

use std::collections::VecDeque;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use rayon::prelude::*;

use super::Msg;
use super::metrics::{Metrics, ResourceLabel, What};
use crate::snapshot::PodInfo;

/// A pod decoded off the loop thread.
pub struct ParsedPod {
    /// `namespace/name`.
    pub key: String,
    /// The decoded pod (its `seq` is stamped by the loop), or why it is invalid.
    pub info: Result<PodInfo, String>,
}

/// Pod events for the loop.
pub enum PodEvent {
    /// A (re)list starts.
    Init,
    /// Pods of one list page (`init`) or of one watch event, in order.
    Apply { init: bool, pods: Vec<ParsedPod> },
    /// The (re)list is complete.
    InitDone,
    /// A pod was deleted (key).
    Delete(String),
}

fn key_of(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

fn parse_pod(p: Pod) -> ParsedPod {
    let key = key_of(&p);
    let info = PodInfo::new(p, 0).map_err(|e| e.to_string());
    ParsedPod { key, info }
}

/// Decodes one list page (blocking: run on the blocking pool).
fn parse_page(text: String) -> Result<Vec<ParsedPod>, String> {
    #[derive(serde::Deserialize)]
    struct Page {
        items: Vec<Pod>,
    }
    let page: Page = serde_json::from_str(&text).map_err(|e| format!("pod list page: {e}"))?;
    drop(text);
    Ok(page.items.into_par_iter().map(parse_pod).collect())
}

/// The list metadata of a page, without decoding its items.
fn page_meta(text: &str) -> Result<ListMeta, String> {
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(default)]
        metadata: ListMeta,
    }
    serde_json::from_str::<Meta>(text)
        .map(|m| m.metadata)
        .map_err(|e| format!("pod list page: {e}"))
}

enum WatchEnd {
    /// Resume from the last resourceVersion.
    Resume,
    /// 410 Gone: relist.
    Gone,
    Error(String),
    /// The loop is gone.
    Closed,
}

/// Spawns the pod reflector.
pub fn spawn(
    client: Client,
    tx: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
    page_size: u32,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Pod> = Api::all(client.clone());
        let err = |what: &str, e: &dyn std::fmt::Display| {
            metrics
                .watch_errors
                .get_or_create(&ResourceLabel {
                    resource: What("pods"),
                })
                .inc();
            tracing::warn!("pods {what}: {e}");
        };
        let mut failures = 0u32;
        loop {
            let mut rv = match list(&client, &api, &tx, page_size).await {
                Ok(Some(rv)) => rv,
                Ok(None) => return,
                Err(e) => {
                    err("list", &e);
                    failures += 1;
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            };
            failures = 0;
            loop {
                match watch(&api, &mut rv, &tx).await {
                    WatchEnd::Resume => failures = 0,
                    WatchEnd::Gone => {
                        err("watch", &"410 Gone: relisting");
                        break;
                    }
                    WatchEnd::Error(e) => {
                        err("watch", &e);
                        failures += 1;
                        if failures > 3 {
                            break;
                        }
                        tokio::time::sleep(backoff(failures)).await;
                    }
                    WatchEnd::Closed => return,
                }
            }
        }
    })
}

fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(100) * (1u32 << failures.min(6))).min(Duration::from_secs(5))
}

/// Lists every pod, page by page; returns the list's resourceVersion (`None` when
/// the loop is gone).
async fn list(
    client: &Client,
    api: &Api<Pod>,
    tx: &mpsc::Sender<Msg>,
    page_size: u32,
) -> Result<Option<String>, String> {
    if tx.send(Msg::Pods(PodEvent::Init)).is_err() {
        return Ok(None);
    }
    let url = api.resource_url().to_string();
    let request = kube::core::Request::new(url);
    let mut pending: VecDeque<tokio::task::JoinHandle<Result<Vec<ParsedPod>, String>>> =
        VecDeque::new();
    let mut cont: Option<String> = None;
    let mut rv = String::new();
    // At most this many pages are being decoded while the next one is fetched.
    let max_pending = 4;
    loop {
        let mut lp = ListParams::default().limit(page_size);
        if let Some(c) = &cont {
            lp = lp.continue_token(c);
        }
        let req = request.list(&lp).map_err(|e| e.to_string())?;
        let text = client.request_text(req).await.map_err(|e| e.to_string())?;
        let meta = page_meta(&text)?;
        if rv.is_empty() {
            rv = meta.resource_version.clone().unwrap_or_default();
        }
        pending.push_back(tokio::task::spawn_blocking(move || parse_page(text)));
        // Hand finished pages to the loop, in order.
        while pending.len() > max_pending || pending.front().is_some_and(|h| h.is_finished()) {
            let Some(h) = pending.pop_front() else { break };
            let pods = h.await.map_err(|e| e.to_string())??;
            if tx
                .send(Msg::Pods(PodEvent::Apply { init: true, pods }))
                .is_err()
            {
                return Ok(None);
            }
        }
        cont = meta.continue_.filter(|c| !c.is_empty());
        if cont.is_none() {
            break;
        }
    }
    while let Some(h) = pending.pop_front() {
        let pods = h.await.map_err(|e| e.to_string())??;
        if tx
            .send(Msg::Pods(PodEvent::Apply { init: true, pods }))
            .is_err()
        {
            return Ok(None);
        }
    }
    if tx.send(Msg::Pods(PodEvent::InitDone)).is_err() {
        return Ok(None);
    }
    Ok(Some(rv))
}

/// Watches from `rv` until the stream ends or fails; `rv` follows the events.
async fn watch(api: &Api<Pod>, rv: &mut String, tx: &mpsc::Sender<Msg>) -> WatchEnd {
    let wp = WatchParams::default().timeout(290);
    let mut s = match api.watch(&wp, rv).await {
        Ok(s) => s.boxed(),
        Err(kube::Error::Api(e)) if e.code == 410 => return WatchEnd::Gone,
        Err(e) => return WatchEnd::Error(e.to_string()),
    };
    while let Some(ev) = s.next().await {
        let msg = match ev {
            Ok(WatchEvent::Added(p)) | Ok(WatchEvent::Modified(p)) => {
                if let Some(v) = &p.metadata.resource_version {
                    rv.clone_from(v);
                }
                PodEvent::Apply {
                    init: false,
                    pods: vec![parse_pod(p)],
                }
            }
            Ok(WatchEvent::Deleted(p)) => {
                if let Some(v) = &p.metadata.resource_version {
                    rv.clone_from(v);
                }
                PodEvent::Delete(key_of(&p))
            }
            Ok(WatchEvent::Bookmark(b)) => {
                rv.clone_from(&b.metadata.resource_version);
                continue;
            }
            Ok(WatchEvent::Error(e)) if e.code == 410 => return WatchEnd::Gone,
            Ok(WatchEvent::Error(e)) => return WatchEnd::Error(e.to_string()),
            Err(e) => return WatchEnd::Error(e.to_string()),
        };
        if tx.send(Msg::Pods(msg)).is_err() {
            return WatchEnd::Closed;
        }
    }
    WatchEnd::Resume
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_decode_in_order_and_bad_pods_are_named() {
        let text = serde_json::json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "7", "continue": "7/default/b"},
            "items": [
                {"metadata": {"name": "a", "namespace": "default"},
                 "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}},
                {"metadata": {"name": "b", "namespace": "default"},
                 "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "lots"}}}]}}
            ]
        })
        .to_string();
        let meta = page_meta(&text).expect("meta");
        assert_eq!(meta.continue_.as_deref(), Some("7/default/b"));
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        let pods = parse_page(text).expect("page");
        assert_eq!(pods[0].key, "default/a");
        assert_eq!(
            pods[0]
                .info
                .as_ref()
                .expect("valid")
                .requests
                .requests
                .milli_cpu,
            1000
        );
        assert_eq!(pods[1].key, "default/b");
        let Err(e) = &pods[1].info else {
            panic!("an invalid quantity must make the pod invalid")
        };
        assert!(e.contains("cpu"), "{e}");
        assert!(parse_page("{\"items\": 3}".into()).is_err());
    }
}
