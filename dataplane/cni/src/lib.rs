//! `corral-cni`: a CNI 1.1.0 plugin (also 0.4.0 and 1.0.0 configs) that
//! wires pods to the Corral data plane, standalone (own veth + delegated
//! IPAM) or chained after another plugin (registers the pod's host-side
//! veth found through `prevResult`). See ARCHITECTURE.md (CNI plugin).

mod add;
mod check;
mod del;
mod gc;
mod ipam;
pub mod ipam_conf;
mod status;
pub mod sys;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use corral_dataplane_abi::api::{self, EndpointSpec, LimitSpec, Request, Response};
use corral_dataplane_abi::netlink::{self, Nl};
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
