//! A run's service sidecars (docs/services.md): each is created on the
//! run's network before the run's container, with a password made for this
//! run (held in memory only, handed to the two containers at their
//! creation, never written to the run's records or logs), started, and
//! asked with the service's own client every second, up to its bound,
//! whether it is ready. A service that is not ready fails the run with its
//! last log lines. Sidecars are named after the run (`<run id>-<service>`)
//! and labelled with it, so cleanup and the reaper find them from the run
//! id alone.

use std::collections::BTreeMap;
use std::time::Duration;

use moat_core::RunId;
use moat_core::deps::services::{self, Catalog, Definition, PASSWORD_LENGTH, ServiceSpec};
use moat_proxy::PolicyMode;
use moat_runtime::{ContainerSpec, Runtime, VolumeSpec, labels};
use rand::RngExt as _;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::RunError;
use super::container::STRICT_DNS;
use crate::audit::Event;
use crate::deadline::Deadline;
use crate::fault;
use crate::registry::RunHandle;
use crate::state::Daemon;

/// Interval between two readiness checks.
const READY_INTERVAL: Duration = Duration::from_secs(1);
/// Lines of a sidecar's log a readiness failure shows.
const LOG_TAIL_LINES: usize = 20;
/// Bound on reading a sidecar's log for the failure.
const LOG_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the run's container gets to reach its services.
#[derive(Debug, Default)]
pub struct ServiceAccess {
    /// `MOAT_<NAME>_HOST`, `_PORT`, ... of every service.
    pub env: Vec<(String, String)>,
    /// `/etc/hosts` entries: each service's name and its address (a strict
    /// run resolves no names itself).
    pub hosts: Vec<(String, String)>,
}

/// One started sidecar.
struct Started<'a> {
    spec: &'a ServiceSpec,
    definition: &'a Definition,
    container: String,
    password: String,
}

/// The container name of a run's sidecar.
pub fn sidecar_name(run: &RunId, service: &str) -> String {
    format!("{run}-{service}")
}

/// The names of every sidecar `handle`'s run may have.
pub fn sidecar_names(handle: &RunHandle) -> Vec<String> {
    (handle.spec.services.iter())
        .map(|service| sidecar_name(&handle.id(), &service.name))
        .collect()
}

/// The volume a persisted service of the project at `workspace` keeps its
/// data in: one per moat home, workspace and service.
pub fn project_volume(home_label: &str, workspace: &std::path::Path, service: &str) -> (String, String) {
    let mut hash = Sha256::new();
    hash.update(home_label.as_bytes());
    hash.update([0]);
    hash.update(workspace.as_os_str().as_encoded_bytes());
    let project = hex::encode(hash.finalize())[..16].to_string();
    (format!("moat-data-{project}-{service}"), project)
}

/// Creates and starts the run's sidecars on `network`, with the images
/// built for them (by service name), waits until each is ready, and
/// returns what the run's container needs to reach them.
pub async fn start_services(
    daemon: &Daemon,
    runtime: &dyn Runtime,
    handle: &RunHandle,
    network: &str,
    images: &BTreeMap<String, String>,
    deadline: &Deadline,
) -> Result<ServiceAccess, RunError> {
    let spec = &handle.spec;
    if spec.services.is_empty() {
        return Ok(ServiceAccess::default());
    }
    let catalog = Catalog::shipped().map_err(crate::image_build::BuildError::from)?;
    let mut started = Vec::new();
    for service in &spec.services {
        let definition = catalog
            .get(&service.name)
            .ok_or_else(|| RunError::UnknownService(service.name.clone()))?
            .map_err(crate::image_build::BuildError::from)?;
        let image = images
            .get(&service.name)
            .ok_or_else(|| RunError::UnknownService(service.name.clone()))?;
        started.push(start_one(daemon, runtime, handle, network, service, definition, image, deadline).await?);
    }
    let mut access = ServiceAccess::default();
    for sidecar in &started {
        wait_ready(runtime, sidecar, deadline).await?;
        let step = format!("reading the address of {}", sidecar.container);
        let info = deadline
            .bound(step, runtime.inspect_container(&sidecar.container))
            .await??;
        let address = info.address.ok_or(RunError::NoAddress)?;
        let name = &sidecar.spec.name;
        access.hosts.push((name.clone(), address.to_string()));
        access
            .env
            .extend(services::client_env(name, sidecar.definition, name, &sidecar.password));
    }
    Ok(access)
}

#[allow(clippy::too_many_arguments)]
async fn start_one<'a>(
    daemon: &Daemon,
    runtime: &dyn Runtime,
    handle: &RunHandle,
    network: &str,
    service: &'a ServiceSpec,
    definition: &'a Definition,
    image: &str,
    deadline: &Deadline,
) -> Result<Started<'a>, RunError> {
    let id = handle.id();
    let password = generate_password();
    let mut volumes = Vec::new();
    if service.persist {
        let volume = ensure_project_volume(daemon, runtime, handle, &service.name, deadline).await?;
        volumes.push((volume, services::DATA_DIR.to_string()));
    }
    let mut container_labels = labels::for_run(&daemon.home().label(), id.as_str(), labels::role::SERVICE);
    container_labels.insert(labels::SERVICE.to_string(), service.name.clone());
    let strict = handle.spec.policy.mode == PolicyMode::Strict;
    let container_spec = ContainerSpec {
        name: sidecar_name(&id, &service.name),
        image: image.to_string(),
        env: services::sidecar_env(definition, service, &password),
        network: Some(network.to_string()),
        labels: container_labels,
        memory_bytes: service.memory_bytes,
        dns: if strict {
            vec![STRICT_DNS.to_string()]
        } else {
            Vec::new()
        },
        volumes,
        ..Default::default()
    };
    let step = format!("creating the {} sidecar of {id}", service.name);
    let container = deadline
        .bound(step, runtime.create_container(&container_spec))
        .await??;
    daemon.audit().record(&id, Event::container_created(&container));
    fault::point(fault::AFTER_SERVICE_CREATE, &handle.spec).await;
    let step = format!("starting the {} sidecar of {id}", service.name);
    deadline.bound(step, runtime.start_container(&container)).await??;
    Ok(Started {
        spec: service,
        definition,
        container: container_spec.name,
        password,
    })
}

/// The project's volume of a persisted service (created when missing),
/// labelled with the project and its workspace, not with the run: it
/// outlives the run and is removed only by `moat system prune --volumes`
/// once its project no longer uses it.
async fn ensure_project_volume(
    daemon: &Daemon,
    runtime: &dyn Runtime,
    handle: &RunHandle,
    service: &str,
    deadline: &Deadline,
) -> Result<String, RunError> {
    let home = daemon.home().label();
    let workspace = &handle.spec.workspace;
    let (name, project) = project_volume(&home, workspace, service);
    let volume_labels = BTreeMap::from([
        (labels::MANAGED.to_string(), "true".to_string()),
        (labels::HOME.to_string(), home),
        (labels::ROLE.to_string(), labels::role::VOLUME.to_string()),
        (labels::PROJECT.to_string(), project),
        (labels::WORKSPACE.to_string(), workspace.display().to_string()),
        (labels::SERVICE.to_string(), service.to_string()),
    ]);
    let spec = VolumeSpec {
        name: name.clone(),
        labels: volume_labels,
    };
    let step = format!("creating volume {name}");
    deadline.bound(step, runtime.create_volume(&spec)).await??;
    Ok(name)
}

fn generate_password() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(PASSWORD_LENGTH)
        .map(char::from)
        .collect()
}

/// Runs the service's readiness command every second until it succeeds,
/// the sidecar stops, or the service's bound (or the creation's deadline)
/// passes; the failure carries the sidecar's last log lines.
async fn wait_ready(runtime: &dyn Runtime, sidecar: &Started<'_>, deadline: &Deadline) -> Result<(), RunError> {
    let bound = sidecar.spec.ready_timeout();
    let until = Instant::now() + bound;
    let command = vec!["sh".to_string(), "-c".to_string(), sidecar.definition.ready.clone()];
    let reason = loop {
        let left = until.saturating_duration_since(Instant::now()).max(READY_INTERVAL);
        let step = format!("waiting for the {} sidecar to be ready", sidecar.spec.name);
        let attempt = deadline
            .bound(
                step,
                tokio::time::timeout(left, runtime.exec(&sidecar.container, &command)),
            )
            .await?;
        if let Ok(Ok(output)) = &attempt
            && output.exit_code == Some(0)
        {
            return Ok(());
        }
        match runtime.inspect_container(&sidecar.container).await {
            Ok(info) if !info.status.is_running() => {
                let code = info.exit_code.map_or_else(|| "?".to_string(), |c| c.to_string());
                break format!("it exited with code {code}");
            }
            Err(e) => break format!("it cannot be inspected: {e}"),
            Ok(_) => {}
        }
        if Instant::now() >= until {
            break format!("it was not ready within {}s", bound.as_secs());
        }
        tokio::time::sleep(READY_INTERVAL).await;
    };
    Err(RunError::ServiceNotReady {
        service: sidecar.spec.name.clone(),
        reason,
        tail: log_tail(runtime, &sidecar.container).await,
    })
}

/// The last lines the sidecar wrote (empty when they cannot be read).
async fn log_tail(runtime: &dyn Runtime, container: &str) -> String {
    use futures_util::StreamExt as _;
    let read = async {
        let mut stream = runtime.logs(container, false, None).await.ok()?;
        let mut bytes = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            bytes.extend_from_slice(&chunk.data);
        }
        Some(bytes)
    };
    let Ok(Some(bytes)) = tokio::time::timeout(LOG_READ_TIMEOUT, read).await else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Removes (or, for a kept run, stops) the run's sidecars; the failures,
/// for the reaper to finish.
pub async fn remove_sidecars(runtime: &dyn Runtime, handle: &RunHandle, keep: bool, grace: Duration) -> Vec<String> {
    let mut failures = Vec::new();
    for name in sidecar_names(handle) {
        let result = if keep {
            match runtime.stop_container(&name, grace).await {
                Err(e) if !e.is_not_found() => Err(e),
                _ => Ok(()),
            }
        } else {
            runtime.remove_container(&name).await
        };
        if let Err(e) = result {
            failures.push(e.to_string());
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_32_alphanumerics_and_differ() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_project_volume_belongs_to_one_home_workspace_and_service() {
        let ws = std::path::Path::new("/src/app");
        let (name, project) = project_volume("home1", ws, "postgres");
        assert_eq!(name, format!("moat-data-{project}-postgres"));
        assert_eq!(project_volume("home1", ws, "postgres").0, name);
        assert_ne!(project_volume("home2", ws, "postgres").0, name);
        assert_ne!(
            project_volume("home1", std::path::Path::new("/src/other"), "postgres").0,
            name
        );
    }
}
