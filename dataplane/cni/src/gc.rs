//! GC: attachments not in `cni.dev/valid-attachments` are torn down.

use super::*;

impl Ctx {
    pub(super) fn gc(&self) -> CniResultT<()> {
        let Some(valid) = &self.conf.valid_attachments else {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "GC: cni.dev/valid-attachments is required",
            ));
        };
        let _lock = Lock::take(&self.conf.data_dir, LOCK_WAIT)?;
        agent_list(&self.conf.agent_socket)?;
        let dir = state_dir(&self.conf);
        let rd = match std::fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(CniError::new(
                    code::IO,
                    format!("reading {}: {e}", dir.display()),
                ));
            }
        };
        let mut first_err = None;
        for ent in rd.flatten() {
            let p = ent.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let Ok(Some(st)) = load_state(&p) else {
                continue;
            };
            if valid
                .iter()
                .any(|v| v.container_id == st.container_id && v.ifname == st.ifname)
            {
                continue;
            }
            sys::log(
                &self.conf.log_file,
                &format!("GC: removing {} {}", st.container_id, st.ifname),
            );
            if let Err(e) = self.teardown(&st) {
                first_err.get_or_insert(e);
            }
        }
        // then the IPAM plugin's own GC with the same valid list (releases
        // reservations Corral has no state for, e.g. after a lost state
        // file), when it speaks CNI 1.1.0
        match self.ipam_v11("GC") {
            Ok(Some(plugin)) => {
                let env = DelegateEnv {
                    command: "GC",
                    container_id: "",
                    netns: "",
                    ifname: "",
                    args: "",
                    path: &self.env.path,
                };
                let conf = self.conf.gc_delegate_config(SPEC_VERSION);
                if let Err(e) = sys::exec_plugin(&plugin, &env, &conf) {
                    first_err.get_or_insert(e);
                }
            }
            Ok(None) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
