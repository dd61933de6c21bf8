//! DEL: deregistration, link removal and IPAM release from the stored
//! attachment (idempotent: a missing attachment or link is not an error).

use super::*;

pub(super) fn link_gone(e: &CniError) -> bool {
    e.msg.contains("Cannot find device")
        || e.msg.contains("does not exist")
        || e.msg.contains("No such device")
}

impl Ctx {
    /// Removes everything an attachment may have created, in reverse
    /// order; each step tolerates "already gone".
    /// Agent deregistration runs alongside the local steps (it unpins the
    /// links by their pins, independent of the interface still existing);
    /// the state is removed only when every step succeeded, so a failed
    /// teardown (e.g. agent down → code 11) is completed by the retry.
    pub(super) fn teardown(&self, st: &Attachment) -> CniResultT<()> {
        let sock = self.conf.agent_socket.clone();
        let hif = st.host_if.clone();
        let dereg = std::thread::spawn(move || agent_deregister(&sock, &hif));
        let local = self.teardown_local(st);
        let d = dereg
            .join()
            .unwrap_or_else(|_| Err(CniError::new(code::IO, "deregister worker failed")));
        d?;
        local?;
        remove_state(&state_path(&self.conf, &st.container_id, &st.ifname))
    }

    pub(super) fn teardown_local(&self, st: &Attachment) -> CniResultT<()> {
        if st.mode == "standalone" {
            match Nl::open()
                .and_then(|mut nl| nl.run(vec![netlink::link_del(&st.host_if)]))
                .map_err(CniError::from)
            {
                Err(e) if !link_gone(&e) => return Err(e),
                _ => {}
            }
            if let Some((t, v)) = &st.ipam {
                // the stored config: release exactly what was allocated
                let conf = match &st.config {
                    Value::Object(m) => NetConf::parse(&serde_json::to_vec(m).unwrap_or_default())
                        .unwrap_or_else(|_| self.conf.clone()),
                    _ => self.conf.clone(),
                };
                let plugin = sys::find_plugin(&self.env.path, t)?;
                let env = DelegateEnv {
                    command: "DEL",
                    container_id: &st.container_id,
                    netns: &st.netns,
                    ifname: &st.ifname,
                    args: &st.cni_args,
                    path: &self.env.path,
                };
                sys::exec_plugin(&plugin, &env, &conf.delegate_config(v, &[]))?;
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- DEL

    pub(super) fn del(&self) -> CniResultT<()> {
        let _lock = Lock::take(&self.conf.data_dir, LOCK_WAIT)?;
        let e = &self.env;
        let sp = state_path(&self.conf, &e.container_id, &e.ifname);
        let st = match load_state(&sp)? {
            Some(s) => s,
            None if self.chained() => return Ok(()),
            None => {
                // no record (e.g. ADD never ran or state lost): release by
                // the derived names anyway; all steps are idempotent
                let ipam = match &self.conf.ipam_type {
                    Some(t) => {
                        let plugin = sys::find_plugin(&e.path, t)?;
                        Some((t.clone(), self.delegate_version(&plugin)?))
                    }
                    None => None,
                };
                Attachment {
                    container_id: e.container_id.clone(),
                    ifname: e.ifname.clone(),
                    netns: e.netns.clone(),
                    host_if: host_ifname(&e.container_id, &e.ifname),
                    mode: "standalone".into(),
                    ipam,
                    config: Value::Object(self.conf.raw.clone()),
                    cni_args: e.args.clone(),
                    result: None,
                }
            }
        };
        self.teardown(&st)
    }

    // ---------------------------------------------------------------- CHECK
}
