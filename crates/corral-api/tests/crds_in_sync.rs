//! `deploy/crds` is what corral-api's CRD types generate: a changed type without a
//! regenerated file (or a hand edit of a generated file) fails here.
//! Fix: `cargo run -p corral-api --features crd --example crdgen`.

use std::path::PathBuf;

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds")
}

#[test]
fn deploy_crds_match_the_types() {
    let manifests = corral_api::crd::manifests();
    assert_eq!(manifests.len(), 5, "five CRDs are generated");
    let mut stale = Vec::new();
    for m in &manifests {
        let path = crds_dir().join(&m.file);
        match std::fs::read_to_string(&path) {
            Ok(on_disk) if on_disk == m.yaml => {}
            Ok(_) => stale.push(format!("{} differs from the generated CRD", path.display())),
            Err(e) => stale.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nregenerate: cargo run -p corral-api --features crd --example crdgen",
        stale.join("\n")
    );
}

#[test]
fn kustomization_lists_every_generated_crd() {
    let k = std::fs::read_to_string(crds_dir().join("kustomization.yaml")).expect("kustomization");
    for m in corral_api::crd::manifests() {
        assert!(
            k.lines().any(|l| l.trim() == format!("- {}", m.file)),
            "deploy/crds/kustomization.yaml does not list {}",
            m.file
        );
    }
}

/// Field types of the upstream CRDs (transcribed from the controller-gen output of
/// Volcano's `scheduling.volcano.sh_{queues,podgroups}.yaml` and
/// `topology.volcano.sh_hypernodes.yaml`, scheduler-plugins'
/// `scheduling.x-k8s.io_podgroups.yaml` and NodeResourceTopology v1alpha2's types):
/// (CRD name, path of property names from the root, type, format or "").
const UPSTREAM: &[(&str, &str, &str, &str)] = &[
    (
        "queues.scheduling.volcano.sh",
        "spec.weight",
        "integer",
        "int32",
    ),
    (
        "queues.scheduling.volcano.sh",
        "spec.capability",
        "object",
        "",
    ),
    (
        "queues.scheduling.volcano.sh",
        "spec.reclaimable",
        "boolean",
        "",
    ),
    (
        "queues.scheduling.volcano.sh",
        "spec.extendClusters",
        "array",
        "",
    ),
    (
        "queues.scheduling.volcano.sh",
        "spec.extendClusters[].name",
        "string",
        "",
    ),
    (
        "queues.scheduling.volcano.sh",
        "spec.extendClusters[].weight",
        "integer",
        "int32",
    ),
    (
        "queues.scheduling.volcano.sh",
        "spec.extendClusters[].capacity",
        "object",
        "",
    ),
    (
        "queues.scheduling.volcano.sh",
        "spec.guarantee.resource",
        "object",
        "",
    ),
    (
        "queues.scheduling.volcano.sh",
        "spec.affinity.nodeGroupAffinity.requiredDuringSchedulingIgnoredDuringExecution[]",
        "string",
        "",
    ),
    (
        "queues.scheduling.volcano.sh",
        "spec.affinity.nodeGroupAffinity.preferredDuringSchedulingIgnoredDuringExecution[]",
        "string",
        "",
    ),
    (
        "queues.scheduling.volcano.sh",
        "spec.affinity.nodeGroupAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[]",
        "string",
        "",
    ),
    (
        "queues.scheduling.volcano.sh",
        "spec.affinity.nodeGroupAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[]",
        "string",
        "",
    ),
    ("queues.scheduling.volcano.sh", "spec.type", "string", ""),
    ("queues.scheduling.volcano.sh", "spec.parent", "string", ""),
    (
        "queues.scheduling.volcano.sh",
        "spec.deserved",
        "object",
        "",
    ),
    (
        "queues.scheduling.volcano.sh",
        "spec.priority",
        "integer",
        "int32",
    ),
    ("queues.scheduling.volcano.sh", "status.state", "string", ""),
    (
        "queues.scheduling.volcano.sh",
        "status.unknown",
        "integer",
        "int32",
    ),
    (
        "queues.scheduling.volcano.sh",
        "status.pending",
        "integer",
        "int32",
    ),
    (
        "queues.scheduling.volcano.sh",
        "status.running",
        "integer",
        "int32",
    ),
    (
        "queues.scheduling.volcano.sh",
        "status.inqueue",
        "integer",
        "int32",
    ),
    (
        "queues.scheduling.volcano.sh",
        "status.completed",
        "integer",
        "int32",
    ),
    (
        "queues.scheduling.volcano.sh",
        "status.reservation.nodes[]",
        "string",
        "",
    ),
    (
        "queues.scheduling.volcano.sh",
        "status.reservation.resource",
        "object",
        "",
    ),
    (
        "queues.scheduling.volcano.sh",
        "status.allocated",
        "object",
        "",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "spec.minMember",
        "integer",
        "int32",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "spec.minTaskMember",
        "object",
        "",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "spec.queue",
        "string",
        "",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "spec.priorityClassName",
        "string",
        "",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "spec.minResources",
        "object",
        "",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "spec.networkTopology.mode",
        "string",
        "",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "spec.networkTopology.highestTierAllowed",
        "integer",
        "",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "status.phase",
        "string",
        "",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "status.conditions[].type",
        "string",
        "",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "status.conditions[].status",
        "string",
        "",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "status.conditions[].transitionID",
        "string",
        "",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "status.conditions[].lastTransitionTime",
        "string",
        "date-time",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "status.conditions[].reason",
        "string",
        "",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "status.conditions[].message",
        "string",
        "",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "status.running",
        "integer",
        "int32",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "status.succeeded",
        "integer",
        "int32",
    ),
    (
        "podgroups.scheduling.volcano.sh",
        "status.failed",
        "integer",
        "int32",
    ),
    ("hypernodes.topology.volcano.sh", "spec.tier", "integer", ""),
    (
        "hypernodes.topology.volcano.sh",
        "spec.members[].type",
        "string",
        "",
    ),
    (
        "hypernodes.topology.volcano.sh",
        "spec.members[].selector.exactMatch.name",
        "string",
        "",
    ),
    (
        "hypernodes.topology.volcano.sh",
        "spec.members[].selector.regexMatch.pattern",
        "string",
        "",
    ),
    (
        "hypernodes.topology.volcano.sh",
        "spec.members[].selector.labelMatch.matchLabels",
        "object",
        "",
    ),
    (
        "hypernodes.topology.volcano.sh",
        "spec.members[].selector.labelMatch.matchExpressions[].key",
        "string",
        "",
    ),
    (
        "hypernodes.topology.volcano.sh",
        "spec.members[].selector.labelMatch.matchExpressions[].values[]",
        "string",
        "",
    ),
    (
        "hypernodes.topology.volcano.sh",
        "status.conditions[].lastTransitionTime",
        "string",
        "date-time",
    ),
    (
        "hypernodes.topology.volcano.sh",
        "status.conditions[].observedGeneration",
        "integer",
        "int64",
    ),
    (
        "hypernodes.topology.volcano.sh",
        "status.nodeCount",
        "integer",
        "int64",
    ),
    (
        "podgroups.scheduling.x-k8s.io",
        "spec.minMember",
        "integer",
        "int32",
    ),
    (
        "podgroups.scheduling.x-k8s.io",
        "spec.minResources",
        "object",
        "",
    ),
    (
        "podgroups.scheduling.x-k8s.io",
        "spec.scheduleTimeoutSeconds",
        "integer",
        "int32",
    ),
    (
        "podgroups.scheduling.x-k8s.io",
        "status.phase",
        "string",
        "",
    ),
    (
        "podgroups.scheduling.x-k8s.io",
        "status.occupiedBy",
        "string",
        "",
    ),
    (
        "podgroups.scheduling.x-k8s.io",
        "status.running",
        "integer",
        "int32",
    ),
    (
        "podgroups.scheduling.x-k8s.io",
        "status.succeeded",
        "integer",
        "int32",
    ),
    (
        "podgroups.scheduling.x-k8s.io",
        "status.failed",
        "integer",
        "int32",
    ),
    (
        "podgroups.scheduling.x-k8s.io",
        "status.scheduleStartTime",
        "string",
        "date-time",
    ),
    (
        "noderesourcetopologies.topology.node.k8s.io",
        "topologyPolicies[]",
        "string",
        "",
    ),
    (
        "noderesourcetopologies.topology.node.k8s.io",
        "zones[].name",
        "string",
        "",
    ),
    (
        "noderesourcetopologies.topology.node.k8s.io",
        "zones[].type",
        "string",
        "",
    ),
    (
        "noderesourcetopologies.topology.node.k8s.io",
        "zones[].parent",
        "string",
        "",
    ),
    (
        "noderesourcetopologies.topology.node.k8s.io",
        "zones[].costs[].name",
        "string",
        "",
    ),
    (
        "noderesourcetopologies.topology.node.k8s.io",
        "zones[].costs[].value",
        "integer",
        "int64",
    ),
    (
        "noderesourcetopologies.topology.node.k8s.io",
        "zones[].attributes[].value",
        "string",
        "",
    ),
    (
        "noderesourcetopologies.topology.node.k8s.io",
        "zones[].resources[].name",
        "string",
        "",
    ),
    (
        "noderesourcetopologies.topology.node.k8s.io",
        "attributes[].name",
        "string",
        "",
    ),
];

/// (CRD name, path of the object whose `required` list is given, required fields).
const UPSTREAM_REQUIRED: &[(&str, &str, &[&str])] = &[
    ("queues.scheduling.volcano.sh", "status", &["allocated"]),
    ("hypernodes.topology.volcano.sh", "spec", &["tier"]),
    (
        "hypernodes.topology.volcano.sh",
        "spec.members[]",
        &["type"],
    ),
    (
        "hypernodes.topology.volcano.sh",
        "status.conditions[]",
        &["lastTransitionTime", "message", "reason", "status", "type"],
    ),
    (
        "noderesourcetopologies.topology.node.k8s.io",
        "",
        &["zones"],
    ),
    (
        "noderesourcetopologies.topology.node.k8s.io",
        "zones[]",
        &["name", "type"],
    ),
    (
        "noderesourcetopologies.topology.node.k8s.io",
        "zones[].resources[]",
        &["allocatable", "available", "capacity", "name"],
    ),
];

fn generated() -> std::collections::BTreeMap<String, serde_json::Value> {
    corral_api::crd::manifests()
        .into_iter()
        .map(|m| {
            let v: serde_json::Value =
                serde_yaml_ng::from_str(&m.yaml).expect("generated YAML parses");
            (v["metadata"]["name"].as_str().expect("name").to_string(), v)
        })
        .collect()
}

/// The schema node at `path` (`a.b[].c`; `[]` steps into array items).
fn at<'a>(crd: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    let mut s = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, arrays) = match part.find("[]") {
            Some(i) => (&part[..i], part[i..].matches("[]").count()),
            None => (part, 0),
        };
        s = &s["properties"][name];
        for _ in 0..arrays {
            s = &s["items"];
        }
    }
    s
}

#[test]
fn field_types_match_the_upstream_crds() {
    let crds = generated();
    let mut wrong = Vec::new();
    for &(crd, path, ty, format) in UPSTREAM {
        let s = at(&crds[crd], path);
        let got_ty = s["type"].as_str().unwrap_or("");
        let got_format = s["format"].as_str().unwrap_or("");
        if got_ty != ty || (!format.is_empty() && got_format != format) {
            wrong.push(format!(
                "{crd} {path}: {got_ty}/{got_format}, upstream {ty}/{format}"
            ));
        }
    }
    for &(crd, path, req) in UPSTREAM_REQUIRED {
        let got: Vec<&str> = at(&crds[crd], path)["required"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let mut got = got;
        got.sort_unstable();
        if got != req {
            wrong.push(format!("{crd} {path}: required {got:?}, upstream {req:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn quantities_are_int_or_string_and_scope_and_subresources_are_upstreams() {
    let crds = generated();
    let q = at(&crds["queues.scheduling.volcano.sh"], "spec.capability")["additionalProperties"]
        .clone();
    assert_eq!(q["x-kubernetes-int-or-string"], true, "{q}");
    assert_eq!(
        q["anyOf"],
        serde_json::json!([{"type": "integer"}, {"type": "string"}])
    );
    let r = at(
        &crds["noderesourcetopologies.topology.node.k8s.io"],
        "zones[].resources[].available",
    );
    assert_eq!(r["x-kubernetes-int-or-string"], true, "{r}");
    let scope = |n: &str| crds[n]["spec"]["scope"].as_str().unwrap_or("").to_string();
    assert_eq!(scope("queues.scheduling.volcano.sh"), "Cluster");
    assert_eq!(scope("hypernodes.topology.volcano.sh"), "Cluster");
    assert_eq!(
        scope("noderesourcetopologies.topology.node.k8s.io"),
        "Cluster"
    );
    assert_eq!(scope("podgroups.scheduling.volcano.sh"), "Namespaced");
    assert_eq!(scope("podgroups.scheduling.x-k8s.io"), "Namespaced");
    let status_sub = |n: &str| crds[n]["spec"]["versions"][0]["subresources"]["status"].is_object();
    // Volcano's PodGroup has no status subresource (Volcano updates the object).
    assert!(!status_sub("podgroups.scheduling.volcano.sh"));
    assert!(status_sub("queues.scheduling.volcano.sh"));
    assert!(status_sub("hypernodes.topology.volcano.sh"));
    assert!(status_sub("podgroups.scheduling.x-k8s.io"));
    assert!(!status_sub("noderesourcetopologies.topology.node.k8s.io"));
    // No schemars leftovers the API server rejects or controller-gen never writes.
    for (n, v) in &crds {
        let s = v.to_string();
        assert!(
            !s.contains("\"nullable\"") && !s.contains("$ref") && !s.contains("$schema"),
            "{n}"
        );
    }
}

#[test]
fn the_types_decode_upstream_style_objects() {
    use corral_api::crd::{coscheduling, hypernode, nrt, volcano};
    let q: volcano::Queue = serde_yaml_ng::from_str(
        "apiVersion: scheduling.volcano.sh/v1beta1\nkind: Queue\nmetadata: {name: research}\n\
         spec: {weight: 4, capability: {cpu: '200', memory: 800Gi, nvidia.com/gpu: 16}, guarantee: {resource: {cpu: '20'}}}\n\
         status: {state: Open, running: 2, allocated: {cpu: '8'}}\n",
    )
    .expect("queue");
    assert_eq!(q.spec.weight, 4);
    assert_eq!(q.spec.reclaimable, Some(true), "Volcano's webhook default");
    assert_eq!(
        q.spec.capability.as_ref().map(|c| c["memory"].0.as_str()),
        Some("800Gi")
    );
    assert_eq!(q.status.as_ref().map(|s| s.running), Some(2));
    let pg: volcano::PodGroup = serde_yaml_ng::from_str(
        "apiVersion: scheduling.volcano.sh/v1beta1\nkind: PodGroup\nmetadata: {name: a, namespace: ns}\n\
         spec: {minMember: 4, minTaskMember: {worker: 4}, networkTopology: {mode: soft}}\n",
    )
    .expect("podgroup");
    assert_eq!(pg.spec.queue, "default");
    assert_eq!(pg.spec.min_task_member["worker"], 4);
    let nt = pg.spec.network_topology.expect("networkTopology");
    assert_eq!(nt.mode, Some(volcano::NetworkTopologyMode::Soft));
    assert_eq!(nt.highest_tier_allowed, Some(1));
    assert!(
        serde_yaml_ng::from_str::<volcano::PodGroup>(
            "apiVersion: scheduling.volcano.sh/v1beta1\nkind: PodGroup\nmetadata: {name: a}\nspec: {minMember: four}\n"
        )
        .is_err()
    );
    let cp: coscheduling::PodGroup = serde_yaml_ng::from_str(
        "apiVersion: scheduling.x-k8s.io/v1alpha1\nkind: PodGroup\nmetadata: {name: s, namespace: ns}\n\
         spec: {minMember: 3, scheduleTimeoutSeconds: 60}\n",
    )
    .expect("coscheduling podgroup");
    assert_eq!(cp.spec.schedule_timeout_seconds, Some(60));
    let hn: hypernode::HyperNode = serde_yaml_ng::from_str(
        "apiVersion: topology.volcano.sh/v1alpha1\nkind: HyperNode\nmetadata: {name: s0}\n\
         spec: {tier: 1, members: [{type: Node, selector: {regexMatch: {pattern: 'node-[0-3]'}}}]}\n",
    )
    .expect("hypernode");
    assert_eq!(hn.spec.members[0].r#type, hypernode::MemberType::Node);
    let t: nrt::NodeResourceTopology = serde_yaml_ng::from_str(
        "apiVersion: topology.node.k8s.io/v1alpha2\nkind: NodeResourceTopology\nmetadata: {name: n1}\n\
         attributes: [{name: topologyManagerPolicy, value: single-numa-node}]\n\
         zones: [{name: node-0, type: Node, resources: [{name: cpu, capacity: 8, allocatable: 8, available: 6}]}]\n",
    )
    .expect("nrt");
    assert_eq!(t.spec.zones[0].resources[0].available.0, "6");
    assert_eq!(t.spec.attributes[0].value, "single-numa-node");
    // Fields at the root on the wire, as the upstream object has them (no `spec`).
    let back = serde_json::to_value(&t).expect("serialize");
    assert!(
        back.get("spec").is_none() && back["zones"].is_array(),
        "{back}"
    );
}
