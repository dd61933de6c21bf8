//! STATUS: the agent answers and the IPAM plugin can serve ADD.

use super::*;

impl Ctx {
    /// STATUS: the agent must answer (it attaches every new pod), and the
    /// IPAM plugin must exist; an IPAM plugin speaking CNI 1.1.0 gets
    /// STATUS too, its 50/51 passed through (other failures → 50).
    /// Existing pods keep their enforcement while the agent is down
    /// (pinned maps, attached programs), hence 50, not 51, for the agent.
    pub(super) fn status(&self) -> CniResultT<()> {
        agent_list(&self.conf.agent_socket)
            .map_err(|e| CniError::new(code::NOT_AVAILABLE, e.msg.clone()).details(e.details))?;
        let unavailable = |e: CniError| {
            let c = if e.code == code::NOT_AVAILABLE_LIMITED {
                code::NOT_AVAILABLE_LIMITED
            } else {
                code::NOT_AVAILABLE
            };
            CniError::new(c, e.msg).details(e.details)
        };
        if let Some(plugin) = self.ipam_v11("STATUS").map_err(unavailable)? {
            let env = DelegateEnv {
                command: "STATUS",
                container_id: "",
                netns: "",
                ifname: "",
                args: "",
                path: &self.env.path,
            };
            sys::exec_plugin(&plugin, &env, &self.conf.delegate_config(SPEC_VERSION, &[]))
                .map_err(unavailable)?;
        }
        Ok(())
    }
}
