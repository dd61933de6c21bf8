//! Fuzz targets (stable Rust, proptest-driven mutation of a seed corpus) for the
//! data plane's input paths: the CNI network config parser (plus the whole plugin
//! entry point with a command that fails before touching the network), the agent's
//! socket protocol (framing, limits and request decoding through a real unix
//! socket), and NetworkPolicy/Pod manifests read by the agent. A target fails on a
//! panic; errors are the expected outcome. Long run:
//!
//! ```text
//! CORRAL_FUZZ_CASES=20000 cargo test --release -p corral-dataplane --test fuzz
//! ```

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use corral_agent::serve_limits::{LineLimits, Reply, serve_lines};
use corral_cni::types::NetConf;
use corral_dataplane_abi::api::{Request, Response};
use corral_limits::mutate::{Op, cases, mutate};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cni_seeds() -> &'static [Vec<u8>] {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        let mut seeds = Vec::new();
        let dir = root().join("deploy/cni");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("deploy/cni")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
            .collect();
        files.sort();
        for f in files {
            // A conflist: each plugin config as the runtime hands it over.
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&f).expect("read")).expect("conflist");
            for p in v["plugins"].as_array().into_iter().flatten() {
                let mut p = p.clone();
                p["cniVersion"] = v["cniVersion"].clone();
                p["name"] = v["name"].clone();
                p["prevResult"] = serde_json::json!({"cniVersion": "1.0.0",
                    "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
                    "ips": [{"address": "198.18.0.5/24", "interface": 0}]});
                seeds.push(p.to_string().into_bytes());
            }
        }
        seeds.push(
            br#"{"cniVersion":"1.1.0","name":"n","type":"corral-cni","logFile":5,"runtimeConfig":{"ips":["198.18.0.5/24"],"bandwidth":{"ingressRate":1000}}}"#
                .to_vec(),
        );
        seeds
    })
}

fn agent_seeds() -> Vec<Vec<u8>> {
    let ep = serde_json::json!({"ifname": "vethfuzz0", "namespace": "ns", "name": "p",
        "ips": ["198.18.0.9"], "annotations": {"kubernetes.io/egress-bandwidth": "10M"}});
    vec![
        format!("{}\n", serde_json::json!({"op": "register", "endpoint": ep})).into_bytes(),
        format!("{}\n", serde_json::json!({"op": "update", "endpoint": ep})).into_bytes(),
        b"{\"op\":\"deregister\",\"ifname\":\"vethfuzz0\"}\n{\"op\":\"list\"}\n{\"op\":\"reconcile\"}\n"
            .to_vec(),
        format!("{}\n", "[".repeat(300)).into_bytes(),
    ]
}

fn policy_seeds() -> &'static [Vec<u8>] {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        let mut seeds = vec![
            b"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: a}\nspec:\n  podSelector: {matchLabels: {app: x}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from: [{ipBlock: {cidr: 198.18.0.0/16, except: [198.18.1.0/24]}}, {namespaceSelector: {matchExpressions: [{key: t, operator: In, values: [a]}]}}]\n    ports: [{protocol: TCP, port: 80, endPort: 90}]\n  egress: [{to: [{podSelector: {}}]}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a, labels: {app: x}}\nstatus: {podIPs: [{ip: 198.18.0.5}]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {t: a}}\n"
                .to_vec(),
        ];
        let dir = root().join("deploy");
        for f in ["cni/corral-node.yaml"] {
            if let Ok(t) = std::fs::read(dir.join(f)) {
                seeds.push(t);
            }
        }
        seeds
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u32>(), any::<u8>()).prop_map(|(p, x)| Op::Flip(p, x)),
        4 => (any::<u32>(), any::<u32>()).prop_map(|(p, t)| Op::Token(p, t)),
        2 => (any::<u32>(), 0u16..64).prop_map(|(p, n)| Op::Delete(p, n)),
        2 => (any::<u32>(), 0u16..512, any::<u32>()).prop_map(|(f, n, t)| Op::Dup(f, n, t)),
        1 => (any::<u32>(), any::<u32>(), 0u16..3000).prop_map(|(p, t, n)| Op::Repeat(p, t, n)),
        1 => any::<u32>().prop_map(Op::Truncate),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 0..10)
}

/// The agent's request handling minus the kernel: decode, then validate what the
/// agent validates before touching maps (bandwidth annotations).
fn decode(line: String) -> Vec<u8> {
    let resp = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
        Ok(Request::Register { endpoint } | Request::Update { endpoint }) => {
            for v in endpoint.annotations.values() {
                let _ = corral_dataplane_abi::api::parse_bandwidth(v);
            }
            Response::Ok {
                message: endpoint.ifname,
            }
        }
        Ok(_) => Response::Ok {
            message: String::new(),
        },
    };
    serde_json::to_vec(&resp).expect("response")
}

struct SocketServer {
    _dir: tempfile::TempDir,
    path: PathBuf,
    rt: tokio::runtime::Runtime,
}

fn socket_server() -> &'static SocketServer {
    static S: OnceLock<SocketServer> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.sock");
        let l = rt.block_on(async { tokio::net::UnixListener::bind(&path).expect("bind") });
        let lim = LineLimits {
            max_line: 64 << 10,
            idle: Duration::from_secs(2),
            max_connections: 16,
        };
        rt.spawn(serve_lines(
            l,
            lim,
            |line: String| async move { Reply::Line(decode(line)) },
            |message: String| serde_json::to_vec(&Response::Error { message }).expect("json"),
        ));
        SocketServer {
            _dir: dir,
            path,
            rt,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), ..ProptestConfig::default() })]

    #[test]
    fn fuzz_cni_config(i in any::<prop::sample::Index>(), ops in ops()) {
        let seeds = cni_seeds();
        let input = mutate(&seeds[i.index(seeds.len())], &ops);
        if let Err(e) = NetConf::parse(&input) {
            // Spec error codes only.
            prop_assert!(matches!(e.code, 1 | 2 | 6 | 7), "{e:?}");
        }
        // The whole entry point, with a command that fails before the network
        // (VERSION never reads the config; an unknown command is code 4 — with the
        // config mutated first, decode and type errors come first for ADD/CHECK too,
        // but those may reach the network, so they are left to cni_config.rs).
        let env: std::collections::HashMap<String, String> = [
            ("CNI_COMMAND", "BOGUS"),
            ("CORRAL_CNI_LOG", "/dev/null"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (out, code) = corral_cni::run(&env, &input);
        prop_assert_eq!(code, 4, "{}", out);
        let v: serde_json::Value = serde_json::from_str(&out).expect("error JSON");
        prop_assert_eq!(v["code"].as_u64(), Some(4));
    }

    /// The socket protocol through a real unix socket: every request line gets
    /// exactly one response line (an over-long line ends the connection after its
    /// error), nothing hangs beyond the idle timeout.
    #[test]
    fn fuzz_agent_socket_protocol(i in any::<prop::sample::Index>(), ops in ops()) {
        let seeds = agent_seeds();
        let mut input = mutate(&seeds[i.index(seeds.len())], &ops);
        if !input.ends_with(b"\n") {
            input.push(b'\n');
        }
        let srv = socket_server();
        let lines = input.iter().filter(|&&b| b == b'\n').count();
        let out = srv.rt.block_on(async {
            let s = tokio::net::UnixStream::connect(&srv.path).await.expect("connect");
            let (mut r, mut w) = s.into_split();
            let req = input.clone();
            tokio::spawn(async move {
                let _ = w.write_all(&req).await;
                let _ = w.shutdown().await;
            });
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut out)).await;
            out
        });
        let got = out.iter().filter(|&&b| b == b'\n').count();
        let too_long = input.split(|&b| b == b'\n').any(|l| l.len() > 64 << 10);
        if too_long {
            prop_assert!(got <= lines, "{got} responses for {lines} lines");
        } else {
            prop_assert_eq!(got, lines);
        }
        for l in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            prop_assert!(serde_json::from_slice::<Response>(l).is_ok(), "{}", String::from_utf8_lossy(l));
        }
    }

    #[test]
    fn fuzz_policy_manifests(i in any::<prop::sample::Index>(), ops in ops()) {
        let seeds = policy_seeds();
        let input = mutate(&seeds[i.index(seeds.len())], &ops);
        let mut m = corral_agent::policy::source::Manifests::default();
        corral_agent::policy::source::parse_text(&String::from_utf8_lossy(&input), "fuzz.yaml", &mut m);
        for e in &m.errors {
            prop_assert!(e.contains("fuzz.yaml"), "{e}");
        }
    }
}
