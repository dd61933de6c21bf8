//! Established Service flows across EndpointSlice changes: UDP flows
//! whose backend left their frontend are forgotten (kube-proxy clears the
//! UDP conntrack entries of removed endpoints); TCP and SCTP keep theirs.

use std::collections::BTreeMap;

use anyhow::Result;
use aya::maps::HashMap;
use tracing::debug;

use super::Datapath;
use crate::abi::{self, LbBe, LbBeKey, LbNatKey, LbNatValue, LbSvc, SvcKey};

/// A backend as the flow maps hold it: address and port.
pub(super) type Backend = ([u8; 16], u16);

impl Datapath {
    /// UDP frontends of `table` that lose backends compared to what the
    /// maps hold now: frontend → the backends (address, port) it loses.
    pub(super) fn lb_udp_removed(
        &mut self,
        table: &crate::services::LbTable,
    ) -> Result<BTreeMap<SvcKey, Vec<Backend>>> {
        let mut old = Vec::new();
        {
            let m: HashMap<_, SvcKey, LbSvc> = self.hash("corral_lb_svc")?;
            for (k, v) in m.iter().filter_map(|e| e.ok()) {
                if k.proto == abi::PROTO_UDP {
                    old.push((k, v));
                }
            }
        }
        let be: HashMap<_, LbBeKey, LbBe> = self.hash("corral_lb_be")?;
        let mut gone = BTreeMap::new();
        for (k, v) in old {
            let keep: Vec<Backend> = table
                .get(&k)
                .map(|e| e.backends.iter().map(|b| (b.addr, b.port)).collect())
                .unwrap_or_default();
            let lost: Vec<Backend> = (0..v.count)
                .filter_map(|index| {
                    be.get(
                        &LbBeKey {
                            svc_id: v.svc_id,
                            index,
                        },
                        0,
                    )
                    .ok()
                })
                .map(|b| (b.addr, b.port))
                .filter(|b| !keep.contains(b))
                .collect();
            if !lost.is_empty() {
                gone.insert(k, lost);
            }
        }
        Ok(gone)
    }

    /// Deletes the `corral_lb_fwd` entries of UDP flows to `gone`'s
    /// frontends that were translated to one of the lost backends.
    pub(super) fn forget_udp_flows(&mut self, gone: &BTreeMap<SvcKey, Vec<Backend>>) -> Result<()> {
        let mut m: HashMap<_, LbNatKey, LbNatValue> = self.hash("corral_lb_fwd")?;
        let stale: Vec<LbNatKey> = m
            .iter()
            .filter_map(|e| e.ok())
            .filter(|(k, v)| {
                k.proto == abi::PROTO_UDP
                    && gone
                        .get(&SvcKey {
                            addr: k.daddr,
                            port: k.dport,
                            proto: k.proto,
                            pad: 0,
                        })
                        .is_some_and(|lost| lost.contains(&(v.addr, v.port)))
            })
            .map(|(k, _)| k)
            .collect();
        for k in &stale {
            let _ = m.remove(k);
        }
        if !stale.is_empty() {
            debug!(
                flows = stale.len(),
                "UDP flows to removed endpoints forgotten"
            );
        }
        Ok(())
    }
}
