//! corral-cni network config types through the real binary: every field with a
//! wrong type is error code 7 naming the field (the plugin used to fall back to the
//! default log file for a non-string `logFile`); oversized or deeply nested stdin
//! is a decode error (code 6) naming the limit. Nothing here touches the network:
//! the config is rejected before any namespace is entered.

use std::io::Write;
use std::process::{Command, Stdio};

use corral_cni::types::NetConf;
use serde_json::{Value, json};

fn base() -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "hostile-net",
        "type": "corral-cni",
        "mtu": 1500,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.0.0/24"}]]},
        "runtimeConfig": {"ips": ["198.18.0.5/24"], "bandwidth": {"ingressRate": 1000, "ingressBurst": 1000},
                          "io.kubernetes.cri.pod-annotations": {"a": "b"}},
        "agentSocket": "/run/corral-hostile-test/agent.sock",
        "dataDir": "/tmp/corral-hostile-test",
        "logFile": "/tmp/corral-hostile-test.log",
        "dns": {"nameservers": ["192.0.2.53"]},
        "args": {"cni": {}},
        "capabilities": {"ips": true},
    })
}

/// Runs the binary with ADD and `stdin`; returns (exit code, stdout JSON).
fn add(stdin: &[u8]) -> (i32, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral-cni"))
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "hostile-cid")
        .env("CNI_NETNS", "/var/run/netns/corral-hostile-none")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn corral-cni");
    {
        let mut si = child.stdin.take().expect("stdin");
        // The plugin may stop reading at its limit: a broken pipe is fine.
        let _ = si.write_all(stdin);
    }
    let out = child.wait_with_output().expect("wait");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn every_wrong_typed_field_is_code_7_naming_it() {
    // The base config is valid (the parser accepts it).
    NetConf::parse(base().to_string().as_bytes()).expect("base config parses");
    let cases: &[(&str, Value)] = &[
        ("logFile", json!(5)),
        ("logFile", json!(["/tmp/x"])),
        ("logFile", json!({"path": "/tmp/x"})),
        ("logFile", json!(true)),
        ("logFile", json!("relative.log")),
        ("name", json!(7)),
        ("type", json!(["corral-cni"])),
        ("mtu", json!("1500")),
        ("mtu", json!(-1)),
        ("mtu", json!(1.5)),
        ("ipam", json!("host-local")),
        ("runtimeConfig", json!([1])),
        ("prevResult", json!("x")),
        ("agentSocket", json!(1)),
        ("dataDir", json!(false)),
        ("cni.dev/valid-attachments", json!("x")),
        ("dns", json!("8.8.8.8")),
        ("args", json!([])),
        ("capabilities", json!(1)),
    ];
    for (field, bad) in cases {
        let mut c = base();
        c[*field] = bad.clone();
        let (code, v) = add(c.to_string().as_bytes());
        assert_eq!(code, 7, "{field} = {bad}: {v}");
        assert_eq!(v["code"], 7, "{field} = {bad}: {v}");
        let msg = v["msg"].as_str().unwrap_or("");
        assert!(
            msg.contains(field),
            "{field} = {bad}: message does not name it: {v}"
        );
        assert_eq!(v["cniVersion"], "1.1.0", "{v}");
    }
    // Nested fields name their parent and the field.
    for (path, bad) in [
        (("runtimeConfig", "ips"), json!("198.18.0.5")),
        (("runtimeConfig", "bandwidth"), json!(5)),
        (
            ("runtimeConfig", "io.kubernetes.cri.pod-annotations"),
            json!([1]),
        ),
        (("ipam", "type"), json!(5)),
    ] {
        let mut c = base();
        c[path.0][path.1] = bad.clone();
        let (code, v) = add(c.to_string().as_bytes());
        assert_eq!(code, 7, "{path:?} = {bad}: {v}");
        let msg = v["msg"].as_str().unwrap_or("");
        assert!(
            msg.contains(path.0) || msg.contains(path.1),
            "{path:?}: {v}"
        );
    }
}

#[test]
fn deep_or_oversized_stdin_is_a_decode_error_naming_the_limit() {
    let (code, v) = add("[".repeat(100_000).as_bytes());
    assert_eq!(code, 6, "{v}");
    assert!(
        v["msg"].as_str().unwrap_or("").contains("limit of 100"),
        "{v}"
    );
    let mut c = base();
    c["pad"] = json!("x".repeat(corral_limits::MAX_CNI_CONFIG_BYTES));
    let (code, v) = add(c.to_string().as_bytes());
    assert_eq!(code, 6, "{v}");
    assert!(
        v["msg"].as_str().unwrap_or("").contains(&format!(
            "limit of {} bytes",
            corral_limits::MAX_CNI_CONFIG_BYTES
        )),
        "{v}"
    );
}
