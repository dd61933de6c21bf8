//! corral-agent core: endpoint registry, policy reconcile, the unix socket
//! API. State that must survive a restart lives in pinned maps (kernel
//! state) and in `<state-dir>/endpoints.json` (the registry, for policy).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tracing::{info, warn};

use crate::abi::{
    DIR_EGRESS, DIR_INGRESS, EP_DSCP, EndpointCfg, Limit, MAX_RATE_BYTES_PER_SEC, NUM_CLASSES,
    NodeCfg,
};
use crate::api::{
    ANN_EGRESS_BW, ANN_INGRESS_BW, ANN_TRAFFIC_CLASS, EndpointSpec, EndpointStatus, LimitSpec,
    Request, Response, parse_bandwidth,
};
use crate::datapath::{self, AttachMode, Datapath};
use crate::policy::{self, Inputs, LocalEndpoint, PodInfo, source};

pub const CLASSES: [&str; NUM_CLASSES] = ["critical", "standard", "bulk"];

#[derive(Clone, Debug)]
pub struct Config {
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub manifests: Option<PathBuf>,
    pub attach: AttachMode,
    /// per-node aggregate budget per direction, bits/s (0 = none)
    pub uplink_bps: u64,
    /// minimum share per class in permille of the uplink
    pub min_share_permille: [u16; NUM_CLASSES],
    /// DSCP per class when marking is enabled
    pub dscp: Option<[u8; NUM_CLASSES]>,
    /// multi-node routing and the CNI config (None: single node)
    pub routing: Option<crate::routing::Options>,
    /// node devices (uplinks) that get the deferred-egress check for
    /// Service flows to other nodes (routing adds its own devices)
    pub node_out_ifaces: Vec<String>,
    /// Corral's own Service translation (maps `corral_lb_*`)
    pub kube_proxy_replacement: bool,
    /// this node (`internalTrafficPolicy: Local` endpoints); may be empty
    pub node_name: String,
    /// the node addresses NodePorts are translated on (`--nodeport-addresses`;
    /// empty: the InternalIPs of this node's Node object)
    pub nodeport_addresses: Vec<std::net::IpAddr>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Registered {
    spec: EndpointSpec,
    ifindex: u32,
}

pub struct Agent {
    cfg: Config,
    dp: Datapath,
    endpoints: BTreeMap<String, Registered>,
    manifests: source::Manifests,
    fingerprint: source::Fingerprint,
    policy_errors: Vec<String>,
    policy_flags: BTreeMap<u32, u32>,
    router: Option<crate::routing::Router>,
    /// node devices with the deferred-egress check (and, with
    /// --kube-proxy-replacement, the NodePort translation) attached
    node_out: Vec<String>,
    /// this node's InternalIPs from its Node object (NodePort addresses
    /// unless --nodeport-addresses)
    node_addrs: Vec<std::net::IpAddr>,
    /// ifindex -> policies selecting the endpoint (for `status`)
    selected_by: BTreeMap<u32, Vec<String>>,
    /// tier rule id -> description (ids in the `corral_tier` map)
    tier_rules: Vec<String>,
    /// drop-event stream (names kept current by apply_policy)
    monitor: Arc<crate::monitor::Monitor>,
    /// the ring buffer, until the API server takes it
    events: Option<aya::maps::RingBuf<aya::maps::MapData>>,
    /// the policy source delivered a complete input set (manifests: read
    /// at start; Kubernetes: first synced set applied)
    policy_synced: bool,
}

/// Default bucket depth: 300 ms of rate, at least 128 KiB. On low-RTT
/// veths a policed TCP flow loses whole windows and recovers by RTO
/// (min 200 ms); a bucket shorter than that starves it (measured: 20 ms of
/// burst gives ~10 % of the rate, 200 ms ~92-96 %, 300 ms 99-103 %).
pub fn default_burst(rate_bytes: u64) -> u64 {
    (rate_bytes.saturating_mul(3) / 10).max(128 * 1024)
}

fn limit(spec: &Option<LimitSpec>, ann: Option<&String>, field: &str) -> Result<Limit> {
    let (bps, burst) = match (spec, ann) {
        (Some(l), _) => (l.rate_bps, l.burst_bytes),
        (None, Some(a)) => (
            parse_bandwidth(a).with_context(|| format!("annotation {field}"))?,
            None,
        ),
        (None, None) => return Ok(Limit::default()),
    };
    if bps == 0 {
        return Ok(Limit::default());
    }
    let rate = bps.div_ceil(8);
    if rate > MAX_RATE_BYTES_PER_SEC {
        bail!("{field}: rate {bps} bit/s above the supported maximum");
    }
    let burst = burst.unwrap_or_else(|| default_burst(rate));
    if burst < 1500 {
        bail!("{field}: burst {burst} bytes is smaller than one packet");
    }
    Ok(Limit {
        rate_bytes_per_sec: rate,
        burst_bytes: burst,
    })
}

pub fn class_of(spec: &EndpointSpec) -> Result<u8> {
    let name = spec
        .class
        .clone()
        .or_else(|| spec.annotations.get(ANN_TRAFFIC_CLASS).cloned());
    if let Some(n) = name {
        return CLASSES
            .iter()
            .position(|c| *c == n)
            .map(|i| i as u8)
            .with_context(|| {
                format!(
                    "pod {}/{}: traffic class {n:?} is not critical, standard or bulk",
                    spec.namespace, spec.name
                )
            });
    }
    Ok(match spec.qos_class.as_deref() {
        Some("Guaranteed") => 0,
        Some("BestEffort") => 2,
        _ => 1,
    })
}

fn validate(spec: &EndpointSpec) -> Result<()> {
    if spec.namespace.is_empty() || spec.name.is_empty() {
        bail!(
            "endpoint {:?}: namespace and name are required",
            spec.ifname
        );
    }
    datapath::ifindex(&spec.ifname)
        .with_context(|| format!("pod {}/{}: field ifname", spec.namespace, spec.name))?;
    Ok(())
}

impl Agent {
    pub fn new(cfg: Config) -> Result<Self> {
        std::fs::create_dir_all(&cfg.state_dir)
            .with_context(|| format!("creating state dir {}", cfg.state_dir.display()))?;
        let mut dp = Datapath::open(&cfg.pin_dir, cfg.attach)?;
        let mut node = [NodeCfg::default(); 2];
        if cfg.uplink_bps > 0 {
            let rate = cfg.uplink_bps.div_ceil(8);
            for n in node.iter_mut() {
                n.rate_bytes_per_sec = rate;
                n.burst_bytes = default_burst(rate);
                n.min_share_permille = cfg.min_share_permille;
                // strict priority: lower classes may not use the top part
                // of the shared bucket
                n.reserve_permille = [0, 300, 600];
                n.dscp = cfg.dscp.unwrap_or_default();
            }
        }
        dp.set_node_cfg(&node)?;
        dp.set_lb(cfg.kube_proxy_replacement)?;
        // no client yet (a restarted agent may find the switch on)
        if let Err(e) = dp.set_monitor(false) {
            warn!(error = %format!("{e:#}"), "drop events unavailable");
        }
        let events = dp
            .take_events()
            .map_err(|e| warn!(error = %format!("{e:#}"), "drop events unavailable"))
            .ok();
        let mut agent = Agent {
            cfg,
            dp,
            endpoints: BTreeMap::new(),
            manifests: Default::default(),
            fingerprint: Vec::new(),
            policy_errors: Vec::new(),
            policy_flags: BTreeMap::new(),
            router: None,
            node_out: Vec::new(),
            node_addrs: Vec::new(),
            selected_by: BTreeMap::new(),
            tier_rules: Vec::new(),
            monitor: Default::default(),
            events,
            policy_synced: false,
        };
        for d in agent.cfg.node_out_ifaces.clone() {
            agent.attach_node_device(&d)?;
        }
        agent.router = agent.cfg.routing.clone().map(crate::routing::Router::new);
        agent.restore()?;
        agent.policy_synced = agent.cfg.manifests.is_some();
        Ok(agent)
    }

    fn state_file(&self) -> PathBuf {
        self.cfg.state_dir.join("endpoints.json")
    }

    fn save(&self) -> Result<()> {
        let tmp = self.state_file().with_extension("json.tmp");
        let v: Vec<&Registered> = self.endpoints.values().collect();
        std::fs::write(&tmp, serde_json::to_vec_pretty(&v)?)?;
        std::fs::rename(&tmp, self.state_file())?;
        Ok(())
    }

    /// Re-adopts endpoints from the state file: replaces programs in the
    /// pinned links and rewrites config; buckets/counters/conntrack stay.
    fn restore(&mut self) -> Result<()> {
        let f = self.state_file();
        if !f.exists() {
            return Ok(());
        }
        let regs: Vec<Registered> = serde_json::from_slice(&std::fs::read(&f)?)
            .with_context(|| format!("parsing {}", f.display()))?;
        for r in regs {
            match datapath::ifindex(&r.spec.ifname) {
                Ok(idx) if idx == r.ifindex => {
                    self.endpoints.insert(r.spec.ifname.clone(), r);
                }
                _ => {
                    warn!(ifname = %r.spec.ifname, "registered interface gone, dropping endpoint");
                    let _ = self.dp.detach(&r.spec.ifname, r.ifindex);
                    let _ = self.dp.remove_endpoint(r.ifindex);
                }
            }
        }
        self.reload_manifests(true);
        // policy maps and flags first, then programs
        let names: Vec<String> = self.endpoints.keys().cloned().collect();
        self.apply_policy()?;
        for n in names {
            let r = self.endpoints[&n].clone();
            let adopted = self.dp.attach(&r.spec.ifname)?;
            info!(ifname = %n, adopted, "endpoint restored");
        }
        self.save()?;
        Ok(())
    }

    fn endpoint_cfg(&self, r: &Registered, id: u32) -> Result<EndpointCfg> {
        let s = &r.spec;
        let class = class_of(s)?;
        let mut c = EndpointCfg {
            endpoint_id: id,
            class_id: class,
            flags: self.policy_flags.get(&r.ifindex).copied().unwrap_or(0),
            ..Default::default()
        };
        c.limits[DIR_INGRESS as usize] = limit(
            &s.ingress,
            s.annotations.get(ANN_INGRESS_BW),
            &format!("pod {}/{} ingress", s.namespace, s.name),
        )?;
        c.limits[DIR_EGRESS as usize] = limit(
            &s.egress,
            s.annotations.get(ANN_EGRESS_BW),
            &format!("pod {}/{} egress", s.namespace, s.name),
        )?;
        if let Some(d) = self.cfg.dscp {
            c.flags |= EP_DSCP;
            c.dscp = d[class as usize];
        }
        Ok(c)
    }

    fn write_endpoint(&mut self, ifname: &str) -> Result<()> {
        let r = self.endpoints[ifname].clone();
        let id = self.endpoints.keys().position(|k| k == ifname).unwrap_or(0) as u32 + 1;
        let c = self.endpoint_cfg(&r, id)?;
        self.dp.set_endpoint(r.ifindex, &c)
    }

    pub fn register(&mut self, spec: EndpointSpec, update: bool) -> Result<String> {
        validate(&spec)?;
        let ifindex = datapath::ifindex(&spec.ifname)?;
        let prev = self.endpoints.get(&spec.ifname).map(|r| r.ifindex);
        if update && prev.is_none() {
            bail!("endpoint {:?} is not registered", spec.ifname);
        }
        // same name, new interface (pod re-created without a deregister):
        // drop the stale attachment and state, then attach as new
        if let Some(old) = prev
            && old != ifindex
        {
            info!(ifname = %spec.ifname, old, new = ifindex, "interface re-created");
            let _ = self.dp.detach(&spec.ifname, old);
            let _ = self.dp.remove_endpoint(old);
            self.endpoints.remove(&spec.ifname);
        }
        let exists = self.endpoints.contains_key(&spec.ifname);
        let r = Registered {
            spec: spec.clone(),
            ifindex,
        };
        // validate limits/class before touching anything
        self.endpoint_cfg(&r, 0)?;
        let old = self.endpoints.insert(spec.ifname.clone(), r);
        // policy (and flags) before attaching, so enforcement starts
        // with the first packet
        if let Err(e) = self.apply_policy() {
            match old {
                Some(o) => self.endpoints.insert(spec.ifname.clone(), o),
                None => self.endpoints.remove(&spec.ifname),
            };
            return Err(e);
        }
        if !exists && let Err(e) = self.dp.attach(&spec.ifname) {
            self.endpoints.remove(&spec.ifname);
            let _ = self.dp.remove_endpoint(ifindex);
            let _ = self.apply_policy();
            return Err(e);
        }
        self.save()?;
        let place = self.dp.placement(&spec.ifname, ifindex);
        for a in &place.ahead {
            warn!(ifname = %spec.ifname, ahead = %a, "a foreign filter runs before Corral");
        }
        info!(ifname = %spec.ifname, pod = %format!("{}/{}", spec.namespace, spec.name), update, attach = %place.how, "endpoint registered");
        Ok(format!(
            "endpoint {} (ifindex {ifindex}) registered",
            spec.ifname
        ))
    }

    pub fn deregister(&mut self, ifname: &str) -> Result<String> {
        let r = self
            .endpoints
            .remove(ifname)
            .with_context(|| format!("endpoint {ifname:?} is not registered"))?;
        self.dp.detach(ifname, r.ifindex)?;
        self.dp.remove_endpoint(r.ifindex)?;
        self.apply_policy()?;
        self.save()?;
        info!(ifname, "endpoint deregistered");
        Ok(format!("endpoint {ifname} deregistered"))
    }

    /// Re-reads the manifest dir (if changed or forced).
    pub fn reload_manifests(&mut self, force: bool) -> bool {
        let Some(dir) = self.cfg.manifests.clone() else {
            // Kubernetes source: until its watches have synced, enforce the
            // inputs it last applied (kept across restarts)
            if force && let Some(m) = crate::policy::cache::load_cache(&self.cfg.state_dir) {
                self.manifests = m;
                return true;
            }
            return false;
        };
        let fp = source::fingerprint(&dir);
        if !force && fp == self.fingerprint {
            return false;
        }
        self.fingerprint = fp;
        self.manifests = source::load_dir(&dir);
        for e in &self.manifests.errors {
            warn!(error = %e, "manifest skipped");
        }
        let nodes = self.manifests.route_nodes.clone();
        if let Err(e) = self.set_nodes(&nodes) {
            warn!(error = %format!("{e:#}"), "routing");
        }
        true
    }

    /// Brings the routes to other nodes (and this node's CNI config) in
    /// line with the Node objects; a no-op without `--routing`/`--cni-conf`.
    pub fn set_nodes(&mut self, nodes: &[crate::routing::NodeInfo]) -> Result<()> {
        let mine: Vec<std::net::IpAddr> = nodes
            .iter()
            .filter(|n| !self.cfg.node_name.is_empty() && n.name == self.cfg.node_name)
            .flat_map(|n| n.internal_ips.iter().copied())
            .collect();
        if mine != self.node_addrs {
            self.node_addrs = mine;
            if self.cfg.kube_proxy_replacement && self.cfg.nodeport_addresses.is_empty() {
                // NodePort frontends move (errors are reported with policy)
                self.apply_policy()?;
            }
        }
        let Some(r) = &mut self.router else {
            return Ok(());
        };
        r.sync(nodes)?;
        // flows to Service backends on other nodes leave through these
        for d in r.node_devices() {
            self.attach_node_device(&d)?;
        }
        Ok(())
    }

    /// A node device (uplink, overlay): the deferred-egress check on its
    /// egress and, with --kube-proxy-replacement, the NodePort translation
    /// on its ingress. Once per device.
    fn attach_node_device(&mut self, d: &str) -> Result<()> {
        if self.node_out.iter().any(|x| x == d) {
            return Ok(());
        }
        self.dp.attach_node_out(d)?;
        if self.cfg.kube_proxy_replacement {
            self.dp.attach_node_in(d)?;
        }
        self.node_out.push(d.to_string());
        Ok(())
    }

    /// The Service translation table from the current inputs into the maps
    /// (`--kube-proxy-replacement`; off: emptied). Its problems by Service.
    fn sync_lb(&mut self) -> Result<Vec<String>> {
        let (lb, lb_errors) = if self.cfg.kube_proxy_replacement {
            let addrs = if self.cfg.nodeport_addresses.is_empty() {
                &self.node_addrs
            } else {
                &self.cfg.nodeport_addresses
            };
            crate::services::lb_table(
                &self.manifests.lb_services,
                &self.manifests.endpoint_slices,
                &self.cfg.node_name,
                addrs,
            )
        } else {
            Default::default()
        };
        self.dp.sync_lb(&lb)?;
        Ok(lb_errors)
    }

    /// Replaces the policy inputs from an external source (Kubernetes) and
    /// re-applies policy. The inputs are cached in the state dir first so a
    /// restarted agent enforces them before the source has synced.
    pub fn set_policy_inputs(&mut self, m: source::Manifests) -> Result<()> {
        crate::policy::cache::save_cache(&self.cfg.state_dir, &m)?;
        self.manifests = m;
        self.apply_policy()?;
        self.policy_synced = true;
        Ok(())
    }

    pub fn monitor(&self) -> Arc<crate::monitor::Monitor> {
        self.monitor.clone()
    }

    /// The drop-event ring buffer (once; the caller reads it).
    pub fn take_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        self.events.take()
    }

    /// Drop events on/off in the programs.
    pub fn set_monitor(&mut self, on: bool) -> Result<()> {
        self.dp.set_monitor(on)
    }

    /// Readiness (`/readyz`): programs loaded (always, once the agent
    /// exists) and the policy source has delivered a complete input set.
    pub fn ready(&self) -> std::result::Result<(), String> {
        if self.policy_synced {
            Ok(())
        } else {
            Err("policy source not synced yet (enforcing the cached inputs)".into())
        }
    }

    /// Compiles policy and writes it with no enforcement gap: new entries,
    /// then endpoint flags, then removal of stale entries.
    pub fn apply_policy(&mut self) -> Result<()> {
        let inputs = Inputs {
            endpoints: self
                .endpoints
                .values()
                .map(|r| LocalEndpoint {
                    ifindex: r.ifindex,
                    pod: PodInfo {
                        namespace: r.spec.namespace.clone(),
                        name: r.spec.name.clone(),
                        labels: r.spec.labels.clone(),
                        ips: r.spec.ips.clone(),
                        ports: r.spec.ports.clone(),
                    },
                })
                .collect(),
            pods: self.manifests.pods.clone(),
            namespaces: self.manifests.namespaces.clone(),
            policies: self.manifests.policies.clone(),
            tiers: self.manifests.tiers.clone(),
            nodes: self.manifests.nodes.clone(),
        };
        let compiled = policy::compile(&inputs);
        for e in &compiled.errors {
            warn!(error = %e, "policy problem");
        }
        self.dp.upsert_policy(&compiled.entries)?;
        self.dp.upsert_tier(&compiled.tier_entries)?;
        self.policy_flags = compiled.flags.clone();
        self.selected_by = compiled.selected_by.clone();
        let names: Vec<String> = self.endpoints.keys().cloned().collect();
        for n in names {
            self.write_endpoint(&n)?;
        }
        self.dp.remove_stale_policy(&compiled.entries)?;
        let svc: std::collections::BTreeSet<_> =
            self.manifests.services.iter().map(|f| f.key()).collect();
        self.dp.sync_services(&svc)?;
        let lb_errors = self.sync_lb()?;
        self.dp.remove_stale_tier(&compiled.tier_entries)?;
        self.tier_rules = compiled.tier_rules.clone();
        self.monitor.set_names(
            self.endpoints
                .values()
                .map(|r| (r.ifindex, format!("{}/{}", r.spec.namespace, r.spec.name)))
                .collect(),
            self.tier_rules.clone(),
        );
        let mut errs = self.manifests.errors.clone();
        errs.extend(compiled.errors);
        errs.extend(lb_errors);
        self.policy_errors = errs;
        Ok(())
    }

    pub fn list(&mut self) -> Result<Response> {
        let mut eps = Vec::new();
        let regs: Vec<Registered> = self.endpoints.values().cloned().collect();
        for r in regs {
            let flags = self.policy_flags.get(&r.ifindex).copied().unwrap_or(0);
            let place = self.dp.placement(&r.spec.ifname, r.ifindex);
            eps.push(EndpointStatus {
                attach: place.how,
                ahead: place.ahead,
                class: CLASSES[class_of(&r.spec).unwrap_or(1) as usize].to_string(),
                policy_ingress: flags & crate::abi::EP_POLICY_INGRESS != 0,
                policy_egress: flags & crate::abi::EP_POLICY_EGRESS != 0,
                policies: self
                    .selected_by
                    .get(&r.ifindex)
                    .cloned()
                    .unwrap_or_default(),
                ingress: self.dp.counters(r.ifindex, DIR_INGRESS)?.into(),
                egress: self.dp.counters(r.ifindex, DIR_EGRESS)?.into(),
                ifindex: r.ifindex,
                spec: r.spec,
            });
        }
        Ok(Response::Endpoints {
            endpoints: eps,
            attach_mode: format!("{:?}", self.dp.mode()).to_lowercase(),
            policy_entries: self.dp.policy_entries()?,
            policy_errors: self.policy_errors.clone(),
            routing: self.router.as_ref().map(|r| r.status.clone()),
        })
    }

    pub fn handle(&mut self, req: Request) -> Response {
        let r = match req {
            Request::Register { endpoint } => self.register(endpoint, false).map(ok),
            Request::Update { endpoint } => self.register(endpoint, true).map(ok),
            Request::Deregister { ifname } => self.deregister(&ifname).map(ok),
            Request::List => self.list(),
            Request::Monitor => Err(anyhow::anyhow!(
                "monitor streams on its own connection (corral-agent monitor)"
            )),
            Request::Reconcile => {
                self.reload_manifests(true);
                self.apply_policy()
                    .map(|_| ok(format!("{} policy problems", self.policy_errors.len())))
            }
        };
        r.unwrap_or_else(|e| Response::Error {
            message: format!("{e:#}"),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.cfg.socket
    }

    /// Counters of all endpoints, for /metrics.
    /// Drop events lost because the ring buffer was full (0 if unreadable).
    pub fn events_lost(&self) -> u64 {
        self.dp.events_lost().unwrap_or(0)
    }

    pub fn snapshot(&mut self) -> Vec<EndpointStatus> {
        match self.list() {
            Ok(Response::Endpoints { endpoints, .. }) => endpoints,
            _ => Vec::new(),
        }
    }
}

fn ok(message: String) -> Response {
    Response::Ok { message }
}

/// Serves the API until the process ends.
pub async fn serve(agent: Arc<Mutex<Agent>>) -> Result<()> {
    let path = agent
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .socket()
        .to_path_buf();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    // root-only socket
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    info!(socket = %path.display(), "API listening");
    // Bounded: line length, nesting depth, idle time, connections (serve_limits).
    // A `monitor` request turns its connection into a drop-event stream.
    let handle = move |line: String| {
        let agent = agent.clone();
        async move {
            let resp = match serde_json::from_str::<Request>(&line) {
                Err(e) => Response::Error {
                    message: format!("bad request: {e}"),
                },
                Ok(Request::Monitor) => {
                    let streamer: crate::serve_limits::Streamer = Box::new(move |r, w| {
                        Box::pin(async move { stream_drops(&agent, r, w).await })
                    });
                    return crate::serve_limits::Reply::Stream(streamer);
                }
                Ok(req) => tokio::task::spawn_blocking(move || match agent.lock() {
                    Ok(mut g) => g.handle(req),
                    Err(_) => Response::Error {
                        message: "agent state poisoned".into(),
                    },
                })
                .await
                .unwrap_or_else(|e| Response::Error {
                    message: format!("internal error: {e}"),
                }),
            };
            crate::serve_limits::Reply::Line(serde_json::to_vec(&resp).unwrap_or_default())
        }
    };
    let error =
        |message: String| serde_json::to_vec(&Response::Error { message }).unwrap_or_default();
    crate::serve_limits::serve_lines(
        listener,
        crate::serve_limits::LineLimits::default(),
        handle,
        error,
    )
    .await;
    Ok(())
}

/// Streams drop events to one monitor client until it disconnects. The
/// programs emit events only while at least one client is connected. What
/// the client sends meanwhile is read and discarded in bounded chunks; an
/// event line not taken by the client within
/// [`crate::serve_limits::API_IDLE_TIMEOUT`] ends the stream.
async fn stream_drops(
    agent: &Arc<Mutex<Agent>>,
    mut r: tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>,
    mut w: tokio::net::unix::OwnedWriteHalf,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mon = match agent.lock() {
        Ok(g) => g.monitor(),
        Err(_) => return,
    };
    let (mut rx, n) = mon.subscribe();
    let switch = |on: bool| {
        let a = agent.clone();
        tokio::task::spawn_blocking(move || {
            if let Ok(mut g) = a.lock()
                && let Err(e) = g.set_monitor(on)
            {
                warn!(error = %format!("{e:#}"), "switching drop events");
            }
        })
    };
    if n == 1 {
        let _ = switch(true).await;
    }
    info!(clients = n, "monitor client connected");
    let mut sink = [0u8; 512];
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            // the client closed its end (or sent something: discarded)
            k = r.read(&mut sink) => match k {
                Ok(k) if k > 0 => continue,
                _ => break,
            },
        };
        let d = match ev {
            Ok(d) => d,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => {
                mon.lost.fetch_add(k, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            Err(_) => break,
        };
        let mut line = serde_json::to_vec(&d).unwrap_or_default();
        line.push(b'\n');
        let wrote =
            tokio::time::timeout(crate::serve_limits::API_IDLE_TIMEOUT, w.write_all(&line)).await;
        if !matches!(wrote, Ok(Ok(()))) {
            break;
        }
    }
    if mon.unsubscribe() == 0 {
        let _ = switch(false).await;
    }
    info!("monitor client disconnected");
}

/// Polls the manifest dir and re-applies policy when it changed.
pub async fn watch_manifests(agent: Arc<Mutex<Agent>>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        let a = agent.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(mut g) = a.lock()
                && g.reload_manifests(false)
                && let Err(e) = g.apply_policy()
            {
                warn!(error = %format!("{e:#}"), "applying policy");
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_spec_and_annotations() {
        let ann = "10M".to_string();
        let l = limit(&None, Some(&ann), "pod x/a ingress").unwrap();
        assert_eq!(l.rate_bytes_per_sec, 1_250_000);
        assert_eq!(l.burst_bytes, 375_000, "300 ms of rate");
        let spec = Some(LimitSpec {
            rate_bps: 1_000_000,
            burst_bytes: Some(4000),
        });
        // the explicit field wins over the annotation
        let l = limit(&spec, Some(&ann), "f").unwrap();
        assert_eq!((l.rate_bytes_per_sec, l.burst_bytes), (125_000, 4000));
        assert_eq!(limit(&None, None, "f").unwrap(), Limit::default());
        let e = limit(&None, Some(&"fast".to_string()), "pod x/a egress").unwrap_err();
        assert!(format!("{e:#}").contains("pod x/a egress"), "{e:#}");
        let tiny = Some(LimitSpec {
            rate_bps: 1_000_000,
            burst_bytes: Some(100),
        });
        assert!(limit(&tiny, None, "f").is_err());
        let huge = Some(LimitSpec {
            rate_bps: u64::MAX,
            burst_bytes: None,
        });
        assert!(limit(&huge, None, "f").is_err());
        assert_eq!(default_burst(1000), 128 * 1024);
    }

    #[test]
    fn class_precedence() {
        let mut s = EndpointSpec {
            namespace: "x".into(),
            name: "a".into(),
            ..Default::default()
        };
        assert_eq!(class_of(&s).unwrap(), 1, "default standard");
        s.qos_class = Some("BestEffort".into());
        assert_eq!(class_of(&s).unwrap(), 2);
        s.annotations
            .insert(ANN_TRAFFIC_CLASS.into(), "critical".into());
        assert_eq!(class_of(&s).unwrap(), 0, "annotation beats QoS");
        s.class = Some("bulk".into());
        assert_eq!(class_of(&s).unwrap(), 2, "field beats annotation");
        s.class = Some("gold".into());
        let e = class_of(&s).unwrap_err().to_string();
        assert!(e.contains("x/a") && e.contains("gold"), "{e}");
    }
}
