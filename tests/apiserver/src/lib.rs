//! A test-only, in-process Kubernetes API server.
//!
//! It speaks the real REST + watch JSON protocol (the subset Corral and client-go style
//! clients use) for pods, nodes, namespaces, events, resource quotas, priority classes,
//! leases, NetworkPolicies, EndpointSlices and the batch CRDs (Volcano and scheduler-plugins PodGroups, Volcano Queues,
//! NodeResourceTopology, Volcano HyperNodes) and the network-policy-api tiers (ClusterNetworkPolicy,
//! AdminNetworkPolicy, BaselineAdminNetworkPolicy):
//!
//! - `GET` list (`{kind}List` with `metadata.resourceVersion`), get, and watch
//!   (`?watch=1`: chunked newline-delimited `{"type","object"}` events, `BOOKMARK`s when
//!   `allowWatchBookmarks=true`, an `ERROR` event with a `410 Gone` Status when the
//!   requested resourceVersion was compacted away);
//! - `POST` create (with `generateName`), `PUT` replace (optimistic concurrency on
//!   `metadata.resourceVersion`: `409 Conflict`), `PATCH` (JSON merge patch; strategic
//!   merge patch with `conditions` merged by `type`), `DELETE`;
//! - `POST pods/{name}/binding` (`201`; `409 Conflict` when the pod is already bound);
//!   every successful binding is recorded so tests can assert "never bound twice";
//! - `PATCH|PUT .../status` subresources;
//! - `POST pods/{name}/eviction` (policy/v1 Eviction: `201`; `409` when
//!   `deleteOptions.preconditions.uid` does not match; `429` with a `DisruptionBudget`
//!   cause for pods marked blocked, as a PodDisruptionBudget would) and `DELETE` with
//!   uid preconditions; pods are deleted gracefully when `Options::termination_grace`
//!   is set (`metadata.deletionTimestamp` first, the `DELETED` event after the grace,
//!   as a kubelet finishing termination would), otherwise at once;
//! - fault injection: drop all watch streams, delay, `500` and `429` (with
//!   `Retry-After`) on the next N matching requests, history compaction (for 410);
//! - a fixed latency added to every request (`Options::latency`), to stand in for
//!   a slower API server.
//!
//! It listens on 127.0.0.1 only (port 0 = ephemeral). Lists paginate with `limit` /
//! `continue`. Label/field selectors are not implemented.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;

mod volumes;
pub use volumes::VolumeController;

/// A served resource type.
#[derive(Debug, Clone, Copy)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

impl ResourceType {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Every resource the server knows.
pub const RESOURCES: &[ResourceType] = &[
    rt("", "v1", "pods", "Pod", true),
    rt("", "v1", "nodes", "Node", false),
    rt("", "v1", "namespaces", "Namespace", false),
    rt("", "v1", "services", "Service", true),
    rt(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
    ),
    rt("", "v1", "events", "Event", true),
    rt("", "v1", "resourcequotas", "ResourceQuota", true),
    rt("", "v1", "persistentvolumes", "PersistentVolume", false),
    rt(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
    ),
    rt(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        false,
    ),
    rt("storage.k8s.io", "v1", "csinodes", "CSINode", false),
    rt("storage.k8s.io", "v1", "csidrivers", "CSIDriver", false),
    rt(
        "storage.k8s.io",
        "v1",
        "csistoragecapacities",
        "CSIStorageCapacity",
        true,
    ),
    rt("events.k8s.io", "v1", "events", "Event", true),
    rt(
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "PriorityClass",
        false,
    ),
    rt("coordination.k8s.io", "v1", "leases", "Lease", true),
    rt(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
    ),
    rt(
        "scheduling.volcano.sh",
        "v1beta1",
        "podgroups",
        "PodGroup",
        true,
    ),
    rt("scheduling.volcano.sh", "v1beta1", "queues", "Queue", false),
    rt(
        "scheduling.x-k8s.io",
        "v1alpha1",
        "podgroups",
        "PodGroup",
        true,
    ),
    rt(
        "topology.node.k8s.io",
        "v1alpha2",
        "noderesourcetopologies",
        "NodeResourceTopology",
        false,
    ),
    // Volcano network topology (cluster-scoped, as Volcano's CRD)
    rt(
        "topology.volcano.sh",
        "v1alpha1",
        "hypernodes",
        "HyperNode",
        false,
    ),
    // network-policy-api tiers (corral-agent's tier policy source)
    rt(
        "policy.networking.k8s.io",
        "v1alpha2",
        "clusternetworkpolicies",
        "ClusterNetworkPolicy",
        false,
    ),
    rt(
        "policy.networking.k8s.io",
        "v1alpha1",
        "adminnetworkpolicies",
        "AdminNetworkPolicy",
        false,
    ),
    rt(
        "policy.networking.k8s.io",
        "v1alpha1",
        "baselineadminnetworkpolicies",
        "BaselineAdminNetworkPolicy",
        false,
    ),
    rt(
        "storage.k8s.io",
        "v1",
        "volumeattachments",
        "VolumeAttachment",
        false,
    ),
];

const fn rt(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        plural,
        kind,
        namespaced,
    }
}

/// A fault applied to the next `count` requests whose method and path match.
#[derive(Debug, Clone)]
pub struct Fault {
    /// `None` = any method.
    pub method: Option<Method>,
    /// Substring of the request path (`""` = any).
    pub path_contains: String,
    pub kind: FaultKind,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `500 Internal Server Error`.
    InternalError,
    /// `429 Too Many Requests` with `Retry-After: 1`.
    Throttle,
    /// Delay the request, then serve it.
    Delay(Duration),
    /// `403 Forbidden` as RBAC denies it: a `Status` with reason `Forbidden` whose
    /// message names the user, the verb (`list`, `watch`, `get`, `create`, ...), the
    /// resource and the API group, as the real API server's authorizer writes it.
    Forbidden,
}

/// The service account the Forbidden fault names.
pub const FORBIDDEN_USER: &str = "system:serviceaccount:corral-system:corral-scheduler";

/// The RBAC verb of a request, as the API server's request-info resolver derives it.
fn verb_of(method: &Method, name: Option<&str>, watch: bool) -> &'static str {
    match *method {
        Method::GET if watch => "watch",
        Method::GET if name.is_some() => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

/// kube-apiserver's Forbidden response for an RBAC denial.
fn forbidden(method: &Method, path: &str, watch: bool) -> Response {
    let (plural, group, ns, name) = match route(path) {
        Some(r) => (
            RESOURCES[r.res].plural,
            RESOURCES[r.res].group,
            r.ns,
            r.name,
        ),
        None => ("", "", None, None),
    };
    let verb = verb_of(method, name.as_deref(), watch);
    let what = if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    };
    let named = name
        .as_deref()
        .map(|n| format!(" {n:?}"))
        .unwrap_or_default();
    let scope = match &ns {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_string(),
    };
    let message = format!(
        "{what}{named} is forbidden: User {FORBIDDEN_USER:?} cannot {verb} resource {plural:?} in API group {group:?} {scope}"
    );
    let mut body = status_body(403, "Forbidden", &message);
    body["details"] = json!({"group": group, "kind": plural});
    if let Some(n) = name {
        body["details"]["name"] = json!(n);
    }
    json_response(StatusCode::FORBIDDEN, &body)
}

#[derive(Clone)]
struct WatchEvent {
    res: usize,
    namespace: Option<String>,
    rv: u64,
    kind: &'static str,
    object: Arc<Value>,
    /// The serialized watch line, computed by the first watcher that sends it and
    /// shared by the others (the real API server's watch cache also serializes an
    /// event once per encoding, not once per watcher).
    line: Arc<std::sync::OnceLock<Bytes>>,
}

impl WatchEvent {
    fn line(&self) -> Bytes {
        self.line
            .get_or_init(|| line(self.kind, &self.object))
            .clone()
    }
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// (resource index) → key (`ns/name` or `name`) → object.
    objects: Vec<BTreeMap<String, Value>>,
    /// Retained history for watch resumption.
    history: VecDeque<WatchEvent>,
    /// Events with rv <= `compacted` are gone.
    compacted: u64,
    faults: Vec<Fault>,
    /// Successful bindings: pod key → number of times bound.
    bindings: HashMap<String, u32>,
    /// Binding attempts answered with 409.
    binding_conflicts: u64,
    /// `PATCH .../status` per object (`plural/ns/name`): (patches, patches that
    /// changed nothing).
    status_patches: HashMap<String, (u64, u64)>,
    /// Successful evictions and deletions of pods: pod key → count.
    evictions: HashMap<String, u32>,
    /// Pods whose eviction answers 429 (a PodDisruptionBudget would be violated).
    eviction_blocked: std::collections::HashSet<String>,
}

struct Shared {
    store: Mutex<Store>,
    /// One broadcast channel per resource: a watcher only wakes for its resource.
    tx: Vec<broadcast::Sender<WatchEvent>>,
    /// Bumped to end every open watch stream.
    drop_epoch: tokio::sync::watch::Sender<u64>,
    uid: AtomicU64,
    requests: AtomicU64,
    /// watch requests (`?watch=1`) per resource index
    watches: Mutex<HashMap<usize, u64>>,
    /// Requests that are not GET (create, patch, update, delete).
    writes: AtomicU64,
    history_limit: usize,
    bookmark_every: Duration,
    /// Resource indices answered with `404` (a CRD that is not installed).
    unserved: Mutex<std::collections::HashSet<usize>>,
    unserved_requests: AtomicU64,
    /// Resource indices without a status subresource: `.../status` answers `404`
    /// (a CRD without `subresources.status`, as Volcano's PodGroup).
    no_status: Mutex<std::collections::HashSet<usize>>,
    termination_grace: Duration,
    volume_controller: Option<VolumeController>,
    /// [`Options::latency`].
    latency: Duration,
}

/// A running test API server. Dropping it stops the server.
pub struct TestApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Server options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch history kept for resumption (older resourceVersions answer 410).
    pub history_limit: usize,
    pub bookmark_every: Duration,
    /// How long a deleted or evicted pod stays terminating (`deletionTimestamp` set)
    /// before it is removed; zero removes it at once.
    pub termination_grace: Duration,
    /// Act as the PV controller and a provisioner (see [`VolumeController`]).
    pub volume_controller: Option<VolumeController>,
    /// Added to every request before it is served (reads, writes, bindings, and the
    /// start of a watch; events on an open watch stream are not delayed): a slower API
    /// server, as a real one behind etcd is. Zero = none.
    pub latency: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            history_limit: 1_000_000,
            bookmark_every: Duration::from_secs(1),
            termination_grace: Duration::ZERO,
            volume_controller: None,
            latency: Duration::ZERO,
        }
    }
}

impl TestApiServer {
    /// Starts a server on 127.0.0.1 (ephemeral port) on the current tokio runtime.
    pub async fn start() -> anyhow::Result<TestApiServer> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> anyhow::Result<TestApiServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::start_on(listener, opts)
    }

    /// Starts on an already bound listener (e.g. one created inside a test's
    /// network namespace, so processes in that namespace can reach it).
    pub fn start_on_std(
        listener: std::net::TcpListener,
        opts: Options,
    ) -> anyhow::Result<TestApiServer> {
        listener.set_nonblocking(true)?;
        Self::start_on(tokio::net::TcpListener::from_std(listener)?, opts)
    }

    fn start_on(listener: tokio::net::TcpListener, opts: Options) -> anyhow::Result<TestApiServer> {
        let tx = RESOURCES
            .iter()
            .map(|_| broadcast::channel(1 << 16).0)
            .collect();
        let store = Store {
            objects: vec![BTreeMap::new(); RESOURCES.len()],
            ..Default::default()
        };
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            tx,
            drop_epoch: tokio::sync::watch::channel(0).0,
            uid: AtomicU64::new(1),
            requests: AtomicU64::new(0),
            watches: Mutex::new(HashMap::new()),
            writes: AtomicU64::new(0),
            history_limit: opts.history_limit.max(1),
            bookmark_every: opts.bookmark_every,
            unserved: Mutex::new(std::collections::HashSet::new()),
            unserved_requests: AtomicU64::new(0),
            no_status: Mutex::new(std::collections::HashSet::new()),
            termination_grace: opts.termination_grace,
            volume_controller: opts.volume_controller,
            latency: opts.latency,
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(TestApiServer { addr, shared, task })
    }

    /// Serves (`true`) or stops serving (`false`: every request answers `404`, as for
    /// a CRD that is not installed) the resource `group`/`plural`.
    pub fn set_served(&self, group: &str, plural: &str, served: bool) {
        let mut u = self.shared.unserved.lock().expect("unserved lock");
        for (i, r) in RESOURCES.iter().enumerate() {
            if r.group == group && r.plural == plural {
                if served {
                    u.remove(&i);
                } else {
                    u.insert(i);
                }
            }
        }
        if !served {
            // Open watches of the resource end (a deleted CRD ends its watches).
            self.shared.drop_epoch.send_modify(|e| *e += 1);
        }
    }

    /// Gives (`true`, the default) or takes away (`false`: `.../status` answers
    /// `404`, as for a CRD without `subresources.status`) the status subresource of
    /// `group`/`plural`.
    pub fn set_status_subresource(&self, group: &str, plural: &str, on: bool) {
        let mut u = self.shared.no_status.lock().expect("no_status lock");
        for (i, r) in RESOURCES.iter().enumerate() {
            if r.group == group && r.plural == plural {
                if on {
                    u.remove(&i);
                } else {
                    u.insert(i);
                }
            }
        }
    }

    /// `PATCH .../status` requests per object key `plural/namespace/name` (or
    /// `plural/name`): (patches, patches that changed nothing).
    pub fn status_patches(&self) -> HashMap<String, (u64, u64)> {
        self.shared
            .store
            .lock()
            .expect("store lock")
            .status_patches
            .clone()
    }

    /// Deletes an object (a `DELETED` watch event), as `DELETE` does.
    pub fn delete(&self, group: &str, plural: &str, ns: Option<&str>, name: &str) -> bool {
        let Some(res) = RESOURCES
            .iter()
            .position(|r| r.group == group && r.plural == plural)
        else {
            return false;
        };
        let mut st = self.shared.store.lock().expect("store lock");
        let Some(mut obj) = st.objects[res].remove(&key(ns, name)) else {
            return false;
        };
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        emit(&self.shared, &mut st, res, ns, "DELETED", &obj);
        true
    }

    /// Successful evictions/deletions per pod key (`ns/name`).
    pub fn evictions(&self) -> HashMap<String, u32> {
        self.shared
            .store
            .lock()
            .expect("store lock")
            .evictions
            .clone()
    }

    /// Makes evictions of pod `ns/name` answer `429` (as a PodDisruptionBudget with no
    /// disruptions allowed would), or lets them through again.
    pub fn set_eviction_blocked(&self, pod_key: &str, blocked: bool) {
        let mut st = self.shared.store.lock().expect("store lock");
        if blocked {
            st.eviction_blocked.insert(pod_key.to_string());
        } else {
            st.eviction_blocked.remove(pod_key);
        }
    }

    /// Requests answered `404` because their resource was not served.
    pub fn unserved_requests(&self) -> u64 {
        self.shared.unserved_requests.load(Ordering::Relaxed)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (YAML) pointing at this server.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\ncurrent-context: test\nusers:\n- name: test\n  user: {{}}\n",
            self.url()
        )
    }

    /// Writes the kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// Creates (or replaces) an object directly, bypassing HTTP. `obj` must carry
    /// apiVersion, kind and metadata.name.
    pub fn insert(&self, obj: Value) -> anyhow::Result<()> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let (i, rt) = RESOURCES
            .iter()
            .enumerate()
            .find(|(_, r)| r.api_version() == api_version && r.kind == kind)
            .ok_or_else(|| anyhow::anyhow!("unknown apiVersion/kind {api_version}/{kind}"))?;
        let ns = rt.namespaced.then(|| {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        });
        let mut st = self.shared.store.lock().expect("store lock");
        create(&self.shared, &mut st, i, ns.as_deref(), obj, true)
            .map_err(|(c, m)| anyhow::anyhow!("{c}: {m}"))?;
        if let Some(vc) = &self.shared.volume_controller {
            volumes::reconcile(&self.shared, &mut st, vc);
        }
        Ok(())
    }

    /// Inserts many objects in one lock (fast pre-filling).
    pub fn insert_all(&self, objs: impl IntoIterator<Item = Value>) -> anyhow::Result<()> {
        for o in objs {
            self.insert(o)?;
        }
        Ok(())
    }

    /// Gets an object by resource plural (core or first matching group), namespace
    /// and name.
    pub fn get(&self, group: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let i = RESOURCES
            .iter()
            .position(|r| r.group == group && r.plural == plural)?;
        let st = self.shared.store.lock().expect("store lock");
        st.objects[i].get(&key(ns, name)).cloned()
    }

    /// All objects of a resource.
    pub fn list(&self, group: &str, plural: &str) -> Vec<Value> {
        let Some(i) = RESOURCES
            .iter()
            .position(|r| r.group == group && r.plural == plural)
        else {
            return Vec::new();
        };
        let st = self.shared.store.lock().expect("store lock");
        st.objects[i].values().cloned().collect()
    }

    /// Successful bindings per pod key (`ns/name`).
    pub fn bindings(&self) -> HashMap<String, u32> {
        self.shared
            .store
            .lock()
            .expect("store lock")
            .bindings
            .clone()
    }

    /// Binding attempts answered with 409.
    pub fn binding_conflicts(&self) -> u64 {
        self.shared
            .store
            .lock()
            .expect("store lock")
            .binding_conflicts
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Watch requests (`?watch=1`) answered so far for one resource (how
    /// many watch streams clients opened on it).
    pub fn watch_requests(&self, group: &str, plural: &str) -> u64 {
        let Some(i) = RESOURCES
            .iter()
            .position(|r| r.group == group && r.plural == plural)
        else {
            return 0;
        };
        let w = self.shared.watches.lock().expect("watches lock");
        w.get(&i).copied().unwrap_or(0)
    }

    /// Write requests (every method but GET) served so far.
    pub fn write_requests(&self) -> u64 {
        self.shared.writes.load(Ordering::Relaxed)
    }

    /// Ends every open watch stream (clients must re-watch).
    pub fn drop_watches(&self) {
        self.shared.drop_epoch.send_modify(|e| *e += 1);
    }

    /// Forgets all watch history: resuming from any older resourceVersion answers
    /// 410 Gone.
    pub fn compact(&self) {
        let mut st = self.shared.store.lock().expect("store lock");
        st.compacted = st.rv;
        st.history.clear();
    }

    /// Adds a fault.
    pub fn inject(&self, fault: Fault) {
        self.shared
            .store
            .lock()
            .expect("store lock")
            .faults
            .push(fault);
    }

    /// Current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().expect("store lock").rv
    }
}

fn key(ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 400 { "Success" } else { "Failure" },
        "message": message, "reason": reason, "code": code
    })
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        403 => "Forbidden",
        429 => "TooManyRequests",
        _ => "InternalError",
    }
}

fn error(code: u16, message: impl Into<String>) -> Response {
    let message = message.into();
    let reason = if code == 409 && message.contains("already exists") {
        "AlreadyExists"
    } else {
        reason_for(code)
    };
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &status_body(code, reason, &message),
    )
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

type Fail = (u16, String);

fn emit(
    shared: &Shared,
    st: &mut Store,
    res: usize,
    ns: Option<&str>,
    kind: &'static str,
    obj: &Value,
) {
    let ev = WatchEvent {
        res,
        namespace: ns.map(str::to_string),
        rv: st.rv,
        kind,
        object: Arc::new(obj.clone()),
        line: Arc::new(std::sync::OnceLock::new()),
    };
    st.history.push_back(ev.clone());
    while st.history.len() > shared.history_limit {
        if let Some(e) = st.history.pop_front() {
            st.compacted = e.rv;
        }
    }
    let _ = shared.tx[res].send(ev);
}

fn create(
    shared: &Shared,
    st: &mut Store,
    res: usize,
    ns: Option<&str>,
    mut obj: Value,
    upsert: bool,
) -> Result<Value, Fail> {
    let rt = RESOURCES[res];
    if !obj.is_object() {
        return Err((400, "body must be a JSON object".into()));
    }
    if obj.get("metadata").is_none_or(|m| !m.is_object()) {
        obj["metadata"] = json!({});
    }
    let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() {
        let Some(gn) = obj["metadata"]["generateName"].as_str() else {
            return Err((422, "metadata.name: Required value".into()));
        };
        name = format!("{gn}{:05x}", shared.uid.fetch_add(1, Ordering::Relaxed));
    }
    let k = key(ns, &name);
    let exists = st.objects[res].contains_key(&k);
    if exists && !upsert {
        return Err((409, format!("{} \"{name}\" already exists", rt.plural)));
    }
    st.rv += 1;
    let rv = st.rv;
    let m = &mut obj["metadata"];
    m["name"] = json!(name);
    if let Some(ns) = ns {
        m["namespace"] = json!(ns);
    }
    m["resourceVersion"] = json!(rv.to_string());
    if m.get("uid").is_none() {
        m["uid"] = json!(format!(
            "00000000-0000-4000-8000-{:012x}",
            shared.uid.fetch_add(1, Ordering::Relaxed)
        ));
    }
    if m.get("creationTimestamp").is_none_or(Value::is_null) {
        m["creationTimestamp"] = json!(now_rfc3339());
    }
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    st.objects[res].insert(k, obj.clone());
    emit(
        shared,
        st,
        res,
        ns,
        if exists { "MODIFIED" } else { "ADDED" },
        &obj,
    );
    Ok(obj)
}

fn replace(
    shared: &Shared,
    st: &mut Store,
    res: usize,
    ns: Option<&str>,
    name: &str,
    mut obj: Value,
    status_only: bool,
) -> Result<Value, Fail> {
    let k = key(ns, name);
    let Some(old) = st.objects[res].get(&k) else {
        return Err((
            404,
            format!("{} \"{name}\" not found", RESOURCES[res].plural),
        ));
    };
    if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
        && !rv.is_empty()
        && Some(rv) != old["metadata"]["resourceVersion"].as_str()
    {
        return Err((
            409,
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                RESOURCES[res].plural
            ),
        ));
    }
    if status_only {
        let mut merged = old.clone();
        merged["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
        obj = merged;
    } else {
        // Keep server-owned metadata.
        for f in ["uid", "creationTimestamp", "namespace", "name"] {
            obj["metadata"][f] = old["metadata"][f].clone();
        }
    }
    store_update(shared, st, res, ns, k, obj)
}

fn store_update(
    shared: &Shared,
    st: &mut Store,
    res: usize,
    ns: Option<&str>,
    k: String,
    mut obj: Value,
) -> Result<Value, Fail> {
    st.rv += 1;
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    st.objects[res].insert(k, obj.clone());
    emit(shared, st, res, ns, "MODIFIED", &obj);
    Ok(obj)
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Strategic merge patch for the lists Corral patches: `conditions` merged by `type`;
/// every other list is replaced, maps are merged as in a JSON merge patch.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if k.starts_with("$") {
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                } else if k == "conditions"
                    && let (Some(new), Some(Value::Array(old))) = (v.as_array(), t.get_mut(k))
                {
                    for c in new {
                        let ty = c.get("type");
                        match old.iter_mut().find(|o| o.get("type") == ty) {
                            Some(o) => merge_patch(o, c),
                            None => old.push(c.clone()),
                        }
                    }
                } else {
                    strategic_merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

struct Route {
    res: usize,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, r, rest @ ..] => (Some(ns.to_string()), {
            let mut v = vec![*r];
            v.extend_from_slice(rest);
            v
        }),
        _ => (None, rest.to_vec()),
    };
    let plural = *rest.first()?;
    let res = RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)?;
    if !RESOURCES[res].namespaced && ns.is_some() {
        return None;
    }
    Some(Route {
        res,
        ns,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    let mutating = method != Method::GET;
    let touched = route(uri.path()).map(|r| RESOURCES[r.res].plural);
    let resp = handle_request(shared.clone(), method, uri, query, headers, body).await;
    if mutating
        && matches!(
            touched,
            Some("persistentvolumes" | "persistentvolumeclaims" | "pods")
        )
        && let Some(vc) = &shared.volume_controller
    {
        let mut st = shared.store.lock().expect("store lock");
        volumes::reconcile(&shared, &mut st, vc);
    }
    resp
}

async fn handle_request(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    if method != Method::GET {
        shared.writes.fetch_add(1, Ordering::Relaxed);
    }
    let path = uri.path().to_string();
    // Faults.
    let fault = {
        let mut st = shared.store.lock().expect("store lock");
        let mut hit = None;
        for f in st.faults.iter_mut() {
            if f.count > 0
                && f.method.as_ref().is_none_or(|m| *m == method)
                && path.contains(&f.path_contains)
            {
                f.count -= 1;
                hit = Some(f.kind);
                break;
            }
        }
        st.faults.retain(|f| f.count > 0);
        hit
    };
    match fault {
        Some(FaultKind::InternalError) => return error(500, "injected internal error"),
        Some(FaultKind::Throttle) => {
            let mut r = error(429, "injected throttling");
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            return r;
        }
        Some(FaultKind::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultKind::Forbidden) => {
            let watch = q.get("watch").is_some_and(|w| w == "1" || w == "true");
            return forbidden(&method, &path, watch);
        }
        None => {}
    }
    if path == "/version" {
        return json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-corral-test"}),
        );
    }
    let Some(r) = route(&path) else {
        return error(
            404,
            format!("the server could not find the requested resource ({path})"),
        );
    };
    if shared
        .unserved
        .lock()
        .expect("unserved lock")
        .contains(&r.res)
    {
        shared.unserved_requests.fetch_add(1, Ordering::Relaxed);
        return error(
            404,
            format!("the server could not find the requested resource ({path})"),
        );
    }
    if r.sub.as_deref() == Some("status")
        && shared
            .no_status
            .lock()
            .expect("no_status lock")
            .contains(&r.res)
    {
        return error(
            404,
            format!("the server could not find the requested resource ({path})"),
        );
    }
    let rt = RESOURCES[r.res];
    let ns = r.ns.as_deref();
    let body_json = || -> Result<Value, Box<Response>> {
        serde_json::from_slice::<Value>(&body)
            .map_err(|e| Box::new(error(400, format!("invalid JSON body: {e}"))))
    };
    match (&method, r.name.as_deref(), r.sub.as_deref()) {
        (&Method::GET, None, None) => {
            let watch = q.get("watch").is_some_and(|w| w == "1" || w == "true");
            if watch {
                *shared
                    .watches
                    .lock()
                    .expect("watches lock")
                    .entry(r.res)
                    .or_default() += 1;
                return watch_stream(shared, r.res, r.ns, &q).await;
            }
            // Pagination (`limit` + `continue`): the token carries the resourceVersion
            // of the first page and the last key served, so later pages neither skip
            // nor repeat objects; changes in between arrive through the watch.
            let limit = q
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|l| *l > 0)
                .unwrap_or(usize::MAX);
            let cont = q.get("continue").filter(|c| !c.is_empty()).cloned();
            let st = shared.store.lock().expect("store lock");
            let (list_rv, after) = match &cont {
                Some(c) => match c.split_once('/') {
                    Some((rv, k)) if rv.parse::<u64>().is_ok() => {
                        (rv.to_string(), Some(k.to_string()))
                    }
                    _ => return error(400, format!("invalid continue token {c:?}")),
                },
                None => (st.rv.to_string(), None),
            };
            let prefix = ns.map(|ns| format!("{ns}/"));
            let start = match (&after, &prefix) {
                (Some(k), _) => std::ops::Bound::Excluded(k.clone()),
                (None, Some(p)) => std::ops::Bound::Included(p.clone()),
                (None, None) => std::ops::Bound::Unbounded,
            };
            let mut items: Vec<&Value> = Vec::new();
            let mut last_key = None;
            let mut more = false;
            for (k, v) in st.objects[r.res].range((start, std::ops::Bound::Unbounded)) {
                if prefix.as_ref().is_some_and(|p| !k.starts_with(p.as_str())) {
                    break;
                }
                if items.len() == limit {
                    more = true;
                    break;
                }
                items.push(v);
                last_key = Some(k.clone());
            }
            let mut meta = json!({"resourceVersion": list_rv});
            if more && let Some(k) = last_key {
                meta["continue"] = json!(format!("{list_rv}/{k}"));
            }
            // Serialized straight from the store (no copy of the objects).
            #[derive(serde::Serialize)]
            #[serde(rename_all = "camelCase")]
            struct List<'a> {
                api_version: String,
                kind: String,
                metadata: Value,
                items: Vec<&'a Value>,
            }
            let body = serde_json::to_vec(&List {
                api_version: rt.api_version(),
                kind: format!("{}List", rt.kind),
                metadata: meta,
                items,
            })
            .unwrap_or_default();
            drop(st);
            (StatusCode::OK, [("content-type", "application/json")], body).into_response()
        }
        (&Method::GET, Some(name), None) => {
            let st = shared.store.lock().expect("store lock");
            match st.objects[r.res].get(&key(ns, name)) {
                Some(o) => json_response(StatusCode::OK, o),
                None => error(404, format!("{} \"{name}\" not found", rt.plural)),
            }
        }
        (&Method::POST, None, None) => {
            let obj = match body_json() {
                Ok(o) => o,
                Err(e) => return *e,
            };
            if rt.namespaced && ns.is_none() {
                return error(405, "create requires a namespace");
            }
            let mut st = shared.store.lock().expect("store lock");
            match create(&shared, &mut st, r.res, ns, obj, false) {
                Ok(o) => json_response(StatusCode::CREATED, &o),
                Err((c, m)) => error(c, m),
            }
        }
        (&Method::POST, Some(name), Some("binding"))
            if rt.plural == "pods" && rt.group.is_empty() =>
        {
            let b = match body_json() {
                Ok(o) => o,
                Err(e) => return *e,
            };
            let Some(target) = b["target"]["name"].as_str().filter(|s| !s.is_empty()) else {
                return error(422, "Binding.target.name: Required value");
            };
            let mut st = shared.store.lock().expect("store lock");
            let k = key(ns, name);
            let Some(pod) = st.objects[r.res].get(&k).cloned() else {
                return error(404, format!("pods \"{name}\" not found"));
            };
            if let Some(node) = pod["spec"]["nodeName"].as_str().filter(|s| !s.is_empty()) {
                st.binding_conflicts += 1;
                return error(
                    409,
                    format!(
                        "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{node}\""
                    ),
                );
            }
            let mut pod = pod;
            pod["spec"]["nodeName"] = json!(target);
            let cond = json!({"type": "PodScheduled", "status": "True",
                              "lastTransitionTime": now_rfc3339()});
            strategic_merge_patch(&mut pod, &json!({"status": {"conditions": [cond]}}));
            *st.bindings.entry(k.clone()).or_insert(0) += 1;
            let _ = store_update(&shared, &mut st, r.res, ns, k, pod);
            json_response(StatusCode::CREATED, &status_body(201, "", ""))
        }
        (&Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            let obj = match body_json() {
                Ok(o) => o,
                Err(e) => return *e,
            };
            let mut st = shared.store.lock().expect("store lock");
            match replace(&shared, &mut st, r.res, ns, name, obj, sub.is_some()) {
                Ok(o) => json_response(StatusCode::OK, &o),
                Err((c, m)) => error(c, m),
            }
        }
        (&Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            let patch = match body_json() {
                Ok(o) => o,
                Err(e) => return *e,
            };
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let strategic = ct.starts_with("application/strategic-merge-patch+json");
            if !strategic && !ct.starts_with("application/merge-patch+json") {
                return error(415, format!("unsupported patch type {ct:?}"));
            }
            let mut st = shared.store.lock().expect("store lock");
            let k = key(ns, name);
            let Some(old) = st.objects[r.res].get(&k).cloned() else {
                return error(404, format!("{} \"{name}\" not found", rt.plural));
            };
            if sub.is_some() {
                let e = st
                    .status_patches
                    .entry(format!("{}/{k}", rt.plural))
                    .or_insert((0, 0));
                e.0 += 1;
            }
            let mut obj = old.clone();
            let patch = if sub.is_some() {
                json!({"status": patch.get("status").cloned().unwrap_or(Value::Null)})
            } else {
                patch
            };
            if strategic {
                strategic_merge_patch(&mut obj, &patch);
            } else {
                merge_patch(&mut obj, &patch);
            }
            obj["metadata"]["name"] = old["metadata"]["name"].clone();
            obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
            if sub.is_some()
                && obj == old
                && let Some(e) = st.status_patches.get_mut(&format!("{}/{k}", rt.plural))
            {
                e.1 += 1;
            }
            match store_update(&shared, &mut st, r.res, ns, k, obj) {
                Ok(o) => json_response(StatusCode::OK, &o),
                Err((c, m)) => error(c, m),
            }
        }
        (&Method::POST, Some(name), Some("eviction"))
            if rt.plural == "pods" && rt.group.is_empty() =>
        {
            let ev = match body_json() {
                Ok(o) => o,
                Err(e) => return *e,
            };
            if ev["kind"] != "Eviction" || ev["apiVersion"] != "policy/v1" {
                return error(
                    400,
                    format!(
                        "expected a policy/v1 Eviction, got {}/{}",
                        ev["apiVersion"], ev["kind"]
                    ),
                );
            }
            if ev["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                return error(400, "Eviction.metadata.name must match the pod name");
            }
            let k = key(ns, name);
            let blocked = shared
                .store
                .lock()
                .expect("store lock")
                .eviction_blocked
                .contains(&k);
            if blocked {
                let mut body = status_body(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                );
                body["details"] = json!({"causes": [{"reason": "DisruptionBudget",
                        "message": "The disruption budget needs 1 healthy pods and has 1 currently"}]});
                return json_response(StatusCode::TOO_MANY_REQUESTS, &body);
            }
            match delete_pod(&shared, r.res, ns, name, &ev["deleteOptions"]) {
                Ok(_) => json_response(StatusCode::CREATED, &status_body(201, "", "")),
                Err((c, m)) => error(c, m),
            }
        }
        (&Method::DELETE, Some(name), None) if rt.plural == "pods" && rt.group.is_empty() => {
            let opts = if body.is_empty() {
                Value::Null
            } else {
                match body_json() {
                    Ok(o) => o,
                    Err(e) => return *e,
                }
            };
            match delete_pod(&shared, r.res, ns, name, &opts) {
                Ok(o) => json_response(StatusCode::OK, &o),
                Err((c, m)) => error(c, m),
            }
        }
        (&Method::DELETE, Some(name), None) => {
            let mut st = shared.store.lock().expect("store lock");
            let k = key(ns, name);
            let Some(mut obj) = st.objects[r.res].remove(&k) else {
                return error(404, format!("{} \"{name}\" not found", rt.plural));
            };
            st.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
            emit(&shared, &mut st, r.res, ns, "DELETED", &obj);
            json_response(StatusCode::OK, &obj)
        }
        _ => error(405, format!("{method} {path} is not supported")),
    }
}

/// Deletes a pod as the API server + kubelet would: `DeleteOptions.preconditions.uid`
/// checked (`409`), then at once or, with a termination grace, `deletionTimestamp`
/// first and the removal after the grace. Deleting a terminating pod is a no-op.
fn delete_pod(
    shared: &Arc<Shared>,
    res: usize,
    ns: Option<&str>,
    name: &str,
    opts: &Value,
) -> Result<Value, Fail> {
    let mut st = shared.store.lock().expect("store lock");
    let k = key(ns, name);
    let Some(obj) = st.objects[res].get(&k).cloned() else {
        return Err((404, format!("pods \"{name}\" not found")));
    };
    if let Some(uid) = opts["preconditions"]["uid"].as_str()
        && Some(uid) != obj["metadata"]["uid"].as_str()
    {
        return Err((
            409,
            format!(
                "Operation cannot be fulfilled on Pod \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                obj["metadata"]["uid"].as_str().unwrap_or("")
            ),
        ));
    }
    if !obj["metadata"]["deletionTimestamp"].is_null() {
        return Ok(obj);
    }
    *st.evictions.entry(k.clone()).or_insert(0) += 1;
    let grace = shared.termination_grace;
    if grace.is_zero() {
        let mut obj = obj;
        st.objects[res].remove(&k);
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        emit(shared, &mut st, res, ns, "DELETED", &obj);
        return Ok(obj);
    }
    let mut obj = obj;
    obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
    obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace.as_secs());
    let uid = obj["metadata"]["uid"].clone();
    let out = store_update(shared, &mut st, res, ns, k.clone(), obj)?;
    let (shared, ns) = (shared.clone(), ns.map(str::to_string));
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        let mut st = shared.store.lock().expect("store lock");
        // Only the terminating incarnation (a re-created pod is left alone).
        if st.objects[res]
            .get(&k)
            .is_some_and(|o| o["metadata"]["uid"] == uid)
            && let Some(mut obj) = st.objects[res].remove(&k)
        {
            st.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
            emit(&shared, &mut st, res, ns.as_deref(), "DELETED", &obj);
        }
    });
    Ok(out)
}

fn line(ty: &str, obj: &Value) -> Bytes {
    // `{"type":TY,"object":OBJ}\n`, serialized without copying the object.
    let mut v = Vec::with_capacity(4096);
    v.extend_from_slice(b"{\"type\":\"");
    v.extend_from_slice(ty.as_bytes());
    v.extend_from_slice(b"\",\"object\":");
    if serde_json::to_writer(&mut v, obj).is_err() {
        return Bytes::new();
    }
    v.extend_from_slice(b"}\n");
    Bytes::from(v)
}

async fn watch_stream(
    shared: Arc<Shared>,
    res: usize,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Response {
    let rt = RESOURCES[res];
    let bookmarks = q
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let matches = {
        let ns = ns.clone();
        move |e: &WatchEvent| e.res == res && (ns.is_none() || e.namespace == ns)
    };
    let (replay, mut rx, gone, start_rv) = {
        let st = shared.store.lock().expect("store lock");
        let rx = shared.tx[res].subscribe();
        if from == 0 {
            // "Any": start with synthetic ADDED events for the current state.
            let items: Vec<Bytes> = st.objects[res]
                .iter()
                .filter(|(k, _)| ns.as_ref().is_none_or(|n| k.starts_with(&format!("{n}/"))))
                .map(|(_, v)| line("ADDED", v))
                .collect();
            (items, rx, false, st.rv)
        } else if from < st.compacted {
            (Vec::new(), rx, true, st.rv)
        } else {
            let items: Vec<Bytes> = st
                .history
                .iter()
                .filter(|e| e.rv > from && matches(e))
                .map(|e| e.line())
                .collect();
            (items, rx, false, st.rv)
        }
    };
    let mut drop_rx = shared.drop_epoch.subscribe();
    drop_rx.mark_unchanged();
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1024);
    let every = shared.bookmark_every;
    let api_version = rt.api_version();
    tokio::spawn(async move {
        if gone {
            let st = status_body(
                410,
                "Expired",
                &format!("too old resource version: {from} ({start_rv})"),
            );
            let _ = out_tx.send(Ok(line("ERROR", &st))).await;
            return;
        }
        for b in replay {
            if out_tx.send(Ok(b)).await.is_err() {
                return;
            }
        }
        let mut last_rv = start_rv;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = drop_rx.changed() => return,
                _ = tick.tick(), if bookmarks => {
                    let bm = json!({"apiVersion": api_version, "kind": rt.kind,
                        "metadata": {"resourceVersion": last_rv.to_string()}});
                    if out_tx.send(Ok(line("BOOKMARK", &bm))).await.is_err() { return; }
                }
                ev = rx.recv() => match ev {
                    Ok(e) => {
                        if e.rv <= start_rv { continue; }
                        last_rv = e.rv;
                        if matches(&e) && out_tx.send(Ok(e.line())).await.is_err() {
                            return;
                        }
                    }
                    // A slow watcher: end the stream, the client resumes.
                    Err(_) => return,
                }
            }
        }
    });
    let stream = tokio_stream_from(out_rx);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error(500, "response"))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, Infallible>>,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_core_group_and_namespaced_paths() {
        let r = route("/api/v1/namespaces/a/pods/p/binding").expect("route");
        assert_eq!(RESOURCES[r.res].plural, "pods");
        assert_eq!(r.ns.as_deref(), Some("a"));
        assert_eq!(r.name.as_deref(), Some("p"));
        assert_eq!(r.sub.as_deref(), Some("binding"));
        let r = route("/apis/scheduling.volcano.sh/v1beta1/queues").expect("route");
        assert_eq!(RESOURCES[r.res].kind, "Queue");
        assert!(route("/api/v1/namespaces/a/nodes").is_none());
        assert!(route("/apis/x/v1/things").is_none());
    }

    #[test]
    fn strategic_patch_merges_conditions_by_type() {
        let mut o = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}});
        strategic_merge_patch(
            &mut o,
            &json!({"status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}),
        );
        let c = o["status"]["conditions"].as_array().expect("array");
        assert_eq!(c.len(), 2);
        assert_eq!(c[1]["status"], "True");
        assert_eq!(c[1]["reason"], "Unschedulable");
    }

    #[test]
    fn merge_patch_removes_nulls() {
        let mut o = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut o, &json!({"a": null, "b": {"c": 5}}));
        assert_eq!(o, json!({"b": {"c": 5, "d": 3}}));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20);
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }
}
