//! Pinned maps left by another version of the agent: a map whose key or
//! value size differs from this object's would be re-used as it is by the
//! loader, and the verifier would then reject the programs (an access past
//! the old value). Such a pin is removed before loading, with a warning,
//! and the map is created anew (its entries — flows, counters, or config
//! the agent writes again on its next sync — are lost).

use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::MapData;
use tracing::warn;

/// Removes the pins in `maps_dir` of `names` whose key/value sizes differ
/// from the map definitions in `object`. Returns the names removed.
pub fn drop_incompatible(maps_dir: &Path, names: &[&str], object: &[u8]) -> Result<Vec<String>> {
    let obj = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
    let mut removed = Vec::new();
    for name in names {
        let pin = maps_dir.join(name);
        if !pin.exists() {
            continue;
        }
        let Some(want) = obj.maps.get(*name) else {
            continue;
        };
        let info = MapData::from_pin(&pin).and_then(|m| m.info());
        let (key, value) = match &info {
            Ok(i) => (i.key_size(), i.value_size()),
            Err(_) => (0, 0), // unreadable: replaced as well
        };
        if key == want.key_size() && value == want.value_size() {
            continue;
        }
        warn!(
            map = name,
            pinned_key = key,
            pinned_value = value,
            key = want.key_size(),
            value = want.value_size(),
            "pinned map from another agent version has another layout: re-created"
        );
        std::fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
        removed.push(name.to_string());
    }
    Ok(removed)
}
