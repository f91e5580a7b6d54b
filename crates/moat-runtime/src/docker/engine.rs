//! Which engine answers moat's Docker API calls: Docker itself, or the
//! Docker-compatible service of Podman (rootful or rootless). Read once
//! per connection from the engine's `/version` components and, for
//! Podman, `/libpod/info` ([`super::libpod`]); the differences that matter to moat are exposed as
//! [`crate::Capabilities`] and refusals, never as engine checks elsewhere.

use bollard::models::SystemVersion;

/// The component Podman names itself by in `/version`.
const PODMAN_COMPONENT: &str = "Podman Engine";

/// The engine behind a Docker API endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman { version: String, rootless: bool },
}

impl Engine {
    /// Podman's version, if these `/version` answers are Podman's.
    pub fn podman_version(version: &SystemVersion) -> Option<String> {
        (version.components.iter().flatten())
            .find(|component| component.name == PODMAN_COMPONENT)
            .map(|component| component.version.clone())
    }

    pub fn is_podman(&self) -> bool {
        matches!(self, Engine::Podman { .. })
    }

    /// For people: `docker`, `podman 4.3.1 (rootful)`.
    pub fn describe(&self) -> String {
        match self {
            Engine::Docker => "docker".to_string(),
            Engine::Podman { version, rootless } => {
                let mode = if *rootless { "rootless" } else { "rootful" };
                format!("podman {version} ({mode})")
            }
        }
    }

    /// Why moat refuses to run on this engine, if it does. Rootless Podman
    /// puts a run's network in the user's own network namespace: the
    /// host has no address on it, so the credential proxy cannot listen
    /// where only the run reaches it, and no host firewall rule can keep
    /// a strict run from the host's services.
    pub fn refusal(&self) -> Option<String> {
        match self {
            Engine::Podman { rootless: true, .. } => Some(
                "rootless Podman is not supported: its networks live in the user's network namespace, so moat \
                 cannot put the credential proxy on a run's network gateway nor enforce strict egress with host \
                 firewall rules; run Podman's service as root (`podman system service` under sudo) or use Docker"
                    .to_string(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::SystemVersionComponents;

    fn version(components: &[(&str, &str)]) -> SystemVersion {
        SystemVersion {
            components: Some(
                (components.iter())
                    .map(|(name, version)| SystemVersionComponents {
                        name: name.to_string(),
                        version: version.to_string(),
                        details: None,
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn podman_is_named_by_its_engine_component() {
        let podman = version(&[("Podman Engine", "4.3.1"), ("Conmon", "2.1.6")]);
        assert_eq!(Engine::podman_version(&podman).as_deref(), Some("4.3.1"));
        let rootful = Engine::Podman {
            version: "4.3.1".into(),
            rootless: false,
        };
        assert_eq!(rootful.describe(), "podman 4.3.1 (rootful)");
        assert!(rootful.refusal().is_none());
        let rootless = Engine::Podman {
            version: "4.3.1".into(),
            rootless: true,
        };
        assert_eq!(rootless.describe(), "podman 4.3.1 (rootless)");
        let refusal = rootless.refusal().unwrap_or_default();
        assert!(refusal.contains("rootless Podman is not supported"), "{refusal}");
    }

    #[test]
    fn anything_else_is_docker() {
        let docker = version(&[("Engine", "26.1.5"), ("containerd", "1.7")]);
        assert_eq!(Engine::podman_version(&docker), None);
        assert_eq!(Engine::podman_version(&SystemVersion::default()), None);
        assert_eq!(Engine::Docker.describe(), "docker");
        assert!(Engine::Docker.refusal().is_none());
    }
}
