//! NodeResourcesBalancedAllocation (kube-scheduler semantics). SKELETON: to be implemented.

use std::sync::Arc;

use crate::framework::Plugin;

pub const NAME: &str = "NodeResourcesBalancedAllocation";

#[derive(Debug, Default)]
pub struct NodeResourcesBalancedAllocation;

impl Plugin for NodeResourcesBalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }
}

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let _: serde_json::Value = super::decode_args(args)?;
    Ok(Arc::new(NodeResourcesBalancedAllocation))
}
