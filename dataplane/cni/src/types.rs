//! CNI spec types (1.1.0, also reading/writing 0.4.0 and 1.0.0): network
//! configuration, results and errors.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const SPEC_VERSION: &str = "1.1.0";
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
pub const PLUGIN_TYPE: &str = "corral-cni";

/// Spec error codes (CNI 1.1.0 "Error" section) and Corral's own (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const CONTAINER_UNKNOWN: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot service ADD
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: cannot service ADD, and existing pods may have limited
    /// connectivity
    pub const NOT_AVAILABLE_LIMITED: u32 = 51;
    /// a kernel/link operation (iproute2) failed
    pub const LINK: u32 = 100;
    /// corral-agent rejected the endpoint
    pub const AGENT_REJECTED: u32 = 101;
    /// the delegated IPAM plugin failed without a spec error of its own
    pub const IPAM: u32 = 102;
    /// CHECK found the attachment differs from what ADD set up
    pub const CHECK_FAILED: u32 = 103;
    /// chained mode: no host-side interface found for the pod
    pub const NO_HOST_INTERFACE: u32 = 104;
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            cni_version: SPEC_VERSION.into(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    pub fn details(mut self, d: impl Into<String>) -> Self {
        self.details = d.into();
        self
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "code {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

pub type CniResultT<T> = std::result::Result<T, CniError>;

impl From<corral_dataplane_abi::netlink::NlError> for CniError {
    fn from(e: corral_dataplane_abi::netlink::NlError) -> Self {
        use corral_dataplane_abi::netlink::NlErrorKind;
        let c = match e.kind {
            NlErrorKind::Io => code::IO,
            NlErrorKind::Link => code::LINK,
        };
        CniError::new(c, e.msg)
    }
}

/// The reference bandwidth plugin's runtimeConfig: rates in bit/s,
/// bursts in bits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    #[serde(rename = "ingressRate", default)]
    pub ingress_rate: u64,
    #[serde(rename = "ingressBurst", default)]
    pub ingress_burst: u64,
    #[serde(rename = "egressRate", default)]
    pub egress_rate: u64,
    #[serde(rename = "egressBurst", default)]
    pub egress_burst: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The parts of runtimeConfig Corral uses (capabilities `ips`,
/// `bandwidth`, `io.kubernetes.cri.pod-annotations`); others are ignored.
#[derive(Clone, Debug, Default)]
pub struct RuntimeConfig {
    pub ips: Vec<String>,
    pub bandwidth: Option<Bandwidth>,
    pub annotations: BTreeMap<String, String>,
}

/// A parsed network configuration. `raw` keeps the whole object (with
/// fields Corral does not know) for delegation to IPAM plugins.
#[derive(Clone, Debug)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    pub ipam_type: Option<String>,
    pub mtu: u32,
    pub runtime: RuntimeConfig,
    pub prev_result: Option<Value>,
    pub agent_socket: PathBuf,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
    pub valid_attachments: Option<Vec<Attachment>>,
    pub raw: Map<String, Value>,
}

pub const DEFAULT_DATA_DIR: &str = "/var/lib/corral-cni";
pub const DEFAULT_LOG_FILE: &str = "/var/log/corral-cni.log";

fn field<T: DeserializeOwned>(m: &Map<String, Value>, name: &str) -> CniResultT<Option<T>> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("network config field {name:?}: {e}"),
            )
        }),
    }
}

fn required<T: DeserializeOwned>(m: &Map<String, Value>, name: &str) -> CniResultT<T> {
    field(m, name)?.ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("network config: required field {name:?} is missing"),
        )
    })
}

/// Where to log an invocation whose config failed to parse: the config's `logFile`
/// when it is an absolute path string, nowhere when it is present but invalid (never
/// a silent fallback to the default), the default when the config has none.
pub fn log_file_of_raw(bytes: &[u8]) -> Option<PathBuf> {
    if corral_limits::check_json(
        bytes,
        corral_limits::MAX_NESTING_DEPTH,
        corral_limits::MAX_CNI_CONFIG_BYTES,
    )
    .is_err()
    {
        return None;
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => match m.get("logFile") {
            None | Some(Value::Null) => Some(PathBuf::from(DEFAULT_LOG_FILE)),
            Some(Value::String(s)) if Path::new(s).is_absolute() => Some(PathBuf::from(s)),
            Some(_) => None,
        },
        _ => Some(PathBuf::from(DEFAULT_LOG_FILE)),
    }
}

/// Parses the version string strictly as `MAJOR.MINOR.PATCH`.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    let c = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((a, b, c))
}

impl NetConf {
    /// Parses stdin. Syntax errors → code 6, wrong types/values → 7,
    /// unsupported version → 1.
    pub fn parse(bytes: &[u8]) -> CniResultT<NetConf> {
        // Size and nesting depth before parsing (linear pre-scan).
        corral_limits::check_json(
            bytes,
            corral_limits::MAX_NESTING_DEPTH,
            corral_limits::MAX_CNI_CONFIG_BYTES,
        )
        .map_err(|e| CniError::new(code::DECODE, format!("network config: {e}")))?;
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("network config is not valid JSON: {e}"),
            )
        })?;
        let Value::Object(m) = v else {
            return Err(CniError::new(
                code::DECODE,
                "network config must be a JSON object",
            ));
        };
        let cni_version: String = required(&m, "cniVersion")?;
        if parse_version(&cni_version).is_none() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("cniVersion {cni_version:?} is not a MAJOR.MINOR.PATCH version"),
            ));
        }
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {cni_version} is not supported (supported: {})",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        let err7 = |msg: String| CniError {
            cni_version: cni_version.clone(),
            ..CniError::new(code::INVALID_CONFIG, msg)
        };
        let with_ver = |mut e: CniError| {
            e.cni_version = cni_version.clone();
            e
        };
        let name: String = required(&m, "name").map_err(with_ver)?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            return Err(err7(format!(
                "network name {name:?} must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
            )));
        }
        let plugin_type: String = required(&m, "type").map_err(with_ver)?;
        let ipam_type = match m.get("ipam") {
            None | Some(Value::Null) => None,
            Some(Value::Object(ip)) => {
                let t: String =
                    required(ip, "type").map_err(|e| err7(format!("ipam: {}", e.msg)))?;
                if t.is_empty() || t.contains('/') || t.starts_with('.') {
                    return Err(err7(format!("ipam.type {t:?} is not a plugin name")));
                }
                Some(t)
            }
            Some(other) => {
                return Err(err7(format!(
                    "network config field \"ipam\" must be an object, got {other}"
                )));
            }
        };
        let mtu: u32 = field(&m, "mtu").map_err(with_ver)?.unwrap_or(1500);
        if !(68..=65535).contains(&mtu) {
            return Err(err7(format!("mtu {mtu} is outside 68..65535")));
        }
        let mut runtime = RuntimeConfig::default();
        if let Some(rc) = field::<Map<String, Value>>(&m, "runtimeConfig").map_err(with_ver)? {
            runtime.ips = field::<Vec<String>>(&rc, "ips")
                .map_err(|e| err7(format!("runtimeConfig: {}", e.msg)))?
                .unwrap_or_default();
            for ip in &runtime.ips {
                if parse_cidr(ip).is_none() && ip.parse::<IpAddr>().is_err() {
                    return Err(err7(format!(
                        "runtimeConfig.ips: {ip:?} is not an IP address or CIDR"
                    )));
                }
            }
            runtime.bandwidth = field::<Bandwidth>(&rc, "bandwidth")
                .map_err(|e| err7(format!("runtimeConfig: {}", e.msg)))?;
            runtime.annotations = field(&rc, "io.kubernetes.cri.pod-annotations")
                .map_err(|e| err7(format!("runtimeConfig: {}", e.msg)))?
                .unwrap_or_default();
        }
        let prev_result = match m.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(other) => {
                return Err(err7(format!(
                    "network config field \"prevResult\" must be an object, got {other}"
                )));
            }
        };
        // Standard fields Corral does not read still have a type (CNI spec).
        for f in ["dns", "args", "capabilities"] {
            match m.get(f) {
                None | Some(Value::Null) | Some(Value::Object(_)) => {}
                Some(other) => {
                    return Err(err7(format!(
                        "network config field {f:?} must be an object, got {other}"
                    )));
                }
            }
        }
        let agent_socket: PathBuf = field(&m, "agentSocket")
            .map_err(with_ver)?
            .unwrap_or_else(|| PathBuf::from(corral_dataplane_abi::api::DEFAULT_SOCKET));
        let data_dir: PathBuf = field(&m, "dataDir")
            .map_err(with_ver)?
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let log_file: PathBuf = field(&m, "logFile")
            .map_err(with_ver)?
            .unwrap_or_else(|| PathBuf::from(DEFAULT_LOG_FILE));
        for (f, p) in [
            ("dataDir", &data_dir),
            ("agentSocket", &agent_socket),
            ("logFile", &log_file),
        ] {
            if !p.is_absolute() {
                return Err(err7(format!(
                    "{f} {} must be an absolute path",
                    p.display()
                )));
            }
        }
        let valid_attachments = field(&m, "cni.dev/valid-attachments").map_err(with_ver)?;
        Ok(NetConf {
            cni_version,
            name,
            plugin_type,
            ipam_type,
            mtu,
            runtime,
            prev_result,
            agent_socket,
            data_dir,
            log_file,
            valid_attachments,
            raw: m,
        })
    }

    /// The config for the IPAM plugin's GC: the whole object with
    /// `cniVersion` = `version` and `cni.dev/valid-attachments` kept.
    pub fn gc_delegate_config(&self, version: &str) -> Vec<u8> {
        let mut m = self.raw.clone();
        m.insert("cniVersion".into(), Value::String(version.into()));
        m.remove("prevResult");
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
    }

    /// The config handed to a delegated IPAM plugin: same object, with
    /// `cniVersion` set to `version`, without prevResult, and with the
    /// fixed IPs (capability `ips` + annotation) in runtimeConfig.ips.
    pub fn delegate_config(&self, version: &str, ips: &[String]) -> Vec<u8> {
        let mut m = self.raw.clone();
        m.insert("cniVersion".into(), Value::String(version.into()));
        m.remove("prevResult");
        m.remove("cni.dev/valid-attachments");
        let mut rc = match m.remove("runtimeConfig") {
            Some(Value::Object(rc)) => rc,
            _ => Map::new(),
        };
        if ips.is_empty() {
            rc.remove("ips");
        } else {
            rc.insert(
                "ips".into(),
                Value::Array(ips.iter().map(|s| Value::String(s.clone())).collect()),
            );
        }
        if !rc.is_empty() {
            m.insert("runtimeConfig".into(), Value::Object(rc));
        }
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
    }
}

/// "198.18.0.2/24" → (addr, 24), with the prefix checked per family.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = s.split_once('/')?;
    let ip: IpAddr = a.parse().ok()?;
    let p: u8 = p.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (p <= max).then_some((ip, p))
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// 0.4.0 only: "4" or "6"
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// A success result (1.x layout; [`CniResult::to_version`] makes 0.4.0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// Parses a result of any supported version (e.g. from an IPAM plugin).
    pub fn parse(v: &Value) -> CniResultT<CniResult> {
        serde_json::from_value(v.clone())
            .map_err(|e| CniError::new(code::DECODE, format!("cannot decode CNI result: {e}")))
    }

    /// The same result in the layout of `version` (0.4.0: `ips[].version`;
    /// 1.0.0/1.1.0: no version field, interface MTU only in 1.1.0).
    pub fn to_version(&self, version: &str) -> CniResult {
        let mut r = self.clone();
        r.cni_version = version.into();
        let legacy = version.starts_with("0.");
        for ip in &mut r.ips {
            ip.version = if legacy {
                parse_cidr(&ip.address).map(|(a, _)| if a.is_ipv4() { "4" } else { "6" }.into())
            } else {
                None
            };
        }
        if version != "1.1.0" {
            for i in &mut r.interfaces {
                i.mtu = None;
            }
        }
        r
    }
}

/// Validates an interface name the way the kernel does (1..15 bytes, no
/// '/', ':' or whitespace, not "." or ".."), and without characters that
/// iproute2's batch parser treats specially (quotes, '#', '\\').
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.chars().any(|c| {
            c == '/' || c == ':' || c.is_whitespace() || c.is_control() || "\"'#\\".contains(c)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_and_rejects_bad_configs() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n1","type":"corral-cni","ipam":{"type":"host-local"},"extra":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
        assert_eq!(c.mtu, 1500);
        let e = |s: &str| NetConf::parse(s.as_bytes()).unwrap_err();
        assert_eq!(e("{").code, code::DECODE);
        assert_eq!(e(r#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#).code, 1);
        assert_eq!(e(r#"{"cniVersion":"1.0.0","type":"t"}"#).code, 7);
        let m = e(r#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":"big"}"#);
        assert_eq!(m.code, 7);
        assert!(m.msg.contains("\"mtu\""), "{}", m.msg);
        assert_eq!(m.cni_version, "1.0.0");
        let b = e(
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","runtimeConfig":{"bandwidth":{"ingressRate":"x"}}}"#,
        );
        assert!(b.msg.contains("bandwidth"), "{}", b.msg);
        assert_eq!(
            e(r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{}}"#).code,
            7,
            "ipam without type is a config error, not a panic"
        );
    }

    #[test]
    fn result_versions() {
        let r = CniResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mtu: Some(1500),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                version: None,
                address: "198.18.0.2/32".into(),
                gateway: None,
                interface: Some(0),
            }],
            ..Default::default()
        };
        let v = serde_json::to_value(r.to_version("0.4.0")).unwrap();
        assert_eq!(v["ips"][0]["version"], "4");
        assert!(v["interfaces"][0].get("mtu").is_none());
        let v = serde_json::to_value(r.to_version("1.1.0")).unwrap();
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["interfaces"][0]["mtu"], 1500);
        assert!(parse_cidr("198.18.0.2/33").is_none());
        assert!(parse_cidr("2001:db8::1/128").is_some());
        assert!(!valid_ifname("a-very-long-ifname0"));
        assert!(!valid_ifname("eth#0") && !valid_ifname("e\"0") && !valid_ifname("a b"));
        assert!(valid_ifname("eth0") && valid_ifname("net1.100"));
    }
}
