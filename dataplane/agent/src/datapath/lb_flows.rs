//! Established Service flows across EndpointSlice changes, as kube-proxy's
//! conntrack cleanup (pkg/proxy/conntrack, `CleanStaleEntries`): a UDP flow
//! whose backend is no serving endpoint (ready, or serving while
//! terminating — whatever traffic policy or fallback chose) of its
//! frontend's Service is forgotten; TCP and SCTP keep theirs.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use aya::maps::HashMap;
use tracing::debug;

use super::Datapath;
use crate::abi::{self, LbNatKey, LbNatValue, SvcKey};

/// UDP frontend → addresses of its Service's serving endpoints.
pub(super) type Serving = BTreeMap<SvcKey, BTreeSet<[u8; 16]>>;

impl Datapath {
    /// Deletes the `corral_lb_fwd` entries of UDP flows to a frontend of
    /// `table` whose backend address is not among the frontend's serving
    /// endpoints. The flow map is walked only when some UDP frontend lost
    /// a serving address since the last sync (and at the first sync).
    pub(super) fn forget_udp_flows(&mut self, table: &crate::services::LbTable) -> Result<()> {
        let now: Serving = table
            .iter()
            .filter(|(k, _)| k.proto == abi::PROTO_UDP)
            .map(|(k, e)| (*k, e.serving.iter().copied().collect()))
            .collect();
        let walk = match &self.lb_serving {
            None => !now.is_empty(),
            Some(old) => old.iter().any(|(k, was)| {
                now.get(k)
                    .is_some_and(|is| was.iter().any(|a| !is.contains(a)))
            }),
        };
        if walk {
            let mut m: HashMap<_, LbNatKey, LbNatValue> = self.hash("corral_lb_fwd")?;
            let stale: Vec<LbNatKey> = m
                .iter()
                .filter_map(|e| e.ok())
                .filter(|(k, v)| {
                    k.proto == abi::PROTO_UDP
                        && now
                            .get(&SvcKey {
                                addr: k.daddr,
                                port: k.dport,
                                proto: k.proto,
                                pad: 0,
                            })
                            .is_some_and(|serving| !serving.contains(&v.addr))
                })
                .map(|(k, _)| k)
                .collect();
            for k in &stale {
                let _ = m.remove(k);
            }
            if !stale.is_empty() {
                debug!(
                    flows = stale.len(),
                    "UDP flows to endpoints no longer serving forgotten"
                );
            }
        }
        self.lb_serving = Some(now);
        Ok(())
    }
}
