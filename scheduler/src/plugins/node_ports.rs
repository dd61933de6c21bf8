//! NodePorts (kube-scheduler semantics). SKELETON: to be implemented.

use std::sync::Arc;

use crate::framework::Plugin;

pub const NAME: &str = "NodePorts";

#[derive(Debug, Default)]
pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }
}

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let _: serde_json::Value = super::decode_args(args)?;
    Ok(Arc::new(NodePorts))
}
