//! deploy/: the conflists parse as the runtime hands them to corral-cni
//! (cniVersion + name injected per plugin), corral-cni sits where each
//! mode needs it, and the DaemonSet installs the plugin and runs the
//! agent with the mounts it needs.

use std::path::{Path, PathBuf};

use corral_cni::types::NetConf;
use k8s_openapi::api::apps::v1::DaemonSet;
use serde::Deserialize;
use serde_json::{Value, json};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cni")
}

/// The per-plugin configs a runtime derives from a conflist.
fn plugin_configs(file: &str) -> (Value, Vec<Value>) {
    let p = deploy().join(file);
    let list: Value = serde_json::from_slice(
        &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap_or_else(|e| panic!("{file}: not JSON: {e}"));
    let plugins = list["plugins"].as_array().expect("plugins").clone();
    let v = list["cniVersion"].clone();
    let name = list["name"].clone();
    let cfgs = plugins
        .into_iter()
        .map(|mut p| {
            p["cniVersion"] = v.clone();
            p["name"] = name.clone();
            p
        })
        .collect();
    (list, cfgs)
}

#[test]
fn conflists_are_valid_for_corral_cni() {
    let cases = [
        ("10-corral.conflist", None),
        ("10-corral-chained-bridge.conflist", Some("bridge")),
        ("10-calico-corral.conflist", Some("calico")),
        ("10-flannel-corral.conflist", Some("flannel")),
    ];
    for (file, primary) in cases {
        let (list, cfgs) = plugin_configs(file);
        // podman 4.3 accepts conflists up to 1.0.0
        assert_eq!(list["cniVersion"], "1.0.0", "{file}");
        let idx = cfgs
            .iter()
            .position(|c| c["type"] == "corral-cni")
            .unwrap_or_else(|| panic!("{file}: no corral-cni plugin"));
        let mut c = cfgs[idx].clone();
        match primary {
            None => {
                assert_eq!(idx, 0, "{file}: standalone corral-cni must be the primary");
                let n = NetConf::parse(c.to_string().as_bytes())
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                assert_eq!(n.ipam_type.as_deref(), Some("host-local"), "{file}");
            }
            Some(p) => {
                assert_eq!(cfgs[0]["type"], p, "{file}");
                assert!(idx > 0, "{file}: chained corral-cni must follow {p}");
                assert!(c.get("ipam").is_none(), "{file}: chained needs no ipam");
                // as the runtime calls it: with the primary's result
                c["prevResult"] = json!({"cniVersion": "1.0.0", "interfaces": [], "ips": []});
                let n = NetConf::parse(c.to_string().as_bytes())
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                assert!(n.prev_result.is_some());
            }
        }
        let caps = &cfgs[idx]["capabilities"];
        assert_eq!(caps["bandwidth"], true, "{file}");
        assert_eq!(caps["io.kubernetes.cri.pod-annotations"], true, "{file}");
        assert_eq!(
            cfgs[idx]["agentSocket"],
            corral_dataplane_abi::api::DEFAULT_SOCKET,
            "{file}"
        );
    }
}

#[test]
fn daemonset_installs_plugin_and_runs_privileged_agent() {
    let p = deploy().join("corral-node.yaml");
    let text = std::fs::read_to_string(&p).expect("corral-node.yaml");
    let mut ds = None;
    let mut kinds = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = serde_yaml_ng::Value::deserialize(doc).expect("yaml");
        let kind = v["kind"].as_str().unwrap_or("").to_string();
        kinds.push(kind.clone());
        if kind == "DaemonSet" {
            ds = Some(serde_yaml_ng::from_value::<DaemonSet>(v).expect("DaemonSet schema"));
        }
    }
    for k in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
    ] {
        assert!(kinds.iter().any(|x| x == k), "missing {k}: {kinds:?}");
    }
    let ds = ds.expect("DaemonSet");
    let pod = ds.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    let vols = pod.volumes.clone().unwrap_or_default();
    let host_path = |name: &str| {
        vols.iter()
            .find(|v| v.name == name)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.clone())
            .unwrap_or_else(|| panic!("volume {name} is not a hostPath"))
    };
    let agent = pod
        .containers
        .iter()
        .find(|c| c.name == "corral-agent")
        .expect("agent container");
    assert_eq!(
        agent.security_context.as_ref().and_then(|s| s.privileged),
        Some(true)
    );
    let mounts = agent.volume_mounts.clone().unwrap_or_default();
    let mounted = |path: &str| {
        let m = mounts
            .iter()
            .find(|m| m.mount_path == path)
            .unwrap_or_else(|| panic!("agent does not mount {path}"));
        host_path(&m.name)
    };
    assert_eq!(mounted("/sys/fs/bpf"), "/sys/fs/bpf");
    assert_eq!(mounted("/run/corral"), "/run/corral");
    // standalone: the agent writes the node's CNI config from the template
    assert_eq!(mounted("/host/etc/cni/net.d"), "/etc/cni/net.d");
    let a = agent.args.clone().unwrap_or_default();
    assert!(
        a.contains(&"--cni-conf=/host/etc/cni/net.d/10-corral.conflist".to_string()),
        "{a:?}"
    );
    assert!(a.contains(&"--routing=native".to_string()), "{a:?}");
    let tpl = std::fs::read_to_string(deploy().join("10-corral.conflist")).expect("template");
    let me = corral_agent::routing::NodeInfo {
        name: "n1".into(),
        internal_ips: vec![],
        pod_cidrs: vec![
            ("10.244.1.0".parse().unwrap(), 24),
            ("fd00:1::".parse().unwrap(), 64),
        ],
    };
    let out: Value = serde_json::from_str(
        &corral_agent::routing::render_cni_conf(&tpl, &me, None).expect("template renders"),
    )
    .expect("json");
    assert_eq!(
        out["plugins"][0]["ipam"]["ranges"][1][0]["subnet"],
        "fd00:1::/64"
    );
    let args = agent.args.clone().unwrap_or_default().join(" ");
    assert!(
        args.contains(&format!(
            "--socket={}",
            corral_dataplane_abi::api::DEFAULT_SOCKET
        )),
        "{args}"
    );
    // Kubernetes policy source + node health need the node's name
    assert!(
        args.contains("--kube") && args.contains("--node-name=$(NODE_NAME)"),
        "{args}"
    );
    let node_env = agent
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.name == "NODE_NAME")
        .and_then(|e| e.value_from)
        .and_then(|v| v.field_ref)
        .map(|f| f.field_path);
    assert_eq!(node_env.as_deref(), Some("spec.nodeName"));
    let rbac = text
        .split("\n---\n")
        .find(|d| d.contains("kind: ClusterRole\n"))
        .expect("ClusterRole");
    assert!(
        rbac.contains("\"list\", \"watch\", \"patch\""),
        "agent must watch nodes"
    );
    for r in ["pods", "namespaces", "networkpolicies", "nodes"] {
        assert!(rbac.contains(r), "ClusterRole lacks {r}");
    }
    assert!(rbac.contains("\"patch\""), "agent must patch nodes");
    let init = pod
        .init_containers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.name == "install-cni")
        .expect("install-cni init container");
    let script = init.command.unwrap_or_default().join(" ");
    assert!(script.contains("corral-cni"), "{script}");
    let conflist = init
        .env
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.name == "CORRAL_CNI_CONFLIST")
        .and_then(|e| e.value)
        .expect("CORRAL_CNI_CONFLIST");
    assert!(
        deploy().join(&conflist).exists(),
        "{conflist} not in deploy/cni"
    );
    let imounts: Vec<String> = init
        .volume_mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| host_path(&m.name))
        .collect();
    assert!(imounts.contains(&"/opt/cni/bin".to_string()), "{imounts:?}");
    assert!(
        imounts.contains(&"/etc/cni/net.d".to_string()),
        "{imounts:?}"
    );
}
