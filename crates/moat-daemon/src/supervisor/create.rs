//! Creating a run: registration before any runtime object exists, the
//! network (from the warm pool or made), the proxy entry, the service
//! sidecars (ready before the run's container starts), the container,
//! the workspace snapshot (taken meanwhile, complete before the start),
//! all within the creation deadline; a failed creation is undone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use moat_core::deps::services::ServiceSpec;
use moat_core::lock::FileLock;
use moat_core::paths::run_files;
use moat_core::{RunId, RunMetadata, RunState};
use moat_proxy::PolicyMode;
use moat_runtime::{NetworkInfo, NetworkSpec, Runtime, RuntimeKind, labels};

use super::cleanup::cleanup;
use super::container::{can_join_holder, container_spec};
use super::holder;
use super::proxy::{attach_cluster_proxy, attach_proxy};
use super::services::start_services;
use super::watch::supervise;
use super::{RUN_LOCK_TIMEOUT, RunError, fail};
use crate::api::{RunSpec, StepTiming};
use crate::audit::Event;
use crate::deadline::{CREATE_DEADLINE, Deadline, IMAGE_DEADLINE, RUNTIME_CONNECT_DEADLINE, UNDO_WAIT};
use crate::fault;
use crate::grants::{self};
use crate::network::{self};
use crate::progress::Progress;
use crate::registry::{Registration, RunHandle};
use crate::state::Daemon;

/// A run that is up, and what the user should hear about its creation.
#[derive(Debug)]
pub struct CreatedRun {
    pub run_id: RunId,
    pub notices: Vec<String>,
    /// How long each step took.
    pub timings: Vec<StepTiming>,
}

/// Records how long each step of a creation takes.
#[derive(Debug, Default)]
pub struct Timings {
    steps: Vec<StepTiming>,
    last: Option<Instant>,
}

impl Timings {
    fn start() -> Self {
        Timings {
            steps: Vec::new(),
            last: Some(Instant::now()),
        }
    }

    /// Ends a step (begun at the previous one's end).
    fn lap(&mut self, step: &str) {
        let now = Instant::now();
        let began = self.last.unwrap_or(now);
        self.steps.push(StepTiming {
            step: step.to_string(),
            ms: now.duration_since(began).as_secs_f64() * 1000.0,
        });
        self.last = Some(now);
    }
}

/// Registers a run, creates its network and container, starts it, and
/// leaves a task supervising it. Returns once the container is running.
pub async fn create_run(daemon: &Daemon, spec: RunSpec) -> Result<RunId, RunError> {
    create_run_reporting(daemon, spec, &Progress::none())
        .await
        .map(|created| created.run_id)
}

/// [`create_run`], telling `progress` about slow steps. The whole creation
/// is bounded by [`CREATE_DEADLINE`]; a creation that fails (or runs out of
/// time) is recorded failed and undone before the answer.
pub async fn create_run_reporting(
    daemon: &Daemon,
    mut spec: RunSpec,
    progress: &Progress,
) -> Result<CreatedRun, RunError> {
    let mut timings = Timings::start();
    if !spec.workspace.is_dir() {
        return Err(RunError::MissingWorkspace(spec.workspace.display().to_string()));
    }
    check_home_files(&spec)?;
    let runtime = connect_runtime(daemon, &spec).await?;
    spec.runtime = runtime.kind().as_str().to_string();
    if runtime.kind() == RuntimeKind::Kubernetes {
        check_kubernetes_run(&spec)?;
    }
    timings.lap("runtime connect");
    let images = Deadline::after(IMAGE_DEADLINE);
    // On the base image, before the run's own image replaces it.
    let service_images = build_service_images(daemon, runtime.as_ref(), &spec, progress, &images).await?;
    if spec.builds_image() {
        spec.image = build_image(daemon, runtime.as_ref(), &spec, progress, &images).await?;
    } else {
        ensure_image(daemon, runtime.as_ref(), &spec.image, progress, &images).await?;
    }
    timings.lap("image check");
    let deadline = Deadline::after(CREATE_DEADLINE + readiness_allowance(&spec));
    check_name(daemon, &spec)?;
    let meta = initial_metadata(&spec);
    let id = meta.id.clone();
    let run_dir = daemon.store().create(&meta)?;
    let creation_lock = FileLock::acquire(&run_dir.join(run_files::LOCK), RUN_LOCK_TIMEOUT)?;
    let handle = RunHandle::new(spec, meta);
    if let Err(e) = register(daemon, &handle) {
        let _ = handle.update(daemon.store(), |m| fail(m, &e.to_string()));
        return Err(e);
    }
    daemon.audit().record(&id, Event::run_created(&handle.spec));
    timings.lap("run registration");
    fault::point("after-registry-write", &handle.spec).await;
    let snapshot = crate::snapshots::start(daemon, &handle);
    let starting = daemon.network_pool().starting();
    let provisioned = provision(
        daemon,
        runtime.as_ref(),
        &handle,
        &service_images,
        snapshot,
        &deadline,
        progress,
        &mut timings,
    )
    .await;
    drop(starting);
    crate::pool::refill_later(daemon);
    match provisioned {
        Ok(notices) => {
            drop(creation_lock);
            tokio::spawn(supervise(daemon.clone(), runtime, handle, None));
            Ok(CreatedRun {
                run_id: id,
                notices,
                timings: timings.steps,
            })
        }
        Err(e) => {
            let reason = e.to_string();
            let _ = handle.update(daemon.store(), |m| fail(m, &reason));
            undo(daemon, runtime, handle).await;
            Err(e)
        }
    }
}

/// What a Kubernetes run needs (its workspace claim) and cannot have yet
/// (docs/kubernetes.md, "What works"): the exec and attach subresources or
/// image builds on the cluster.
fn check_kubernetes_run(spec: &RunSpec) -> Result<(), RunError> {
    if spec.kubernetes.workspace_claim.is_none() {
        // Refused before the namespace's proxy is deployed for nothing.
        let missing = moat_kube::manifest::ManifestError::NoWorkspaceClaim;
        return Err(RunError::Kubernetes(missing.to_string()));
    }
    let refused = [
        (!spec.services.is_empty(), "services (`dependencies:` like postgres)"),
        (spec.builds_image(), "images built from `dependencies:` or build hooks"),
        (!spec.ports.is_empty(), "`ports:` endpoints"),
        (spec.interactive, "interactive runs (`-i`, `-t`)"),
        (!spec.host_ports.is_empty(), "host ports (`network.host`)"),
    ];
    match refused.into_iter().find(|(asked, _)| *asked) {
        Some((_, what)) => Err(RunError::NotOnKubernetes(what.to_string())),
        None => Ok(()),
    }
}

/// Home files are written by the init of images built from `dependencies:`,
/// inside the home only.
fn check_home_files(spec: &RunSpec) -> Result<(), RunError> {
    for file in &spec.home_files {
        let refuse = |reason: String| RunError::HomeFile {
            path: file.path.clone(),
            reason,
        };
        if spec.dependencies.is_empty() {
            return Err(refuse("only images built from `dependencies:` can stage files".into()));
        }
        moat_core::deps::check_home_path(&file.path).map_err(refuse)?;
        if file.mode > 0o777 {
            return Err(refuse(format!("mode {:o} is not permission bits", file.mode)));
        }
    }
    Ok(())
}

/// The runtime the spec names, or the detected one when it names none.
async fn connect_runtime(daemon: &Daemon, spec: &RunSpec) -> Result<Arc<dyn Runtime>, RunError> {
    let bound = Deadline::after(RUNTIME_CONNECT_DEADLINE);
    if spec.runtime.is_empty() {
        return Ok(bound
            .bound("detecting the container runtime", daemon.runtimes().detect())
            .await??);
    }
    let step = format!("connecting to {}", spec.runtime);
    Ok(bound.bound(step, daemon.runtimes().for_spec(spec)).await??)
}

/// Makes the run's image available (building moat's local base image when
/// it is the one missing) before anything of the run exists.
async fn ensure_image(
    daemon: &Daemon,
    runtime: &dyn Runtime,
    image: &str,
    progress: &Progress,
    deadline: &Deadline,
) -> Result<(), RunError> {
    let step = format!("making image {image} available");
    let ensured = daemon.runtimes().ensure_image(runtime, image, progress);
    if deadline.bound(step, ensured).await?? {
        return Ok(());
    }
    Err(RunError::UnknownImage {
        image: image.to_string(),
        runtime: runtime.kind().to_string(),
    })
}

/// The image of the run's `dependencies:` and build hooks (built when
/// missing), within the image deadline.
async fn build_image(
    daemon: &Daemon,
    runtime: &dyn Runtime,
    spec: &RunSpec,
    progress: &Progress,
    deadline: &Deadline,
) -> Result<String, RunError> {
    let step = format!(
        "making the image of {} available",
        crate::image_build::what_is_built(spec)
    );
    let ensured = crate::image_build::ensure_dependency_image(daemon, runtime, spec, progress);
    deadline.bound(step, ensured).await?
}

/// The image of each of the run's services, by name (built when missing),
/// within the image deadline.
async fn build_service_images(
    daemon: &Daemon,
    runtime: &dyn Runtime,
    spec: &RunSpec,
    progress: &Progress,
    deadline: &Deadline,
) -> Result<BTreeMap<String, String>, RunError> {
    let mut images = BTreeMap::new();
    for service in &spec.services {
        let step = format!("making the image of the {} service available", service.name);
        let ensured = crate::image_build::ensure_service_image(daemon, runtime, spec, &service.name, progress);
        images.insert(service.name.clone(), deadline.bound(step, ensured).await??);
    }
    Ok(images)
}

/// The creation deadline grows by the longest readiness bound of the
/// run's services.
fn readiness_allowance(spec: &RunSpec) -> Duration {
    (spec.services.iter())
        .map(ServiceSpec::ready_timeout)
        .max()
        .unwrap_or_default()
}

/// Removes what a failed creation made. Waits at most [`UNDO_WAIT`], so
/// the answer reaches the client in time; the run is recorded failed
/// already and a slower cleanup finishes in the background.
async fn undo(daemon: &Daemon, runtime: Arc<dyn Runtime>, handle: Arc<RunHandle>) {
    let id = handle.id();
    let undoing = tokio::spawn({
        let daemon = daemon.clone();
        async move { cleanup(&daemon, runtime.as_ref(), &handle).await }
    });
    if tokio::time::timeout(UNDO_WAIT, undoing).await.is_err() {
        tracing::warn!(run = %id, "undoing the failed creation takes longer than {UNDO_WAIT:?}; it goes on in the background");
    }
}

fn initial_metadata(spec: &RunSpec) -> RunMetadata {
    let mut meta = RunMetadata::new(
        RunId::generate(),
        spec.workspace.clone(),
        spec.image.clone(),
        spec.runtime.clone(),
    );
    meta.name = spec.name.clone();
    meta.command = spec.command.clone();
    meta.keep = spec.keep;
    meta.grants = spec.grants.clone();
    meta.secrets = spec.secret_names.clone();
    meta.labels = spec.labels.clone();
    meta
}

/// Inserts the run unless the daemon has decided to exit; the check and the
/// insert happen under the registry lock that idle shutdown re-checks under.
/// A run's name is unique among live runs (its endpoints' URLs and
/// `moat attach NAME` are unambiguous) and, with `ports:`, a host label.
fn check_name(daemon: &Daemon, spec: &RunSpec) -> Result<(), RunError> {
    let Some(name) = &spec.name else { return Ok(()) };
    let label = |c: char| c.is_ascii_alphanumeric() || c == '-';
    if !spec.ports.is_empty() && !name.chars().all(label) {
        return Err(RunError::NotAHostLabel(name.clone()));
    }
    name_free(&daemon.registry().lock(), name)
}

fn name_free(runs: &std::collections::HashMap<RunId, Arc<RunHandle>>, name: &str) -> Result<(), RunError> {
    match runs.values().find(|run| run.spec.name.as_deref() == Some(name)) {
        Some(live) => Err(RunError::NameTaken {
            name: name.to_string(),
            id: live.id().to_string(),
        }),
        None => Ok(()),
    }
}

fn register(daemon: &Daemon, handle: &Arc<RunHandle>) -> Result<(), RunError> {
    {
        let mut runs = daemon.registry().lock();
        if daemon.is_shutting_down() {
            return Err(RunError::ShuttingDown);
        }
        if let Some(name) = &handle.spec.name {
            name_free(&runs, name)?;
        }
        runs.insert(handle.id(), handle.clone());
    }
    Registration::write(daemon.store(), handle)?;
    daemon.registry().persist_now()?;
    Ok(())
}

/// Creates the run's objects and starts its container once its workspace
/// `snapshot` (taken meanwhile) is complete, every step within `deadline`;
/// returns the notices for the user.
#[allow(clippy::too_many_arguments)] // one per input of the creation; a struct would only rename them
async fn provision(
    daemon: &Daemon,
    runtime: &dyn Runtime,
    handle: &RunHandle,
    service_images: &BTreeMap<String, String>,
    snapshot: Option<crate::snapshots::PendingSnapshot>,
    deadline: &Deadline,
    progress: &Progress,
    timings: &mut Timings,
) -> Result<Vec<String>, RunError> {
    let spec = &handle.spec;
    let id = handle.id();
    let mut notices = Vec::new();
    crate::oauth_refresh::ensure_fresh(daemon, spec).await;
    let grants = grants::resolve(daemon.home(), spec)?;
    grants::check_mcp_coverage(spec, &grants)?;
    let staged = grants::stage(daemon, handle, &grants)?;
    timings.lap("grants");
    let (network, pool_holder) = match take_pooled(daemon, runtime, handle, deadline).await? {
        Some(pooled) => {
            timings.lap("network take (warm pool)");
            (pooled.network, pooled.holder)
        }
        None => {
            let network_name = id.network_name();
            handle.update(daemon.store(), |m| m.network = Some(network_name.clone()))?;
            let network_spec = NetworkSpec {
                name: network_name,
                labels: labels::for_run(&daemon.home().label(), id.as_str(), labels::role::NETWORK),
                internal: spec.policy.mode == PolicyMode::Strict,
            };
            let created = network::create(daemon, runtime, &network_spec, deadline, progress).await?;
            notices.extend(created.notice);
            timings.lap("network create");
            (created.info, None)
        }
    };
    if pool_holder.is_none() && holder::needed(runtime) {
        holder::start(daemon, runtime, handle, &network.name, deadline).await?;
        timings.lap("gateway holder start");
    }
    let holder = pool_holder.filter(|_| can_join_holder(spec));
    fault::point("after-network-create", spec).await;
    let proxy = match daemon.egress() {
        // The host's proxy is not reachable from a cluster: a Kubernetes run
        // uses its namespace's (docs/kubernetes.md).
        _ if runtime.kind() == RuntimeKind::Kubernetes => {
            let attaching = attach_cluster_proxy(daemon, handle, grants);
            let proxy = deadline
                .bound("attaching the run to its namespace's proxy", attaching)
                .await??;
            timings.lap("proxy registration");
            Some(proxy)
        }
        Some(egress) => {
            let attaching = attach_proxy(daemon, egress, handle, &network, grants);
            let proxy = deadline.bound("attaching the run to the proxy", attaching).await??;
            notices.extend(proxy.isolation_notice.clone());
            timings.lap("proxy registration");
            Some(proxy)
        }
        None if !spec.mcp.is_empty() => return Err(RunError::McpWithoutProxy),
        None if grants.aws.is_some() => return Err(grants::GrantError::AwsWithoutProxy.into()),
        None => None,
    };
    let services = start_services(daemon, runtime, handle, &network.name, service_images, deadline).await?;
    if !spec.services.is_empty() {
        timings.lap("services ready");
    }
    let container_spec = container_spec(
        daemon,
        handle,
        &network.name,
        holder.as_deref(),
        proxy,
        services,
        staged,
    );
    let step = format!("creating container {id}");
    let container_id = deadline
        .bound(step, runtime.create_container(&container_spec))
        .await??;
    timings.lap("container create");
    daemon.audit().record(&id, Event::container_created(&container_id));
    handle.update(daemon.store(), |m| {
        m.container_id = Some(container_id.clone());
        m.state = RunState::Created;
    })?;
    fault::point("after-container-create", spec).await;
    if spec.interactive {
        // Attached before the start: the program's first output is not lost.
        let step = format!("attaching to container {id}");
        let attached = deadline.bound(step, runtime.attach_container(&container_id)).await??;
        handle.terminal.connect(attached);
    }
    if let Some(snapshot) = snapshot {
        snapshot.finish(daemon, handle, deadline).await?;
        timings.lap("pre-run snapshot (wait)");
    }
    handle.update(daemon.store(), |m| m.state = RunState::Starting)?;
    let step = format!("starting container {id}");
    deadline.bound(step, runtime.start_container(&container_id)).await??;
    if let Some(size) = spec.terminal {
        // Engines before API 1.42 ignore the size given at creation.
        if let Err(e) = runtime.resize_container(&container_id, size).await {
            tracing::debug!(run = %id, "sizing the terminal after the start failed: {e}");
        }
    }
    handle.update(daemon.store(), |m| {
        m.state = RunState::Running;
        m.started_at = Some(Utc::now());
    })?;
    timings.lap("container start");
    route_endpoints(daemon, runtime, handle, &container_id, deadline).await?;
    daemon.audit().record(
        &id,
        Event::ContainerStarted {
            container: container_id,
        },
    );
    daemon.registry().persist_soon();
    fault::point("after-start", spec).await;
    Ok(notices)
}

/// Sends the run's `ports:` endpoints to its container's address.
async fn route_endpoints(
    daemon: &Daemon,
    runtime: &dyn Runtime,
    handle: &RunHandle,
    container_id: &str,
    deadline: &Deadline,
) -> Result<(), RunError> {
    let (Some(egress), false) = (daemon.egress(), handle.spec.ports.is_empty()) else {
        return Ok(());
    };
    let step = format!("reading the address of container {container_id}");
    let info = deadline.bound(step, runtime.inspect_container(container_id)).await??;
    let address = info.address.ok_or(RunError::NoAddress)?;
    let id = handle.id();
    egress.route(&id, &handle.spec, address);
    let endpoints = handle.spec.endpoint_urls(&id, egress.routing_port());
    handle.update(daemon.store(), |m| m.endpoints = endpoints)?;
    Ok(())
}

/// A ready entry of the warm pool, made the run's: its network's name is
/// recorded as the run's network (persisted) before anything uses it, so
/// cleanup removes it and its holder and the reaper judges both by this
/// run. A pooled network that has vanished or changed (e.g. `docker network
/// prune`) is dropped for the next; a holder that no longer runs is not
/// joined. `None` when the pool has none left (the caller creates one).
async fn take_pooled(
    daemon: &Daemon,
    runtime: &dyn Runtime,
    handle: &RunHandle,
    deadline: &Deadline,
) -> Result<Option<crate::pool::Pooled>, RunError> {
    let internal = handle.spec.policy.mode == PolicyMode::Strict;
    let pool = daemon.network_pool();
    loop {
        let taking = pool.take_or_await(&handle.spec.runtime, internal);
        let Some(pooled) = deadline.bound("waiting for a pool network", taking).await? else {
            break;
        };
        let name = pooled.network.name.clone();
        handle.update(daemon.store(), |m| m.network = Some(name.clone()))?;
        let step = format!("checking pooled network {name}");
        let only_its_holder = |network: &NetworkInfo| network.containers.iter().all(|c| *c == name);
        match deadline.bound(step, runtime.inspect_network(&name)).await? {
            Ok(network) if network.internal == internal && only_its_holder(&network) => {
                tracing::debug!(run = %handle.id(), "took pooled network {name}");
                let holder = running_holder(runtime, pooled.holder, deadline).await?;
                return Ok(Some(crate::pool::Pooled { network, holder }));
            }
            Ok(_) => tracing::warn!(run = %handle.id(), "pooled network {name} is not as created; not used"),
            Err(e) => tracing::warn!(run = %handle.id(), "pooled network {name} is gone ({e})"),
        }
    }
    Ok(None)
}

/// The pool holder, if it still runs (cleanup removes it either way).
async fn running_holder(
    runtime: &dyn Runtime,
    holder: Option<String>,
    deadline: &Deadline,
) -> Result<Option<String>, RunError> {
    let Some(holder) = holder else { return Ok(None) };
    let step = format!("checking pool holder {holder}");
    match deadline.bound(step, runtime.inspect_container(&holder)).await? {
        Ok(info) if info.status.is_running() => Ok(Some(holder)),
        Ok(_) | Err(_) => {
            tracing::warn!("pool holder {holder} does not run; the run attaches to the network instead");
            Ok(None)
        }
    }
}
