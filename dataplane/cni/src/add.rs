//! ADD: standalone (own veth, delegated IPAM, pod-side links) or chained
//! (the host peer found through `prevResult`), then registration with the
//! agent; anything done is rolled back on failure.

use super::*;

/// Pod side of the standalone wiring, run in the pod netns: lo up, the
/// pod addresses (/32, /128), link up, default routes via the link-local
/// gateways. Returns the pod interface's MAC.
pub(super) fn pod_side_links(
    ifname: &str,
    addrs: &[IpAddr],
    gw4: IpAddr,
    gw6: IpAddr,
) -> CniResultT<String> {
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
    pub(super) fn add(&self) -> CniResultT<Value> {
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
    pub(super) fn validate_add(&self) -> CniResultT<()> {
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

    pub(super) fn add_chained(&self) -> CniResultT<Value> {
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
    pub(super) fn find_host_peer(&self) -> CniResultT<String> {
        let ns = PathBuf::from(&self.env.netns);
        let ifname = self.env.ifname.clone();
        let pod = sys::in_netns(&ns, move || Ok(Nl::open()?.link(&ifname, 0)?))?;
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

    pub(super) fn add_standalone(&self) -> CniResultT<CniResult> {
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

    pub(super) fn setup_standalone(
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

    pub(super) fn setup_links(
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
}
