//! Service frontends (ClusterIP, port, protocol) from Service objects: the
//! destinations whose egress policy verdict is deferred past the DNAT in
//! front of the pods (kube-proxy iptables/nftables/IPVS), so that egress
//! rules are matched against the real backend (see ARCHITECTURE.md,
//! "Services").

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::{Deserialize, Serialize};

use crate::abi::{self, LbBe, SvcKey, addr16};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Frontend {
    pub ip: IpAddr,
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP)
    pub proto: u8,
}

impl Frontend {
    pub fn key(&self) -> SvcKey {
        SvcKey {
            addr: addr16(self.ip),
            port: self.port,
            proto: self.proto,
            pad: 0,
        }
    }
}

pub fn proto_number(p: &str) -> Option<u8> {
    match p {
        "TCP" => Some(6),
        "UDP" => Some(17),
        "SCTP" => Some(132),
        _ => None,
    }
}

/// The frontends of a Service: every ClusterIP (`spec.clusterIPs`, else
/// `spec.clusterIP`; headless "None" has none) × every port. ExternalName
/// Services have none. Errors name the Service and field.
pub fn frontends(s: &Service) -> Result<Vec<Frontend>, String> {
    let id = format!(
        "Service {}/{}",
        s.metadata.namespace.as_deref().unwrap_or("default"),
        s.metadata.name.as_deref().unwrap_or("<unnamed>")
    );
    let Some(spec) = &s.spec else {
        return Ok(Vec::new());
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(Vec::new());
    }
    let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if ips.is_empty()
        && let Some(c) = &spec.cluster_ip
    {
        ips.push(c.clone());
    }
    let mut out = Vec::new();
    for (i, raw) in ips.iter().enumerate() {
        if raw == "None" || raw.is_empty() {
            continue;
        }
        let ip: IpAddr = raw
            .parse()
            .map_err(|_| format!("{id}: spec.clusterIPs[{i}] {raw:?} is not an IP address"))?;
        for (j, p) in spec.ports.iter().flatten().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let proto = proto_number(proto).ok_or_else(|| {
                format!("{id}: spec.ports[{j}].protocol {proto:?} is not TCP, UDP or SCTP")
            })?;
            let port = u16::try_from(p.port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{id}: spec.ports[{j}].port {} is not 1-65535", p.port))?;
            out.push(Frontend { ip, port, proto });
        }
    }
    Ok(out)
}

/// Corral's Service translation (`--kube-proxy-replacement`): frontend →
/// backends (address, target port) and session affinity, the content of
/// maps `corral_lb_svc` / `corral_lb_be`.
pub type LbTable = BTreeMap<SvcKey, LbEntry>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbEntry {
    /// this node's backends first (`local_count` of them)
    pub backends: Vec<LbBe>,
    /// `sessionAffinity: ClientIP` timeout in seconds (0 = no affinity)
    pub affinity_s: u32,
    /// `abi::LB_NODEPORT` | `abi::LB_ETP_LOCAL`
    pub flags: u16,
    /// `backends[..local_count]` are on this node
    pub local_count: u16,
    /// addresses of all the Service's serving endpoints of this port (ready,
    /// or serving while terminating; any node, whatever the traffic
    /// policy): established UDP flows to them are kept (kube-proxy's UDP
    /// conntrack cleanup), flows to other addresses forgotten
    pub serving: Vec<[u8; 16]>,
}

/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds`
pub const DEFAULT_AFFINITY_S: u32 = 10800;

/// One endpoint address of a Service port: the backend, whether it is
/// ready, serving-and-terminating, and on this node.
struct Ep {
    be: LbBe,
    serving: bool,
    ready: bool,
    term: bool,
    local: bool,
}

/// kube-proxy's choice among endpoints: the ready ones; when there are
/// none, the serving terminating ones. Sorted, deduplicated.
fn usable<'a>(eps: impl Iterator<Item = &'a Ep> + Clone) -> Vec<LbBe> {
    let ready: Vec<LbBe> = eps.clone().filter(|e| e.ready).map(|e| e.be).collect();
    let mut v = if ready.is_empty() {
        eps.filter(|e| e.term).map(|e| e.be).collect()
    } else {
        ready
    };
    v.sort_by_key(|b| (b.addr, b.port));
    v.dedup();
    v
}

/// Builds the translation table from Services and their EndpointSlices
/// (label `kubernetes.io/service-name`, same namespace, the ClusterIP's
/// address family; the slice port with the Service port's name and
/// protocol). Endpoints: ready ones (`conditions.ready` unset or true);
/// when a port has none, the serving terminating ones (kube-proxy's
/// fallback). `internalTrafficPolicy: Local` keeps only endpoints on
/// `node` for the ClusterIP. A `nodePort` gets one frontend per address of
/// `node_addrs` of the ClusterIP's family (flag `LB_NODEPORT`), with this
/// node's endpoints first; `externalTrafficPolicy: Local` (flag
/// `LB_ETP_LOCAL`) lists this node's endpoints (own ready/terminating
/// fallback) then the others, which only pods of this node use (as
/// kube-proxy short-circuits them). External addresses (`external_addrs`:
/// externalIPs, load-balancer IPs) × the Service port get the same entry as
/// the node port with flag `LB_EXTERNAL`. What is not translated is
/// reported by Service and field, never silently ignored (a node port
/// without a node address of its family; see `external_addrs`).
pub fn lb_table(
    svcs: &[Service],
    slices: &[EndpointSlice],
    node: &str,
    node_addrs: &[IpAddr],
) -> (LbTable, Vec<String>) {
    let mut table = LbTable::new();
    let mut errors = Vec::new();
    for s in svcs {
        let ns = s.metadata.namespace.as_deref().unwrap_or("default");
        let name = s.metadata.name.as_deref().unwrap_or("<unnamed>");
        let id = format!("Service {ns}/{name}");
        let Some(spec) = &s.spec else { continue };
        let fronts = match frontends(s) {
            Ok(f) => f,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if fronts.is_empty() {
            continue;
        }
        let affinity_s = match spec.session_affinity.as_deref() {
            None | Some("None") => 0,
            Some("ClientIP") => {
                let t = spec
                    .session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds);
                match t {
                    None => DEFAULT_AFFINITY_S,
                    Some(t) if (1..=86400).contains(&t) => t as u32,
                    Some(t) => {
                        errors.push(format!(
                            "{id}: spec.sessionAffinityConfig.clientIP.timeoutSeconds {t} is not 1-86400 (Service not translated)"
                        ));
                        continue;
                    }
                }
            }
            Some(other) => {
                errors.push(format!(
                    "{id}: spec.sessionAffinity {other:?} is not None or ClientIP (Service not translated)"
                ));
                continue;
            }
        };
        let etp_local = match spec.external_traffic_policy.as_deref() {
            None | Some("Cluster") => false,
            Some("Local") => true,
            Some(other) => {
                errors.push(format!(
                    "{id}: spec.externalTrafficPolicy {other:?} is not Cluster or Local (Service not translated)"
                ));
                continue;
            }
        };
        let external = external_addrs(s, &id, &fronts, &mut errors);
        let local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let mine: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|es| {
                es.metadata.namespace.as_deref().unwrap_or("default") == ns
                    && es
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        .map(String::as_str)
                        == Some(name)
            })
            .collect();
        for (j, p) in spec.ports.iter().flatten().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let node_port = match p.node_port {
                None => None,
                Some(n) => match u16::try_from(n).ok().filter(|n| *n > 0) {
                    Some(n) => Some(n),
                    None => {
                        errors.push(format!(
                            "{id}: spec.ports[{j}].nodePort {n} is not 1-65535 (not translated)"
                        ));
                        None
                    }
                },
            };
            let pname = p.name.as_deref().unwrap_or("");
            for f in fronts.iter().filter(|f| f.port as i32 == p.port) {
                let mut eps = Vec::new();
                for es in &mine {
                    let fam_ok = matches!(
                        (es.address_type.as_str(), f.ip),
                        ("IPv4", IpAddr::V4(_)) | ("IPv6", IpAddr::V6(_))
                    );
                    if !fam_ok {
                        continue;
                    }
                    let Some(ep) = es.ports.iter().flatten().find(|ep| {
                        ep.name.as_deref().unwrap_or("") == pname
                            && ep.protocol.as_deref().unwrap_or("TCP") == proto
                    }) else {
                        continue;
                    };
                    let Some(port) = ep
                        .port
                        .and_then(|v| u16::try_from(v).ok())
                        .filter(|v| *v > 0)
                    else {
                        continue;
                    };
                    for e in &es.endpoints {
                        let c = e.conditions.as_ref();
                        let ready = c.and_then(|c| c.ready).unwrap_or(true);
                        let serving = c.and_then(|c| c.serving).unwrap_or(ready);
                        let term = serving && c.and_then(|c| c.terminating).unwrap_or(false);
                        let on_node = e.node_name.as_deref() == Some(node);
                        for a in &e.addresses {
                            let Ok(ip) = a.parse::<IpAddr>() else {
                                errors.push(format!(
                                    "EndpointSlice {ns}/{}: address {a:?} is not an IP (skipped)",
                                    es.metadata.name.as_deref().unwrap_or("<unnamed>")
                                ));
                                continue;
                            };
                            eps.push(Ep {
                                be: LbBe {
                                    addr: addr16(ip),
                                    port,
                                    pad: 0,
                                },
                                serving,
                                ready,
                                term,
                                local: on_node,
                            });
                        }
                    }
                }
                let all = usable(eps.iter());
                let mut serving: Vec<[u8; 16]> = eps
                    .iter()
                    .filter(|e| e.serving)
                    .map(|e| e.be.addr)
                    .collect();
                serving.sort();
                serving.dedup();
                let mine_local = usable(eps.iter().filter(|e| e.local));
                let cluster_ip = if local {
                    mine_local.clone()
                } else {
                    all.clone()
                };
                table.insert(
                    f.key(),
                    LbEntry {
                        backends: cluster_ip,
                        affinity_s,
                        flags: 0,
                        local_count: 0,
                        serving: serving.clone(),
                    },
                );
                let ext: Vec<IpAddr> = external
                    .iter()
                    .copied()
                    .filter(|a| a.is_ipv4() == f.ip.is_ipv4())
                    .collect();
                if node_port.is_none() && ext.is_empty() {
                    continue;
                }
                // this node's endpoints first
                let (first, rest): (Vec<LbBe>, Vec<LbBe>) = if etp_local {
                    let rest = all.iter().filter(|b| !mine_local.contains(b)).copied();
                    (mine_local.clone(), rest.collect())
                } else {
                    let is_local = |b: &LbBe| eps.iter().any(|e| e.local && e.be == *b);
                    all.iter().copied().partition(|b| is_local(b))
                };
                let local_count = first.len().min(u16::MAX as usize) as u16;
                let mut backends = first;
                backends.extend(rest);
                let flags = abi::LB_NODEPORT | if etp_local { abi::LB_ETP_LOCAL } else { 0 };
                let entry = |flags: u16| LbEntry {
                    backends: backends.clone(),
                    affinity_s,
                    flags,
                    local_count,
                    serving: serving.clone(),
                };
                // externalIPs and load-balancer IPs × the Service port
                for a in ext {
                    let key = Frontend {
                        ip: a,
                        port: f.port,
                        proto: f.proto,
                    }
                    .key();
                    table.insert(key, entry(flags | abi::LB_EXTERNAL));
                }
                let Some(np) = node_port else { continue };
                let addrs: Vec<&IpAddr> = node_addrs
                    .iter()
                    .filter(|a| a.is_ipv4() == f.ip.is_ipv4())
                    .collect();
                if addrs.is_empty() {
                    errors.push(format!(
                        "{id}: spec.ports[{j}].nodePort {np}: no {} node address (--nodeport-addresses or the Node's InternalIPs), not translated",
                        if f.ip.is_ipv4() { "IPv4" } else { "IPv6" }
                    ));
                }
                for a in addrs {
                    let key = Frontend {
                        ip: *a,
                        port: np,
                        proto: f.proto,
                    }
                    .key();
                    table.insert(key, entry(flags));
                }
            }
        }
    }
    (table, errors)
}

/// The annotation kube-proxy reads when `spec.loadBalancerSourceRanges`
/// is empty
pub const LB_SOURCE_RANGES_ANNOTATION: &str =
    "service.beta.kubernetes.io/load-balancer-source-ranges";

/// The external addresses of a Service served as kube-proxy serves them
/// (each × every Service port, translated like a node port, with
/// `externalTrafficPolicy`): `spec.externalIPs`, and the
/// `status.loadBalancer.ingress[].ip` addresses with `ipMode` unset or
/// `VIP` (`Proxy`: the load balancer proxies to the node ports, so the
/// address is not captured on the nodes, as in kube-proxy). An address
/// without a ClusterIP of its family is reported and left out (kube-proxy
/// does no family translation); so are invalid addresses and ipModes.
/// `loadBalancerSourceRanges` (field or annotation) is not enforced by
/// Corral's translation: the Service's load-balancer IPs are then
/// rejected by name and not served (its externalIPs, to which source
/// ranges do not apply, are).
fn external_addrs(
    s: &Service,
    id: &str,
    fronts: &[Frontend],
    errors: &mut Vec<String>,
) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let Some(spec) = &s.spec else { return out };
    let mut add = |ip: IpAddr, field: String, errors: &mut Vec<String>| {
        if fronts.iter().any(|f| f.ip.is_ipv4() == ip.is_ipv4()) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        } else {
            errors.push(format!(
                "{id}: {field} {ip} has no ClusterIP of its family (not translated)"
            ));
        }
    };
    for (i, raw) in spec.external_ips.iter().flatten().enumerate() {
        match raw.parse::<IpAddr>() {
            Ok(ip) => add(ip, format!("spec.externalIPs[{i}]"), errors),
            Err(_) => errors.push(format!(
                "{id}: spec.externalIPs[{i}] {raw:?} is not an IP address (not translated)"
            )),
        }
    }
    let ingress: Vec<_> = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, g)| g.ip.as_deref().is_some_and(|ip| !ip.is_empty()))
        .collect();
    if ingress.is_empty() {
        return out;
    }
    let ranges = spec
        .load_balancer_source_ranges
        .as_ref()
        .is_some_and(|v| !v.is_empty());
    let annotated = s
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LB_SOURCE_RANGES_ANNOTATION))
        .is_some_and(|v| !v.trim().is_empty());
    if ranges || annotated {
        let what = if ranges {
            "spec.loadBalancerSourceRanges".to_string()
        } else {
            format!("annotation {LB_SOURCE_RANGES_ANNOTATION}")
        };
        errors.push(format!(
            "{id}: {what} is not enforced by --kube-proxy-replacement: the load-balancer ingress IPs are not translated"
        ));
        return out;
    }
    for (i, g) in ingress {
        let raw = g.ip.as_deref().unwrap_or_default();
        match g.ip_mode.as_deref() {
            None | Some("VIP") => {}
            Some("Proxy") => continue,
            Some(other) => {
                errors.push(format!(
                    "{id}: status.loadBalancer.ingress[{i}].ipMode {other:?} is not VIP or Proxy (not translated)"
                ));
                continue;
            }
        }
        match raw.parse::<IpAddr>() {
            Ok(ip) => add(ip, format!("status.loadBalancer.ingress[{i}].ip"), errors),
            Err(_) => errors.push(format!(
                "{id}: status.loadBalancer.ingress[{i}].ip {raw:?} is not an IP address (not translated)"
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: serde_json::Value) -> Result<Vec<Frontend>, String> {
        frontends(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn frontends_of_services() {
        let f = svc(serde_json::json!({"metadata":{"name":"s","namespace":"x"},
            "spec":{"clusterIPs":["198.18.200.1","2001:db8:200::1"],
                    "ports":[{"port":80},{"port":53,"protocol":"UDP"}]}}))
        .unwrap();
        assert_eq!(f.len(), 4);
        assert!(f.contains(&Frontend {
            ip: "2001:db8:200::1".parse().unwrap(),
            port: 53,
            proto: 17
        }));
        let legacy = svc(serde_json::json!({"metadata":{"name":"s"},"spec":{"clusterIP":"198.18.200.2","ports":[{"port":81,"protocol":"SCTP"}]}})).unwrap();
        assert_eq!(
            legacy,
            vec![Frontend {
                ip: "198.18.200.2".parse().unwrap(),
                port: 81,
                proto: 132
            }]
        );
        assert!(svc(serde_json::json!({"metadata":{"name":"h"},"spec":{"clusterIP":"None","ports":[{"port":80}]}})).unwrap().is_empty());
        assert!(svc(serde_json::json!({"metadata":{"name":"e"},"spec":{"type":"ExternalName","externalName":"a.b"}})).unwrap().is_empty());
        let e = svc(serde_json::json!({"metadata":{"name":"b","namespace":"x"},"spec":{"clusterIP":"nope","ports":[{"port":80}]}})).unwrap_err();
        assert!(e.contains("x/b") && e.contains("spec.clusterIPs[0]"), "{e}");
        let e = svc(serde_json::json!({"metadata":{"name":"b"},"spec":{"clusterIP":"198.18.200.3","ports":[{"port":80,"protocol":"ICMP"}]}})).unwrap_err();
        assert!(e.contains("spec.ports[0].protocol"), "{e}");
    }

    #[test]
    fn lb_table_from_services_and_slices() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "x"},
            "spec": {"clusterIP": "198.18.250.10", "internalTrafficPolicy": "Cluster",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]}}))
        .unwrap();
        let slice = |name: &str, eps: serde_json::Value| -> EndpointSlice {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "x",
                    "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                          {"name": "dns", "port": 5353, "protocol": "UDP"}],
                "endpoints": eps}))
            .unwrap()
        };
        let s1 = slice(
            "web-1",
            serde_json::json!([
                {"addresses": ["198.18.2.2"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["198.18.3.2"], "nodeName": "n2"},
                {"addresses": ["198.18.4.2"], "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]),
        );
        let (t, errs) = lb_table(
            std::slice::from_ref(&svc),
            std::slice::from_ref(&s1),
            "n1",
            &[],
        );
        assert!(errs.is_empty(), "{errs:?}");
        let key = |port: u16, proto: u8| {
            Frontend {
                ip: "198.18.250.10".parse().unwrap(),
                port,
                proto,
            }
            .key()
        };
        let http = &t[&key(80, 6)].backends;
        assert_eq!(http.len(), 2, "ready endpoints only: {http:?}");
        assert!(http.iter().all(|b| b.port == 8080));
        assert_eq!(t[&key(53, 17)].backends.len(), 2);
        assert!(t[&key(53, 17)].backends.iter().all(|b| b.port == 5353));
        assert_eq!(t[&key(80, 6)].affinity_s, 0);
        // serving: every serving endpoint, the terminating one included
        let all3: Vec<[u8; 16]> = ["198.18.2.2", "198.18.3.2", "198.18.4.2"]
            .iter()
            .map(|a| addr16(a.parse().unwrap()))
            .collect();
        assert_eq!(t[&key(53, 17)].serving, all3);
        // internalTrafficPolicy Local: this node's endpoints
        let mut local = svc.clone();
        local.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
        let (t, _) = lb_table(&[local], std::slice::from_ref(&s1), "n1", &[]);
        assert_eq!(t[&key(80, 6)].backends.len(), 1);
        assert_eq!(t[&key(80, 6)].serving, all3, "whatever the traffic policy");
        assert_eq!(
            t[&key(80, 6)].backends[0].addr,
            addr16("198.18.2.2".parse().unwrap())
        );
        // only terminating serving endpoints left: they are used
        let s2 = slice(
            "web-1",
            serde_json::json!([
                {"addresses": ["198.18.4.2"], "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]),
        );
        let (t, _) = lb_table(std::slice::from_ref(&svc), &[s2], "n1", &[]);
        assert_eq!(t[&key(80, 6)].backends.len(), 1);
        // session affinity: default and explicit timeouts; a bad one is named
        let mut aff = svc.clone();
        aff.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        let (t, errs) = lb_table(std::slice::from_ref(&aff), &[], "n1", &[]);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(t[&key(80, 6)].affinity_s, DEFAULT_AFFINITY_S);
        aff.spec.as_mut().unwrap().session_affinity_config =
            serde_json::from_value(serde_json::json!({"clientIP": {"timeoutSeconds": 0}})).unwrap();
        let (t, errs) = lb_table(&[aff], &[], "n1", &[]);
        assert!(t.is_empty());
        assert!(
            errs[0].contains("x/web") && errs[0].contains("timeoutSeconds"),
            "{errs:?}"
        );
    }

    #[test]
    fn lb_table_node_ports() {
        let svc = |etp: &str| -> Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "np", "namespace": "x"},
                "spec": {"type": "NodePort", "clusterIP": "198.18.250.20",
                    "externalTrafficPolicy": etp,
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                              {"name": "s", "port": 132, "protocol": "SCTP", "nodePort": 30132}]}}))
            .unwrap()
        };
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "np-1", "namespace": "x",
            "labels": {"kubernetes.io/service-name": "np"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                  {"name": "s", "port": 8132, "protocol": "SCTP"}],
        "endpoints": [
            {"addresses": ["198.18.9.2"], "nodeName": "n2"},
            {"addresses": ["198.18.8.2"], "nodeName": "n1"},
            {"addresses": ["198.18.7.2"], "nodeName": "n1",
             "conditions": {"ready": false, "serving": true, "terminating": true}}
        ]}))
        .unwrap();
        let addrs: Vec<IpAddr> = vec![
            "192.0.2.1".parse().unwrap(),
            "2001:db8:ff::1".parse().unwrap(),
        ];
        let key = |ip: &str, port: u16, proto: u8| {
            Frontend {
                ip: ip.parse().unwrap(),
                port,
                proto,
            }
            .key()
        };
        let a = |ip: &str| addr16(ip.parse().unwrap());
        // Cluster: every ready endpoint, this node's first
        let (t, errs) = lb_table(
            &[svc("Cluster")],
            std::slice::from_ref(&slice),
            "n1",
            &addrs,
        );
        assert!(errs.is_empty(), "{errs:?}");
        let e = &t[&key("192.0.2.1", 30080, 6)];
        assert_eq!(e.flags, abi::LB_NODEPORT);
        assert_eq!(e.local_count, 1);
        let got: Vec<_> = e.backends.iter().map(|b| (b.addr, b.port)).collect();
        assert_eq!(got, vec![(a("198.18.8.2"), 8080), (a("198.18.9.2"), 8080)]);
        // SCTP ports get their frontends too; no IPv6 frontend for an
        // IPv4-only Service
        assert_eq!(t[&key("192.0.2.1", 30132, 132)].backends[0].port, 8132);
        assert_eq!(t[&key("198.18.250.20", 132, 132)].backends.len(), 2);
        assert!(!t.contains_key(&key("2001:db8:ff::1", 30080, 6)));
        // Local: this node's ready endpoint first (the terminating one is
        // not used while a ready one exists), then the others for pods
        let (t, _) = lb_table(&[svc("Local")], std::slice::from_ref(&slice), "n1", &addrs);
        let e = &t[&key("192.0.2.1", 30080, 6)];
        assert_eq!(e.flags, abi::LB_NODEPORT | abi::LB_ETP_LOCAL);
        assert_eq!(e.local_count, 1);
        assert_eq!(e.backends[0].addr, a("198.18.8.2"));
        assert_eq!(e.backends.len(), 2);
        // on n2 the only local endpoint is 198.18.9.2
        let (t, _) = lb_table(&[svc("Local")], std::slice::from_ref(&slice), "n2", &addrs);
        let e = &t[&key("192.0.2.1", 30080, 6)];
        assert_eq!((e.local_count, e.backends[0].addr), (1, a("198.18.9.2")));
        // on n3: none local, so externally nothing is served
        let (t, _) = lb_table(&[svc("Local")], std::slice::from_ref(&slice), "n3", &addrs);
        assert_eq!(t[&key("192.0.2.1", 30080, 6)].local_count, 0);
        // no node address: reported by Service and field
        let (t, errs) = lb_table(&[svc("Cluster")], std::slice::from_ref(&slice), "n1", &[]);
        assert!(t.contains_key(&key("198.18.250.20", 80, 6)));
        assert!(
            errs.iter()
                .any(|e| e.contains("x/np") && e.contains("spec.ports[0].nodePort 30080")),
            "{errs:?}"
        );
        // a bad externalTrafficPolicy is named; externalIPs are reported
        let (t, errs) = lb_table(
            &[svc("Nearest")],
            std::slice::from_ref(&slice),
            "n1",
            &addrs,
        );
        assert!(t.is_empty());
        assert!(errs[0].contains("spec.externalTrafficPolicy"), "{errs:?}");
    }

    #[test]
    fn lb_table_external_addresses() {
        let svc = |v: serde_json::Value| -> Service {
            let mut base = serde_json::json!({
                "metadata": {"name": "lb", "namespace": "x"},
                "spec": {"type": "LoadBalancer", "clusterIP": "198.18.250.30",
                    "externalTrafficPolicy": "Local",
                    "externalIPs": ["198.18.251.1", "2001:db8:251::1", "nope"],
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
                "status": {"loadBalancer": {"ingress": [
                    {"ip": "198.18.252.1"},
                    {"ip": "198.18.252.2", "ipMode": "VIP"},
                    {"ip": "198.18.252.3", "ipMode": "Proxy"},
                    {"hostname": "lb.example"},
                    {"ip": "198.18.252.4", "ipMode": "Tunnel"}]}}
            });
            json_patch(&mut base, v);
            serde_json::from_value(base).unwrap()
        };
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "lb-1", "namespace": "x",
            "labels": {"kubernetes.io/service-name": "lb"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["198.18.9.2"], "nodeName": "n2"},
            {"addresses": ["192.0.2.1"], "nodeName": "n1"}
        ]}))
        .unwrap();
        let key = |ip: &str, port: u16| {
            Frontend {
                ip: ip.parse().unwrap(),
                port,
                proto: 6,
            }
            .key()
        };
        let addrs: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap()];
        let (t, errs) = lb_table(
            &[svc(serde_json::json!({}))],
            std::slice::from_ref(&slice),
            "n1",
            &addrs,
        );
        // externalIPs and VIP-mode ingress IPs × the Service port, as the
        // node port (this node's endpoint — a host-network one — first)
        for ip in ["198.18.251.1", "198.18.252.1", "198.18.252.2"] {
            let e = &t[&key(ip, 80)];
            assert_eq!(
                e.flags,
                abi::LB_NODEPORT | abi::LB_ETP_LOCAL | abi::LB_EXTERNAL,
                "{ip}"
            );
            assert_eq!(e.local_count, 1);
            assert_eq!(e.backends[0].addr, addr16("192.0.2.1".parse().unwrap()));
            assert_eq!(e.backends.len(), 2);
        }
        assert_eq!(t[&key("192.0.2.1", 30080)].flags & abi::LB_EXTERNAL, 0);
        // Proxy mode: not captured; no port-mixing with the node port
        assert!(!t.contains_key(&key("198.18.252.3", 80)));
        assert!(!t.contains_key(&key("198.18.251.1", 30080)));
        assert!(!t.contains_key(&key("198.18.252.4", 80)));
        let named = |what: &str| errs.iter().any(|e| e.contains("x/lb") && e.contains(what));
        assert!(
            named("spec.externalIPs[1] 2001:db8:251::1 has no ClusterIP"),
            "{errs:?}"
        );
        assert!(named("spec.externalIPs[2] \"nope\""), "{errs:?}");
        assert!(
            named("status.loadBalancer.ingress[4].ipMode \"Tunnel\""),
            "{errs:?}"
        );
        assert_eq!(errs.len(), 3, "{errs:?}");
        // a Service without a node port: external addresses still served
        let (t, errs) = lb_table(
            &[svc(serde_json::json!({"spec": {"type": "ClusterIP",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))],
            std::slice::from_ref(&slice),
            "n1",
            &addrs,
        );
        assert!(t.contains_key(&key("198.18.251.1", 80)), "{errs:?}");
        // loadBalancerSourceRanges (field or annotation): rejected by
        // name, the LB IPs not served; externalIPs still are
        for patch in [
            serde_json::json!({"spec": {"loadBalancerSourceRanges": ["192.0.2.0/24"]}}),
            serde_json::json!({"metadata": {"annotations": {"service.beta.kubernetes.io/load-balancer-source-ranges": "192.0.2.0/24"}}}),
        ] {
            let (t, errs) = lb_table(&[svc(patch)], std::slice::from_ref(&slice), "n1", &addrs);
            assert!(!t.contains_key(&key("198.18.252.1", 80)));
            assert!(!t.contains_key(&key("198.18.252.2", 80)));
            assert!(t.contains_key(&key("198.18.251.1", 80)));
            assert!(
                errs.iter().any(|e| e.contains("x/lb")
                    && (e.contains("spec.loadBalancerSourceRanges")
                        || e.contains(LB_SOURCE_RANGES_ANNOTATION))
                    && e.contains("not translated")),
                "{errs:?}"
            );
        }
    }

    /// merges `patch` into `base` (objects recursively, the rest replaced)
    fn json_patch(base: &mut serde_json::Value, patch: serde_json::Value) {
        match (base, patch) {
            (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
                for (k, v) in p {
                    json_patch(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, p) => *b = p,
        }
    }
}
