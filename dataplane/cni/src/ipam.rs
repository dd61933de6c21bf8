//! The delegated IPAM plugin: version negotiation and execution.

use super::*;

impl Ctx {
    /// The IPAM plugin of a standalone config if it supports CNI 1.1.0
    /// (the only version with GC and STATUS); otherwise None, logged
    /// (Debian's host-local 1.1.1 stops at 1.0.0).
    pub(super) fn ipam_v11(&self, command: &str) -> CniResultT<Option<PathBuf>> {
        let Some(t) = &self.conf.ipam_type else {
            return Ok(None);
        };
        if self.chained() {
            return Ok(None);
        }
        let plugin = sys::find_plugin(&self.env.path, t)?;
        let sup = self.plugin_versions(&plugin)?;
        if sup.iter().any(|v| v == SPEC_VERSION) {
            return Ok(Some(plugin));
        }
        sys::log(
            &self.conf.log_file,
            &format!(
                "IPAM {command} skipped: {} does not support CNI {SPEC_VERSION} (it supports {sup:?})",
                plugin.display()
            ),
        );
        Ok(None)
    }

    /// Version to use with a delegate: the config's if the plugin supports
    /// it, else the highest common one (reference plugins stop at 1.0.0).
    pub(super) fn delegate_version(&self, plugin: &Path) -> CniResultT<String> {
        let want = self.conf.cni_version.as_str();
        if want != "1.1.0" {
            return Ok(want.into());
        }
        let sup = self.plugin_versions(plugin)?;
        for v in SUPPORTED_VERSIONS.iter().rev() {
            if sup.iter().any(|s| s == v) {
                return Ok((*v).into());
            }
        }
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "IPAM plugin {} supports none of {:?} (it supports {sup:?})",
                plugin.display(),
                SUPPORTED_VERSIONS
            ),
        ))
    }

    /// The `supportedVersions` a plugin reports for VERSION, cached in
    /// `<dataDir>/plugin-versions.json` by path + inode + size + mtime, so
    /// the ADD path does not exec the IPAM plugin twice (a replaced or
    /// updated binary is asked again). The cache is written atomically
    /// (temp file + rename); losing it only costs one exec.
    pub(super) fn plugin_versions(&self, plugin: &Path) -> CniResultT<Vec<String>> {
        use std::os::unix::fs::MetadataExt;
        let cache = self.conf.data_dir.join("plugin-versions.json");
        let key = std::fs::metadata(plugin).ok().map(|m| {
            format!(
                "{}:{}:{}:{}.{}",
                plugin.display(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec()
            )
        });
        let mut known: BTreeMap<String, Vec<String>> = std::fs::read(&cache)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if let Some(v) = key.as_ref().and_then(|k| known.get(k)) {
            return Ok(v.clone());
        }
        let sup = self.exec_version(plugin)?;
        if let Some(k) = key {
            let prefix = format!("{}:", plugin.display());
            known.retain(|x, _| !x.starts_with(&prefix));
            known.insert(k, sup.clone());
            let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
            let ok = std::fs::create_dir_all(&self.conf.data_dir).is_ok()
                && std::fs::write(&tmp, serde_json::to_vec(&known).unwrap_or_default()).is_ok()
                && std::fs::rename(&tmp, &cache).is_ok();
            if !ok {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(sup)
    }

    pub(super) fn exec_version(&self, plugin: &Path) -> CniResultT<Vec<String>> {
        let env = DelegateEnv {
            command: "VERSION",
            container_id: "",
            netns: "",
            ifname: "",
            args: "",
            path: &self.env.path,
        };
        let out = sys::exec_plugin(plugin, &env, br#"{"cniVersion":"1.1.0"}"#)?;
        Ok(out
            .as_ref()
            .and_then(|v| v.get("supportedVersions"))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default())
    }

    /// Calls the IPAM plugin for this invocation's container/interface.
    pub(super) fn ipam_exec(
        &self,
        command: &str,
        plugin_name: &str,
        version: &str,
        ips: &[String],
    ) -> CniResultT<Option<Value>> {
        let plugin = sys::find_plugin(&self.env.path, plugin_name)?;
        let e = &self.env;
        let env = DelegateEnv {
            command,
            container_id: &e.container_id,
            netns: &e.netns,
            ifname: &e.ifname,
            args: &e.args,
            path: &e.path,
        };
        sys::exec_plugin(&plugin, &env, &self.conf.delegate_config(version, ips))
    }

    // ---------------------------------------------------------------- ADD
}
