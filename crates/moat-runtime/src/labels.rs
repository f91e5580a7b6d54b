//! The labels moat puts on every runtime object it creates.

use std::collections::BTreeMap;

pub const MANAGED: &str = "dev.moat.managed";
pub const RUN_ID: &str = "dev.moat.run-id";
pub const HOME: &str = "dev.moat.home";
pub const ROLE: &str = "dev.moat.role";

/// What an object is for within its run.
pub mod role {
    pub const MAIN: &str = "main";
    pub const NETWORK: &str = "network";
    pub const SERVICE: &str = "service";
    pub const VOLUME: &str = "volume";
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
