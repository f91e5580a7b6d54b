//! Services named in `dependencies:` (`postgres@15`, `redis`, `mariadb`):
//! the catalogue shipped with moat (`data/services.yaml`, a start script
//! each), taking them out of a dependency list, the deterministic build
//! context of a service's image, and the variables a run's container gets
//! to reach one. Nothing here starts or builds: the daemon does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::DependencyError;
use super::dockerfile::{BuildContext, ContextFile, SYSTEM_BUNDLE, content_hash, join_quoted};
use super::request::Request;

const SHIPPED: &str = include_str!("../../data/services.yaml");
/// Repository of the service images moat builds (`moat/service:<16 hex>`).
pub const SERVICE_IMAGE_REPOSITORY: &str = "moat/service";
/// Where a sidecar keeps its data (a persisted service's volume goes here).
pub const DATA_DIR: &str = "/var/lib/moat/service";
const START_PATH: &str = "/usr/local/bin/moat-service";
/// Variables moat sets in a sidecar; `services.<name>.env` may not set them.
pub const SIDECAR_VARIABLES: &[&str] = &[
    "MOAT_SERVICE_USER",
    "MOAT_SERVICE_PASSWORD",
    "MOAT_SERVICE_DB",
    "MOAT_SERVICE_PORT",
];
/// The readiness bound when `services.<name>.ready_timeout` is not set.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest readiness bound a service may have (the run's creation
/// must still fit the CLI's wait).
pub const MAX_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Length of the password each run's service gets.
pub const PASSWORD_LENGTH: usize = 32;

/// The start script of each service, by name.
fn start_script(name: &str) -> Option<&'static str> {
    match name {
        "postgres" => Some(include_str!("../../data/services/postgres.sh")),
        "redis" => Some(include_str!("../../data/services/redis.sh")),
        "mariadb" => Some(include_str!("../../data/services/mariadb.sh")),
        _ => None,
    }
}

/// One service moat knows how to run.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub version: String,
    pub summary: String,
    pub apt: Vec<String>,
    /// The system user the server runs as.
    pub user: String,
    pub port: u16,
    /// The user name the run's client logs in with.
    pub account: String,
    pub database: String,
    pub scheme: String,
    /// Shell command that succeeds once the server answers.
    pub ready: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Entry {
    Offered(Definition),
    Refused { refused: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    services: BTreeMap<String, Entry>,
}

/// Every service of the shipped catalogue, by name.
#[derive(Clone, Debug)]
pub struct Catalog {
    entries: BTreeMap<String, Entry>,
}

/// A service a run asked for, as the CLI sends it to the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    /// Keep the data in a volume of the run's project.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persist: bool,
    /// Extra variables of the sidecar (`services.<name>.env`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    /// Bound on the readiness check, in seconds.
    #[serde(default = "default_ready_secs")]
    pub ready_timeout_secs: u64,
}

fn default_ready_secs() -> u64 {
    DEFAULT_READY_TIMEOUT.as_secs()
}

impl Default for ServiceSpec {
    fn default() -> Self {
        ServiceSpec {
            name: String::new(),
            persist: false,
            env: BTreeMap::new(),
            memory_bytes: None,
            ready_timeout_secs: default_ready_secs(),
        }
    }
}

impl ServiceSpec {
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs(self.ready_timeout_secs)
    }
}

/// `dependencies:` with its services taken out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// Service names, in the order written.
    pub services: Vec<String>,
    /// Everything else, for the image of the run.
    pub dependencies: Vec<String>,
}

impl Catalog {
    pub fn shipped() -> Result<Catalog, DependencyError> {
        let file: CatalogFile =
            serde_saphyr::from_str(SHIPPED).map_err(|e| DependencyError::Registry(e.to_string()))?;
        Ok(Catalog { entries: file.services })
    }

    /// The definition of an offered service; the refusal of a refused one.
    pub fn get(&self, name: &str) -> Option<Result<&Definition, DependencyError>> {
        self.entries.get(name).map(|entry| match entry {
            Entry::Offered(definition) => Ok(definition),
            Entry::Refused { refused } => Err(DependencyError::Malformed(name.to_string(), refused.trim().to_string())),
        })
    }

    /// Names of the offered services.
    pub fn offered(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|(_, entry)| matches!(entry, Entry::Offered(_)))
            .map(|(name, _)| name.as_str())
    }

    /// Takes the services out of `dependencies` (checking versions and
    /// `pins`, the `services.<name>.version` settings); refused names fail.
    pub fn split(&self, dependencies: &[String], pins: &BTreeMap<String, String>) -> Result<Split, DependencyError> {
        let mut split = Split::default();
        for text in dependencies {
            let Request::Named { name, version } = text.parse::<Request>()? else {
                split.dependencies.push(text.clone());
                continue;
            };
            let Some(definition) = self.get(&name) else {
                split.dependencies.push(text.clone());
                continue;
            };
            let definition = definition?;
            for wanted in version.iter().chain(pins.get(&name)) {
                check_version(&name, definition, wanted)?;
            }
            if split.services.contains(&name) {
                return Err(DependencyError::Malformed(text.clone(), "named twice".into()));
            }
            split.services.push(name);
        }
        Ok(split)
    }
}

fn check_version(name: &str, definition: &Definition, wanted: &str) -> Result<(), DependencyError> {
    let installed = definition.version.as_str();
    let within = wanted == installed
        || wanted.strip_prefix(installed).is_some_and(|rest| rest.starts_with('.'))
        || installed.strip_prefix(wanted).is_some_and(|rest| rest.starts_with('.'));
    if within {
        return Ok(());
    }
    Err(DependencyError::Version {
        name: name.to_string(),
        wanted: wanted.to_string(),
        installed: format!("{installed} (Debian bookworm's)"),
        needed_by: None,
    })
}

/// The build context of `name`'s image on `base`; `build_ca` (a PEM
/// bundle) is trusted during the build.
pub fn plan_image(base: &str, name: &str, build_ca: Option<&[u8]>) -> Result<BuildContext, DependencyError> {
    let catalog = Catalog::shipped()?;
    let unknown = || DependencyError::Unknown {
        name: name.to_string(),
        close: Vec::new(),
        known: catalog.offered().map(str::to_string).collect(),
    };
    let definition = catalog.get(name).ok_or_else(unknown)??;
    let script = start_script(name).ok_or_else(unknown)?;
    let dockerfile = dockerfile(base, name, definition, build_ca.is_some());
    let mut files = vec![ContextFile {
        name: "Dockerfile".into(),
        contents: dockerfile.clone().into_bytes(),
        mode: 0o644,
    }];
    if let Some(ca) = build_ca {
        files.push(ContextFile {
            name: "build-ca.pem".into(),
            contents: ca.to_vec(),
            mode: 0o644,
        });
    }
    files.push(ContextFile {
        name: "moat-service".into(),
        contents: script.as_bytes().to_vec(),
        mode: 0o755,
    });
    Ok(BuildContext {
        tag: format!("{SERVICE_IMAGE_REPOSITORY}:{}", content_hash(&files)),
        dockerfile,
        files,
    })
}

fn dockerfile(base: &str, name: &str, definition: &Definition, with_ca: bool) -> String {
    let mut apt: Vec<String> = definition.apt.clone();
    apt.push("ca-certificates".into());
    apt.sort();
    let user = &definition.user;
    let mut lines = vec![
        format!("# Generated by moat for the {name} service; the tag is this context's hash."),
        format!("FROM {base}"),
        "USER root".into(),
        format!("ENV DEBIAN_FRONTEND=noninteractive SSL_CERT_FILE={SYSTEM_BUNDLE} CURL_CA_BUNDLE={SYSTEM_BUNDLE}"),
    ];
    if with_ca {
        lines.push("COPY build-ca.pem /usr/local/share/ca-certificates/moat-build-ca.crt".into());
    }
    lines.extend([
        format!(
            "RUN apt-get update && apt-get install --yes --no-install-recommends {} \
             && rm -rf /var/lib/apt/lists/* && update-ca-certificates",
            join_quoted(&apt)
        ),
        format!("RUN install -d -o {user} -g {user} -m 0700 {DATA_DIR} {DATA_DIR}/data"),
        format!("COPY moat-service {START_PATH}"),
        format!("USER {user}"),
        format!("ENTRYPOINT [\"{START_PATH}\"]"),
        "CMD []".into(),
    ]);
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// What the run's container is told about one service reachable at
/// `host`: `MOAT_<NAME>_HOST`, `_PORT`, `_USER`, `_PASSWORD`, `_DB`, `_URL`.
pub fn client_env(name: &str, definition: &Definition, host: &str, password: &str) -> Vec<(String, String)> {
    let prefix = format!("MOAT_{}", name.to_ascii_uppercase().replace('-', "_"));
    let Definition {
        port,
        account,
        database,
        scheme,
        ..
    } = definition;
    let url = format!("{scheme}://{account}:{password}@{host}:{port}/{database}");
    [
        ("HOST", host.to_string()),
        ("PORT", port.to_string()),
        ("USER", account.clone()),
        ("PASSWORD", password.to_string()),
        ("DB", database.clone()),
        ("URL", url),
    ]
    .into_iter()
    .map(|(suffix, value)| (format!("{prefix}_{suffix}"), value))
    .collect()
}

/// The variables a sidecar starts with: moat's, then the user's extras.
pub fn sidecar_env(definition: &Definition, spec: &ServiceSpec, password: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("MOAT_SERVICE_USER".to_string(), definition.account.clone()),
        ("MOAT_SERVICE_PASSWORD".to_string(), password.to_string()),
        ("MOAT_SERVICE_DB".to_string(), definition.database.clone()),
        ("MOAT_SERVICE_PORT".to_string(), definition.port.to_string()),
    ];
    env.extend(
        spec.env
            .iter()
            .filter(|(key, _)| !SIDECAR_VARIABLES.contains(&key.as_str()))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(deps: &[&str]) -> Result<Split, DependencyError> {
        let deps: Vec<String> = deps.iter().map(|d| d.to_string()).collect();
        Catalog::shipped().unwrap().split(&deps, &BTreeMap::new())
    }

    #[test]
    fn services_are_taken_out_of_the_dependencies() {
        let split = split(&["postgres@15", "psql", "redis", "git"]).unwrap();
        assert_eq!(split.services, ["postgres", "redis"]);
        assert_eq!(split.dependencies, ["psql", "git"]);
    }

    #[test]
    fn a_version_debian_does_not_have_is_refused() {
        let err = split(&["postgres@16"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "postgres@16 cannot be satisfied: moat installs postgres 15 (Debian bookworm's)"
        );
        assert!(split(&["postgres@15.4", "redis@7", "mariadb@10.11"]).is_ok());
        let pins = BTreeMap::from([("redis".to_string(), "6".to_string())]);
        let err = Catalog::shipped()
            .unwrap()
            .split(&["redis".to_string()], &pins)
            .unwrap_err();
        assert!(err.to_string().contains("redis@6"), "{err}");
    }

    #[test]
    fn mysql_is_refused_with_the_way_out() {
        let err = split(&["mysql@8"]).unwrap_err().to_string();
        assert!(err.contains("no MySQL server") && err.contains("mariadb"), "{err}");
    }

    #[test]
    fn every_offered_service_has_a_start_script_and_a_stable_image() {
        let catalog = Catalog::shipped().unwrap();
        for name in catalog.offered() {
            let first = plan_image("moat-base:bookworm", name, None).unwrap();
            let again = plan_image("moat-base:bookworm", name, None).unwrap();
            assert_eq!(first, again);
            assert!(first.tag.starts_with("moat/service:"), "{}", first.tag);
            assert!(first.dockerfile.contains("USER "), "{}", first.dockerfile);
        }
    }

    #[test]
    fn the_client_gets_host_port_user_password_db_and_url() {
        let catalog = Catalog::shipped().unwrap();
        let postgres = catalog.get("postgres").unwrap().unwrap();
        let env: BTreeMap<_, _> = client_env("postgres", postgres, "postgres", "pw").into_iter().collect();
        assert_eq!(env["MOAT_POSTGRES_URL"], "postgres://moat:pw@postgres:5432/moat");
        assert_eq!(env["MOAT_POSTGRES_PORT"], "5432");
        assert_eq!(env.len(), 6);
    }

    #[test]
    fn the_user_cannot_replace_the_sidecar_password() {
        let catalog = Catalog::shipped().unwrap();
        let redis = catalog.get("redis").unwrap().unwrap();
        let spec = ServiceSpec {
            name: "redis".into(),
            env: BTreeMap::from([
                ("MOAT_SERVICE_PASSWORD".to_string(), "x".to_string()),
                ("TZ".to_string(), "UTC".to_string()),
            ]),
            ..ServiceSpec::default()
        };
        let env = sidecar_env(redis, &spec, "pw");
        assert!(env.contains(&("MOAT_SERVICE_PASSWORD".to_string(), "pw".to_string())));
        assert!(!env.iter().any(|(_, v)| v == "x"));
        assert!(env.contains(&("TZ".to_string(), "UTC".to_string())));
    }
}
