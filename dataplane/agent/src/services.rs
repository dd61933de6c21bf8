//! Service frontends (ClusterIP, port, protocol) from Service objects: the
//! destinations whose egress policy verdict is deferred past the DNAT in
//! front of the pods (kube-proxy iptables/nftables/IPVS), so that egress
//! rules are matched against the real backend (see ARCHITECTURE.md,
//! "Services").

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use serde::{Deserialize, Serialize};

use crate::abi::{SvcKey, addr16};

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
}
