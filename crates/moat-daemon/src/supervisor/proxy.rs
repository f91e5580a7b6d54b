//! A run's proxy entry: registration with the credential proxy before the
//! container starts, the listener on its network's gateway, the strict
//! firewall rules, and re-registration of re-adopted runs.

use moat_core::RunId;
use moat_core::paths::run_files;
use moat_proxy::{PolicyMode, ProxyToken};
use moat_runtime::{BindMount, NetworkInfo, Runtime};
use std::net::IpAddr;

use super::RunError;
use crate::egress::{Egress, RunOutputs};
use crate::firewall::{self, FirewallError};
use crate::grants::{self};
use crate::registry::{Registration, RunHandle};
use crate::state::Daemon;
use moat_creds::RunGrants;

/// What a container needs to reach the proxy.
pub(super) struct ProxyAttachment {
    pub(super) env: Vec<(String, String)>,
    /// Where `moat-proxy` resolves to; `None` on Kubernetes, where it is
    /// the namespace's Service.
    pub(super) gateway: Option<IpAddr>,
    pub(super) ca_mount: BindMount,
    /// A strict run whose host stays reachable: what to tell the user.
    pub(super) isolation_notice: Option<String>,
    /// Where the run's MCP servers are relayed, for staged agent configs.
    pub(super) relay: crate::mcp::RelayAccess,
}

/// Registers the run with the proxy (complete before its container starts)
/// and listens on its network's gateway.
pub(super) async fn attach_proxy(
    daemon: &Daemon,
    egress: &Egress,
    handle: &RunHandle,
    network: &NetworkInfo,
    grants: RunGrants,
) -> Result<ProxyAttachment, RunError> {
    let id = handle.id();
    let token = handle.proxy_token().unwrap_or_else(ProxyToken::generate);
    handle.set_proxy_token(token.clone());
    // On disk before the container exists: a container's token is never
    // one that only this daemon's memory knows.
    Registration::write(daemon.store(), handle)?;
    daemon.registry().persist_soon();
    let trace_path = daemon.store().run_dir(&id).join(run_files::NETWORK);
    let rules = grants::injection_rules(&grants);
    let events = daemon.audit().proxy_sink(&id);
    let outputs = RunOutputs {
        trace_path,
        events,
        credential_endpoints: grants
            .aws
            .clone()
            .map(|grant| daemon.aws().endpoint(&id, grant))
            .into_iter()
            .collect(),
    };
    egress.register(handle, &token, rules, outputs)?;
    let gateway = egress
        .listen_on_gateway(&id, &network.name, network.gateway.as_deref())
        .await?;
    let mut isolation_notice = None;
    if handle.spec.policy.mode == PolicyMode::Strict
        && let Err(e) = close_host_services(&id, network, gateway, egress.port(), !handle.spec.ports.is_empty()).await
    {
        if handle.spec.require_isolation {
            return Err(RunError::IsolationUnavailable(e));
        }
        tracing::warn!(run = %id, "strict run: host services listening on {gateway} stay reachable from the container ({e})");
        isolation_notice = Some(format!(
            "warning: strict run without host isolation: services listening on the host ({gateway} or all \
             interfaces) stay reachable from the container ({e}); --require-isolation refuses such runs"
        ));
    }
    let mut env = egress.container_env(&token);
    env.extend(grants.env);
    env.extend(crate::mcp::container_env(&handle.spec.mcp, egress.port()));
    Ok(ProxyAttachment {
        env,
        gateway: Some(gateway),
        ca_mount: egress.ca_mount(),
        isolation_notice,
        relay: crate::mcp::RelayAccess {
            proxy_port: egress.port(),
            token,
        },
    })
}

/// Registers a Kubernetes run with its namespace's in-cluster proxy
/// (deployed when missing), complete before its pod starts. AWS and SSH
/// grants are served by this daemon's own process, which a pod cannot
/// reach: refused.
pub(super) async fn attach_cluster_proxy(
    daemon: &Daemon,
    handle: &RunHandle,
    grants: RunGrants,
) -> Result<ProxyAttachment, RunError> {
    if grants.aws.is_some() || !grants.ssh.keys.is_empty() {
        return Err(RunError::NotOnKubernetes("the aws and ssh grants".into()));
    }
    let id = handle.id();
    let token = handle.proxy_token().unwrap_or_else(ProxyToken::generate);
    handle.set_proxy_token(token.clone());
    Registration::write(daemon.store(), handle)?;
    daemon.registry().persist_soon();
    let target = &handle.spec.kubernetes;
    let kube = daemon.runtimes().kube(target).await?;
    let image = target
        .proxy_image
        .clone()
        .unwrap_or_else(crate::cluster_proxy::default_proxy_image);
    let rules = grants::injection_rules(&grants);
    let attached = daemon
        .cluster_proxies()
        .attach(daemon.home(), kube, &image, handle, &token, rules)
        .await
        .map_err(|e| RunError::Kubernetes(e.to_string()))?;
    // A revoke between the resolution above and the registration went to
    // no proxy: read the grants again now that updates reach this one.
    let current = grants::resolve_remaining(daemon.home(), handle)?;
    daemon
        .cluster_proxies()
        .update_injections(&id, grants::injection_rules(&current));
    let mut env = attached.env;
    env.extend(grants.env);
    env.extend(crate::mcp::container_env(
        &handle.spec.mcp,
        moat_kube::manifest::PROXY_PORT as u16,
    ));
    Ok(ProxyAttachment {
        env,
        gateway: None,
        ca_mount: attached.ca_mount,
        isolation_notice: None,
        relay: crate::mcp::RelayAccess {
            proxy_port: moat_kube::manifest::PROXY_PORT as u16,
            token,
        },
    })
}

/// Strict runs may reach the host only at the proxy port (IPv4 and IPv6),
/// and answer the routing endpoint when they have `ports:` (`replies`).
pub(super) async fn close_host_services(
    id: &RunId,
    network: &NetworkInfo,
    gateway: IpAddr,
    proxy_port: u16,
    replies: bool,
) -> Result<(), FirewallError> {
    let interface =
        firewall::interface_with_address(gateway).unwrap_or_else(|| firewall::bridge_interface(&network.id));
    firewall::release(id).await?;
    firewall::restrict_host(id, &interface, proxy_port, replies).await
}

/// Re-registers a re-adopted run with this daemon's proxy under the token
/// its container already has, and serves its ssh agent again; grants
/// revoked meanwhile are dropped.
pub async fn reattach_proxy(daemon: &Daemon, runtime: &dyn Runtime, handle: &RunHandle) -> Result<(), RunError> {
    if handle.proxy_token().is_none() {
        return Ok(());
    }
    if runtime.kind() == moat_runtime::RuntimeKind::Kubernetes {
        let grants = grants::resolve_remaining(daemon.home(), handle)?;
        return attach_cluster_proxy(daemon, handle, grants).await.map(|_| ());
    }
    let (Some(egress), Some(network)) = (daemon.egress(), handle.metadata().network) else {
        return Ok(());
    };
    let grants = grants::resolve_remaining(daemon.home(), handle)?;
    // The agent's directory is mounted, so a new socket there reaches the
    // container again.
    grants::stage(daemon, handle, &grants)?;
    let network = runtime.inspect_network(&network).await?;
    attach_proxy(daemon, egress, handle, &network, grants).await.map(|_| ())
}
