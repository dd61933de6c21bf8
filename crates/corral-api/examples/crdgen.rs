//! Writes `deploy/crds/*.yaml` from corral-api's CRD types.
//!
//! ```sh
//! cargo run -p corral-api --features crd --example crdgen            # into deploy/crds
//! cargo run -p corral-api --features crd --example crdgen -- DIR     # elsewhere
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds"));
    for m in corral_api::crd::manifests() {
        let path = dir.join(&m.file);
        if let Err(e) = std::fs::write(&path, &m.yaml) {
            eprintln!("error: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
