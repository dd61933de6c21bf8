//! NodeAffinity (kube-scheduler semantics). SKELETON: to be implemented.

use std::sync::Arc;

use crate::framework::Plugin;

pub const NAME: &str = "NodeAffinity";

#[derive(Debug, Default)]
pub struct NodeAffinity;

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
}

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let _: serde_json::Value = super::decode_args(args)?;
    Ok(Arc::new(NodeAffinity))
}
