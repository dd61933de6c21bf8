//! Batch scheduling objects, decoded strictly from their CRD schemas:
//! `scheduling.volcano.sh/v1beta1` Queue and PodGroup, `scheduling.x-k8s.io/v1alpha1`
//! PodGroup (coscheduling) and v1 ResourceQuota. A malformed object is reported by
//! name (file, document, field) and left out; the rest of the cluster still schedules.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use super::res::ResMap;
use crate::input::RawObject;

pub use corral_api::keys::{
    ANN_GROUP_NAME, ANN_MIN_RUNTIME, ANN_PREEMPTABLE, ANN_QUEUE_NAME, ANN_TASK_SPEC, COSCHED_API,
    LABEL_POD_GROUP, VOLCANO_API,
};

/// Documents the loader hands to the batch layer (`input::load_paths` extra kinds).
pub const EXTRA_KINDS: &[(&str, &str)] = &[
    (VOLCANO_API, "Queue"),
    (VOLCANO_API, "PodGroup"),
    (COSCHED_API, "PodGroup"),
    ("v1", "ResourceQuota"),
    (crate::hypernodes::TOPOLOGY_API, "HyperNode"),
];

/// The queue of pods and groups that name none.
pub const DEFAULT_QUEUE: &str = "default";

// ---- CRD schemas (strict) ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct QueueDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: ObjectMeta,
    #[serde(default)]
    spec: QueueSpecDoc,
    status: Option<QueueStatusDoc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct QueueSpecDoc {
    weight: Option<i32>,
    capability: Option<BTreeMap<String, Quantity>>,
    reclaimable: Option<bool>,
    guarantee: Option<GuaranteeDoc>,
    deserved: Option<BTreeMap<String, Quantity>>,
    parent: Option<String>,
    // Accepted as in the CRD; not used by Corral.
    #[allow(dead_code)]
    affinity: Option<serde_json::Value>,
    #[allow(dead_code)]
    extend_clusters: Option<serde_json::Value>,
    #[allow(dead_code)]
    r#type: Option<String>,
    priority: Option<i32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GuaranteeDoc {
    resource: Option<BTreeMap<String, Quantity>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueueStatusDoc {
    state: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VolcanoPodGroupDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: ObjectMeta,
    #[serde(default)]
    spec: VolcanoPodGroupSpecDoc,
    status: Option<PodGroupStatusDoc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VolcanoPodGroupSpecDoc {
    min_member: Option<i32>,
    min_task_member: Option<BTreeMap<String, i32>>,
    queue: Option<String>,
    priority_class_name: Option<String>,
    min_resources: Option<BTreeMap<String, Quantity>>,
    /// Decoded by [`crate::hypernodes::parse_network_topology`].
    #[allow(dead_code)]
    network_topology: Option<serde_json::Value>,
    #[allow(dead_code)]
    sub_group_policy: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodGroupStatusDoc {
    phase: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CoschedPodGroupDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: ObjectMeta,
    #[serde(default)]
    spec: CoschedPodGroupSpecDoc,
    status: Option<PodGroupStatusDoc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CoschedPodGroupSpecDoc {
    min_member: Option<i32>,
    min_resources: Option<BTreeMap<String, Quantity>>,
    schedule_timeout_seconds: Option<i32>,
}

// ---- Parsed model ----

/// A queue (`scheduling.volcano.sh/v1beta1` Queue).
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    pub weight: u32,
    /// Hard limit (only named dimensions are limited).
    pub capability: Option<ResMap>,
    pub reclaimable: bool,
    pub guarantee: ResMap,
    /// Explicit deserved share (overrides water-filling for named dimensions).
    pub deserved: Option<ResMap>,
    pub parent: Option<String>,
    pub open: bool,
    /// `spec.priority`: queues of higher priority are served first (Volcano).
    pub priority: i32,
}

impl QueueSpec {
    /// The implicit `default` queue (weight 1, reclaimable, open, no limits).
    pub fn implicit(name: &str) -> QueueSpec {
        QueueSpec {
            name: name.to_string(),
            weight: 1,
            capability: None,
            reclaimable: true,
            guarantee: ResMap::default(),
            deserved: None,
            parent: None,
            open: true,
            priority: 0,
        }
    }
}

/// Which API a PodGroup came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupApi {
    Volcano,
    Coscheduling,
}

/// A PodGroup (either API).
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub api: GroupApi,
    pub namespace: String,
    pub name: String,
    pub min_member: u32,
    pub min_task_member: BTreeMap<String, u32>,
    pub min_resources: Option<ResMap>,
    pub queue: String,
    /// Resolved from `priorityClassName`.
    pub priority: Option<i32>,
    pub schedule_timeout_seconds: Option<i32>,
    pub annotations: BTreeMap<String, String>,
    /// Read for `volcano.sh/preemptable` when the annotation is absent.
    pub labels: BTreeMap<String, String>,
    pub created: i64,
    /// `status.phase` from the input (Inqueue/Running keep the group admitted).
    pub phase: Option<String>,
    /// Set when the object is unusable; its pods stay pending with this message.
    pub error: Option<String>,
}

impl GroupSpec {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Namespace hard limits from v1 ResourceQuota (`requests.*`/bare names and `pods`).
#[derive(Debug, Clone)]
pub struct QuotaSpec {
    pub namespace: String,
    pub name: String,
    pub hard: ResMap,
    pub pods: Option<i64>,
}

/// Every batch object of the input, plus the problems found.
#[derive(Debug, Default, Clone)]
pub struct BatchObjects {
    pub queues: Vec<QueueSpec>,
    /// Keyed by (api, namespace/name).
    pub groups: Vec<GroupSpec>,
    pub quotas: Vec<QuotaSpec>,
    /// `topology.volcano.sh/v1alpha1` HyperNodes.
    pub hypernodes: Vec<crate::hypernodes::HyperNodeSpec>,
    /// Volcano PodGroups' `spec.networkTopology`, by `namespace/name`.
    pub network_topology: HashMap<String, crate::hypernodes::NetworkTopology>,
    /// One message per malformed object, naming it.
    pub errors: Vec<String>,
}

fn field_err(o: &RawObject, kind: &str, name: &str, msg: impl std::fmt::Display) -> String {
    format!("{} ({kind} {name}, {}): {msg}", o.origin, o.api_version)
}

fn obj_name(v: &serde_json::Value) -> String {
    let md = &v["metadata"];
    let name = md["name"].as_str().unwrap_or("<unnamed>");
    match md["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn res(list: &Option<BTreeMap<String, Quantity>>, field: &str) -> Result<Option<ResMap>, String> {
    match list {
        None => Ok(None),
        Some(l) => ResMap::from_list(l, field)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

fn created(md: &ObjectMeta) -> i64 {
    md.creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

impl BatchObjects {
    /// Decodes the raw documents. `priority_classes` resolves `priorityClassName`.
    pub fn parse(raw: &[RawObject], priority_classes: &HashMap<String, i32>) -> BatchObjects {
        let mut out = BatchObjects::default();
        for o in raw {
            let name = obj_name(&o.value);
            match (o.api_version.as_str(), o.kind.as_str()) {
                (VOLCANO_API, "Queue") => match parse_queue(o) {
                    Ok(q) => out.queues.push(q),
                    Err(e) => out.errors.push(field_err(o, "Queue", &name, e)),
                },
                (VOLCANO_API, "PodGroup") | (COSCHED_API, "PodGroup") => {
                    let topo = match o.value.pointer("/spec/networkTopology") {
                        Some(v) if o.api_version == VOLCANO_API && !v.is_null() => {
                            crate::hypernodes::parse_network_topology(v).map(Some)
                        }
                        _ => Ok(None),
                    };
                    match (parse_group(o, priority_classes), topo) {
                        (Ok(g), Ok(t)) => {
                            if let Some(t) = t {
                                out.network_topology.insert(g.key(), t);
                            }
                            out.groups.push(g)
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            out.errors.push(field_err(o, "PodGroup", &name, e))
                        }
                    }
                }
                (crate::hypernodes::TOPOLOGY_API, "HyperNode") => {
                    match crate::hypernodes::parse_hypernode(o) {
                        Ok(h) => out.hypernodes.push(h),
                        Err(e) => out.errors.push(field_err(o, "HyperNode", &name, e)),
                    }
                }
                ("v1", "ResourceQuota") => match parse_quota(o) {
                    Ok(q) => out.quotas.push(q),
                    Err(e) => out.errors.push(field_err(o, "ResourceQuota", &name, e)),
                },
                _ => {}
            }
        }
        // Duplicates: the first definition wins.
        let mut seen = std::collections::HashSet::new();
        let mut dup = Vec::new();
        out.queues.retain(|q| {
            let fresh = seen.insert(q.name.clone());
            if !fresh {
                dup.push(format!("Queue {}: duplicate definition ignored", q.name));
            }
            fresh
        });
        let mut seen = std::collections::HashSet::new();
        out.groups.retain(|g| {
            let fresh = seen.insert((g.api, g.key()));
            if !fresh {
                dup.push(format!(
                    "PodGroup {}: duplicate definition ignored",
                    g.key()
                ));
            }
            fresh
        });
        out.errors.extend(dup);
        out
    }
}

fn parse_queue(o: &RawObject) -> Result<QueueSpec, String> {
    let d: QueueDoc = serde_json::from_value(o.value.clone()).map_err(|e| e.to_string())?;
    let name = d.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err("metadata.name must be set".into());
    }
    let weight = d.spec.weight.unwrap_or(1);
    if weight < 1 {
        return Err(format!("spec.weight: must be at least 1, got {weight}"));
    }
    let open = match d.status.as_ref().and_then(|s| s.state.as_deref()) {
        None | Some("Open") | Some("") => true,
        Some("Closed") | Some("Closing") => false,
        Some(s) => {
            return Err(format!(
                "status.state: must be Open, Closing or Closed, got {s:?}"
            ));
        }
    };
    Ok(QueueSpec {
        weight: weight as u32,
        capability: res(&d.spec.capability, "spec.capability")?,
        reclaimable: d.spec.reclaimable.unwrap_or(true),
        guarantee: res(
            &d.spec.guarantee.as_ref().and_then(|g| g.resource.clone()),
            "spec.guarantee.resource",
        )?
        .unwrap_or_default(),
        deserved: res(&d.spec.deserved, "spec.deserved")?,
        parent: d.spec.parent.filter(|p| !p.is_empty() && p != "root"),
        open,
        priority: d.spec.priority.unwrap_or(0),
        name,
    })
}

fn parse_group(o: &RawObject, pcs: &HashMap<String, i32>) -> Result<GroupSpec, String> {
    let need_name = |md: &ObjectMeta| -> Result<(String, String), String> {
        let name = md.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err("metadata.name must be set".into());
        }
        Ok((
            md.namespace.clone().unwrap_or_else(|| "default".into()),
            name,
        ))
    };
    let min_member = |m: Option<i32>| -> Result<u32, String> {
        let m = m.unwrap_or(1);
        if m < 0 {
            return Err(format!("spec.minMember: must not be negative, got {m}"));
        }
        Ok(m as u32)
    };
    if o.api_version == VOLCANO_API {
        let d: VolcanoPodGroupDoc =
            serde_json::from_value(o.value.clone()).map_err(|e| e.to_string())?;
        let (namespace, name) = need_name(&d.metadata)?;
        let mut mtm = BTreeMap::new();
        for (role, n) in d.spec.min_task_member.clone().unwrap_or_default() {
            if n < 0 {
                return Err(format!(
                    "spec.minTaskMember[{role}]: must not be negative, got {n}"
                ));
            }
            mtm.insert(role, n as u32);
        }
        // Volcano: a group without a priorityClassName, or naming one that does not
        // exist, has the default priority (the globalDefault PriorityClass, keyed
        // "", else 0) — not its pods' priority; the group schedules.
        let default = pcs.get("").copied().unwrap_or(0);
        let priority = match d.spec.priority_class_name.as_deref() {
            None | Some("") => Some(default),
            Some(pc) => Some(pcs.get(pc).copied().unwrap_or(default)),
        };
        Ok(GroupSpec {
            api: GroupApi::Volcano,
            min_member: min_member(d.spec.min_member)?,
            min_task_member: mtm,
            min_resources: res(&d.spec.min_resources, "spec.minResources")?,
            queue: d
                .spec
                .queue
                .clone()
                .filter(|q| !q.is_empty())
                .unwrap_or_else(|| DEFAULT_QUEUE.into()),
            priority,
            schedule_timeout_seconds: None,
            annotations: d.metadata.annotations.clone().unwrap_or_default(),
            labels: d.metadata.labels.clone().unwrap_or_default(),
            created: created(&d.metadata),
            phase: d.status.and_then(|s| s.phase),
            error: None,
            namespace,
            name,
        })
    } else {
        let d: CoschedPodGroupDoc =
            serde_json::from_value(o.value.clone()).map_err(|e| e.to_string())?;
        let (namespace, name) = need_name(&d.metadata)?;
        if let Some(t) = d.spec.schedule_timeout_seconds
            && t < 0
        {
            return Err(format!(
                "spec.scheduleTimeoutSeconds: must not be negative, got {t}"
            ));
        }
        let ann = d.metadata.annotations.clone().unwrap_or_default();
        Ok(GroupSpec {
            api: GroupApi::Coscheduling,
            min_member: min_member(d.spec.min_member)?,
            min_task_member: BTreeMap::new(),
            min_resources: res(&d.spec.min_resources, "spec.minResources")?,
            queue: ann
                .get(ANN_QUEUE_NAME)
                .cloned()
                .unwrap_or_else(|| DEFAULT_QUEUE.into()),
            priority: None,
            schedule_timeout_seconds: d.spec.schedule_timeout_seconds,
            annotations: ann,
            labels: d.metadata.labels.clone().unwrap_or_default(),
            created: created(&d.metadata),
            phase: d.status.and_then(|s| s.phase),
            error: None,
            namespace,
            name,
        })
    }
}

fn parse_quota(o: &RawObject) -> Result<QuotaSpec, String> {
    let q: ResourceQuota = serde_json::from_value(o.value.clone()).map_err(|e| e.to_string())?;
    let name = q.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err("metadata.name must be set".into());
    }
    let namespace = q
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let hard = q.spec.and_then(|s| s.hard).unwrap_or_default();
    let mut reqs = BTreeMap::new();
    let mut pods = None;
    for (k, v) in &hard {
        let dim = if let Some(d) = k.strip_prefix("requests.") {
            d
        } else if k == "pods" {
            let n = ResMap::from_list(&BTreeMap::from([(k.clone(), v.clone())]), "spec.hard")
                .map_err(|e| e.to_string())?;
            pods = Some(n.get("pods"));
            continue;
        } else if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage")
            || k.starts_with("hugepages-")
        {
            k.as_str()
        } else {
            // limits.*, count/*, services, ... are enforced by the API server.
            continue;
        };
        reqs.insert(dim.to_string(), v.clone());
    }
    let hard = ResMap::from_list(&reqs, "spec.hard").map_err(|e| e.to_string())?;
    Ok(QuotaSpec {
        namespace,
        name,
        hard,
        pods,
    })
}

/// Whole seconds (rounded up) of a Go duration (`72h`, `1h30m`, `90s`): the one
/// grammar of [`corral_api::duration`]; a bare number or `2d` is an error.
pub fn duration_secs(s: &str) -> Result<i64, String> {
    let d = corral_api::duration::parse(s).map_err(|e| e.to_string())?;
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Ok(i64::try_from(secs).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::load_str;

    const DOCS: &str = r#"
apiVersion: scheduling.volcano.sh/v1beta1
kind: Queue
metadata: {name: gold}
spec:
  weight: 3
  reclaimable: false
  capability: {cpu: "10", nvidia.com/gpu: "4"}
  guarantee: {resource: {cpu: "2"}}
status: {state: Open}
---
apiVersion: scheduling.volcano.sh/v1beta1
kind: Queue
metadata: {name: closed}
status: {state: Closed}
---
apiVersion: scheduling.volcano.sh/v1beta1
kind: PodGroup
metadata: {name: train, namespace: ml}
spec:
  minMember: 3
  minTaskMember: {ps: 1, worker: 2}
  queue: gold
  priorityClassName: high
  minResources: {cpu: "3", nvidia.com/gpu: "2"}
---
apiVersion: scheduling.x-k8s.io/v1alpha1
kind: PodGroup
metadata: {name: cosched, namespace: ml}
spec: {minMember: 2, scheduleTimeoutSeconds: 10}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: q, namespace: ml}
spec:
  hard: {requests.cpu: "8", memory: 16Gi, pods: "20", limits.cpu: "100", count/jobs.batch: "3"}
"#;

    fn parse(text: &str) -> BatchObjects {
        let inp = load_str(
            &format!(
                "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {{name: high}}\nvalue: 100\n---\n{text}"
            ),
            "t.yaml",
            EXTRA_KINDS,
        )
        .unwrap();
        assert!(inp.warnings.is_empty(), "{:?}", inp.warnings);
        BatchObjects::parse(&inp.other, &inp.priority_classes)
    }

    #[test]
    fn decodes_queues_groups_and_quotas() {
        let b = parse(DOCS);
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        assert_eq!(b.queues.len(), 2);
        let g = &b.queues[0];
        assert_eq!((g.weight, g.reclaimable, g.open), (3, false, true));
        assert_eq!(g.capability.as_ref().unwrap().get("nvidia.com/gpu"), 4);
        assert_eq!(g.guarantee.get("cpu"), 2000);
        assert!(!b.queues[1].open);
        let v = &b.groups[0];
        assert_eq!(v.api, GroupApi::Volcano);
        assert_eq!(v.min_member, 3);
        assert_eq!(v.min_task_member["worker"], 2);
        assert_eq!(v.priority, Some(100));
        assert_eq!(v.min_resources.as_ref().unwrap().get("cpu"), 3000);
        let c = &b.groups[1];
        assert_eq!(
            (c.api, c.min_member, c.queue.as_str()),
            (GroupApi::Coscheduling, 2, "default")
        );
        let q = &b.quotas[0];
        assert_eq!(q.hard.get("cpu"), 8000);
        assert_eq!(q.hard.get("memory"), 16 << 30);
        assert_eq!(q.pods, Some(20));
        assert_eq!(q.hard.0.len(), 2);
    }

    #[test]
    fn malformed_objects_are_reported_by_name() {
        let bad = r#"
apiVersion: scheduling.volcano.sh/v1beta1
kind: PodGroup
metadata: {name: neg, namespace: ml}
spec: {minMember: -1}
---
apiVersion: scheduling.volcano.sh/v1beta1
kind: PodGroup
metadata: {name: typo, namespace: ml}
spec: {minMembers: 2}
---
apiVersion: scheduling.volcano.sh/v1beta1
kind: Queue
metadata: {name: w0}
spec: {weight: 0}
---
apiVersion: scheduling.volcano.sh/v1beta1
kind: Queue
metadata: {name: badcap}
spec: {capability: {cpu: lots}}
---
apiVersion: scheduling.volcano.sh/v1beta1
kind: Queue
metadata: {name: ok}
"#;
        let b = parse(bad);
        assert_eq!(b.queues.len(), 1);
        assert!(b.groups.is_empty());
        let all = b.errors.join("\n");
        for want in [
            "PodGroup ml/neg",
            "spec.minMember: must not be negative, got -1",
            "PodGroup ml/typo",
            "unknown field `minMembers`",
            "Queue w0",
            "spec.weight",
            "Queue badcap",
            "spec.capability[cpu]",
            "t.yaml: document",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }

    #[test]
    fn durations_use_the_api_grammar() {
        assert_eq!(duration_secs("6h"), Ok(6 * 3600));
        assert_eq!(duration_secs("1h30m"), Ok(5400));
        assert_eq!(duration_secs("1500ms"), Ok(2));
        for bad in ["6", "2d", "6x", ""] {
            let e = duration_secs(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
