//! Rendering a generated cluster as multi-document YAML files.

use super::*;

/// Renders the cluster as multi-document YAML files in `dir` (created if missing).
/// Files that would be empty are not written, and a stale copy is removed.
pub fn write(cluster: &Cluster, dir: &Path) -> Result<()> {
    write_with(cluster, dir, &mut |_, _, _| {})
}

/// One progress line of `cluster`'s in-memory generation:
/// `generating running pods 12000/150000 (3.1 s)`.
pub fn gen_line(stage: &str, i: u64, n: u64, elapsed: std::time::Duration) -> String {
    format!(
        "generating {stage} {i}/{n} ({:.1} s)",
        elapsed.as_secs_f64()
    )
}

/// One progress line of `cluster`: `writing pods.yaml (3/5, 4.2 s)`.
pub fn stage_line(file: &str, i: usize, n: usize, elapsed: std::time::Duration) -> String {
    format!("writing {file} ({i}/{n}, {:.1} s)", elapsed.as_secs_f64())
}

/// [`write`], calling `on_file(name, i, n)` before the i-th of n files is rendered.
pub fn write_with(
    cluster: &Cluster,
    dir: &Path,
    on_file: &mut dyn FnMut(&str, usize, usize),
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let files: [(&str, &dyn Fn() -> Result<String>); 5] = [
        (NAMESPACES_FILE, &|| to_yaml(&cluster.namespaces)),
        (PRIORITY_CLASSES_FILE, &|| {
            to_yaml(&cluster.priority_classes)
        }),
        (NODES_FILE, &|| to_yaml(&cluster.nodes)),
        (RUNNING_FILE, &|| to_yaml(&cluster.running)),
        (PODS_FILE, &|| to_yaml(&cluster.pending)),
    ];
    let n = files.len();
    for (i, (name, render)) in files.into_iter().enumerate() {
        on_file(name, i + 1, n);
        let text = render()?;
        let path = dir.join(name);
        if text.is_empty() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()));
                }
            }
        } else {
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

/// Serializes objects as a `---`-separated YAML stream (empty string for no objects).
pub fn to_yaml<T: Serialize>(objects: &[T]) -> Result<String> {
    let mut out = String::new();
    for obj in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(obj).context("YAML serialization failed")?);
    }
    Ok(out)
}
