//! Side effects of the plugin: iproute2 batches (optionally inside the
//! pod's network namespace), delegated plugin execution, the node-wide
//! lock and the log file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::types::{CniError, CniResultT, code};

/// Runs `f` on a thread that entered the network namespace at `netns`
/// (children it spawns inherit that namespace).
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> CniResultT<T> + Send + 'static,
) -> CniResultT<T> {
    let path = netns.to_path_buf();
    std::thread::spawn(move || {
        let fd = File::open(&path).map_err(|e| {
            CniError::new(
                code::CONTAINER_UNKNOWN,
                format!("network namespace {}: {e}", path.display()),
            )
        })?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&fd),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| {
            CniError::new(
                code::CONTAINER_UNKNOWN,
                format!("{} is not a network namespace: {e}", path.display()),
            )
        })?;
        f()
    })
    .join()
    .unwrap_or_else(|_| Err(CniError::new(code::IO, "netns worker thread failed")))
}

/// Runs `ip [-j] -batch -` with `cmds` in the current network namespace.
/// Returns stdout; an iproute2 error becomes code 100 naming the command.
pub fn ip_batch(cmds: &[String], json: bool) -> CniResultT<String> {
    let mut c = Command::new(ip_bin());
    if json {
        c.arg("-j");
    }
    let mut child = c
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::new(code::IO, format!("running ip (iproute2): {e}")))?;
    let input = cmds.join("\n") + "\n";
    if let Some(mut si) = child.stdin.take() {
        si.write_all(input.as_bytes())
            .map_err(|e| CniError::new(code::IO, format!("writing to ip: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(code::IO, format!("waiting for ip: {e}")))?;
    if !out.status.success() {
        return Err(CniError::new(
            code::LINK,
            format!(
                "ip: {}",
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', "; ")
            ),
        )
        .details(input.trim().replace('\n', "; ")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs one `ip <args>` (for global options like -6/-d, which batch
/// lines do not take).
pub fn ip_args(args: &[&str]) -> CniResultT<String> {
    let out = Command::new(ip_bin())
        .args(args)
        .output()
        .map_err(|e| CniError::new(code::IO, format!("running ip (iproute2): {e}")))?;
    if !out.status.success() {
        return Err(CniError::new(
            code::LINK,
            format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', "; ")
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// iproute2's `ip`: runtimes may exec plugins without PATH.
fn ip_bin() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("ip")
}

/// Like [`ip_batch`] inside `netns` (or here when None).
pub fn ip_batch_in(netns: Option<&Path>, cmds: Vec<String>, json: bool) -> CniResultT<String> {
    match netns {
        None => ip_batch(&cmds, json),
        Some(ns) => in_netns(ns, move || ip_batch(&cmds, json)),
    }
}

/// `ip -j link show dev <ifname>` → its JSON object, None when absent.
pub fn link_show(netns: Option<&Path>, ifname: &str) -> CniResultT<Option<Value>> {
    match ip_batch_in(netns, vec![format!("link show dev {ifname}")], true) {
        Ok(s) => Ok(first_json(&s)),
        Err(e) if e.msg.contains("does not exist") || e.msg.contains("Cannot find device") => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The first object of iproute2's JSON array output.
pub fn first_json(s: &str) -> Option<Value> {
    // batch mode may print one array per command
    for line in s.lines() {
        if let Ok(Value::Array(a)) = serde_json::from_str::<Value>(line)
            && let Some(v) = a.into_iter().next()
        {
            return Some(v);
        }
    }
    None
}

/// Writes a sysctl of the current network namespace (/proc/sys/net is per
/// namespace of the writing thread).
pub fn sysctl(key: &str, val: &str) -> CniResultT<()> {
    let p = format!("/proc/sys/{}", key.replace('.', "/"));
    if std::fs::read_to_string(&p).is_ok_and(|v| v.trim() == val) {
        return Ok(());
    }
    std::fs::write(&p, val).map_err(|e| CniError::new(code::IO, format!("sysctl {key}={val}: {e}")))
}

/// Finds plugin `name` in CNI_PATH.
pub fn find_plugin(cni_path: &str, name: &str) -> CniResultT<PathBuf> {
    for d in cni_path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(d).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(CniError::new(
        code::INVALID_CONFIG,
        format!("plugin {name:?} not found in CNI_PATH {cni_path:?}"),
    ))
}

/// The environment of a delegated plugin call.
pub struct DelegateEnv<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
    pub path: &'a str,
}

/// CNI_ARGS for a delegate: with `IgnoreUnknown=1`, since Go plugins
/// reject K8S_POD_* otherwise (podman passes K8S_POD_NAME without it).
pub fn delegate_args(args: &str) -> String {
    if args.is_empty()
        || args.split(';').any(|kv| {
            kv.eq_ignore_ascii_case("IgnoreUnknown=1")
                || kv.eq_ignore_ascii_case("IgnoreUnknown=true")
        })
    {
        args.to_string()
    } else {
        format!("IgnoreUnknown=1;{args}")
    }
}

/// Executes a delegated plugin (e.g. IPAM) per the spec: env + stdin.
/// Its error JSON is passed through (code and message); a crash without
/// error JSON becomes code 102.
pub fn exec_plugin(plugin: &Path, env: &DelegateEnv, stdin: &[u8]) -> CniResultT<Option<Value>> {
    let name = plugin
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", env.command)
        .env("CNI_CONTAINERID", env.container_id)
        .env("CNI_NETNS", env.netns)
        .env("CNI_IFNAME", env.ifname)
        .env("CNI_ARGS", delegate_args(env.args))
        .env("CNI_PATH", env.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::new(code::IO, format!("executing {}: {e}", plugin.display())))?;
    if let Some(mut si) = child.stdin.take() {
        // a plugin that fails early may not read stdin: its exit status
        // and error JSON below tell why
        if let Err(e) = si.write_all(stdin)
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(CniError::new(
                code::IO,
                format!("writing config to {name}: {e}"),
            ));
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(code::IO, format!("waiting for {name}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if let Ok(e) = serde_json::from_str::<CniError>(&stdout) {
            return Err(CniError {
                msg: format!("{name} ({}): {}", env.command, e.msg),
                ..e
            });
        }
        return Err(CniError::new(
            code::IPAM,
            format!("{name} ({}) failed: {}", env.command, out.status),
        )
        .details(format!(
            "{}{}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if stdout.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&stdout).map(Some).map_err(|e| {
        CniError::new(
            code::DECODE,
            format!("{name} ({}) printed no valid JSON: {e}", env.command),
        )
    })
}

/// A node-wide exclusive lock (flock on `<dir>/lock`), taken with a bound
/// wait; released on drop (also when the process dies).
pub struct Lock(#[allow(dead_code)] File);

impl Lock {
    pub fn take(dir: &Path, wait: Duration) -> CniResultT<Lock> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CniError::new(code::IO, format!("creating {}: {e}", dir.display())))?;
        let p = dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| CniError::new(code::IO, format!("opening {}: {e}", p.display())))?;
        let t = Instant::now();
        loop {
            match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Lock(f)),
                Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return Err(CniError::new(
                        code::IO,
                        format!("locking {}: {e}", p.display()),
                    ));
                }
            }
            if t.elapsed() > wait {
                return Err(CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!("{} is busy (waited {wait:?})", p.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Appends one line to the log file; logging never fails the command.
pub fn log(file: &Path, line: &str) {
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(file) {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let _ = writeln!(f, "{ts:.3} [{}] {line}", std::process::id());
    }
}
