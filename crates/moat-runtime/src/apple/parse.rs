//! Parsing of the `container` CLI's output into moat's runtime types: the
//! v1 (≥ 1.0) and legacy (0.8–0.12, and ≤ 0.7 where noted) JSON schemas of
//! containers, networks and images, and the text network table
//! (fixtures/apple-container/README.md, "Notes for parsers").
//!
//! The CLI has no labels, so moat objects are recognised by name and given
//! the `dev.moat.*` labels a Docker caller would see.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use moat_core::RunId;
use serde::Deserialize;

use crate::{ContainerInfo, ContainerStatus, ImageInfo, NetworkInfo, labels};

/// Output that does not have any known shape.
#[derive(Debug, thiserror::Error)]
#[error("unrecognised `container {command}` output: {reason}")]
pub struct ParseError {
    pub command: String,
    pub reason: String,
}

fn parse_json<T: serde::de::DeserializeOwned>(command: &str, text: &str) -> Result<T, ParseError> {
    serde_json::from_str(text).map_err(|err| ParseError {
        command: command.to_string(),
        reason: err.to_string(),
    })
}

// === names ===

/// The labels moat would have put on a container called `name`:
/// `run_<12hex>` is a run's main container, `run_<12hex>-<suffix>` one of
/// its services. Empty for other names.
pub fn container_labels_from_name(name: &str) -> BTreeMap<String, String> {
    let (run_id, role) = match name.split_once('-') {
        None => (name, labels::role::MAIN),
        Some((run_id, suffix)) if !suffix.is_empty() => (run_id, labels::role::SERVICE),
        Some(_) => return BTreeMap::new(),
    };
    if !RunId::is_valid(run_id) {
        return BTreeMap::new();
    }
    synthesized(run_id, role)
}

/// The labels of a per-run network called `name` (`moat-run_<12hex>`).
pub fn network_labels_from_name(name: &str) -> BTreeMap<String, String> {
    match RunId::from_network_name(name) {
        Some(run_id) => synthesized(run_id.as_str(), labels::role::NETWORK),
        None => BTreeMap::new(),
    }
}

/// Moat's labels minus `dev.moat.home`, which no name carries.
fn synthesized(run_id: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED.to_string(), "true".to_string()),
        (labels::RUN_ID.to_string(), run_id.to_string()),
        (labels::ROLE.to_string(), role.to_string()),
    ])
}

pub fn is_moat_managed(labels: &BTreeMap<String, String>) -> bool {
    labels.contains_key(labels::RUN_ID)
}

/// `192.168.64.3/24` → `192.168.64.3`.
pub fn strip_prefix_length(address: &str) -> &str {
    address.split_once('/').map_or(address, |(ip, _)| ip)
}

// === containers ===

/// One entry of `container list --format json` / `container inspect`.
#[derive(Deserialize)]
struct ContainerRecord {
    /// v1 only; legacy uses `configuration.id`.
    id: Option<String>,
    configuration: ContainerConfiguration,
    status: RecordStatus,
    /// Legacy (≤ 0.12): attachments at the top level.
    #[serde(default)]
    networks: Vec<Attachment>,
    /// Legacy (0.8–0.12): seconds since 2001 (absent in ≤ 0.7).
    #[serde(rename = "startedDate")]
    started_date: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RecordStatus {
    /// Legacy: `"status": "running"`.
    Legacy(String),
    /// v1: `"status": {"state", "networks", "startedDate"?}`.
    Current(CurrentStatus),
}

#[derive(Deserialize)]
struct CurrentStatus {
    state: String,
    #[serde(default)]
    networks: Vec<Attachment>,
    #[serde(rename = "startedDate")]
    started_date: Option<String>,
}

#[derive(Deserialize)]
struct ContainerConfiguration {
    id: String,
    image: ImageReference,
    /// Networks the container refers to, kept after it stops.
    #[serde(default)]
    networks: Vec<NetworkReference>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// v1 only (ISO 8601).
    #[serde(rename = "creationDate")]
    creation_date: Option<String>,
}

#[derive(Deserialize)]
struct ImageReference {
    reference: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NetworkReference {
    Attachment { network: String },
    Name(String),
}

impl NetworkReference {
    fn name(&self) -> &str {
        match self {
            NetworkReference::Attachment { network } | NetworkReference::Name(network) => network,
        }
    }
}

/// A running container's address on one network.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    pub network: String,
    /// CIDR form as printed (`address` before 0.8).
    #[serde(rename = "ipv4Address", alias = "address")]
    ipv4_address: Option<String>,
    #[serde(rename = "ipv4Gateway", alias = "gateway")]
    pub gateway: Option<String>,
}

impl Attachment {
    /// The container's IPv4 address without the prefix length.
    pub fn ipv4(&self) -> Option<&str> {
        self.ipv4_address.as_deref().map(strip_prefix_length)
    }
}

/// A parsed container: moat's description plus its current attachments.
#[derive(Clone, Debug, PartialEq)]
pub struct AppleContainer {
    pub info: ContainerInfo,
    /// Empty unless running.
    pub attachments: Vec<Attachment>,
}

impl ContainerRecord {
    fn into_container(self) -> AppleContainer {
        let config = self.configuration;
        let (state, started, attachments) = match self.status {
            RecordStatus::Legacy(state) => (state, self.started_date.is_some(), self.networks),
            RecordStatus::Current(status) => (status.state, status.started_date.is_some(), status.networks),
        };
        let mut labels = config.labels;
        labels.extend(container_labels_from_name(&config.id));
        let info = ContainerInfo {
            address: None,
            id: self.id.unwrap_or_else(|| config.id.clone()),
            name: config.id,
            image: config.image.reference,
            status: container_status(&state, started),
            exit_code: None,
            labels,
            networks: config.networks.iter().map(|n| n.name().to_string()).collect(),
            created_at: config.creation_date.as_deref().and_then(parse_iso8601),
        };
        AppleContainer { info, attachments }
    }
}

/// Apple's states are running/stopped/stopping/unknown; a created container
/// is `stopped` without a start date (≤ 0.7 has no start date, so there a
/// stopped container always reads as created).
fn container_status(state: &str, started: bool) -> ContainerStatus {
    match state {
        "running" | "stopping" => ContainerStatus::Running,
        "stopped" if started => ContainerStatus::Exited,
        "stopped" => ContainerStatus::Created,
        _ => ContainerStatus::Unknown,
    }
}

fn parse_iso8601(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// Parses `container list --all --format json` or `container inspect`
/// output (both print an array; legacy prints `[]` for an unknown id).
pub fn parse_containers(command: &str, text: &str) -> Result<Vec<AppleContainer>, ParseError> {
    let records: Vec<ContainerRecord> = parse_json(command, text)?;
    Ok(records.into_iter().map(ContainerRecord::into_container).collect())
}

// === networks ===

#[derive(Deserialize)]
struct NetworkRecord {
    id: String,
    /// v1.
    configuration: Option<NetworkConfiguration>,
    /// Legacy (≤ 0.12).
    config: Option<NetworkConfiguration>,
    status: Option<NetworkStatus>,
}

#[derive(Deserialize)]
struct NetworkConfiguration {
    /// v1: `configuration.name`; legacy: `config.id`.
    #[serde(alias = "id")]
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    mode: Option<String>,
}

#[derive(Deserialize)]
struct NetworkStatus {
    /// `address` in ≤ 0.7.
    #[serde(rename = "ipv4Subnet", alias = "address")]
    subnet: Option<String>,
    /// `gateway` in ≤ 0.7.
    #[serde(rename = "ipv4Gateway", alias = "gateway")]
    gateway: Option<String>,
}

impl NetworkRecord {
    fn into_info(self) -> NetworkInfo {
        let config = self.configuration.or(self.config);
        let (name, mut labels, mode) = match config {
            Some(c) => (c.name, c.labels, c.mode),
            None => (None, BTreeMap::new(), None),
        };
        let name = name.unwrap_or_else(|| self.id.clone());
        labels.extend(network_labels_from_name(&name));
        let (subnet, gateway) = match self.status {
            Some(s) => (s.subnet, s.gateway),
            None => (None, None),
        };
        NetworkInfo {
            id: self.id,
            name,
            labels,
            subnet,
            gateway,
            internal: mode.as_deref() == Some("hostOnly"),
            containers: Vec::new(),
        }
    }
}

/// Parses `container network list --format json` or `network inspect`
/// (attached containers are not part of it: see [`attach_containers`]).
pub fn parse_networks(command: &str, text: &str) -> Result<Vec<NetworkInfo>, ParseError> {
    let records: Vec<NetworkRecord> = parse_json(command, text)?;
    Ok(records.into_iter().map(NetworkRecord::into_info).collect())
}

/// Parses the `container network list` table: `NETWORK SUBNET` (1.x) or
/// `NETWORK STATE SUBNET` (0.x, where an unstarted network's subnet is
/// `none`).
pub fn parse_network_table(text: &str) -> Result<Vec<NetworkInfo>, ParseError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (Some(name_at), Some(subnet_at)) = (column("NETWORK"), column("SUBNET")) else {
        return Err(ParseError {
            command: "network list".to_string(),
            reason: format!("no NETWORK/SUBNET header in {text:?}"),
        });
    };
    Ok(lines
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let name = cells.get(name_at)?.to_string();
            let subnet = cells.get(subnet_at).filter(|s| **s != "none").map(|s| s.to_string());
            Some(NetworkInfo {
                id: name.clone(),
                labels: network_labels_from_name(&name),
                name,
                subnet,
                gateway: None,
                internal: false,
                containers: Vec::new(),
            })
        })
        .collect())
}

/// Fills each network's `containers` with the containers that refer to it
/// (stopped ones included: they still block its deletion).
pub fn attach_containers(networks: &mut [NetworkInfo], containers: &[AppleContainer]) {
    for network in networks {
        network.containers = containers
            .iter()
            .filter(|c| c.info.networks.contains(&network.name))
            .map(|c| c.info.name.clone())
            .collect();
    }
}

// === images ===

#[derive(Deserialize)]
#[serde(untagged)]
enum ImageRecord {
    /// v1 list and inspect: `{id, configuration:{name}, variants}`.
    Current {
        id: String,
        configuration: ImageConfiguration,
        #[serde(default)]
        variants: Vec<ImageVariant>,
    },
    /// Legacy list: `{reference, fullSize, descriptor}`.
    LegacyList { reference: String, descriptor: Descriptor },
    /// Legacy inspect: `{name, index, variants}`.
    LegacyInspect {
        name: String,
        index: Descriptor,
        #[serde(default)]
        variants: Vec<ImageVariant>,
    },
}

#[derive(Deserialize)]
struct ImageConfiguration {
    name: String,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
}

#[derive(Deserialize)]
struct ImageVariant {
    size: Option<u64>,
}

/// Sum of the local variants' sizes; unknown when any is missing.
fn total_size(variants: &[ImageVariant]) -> Option<u64> {
    if variants.is_empty() {
        return None;
    }
    variants.iter().map(|v| v.size).sum()
}

impl ImageRecord {
    fn into_info(self) -> ImageInfo {
        match self {
            ImageRecord::Current {
                id,
                configuration,
                variants,
            } => ImageInfo {
                id: format!("sha256:{id}"),
                tags: vec![configuration.name],
                size: total_size(&variants),
                created: None,
            },
            ImageRecord::LegacyList { reference, descriptor } => ImageInfo {
                id: descriptor.digest,
                tags: vec![reference],
                size: None,
                created: None,
            },
            ImageRecord::LegacyInspect { name, index, variants } => ImageInfo {
                id: index.digest,
                tags: vec![name],
                size: total_size(&variants),
                created: None,
            },
        }
    }
}

/// Parses `container image list --format json` or `image inspect`.
pub fn parse_images(command: &str, text: &str) -> Result<Vec<ImageInfo>, ParseError> {
    let records: Vec<ImageRecord> = parse_json(command, text)?;
    Ok(records.into_iter().map(ImageRecord::into_info).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_map_to_run_labels() {
        let main = container_labels_from_name("run_0123456789ab");
        assert_eq!(main[labels::RUN_ID], "run_0123456789ab");
        assert_eq!(main[labels::ROLE], labels::role::MAIN);
        let service = container_labels_from_name("run_0123456789ab-postgres");
        assert_eq!(service[labels::RUN_ID], "run_0123456789ab");
        assert_eq!(service[labels::ROLE], labels::role::SERVICE);
        for foreign in [
            "c0ffee00-1234-4abc-8def-0123456789ab",
            "run_0123456789ab-",
            "run_0123456789",
            "buildkit",
        ] {
            assert!(container_labels_from_name(foreign).is_empty(), "{foreign}");
        }
    }

    #[test]
    fn network_names_map_to_run_labels() {
        let labels = network_labels_from_name("moat-run_fedcba987654");
        assert_eq!(labels[labels::RUN_ID], "run_fedcba987654");
        assert_eq!(labels[labels::ROLE], labels::role::NETWORK);
        assert!(network_labels_from_name("default").is_empty());
        assert!(network_labels_from_name("moat-run_fedcba98765").is_empty());
    }

    #[test]
    fn prefix_lengths_are_stripped() {
        assert_eq!(strip_prefix_length("192.168.64.3/24"), "192.168.64.3");
        assert_eq!(strip_prefix_length("192.168.64.3"), "192.168.64.3");
    }

    #[test]
    fn table_without_header_is_an_error() {
        assert!(parse_network_table("").is_err());
        assert!(parse_network_table("garbage\n").is_err());
    }

    #[test]
    fn unknown_state_is_unknown() {
        assert_eq!(container_status("paused", true), ContainerStatus::Unknown);
        assert_eq!(container_status("stopping", true), ContainerStatus::Running);
    }
}
