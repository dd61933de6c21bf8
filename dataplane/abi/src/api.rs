//! The agent's local API: one JSON request per line on a root-only unix
//! socket, one JSON response line back.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::abi::Counters;

pub const DEFAULT_SOCKET: &str = "/run/corral/agent.sock";
pub const ANN_INGRESS_BW: &str = "kubernetes.io/ingress-bandwidth";
pub const ANN_EGRESS_BW: &str = "kubernetes.io/egress-bandwidth";
pub use corral_api::keys::ANN_TRAFFIC_CLASS;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitSpec {
    /// bits per second
    pub rate_bps: u64,
    /// bucket depth; default max(300 ms of rate, 128 KiB)
    #[serde(default)]
    pub burst_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "TCP".into()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    /// host-side veth name
    pub ifname: String,
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// container ports (for named ports in NetworkPolicy)
    #[serde(default)]
    pub ports: Vec<NamedPort>,
    /// pod ingress limit (traffic towards the pod)
    #[serde(default)]
    pub ingress: Option<LimitSpec>,
    /// pod egress limit (traffic from the pod)
    #[serde(default)]
    pub egress: Option<LimitSpec>,
    /// critical|standard|bulk; default: annotation corral.io/traffic-class,
    /// then pod QoS class (Guaranteed=critical, Burstable=standard,
    /// BestEffort=bulk), then standard
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub qos_class: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterView {
    pub packets: u64,
    pub bytes: u64,
    pub drop_policy: u64,
    pub drop_rate: u64,
    pub drop_class: u64,
    pub drop_malformed: u64,
}

impl From<Counters> for CounterView {
    fn from(c: Counters) -> Self {
        CounterView {
            packets: c.packets,
            bytes: c.bytes,
            drop_policy: c.drop_policy,
            drop_rate: c.drop_rate,
            drop_class: c.drop_class,
            drop_malformed: c.drop_malformed,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndpointStatus {
    pub spec: EndpointSpec,
    pub ifindex: u32,
    pub class: String,
    pub policy_ingress: bool,
    pub policy_egress: bool,
    /// policies selecting this endpoint, e.g.
    /// `networkpolicy x/web (ingress)`
    #[serde(default)]
    pub policies: Vec<String>,
    pub ingress: CounterView,
    pub egress: CounterView,
    /// how the programs are attached on the interface ("tcx",
    /// "netlink pref N")
    #[serde(default)]
    pub attach: String,
    /// foreign tc filters / TCX programs that run before Corral's
    #[serde(default)]
    pub ahead: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Register {
        endpoint: EndpointSpec,
    },
    Update {
        endpoint: EndpointSpec,
    },
    Deregister {
        ifname: String,
    },
    List,
    /// re-read policy sources now and apply them
    Reconcile,
    /// stream drop events (one JSON `monitor::Drop` per line) until the
    /// client disconnects
    Monitor,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok {
        #[serde(default)]
        message: String,
    },
    Endpoints {
        endpoints: Vec<EndpointStatus>,
        attach_mode: String,
        policy_entries: usize,
        policy_errors: Vec<String>,
        /// multi-node routing (`--routing`), when enabled
        #[serde(default)]
        routing: Option<RoutingStatus>,
    },
    Error {
        message: String,
    },
}

/// Parses a Kubernetes bandwidth quantity ("10M", "1G", "500k", "100Mi")
/// into bits per second.
pub fn parse_bandwidth(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suf) = s.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("bandwidth {s:?}: not a number"))?;
    let mult: f64 = match suf {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        _ => bail!("bandwidth {s:?}: unknown suffix {suf:?}"),
    };
    let v = n * mult;
    if !v.is_finite() || v < 1.0 {
        bail!("bandwidth {s:?}: must be at least 1 bit/s");
    }
    Ok(v as u64)
}

/// Sends one request to the agent and returns its response.
pub fn call(socket: &Path, req: &Request) -> Result<Response> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to agent at {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut r = BufReader::new(s);
    let mut resp = String::new();
    r.read_line(&mut resp)?;
    serde_json::from_str(&resp).with_context(|| format!("bad agent response {resp:?}"))
}

/// Like [`call`] but turns `Response::Error` into an error.
pub fn call_ok(socket: &Path, req: &Request) -> Result<Response> {
    match call(socket, req)? {
        Response::Error { message } => bail!("agent: {message}"),
        r => Ok(r),
    }
}

/// What the agent's last route sync did (multi-node routing, `status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingStatus {
    pub mode: String,
    /// remote node → its pod CIDRs routed
    pub routes: BTreeMap<String, Vec<String>>,
    /// this node's pod CIDRs (from its Node object)
    pub local_cidrs: Vec<String>,
    pub mtu: Option<u32>,
    pub problems: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_quantities() {
        assert_eq!(parse_bandwidth("10M").unwrap(), 10_000_000);
        assert_eq!(parse_bandwidth("1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_bandwidth("1.5k").unwrap(), 1500);
        assert_eq!(parse_bandwidth("1Mi").unwrap(), 1_048_576);
        assert!(parse_bandwidth("10X").is_err());
        assert!(parse_bandwidth("").is_err());
        assert!(parse_bandwidth("0").is_err());
    }

    #[test]
    fn request_json_roundtrip() {
        let r: Request = serde_json::from_str(
            r#"{"op":"register","endpoint":{"ifname":"v1","namespace":"x","name":"a","ips":["198.18.0.2"],"ingress":{"rate_bps":10000000}}}"#,
        )
        .unwrap();
        match r {
            Request::Register { endpoint } => {
                assert_eq!(endpoint.ingress.unwrap().rate_bps, 10_000_000);
                assert_eq!(endpoint.ips.len(), 1);
            }
            _ => panic!("wrong variant"),
        }
    }
}
