//! Drop events that do not fit in the ring buffer are counted
//! (`corral_events_lost`, `corral_monitor_events_lost_total`): the real
//! programs run through BPF_PROG_TEST_RUN on a malformed frame for an
//! endpoint on a veth in a private netns, with the monitor switch on and no
//! consumer, so the 1 MiB ring fills and every further event is lost.

mod common;

use corral_agent::datapath::{AttachMode, Datapath};
use corral_dataplane_abi::abi::EndpointCfg;

/// Removes the netns and the pin dir, also when the test panics.
struct Guard {
    netns: String,
    pin: std::path::PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin);
        let _ = common::sh(&["ip", "netns", "del", &self.netns]);
    }
}

/// Ethernet + an IPv4 header with IHL 4 (malformed: dropped by the parser).
fn malformed() -> Vec<u8> {
    let mut p = vec![0u8; 14 + 20];
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    p[14] = 0x44;
    p
}

#[test]
fn ring_buffer_losses_are_counted() {
    let Some(_g) = common::privileged("ring_buffer_losses_are_counted") else {
        return;
    };
    let pid = std::process::id();
    let g = Guard {
        netns: format!("dplost{pid}"),
        pin: format!("/sys/fs/bpf/corral-dplost-{pid}").into(),
    };
    common::must(&["ip", "netns", "add", &g.netns]);
    let pin = g.pin.clone();
    common::in_netns(&g.netns, move || {
        common::must(&[
            "ip", "link", "add", "dpl0", "type", "veth", "peer", "name", "dpl0p",
        ]);
        let mut dp = Datapath::open(&pin, AttachMode::Netlink).expect("load programs");
        let ifx = corral_agent::datapath::ifindex("dpl0").expect("ifindex");
        dp.set_endpoint(
            ifx,
            &EndpointCfg {
                endpoint_id: ifx,
                ..Default::default()
            },
        )
        .expect("endpoint");
        let pkt = malformed();
        const SHOT: u32 = 2;
        const N: u32 = 50_000;
        // monitor off: drops, no events, nothing lost
        let (rv, _) = dp.test_run("corral_from_pod", ifx, &pkt, N).unwrap();
        assert_eq!(rv, SHOT, "malformed frame dropped");
        assert_eq!(dp.events_lost().unwrap(), 0, "no events while off");
        // on, nobody reads: the ring (1 MiB, 64-byte records + 8-byte
        // headers) takes at most 2^20 / 72 events, the rest are lost
        dp.set_monitor(true).unwrap();
        dp.test_run("corral_from_pod", ifx, &pkt, N).unwrap();
        let lost = dp.events_lost().unwrap();
        let fit = (1u64 << 20) / 72;
        assert!(
            lost >= u64::from(N) - fit && lost < u64::from(N),
            "lost {lost} of {N} (at most {fit} fit)"
        );
        // the ring stays full: every further event is lost
        dp.test_run("corral_from_pod", ifx, &pkt, N).unwrap();
        assert_eq!(dp.events_lost().unwrap(), lost + u64::from(N));
        // rendered as the agent serves it
        let text = corral_agent::metrics::render(
            &[],
            corral_agent::metrics::NodeStats {
                events_lost: dp.events_lost().unwrap(),
            },
            Default::default(),
        );
        assert!(
            text.contains(&format!(
                "corral_monitor_events_lost_total {}",
                lost + u64::from(N)
            )),
            "{text}"
        );
    });
}
