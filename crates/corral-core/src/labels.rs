//! Compiled label selectors and node selector terms with Kubernetes semantics.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Label map type used by k8s-openapi.
pub type Labels = BTreeMap<String, String>;

/// A selector operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

/// One requirement: `key <op> values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    /// Sorted values (for In/NotIn).
    pub values: Vec<String>,
}

impl Requirement {
    fn new(key: &str, op: &str, values: &[String], allow_gt_lt: bool) -> Result<Self, String> {
        let mut vals = values.to_vec();
        vals.sort();
        vals.dedup();
        let op = match op {
            "In" | "NotIn" => {
                if vals.is_empty() {
                    return Err(format!(
                        "key {key:?}: operator {op} requires at least one value"
                    ));
                }
                if op == "In" { Op::In } else { Op::NotIn }
            }
            "Exists" | "DoesNotExist" => {
                if !vals.is_empty() {
                    return Err(format!("key {key:?}: operator {op} takes no values"));
                }
                if op == "Exists" {
                    Op::Exists
                } else {
                    Op::DoesNotExist
                }
            }
            "Gt" | "Lt" if allow_gt_lt => {
                if vals.len() != 1 {
                    return Err(format!(
                        "key {key:?}: operator {op} requires exactly one value"
                    ));
                }
                let n: i64 = vals[0].parse().map_err(|_| {
                    format!(
                        "key {key:?}: operator {op} needs an integer value, got {:?}",
                        vals[0]
                    )
                })?;
                if op == "Gt" { Op::Gt(n) } else { Op::Lt(n) }
            }
            other => return Err(format!("key {key:?}: unknown operator {other:?}")),
        };
        if key.is_empty() {
            return Err("empty key in selector requirement".into());
        }
        Ok(Requirement {
            key: key.to_string(),
            op,
            values: vals,
        })
    }

    /// Evaluates the requirement against a value lookup.
    #[inline]
    pub fn matches_value(&self, v: Option<&str>) -> bool {
        match (&self.op, v) {
            (Op::In, Some(v)) => self.values.iter().any(|x| x == v),
            (Op::In, None) => false,
            (Op::NotIn, Some(v)) => !self.values.iter().any(|x| x == v),
            (Op::NotIn, None) => true,
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
            (Op::Gt(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x > *n),
            (Op::Lt(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x < *n),
            (Op::Gt(_) | Op::Lt(_), None) => false,
        }
    }

    #[inline]
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.key).map(String::as_str))
    }
}

/// A compiled `metav1.LabelSelector`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    reqs: Vec<Requirement>,
    nothing: bool,
}

impl Selector {
    /// Selector matching every label set (the empty selector `{}`).
    pub fn everything() -> Self {
        Selector::default()
    }

    /// Selector matching nothing (a nil selector in affinity/spread terms).
    pub fn nothing() -> Self {
        Selector {
            reqs: vec![],
            nothing: true,
        }
    }

    /// Compiles a label selector; `None` compiles to [`Selector::nothing`].
    pub fn from_label_selector(ls: Option<&LabelSelector>) -> Result<Self, String> {
        let Some(ls) = ls else {
            return Ok(Selector::nothing());
        };
        let mut reqs = Vec::new();
        for (k, v) in ls.match_labels.iter().flatten() {
            reqs.push(Requirement::new(k, "In", std::slice::from_ref(v), false)?);
        }
        for LabelSelectorRequirement {
            key,
            operator,
            values,
        } in ls.match_expressions.iter().flatten()
        {
            reqs.push(Requirement::new(
                key,
                operator,
                values.as_deref().unwrap_or(&[]),
                false,
            )?);
        }
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Selector {
            reqs,
            nothing: false,
        })
    }

    /// Selector from plain `matchLabels`.
    pub fn from_map(m: &Labels) -> Self {
        let reqs = m
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                op: Op::In,
                values: vec![v.clone()],
            })
            .collect();
        Selector {
            reqs,
            nothing: false,
        }
    }

    /// Adds a requirement (used for `matchLabelKeys`).
    pub fn push(&mut self, r: Requirement) {
        self.reqs.push(r);
    }

    /// True for the empty selector (matches everything).
    pub fn is_everything(&self) -> bool {
        !self.nothing && self.reqs.is_empty()
    }

    /// True for the nil selector.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    /// The requirements (ANDed; sorted by key for selectors compiled from a
    /// `LabelSelector`).
    pub fn requirements(&self) -> &[Requirement] {
        &self.reqs
    }

    /// The first `In` requirement (key, sorted values), if any: every label set the
    /// selector matches carries one of these values for this key (used to look
    /// candidates up in [`crate::pod_index::PodIndex`]).
    pub fn index_requirement(&self) -> Option<(&str, &[String])> {
        self.reqs
            .iter()
            .find(|r| r.op == Op::In)
            .map(|r| (r.key.as_str(), r.values.as_slice()))
    }

    #[inline]
    pub fn matches(&self, labels: &Labels) -> bool {
        !self.nothing && self.reqs.iter().all(|r| r.matches(labels))
    }

    /// Like [`Selector::matches`] for an optional label map (absent = empty).
    #[inline]
    pub fn matches_opt(&self, labels: Option<&Labels>) -> bool {
        static EMPTY: Labels = BTreeMap::new();
        self.matches(labels.unwrap_or(&EMPTY))
    }
}

/// One compiled `NodeSelectorTerm` (expressions on labels, fields on `metadata.name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTerm {
    exprs: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl NodeTerm {
    pub fn compile(t: &NodeSelectorTerm) -> Result<Self, String> {
        let conv = |rs: &Option<Vec<NodeSelectorRequirement>>, is_field: bool| {
            rs.iter()
                .flatten()
                .map(|r| {
                    if is_field && r.key != "metadata.name" {
                        return Err(format!(
                            "matchFields key {:?} is not supported (only metadata.name)",
                            r.key
                        ));
                    }
                    if is_field && !matches!(r.operator.as_str(), "In" | "NotIn") {
                        return Err(format!(
                            "matchFields operator {:?} is not supported (In, NotIn)",
                            r.operator
                        ));
                    }
                    if is_field && r.values.as_ref().is_none_or(|v| v.len() != 1) {
                        return Err("matchFields requires exactly one value".to_string());
                    }
                    Requirement::new(
                        &r.key,
                        &r.operator,
                        r.values.as_deref().unwrap_or(&[]),
                        true,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(NodeTerm {
            exprs: conv(&t.match_expressions, false)?,
            fields: conv(&t.match_fields, true)?,
        })
    }

    /// A term with no requirements matches no node.
    #[inline]
    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        if self.exprs.is_empty() && self.fields.is_empty() {
            return false;
        }
        self.exprs.iter().all(|r| r.matches(labels))
            && self.fields.iter().all(|r| r.matches_value(Some(node_name)))
    }

    /// The label requirements (`matchExpressions`).
    pub fn expressions(&self) -> &[Requirement] {
        &self.exprs
    }

    /// The `metadata.name` requirements (`matchFields`).
    pub fn fields(&self) -> &[Requirement] {
        &self.fields
    }

    /// Node names this term pins via `matchFields metadata.name In`, if any.
    pub fn field_names(&self) -> Option<Vec<String>> {
        self.fields
            .iter()
            .find(|r| r.op == Op::In)
            .map(|r| r.values.clone())
    }
}

/// A compiled `NodeSelector` (terms are ORed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeSelectorMatcher {
    pub terms: Vec<NodeTerm>,
}

impl NodeSelectorMatcher {
    pub fn compile(ns: &NodeSelector) -> Result<Self, String> {
        Ok(NodeSelectorMatcher {
            terms: ns
                .node_selector_terms
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    NodeTerm::compile(t).map_err(|e| format!("nodeSelectorTerms[{i}]: {e}"))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    #[inline]
    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        self.terms.iter().any(|t| t.matches(node_name, labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_semantics() {
        let ls: LabelSelector = serde_json::from_str(
            r#"{"matchLabels":{"app":"web"},"matchExpressions":[{"key":"tier","operator":"NotIn","values":["db"]},{"key":"env","operator":"Exists"}]}"#,
        )
        .unwrap();
        let s = Selector::from_label_selector(Some(&ls)).unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("env", "x")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "x"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(Selector::from_label_selector(None).unwrap().is_nothing());
        assert!(!Selector::nothing().matches(&labels(&[])));
        let empty = Selector::from_label_selector(Some(&LabelSelector::default())).unwrap();
        assert!(empty.is_everything() && empty.matches(&labels(&[])));
    }

    #[test]
    fn bad_operators_are_errors() {
        let ls: LabelSelector = serde_json::from_str(
            r#"{"matchExpressions":[{"key":"a","operator":"Gt","values":["1"]}]}"#,
        )
        .unwrap();
        assert!(Selector::from_label_selector(Some(&ls)).is_err());
        let ls: LabelSelector =
            serde_json::from_str(r#"{"matchExpressions":[{"key":"a","operator":"In"}]}"#).unwrap();
        assert!(Selector::from_label_selector(Some(&ls)).is_err());
    }

    #[test]
    fn node_terms() {
        let ns: NodeSelector = serde_json::from_str(
            r#"{"nodeSelectorTerms":[
              {"matchExpressions":[{"key":"cores","operator":"Gt","values":["8"]},{"key":"gpu","operator":"DoesNotExist"}]},
              {"matchFields":[{"key":"metadata.name","operator":"In","values":["n9"]}]},
              {}
            ]}"#,
        )
        .unwrap();
        let m = NodeSelectorMatcher::compile(&ns).unwrap();
        assert!(m.matches("n1", &labels(&[("cores", "16")])));
        assert!(!m.matches("n1", &labels(&[("cores", "8")])));
        assert!(!m.matches("n1", &labels(&[("cores", "x")])));
        assert!(!m.matches("n1", &labels(&[("cores", "16"), ("gpu", "a")])));
        assert!(m.matches("n9", &labels(&[])));
        assert_eq!(m.terms[1].field_names(), Some(vec!["n9".to_string()]));
        let bad: NodeSelector = serde_json::from_str(
            r#"{"nodeSelectorTerms":[{"matchExpressions":[{"key":"a","operator":"Lt","values":["x"]}]}]}"#,
        )
        .unwrap();
        assert!(
            NodeSelectorMatcher::compile(&bad)
                .unwrap_err()
                .contains("nodeSelectorTerms[0]")
        );
    }
}
