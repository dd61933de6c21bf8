//! Validation of the delegated IPAM configuration before any side effect
//! or agent contact: a permanently invalid config (bad CIDR, address
//! outside its subnet, wrong field type) is a code-7 error naming the
//! field, never "try again later" (code 11), which a runtime retries
//! forever. Covers the reference `host-local` and `static` layouts; other
//! IPAM plugins get the generic checks (`routes`) and validate the rest
//! themselves.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::types::{CniError, CniResultT, code};

fn err(field: &str, msg: impl std::fmt::Display) -> CniError {
    CniError::new(code::INVALID_CONFIG, format!("ipam.{field}: {msg}"))
}

/// A CIDR with the prefix checked per family ("198.18.7.0/99" fails).
fn cidr(field: &str, v: &Value) -> CniResultT<(IpAddr, u8)> {
    let Some(s) = v.as_str() else {
        return Err(err(field, format!("must be a CIDR string, got {v}")));
    };
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| err(field, format!("{s:?} is not a CIDR (ADDRESS/PREFIX)")))?;
    let ip: IpAddr = a
        .parse()
        .map_err(|_| err(field, format!("{s:?}: {a:?} is not an IP address")))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let p: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| err(field, format!("{s:?}: prefix {p:?} is not in 0..={max}")))?;
    Ok((ip, p))
}

fn ip(field: &str, v: &Value) -> CniResultT<IpAddr> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err(field, format!("must be an IP address string, got {v}")))
}

fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(x) => u32::from(x) as u128,
        IpAddr::V6(x) => u128::from(x),
    }
}

/// Is `a` inside `net/p` (same family)?
pub fn contains(net: IpAddr, p: u8, a: IpAddr) -> bool {
    if net.is_ipv4() != a.is_ipv4() {
        return false;
    }
    let width = if net.is_ipv4() { 32 } else { 128 };
    if p == 0 {
        return true;
    }
    let shift = width - p as u32;
    (bits(net) >> shift) == (bits(a) >> shift)
}

fn opt_str(m: &Map<String, Value>, field: &str, name: &str) -> CniResultT<()> {
    match m.get(name) {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(v) => Err(err(
            &format!("{field}{name}"),
            format!("must be a string, got {v}"),
        )),
    }
}

fn routes(ipam: &Map<String, Value>) -> CniResultT<()> {
    let Some(r) = ipam.get("routes").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let Some(list) = r.as_array() else {
        return Err(err("routes", format!("must be a list, got {r}")));
    };
    for (i, r) in list.iter().enumerate() {
        let f = format!("routes[{i}]");
        let Some(o) = r.as_object() else {
            return Err(err(&f, format!("must be an object, got {r}")));
        };
        let dst = o.get("dst").ok_or_else(|| err(&f, "\"dst\" is required"))?;
        let (d, _) = cidr(&format!("{f}.dst"), dst)?;
        if let Some(gw) = o.get("gw").filter(|v| !v.is_null()) {
            let g = ip(&format!("{f}.gw"), gw)?;
            if g.is_ipv4() != d.is_ipv4() {
                return Err(err(&format!("{f}.gw"), "address family differs from dst"));
            }
        }
    }
    Ok(())
}

/// One host-local range: subnet (usable: at least one host address),
/// rangeStart/rangeEnd/gateway inside it, start <= end.
fn host_local_range(f: &str, r: &Value) -> CniResultT<(IpAddr, u8)> {
    let Some(o) = r.as_object() else {
        return Err(err(f, format!("a range must be an object, got {r}")));
    };
    let sub = o
        .get("subnet")
        .ok_or_else(|| err(f, "\"subnet\" is required"))?;
    let (net, p) = cidr(&format!("{f}.subnet"), sub)?;
    let width = if net.is_ipv4() { 32 } else { 128 };
    if p + 2 > width {
        return Err(err(
            &format!("{f}.subnet"),
            format!(
                "{net}/{p} is too small to allocate from (needs a prefix <= {})",
                width - 2
            ),
        ));
    }
    let bound = |name: &str| -> CniResultT<Option<IpAddr>> {
        let Some(v) = o.get(name).filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let fld = format!("{f}.{name}");
        let a = ip(&fld, v)?;
        if !contains(net, p, a) {
            return Err(err(&fld, format!("{a} is outside the subnet {net}/{p}")));
        }
        Ok(Some(a))
    };
    let start = bound("rangeStart")?;
    let end = bound("rangeEnd")?;
    bound("gateway")?;
    if let (Some(s), Some(e)) = (start, end)
        && bits(s) > bits(e)
    {
        return Err(err(f, format!("rangeStart {s} is after rangeEnd {e}")));
    }
    Ok((net, p))
}

fn host_local(ipam: &Map<String, Value>) -> CniResultT<()> {
    for n in ["dataDir", "resolvConf"] {
        opt_str(ipam, "", n)?;
    }
    let mut sets: Vec<Vec<(IpAddr, u8)>> = Vec::new();
    match ipam.get("ranges").filter(|v| !v.is_null()) {
        Some(Value::Array(rs)) => {
            if rs.is_empty() {
                return Err(err("ranges", "must not be empty"));
            }
            for (i, set) in rs.iter().enumerate() {
                let Some(set) = set.as_array().filter(|s| !s.is_empty()) else {
                    return Err(err(
                        &format!("ranges[{i}]"),
                        format!("must be a non-empty list of ranges, got {set}"),
                    ));
                };
                let mut v = Vec::new();
                for (j, r) in set.iter().enumerate() {
                    v.push(host_local_range(&format!("ranges[{i}][{j}]"), r)?);
                }
                let fam = v[0].0.is_ipv4();
                if v.iter().any(|(a, _)| a.is_ipv4() != fam) {
                    return Err(err(
                        &format!("ranges[{i}]"),
                        "mixes IPv4 and IPv6 subnets in one range set",
                    ));
                }
                sets.push(v);
            }
        }
        Some(v) => return Err(err("ranges", format!("must be a list of lists, got {v}"))),
        None => {
            if ipam.get("subnet").is_some_and(|v| !v.is_null()) {
                // legacy single range at the top level
                sets.push(vec![host_local_range("", &Value::Object(ipam.clone()))?]);
            } else {
                return Err(err("ranges", "host-local needs \"ranges\" (or \"subnet\")"));
            }
        }
    }
    // overlapping subnets across range sets (host-local refuses them)
    let all: Vec<_> = sets.iter().flatten().collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if contains(a.0, a.1, b.0) || contains(b.0, b.1, a.0) {
                return Err(err(
                    "ranges",
                    format!("subnets {}/{} and {}/{} overlap", a.0, a.1, b.0, b.1),
                ));
            }
        }
    }
    Ok(())
}

fn static_ipam(ipam: &Map<String, Value>) -> CniResultT<()> {
    let Some(a) = ipam.get("addresses").filter(|v| !v.is_null()) else {
        return Ok(()); // may come from runtimeConfig.ips / CNI_ARGS
    };
    let Some(list) = a.as_array() else {
        return Err(err("addresses", format!("must be a list, got {a}")));
    };
    for (i, x) in list.iter().enumerate() {
        let f = format!("addresses[{i}]");
        let Some(o) = x.as_object() else {
            return Err(err(&f, format!("must be an object, got {x}")));
        };
        let v = o
            .get("address")
            .ok_or_else(|| err(&f, "\"address\" is required"))?;
        let (net, _) = cidr(&format!("{f}.address"), v)?;
        if let Some(g) = o.get("gateway").filter(|v| !v.is_null()) {
            let g = ip(&format!("{f}.gateway"), g)?;
            if g.is_ipv4() != net.is_ipv4() {
                return Err(err(
                    &format!("{f}.gateway"),
                    "address family differs from address",
                ));
            }
        }
    }
    Ok(())
}

/// Validates `ipam` (the object of the network config) for its type.
pub fn validate(ipam: &Value) -> CniResultT<()> {
    let Some(m) = ipam.as_object() else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("network config field \"ipam\" must be an object, got {ipam}"),
        ));
    };
    routes(m)?;
    match m.get("type").and_then(Value::as_str) {
        Some("host-local") => host_local(m),
        Some("static") => static_ipam(m),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code_msg(v: Value) -> (u32, String) {
        validate(&v).map_or_else(|e| (e.code, e.msg), |()| (0, String::new()))
    }

    #[test]
    fn host_local_table() {
        let ok = |v: Value| assert_eq!(validate(&v), Ok(()), "{v}");
        ok(json!({"type":"host-local","ranges":[[{"subnet":"198.18.7.0/24"}]]}));
        ok(
            json!({"type":"host-local","ranges":[[{"subnet":"198.18.7.0/24","rangeStart":"198.18.7.10","rangeEnd":"198.18.7.20","gateway":"198.18.7.1"}],[{"subnet":"2001:db8:7::/64"}]],
            "routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0","gw":"2001:db8:7::1"}]}),
        );
        ok(json!({"type":"host-local","subnet":"198.18.7.0/24"}));
        ok(json!({"type":"dhcp"}));
        // (config, text the message must contain)
        let bad = [
            (
                json!({"type":"host-local","ranges":[[{"subnet":"198.18.7.0/99"}]]}),
                "198.18.7.0/99",
            ),
            (
                json!({"type":"host-local","ranges":[[{"subnet":"198.18.7.0"}]]}),
                "ranges[0][0].subnet",
            ),
            (
                json!({"type":"host-local","ranges":[[{"subnet":"2001:db8::/129"}]]}),
                "0..=128",
            ),
            (
                json!({"type":"host-local","ranges":[[{"subnet":"198.18.7.0/32"}]]}),
                "too small",
            ),
            (
                json!({"type":"host-local","ranges":[[{"subnet":7}]]}),
                "CIDR string",
            ),
            (
                json!({"type":"host-local","ranges":"198.18.7.0/24"}),
                "list of lists",
            ),
            (json!({"type":"host-local","ranges":[]}), "empty"),
            (json!({"type":"host-local","ranges":[[]]}), "ranges[0]"),
            (json!({"type":"host-local"}), "needs \"ranges\""),
            (
                json!({"type":"host-local","ranges":[[{"subnet":"198.18.7.0/24","rangeStart":"198.18.8.1"}]]}),
                "outside the subnet",
            ),
            (
                json!({"type":"host-local","ranges":[[{"subnet":"198.18.7.0/24","gateway":"2001:db8::1"}]]}),
                "gateway",
            ),
            (
                json!({"type":"host-local","ranges":[[{"subnet":"198.18.7.0/24","rangeStart":"198.18.7.20","rangeEnd":"198.18.7.10"}]]}),
                "after rangeEnd",
            ),
            (
                json!({"type":"host-local","ranges":[[{"subnet":"198.18.7.0/24"}],[{"subnet":"198.18.7.128/25"}]]}),
                "overlap",
            ),
            (
                json!({"type":"host-local","ranges":[[{"subnet":"198.18.7.0/24"},{"subnet":"2001:db8::/64"}]]}),
                "mixes",
            ),
            (
                json!({"type":"host-local","dataDir":5,"ranges":[[{"subnet":"198.18.7.0/24"}]]}),
                "dataDir",
            ),
            (
                json!({"type":"host-local","ranges":[[{"subnet":"198.18.7.0/24"}]],"routes":{"dst":"x"}}),
                "routes",
            ),
            (
                json!({"type":"host-local","ranges":[[{"subnet":"198.18.7.0/24"}]],"routes":[{"dst":"0.0.0.0/40"}]}),
                "routes[0].dst",
            ),
            (
                json!({"type":"host-local","ranges":[[{"subnet":"198.18.7.0/24"}]],"routes":[{"dst":"0.0.0.0/0","gw":"::1"}]}),
                "family",
            ),
            (
                json!({"type":"static","addresses":[{"address":"198.18.7.5/64"}]}),
                "addresses[0].address",
            ),
            (
                json!({"type":"static","addresses":"198.18.7.5/24"}),
                "must be a list",
            ),
            (json!("host-local"), "must be an object"),
        ];
        for (v, want) in bad {
            let (c, m) = code_msg(v.clone());
            assert_eq!(c, code::INVALID_CONFIG, "{v}");
            assert!(m.contains(want), "{v}: {m:?} lacks {want:?}");
        }
    }

    #[test]
    fn contains_by_prefix() {
        let n: IpAddr = "198.18.7.0".parse().unwrap();
        assert!(contains(n, 24, "198.18.7.255".parse().unwrap()));
        assert!(!contains(n, 24, "198.18.8.0".parse().unwrap()));
        assert!(contains(n, 0, "1.2.3.4".parse().unwrap()));
        assert!(!contains(n, 0, "::1".parse().unwrap()));
    }
}
