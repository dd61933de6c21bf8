//! CNI runtime scaffolding shared by the CNI tests: the reference plugins,
//! pod sandbox netns, and executing a plugin like a runtime (env + stdin,
//! inside the node netns).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{must, sh};

/// Where Debian's containernetworking-plugins live.
pub const REF: &str = "/usr/lib/cni";

static NS_SEQ: AtomicU32 = AtomicU32::new(0);

pub fn cni_bin() -> &'static str {
    env!("CARGO_BIN_EXE_corral-cni")
}

/// CNI_PATH: the reference plugins, then corral-cni's directory.
pub fn cni_path() -> String {
    let dir = Path::new(cni_bin()).parent().expect("bin dir");
    format!("{REF}:{}", dir.display())
}

/// The reference `plugins` must be installed (fails under CI=true).
pub fn refs_ok(test: &str, plugins: &[&str]) -> bool {
    let ok = plugins.iter().all(|p| Path::new(REF).join(p).exists());
    if !ok {
        let why = format!("{test}: needs containernetworking-plugins in {REF}");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("SKIP {why}");
    }
    ok
}

/// A pod sandbox netns named `<prefix><pid>x<n>`; deleted on drop.
pub struct PodNs(pub String);

impl PodNs {
    pub fn new(prefix: &str) -> PodNs {
        let n = format!(
            "{prefix}{:x}x{}",
            std::process::id() & 0xffff,
            NS_SEQ.fetch_add(1, Ordering::SeqCst)
        );
        must(&["ip", "netns", "add", &n]);
        PodNs(n)
    }
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        let mut v = vec!["ip", "netns", "exec", &self.0];
        v.extend_from_slice(args);
        sh(&v)
    }
}

impl Drop for PodNs {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.0]);
    }
}

/// What a plugin run returned: exit code and stdout.
pub struct Out {
    pub code: i32,
    pub raw: String,
}

/// Executes `plugin` inside netns `node_netns` like a runtime: a clean
/// environment with `CNI_COMMAND`, `CORRAL_CNI_LOG` and the non-empty
/// `env` pairs (`CNI_PATH`, `CNI_CONTAINERID`, ...), `stdin` (the config);
/// bounded by 60 s.
pub fn run_plugin(
    node_netns: &str,
    plugin: &str,
    cmd: &str,
    env: &[(&str, &str)],
    log: &Path,
    stdin: &[u8],
) -> Out {
    let mut c = Command::new("timeout");
    c.arg("60")
        .arg("nsenter")
        .arg(format!("--net=/var/run/netns/{node_netns}"))
        .arg(plugin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", cmd)
        .env("CORRAL_CNI_LOG", log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        if !v.is_empty() {
            c.env(k, v);
        }
    }
    let mut child = c.spawn().expect("spawn plugin");
    {
        use std::io::Write;
        let mut si = child.stdin.take().expect("stdin");
        si.write_all(stdin).expect("stdin write");
    }
    let o = child.wait_with_output().expect("plugin wait");
    Out {
        code: o.status.code().unwrap_or(-1),
        raw: String::from_utf8_lossy(&o.stdout).to_string(),
    }
}
