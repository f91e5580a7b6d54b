//! Translation between moat's runtime types and Docker's API models: specs
//! into create requests, inspect and list answers into descriptions.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum, HostConfig, Ipam, IpamConfig, Mount as DockerMount, MountType, NetworkCreateRequest,
    NetworkInspect, ResourcesUlimits,
};
use chrono::{DateTime, TimeZone, Utc};

use crate::subnet::Ipv4Subnet;
use crate::{ContainerInfo, ContainerSpec, ContainerStatus, NetworkInfo, NetworkSpec};

// === Containers ===

/// The body of `POST /containers/create` for `spec`.
pub fn container_create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: non_empty(spec.command.clone()),
        env: non_empty(spec.env.iter().map(|(name, value)| format!("{name}={value}")).collect()),
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        labels: Some(to_hash_map(&spec.labels)),
        tty: Some(spec.tty),
        open_stdin: Some(spec.open_stdin),
        attach_stdin: Some(spec.open_stdin),
        // Without a TTY, stdin closes when the daemon's attachment ends (the
        // client's EOF); a TTY's stays open so a restarted daemon re-attaches.
        stdin_once: Some(spec.open_stdin && !spec.tty),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        host_config: Some(host_config(spec)),
        ..Default::default()
    }
}

fn host_config(spec: &ContainerSpec) -> HostConfig {
    HostConfig {
        mounts: non_empty(
            spec.mounts
                .iter()
                .map(bind_mount)
                .chain(spec.volumes.iter().map(|(volume, target)| volume_mount(volume, target)))
                .collect(),
        ),
        network_mode: match &spec.network_of {
            Some(holder) => Some(format!("container:{holder}")),
            None => spec.network.clone(),
        },
        extra_hosts: non_empty(
            spec.extra_hosts
                .iter()
                .map(|(name, address)| format!("{name}:{address}"))
                .collect(),
        ),
        dns: non_empty(spec.dns.clone()),
        cap_add: non_empty(spec.cap_add.clone()),
        memory: spec.memory_bytes,
        nano_cpus: spec.cpus.map(|cpus| (cpus * 1e9).round() as i64),
        ulimits: non_empty(
            spec.ulimits
                .iter()
                .map(|(name, limit)| ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(limit.soft),
                    hard: Some(limit.hard),
                })
                .collect(),
        ),
        pids_limit: spec.pids_limit.map(i64::from),
        console_size: spec
            .console_size
            .map(|size| vec![usize::from(size.rows), usize::from(size.cols)]),
        ..Default::default()
    }
}

fn bind_mount(mount: &crate::BindMount) -> DockerMount {
    DockerMount {
        typ: Some(MountType::BIND),
        source: Some(mount.source.clone()),
        target: Some(mount.target.clone()),
        read_only: Some(mount.read_only),
        ..Default::default()
    }
}

fn volume_mount(volume: &str, target: &str) -> DockerMount {
    DockerMount {
        typ: Some(MountType::VOLUME),
        source: Some(volume.to_string()),
        target: Some(target.to_string()),
        read_only: Some(false),
        ..Default::default()
    }
}

pub fn container_info_from_inspect(inspect: ContainerInspectResponse) -> ContainerInfo {
    let config = inspect.config.unwrap_or_default();
    let state = inspect.state.unwrap_or_default();
    let status = state.status.map_or(ContainerStatus::Unknown, status_from_state);
    let exit_code = has_exited(&status).then_some(state.exit_code).flatten();
    ContainerInfo {
        id: inspect.id.unwrap_or_default(),
        name: strip_slash(inspect.name.unwrap_or_default()),
        image: config.image.unwrap_or_default(),
        status,
        exit_code,
        labels: to_btree_map(config.labels),
        address: network_address(inspect.network_settings.as_ref().and_then(|n| n.networks.as_ref())),
        networks: sorted_keys(inspect.network_settings.and_then(|n| n.networks)),
        created_at: inspect.created.as_deref().and_then(parse_time),
    }
}

pub fn container_info_from_summary(summary: ContainerSummary) -> ContainerInfo {
    let status = summary.state.map_or(ContainerStatus::Unknown, status_from_summary);
    let exit_code = if has_exited(&status) {
        summary.status.as_deref().and_then(exit_code_from_status_text)
    } else {
        None
    };
    ContainerInfo {
        id: summary.id.unwrap_or_default(),
        name: summary
            .names
            .and_then(|names| names.into_iter().next())
            .map(strip_slash)
            .unwrap_or_default(),
        image: summary.image.unwrap_or_default(),
        status,
        exit_code,
        labels: to_btree_map(summary.labels),
        address: network_address(summary.network_settings.as_ref().and_then(|n| n.networks.as_ref())),
        networks: sorted_keys(summary.network_settings.and_then(|n| n.networks)),
        created_at: summary.created.and_then(|secs| Utc.timestamp_opt(secs, 0).single()),
    }
}

/// The first IPv4 (else IPv6) address among the container's networks.
fn network_address(networks: Option<&HashMap<String, bollard::models::EndpointSettings>>) -> Option<std::net::IpAddr> {
    let endpoints = networks?;
    let parsed = |text: &Option<String>| text.as_deref().and_then(|t| t.parse().ok());
    endpoints
        .values()
        .find_map(|e| parsed(&e.ip_address))
        .or_else(|| endpoints.values().find_map(|e| parsed(&e.global_ipv6_address)))
}

fn has_exited(status: &ContainerStatus) -> bool {
    matches!(status, ContainerStatus::Exited | ContainerStatus::Dead)
}

fn status_from_state(state: ContainerStateStatusEnum) -> ContainerStatus {
    match state {
        ContainerStateStatusEnum::CREATED => ContainerStatus::Created,
        ContainerStateStatusEnum::RUNNING => ContainerStatus::Running,
        ContainerStateStatusEnum::PAUSED => ContainerStatus::Paused,
        ContainerStateStatusEnum::RESTARTING => ContainerStatus::Restarting,
        ContainerStateStatusEnum::EXITED => ContainerStatus::Exited,
        ContainerStateStatusEnum::DEAD => ContainerStatus::Dead,
        _ => ContainerStatus::Unknown,
    }
}

fn status_from_summary(state: ContainerSummaryStateEnum) -> ContainerStatus {
    match state {
        ContainerSummaryStateEnum::CREATED => ContainerStatus::Created,
        ContainerSummaryStateEnum::RUNNING => ContainerStatus::Running,
        ContainerSummaryStateEnum::PAUSED => ContainerStatus::Paused,
        ContainerSummaryStateEnum::RESTARTING => ContainerStatus::Restarting,
        ContainerSummaryStateEnum::EXITED => ContainerStatus::Exited,
        ContainerSummaryStateEnum::DEAD => ContainerStatus::Dead,
        _ => ContainerStatus::Unknown,
    }
}

/// The code in Docker's list status text, e.g. `Exited (3) 2 seconds ago`.
pub fn exit_code_from_status_text(text: &str) -> Option<i64> {
    let rest = text.trim().strip_prefix("Exited (")?;
    let (code, _) = rest.split_once(')')?;
    code.parse().ok()
}

fn strip_slash(name: String) -> String {
    name.strip_prefix('/').map(str::to_string).unwrap_or(name)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

// === Networks ===

/// A bridge network on `subnet`, the gateway at its first address.
pub fn network_create_request(spec: &NetworkSpec, subnet: Ipv4Subnet) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: spec.name.clone(),
        driver: Some("bridge".to_string()),
        internal: Some(spec.internal),
        labels: Some(to_hash_map(&spec.labels)),
        ipam: Some(Ipam {
            driver: Some("default".to_string()),
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.to_string()),
                gateway: Some(subnet.first_host().to_string()),
                ..Default::default()
            }]),
            options: None,
        }),
        ..Default::default()
    }
}

pub fn network_info_from_inspect(inspect: NetworkInspect) -> NetworkInfo {
    let ipam = first_ipv4_config(inspect.ipam);
    let mut containers: Vec<String> = inspect
        .containers
        .unwrap_or_default()
        .into_iter()
        .map(|(id, endpoint)| endpoint.name.unwrap_or(id))
        .collect();
    containers.sort();
    NetworkInfo {
        id: inspect.id.unwrap_or_default(),
        name: inspect.name.unwrap_or_default(),
        labels: to_btree_map(inspect.labels),
        subnet: ipam.as_ref().and_then(|c| c.subnet.clone()),
        gateway: ipam.and_then(|c| c.gateway),
        internal: inspect.internal.unwrap_or(false),
        containers,
    }
}

fn first_ipv4_config(ipam: Option<Ipam>) -> Option<IpamConfig> {
    ipam?.config?.into_iter().find(|config| {
        config
            .subnet
            .as_deref()
            .is_some_and(|s| s.parse::<Ipv4Subnet>().is_ok())
    })
}

/// Every IPv4 subnet in the IPAM configurations of `networks`.
pub fn subnets_of(ipams: impl IntoIterator<Item = Option<Ipam>>) -> Vec<Ipv4Subnet> {
    ipams
        .into_iter()
        .flatten()
        .flat_map(|ipam| ipam.config.unwrap_or_default())
        .filter_map(|config| config.subnet?.parse().ok())
        .collect()
}

// === Helpers ===

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

pub fn to_hash_map(labels: &BTreeMap<String, String>) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn to_btree_map(labels: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    labels.unwrap_or_default().into_iter().collect()
}

fn sorted_keys<V>(map: Option<HashMap<String, V>>) -> Vec<String> {
    let mut keys: Vec<String> = map.unwrap_or_default().into_keys().collect();
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BindMount;

    #[test]
    fn exit_codes_are_read_from_list_status_text() {
        assert_eq!(exit_code_from_status_text("Exited (3) 2 seconds ago"), Some(3));
        assert_eq!(exit_code_from_status_text("Exited (137) About a minute ago"), Some(137));
        assert_eq!(exit_code_from_status_text("Up 5 minutes"), None);
        assert_eq!(exit_code_from_status_text("Exited (x)"), None);
    }

    #[test]
    fn a_spec_becomes_a_create_body_with_limits_and_mounts() {
        let spec = ContainerSpec {
            name: "run_0123456789ab".into(),
            image: "moat-base:bookworm".into(),
            command: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec![("A".into(), "1".into())],
            mounts: vec![BindMount {
                source: "/src".into(),
                target: "/workspace".into(),
                read_only: true,
            }],
            network: Some("moat-run_0123456789ab".into()),
            extra_hosts: vec![("moat-proxy".into(), "10.213.0.1".into())],
            memory_bytes: Some(512 << 20),
            cpus: Some(1.5),
            ..Default::default()
        };
        let body = container_create_body(&spec);
        assert_eq!(body.env, Some(vec!["A=1".to_string()]));
        assert_eq!(body.cmd.as_ref().map(Vec::len), Some(3));
        let host = body.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.memory, Some(512 << 20));
        assert_eq!(host.network_mode.as_deref(), Some("moat-run_0123456789ab"));
        assert_eq!(host.extra_hosts, Some(vec!["moat-proxy:10.213.0.1".to_string()]));
        let mount = &host.mounts.unwrap()[0];
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(mount.target.as_deref(), Some("/workspace"));
        assert_eq!(host.dns, None, "empty lists are left to Docker's defaults");
    }

    #[test]
    fn network_requests_use_the_block_and_its_first_host_as_gateway() {
        let spec = NetworkSpec {
            name: "moat-run_0123456789ab".into(),
            internal: true,
            ..Default::default()
        };
        let request = network_create_request(&spec, "10.213.0.48/28".parse().unwrap());
        let config = &request.ipam.unwrap().config.unwrap()[0];
        assert_eq!(config.subnet.as_deref(), Some("10.213.0.48/28"));
        assert_eq!(config.gateway.as_deref(), Some("10.213.0.49"));
        assert_eq!(request.internal, Some(true));
        assert_eq!(request.driver.as_deref(), Some("bridge"));
    }

    #[test]
    fn subnets_in_use_skip_ipv6_and_missing_configs() {
        let ipam = |subnets: &[&str]| {
            Some(Ipam {
                config: Some(
                    subnets
                        .iter()
                        .map(|s| IpamConfig {
                            subnet: Some(s.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            })
        };
        let found = subnets_of([ipam(&["172.17.0.0/16", "fd00::/64"]), None, ipam(&["10.213.0.0/28"])]);
        let found: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(found, ["172.17.0.0/16", "10.213.0.0/28"]);
    }
}
