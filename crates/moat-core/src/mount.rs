//! A bind mount as a container gets it: a resolved host path, where it
//! appears, and whether it is read-only. Shared by the run spec the CLI sends
//! and the container spec a runtime receives (moat.yaml's declared form is
//! [`crate::config::Mount`]).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Absolute host path (or, for masks, a path moat owns).
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}
