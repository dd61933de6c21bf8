//! Drop-event stream (`corral-agent monitor`, like `cilium monitor --type
//! drop`): the programs write one record per dropped packet into the ring
//! buffer `corral_events` while a monitor client is connected (switch
//! `corral_monitor`); this module reads it, names the pod and the deciding
//! policy rule, and fans the events out to the connected clients.
//!
//! Best effort by design: when the clients (or this reader) fall behind,
//! the kernel finds the ring full and the event is lost (counted in
//! `lost`); the drop itself is unaffected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use aya::maps::{MapData, RingBuf};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::warn;

use crate::abi::{
    DIR_INGRESS, DROP_CLASS, DROP_MALFORMED, DROP_POLICY, DROP_RATE, DropEvent, RULE_NP,
};

/// One drop as streamed to clients (one JSON object per line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Drop {
    /// wall-clock time, seconds since the Unix epoch
    pub time: f64,
    /// `namespace/name` of the endpoint (or `ifindex N` if unknown)
    pub pod: String,
    pub direction: String,
    pub protocol: String,
    pub src: String,
    pub dst: String,
    /// policy | rate | class_budget | malformed
    pub reason: String,
    /// policy drops: the rule that decided
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub bytes: u32,
}

/// What the reader needs to name things; updated by the agent.
#[derive(Default)]
struct Names {
    pods: HashMap<u32, String>,
    rules: Vec<String>,
}

pub struct Monitor {
    tx: broadcast::Sender<Drop>,
    names: Mutex<Names>,
    clients: AtomicUsize,
    /// events not delivered to a slow client
    pub lost: AtomicU64,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor {
            tx: broadcast::channel(4096).0,
            names: Mutex::new(Names::default()),
            clients: AtomicUsize::new(0),
            lost: AtomicU64::new(0),
        }
    }
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        1 => "ICMP".into(),
        58 => "ICMPv6".into(),
        n => format!("proto-{n}"),
    }
}

fn addr(a: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn endpoint(a: [u8; 16], port: u16, proto: u8) -> String {
    let ip = addr(a);
    if matches!(proto, 6 | 17 | 132) {
        match ip {
            IpAddr::V4(v) => format!("{v}:{port}"),
            IpAddr::V6(v) => format!("[{v}]:{port}"),
        }
    } else {
        ip.to_string()
    }
}

/// CLOCK_MONOTONIC now, in ns (the programs' bpf_ktime_get_ns clock).
fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl Monitor {
    /// Pod names by ifindex and the tier rule table (ids in events).
    pub fn set_names(&self, pods: HashMap<u32, String>, rules: Vec<String>) {
        if let Ok(mut n) = self.names.lock() {
            n.pods = pods;
            n.rules = rules;
        }
    }

    /// A new client; the returned count is the number of clients now.
    pub fn subscribe(&self) -> (broadcast::Receiver<Drop>, usize) {
        let rx = self.tx.subscribe();
        (rx, self.clients.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// A client left; returns the number of clients still connected.
    pub fn unsubscribe(&self) -> usize {
        self.clients
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1)
    }

    pub fn describe(&self, e: &DropEvent) -> Drop {
        let names = self.names.lock().ok();
        let pod = names
            .as_ref()
            .and_then(|n| n.pods.get(&e.ifindex).cloned())
            .unwrap_or_else(|| format!("ifindex {}", e.ifindex));
        let reason = match e.reason {
            DROP_POLICY => "policy",
            DROP_RATE => "rate",
            DROP_CLASS => "class_budget",
            DROP_MALFORMED => "malformed",
            _ => "unknown",
        };
        let rule = (e.reason == DROP_POLICY).then(|| {
            if e.rule == RULE_NP {
                "NetworkPolicy isolation (no NetworkPolicy rule allows)".to_string()
            } else {
                names
                    .as_ref()
                    .and_then(|n| n.rules.get(e.rule as usize).cloned())
                    .unwrap_or_else(|| format!("tier rule #{}", e.rule))
            }
        });
        let now_mono = mono_ns();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let age = now_mono.saturating_sub(e.time_ns) as f64 / 1e9;
        Drop {
            time: wall - age,
            pod,
            direction: if u32::from(e.dir) == DIR_INGRESS {
                "ingress"
            } else {
                "egress"
            }
            .into(),
            protocol: proto_name(e.proto),
            src: endpoint(e.saddr, e.sport, e.proto),
            dst: endpoint(e.daddr, e.dport, e.proto),
            reason: reason.into(),
            rule,
            bytes: e.len,
        }
    }
}

/// Reads the ring buffer until the process ends (a dedicated thread:
/// poll(2) on the ring's fd, then drain it).
pub fn run(mut ring: RingBuf<MapData>, mon: std::sync::Arc<Monitor>) {
    use rustix::event::{PollFd, PollFlags, poll};
    let timeout = rustix::event::Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    loop {
        let ready = {
            let mut fds = [PollFd::new(&ring, PollFlags::IN)];
            poll(&mut fds, Some(&timeout))
        };
        if let Err(e) = ready
            && e != rustix::io::Errno::INTR
        {
            warn!(error = %e, "drop events: poll failed; stream stopped");
            return;
        }
        while let Some(item) = ring.next() {
            if let Some(e) = DropEvent::from_bytes(&item) {
                // no receiver: nobody is watching (the switch goes off
                // when the last client leaves)
                let _ = mon.tx.send(mon.describe(&e));
            }
        }
    }
}

/// Text line for `corral-agent monitor` (cilium-monitor-like).
pub fn text(d: &Drop) -> String {
    let secs = d.time as u64;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let ms = ((d.time.fract()) * 1000.0) as u64;
    format!(
        "{h:02}:{m:02}:{s:02}.{ms:03} xx drop ({}) {} {} {} {} -> {}{}",
        d.reason,
        d.pod,
        d.direction,
        d.protocol,
        d.src,
        d.dst,
        d.rule
            .as_ref()
            .map(|r| format!(" rule: {r}"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_policy_drop_with_rule() {
        let m = Monitor::default();
        m.set_names(
            [(7, "x/web".to_string())].into(),
            vec![
                "default".into(),
                "np".into(),
                "np deny".into(),
                "clusternetworkpolicy a ingress[0] (Deny)".into(),
            ],
        );
        let mut e = DropEvent {
            ifindex: 7,
            dir: DIR_INGRESS as u8,
            reason: DROP_POLICY,
            proto: 6,
            rule: 3,
            sport: 40000,
            dport: 80,
            len: 60,
            time_ns: mono_ns(),
            ..Default::default()
        };
        e.saddr = crate::abi::addr16("198.18.1.2".parse().unwrap());
        e.daddr = crate::abi::addr16("2001:db8::2".parse().unwrap());
        let d = m.describe(&e);
        assert_eq!(d.pod, "x/web");
        assert_eq!(d.src, "198.18.1.2:40000");
        assert_eq!(d.dst, "[2001:db8::2]:80");
        assert_eq!(
            d.rule.as_deref(),
            Some("clusternetworkpolicy a ingress[0] (Deny)")
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - d.time).abs() < 5.0, "{} vs {now}", d.time);
        e.rule = RULE_NP;
        assert!(m.describe(&e).rule.unwrap().contains("NetworkPolicy"));
        e.reason = DROP_RATE;
        assert_eq!(m.describe(&e).rule, None);
        assert!(text(&m.describe(&e)).contains("drop (rate) x/web ingress TCP"));
        // the raw record decodes from its bytes
        let bytes: Vec<u8> = {
            let mut v = vec![0u8; std::mem::size_of::<DropEvent>()];
            v[..8].copy_from_slice(&e.time_ns.to_ne_bytes());
            v[std::mem::offset_of!(DropEvent, ifindex)..][..4].copy_from_slice(&7u32.to_ne_bytes());
            v[std::mem::offset_of!(DropEvent, dport)..][..2].copy_from_slice(&80u16.to_ne_bytes());
            v[std::mem::offset_of!(DropEvent, saddr)..][..16].copy_from_slice(&e.saddr);
            v
        };
        let d = DropEvent::from_bytes(&bytes).unwrap();
        assert_eq!((d.ifindex, d.dport, d.saddr), (7, 80, e.saddr));
        assert!(DropEvent::from_bytes(&bytes[..10]).is_none());
    }
}
