//! A watch-fed node/pod cache for the extender (nodeCacheCapable mode): Nodes and
//! bound, non-terminated Pods applied to a shared [`Snapshot`].

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::extender::Extender;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

use corral_api::pod::pod_key;

/// Applies a pod to the snapshot (placed when bound and running).
pub fn apply_pod(snap: &mut Snapshot, p: Pod, seq: u64) {
    let key = pod_key(&p);
    let done = corral_api::pod::is_terminating(&p) || corral_api::pod::is_finished(&p);
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    match node {
        Some(n) if !done => {
            if let Ok(info) = PodInfo::new(p, seq) {
                snap.add_pod(Arc::new(info), &n);
            }
        }
        _ => {
            snap.remove_pod(&key);
        }
    }
}

/// Starts the watches; returns their tasks.
pub fn spawn_snapshot_cache(
    client: Client,
    ext: Arc<Extender>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let e1 = ext.clone();
    let nodes = tokio::spawn(async move {
        let mut s = watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut seen: Option<HashSet<String>> = None;
        while let Some(ev) = s.next().await {
            let Ok(ev) = ev else { continue };
            let Ok(mut snap) = e1.cache.write() else {
                return;
            };
            match ev {
                Event::Init => seen = Some(HashSet::new()),
                Event::InitApply(n) | Event::Apply(n) => {
                    if let (Some(s), Some(name)) = (seen.as_mut(), n.metadata.name.clone()) {
                        s.insert(name);
                    }
                    let name = n.metadata.name.clone().unwrap_or_default();
                    match NodeInfo::new(n) {
                        Ok(info) => snap.upsert_node(info),
                        Err(e) => {
                            tracing::warn!("extender cache: skipping node {name}: {e}");
                            e1.metrics.invalid_objects.inc();
                        }
                    }
                }
                Event::InitDone => {
                    if let Some(seen) = seen.take() {
                        let gone: Vec<String> = snap
                            .nodes()
                            .iter()
                            .filter(|n| !seen.contains(&*n.name))
                            .map(|n| n.name.to_string())
                            .collect();
                        for n in gone {
                            snap.remove_node(&n);
                        }
                    }
                }
                Event::Delete(n) => {
                    if let Some(name) = n.metadata.name.as_deref() {
                        snap.remove_node(name);
                    }
                }
            }
        }
    });
    let pods = tokio::spawn(async move {
        let client = ext.client.clone();
        let Some(client) = client else { return };
        let mut s = watcher::watcher(Api::<Pod>::all(client), watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut seq = 0u64;
        let mut seen: Option<HashSet<String>> = None;
        let mut known: HashSet<String> = HashSet::new();
        while let Some(ev) = s.next().await {
            let Ok(ev) = ev else { continue };
            let Ok(mut snap) = ext.cache.write() else {
                return;
            };
            seq += 1;
            match ev {
                Event::Init => seen = Some(HashSet::new()),
                Event::InitApply(p) | Event::Apply(p) => {
                    let k = pod_key(&p);
                    if let Some(s) = seen.as_mut() {
                        s.insert(k.clone());
                    }
                    if let Ok(mut g) = ext.gangs.lock() {
                        g.apply(&k, &p, seq);
                    }
                    known.insert(k);
                    apply_pod(&mut snap, p, seq);
                }
                Event::InitDone => {
                    if let Some(seen) = seen.take() {
                        let mut g = ext.gangs.lock().ok();
                        for k in known.iter().filter(|k| !seen.contains(*k)) {
                            snap.remove_pod(k);
                            if let Some(g) = g.as_mut() {
                                g.forget(k);
                            }
                        }
                        known = seen;
                    }
                }
                Event::Delete(p) => {
                    let k = pod_key(&p);
                    known.remove(&k);
                    snap.remove_pod(&k);
                    if let Ok(mut g) = ext.gangs.lock() {
                        g.forget(&k);
                    }
                }
            }
        }
    });
    vec![nodes, pods]
}

/// PodGroup (both APIs), Queue and HyperNode watches feeding the extender's gang
/// view (each starts once its CRD is served; HyperNodes place network-topology
/// gangs in the dry run).
pub fn spawn_gang_watches(client: Client, ext: Arc<Extender>) -> Vec<tokio::task::JoinHandle<()>> {
    type CrdMsg = (crate::k8s::crds::Crd, Box<Event<kube::api::DynamicObject>>);
    let (tx, rx) = std::sync::mpsc::channel::<CrdMsg>();
    let mut tasks = Vec::new();
    for crd in super::GANG_CRDS {
        tasks.push(crate::k8s::crds::watch(
            client.clone(),
            crd,
            tx.clone(),
            |c, e| (c, e),
            std::time::Duration::from_secs(60),
        ));
    }
    tasks.push(tokio::task::spawn_blocking(move || {
        while let Ok((crd, ev)) = rx.recv() {
            let Ok(mut g) = ext.gangs.lock() else { return };
            // No NodeResourceTopology watch here: the snapshot argument is unused.
            g.state
                .on_crd_event(crd, *ev, &mut crate::snapshot::Snapshot::new());
        }
    }));
    tasks
}
