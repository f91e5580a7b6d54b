//! `dependencies:` of a `moat.yaml`: the registry shipped with moat
//! (`data/dependencies.yaml`, which also defines the agents `moat <agent>`
//! runs), parsing and resolving the entries a user
//! names, and the deterministic Dockerfile (and content-hash tag) of the
//! image that holds them; the services among the entries (`services`).
//! Nothing here builds: the daemon does.

mod agents;
mod dockerfile;
mod registry;
mod request;
pub mod services;

pub use agents::{Agent, StagedFile, check_home_path};
pub use dockerfile::{BuildContext, BuildHooks, ContextFile, HookFailure, IMAGE_REPOSITORY, INIT_PATH};
pub use registry::{Entry, Layer, Registry};
pub use request::Request;

/// Why a `dependencies:` list cannot become an image.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DependencyError {
    #[error("unknown dependency {name:?} ({})", suggest(.close, .known))]
    Unknown {
        name: String,
        close: Vec<String>,
        known: Vec<String>,
    },
    #[error("dependency {0:?}: {1}")]
    Malformed(String, String),
    #[error(
        "{name}@{wanted} cannot be satisfied: moat installs {name} {installed}{}",
        needed_by.as_ref().map(|by| format!(" (needed by {by})")).unwrap_or_default()
    )]
    Version {
        name: String,
        wanted: String,
        installed: String,
        needed_by: Option<String>,
    },
    #[error("{name} is asked for at two versions: {first} and {second}")]
    Conflict {
        name: String,
        first: String,
        second: String,
    },
    #[error("the dependency registry shipped with moat is invalid: {0}")]
    Registry(String),
}

fn suggest(close: &[String], known: &[String]) -> String {
    if close.is_empty() {
        format!(
            "known: {}; or apt:<package>, pip:<package>, npm:<package>",
            known.join(", ")
        )
    } else {
        format!("did you mean {}?", close.join(" or "))
    }
}

/// Resolves `dependencies:` against the shipped registry into the build
/// context of an image on `base`; `build_ca` (a PEM bundle) is trusted
/// during the build.
pub fn plan_image(
    base: &str,
    dependencies: &[String],
    build_ca: Option<&[u8]>,
) -> Result<BuildContext, DependencyError> {
    plan_build(base, dependencies, &BuildHooks::default(), build_ca)
}

/// [`plan_image`] with the build hooks of `moat.yaml` as its last layers.
pub fn plan_build(
    base: &str,
    dependencies: &[String],
    hooks: &BuildHooks,
    build_ca: Option<&[u8]>,
) -> Result<BuildContext, DependencyError> {
    let registry = Registry::shipped()?;
    let requests = dependencies
        .iter()
        .map(|text| text.parse::<Request>())
        .collect::<Result<Vec<_>, _>>()?;
    let resolved = registry.resolve(&requests)?;
    Ok(dockerfile::render(base, &resolved, hooks, build_ca))
}
