//! The labels moat puts on every runtime object it creates, and how objects
//! left by moat's earlier (Go) implementation are recognised.

use std::collections::BTreeMap;

pub const MANAGED: &str = "dev.moat.managed";
pub const RUN_ID: &str = "dev.moat.run-id";
pub const HOME: &str = "dev.moat.home";
pub const ROLE: &str = "dev.moat.role";
/// On a service sidecar and a persisted service volume: the service.
pub const SERVICE: &str = "dev.moat.service";
/// On a persisted service volume: the project (hash of home and workspace).
pub const PROJECT: &str = "dev.moat.project";
/// On a persisted service volume: the workspace of its project.
pub const WORKSPACE: &str = "dev.moat.workspace";
/// On a warm-pool network: the daemon instance that created it.
pub const DAEMON: &str = "dev.moat.daemon";

/// Every label of this implementation starts with this.
pub const PREFIX: &str = "dev.moat.";

/// The label the Go implementation put on its objects (`=true`).
pub const LEGACY_MANAGED: &str = "moat.managed";
/// The name prefix of the Go implementation's objects.
pub const LEGACY_NAME_PREFIX: &str = "moat-";

/// What an object is for within its run.
pub mod role {
    pub const MAIN: &str = "main";
    pub const NETWORK: &str = "network";
    pub const SERVICE: &str = "service";
    pub const VOLUME: &str = "volume";
    /// A ready-made network of the daemon's warm pool, taken by a run
    /// (which records its name) instead of creating one.
    pub const POOL: &str = "pool";
    /// A container that holds a run's network up where the runtime
    /// creates the bridge only when a container joins (Podman).
    pub const HOLDER: &str = "holder";
}

/// The full label set for one object of a run.
pub fn for_run(home_label: &str, run_id: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED.to_string(), "true".to_string()),
        (RUN_ID.to_string(), run_id.to_string()),
        (HOME.to_string(), home_label.to_string()),
        (ROLE.to_string(), role.to_string()),
    ])
}

/// Whether an object was left by the Go implementation: labelled
/// `moat.managed=true` or named `moat-…`, and carrying no `dev.moat.*`
/// label (this implementation's networks are named `moat-run_…` too, but
/// are always labelled). A leading `/` (Docker container names) is ignored.
pub fn is_legacy(name: &str, labels: &BTreeMap<String, String>) -> bool {
    if labels.keys().any(|key| key.starts_with(PREFIX)) {
        return false;
    }
    let legacy_label = labels.get(LEGACY_MANAGED).is_some_and(|v| v == "true");
    let legacy_name = name.trim_start_matches('/').starts_with(LEGACY_NAME_PREFIX);
    legacy_label || legacy_name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn go_era_objects_are_recognised_by_label_or_name_prefix() {
        assert!(is_legacy("anything", &labels(&[(LEGACY_MANAGED, "true")])));
        assert!(is_legacy("moat-legacy-1", &labels(&[])));
        assert!(is_legacy("/moat-agent", &labels(&[("other", "x")])));
        assert!(!is_legacy("anything", &labels(&[(LEGACY_MANAGED, "false")])));
        assert!(!is_legacy("xmoat-1", &labels(&[])), "the name must start with moat-");
        assert!(!is_legacy("postgres", &labels(&[])));
    }

    #[test]
    fn objects_of_this_implementation_are_never_legacy() {
        let ours = for_run("aaaaaaaaaaaa", "run_0123456789ab", role::NETWORK);
        assert!(!is_legacy("moat-run_0123456789ab", &ours));
        let mixed = labels(&[(LEGACY_MANAGED, "true"), (ROLE, "main")]);
        assert!(!is_legacy("moat-x", &mixed));
    }
}
