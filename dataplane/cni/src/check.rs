//! CHECK: the attachment, its links and addresses still match what ADD set
//! up, and the agent still enforces the endpoint.

use super::*;

impl Ctx {
    pub(super) fn check(&self) -> CniResultT<()> {
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
}
