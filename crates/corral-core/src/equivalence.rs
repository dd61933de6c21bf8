//! The node-local class of a pod ([`crate::snapshot::PodInfo::node_local_class`]):
//! a hash over only what node-local plugins read, so that pods differing only in
//! what cross-node plugins read share node-local Filter results and scores.
//!
//! Node-local plugins (every Filter plugin without PreFilter extensions, every
//! Score plugin with `node_local()`) read the pod's spec (requests, overhead,
//! nodeSelector, node affinity, tolerations, images, ports, volumes, priority,
//! scheduling gates, ...) and its annotations (GPU sharing). They do not read:
//! - the pod's labels, namespace or owners (only InterPodAffinity and
//!   PodTopologySpread match label selectors against pods);
//! - `spec.affinity.podAffinity`, `spec.affinity.podAntiAffinity`,
//!   `spec.topologySpreadConstraints` (read only by those two).
//!
//! Volume plugins look claims up in the pod's namespace and by pod name (generic
//! ephemeral volumes), so a pod with volumes or resource claims gets its full
//! equivalence class as node-local class: nothing is shared across classes for it.
//!
//! `tests/tests/node_local_class.rs` checks the premise: it evaluates randomized
//! pods and their variants that differ only in the excluded fields through every
//! node-local plugin of the default registry and requires identical results.

use k8s_openapi::api::core::v1::Pod;

use crate::snapshot::equivalence_hash_ignoring;

/// [`crate::snapshot::PodInfo::node_local_class`] computed as if the annotations
/// named in `ignore` were absent (see [`equivalence_hash_ignoring`]).
pub fn node_local_hash_ignoring(pod: &Pod, ignore: &[&str]) -> u64 {
    if needs_full_class(pod) {
        return equivalence_hash_ignoring(pod, ignore);
    }
    let mut p = pod.clone();
    strip(&mut p, ignore);
    hash_stripped(&p)
}

/// [`node_local_hash_ignoring`] with nothing ignored, without copying the pod:
/// the excluded fields are taken out for hashing and put back. `equivalence` is
/// the pod's full class (returned for pods that need it).
pub fn node_local_hash(pod: &mut Pod, equivalence: u64) -> u64 {
    if needs_full_class(pod) {
        return equivalence;
    }
    let labels = pod.metadata.labels.take();
    let namespace = pod.metadata.namespace.take();
    let owners = pod.metadata.owner_references.take();
    let (spread, pa, paa, emptied) = match pod.spec.as_mut() {
        Some(s) => {
            let spread = s.topology_spread_constraints.take();
            let (pa, paa) = match s.affinity.as_mut() {
                Some(a) => (a.pod_affinity.take(), a.pod_anti_affinity.take()),
                None => (None, None),
            };
            (spread, pa, paa, take_if_empty(&mut s.affinity))
        }
        None => (None, None, None, None),
    };
    let h = hash_stripped(pod);
    pod.metadata.labels = labels;
    pod.metadata.namespace = namespace;
    pod.metadata.owner_references = owners;
    if let Some(s) = pod.spec.as_mut() {
        s.topology_spread_constraints = spread;
        if emptied.is_some() {
            s.affinity = emptied;
        }
        if let Some(a) = s.affinity.as_mut() {
            a.pod_affinity = pa;
            a.pod_anti_affinity = paa;
        }
    }
    h
}

/// Volumes or resource claims: the volume plugins read namespace and pod name.
fn needs_full_class(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.volumes.as_ref().is_some_and(|v| !v.is_empty())
            || s.resource_claims.as_ref().is_some_and(|c| !c.is_empty())
    })
}

fn strip(p: &mut Pod, ignore: &[&str]) {
    p.metadata.labels = None;
    p.metadata.namespace = None;
    p.metadata.owner_references = None;
    if let Some(a) = p.metadata.annotations.as_mut() {
        let n = a.len();
        a.retain(|k, _| !ignore.contains(&k.as_str()));
        // Only ignored annotations: the same as none.
        if a.is_empty() && n > 0 {
            p.metadata.annotations = None;
        }
    }
    if let Some(s) = p.spec.as_mut() {
        s.topology_spread_constraints = None;
        if let Some(a) = s.affinity.as_mut() {
            a.pod_affinity = None;
            a.pod_anti_affinity = None;
        }
        take_if_empty(&mut s.affinity);
    }
}

/// Takes an affinity without node affinity left (the same as none for node-local
/// plugins), so a pod whose only affinity was pod (anti-)affinity hashes like one
/// without any.
fn take_if_empty(
    a: &mut Option<k8s_openapi::api::core::v1::Affinity>,
) -> Option<k8s_openapi::api::core::v1::Affinity> {
    if a.as_ref().is_some_and(|x| x.node_affinity.is_none()) {
        a.take()
    } else {
        None
    }
}

/// The equivalence hash of the stripped pod, tagged so it never equals a full
/// class's hash of the same pod by construction.
fn hash_stripped(p: &Pod) -> u64 {
    equivalence_hash_ignoring(p, &[]) ^ 0x9e6c_63d0_676a_9a99
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::pod;
    use serde_json::json;

    #[test]
    fn excluded_fields_do_not_change_the_class_and_others_do() {
        let base = |b: &mut crate::testutil::PodBuilder| {
            b.0["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "1"}});
        };
        let mut a = pod("a");
        base(&mut a);
        let mut b = pod("b");
        base(&mut b);
        b.0["metadata"]["labels"] = json!({"color": "red"});
        b.0["metadata"]["namespace"] = json!("other");
        b.0["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u"}]);
        b.0["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"color": "red"}}, "topologyKey": "kubernetes.io/hostname"}]}});
        b.0["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"color": "red"}}}]);
        let (a, b) = (a.info(), b.info());
        assert_ne!(a.equivalence, b.equivalence);
        assert_eq!(a.node_local_class, b.node_local_class);
        assert_ne!(a.node_local_class, a.equivalence);
        // The borrowed variant agrees, and taking fields out restored them.
        assert_eq!(node_local_hash_ignoring(&b.pod, &[]), b.node_local_class);
        assert!(
            b.pod
                .spec
                .as_ref()
                .unwrap()
                .topology_spread_constraints
                .is_some()
        );
        assert_eq!(b.labels.get("color").map(String::as_str), Some("red"));
        // Node-local fields do change it.
        for edit in [
            json!({"nodeSelector": {"pool": "gpu"}}),
            json!({"tolerations": [{"key": "k", "operator": "Exists"}]}),
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Exists"}]}]}}}}),
            json!({"priority": 7}),
        ] {
            let mut c = pod("c");
            base(&mut c);
            for (k, v) in edit.as_object().unwrap() {
                c.0["spec"][k] = v.clone();
            }
            assert_ne!(c.info().node_local_class, a.node_local_class, "{edit}");
        }
        let mut c = pod("c");
        base(&mut c);
        c.0["metadata"]["annotations"] = json!({"x": "1"});
        assert_ne!(c.info().node_local_class, a.node_local_class);
        assert_eq!(
            node_local_hash_ignoring(&c.info().pod, &["x"]),
            a.node_local_class
        );
    }

    #[test]
    fn pods_with_volumes_keep_their_full_class() {
        let mut a = pod("a");
        a.0["spec"]["volumes"] =
            json!([{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]);
        let mut b = a.clone();
        b.0["metadata"]["namespace"] = json!("other");
        let (a, b) = (a.info(), b.info());
        assert_eq!(a.node_local_class, a.equivalence);
        assert_ne!(a.node_local_class, b.node_local_class);
        assert_eq!(
            node_local_hash_ignoring(&a.pod, &[]),
            equivalence_hash_ignoring(&a.pod, &[])
        );
    }
}
