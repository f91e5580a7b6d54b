//! The volumes of persisted services (docs/services.md, "Data"): labelled
//! with a project (and its workspace), not with a run, so run sweeps never
//! judge them. `moat system prune --volumes` removes those of this home no
//! project uses any more: the workspace is gone, or its `moat.yaml` no
//! longer names the service with `persist: true`. A workspace whose file
//! cannot be read keeps its volumes (fail closed).

use std::collections::BTreeMap;
use std::path::Path;

use moat_runtime::{VolumeInfo, labels};

/// The project volumes of the home labelled `home` that no project uses.
pub fn unused<'a>(volumes: &'a [VolumeInfo], home: &str) -> Vec<&'a VolumeInfo> {
    volumes
        .iter()
        .filter(|v| v.labels.get(labels::HOME).is_some_and(|h| h == home))
        .filter(|v| v.labels.contains_key(labels::PROJECT))
        .filter(|v| !in_use(&v.labels))
        .collect()
}

fn in_use(volume_labels: &BTreeMap<String, String>) -> bool {
    let (Some(workspace), Some(service)) = (volume_labels.get(labels::WORKSPACE), volume_labels.get(labels::SERVICE))
    else {
        // Not a volume this version made: left alone.
        return true;
    };
    project_uses(Path::new(workspace), service)
}

/// Whether the project at `workspace` persists `service`.
fn project_uses(workspace: &Path, service: &str) -> bool {
    if !workspace.is_dir() {
        return false;
    }
    let loaded = match moat_core::config::load_project(workspace) {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!(
                "keeping the {service} volume of {}: its project file cannot be read ({e})",
                workspace.display()
            );
            return true;
        }
    };
    let config = loaded.config;
    let declared = (config.dependencies.iter()).any(|d| d.split('@').next().is_some_and(|name| name.trim() == service));
    declared && config.services.get(service).is_some_and(|s| s.persist)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(home: &str, workspace: &Path) -> VolumeInfo {
        VolumeInfo {
            name: "moat-data-x-postgres".into(),
            labels: BTreeMap::from([
                (labels::MANAGED.to_string(), "true".to_string()),
                (labels::HOME.to_string(), home.to_string()),
                (labels::PROJECT.to_string(), "x".to_string()),
                (labels::WORKSPACE.to_string(), workspace.display().to_string()),
                (labels::SERVICE.to_string(), "postgres".to_string()),
            ]),
        }
    }

    #[test]
    fn a_volume_goes_when_its_project_no_longer_persists_the_service() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        let volumes = [volume("home1", ws)];
        let write = |yaml: &str| std::fs::write(ws.join("moat.yaml"), yaml).unwrap();
        write("dependencies: [postgres@15]\nservices: {postgres: {persist: true}}\n");
        assert!(unused(&volumes, "home1").is_empty(), "persisted: kept");
        assert!(unused(&volumes, "home2").is_empty(), "another home's: kept");
        write("dependencies: [postgres@15]\n");
        assert_eq!(unused(&volumes, "home1").len(), 1, "no longer persisted: removed");
        write("dependencies: [postgres@15\n");
        assert!(unused(&volumes, "home1").is_empty(), "unreadable: kept");
        std::fs::remove_file(ws.join("moat.yaml")).unwrap();
        assert_eq!(unused(&volumes, "home1").len(), 1, "no project file: removed");
        let gone = [volume("home1", &ws.join("gone"))];
        assert_eq!(unused(&gone, "home1").len(), 1, "workspace gone: removed");
    }
}
