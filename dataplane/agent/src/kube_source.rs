//! Kubernetes policy source for corral-agent (`--kubeconfig PATH`, or the
//! in-cluster config when `--kube` is given without a path).
//!
//! Three kube-runtime watches (Pods, Namespaces, NetworkPolicies) keep a
//! local copy of the objects; every change triggers the same idempotent
//! reconcile as the `--manifests DIR` source ([`Agent::set_policy_inputs`]):
//! the full input set is recompiled and written with no enforcement gap, and
//! an unchanged input set is not re-applied.
//!
//! - Objects are watched as `DynamicObject`s and decoded one by one, so a
//!   malformed object (e.g. a NetworkPolicy whose `ports` do not parse) is
//!   reported by kind and `namespace/name` in the agent's policy problems and
//!   skipped; the rest still applies. Semantically bad policies (bad
//!   selector operator, bad CIDR, ...) are reported by the policy compiler.
//! - Watch errors and `410 Gone` make kube-runtime relist. During a relist
//!   the previous objects stay in force; the relisted set replaces them
//!   atomically at `InitDone`, so enforcement never drops to "no policy".
//! - Nothing is applied before all three kinds have completed their first
//!   list. Until then (and across restarts) the agent enforces the last
//!   applied input set, cached in `<state-dir>/kube-policy-inputs.json`.
//! - Pods: all pods by default, because podSelector/namespaceSelector peers
//!   on other nodes need their IPs for egress rules; `--pod-scope node`
//!   watches only this node's pods (`fieldSelector=spec.nodeName=<node>`,
//!   also filtered client-side), for clusters whose policies only name
//!   same-node pods or ipBlocks. Pods in phase Succeeded/Failed are ignored
//!   (their IPs get reused).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::agent::Agent;
use crate::policy::tiers::{NodeInfo, TierObject};
use crate::policy::{Labels, PodInfo, source};

pub use crate::policy::cache::{CACHE_FILE, Inputs, load_cache, remove_cache, save_cache};

/// Builds a client from a kubeconfig file, or infers it (in-cluster service
/// account, `KUBECONFIG`, `~/.kube/config`) when `path` is `None`.
pub async fn client(path: Option<&Path>) -> Result<Client> {
    Ok(corral_api::client::client(path, Default::default()).await?)
}

/// Which pods to watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PodScope {
    /// every pod (needed for podSelector peers on other nodes)
    All,
    /// only pods bound to this node
    Node,
}

#[derive(Clone, Debug)]
pub struct Options {
    /// this node's name (`spec.nodeName` of local pods)
    pub node_name: String,
    pub pod_scope: PodScope,
    /// watch Nodes (for `nodes` egress peers of tier policies)
    pub node_peers: bool,
    /// watch Nodes for multi-node routing and this node's CNI config
    /// (`--routing`/`--cni-conf`); with `node_peers` too, one Node watch
    /// feeds both views
    pub routing: bool,
    /// watch EndpointSlices and keep whole Services (`--kube-proxy-replacement`)
    pub lb: bool,
}

/// One watched kind: decoded objects by `namespace/name` (a decode error is
/// kept as the entry, so it is reported while the object exists), and
/// during a relist the buffer that replaces them at `InitDone`.
struct Kind<T> {
    objs: BTreeMap<String, Result<T, String>>,
    relist: Option<BTreeMap<String, Result<T, String>>>,
    synced: bool,
}

impl<T> Default for Kind<T> {
    fn default() -> Self {
        Kind {
            objs: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

/// Decoded form of one object: `None` = not relevant (treated as absent).
type Decoded<T> = (String, Option<Result<T, String>>);

impl<T> Kind<T> {
    /// Applies one watch event; returns whether the applied set changed.
    fn on_event(&mut self, ev: Event<Decoded<T>>) -> bool {
        match ev {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply((k, v)) => {
                let buf = self.relist.get_or_insert_with(BTreeMap::new);
                match v {
                    Some(v) => buf.insert(k, v),
                    None => buf.remove(&k),
                };
                false
            }
            Event::InitDone => {
                if let Some(buf) = self.relist.take() {
                    self.objs = buf;
                }
                self.synced = true;
                true
            }
            Event::Apply((k, Some(v))) => {
                self.objs.insert(k, v);
                true
            }
            Event::Apply((k, None)) | Event::Delete((k, _)) => self.objs.remove(&k).is_some(),
        }
    }

    fn ok(&self) -> impl Iterator<Item = &T> {
        self.objs.values().filter_map(|v| v.as_ref().ok())
    }

    fn errors(&self) -> impl Iterator<Item = &String> {
        self.objs.values().filter_map(|v| v.as_ref().err())
    }
}

#[derive(Default)]
struct State {
    pods: Kind<PodInfo>,
    namespaces: Kind<Labels>,
    policies: Kind<NetworkPolicy>,
    services: Kind<Vec<crate::services::Frontend>>,
    /// whole Services and their EndpointSlices (`Options::lb` only)
    lb_services: Kind<k8s_openapi::api::core::v1::Service>,
    endpoint_slices: Kind<k8s_openapi::api::discovery::v1::EndpointSlice>,
    /// Nodes for routing and the CNI config: only in the routing view's own
    /// `Shared` (see [`route_loop`])
    route_nodes: Kind<crate::routing::NodeInfo>,
    /// ClusterNetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy
    tiers: [Kind<TierObject>; 3],
    /// Nodes as `nodes` peers of tier policies: watched only with `--node-peers`
    nodes: Kind<NodeInfo>,
}

impl State {
    fn synced(&self) -> bool {
        self.pods.synced
            && self.namespaces.synced
            && self.policies.synced
            && self.services.synced
            && self.lb_services.synced
            && self.endpoint_slices.synced
            && self.tiers.iter().all(|k| k.synced)
            && self.nodes.synced
    }

    fn inputs(&self) -> Inputs {
        Inputs {
            policies: self.policies.ok().cloned().collect(),
            pods: self.pods.ok().cloned().collect(),
            namespaces: self
                .namespaces
                .objs
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_ref().ok()?.clone())))
                .collect(),
            tiers: self.tiers.iter().flat_map(|k| k.ok().cloned()).collect(),
            nodes: self.nodes.ok().cloned().collect(),
            errors: self
                .namespaces
                .errors()
                .chain(self.pods.errors())
                .chain(self.policies.errors())
                .chain(self.services.errors())
                .chain(self.endpoint_slices.errors())
                .chain(self.tiers.iter().flat_map(|k| k.errors()))
                .chain(self.nodes.errors())
                .cloned()
                .collect(),
            services: {
                let mut v: Vec<_> = self.services.ok().flatten().copied().collect();
                v.sort();
                v.dedup();
                v
            },
            lb_services: self.lb_services.ok().cloned().collect(),
            endpoint_slices: self.endpoint_slices.ok().cloned().collect(),
        }
    }
}

fn key(o: &DynamicObject) -> String {
    match &o.metadata.namespace {
        Some(ns) => format!("{ns}/{}", o.metadata.name.as_deref().unwrap_or_default()),
        None => o.metadata.name.clone().unwrap_or_default(),
    }
}

fn typed<T: serde::de::DeserializeOwned>(o: &DynamicObject, kind: &str) -> Result<T, String> {
    serde_json::to_value(o)
        .and_then(serde_json::from_value::<T>)
        .map_err(|e| format!("{kind} {}: {e} (skipped)", key(o)))
}

fn decode_policy(o: &DynamicObject) -> Decoded<NetworkPolicy> {
    (key(o), Some(typed(o, "networkpolicy")))
}

fn decode_tier(o: &DynamicObject) -> Decoded<TierObject> {
    let (kind, av) = o
        .types
        .as_ref()
        .map(|t| (t.kind.clone(), t.api_version.clone()))
        .unwrap_or_default();
    let v = serde_json::to_value(o)
        .map_err(|e| e.to_string())
        .and_then(|v| source::decode_tier(&kind, &av, v))
        .map_err(|e| format!("{} {}: {e} (skipped)", kind.to_lowercase(), key(o)));
    match v {
        Ok(Some(t)) => (key(o), Some(Ok(t))),
        Ok(None) => (key(o), None),
        Err(e) => (key(o), Some(Err(e))),
    }
}

fn decode_node(o: &DynamicObject) -> Decoded<NodeInfo> {
    (
        key(o),
        Some(typed::<k8s_openapi::api::core::v1::Node>(o, "node").map(|n| source::node_info(&n))),
    )
}

/// The policy.networking.k8s.io kinds Corral implements.
fn tier_resources() -> [ApiResource; 3] {
    let r = |version: &str, kind: &str, plural: &str| ApiResource {
        group: crate::policy::tiers::GROUP.into(),
        version: version.into(),
        api_version: format!("{}/{version}", crate::policy::tiers::GROUP),
        kind: kind.into(),
        plural: plural.into(),
    };
    [
        r("v1alpha2", "ClusterNetworkPolicy", "clusternetworkpolicies"),
        r("v1alpha1", "AdminNetworkPolicy", "adminnetworkpolicies"),
        r(
            "v1alpha1",
            "BaselineAdminNetworkPolicy",
            "baselineadminnetworkpolicies",
        ),
    ]
}

fn decode_namespace(o: &DynamicObject) -> Decoded<Labels> {
    let v = typed::<Namespace>(o, "namespace").map(|n| n.metadata.labels.unwrap_or_default());
    (key(o), Some(v))
}

/// Pod decoder for a scope: finished pods and (scope node) other nodes'
/// pods are not relevant.
fn decode_pod(o: &DynamicObject, node: Option<&str>) -> Decoded<PodInfo> {
    let k = key(o);
    let pod = match typed::<Pod>(o, "pod") {
        Ok(p) => p,
        Err(e) => return (k, Some(Err(e))),
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return (k, None);
    }
    if let Some(n) = node
        && pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(n)
    {
        return (k, None);
    }
    (k, Some(Ok(source::pod_info(&pod))))
}

struct Shared {
    state: Mutex<State>,
    changed: Notify,
    /// a retry of a failed sync is scheduled (at most one at a time)
    retry_pending: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            retry_pending: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// One consumer of a watch: a decoder into one `Kind` of one `Shared`
/// state (notified when its applied set changed). One watch can feed
/// several sinks (the Node watch: routing and policy views).
struct Sink {
    shared: Arc<Shared>,
    apply: Box<ApplyFn>,
}

/// Applies one raw event to a state; returns whether its applied set changed.
type ApplyFn = dyn FnMut(&mut State, &Event<DynamicObject>) -> bool + Send;

fn sink<T: Send + 'static>(
    shared: Arc<Shared>,
    pick: fn(&mut State) -> &mut Kind<T>,
    decode: impl Fn(&DynamicObject) -> Decoded<T> + Send + 'static,
) -> Sink {
    Sink {
        shared,
        apply: Box::new(move |st, ev| {
            let ev = match ev {
                Event::Init => Event::Init,
                Event::InitDone => Event::InitDone,
                Event::InitApply(o) => Event::InitApply(decode(o)),
                Event::Apply(o) => Event::Apply(decode(o)),
                Event::Delete(o) => Event::Delete((key(o), None)),
            };
            pick(st).on_event(ev)
        }),
    }
}

impl Sink {
    /// Applies one event; notifies the state's reconciler on a change.
    /// False when the state is poisoned (the watch ends).
    fn deliver(&mut self, ev: &Event<DynamicObject>) -> bool {
        let changed = match self.shared.state.lock() {
            Ok(mut st) => (self.apply)(&mut st, ev),
            Err(_) => return false,
        };
        if changed {
            self.shared.changed.notify_one();
        }
        true
    }
}

fn watch<T: Send + 'static>(
    api: Api<DynamicObject>,
    cfg: watcher::Config,
    what: &'static str,
    shared: Arc<Shared>,
    pick: fn(&mut State) -> &mut Kind<T>,
    decode: impl Fn(&DynamicObject) -> Decoded<T> + Send + 'static,
) -> JoinHandle<()> {
    watch_into(api, cfg, what, vec![sink(shared, pick, decode)], false)
}

/// Watches one resource and delivers every event to each sink. With
/// `optional`, a resource the API server does not serve (its CRD is not
/// installed: the list answers 404) counts as listed and empty, and is
/// probed again every 30 s.
fn watch_into(
    api: Api<DynamicObject>,
    cfg: watcher::Config,
    what: &'static str,
    mut sinks: Vec<Sink>,
    optional: bool,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut announced = false;
        if optional {
            loop {
                let lp = kube::api::ListParams::default().limit(1);
                match api.list(&lp).await {
                    Ok(_) => break,
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        if !announced {
                            info!(
                                watch = what,
                                "resource not served (CRD not installed); treated as empty"
                            );
                            announced = true;
                            // an empty list
                            for s in &mut sinks {
                                if !(s.deliver(&Event::Init) && s.deliver(&Event::InitDone)) {
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => warn!(watch = what, error = %e, "probing resource; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(if announced { 30 } else { 2 })).await;
            }
        }
        let mut s = watcher::watcher(api, cfg).default_backoff().boxed();
        while let Some(ev) = s.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    // kube-runtime relists (410) or re-watches after backoff;
                    // the applied set stays in force meanwhile
                    warn!(watch = what, error = %e, "watch error; resuming");
                    continue;
                }
            };
            if matches!(ev, Event::InitDone) {
                info!(watch = what, "listed");
            }
            for s in &mut sinks {
                if !s.deliver(&ev) {
                    return;
                }
            }
        }
    })
}

/// Starts the watches and the reconcile task.
pub fn spawn(client: Client, opts: Options, agent: Arc<Mutex<Agent>>) -> Vec<JoinHandle<()>> {
    let shared = Shared::new();
    let ar = |r: ApiResource| Api::<DynamicObject>::all_with(client.clone(), &r);
    let pod_cfg = match opts.pod_scope {
        PodScope::All => watcher::Config::default(),
        PodScope::Node => {
            watcher::Config::default().fields(&format!("spec.nodeName={}", opts.node_name))
        }
    };
    let node = match opts.pod_scope {
        PodScope::All => None,
        PodScope::Node => Some(opts.node_name.clone()),
    };
    let mut handles = vec![
        watch(
            ar(ApiResource::erase::<NetworkPolicy>(&())),
            watcher::Config::default(),
            "networkpolicies",
            shared.clone(),
            |s| &mut s.policies,
            decode_policy,
        ),
        watch(
            ar(ApiResource::erase::<Namespace>(&())),
            watcher::Config::default(),
            "namespaces",
            shared.clone(),
            |s| &mut s.namespaces,
            decode_namespace,
        ),
        watch(
            ar(ApiResource::erase::<Pod>(&())),
            pod_cfg,
            "pods",
            shared.clone(),
            |s| &mut s.pods,
            move |o| decode_pod(o, node.as_deref()),
        ),
    ];
    // one Service watch: frontends (deferred egress) and, for Corral's
    // own translation, the whole Service
    let mut svc_sinks = vec![sink(shared.clone(), |s| &mut s.services, decode_service)];
    if opts.lb {
        svc_sinks.push(sink(
            shared.clone(),
            |s| &mut s.lb_services,
            decode_service_obj,
        ));
        handles.push(watch(
            ar(ApiResource::erase::<
                k8s_openapi::api::discovery::v1::EndpointSlice,
            >(&())),
            watcher::Config::default(),
            "endpointslices",
            shared.clone(),
            |s| &mut s.endpoint_slices,
            decode_endpoint_slice,
        ));
    } else if let Ok(mut st) = shared.state.lock() {
        st.lb_services.synced = true;
        st.endpoint_slices.synced = true;
    }
    handles.push(watch_into(
        ar(ApiResource::erase::<k8s_openapi::api::core::v1::Service>(
            &(),
        )),
        watcher::Config::default(),
        "services",
        svc_sinks,
        false,
    ));
    let tier_picks: [fn(&mut State) -> &mut Kind<TierObject>; 3] = [
        |s| &mut s.tiers[0],
        |s| &mut s.tiers[1],
        |s| &mut s.tiers[2],
    ];
    let names = [
        "clusternetworkpolicies",
        "adminnetworkpolicies",
        "baselineadminnetworkpolicies",
    ];
    for ((r, pick), what) in tier_resources().into_iter().zip(tier_picks).zip(names) {
        handles.push(watch_into(
            ar(r),
            watcher::Config::default(),
            what,
            vec![sink(shared.clone(), pick, decode_tier)],
            true,
        ));
    }
    // one Node watch for both views: tier `nodes` peers (policy state,
    // its readiness) and routing (own state and loop, so a route change
    // neither waits for nor triggers a policy recompile)
    let mut node_sinks = Vec::new();
    if opts.node_peers {
        node_sinks.push(sink(shared.clone(), |s| &mut s.nodes, decode_node));
    } else if let Ok(mut st) = shared.state.lock() {
        st.nodes.synced = true;
    }
    if opts.routing {
        let routes = Shared::new();
        node_sinks.push(sink(
            routes.clone(),
            |s| &mut s.route_nodes,
            decode_route_node,
        ));
        handles.push(tokio::spawn(route_loop(agent.clone(), routes)));
    }
    if !node_sinks.is_empty() {
        handles.push(watch_into(
            ar(ApiResource::erase::<k8s_openapi::api::core::v1::Node>(&())),
            watcher::Config::default(),
            "nodes",
            node_sinks,
            false,
        ));
    }
    handles.push(tokio::spawn(reconcile_loop(agent, shared)));
    handles
}

fn decode_service_obj(o: &DynamicObject) -> Decoded<k8s_openapi::api::core::v1::Service> {
    (key(o), Some(typed(o, "service")))
}

fn decode_endpoint_slice(
    o: &DynamicObject,
) -> Decoded<k8s_openapi::api::discovery::v1::EndpointSlice> {
    (key(o), Some(typed(o, "endpointslice")))
}

fn decode_service(o: &DynamicObject) -> Decoded<Vec<crate::services::Frontend>> {
    let v = typed::<k8s_openapi::api::core::v1::Service>(o, "service")
        .and_then(|s| crate::services::frontends(&s));
    (key(o), Some(v))
}

fn decode_route_node(o: &DynamicObject) -> Decoded<crate::routing::NodeInfo> {
    let v = typed::<k8s_openapi::api::core::v1::Node>(o, "node")
        .and_then(|n| crate::routing::NodeInfo::from_node(&n));
    (key(o), Some(v))
}

/// Multi-node routing and this node's CNI config (pod CIDRs) from the
/// Node watch's routing view: every change after the first full list
/// re-syncs the routes ([`Agent::set_nodes`]); a relist replaces the set
/// atomically.
async fn route_loop(agent: Arc<Mutex<Agent>>, shared: Arc<Shared>) {
    let mut last: Option<Vec<crate::routing::NodeInfo>> = None;
    loop {
        shared.changed.notified().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (nodes, errors): (Vec<_>, Vec<_>) = match shared.state.lock() {
            Ok(st) if st.route_nodes.synced => (
                st.route_nodes.ok().cloned().collect(),
                st.route_nodes.errors().cloned().collect(),
            ),
            Ok(_) => continue,
            Err(_) => return,
        };
        if last.as_ref() == Some(&nodes) {
            continue;
        }
        for e in &errors {
            warn!(error = %e, "Kubernetes object skipped");
        }
        let a = agent.clone();
        let n2 = nodes.clone();
        let r = tokio::task::spawn_blocking(move || match a.lock() {
            Ok(mut g) => g.set_nodes(&n2),
            Err(_) => Err(anyhow::anyhow!("agent state poisoned")),
        })
        .await;
        match r {
            Ok(Ok(())) => {
                info!(nodes = nodes.len(), "routes synced from Node objects");
                last = Some(nodes);
            }
            Ok(Err(e)) => {
                warn!(error = %format!("{e:#}"), "syncing routes; retrying");
                retry_later(&shared);
            }
            Err(e) => {
                warn!(error = %e, "route sync task failed; retrying");
                retry_later(&shared);
            }
        }
    }
}

async fn reconcile_loop(agent: Arc<Mutex<Agent>>, shared: Arc<Shared>) {
    let mut last: Option<Inputs> = None;
    loop {
        shared.changed.notified().await;
        // coalesce a burst of events (a relist, a deployment rollout)
        tokio::time::sleep(Duration::from_millis(100)).await;
        let inputs = match shared.state.lock() {
            Ok(st) if st.synced() => st.inputs(),
            Ok(_) => continue,
            Err(_) => return,
        };
        if last.as_ref() == Some(&inputs) {
            continue;
        }
        for e in inputs.errors.iter() {
            if !last.as_ref().is_some_and(|l| l.errors.contains(e)) {
                warn!(error = %e, "Kubernetes object skipped");
            }
        }
        let a = agent.clone();
        let m = inputs.clone().into_manifests();
        let r = tokio::task::spawn_blocking(move || match a.lock() {
            Ok(mut g) => g.set_policy_inputs(m),
            Err(_) => Err(anyhow::anyhow!("agent state poisoned")),
        })
        .await;
        match r {
            Ok(Ok(())) => {
                info!(
                    policies = inputs.policies.len(),
                    tier_policies = inputs.tiers.len(),
                    pods = inputs.pods.len(),
                    namespaces = inputs.namespaces.len(),
                    problems = inputs.errors.len(),
                    "policy reconciled from Kubernetes"
                );
                last = Some(inputs);
            }
            Ok(Err(e)) => {
                warn!(error = %format!("{e:#}"), "applying Kubernetes policy; retrying");
                retry_later(&shared);
            }
            Err(e) => {
                warn!(error = %e, "reconcile task failed; retrying");
                retry_later(&shared);
            }
        }
    }
}

/// Schedules one re-run of a failed sync in 1 s. While one is pending,
/// further failures (a sync triggered by an event in between) add none, so
/// a failing sync runs about once a second, not once per failure chain.
fn retry_later(shared: &Arc<Shared>) {
    use std::sync::atomic::Ordering;
    if shared.retry_pending.swap(true, Ordering::AcqRel) {
        return;
    }
    let s = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        s.retry_pending.store(false, Ordering::Release);
        s.changed.notify_one();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dyn_obj(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    /// A second failure while a retry is pending schedules no second one
    /// (before: one retry chain per failure, ~3 syncs/s seen).
    #[test]
    fn one_pending_retry_at_a_time() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = Shared::new();
            retry_later(&s);
            tokio::time::sleep(Duration::from_millis(400)).await;
            retry_later(&s);
            let first = tokio::time::timeout(Duration::from_millis(1500), s.changed.notified());
            assert!(first.await.is_ok(), "the retry fires");
            assert!(!s.retry_pending.load(std::sync::atomic::Ordering::Acquire));
            let second = tokio::time::timeout(Duration::from_millis(1000), s.changed.notified());
            assert!(second.await.is_err(), "no second retry chain");
            // after it fired, a new failure schedules a new retry
            retry_later(&s);
            let again = tokio::time::timeout(Duration::from_millis(1500), s.changed.notified());
            assert!(again.await.is_ok());
        });
    }

    #[test]
    fn relist_replaces_atomically() {
        let mut k: Kind<u32> = Kind::default();
        assert!(!k.on_event(Event::Init));
        assert!(!k.on_event(Event::InitApply(("a".into(), Some(Ok(1))))));
        assert!(!k.synced, "not synced before InitDone");
        assert!(k.on_event(Event::InitDone));
        assert_eq!(k.ok().copied().collect::<Vec<_>>(), vec![1]);
        // a relist (410): old objects stay until InitDone
        k.on_event(Event::Init);
        k.on_event(Event::InitApply(("b".into(), Some(Ok(2)))));
        assert_eq!(k.ok().copied().collect::<Vec<_>>(), vec![1]);
        k.on_event(Event::InitDone);
        assert_eq!(k.ok().copied().collect::<Vec<_>>(), vec![2]);
        assert!(k.on_event(Event::Delete(("b".into(), None))));
        assert!(!k.on_event(Event::Delete(("b".into(), None))), "idempotent");
        assert!(k.on_event(Event::Apply(("c".into(), Some(Err("bad".into()))))));
        assert_eq!(k.errors().collect::<Vec<_>>(), vec!["bad"]);
    }

    #[test]
    fn bad_policy_named_and_pods_scoped() {
        let bad = dyn_obj(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "broken", "namespace": "x"},
            "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": {"no": 1}}]}]}
        }));
        let (k, v) = decode_policy(&bad);
        assert_eq!(k, "x/broken");
        let e = v.unwrap().unwrap_err();
        assert!(e.contains("networkpolicy x/broken"), "{e}");
        let pod = |node: &str, phase: &str| {
            dyn_obj(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "a", "namespace": "x", "labels": {"app": "a"}},
                "spec": {"nodeName": node, "containers": [{"name": "c"}]},
                "status": {"phase": phase, "podIP": "198.18.1.2"}
            }))
        };
        let (_, v) = decode_pod(&pod("n1", "Running"), Some("n1"));
        let p = v.unwrap().unwrap();
        assert_eq!(
            p.ips,
            vec!["198.18.1.2".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(decode_pod(&pod("n2", "Running"), Some("n1")).1.is_none());
        assert!(decode_pod(&pod("n2", "Running"), None).1.is_some());
        assert!(decode_pod(&pod("n1", "Succeeded"), None).1.is_none());
    }

    #[test]
    fn tier_objects_decoded_and_bad_ones_named() {
        let good = dyn_obj(serde_json::json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "iso"},
            "spec": {"tier": "Admin", "priority": 5, "subject": {"namespaces": {}},
                     "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}
        }));
        let (k, v) = decode_tier(&good);
        assert_eq!(k, "iso");
        assert!(matches!(v, Some(Ok(TierObject::Cnp(_)))), "{v:?}");
        let bad = dyn_obj(serde_json::json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
            "metadata": {"name": "broken"},
            "spec": {"priority": 5, "subject": {"namespaces": {}}, "ingress": [{"action": "Deny", "from": [{"nets": 1}]}]}
        }));
        let e = decode_tier(&bad).1.unwrap().unwrap_err();
        assert!(
            e.contains("adminnetworkpolicy broken") && e.contains("nets"),
            "{e}"
        );
        // a cached input set with tiers round-trips
        let mut st = State::default();
        st.tiers[0].on_event(Event::Apply(decode_tier(&good)));
        let i = st.inputs();
        let back: Inputs = serde_json::from_str(&serde_json::to_string(&i).unwrap()).unwrap();
        assert_eq!(back, i);
        assert_eq!(back.tiers.len(), 1);
        // an old cache without tiers/nodes still loads
        let old: Inputs =
            serde_json::from_str(r#"{"policies":[],"pods":[],"namespaces":{},"errors":[]}"#)
                .unwrap();
        assert!(old.tiers.is_empty() && old.nodes.is_empty());
    }
}
