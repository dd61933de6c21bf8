//! `corral-cni`: a CNI 1.1.0 plugin (also 0.4.0 and 1.0.0 configs) that
//! wires pods to the Corral data plane, standalone (own veth + delegated
//! IPAM) or chained after another plugin (registers the pod's host-side
//! veth found through `prevResult`). See ARCHITECTURE.md (CNI plugin).

pub mod ipam_conf;
pub mod netlink;
pub mod sys;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{self, EndpointSpec, LimitSpec, Request, Response};
use netlink::Nl;
use sys::{DelegateEnv, Lock};
use types::*;

/// Pod annotation with fixed IPs ("198.18.0.10,2001:db8::10"), handed to
/// the IPAM plugin as runtimeConfig.ips (like the `ips` capability).
pub use corral_api::keys::ANN_FIXED_IPS;
/// Link-local gateways the pod routes through (answered by the host veth).
pub const GW4: &str = "169.254.1.1";
pub const GW6: &str = "fe80::1";
const LOCK_WAIT: Duration = Duration::from_secs(90);

/// The CNI_* environment.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
    pub cni_args: BTreeMap<String, String>,
}

impl Env {
    pub fn from_map(m: &HashMap<String, String>) -> CniResultT<Env> {
        let g = |k: &str| m.get(k).cloned().unwrap_or_default();
        let mut e = Env {
            command: g("CNI_COMMAND"),
            container_id: g("CNI_CONTAINERID"),
            netns: g("CNI_NETNS"),
            ifname: g("CNI_IFNAME"),
            args: g("CNI_ARGS"),
            path: g("CNI_PATH"),
            cni_args: BTreeMap::new(),
        };
        for kv in e.args.split(';').filter(|s| !s.is_empty()) {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("CNI_ARGS: {kv:?} is not KEY=VALUE"),
                ));
            };
            e.cni_args.insert(k.to_string(), v.to_string());
        }
        Ok(e)
    }

    fn require(&self, names: &[&str]) -> CniResultT<()> {
        for n in names {
            let v = match *n {
                "CNI_CONTAINERID" => &self.container_id,
                "CNI_NETNS" => &self.netns,
                "CNI_IFNAME" => &self.ifname,
                "CNI_PATH" => &self.path,
                _ => continue,
            };
            if v.is_empty() {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("{n} is required for {}", self.command),
                ));
            }
        }
        if !self.container_id.is_empty()
            && !self
                .container_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_CONTAINERID {:?} must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
                    self.container_id
                ),
            ));
        }
        if !self.ifname.is_empty() && !valid_ifname(&self.ifname) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_IFNAME {:?} is not a valid interface name (1-15 bytes, no '/', ':' or spaces)",
                    self.ifname
                ),
            ));
        }
        if !self.netns.is_empty()
            && (!Path::new(&self.netns).is_absolute()
                || self
                    .netns
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "\"'#\\".contains(c)))
        {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_NETNS {:?} must be an absolute path without spaces, quotes or '#'",
                    self.netns
                ),
            ));
        }
        Ok(())
    }
}

/// Host-side veth name: "crl" + 12 hex digits of FNV-1a(containerID/ifname)
/// (15 bytes, the kernel's limit).
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in container_id.bytes().chain([b'/']).chain(ifname.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("crl{:012x}", h >> 16)
}

/// Per-attachment state kept in `<dataDir>/<network>/<cid>_<ifname>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub host_if: String,
    /// "standalone" | "chained"
    pub mode: String,
    /// standalone: the IPAM plugin and the config version it was called with
    #[serde(default)]
    pub ipam: Option<(String, String)>,
    /// the network config (for IPAM release on DEL/GC)
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub cni_args: String,
    /// None while ADD is in progress
    #[serde(default)]
    pub result: Option<CniResult>,
}

fn state_dir(conf: &NetConf) -> PathBuf {
    conf.data_dir.join(&conf.name)
}

fn state_path(conf: &NetConf, cid: &str, ifname: &str) -> PathBuf {
    state_dir(conf).join(format!("{cid}_{ifname}.json"))
}

fn load_state(p: &Path) -> CniResultT<Option<Attachment>> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            CniError::new(code::DECODE, format!("corrupt state {}: {e}", p.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::new(
            code::IO,
            format!("reading {}: {e}", p.display()),
        )),
    }
}

fn save_state(p: &Path, a: &Attachment) -> CniResultT<()> {
    let io = |e: std::io::Error| CniError::new(code::IO, format!("writing {}: {e}", p.display()));
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    let tmp = p.with_extension("tmp");
    let b = serde_json::to_vec(a).map_err(|e| CniError::new(code::IO, e.to_string()))?;
    std::fs::write(&tmp, b).map_err(io)?;
    std::fs::rename(&tmp, p).map_err(io)
}

fn remove_state(p: &Path) -> CniResultT<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CniError::new(
            code::IO,
            format!("removing {}: {e}", p.display()),
        )),
        _ => Ok(()),
    }
}

/// Context of one invocation.
struct Ctx {
    env: Env,
    conf: NetConf,
}

/// Entry point: returns (stdout, exit code). Nothing else goes to stdout.
pub fn run(envmap: &HashMap<String, String>, stdin: &[u8]) -> (String, i32) {
    let log_override = envmap.get("CORRAL_CNI_LOG").map(PathBuf::from);
    // Until the config parsed: the override, else the config's own logFile (none
    // when that field is invalid — never a silent fallback to the default).
    let mut log_file = log_override
        .clone()
        .or_else(|| types::log_file_of_raw(stdin));
    let res = (|| -> CniResultT<Option<String>> {
        let env = Env::from_map(envmap)?;
        match env.command.as_str() {
            "VERSION" => {
                return Ok(Some(
                    serde_json::json!({
                        "cniVersion": SPEC_VERSION,
                        "supportedVersions": SUPPORTED_VERSIONS,
                    })
                    .to_string(),
                ));
            }
            "ADD" | "DEL" | "CHECK" | "GC" | "STATUS" => {}
            "" => return Err(CniError::new(code::INVALID_ENV, "CNI_COMMAND is not set")),
            c => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("CNI_COMMAND {c:?} is not ADD, DEL, CHECK, VERSION, STATUS or GC"),
                ));
            }
        }
        let conf = NetConf::parse(stdin)?;
        if log_override.is_none() {
            log_file = Some(conf.log_file.clone());
        }
        let ver = conf.cni_version.clone();
        let set_ver = |mut e: CniError| {
            e.cni_version = ver.clone();
            e
        };
        if conf.plugin_type != PLUGIN_TYPE {
            return Err(set_ver(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "network config type is {:?}, this plugin is {PLUGIN_TYPE:?}",
                    conf.plugin_type
                ),
            )));
        }
        let ctx = Ctx { env, conf };
        sys::log(
            &ctx.conf.log_file,
            &format!(
                "{} net={} cid={} ifname={} netns={} args={}",
                ctx.env.command,
                ctx.conf.name,
                ctx.env.container_id,
                ctx.env.ifname,
                ctx.env.netns,
                ctx.env.args
            ),
        );
        ctx.dispatch().map_err(set_ver)
    })();
    match res {
        Ok(out) => {
            if let Some(f) = &log_file {
                sys::log(f, "ok");
            }
            (out.unwrap_or_default(), 0)
        }
        Err(e) => {
            if let Some(f) = &log_file {
                sys::log(f, &format!("error: {e}"));
            }
            let code = e.code.clamp(1, 255) as i32;
            (serde_json::to_string(&e).unwrap_or_default(), code)
        }
    }
}

fn agent_list(socket: &Path) -> CniResultT<Vec<api::EndpointStatus>> {
    match api::call(socket, &Request::List) {
        Ok(Response::Endpoints { endpoints, .. }) => Ok(endpoints),
        Ok(Response::Error { message }) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("corral-agent is not ready: {message}"),
        )),
        Ok(r) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("corral-agent gave an unexpected answer: {r:?}"),
        )),
        Err(e) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("corral-agent is not reachable at {}", socket.display()),
        )
        .details(format!("{e:#}"))),
    }
}

/// Cheap readiness probe: the agent accepts connections on its socket.
fn agent_ready(socket: &Path) -> CniResultT<()> {
    std::os::unix::net::UnixStream::connect(socket)
        .map(drop)
        .map_err(|e| {
            CniError::new(
                code::TRY_AGAIN_LATER,
                format!("corral-agent is not reachable at {}", socket.display()),
            )
            .details(e.to_string())
        })
}

fn agent_deregister(socket: &Path, ifname: &str) -> CniResultT<()> {
    match api::call(
        socket,
        &Request::Deregister {
            ifname: ifname.into(),
        },
    ) {
        Ok(Response::Error { message }) if message.contains("is not registered") => Ok(()),
        Ok(Response::Error { message }) => Err(CniError::new(
            code::AGENT_REJECTED,
            format!("corral-agent deregister {ifname}: {message}"),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("corral-agent is not reachable at {}", socket.display()),
        )
        .details(format!("{e:#}"))),
    }
}

fn agent_register(socket: &Path, spec: EndpointSpec) -> CniResultT<()> {
    match api::call(socket, &Request::Register { endpoint: spec }) {
        Ok(Response::Error { message }) => Err(CniError::new(
            code::AGENT_REJECTED,
            format!("corral-agent rejected the endpoint: {message}"),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("corral-agent is not reachable at {}", socket.display()),
        )
        .details(format!("{e:#}"))),
    }
}

fn link_gone(e: &CniError) -> bool {
    e.msg.contains("Cannot find device")
        || e.msg.contains("does not exist")
        || e.msg.contains("No such device")
}

/// Pod side of the standalone wiring, run in the pod netns: lo up, the
/// pod addresses (/32, /128), link up, default routes via the link-local
/// gateways. Returns the pod interface's MAC.
fn pod_side_links(ifname: &str, addrs: &[IpAddr], gw4: IpAddr, gw6: IpAddr) -> CniResultT<String> {
    let mut nl = Nl::open()?;
    let pl = nl.link(ifname, 0)?.ok_or_else(|| {
        CniError::new(
            code::LINK,
            format!("{ifname} is missing in the pod netns after creation"),
        )
    })?;
    let mut v = vec![netlink::link_up("lo")];
    for a in addrs {
        v.push(match a {
            IpAddr::V4(_) => netlink::addr(pl.index, *a, 32, netlink::RT_SCOPE_UNIVERSE, false),
            IpAddr::V6(_) => netlink::addr(pl.index, *a, 128, netlink::RT_SCOPE_UNIVERSE, true),
        });
    }
    v.push(netlink::link_up(ifname));
    let any4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    let any6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
    if addrs.iter().any(|a| a.is_ipv4()) {
        v.push(netlink::route(
            any4,
            0,
            Some(gw4),
            pl.index,
            netlink::RT_SCOPE_UNIVERSE,
            true,
        ));
    }
    if addrs.iter().any(|a| a.is_ipv6()) {
        v.push(netlink::route(
            any6,
            0,
            Some(gw6),
            pl.index,
            netlink::RT_SCOPE_UNIVERSE,
            false,
        ));
    }
    nl.run(v)?;
    Ok(pl.mac)
}

impl Ctx {
    fn dispatch(&self) -> CniResultT<Option<String>> {
        match self.env.command.as_str() {
            "ADD" => {
                self.env
                    .require(&["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"])?;
                let r = self.add()?;
                Ok(Some(r.to_string()))
            }
            "DEL" => {
                self.env
                    .require(&["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"])?;
                self.del()?;
                Ok(None)
            }
            "CHECK" => {
                self.env
                    .require(&["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"])?;
                self.check()?;
                Ok(None)
            }
            "GC" => {
                self.env.require(&["CNI_PATH"])?;
                self.gc()?;
                Ok(None)
            }
            _ => {
                self.status()?;
                Ok(None)
            }
        }
    }

    /// STATUS: the agent must answer (it attaches every new pod), and the
    /// IPAM plugin must exist; an IPAM plugin speaking CNI 1.1.0 gets
    /// STATUS too, its 50/51 passed through (other failures → 50).
    /// Existing pods keep their enforcement while the agent is down
    /// (pinned maps, attached programs), hence 50, not 51, for the agent.
    fn status(&self) -> CniResultT<()> {
        agent_list(&self.conf.agent_socket)
            .map_err(|e| CniError::new(code::NOT_AVAILABLE, e.msg.clone()).details(e.details))?;
        let unavailable = |e: CniError| {
            let c = if e.code == code::NOT_AVAILABLE_LIMITED {
                code::NOT_AVAILABLE_LIMITED
            } else {
                code::NOT_AVAILABLE
            };
            CniError::new(c, e.msg).details(e.details)
        };
        if let Some(plugin) = self.ipam_v11("STATUS").map_err(unavailable)? {
            let env = DelegateEnv {
                command: "STATUS",
                container_id: "",
                netns: "",
                ifname: "",
                args: "",
                path: &self.env.path,
            };
            sys::exec_plugin(&plugin, &env, &self.conf.delegate_config(SPEC_VERSION, &[]))
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// The IPAM plugin of a standalone config if it supports CNI 1.1.0
    /// (the only version with GC and STATUS); otherwise None, logged
    /// (Debian's host-local 1.1.1 stops at 1.0.0).
    fn ipam_v11(&self, command: &str) -> CniResultT<Option<PathBuf>> {
        let Some(t) = &self.conf.ipam_type else {
            return Ok(None);
        };
        if self.chained() {
            return Ok(None);
        }
        let plugin = sys::find_plugin(&self.env.path, t)?;
        let sup = self.plugin_versions(&plugin)?;
        if sup.iter().any(|v| v == SPEC_VERSION) {
            return Ok(Some(plugin));
        }
        sys::log(
            &self.conf.log_file,
            &format!(
                "IPAM {command} skipped: {} does not support CNI {SPEC_VERSION} (it supports {sup:?})",
                plugin.display()
            ),
        );
        Ok(None)
    }

    fn chained(&self) -> bool {
        self.conf.prev_result.is_some()
    }

    fn pod_identity(&self) -> (String, String) {
        let a = &self.env.cni_args;
        let ns = a
            .get("K8S_POD_NAMESPACE")
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| "default".into());
        let name = a
            .get("K8S_POD_NAME")
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| {
                let c = &self.env.container_id;
                c[..c.len().min(12)].to_string()
            });
        (ns, name)
    }

    fn endpoint_spec(&self, host_if: &str, ips: Vec<IpAddr>) -> EndpointSpec {
        let (namespace, name) = self.pod_identity();
        let lim = |rate: u64, burst: u64| {
            (rate > 0).then_some(LimitSpec {
                rate_bps: rate,
                burst_bytes: (burst > 0).then_some(burst / 8),
            })
        };
        let (ingress, egress) = match &self.conf.runtime.bandwidth {
            Some(b) => (
                lim(b.ingress_rate, b.ingress_burst),
                lim(b.egress_rate, b.egress_burst),
            ),
            None => (None, None),
        };
        EndpointSpec {
            ifname: host_if.into(),
            netns: self.env.netns.clone(),
            ips,
            namespace,
            name,
            annotations: self.conf.runtime.annotations.clone(),
            ingress,
            egress,
            ..Default::default()
        }
    }

    /// Fixed IPs: runtimeConfig.ips (capability `ips`) plus the
    /// `corral.io/ips` annotation.
    fn fixed_ips(&self) -> CniResultT<Vec<String>> {
        let mut v = self.conf.runtime.ips.clone();
        if let Some(a) = self.conf.runtime.annotations.get(ANN_FIXED_IPS) {
            for s in a.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if s.parse::<IpAddr>().is_err() && parse_cidr(s).is_none() {
                    return Err(CniError::new(
                        code::INVALID_CONFIG,
                        format!("annotation {ANN_FIXED_IPS}: {s:?} is not an IP address"),
                    ));
                }
                if !v.iter().any(|x| x == s) {
                    v.push(s.to_string());
                }
            }
        }
        Ok(v)
    }

    fn validate_bandwidth(&self) -> CniResultT<()> {
        if let Some(b) = &self.conf.runtime.bandwidth {
            for (n, r, bu) in [
                ("ingress", b.ingress_rate, b.ingress_burst),
                ("egress", b.egress_rate, b.egress_burst),
            ] {
                if r == 0 && bu > 0 {
                    return Err(CniError::new(
                        code::INVALID_CONFIG,
                        format!("runtimeConfig.bandwidth: {n}Burst without {n}Rate"),
                    ));
                }
            }
        }
        for k in [api::ANN_INGRESS_BW, api::ANN_EGRESS_BW] {
            if let Some(v) = self.conf.runtime.annotations.get(k) {
                api::parse_bandwidth(v).map_err(|e| {
                    CniError::new(code::INVALID_CONFIG, format!("annotation {k}: {e:#}"))
                })?;
            }
        }
        Ok(())
    }

    /// Version to use with a delegate: the config's if the plugin supports
    /// it, else the highest common one (reference plugins stop at 1.0.0).
    fn delegate_version(&self, plugin: &Path) -> CniResultT<String> {
        let want = self.conf.cni_version.as_str();
        if want != "1.1.0" {
            return Ok(want.into());
        }
        let sup = self.plugin_versions(plugin)?;
        for v in SUPPORTED_VERSIONS.iter().rev() {
            if sup.iter().any(|s| s == v) {
                return Ok((*v).into());
            }
        }
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "IPAM plugin {} supports none of {:?} (it supports {sup:?})",
                plugin.display(),
                SUPPORTED_VERSIONS
            ),
        ))
    }

    /// The `supportedVersions` a plugin reports for VERSION, cached in
    /// `<dataDir>/plugin-versions.json` by path + inode + size + mtime, so
    /// the ADD path does not exec the IPAM plugin twice (a replaced or
    /// updated binary is asked again). The cache is written atomically
    /// (temp file + rename); losing it only costs one exec.
    fn plugin_versions(&self, plugin: &Path) -> CniResultT<Vec<String>> {
        use std::os::unix::fs::MetadataExt;
        let cache = self.conf.data_dir.join("plugin-versions.json");
        let key = std::fs::metadata(plugin).ok().map(|m| {
            format!(
                "{}:{}:{}:{}.{}",
                plugin.display(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec()
            )
        });
        let mut known: BTreeMap<String, Vec<String>> = std::fs::read(&cache)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if let Some(v) = key.as_ref().and_then(|k| known.get(k)) {
            return Ok(v.clone());
        }
        let sup = self.exec_version(plugin)?;
        if let Some(k) = key {
            let prefix = format!("{}:", plugin.display());
            known.retain(|x, _| !x.starts_with(&prefix));
            known.insert(k, sup.clone());
            let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
            let ok = std::fs::create_dir_all(&self.conf.data_dir).is_ok()
                && std::fs::write(&tmp, serde_json::to_vec(&known).unwrap_or_default()).is_ok()
                && std::fs::rename(&tmp, &cache).is_ok();
            if !ok {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(sup)
    }

    fn exec_version(&self, plugin: &Path) -> CniResultT<Vec<String>> {
        let env = DelegateEnv {
            command: "VERSION",
            container_id: "",
            netns: "",
            ifname: "",
            args: "",
            path: &self.env.path,
        };
        let out = sys::exec_plugin(plugin, &env, br#"{"cniVersion":"1.1.0"}"#)?;
        Ok(out
            .as_ref()
            .and_then(|v| v.get("supportedVersions"))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default())
    }

    /// Calls the IPAM plugin for this invocation's container/interface.
    fn ipam_exec(
        &self,
        command: &str,
        plugin_name: &str,
        version: &str,
        ips: &[String],
    ) -> CniResultT<Option<Value>> {
        let plugin = sys::find_plugin(&self.env.path, plugin_name)?;
        let e = &self.env;
        let env = DelegateEnv {
            command,
            container_id: &e.container_id,
            netns: &e.netns,
            ifname: &e.ifname,
            args: &e.args,
            path: &e.path,
        };
        sys::exec_plugin(&plugin, &env, &self.conf.delegate_config(version, ips))
    }

    // ---------------------------------------------------------------- ADD

    fn add(&self) -> CniResultT<Value> {
        // every permanent configuration error first, before any agent
        // contact: code 11 only means "the agent is unreachable"
        self.validate_add()?;
        let lock = Lock::take(&self.conf.data_dir, LOCK_WAIT)?;
        // never start an unprotected pod: the agent must be up (a later
        // failure to register rolls the attachment back as well)
        agent_ready(&self.conf.agent_socket)?;
        let r = if self.chained() {
            self.add_chained()?
        } else {
            let r = self.add_standalone()?;
            serde_json::to_value(r.to_version(&self.conf.cni_version))
                .map_err(|e| CniError::new(code::IO, e.to_string()))?
        };
        drop(lock);
        Ok(r)
    }

    /// The permanent errors of an ADD, found without side effects:
    /// bandwidth and annotations, chained prevResult, standalone IPAM
    /// config (field by field) and the IPAM plugin in CNI_PATH.
    fn validate_add(&self) -> CniResultT<()> {
        self.validate_bandwidth()?;
        if let Some(prev) = &self.conf.prev_result {
            CniResult::parse(prev)?;
            return Ok(());
        }
        let Some(ipam_type) = &self.conf.ipam_type else {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "standalone mode needs \"ipam\" (e.g. {\"type\":\"host-local\",...}); chained mode needs prevResult",
            ));
        };
        ipam_conf::validate(self.conf.raw.get("ipam").unwrap_or(&Value::Null))?;
        self.fixed_ips()?;
        sys::find_plugin(&self.env.path, ipam_type)?;
        Ok(())
    }

    fn add_chained(&self) -> CniResultT<Value> {
        let prev = self.conf.prev_result.clone().unwrap_or(Value::Null);
        let pr = CniResult::parse(&prev)?;
        let host_if = self.find_host_peer()?;
        // addresses of the pod's interface (or all, when not indexed)
        let idx = pr
            .interfaces
            .iter()
            .position(|i| i.name == self.env.ifname && !i.sandbox.is_empty());
        let ips: Vec<IpAddr> = pr
            .ips
            .iter()
            .filter(|ip| idx.is_none() || ip.interface.is_none() || ip.interface == idx)
            .filter_map(|ip| parse_cidr(&ip.address).map(|(a, _)| a))
            .collect();
        let sp = state_path(&self.conf, &self.env.container_id, &self.env.ifname);
        if let Some(old) = load_state(&sp)?
            && old.host_if != host_if
        {
            agent_deregister(&self.conf.agent_socket, &old.host_if)?;
        }
        let st = Attachment {
            container_id: self.env.container_id.clone(),
            ifname: self.env.ifname.clone(),
            netns: self.env.netns.clone(),
            host_if: host_if.clone(),
            mode: "chained".into(),
            ipam: None,
            config: Value::Null,
            cni_args: self.env.args.clone(),
            result: Some(pr),
        };
        // state first: a crash after registering is cleaned up by DEL/GC
        save_state(&sp, &st)?;
        if let Err(e) = agent_register(&self.conf.agent_socket, self.endpoint_spec(&host_if, ips)) {
            let _ = remove_state(&sp);
            return Err(e);
        }
        // pass prevResult through, in the config's version
        let mut out = prev;
        if let Value::Object(m) = &mut out {
            m.insert(
                "cniVersion".into(),
                Value::String(self.conf.cni_version.clone()),
            );
        }
        Ok(out)
    }

    /// The host-side peer of the pod's veth: the pod interface's link
    /// index names it (works after bridge, ptp, Calico, Flannel).
    fn find_host_peer(&self) -> CniResultT<String> {
        let ns = PathBuf::from(&self.env.netns);
        let ifname = self.env.ifname.clone();
        let pod = sys::in_netns(&ns, move || Nl::open()?.link(&ifname, 0))?;
        let no = |m: String| CniError::new(code::NO_HOST_INTERFACE, m);
        let Some(pod) = pod else {
            return Err(no(format!(
                "chained mode: interface {} does not exist in {}",
                self.env.ifname, self.env.netns
            )));
        };
        if pod.kind != "veth" {
            return Err(no(format!(
                "chained mode: pod interface {} is {:?}, corral-cni needs a veth",
                self.env.ifname, pod.kind
            )));
        }
        let Some(peer) = pod.link.filter(|i| *i > 0) else {
            return Err(no(format!(
                "chained mode: {} has no peer link index",
                self.env.ifname
            )));
        };
        Nl::open()?
            .link("", peer)?
            .map(|l| l.name)
            .ok_or_else(|| {
                no(format!(
                    "chained mode: host-side peer (ifindex {peer}) of {} not found in this network namespace",
                    self.env.ifname
                ))
            })
    }

    fn add_standalone(&self) -> CniResultT<CniResult> {
        let Some(ipam_type) = self.conf.ipam_type.clone() else {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "standalone mode needs \"ipam\" (e.g. {\"type\":\"host-local\",...}); chained mode needs prevResult",
            ));
        };
        let fixed = self.fixed_ips()?;
        let e = &self.env;
        if std::fs::metadata(&e.netns).is_err() {
            return Err(CniError::new(
                code::CONTAINER_UNKNOWN,
                format!("CNI_NETNS {} does not exist", e.netns),
            ));
        }
        let host_if = host_ifname(&e.container_id, &e.ifname);
        let sp = state_path(&self.conf, &e.container_id, &e.ifname);
        // retry of an ADD: same result if the attachment is intact
        if let Some(old) = load_state(&sp)? {
            if let Some(r) = &old.result
                && old.netns == e.netns
                && sys::link_show(None, &old.host_if)?.is_some()
                && sys::link_show(Some(Path::new(&e.netns)), &e.ifname)?.is_some()
            {
                let ips = r
                    .ips
                    .iter()
                    .filter_map(|i| parse_cidr(&i.address).map(|(a, _)| a))
                    .collect();
                agent_register(
                    &self.conf.agent_socket,
                    self.endpoint_spec(&old.host_if, ips),
                )?;
                return Ok(r.clone());
            }
            self.teardown(&old)?;
        }
        let plugin = sys::find_plugin(&e.path, &ipam_type)?;
        let ipam_ver = self.delegate_version(&plugin)?;
        let mut st = Attachment {
            container_id: e.container_id.clone(),
            ifname: e.ifname.clone(),
            netns: e.netns.clone(),
            host_if: host_if.clone(),
            mode: "standalone".into(),
            ipam: Some((ipam_type.clone(), ipam_ver.clone())),
            config: Value::Object(self.conf.raw.clone()),
            cni_args: e.args.clone(),
            result: None,
        };
        // recorded before any side effect, so a crash is cleaned up by
        // the next ADD/DEL/GC
        save_state(&sp, &st)?;
        match self.setup_standalone(&st, &ipam_type, &ipam_ver, &fixed) {
            Ok(r) => {
                st.result = Some(r.clone());
                if let Err(err) = save_state(&sp, &st) {
                    let _ = self.teardown(&st);
                    return Err(err);
                }
                Ok(r)
            }
            Err((err, ipam_done)) => {
                sys::log(
                    &self.conf.log_file,
                    &format!("ADD failed, rolling back: {err}"),
                );
                if !ipam_done {
                    // the IPAM plugin failed: it allocated nothing
                    st.ipam = None;
                }
                if let Err(e2) = self.teardown(&st) {
                    sys::log(&self.conf.log_file, &format!("rollback: {e2}"));
                }
                Err(err)
            }
        }
    }

    fn setup_standalone(
        &self,
        st: &Attachment,
        ipam_type: &str,
        ipam_ver: &str,
        fixed: &[String],
    ) -> Result<CniResult, (CniError, bool)> {
        let t = std::time::Instant::now();
        let ipam = self
            .ipam_exec("ADD", ipam_type, ipam_ver, fixed)
            .map_err(|e| (e, false))?;
        sys::log(&self.conf.log_file, &format!("ipam ADD {:?}", t.elapsed()));
        self.setup_links(st, ipam_type, ipam).map_err(|e| (e, true))
    }

    fn setup_links(
        &self,
        st: &Attachment,
        ipam_type: &str,
        ipam: Option<Value>,
    ) -> CniResultT<CniResult> {
        let e = &self.env;
        let ipam = ipam
            .ok_or_else(|| CniError::new(code::IPAM, format!("{ipam_type} returned no result")))?;
        let ipam = CniResult::parse(&ipam)?;
        let addrs: Vec<IpAddr> = ipam
            .ips
            .iter()
            .filter_map(|i| parse_cidr(&i.address).map(|(a, _)| a))
            .collect();
        if addrs.is_empty() {
            return Err(CniError::new(
                code::IPAM,
                format!("{ipam_type} returned no IP address"),
            ));
        }
        let has4 = addrs.iter().any(|a| a.is_ipv4());
        let has6 = addrs.iter().any(|a| a.is_ipv6());
        let host = &st.host_if;
        let mtu = self.conf.mtu;
        // node side: forwarding for pod traffic
        if has4 {
            sys::sysctl("net.ipv4.ip_forward", "1")?;
        }
        if has6 {
            sys::sysctl("net.ipv6.conf.all.forwarding", "1")?;
        }
        let gw4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 1, 1));
        let gw6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
        // host side first, in-process rtnetlink: veth (peer created
        // directly in the pod netns), then in one batch the link-local
        // gateway, link up and one host route per pod address
        let ns_file = std::fs::File::open(&e.netns).map_err(|err| {
            CniError::new(
                code::CONTAINER_UNKNOWN,
                format!("network namespace {}: {err}", e.netns),
            )
        })?;
        let mut nl = Nl::open()?;
        let mk = |nl: &mut Nl| {
            nl.run(vec![netlink::veth(
                host,
                &e.ifname,
                mtu,
                std::os::fd::AsFd::as_fd(&ns_file),
            )])
        };
        match mk(&mut nl) {
            Err(err) if err.msg.contains("File exists") && nl.link(host, 0)?.is_some() => {
                // a leftover of a crashed ADD with our derived name
                nl.run(vec![netlink::link_del(host)])?;
                mk(&mut nl)?;
            }
            r => r?,
        }
        drop(ns_file);
        let hl = nl.link(host, 0)?.ok_or_else(|| {
            CniError::new(code::LINK, format!("{host} vanished right after creation"))
        })?;
        let mut hc = vec![netlink::addr(
            hl.index,
            gw4,
            32,
            netlink::RT_SCOPE_LINK,
            false,
        )];
        if has6 {
            hc.push(netlink::addr(
                hl.index,
                gw6,
                64,
                netlink::RT_SCOPE_LINK,
                true,
            ));
        }
        hc.push(netlink::link_up(host));
        for a in &addrs {
            hc.push(match a {
                IpAddr::V4(_) => {
                    netlink::route(*a, 32, None, hl.index, netlink::RT_SCOPE_LINK, false)
                }
                IpAddr::V6(_) => {
                    netlink::route(*a, 128, None, hl.index, netlink::RT_SCOPE_UNIVERSE, false)
                }
            });
        }
        nl.run(hc)?;
        let host_mac = hl.mac;
        // pod side and agent registration overlap (the registration only
        // needs the host end; no container process runs before ADD returns)
        let ns = PathBuf::from(&e.netns);
        let (ifname, paddrs) = (e.ifname.clone(), addrs.clone());
        let pod_side = std::thread::spawn(move || {
            sys::in_netns(&ns, move || pod_side_links(&ifname, &paddrs, gw4, gw6))
        });
        let t = std::time::Instant::now();
        let reg = agent_register(
            &self.conf.agent_socket,
            self.endpoint_spec(host, addrs.clone()),
        );
        sys::log(
            &self.conf.log_file,
            &format!("agent register {:?}", t.elapsed()),
        );
        let pod_mac = pod_side
            .join()
            .unwrap_or_else(|_| Err(CniError::new(code::IO, "pod-side worker failed")));
        reg?;
        let pod_mac = pod_mac?;
        let mut r = CniResult {
            cni_version: SPEC_VERSION.into(),
            interfaces: vec![
                Interface {
                    name: host.clone(),
                    mac: host_mac,
                    mtu: Some(mtu),
                    sandbox: String::new(),
                },
                Interface {
                    name: e.ifname.clone(),
                    mac: pod_mac,
                    mtu: Some(mtu),
                    sandbox: e.netns.clone(),
                },
            ],
            dns: ipam.dns.clone(),
            ..Default::default()
        };
        for a in &addrs {
            let (p, gw) = if a.is_ipv4() { (32, gw4) } else { (128, gw6) };
            r.ips.push(IpConfig {
                version: None,
                address: format!("{a}/{p}"),
                gateway: Some(gw),
                interface: Some(1),
            });
        }
        if has4 {
            r.routes.push(Route {
                dst: "0.0.0.0/0".into(),
                gw: Some(gw4),
            });
        }
        if has6 {
            r.routes.push(Route {
                dst: "::/0".into(),
                gw: Some(gw6),
            });
        }
        Ok(r)
    }

    /// Removes everything an attachment may have created, in reverse
    /// order; each step tolerates "already gone".
    /// Agent deregistration runs alongside the local steps (it unpins the
    /// links by their pins, independent of the interface still existing);
    /// the state is removed only when every step succeeded, so a failed
    /// teardown (e.g. agent down → code 11) is completed by the retry.
    fn teardown(&self, st: &Attachment) -> CniResultT<()> {
        let sock = self.conf.agent_socket.clone();
        let hif = st.host_if.clone();
        let dereg = std::thread::spawn(move || agent_deregister(&sock, &hif));
        let local = self.teardown_local(st);
        let d = dereg
            .join()
            .unwrap_or_else(|_| Err(CniError::new(code::IO, "deregister worker failed")));
        d?;
        local?;
        remove_state(&state_path(&self.conf, &st.container_id, &st.ifname))
    }

    fn teardown_local(&self, st: &Attachment) -> CniResultT<()> {
        if st.mode == "standalone" {
            match Nl::open().and_then(|mut nl| nl.run(vec![netlink::link_del(&st.host_if)])) {
                Err(e) if !link_gone(&e) => return Err(e),
                _ => {}
            }
            if let Some((t, v)) = &st.ipam {
                // the stored config: release exactly what was allocated
                let conf = match &st.config {
                    Value::Object(m) => NetConf::parse(&serde_json::to_vec(m).unwrap_or_default())
                        .unwrap_or_else(|_| self.conf.clone()),
                    _ => self.conf.clone(),
                };
                let plugin = sys::find_plugin(&self.env.path, t)?;
                let env = DelegateEnv {
                    command: "DEL",
                    container_id: &st.container_id,
                    netns: &st.netns,
                    ifname: &st.ifname,
                    args: &st.cni_args,
                    path: &self.env.path,
                };
                sys::exec_plugin(&plugin, &env, &conf.delegate_config(v, &[]))?;
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- DEL

    fn del(&self) -> CniResultT<()> {
        let _lock = Lock::take(&self.conf.data_dir, LOCK_WAIT)?;
        let e = &self.env;
        let sp = state_path(&self.conf, &e.container_id, &e.ifname);
        let st = match load_state(&sp)? {
            Some(s) => s,
            None if self.chained() => return Ok(()),
            None => {
                // no record (e.g. ADD never ran or state lost): release by
                // the derived names anyway; all steps are idempotent
                let ipam = match &self.conf.ipam_type {
                    Some(t) => {
                        let plugin = sys::find_plugin(&e.path, t)?;
                        Some((t.clone(), self.delegate_version(&plugin)?))
                    }
                    None => None,
                };
                Attachment {
                    container_id: e.container_id.clone(),
                    ifname: e.ifname.clone(),
                    netns: e.netns.clone(),
                    host_if: host_ifname(&e.container_id, &e.ifname),
                    mode: "standalone".into(),
                    ipam,
                    config: Value::Object(self.conf.raw.clone()),
                    cni_args: e.args.clone(),
                    result: None,
                }
            }
        };
        self.teardown(&st)
    }

    // ---------------------------------------------------------------- CHECK

    fn check(&self) -> CniResultT<()> {
        let e = &self.env;
        let sp = state_path(&self.conf, &e.container_id, &e.ifname);
        let fail = |m: String| CniError::new(code::CHECK_FAILED, m);
        let Some(st) = load_state(&sp)? else {
            return Err(CniError::new(
                code::CONTAINER_UNKNOWN,
                format!(
                    "no attachment for container {} interface {} in network {}",
                    e.container_id, e.ifname, self.conf.name
                ),
            ));
        };
        let Some(res) = &st.result else {
            return Err(fail("ADD did not complete for this attachment".into()));
        };
        if sys::link_show(None, &st.host_if)?.is_none() {
            return Err(fail(format!("host interface {} is missing", st.host_if)));
        }
        let eps = agent_list(&self.conf.agent_socket)?;
        if !eps.iter().any(|x| x.spec.ifname == st.host_if) {
            return Err(fail(format!(
                "{} is not registered with corral-agent",
                st.host_if
            )));
        }
        if st.mode == "chained" {
            return Ok(());
        }
        let ns = PathBuf::from(&e.netns);
        let ifname = e.ifname.clone();
        let (addrs, routes) = sys::in_netns(&ns, move || {
            let a = sys::ip_batch(&[format!("addr show dev {ifname}")], true)?;
            let r4 = sys::ip_args(&["-j", "-4", "route", "show", "default"])?;
            let r6 = sys::ip_args(&["-j", "-6", "route", "show", "default"])?;
            Ok((a, format!("{r4}\n{r6}")))
        })
        .map_err(|err| fail(format!("pod interface {}: {}", e.ifname, err.msg)))?;
        let addrs: Vec<Value> = sys::first_json(&addrs)
            .and_then(|v| v["addr_info"].as_array().cloned())
            .unwrap_or_default();
        for ip in &res.ips {
            let Some((a, p)) = parse_cidr(&ip.address) else {
                continue;
            };
            let found = addrs.iter().any(|x| {
                x["local"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) == Some(a)
                    && x["prefixlen"].as_u64() == Some(p as u64)
            });
            if !found {
                return Err(fail(format!(
                    "address {} is missing on {} in {}",
                    ip.address, e.ifname, e.netns
                )));
            }
        }
        let routes: Vec<Value> = routes
            .lines()
            .filter_map(|l| serde_json::from_str::<Vec<Value>>(l).ok())
            .flatten()
            .collect();
        for r in &res.routes {
            let Some(gw) = r.gw else { continue };
            let ok = routes.iter().any(|x| {
                x["dst"].as_str() == Some("default")
                    && x["gateway"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) == Some(gw)
                    && x["dev"].as_str() == Some(e.ifname.as_str())
            });
            if !ok {
                return Err(fail(format!(
                    "route {} via {gw} is missing in {}",
                    r.dst, e.netns
                )));
            }
        }
        if let Some((t, v)) = &st.ipam {
            self.ipam_exec("CHECK", t, v, &[])?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- GC

    fn gc(&self) -> CniResultT<()> {
        let Some(valid) = &self.conf.valid_attachments else {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "GC: cni.dev/valid-attachments is required",
            ));
        };
        let _lock = Lock::take(&self.conf.data_dir, LOCK_WAIT)?;
        agent_list(&self.conf.agent_socket)?;
        let dir = state_dir(&self.conf);
        let rd = match std::fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(CniError::new(
                    code::IO,
                    format!("reading {}: {e}", dir.display()),
                ));
            }
        };
        let mut first_err = None;
        for ent in rd.flatten() {
            let p = ent.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let Ok(Some(st)) = load_state(&p) else {
                continue;
            };
            if valid
                .iter()
                .any(|v| v.container_id == st.container_id && v.ifname == st.ifname)
            {
                continue;
            }
            sys::log(
                &self.conf.log_file,
                &format!("GC: removing {} {}", st.container_id, st.ifname),
            );
            if let Err(e) = self.teardown(&st) {
                first_err.get_or_insert(e);
            }
        }
        // then the IPAM plugin's own GC with the same valid list (releases
        // reservations Corral has no state for, e.g. after a lost state
        // file), when it speaks CNI 1.1.0
        match self.ipam_v11("GC") {
            Ok(Some(plugin)) => {
                let env = DelegateEnv {
                    command: "GC",
                    container_id: "",
                    netns: "",
                    ifname: "",
                    args: "",
                    path: &self.env.path,
                };
                let conf = self.conf.gc_delegate_config(SPEC_VERSION);
                if let Err(e) = sys::exec_plugin(&plugin, &env, &conf) {
                    first_err.get_or_insert(e);
                }
            }
            Ok(None) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn host_ifname_is_stable_short_and_distinct() {
        let a = host_ifname("abc", "eth0");
        assert_eq!(a, host_ifname("abc", "eth0"));
        assert_eq!(a.len(), 15);
        assert!(valid_ifname(&a));
        assert_ne!(a, host_ifname("abc", "eth1"));
        assert_ne!(a, host_ifname("abd", "eth0"));
    }

    #[test]
    fn env_and_args_validation() {
        let e = Env::from_map(&env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=a"),
        ]))
        .unwrap();
        assert_eq!(e.cni_args["K8S_POD_NAME"], "a");
        let bad = Env::from_map(&env(&[("CNI_ARGS", "K8S_POD_NAME")])).unwrap_err();
        assert_eq!(bad.code, code::INVALID_ENV);
        let mut e = e;
        e.container_id = "bad/id".into();
        assert_eq!(e.require(&[]).unwrap_err().code, code::INVALID_ENV);
        e.container_id = "ok".into();
        assert!(e.require(&["CNI_NETNS"]).is_err(), "missing netns");
        assert_eq!(
            sys::delegate_args("K8S_POD_NAME=a"),
            "IgnoreUnknown=1;K8S_POD_NAME=a"
        );
        assert_eq!(
            sys::delegate_args("IgnoreUnknown=1;X=y"),
            "IgnoreUnknown=1;X=y"
        );
        assert_eq!(sys::delegate_args(""), "");
    }

    #[test]
    fn run_reports_errors_as_json_with_exit_code() {
        let (out, rc) = run(&env(&[("CNI_COMMAND", "VERSION")]), b"");
        assert_eq!(rc, 0);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["supportedVersions"][2], "1.1.0");
        let (out, rc) = run(
            &env(&[("CNI_COMMAND", "ADD"), ("CORRAL_CNI_LOG", "/dev/null")]),
            b"[1,2]",
        );
        assert_eq!(rc, 6);
        let e: CniError = serde_json::from_str(&out).unwrap();
        assert_eq!(e.code, 6);
        let (out, rc) = run(
            &env(&[("CNI_COMMAND", "ADD"), ("CORRAL_CNI_LOG", "/dev/null")]),
            br#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#,
        );
        assert_eq!(rc, 7, "{out}");
    }
}
