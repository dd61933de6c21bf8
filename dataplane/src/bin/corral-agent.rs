//! corral-agent: loads and attaches the Corral eBPF data plane and serves
//! the local endpoint API. `corral-agent status` queries a running agent.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use corral_agent::agent::{self, Agent, CLASSES, Config};
use corral_agent::datapath::{AttachMode, DEFAULT_PIN_DIR};
use corral_agent::{kube_source, metrics, node_health};
use corral_dataplane_abi::api::{self, Request, Response, parse_bandwidth};

#[derive(Parser)]
#[command(name = "corral-agent", version, about = "Corral eBPF data plane agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// API socket (root-only)
    #[arg(long, default_value = api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// bpffs directory for pinned maps and links
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// directory for the endpoint registry
    #[arg(long, default_value = "/run/corral")]
    state_dir: PathBuf,
    /// static directory of NetworkPolicy/Pod/Namespace manifests
    #[arg(long)]
    manifests: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    attach: AttachMode,
    /// per-node aggregate budget per direction, e.g. 1G (bits/s)
    #[arg(long)]
    uplink_rate: Option<String>,
    /// minimum shares of critical,standard,bulk in percent of the uplink
    #[arg(long, default_value = "50,20,5")]
    min_shares: String,
    /// mark DSCP per class (critical,standard,bulk), e.g. 46,0,8
    #[arg(long)]
    dscp: Option<String>,
    /// address for Prometheus /metrics, /healthz and /readyz, e.g.
    /// 127.0.0.1:9465
    #[arg(long)]
    metrics_addr: Option<String>,
    /// also export per-pod series (corral_endpoint_*, 12 per pod); off by
    /// default: per-node aggregates only
    #[arg(long, requires = "metrics_addr")]
    pod_metrics: bool,
    /// Kubernetes policy source: watch Pods, Namespaces and NetworkPolicies
    /// with this kubeconfig (see --kube for the in-cluster config)
    #[arg(long, conflicts_with = "manifests")]
    kubeconfig: Option<PathBuf>,
    /// Kubernetes policy source with the in-cluster (or inferred) config
    #[arg(long, conflicts_with = "manifests")]
    kube: bool,
    /// this node's name (default: $NODE_NAME); needed with Kubernetes
    #[arg(long)]
    node_name: Option<String>,
    /// pods to watch: all (peers on other nodes resolved) or only this node's
    #[arg(long, value_enum, default_value = "all")]
    pod_scope: corral_agent::kube_source::PodScope,
    /// watch Nodes, for `nodes` egress peers of ClusterNetworkPolicy /
    /// AdminNetworkPolicy (off by default: Node status updates are
    /// frequent; without it such peers select no node)
    #[arg(long, conflicts_with = "manifests")]
    node_peers: bool,
    /// time between node network health samples, a Go duration (10s, 500ms;
    /// Kubernetes only)
    #[arg(long, default_value = "10s", value_parser = corral_api::duration::parse_positive)]
    health_interval: std::time::Duration,
    /// the node's uplink interface for link utilization/drops/errors
    /// (default: sum over the node's pods)
    #[arg(long)]
    uplink_iface: Option<String>,
    /// routes to the other nodes' pod CIDRs (Node objects): none, native
    /// (via each node's InternalIP, one L2) or vxlan (overlay)
    #[arg(long, value_enum, default_value = "none")]
    routing: corral_agent::routing::RoutingMode,
    /// CNI config to write with this node's pod CIDRs (Node.spec.podCIDRs)
    /// and, with vxlan, the overlay MTU
    #[arg(long)]
    cni_conf: Option<PathBuf>,
    /// template for --cni-conf (default: --cni-conf itself)
    #[arg(long, requires = "cni_conf")]
    cni_conf_template: Option<PathBuf>,
    /// VXLAN network identifier (--routing vxlan)
    #[arg(long, default_value_t = corral_agent::routing::DEFAULT_VNI)]
    vxlan_vni: u32,
    /// node device (uplink) that checks deferred egress verdicts of pod
    /// flows to Service backends on other nodes; repeatable (--routing
    /// adds the underlay and VXLAN devices itself)
    #[arg(long = "node-out-iface")]
    node_out_ifaces: Vec<String>,
    /// Corral translates Service traffic itself, so kube-proxy is not
    /// needed: ClusterIP TCP/UDP/SCTP → ready endpoints from EndpointSlices
    /// at the client pod's veth (policy on the backend), NodePorts from
    /// outside at the node devices (--routing's, --node-out-iface) with
    /// externalTrafficPolicy Cluster (SNAT) or Local. Services and
    /// EndpointSlices come from the Kubernetes source (watch) or --manifests.
    #[arg(long)]
    kube_proxy_replacement: bool,
    /// node addresses NodePorts are served on (--kube-proxy-replacement;
    /// comma-separated or repeated; default: the InternalIPs of this
    /// node's Node object)
    #[arg(long, value_delimiter = ',', requires = "kube_proxy_replacement")]
    nodeport_addresses: Vec<std::net::IpAddr>,
    /// VXLAN UDP port (--routing vxlan)
    #[arg(long, default_value_t = corral_agent::routing::DEFAULT_VXLAN_PORT)]
    vxlan_port: u16,
}

#[derive(Subcommand)]
enum Cmd {
    /// run the agent (default)
    Run,
    /// list endpoints with counters from a running agent
    Status {
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        output: String,
    },
    /// stream drop events from a running agent (time, pod, direction,
    /// 5-tuple, reason; for policy drops the deciding policy rule), like
    /// `cilium monitor --type drop`; runs until interrupted
    Monitor {
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// event type (only drops are emitted)
        #[arg(long = "type", value_parser = ["drop"], default_value = "drop")]
        kind: String,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// send one raw JSON API request (e.g. '{"op":"list"}') and print the
    /// JSON response; exits non-zero when the agent reports an error
    Call {
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
        request: String,
    },
}

fn triple<T: std::str::FromStr>(s: &str, what: &str) -> Result<[T; 3]> {
    let v: Vec<T> = s
        .split(',')
        .map(|x| x.trim().parse::<T>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("{what}: {s:?} is not three numbers"))?;
    match <[T; 3]>::try_from(v) {
        Ok(a) => Ok(a),
        Err(_) => bail!(
            "{what}: {s:?} needs exactly 3 values ({})",
            CLASSES.join(",")
        ),
    }
}

fn status(socket: &std::path::Path, output: &str) -> Result<()> {
    let resp = api::call_ok(socket, &Request::List)?;
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&resp)?);
        return Ok(());
    }
    let Response::Endpoints {
        endpoints,
        attach_mode,
        policy_entries,
        policy_errors,
        routing,
    } = resp
    else {
        bail!("unexpected agent response");
    };
    println!(
        "attach: {attach_mode}  policy entries: {policy_entries}  policy problems: {}",
        policy_errors.len()
    );
    for e in &policy_errors {
        println!("  ! {e}");
    }
    if let Some(r) = &routing {
        println!(
            "routing: {}  local pod CIDRs: {}  mtu: {}",
            r.mode,
            r.local_cidrs.join(","),
            r.mtu.map_or("-".into(), |m| m.to_string())
        );
        for (node, cidrs) in &r.routes {
            println!("  -> {node}: {}", cidrs.join(","));
        }
        for p in &r.problems {
            println!("  ! {p}");
        }
    }
    println!(
        "{:<28} {:<14} {:<9} {:<4} {:>12} {:>14} {:>9} {:>9} {:>9}",
        "POD", "IFACE", "CLASS", "POL", "DIR", "BYTES", "DROP_POL", "DROP_RATE", "DROP_CLS"
    );
    for e in &endpoints {
        for a in &e.ahead {
            println!(
                "  ! {}/{} {}: runs before Corral: {a}",
                e.spec.namespace, e.spec.name, e.spec.ifname
            );
        }
    }
    for e in &endpoints {
        let pol = format!(
            "{}{}",
            if e.policy_ingress { "I" } else { "-" },
            if e.policy_egress { "E" } else { "-" }
        );
        for (d, c) in [("ingress", &e.ingress), ("egress", &e.egress)] {
            println!(
                "{:<28} {:<14} {:<9} {:<4} {:>12} {:>14} {:>9} {:>9} {:>9}",
                format!("{}/{}", e.spec.namespace, e.spec.name),
                e.spec.ifname,
                e.class,
                pol,
                d,
                c.bytes,
                c.drop_policy,
                c.drop_rate,
                c.drop_class
            );
        }
        let by = if e.policies.is_empty() {
            "-".to_string()
        } else {
            e.policies.join("; ")
        };
        println!("  selected by: {by}");
    }
    Ok(())
}

fn monitor(socket: &std::path::Path, output: &str) -> Result<()> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| anyhow::anyhow!("connecting to agent at {}: {e}", socket.display()))?;
    let mut req = serde_json::to_vec(&Request::Monitor)?;
    req.push(b'\n');
    s.write_all(&req)?;
    let out = std::io::stdout();
    for line in std::io::BufReader::new(s).lines() {
        let line = line?;
        let mut o = out.lock();
        if output == "json" {
            writeln!(o, "{line}")?;
        } else {
            match serde_json::from_str::<corral_agent::monitor::Drop>(&line) {
                Ok(d) => writeln!(o, "{}", corral_agent::monitor::text(&d))?,
                // an error response (e.g. an agent without the stream)
                Err(_) => bail!("agent: {line}"),
            }
        }
        o.flush()?;
    }
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Status { socket, output }) => status(&socket, &output),
        Some(Cmd::Monitor {
            socket,
            kind: _,
            output,
        }) => monitor(&socket, &output),
        Some(Cmd::Call { socket, request }) => {
            let req: Request = serde_json::from_str(&request)
                .map_err(|e| anyhow::anyhow!("request is not a valid API request: {e}"))?;
            let resp = api::call(&socket, &req)?;
            println!("{}", serde_json::to_string(&resp)?);
            if let Response::Error { message } = resp {
                bail!("agent: {message}");
            }
            Ok(())
        }
        None | Some(Cmd::Run) => run(cli.run),
    }
}

fn run(a: RunArgs) -> Result<()> {
    let shares: [u16; 3] = triple(&a.min_shares, "--min-shares")?;
    if shares.iter().map(|s| u32::from(*s)).sum::<u32>() > 100 {
        bail!("--min-shares: sum above 100 %");
    }
    let dscp = a
        .dscp
        .as_deref()
        .map(|s| triple::<u8>(s, "--dscp"))
        .transpose()?;
    if dscp.is_some_and(|d| d.iter().any(|x| *x > 63)) {
        bail!("--dscp: values must be 0-63");
    }
    let kube = a.kube || a.kubeconfig.is_some();
    use corral_agent::routing::{self, RoutingMode};
    let nodes = a.routing != RoutingMode::None || a.cni_conf.is_some();
    let node_name = match (
        kube || nodes,
        a.node_name.clone(),
        std::env::var("NODE_NAME"),
    ) {
        (false, n, _) => n.unwrap_or_default(),
        (true, Some(n), _) => n,
        (true, None, Ok(n)) if !n.is_empty() => n,
        (true, None, _) => bail!(
            "--node-name (or $NODE_NAME) is required with Kubernetes, --routing and --cni-conf"
        ),
    };
    if nodes && !kube && a.manifests.is_none() {
        bail!("--routing/--cni-conf need Node objects: give --kube, --kubeconfig or --manifests");
    }
    if a.vxlan_vni == 0 || a.vxlan_vni >= 1 << 24 {
        bail!("--vxlan-vni: {} is not in 1..16777215", a.vxlan_vni);
    }
    if a.vxlan_port == 0 {
        bail!("--vxlan-port: 0 is not a port");
    }
    let routing_opts = nodes.then(|| routing::Options {
        mode: a.routing,
        node_name: node_name.clone(),
        vni: a.vxlan_vni,
        vxlan_port: a.vxlan_port,
        cni_conf: a.cni_conf.clone(),
        cni_conf_template: a.cni_conf_template.clone(),
    });
    if !(a.health_interval.as_secs_f64() >= 0.1 && a.health_interval.as_secs_f64() <= 3600.0) {
        bail!(
            "--health-interval: {} is not between 100ms and 1h",
            corral_api::duration::format(a.health_interval)
        );
    }
    if !kube {
        // a cache from an earlier Kubernetes run must not be enforced
        kube_source::remove_cache(&a.state_dir);
    }
    let uplink_bps = a
        .uplink_rate
        .as_deref()
        .map(parse_bandwidth)
        .transpose()?
        .unwrap_or(0);
    let cfg = Config {
        pin_dir: a.pin_dir,
        state_dir: a.state_dir,
        socket: a.socket,
        manifests: a.manifests,
        attach: a.attach,
        uplink_bps,
        min_share_permille: shares.map(|s| s * 10),
        dscp,
        routing: routing_opts,
        node_out_ifaces: a.node_out_ifaces.clone(),
        kube_proxy_replacement: a.kube_proxy_replacement,
        node_name: node_name.clone(),
        nodeport_addresses: a.nodeport_addresses.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let metrics_addr = a.metrics_addr.clone();
        let agent = Arc::new(Mutex::new(
            tokio::task::spawn_blocking(move || Agent::new(cfg)).await??,
        ));
        tokio::spawn(agent::watch_manifests(agent.clone()));
        let (ring, mon) = {
            let mut g = agent
                .lock()
                .map_err(|_| anyhow::anyhow!("agent state poisoned"))?;
            (g.take_events(), g.monitor())
        };
        if let Some(ring) = ring {
            std::thread::Builder::new()
                .name("drop-events".into())
                .spawn(move || corral_agent::monitor::run(ring, mon))?;
        }
        let mut client = None;
        if kube {
            let c = kube_source::client(a.kubeconfig.as_deref()).await?;
            kube_source::spawn(
                c.clone(),
                kube_source::Options {
                    node_name: node_name.clone(),
                    pod_scope: a.pod_scope,
                    node_peers: a.node_peers,
                    // the Node watch also gives NodePort addresses
                    routing: nodes || a.kube_proxy_replacement,
                    lb: a.kube_proxy_replacement,
                },
                agent.clone(),
            );
            client = Some(c);
        }
        // node health: Node annotations (Kubernetes) and /metrics gauges
        if client.is_some() || metrics_addr.is_some() {
            tokio::spawn(node_health::run(
                client,
                node_health::Options {
                    node_name,
                    interval: a.health_interval,
                    uplink_iface: a.uplink_iface.clone(),
                    uplink_bps,
                },
                agent.clone(),
            ));
        }
        if let Some(addr) = metrics_addr {
            let a2 = agent.clone();
            let opts = metrics::Options {
                pod_metrics: a.pod_metrics,
            };
            tokio::spawn(async move {
                if let Err(e) = metrics::serve(a2, addr.clone(), opts).await {
                    tracing::error!(error = %e, %addr, "metrics server");
                }
            });
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let r = tokio::select! {
            r = agent::serve(agent.clone()) => r.map(|()| "API server end"),
            _ = tokio::signal::ctrl_c() => Ok("SIGINT"),
            _ = term.recv() => Ok("SIGTERM"),
        };
        let sig = r?;
        // graceful: let a request being handled finish (it holds the
        // lock), then leave; programs, links and maps stay pinned, so
        // enforcement continues without the process
        let a2 = agent.clone();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::task::spawn_blocking(move || drop(a2.lock())),
        )
        .await;
        tracing::info!(signal = sig, "stopping; pinned state stays enforced");
        Ok(())
    })
}
