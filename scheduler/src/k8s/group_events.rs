//! PodGroup Events as Volcano's scheduler writes them, derived from the PodGroup
//! status patches of a session: `Unschedulable` (Warning, the gang verdict, e.g. "2/3
//! tasks in gang unschedulable: ...") while the group cannot be placed, and
//! `Scheduled` (Normal, "pod group is ready: N task(s) running") when it starts
//! running. The status writer drops repeats (same reason and note as the last Event
//! of that group), so a group's Events follow its transitions, not its sessions.

use serde_json::Value;

use super::crds::{Crd, StatusPatch};
use super::recorder::ObjRef;

/// One PodGroup Event to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEvent {
    pub group: ObjRefKey,
    pub type_: &'static str,
    pub reason: &'static str,
    pub note: String,
}

/// The PodGroup an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjRefKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl ObjRefKey {
    pub fn obj_ref(&self) -> ObjRef {
        ObjRef {
            api_version: corral_api::keys::VOLCANO_API.into(),
            kind: "PodGroup".into(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The Events the status patches of Volcano PodGroups call for; `uid` looks up the
/// object's UID by `namespace/name`.
pub fn from_patches(
    patches: &[StatusPatch],
    uid: impl Fn(&str) -> Option<String>,
) -> Vec<GroupEvent> {
    let mut out = Vec::new();
    for p in patches {
        if p.crd != Crd::VolcanoPodGroup {
            continue;
        }
        let Some(ns) = p.namespace.clone() else {
            continue;
        };
        let key = format!("{ns}/{}", p.name);
        let Some(uid) = uid(&key) else { continue };
        let group = ObjRefKey {
            namespace: ns,
            name: p.name.clone(),
            uid,
        };
        let cond = p.status["conditions"].get(0).unwrap_or(&Value::Null);
        let phase = p.status["phase"].as_str().unwrap_or("");
        if cond["type"] == "Unschedulable" {
            out.push(GroupEvent {
                group,
                type_: "Warning",
                reason: "Unschedulable",
                note: cond["message"].as_str().unwrap_or("").to_string(),
            });
        } else if phase == "Running" {
            let running = p.status["running"].as_i64().unwrap_or(0);
            out.push(GroupEvent {
                group,
                type_: "Normal",
                reason: "Scheduled",
                note: format!("pod group is ready: {running} task(s) running"),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(crd: Crd, status: Value) -> StatusPatch {
        StatusPatch {
            crd,
            namespace: Some("ml".into()),
            name: "train".into(),
            status,
        }
    }

    #[test]
    fn volcano_groups_get_unschedulable_then_scheduled() {
        let uid = |k: &str| (k == "ml/train").then(|| "u1".to_string());
        let un = patch(
            Crd::VolcanoPodGroup,
            json!({"phase": "Pending", "running": 0, "conditions": [{"type": "Unschedulable",
                "message": "3/3 tasks in gang unschedulable: 0/2 nodes are available"}]}),
        );
        let ev = from_patches(&[un], uid);
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].type_, ev[0].reason), ("Warning", "Unschedulable"));
        assert!(ev[0].note.starts_with("3/3 tasks in gang unschedulable"));
        assert_eq!(ev[0].group.obj_ref().uid, "u1");
        let ok = patch(
            Crd::VolcanoPodGroup,
            json!({"phase": "Running", "running": 3, "conditions": [{"type": "Scheduled"}]}),
        );
        let ev = from_patches(&[ok], uid);
        assert_eq!(ev[0].reason, "Scheduled");
        assert_eq!(ev[0].note, "pod group is ready: 3 task(s) running");
        // Inqueue/Pending without a verdict, other kinds, unknown objects: nothing.
        let q = patch(Crd::VolcanoPodGroup, json!({"phase": "Inqueue"}));
        let c = patch(Crd::CoschedulingPodGroup, json!({"phase": "Running"}));
        assert!(from_patches(&[q, c], uid).is_empty());
        let ok = patch(Crd::VolcanoPodGroup, json!({"phase": "Running"}));
        assert!(from_patches(&[ok], |_| None).is_empty());
    }
}
