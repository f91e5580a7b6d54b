//! Apple's `container` CLI (macOS 26+) as a [`Runtime`] (runtime.md, "Apple
//! containers"). Every invocation goes through a [`CommandRunner`] so the
//! backend is tested with recorded outputs on machines without the CLI.
//!
//! What the CLI imposes: no labels (moat objects are recognised by name and
//! list results carry synthesised `dev.moat.*` labels), no exit codes, no
//! named volumes, no host networking; `wait` and `logs --follow` end by
//! polling `inspect`; network deletion is refused while any container,
//! stopped ones included, still refers to the network and briefly after a
//! removal, so it is retried with backoff; the apiserver is started on
//! demand when a call finds it down.

mod create;
pub mod errors;
mod follow;
pub mod parse;
pub mod runner;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::select::Probe;
use crate::{
    Capabilities, ContainerInfo, ContainerSpec, ExecOutput, ImageInfo, NetworkInfo, NetworkSpec, OutputStream, Runtime,
    RuntimeError, RuntimeKind, RuntimeResult, Timeouts, VolumeInfo, VolumeSpec,
};

pub use parse::{AppleContainer, Attachment};
pub use runner::{ByteStream, CommandOutput, CommandRunner, ProcessRunner, ScriptedReply, ScriptedRunner};

use follow::{follow_logs, stdout_chunk};
use parse::ParseError;

const KIND: RuntimeKind = RuntimeKind::Apple;

/// Consecutive failed `inspect` polls tolerated while waiting.
const WAIT_POLL_FAILURES: u32 = 5;

/// Bounds and intervals of the Apple backend.
#[derive(Clone, Debug)]
pub struct AppleOptions {
    pub timeouts: Timeouts,
    /// Bound on `container system start` when a call finds the apiserver down.
    pub system_start: Duration,
    /// How long a refused network deletion is retried before `InUse`.
    pub removal_retry: Duration,
    /// First pause between deletion attempts; doubles up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Interval of `inspect` polls in `wait` and `logs --follow` (each CLI
    /// call costs about half a second).
    pub poll_interval: Duration,
    /// How long `logs --follow` keeps reading after the container exited.
    pub log_drain: Duration,
}

impl Default for AppleOptions {
    fn default() -> Self {
        AppleOptions {
            timeouts: Timeouts::default(),
            system_start: Duration::from_secs(60),
            removal_retry: Duration::from_secs(10),
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(2),
            poll_interval: Duration::from_secs(2),
            log_drain: Duration::from_secs(1),
        }
    }
}

/// The Apple backend; a cheap, cloneable handle.
#[derive(Clone)]
pub struct AppleRuntime {
    runner: Arc<dyn CommandRunner>,
    options: Arc<AppleOptions>,
    /// When `container system start` last succeeded (also serialises starts).
    system_started: Arc<tokio::sync::Mutex<Option<Instant>>>,
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn parse_failure(err: ParseError) -> RuntimeError {
    RuntimeError::Other {
        runtime: KIND,
        op: format!("container {}", err.command),
        message: err.to_string(),
    }
}

fn unsupported(op: &str, why: &str) -> RuntimeError {
    RuntimeError::Other {
        runtime: KIND,
        op: op.to_string(),
        message: format!("not supported by the `container` CLI: {why}"),
    }
}

// === impl AppleRuntime: CLI plumbing ===

impl AppleRuntime {
    /// `container delete`; without `force` the CLI refuses a running one.
    async fn delete_container(&self, id: &str, force: bool) -> RuntimeResult<()> {
        let args = if force {
            strings(&["delete", "--force", id])
        } else {
            strings(&["delete", id])
        };
        let what = format!("container {id}");
        match self.checked(&args, &what, self.timeouts().remove).await {
            Err(err) if err.is_not_found() => Ok(()),
            other => other.map(drop),
        }
    }

    /// Runs the `container` program found on `PATH`.
    pub fn new(options: AppleOptions) -> Self {
        Self::with_runner(Arc::new(ProcessRunner::default()), options)
    }

    /// Checks the CLI (starting its system service when it is down), for
    /// runtime selection: `Available`, or `Unavailable` with the reason.
    pub async fn probe(options: AppleOptions) -> Probe {
        match AppleRuntime::new(options).ping().await {
            Ok(()) => Probe::Available,
            Err(err) => Probe::Unavailable(err.to_string()),
        }
    }

    pub fn with_runner(runner: Arc<dyn CommandRunner>, options: AppleOptions) -> Self {
        AppleRuntime {
            runner,
            options: Arc::new(options),
            system_started: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    fn timeouts(&self) -> &Timeouts {
        &self.options.timeouts
    }

    /// Runs `container <args>`; when the apiserver is down, starts it once
    /// and runs the command again.
    async fn invoke(&self, args: &[String], limit: Duration) -> RuntimeResult<CommandOutput> {
        let sent_at = Instant::now();
        let output = self.runner.run(args, limit).await?;
        if !errors::is_apiserver_down(&output) {
            return Ok(output);
        }
        self.start_system(sent_at).await?;
        self.runner.run(args, limit).await
    }

    /// [`Self::invoke`], with a failure turned into a typed error about `what`.
    async fn checked(&self, args: &[String], what: &str, limit: Duration) -> RuntimeResult<String> {
        let output = self.invoke(args, limit).await?;
        if output.success() {
            Ok(output.stdout)
        } else {
            Err(errors::classify(args, what, &output))
        }
    }

    /// Runs `container system start`, unless another call started the
    /// system after `needed_since`.
    async fn start_system(&self, needed_since: Instant) -> RuntimeResult<()> {
        let limit = self.options.system_start;
        let mut last_start = tokio::time::timeout(limit, self.system_started.lock())
            .await
            .map_err(|_| RuntimeError::Timeout {
                runtime: KIND,
                op: "waiting for another `container system start`".to_string(),
                after: limit,
            })?;
        if last_start.is_some_and(|at| at >= needed_since) {
            return Ok(());
        }
        tracing::info!("the container system service is not running; starting it");
        // Never prompt (stdin is closed): a missing kernel is reported later,
        // with the command that installs it.
        let args = strings(&["system", "start", "--disable-kernel-install"]);
        match self.runner.run(&args, limit).await {
            Ok(output) if output.success() => {
                *last_start = Some(Instant::now());
                Ok(())
            }
            Ok(output) => Err(RuntimeError::Unavailable {
                runtime: KIND,
                reason: format!(
                    "the container system service is not running and `container system start` \
                     failed: {}",
                    errors::one_line(&format!("{}\n{}", output.stdout, output.stderr))
                ),
            }),
            Err(RuntimeError::Timeout { after, .. }) => Err(RuntimeError::Unavailable {
                runtime: KIND,
                reason: format!(
                    "the container system service is not running and `container system start` \
                     did not finish within {after:?}; run it yourself and check \
                     `container system status`"
                ),
            }),
            Err(err) => Err(err),
        }
    }

    // === containers ===

    /// `container inspect <id>`: v1 fails with `not found`, legacy prints `[]`.
    pub async fn inspect(&self, id: &str) -> RuntimeResult<AppleContainer> {
        let what = format!("container {id}");
        let stdout = self
            .checked(&strings(&["inspect", id]), &what, self.timeouts().call)
            .await?;
        parse::parse_containers("inspect", &stdout)
            .map_err(parse_failure)?
            .into_iter()
            .next()
            .ok_or(RuntimeError::NotFound { runtime: KIND, what })
    }

    /// A running container's addresses (IPv4 without prefix length, and the
    /// gateway, through which it reaches the host).
    pub async fn container_addresses(&self, id: &str) -> RuntimeResult<Vec<Attachment>> {
        Ok(self.inspect(id).await?.attachments)
    }

    /// Every container, moat's or not.
    async fn all_containers(&self) -> RuntimeResult<Vec<AppleContainer>> {
        let args = strings(&["list", "--all", "--format", "json"]);
        let stdout = self.checked(&args, "containers", self.timeouts().list).await?;
        parse::parse_containers("list", &stdout).map_err(parse_failure)
    }

    /// Whether the container is no longer running (or gone); other
    /// `inspect` failures are returned.
    async fn has_exited(&self, id: &str) -> RuntimeResult<bool> {
        match self.inspect(id).await {
            Ok(container) => Ok(!container.info.status.is_running()),
            Err(err) if err.is_not_found() => Ok(true),
            Err(err) => Err(err),
        }
    }

    // === networks ===

    /// Every network, from the JSON list, or the table where `--format` is
    /// not understood.
    async fn all_networks(&self) -> RuntimeResult<Vec<NetworkInfo>> {
        let limit = self.timeouts().list;
        let json_args = strings(&["network", "list", "--format", "json"]);
        let stdout = match self.checked(&json_args, "networks", limit).await {
            Ok(stdout) => stdout,
            Err(RuntimeError::Other { message, .. }) => {
                tracing::debug!("`network list --format json` failed ({message}); using the table");
                self.checked(&strings(&["network", "list"]), "networks", limit).await?
            }
            Err(err) => return Err(err),
        };
        if stdout.trim_start().starts_with('[') {
            parse::parse_networks("network list", &stdout).map_err(parse_failure)
        } else {
            parse::parse_network_table(&stdout).map_err(parse_failure)
        }
    }

    /// `container network inspect <name>` without attached containers.
    async fn network_record(&self, name: &str) -> RuntimeResult<NetworkInfo> {
        let what = format!("network {name}");
        let args = strings(&["network", "inspect", name]);
        let stdout = self.checked(&args, &what, self.timeouts().call).await?;
        parse::parse_networks("network inspect", &stdout)
            .map_err(parse_failure)?
            .into_iter()
            .next()
            .ok_or(RuntimeError::NotFound { runtime: KIND, what })
    }

    /// One `network delete`; not found counts as deleted.
    async fn delete_network_once(&self, name: &str) -> RuntimeResult<()> {
        let args = strings(&["network", "delete", name]);
        let what = format!("network {name}");
        match self.checked(&args, &what, self.timeouts().remove).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_not_found() => Ok(()),
            Err(err) => Err(err),
        }
    }
}

// === impl Runtime ===

#[async_trait]
impl Runtime for AppleRuntime {
    fn kind(&self) -> RuntimeKind {
        KIND
    }

    /// None of labels, named volumes, exit codes, host networking, internal
    /// networks or privileged containers.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    fn endpoint(&self) -> String {
        format!("{} (Apple container CLI)", self.runner.program())
    }

    /// Unknown up front: a container reaches the host through its network's
    /// gateway (`inspect_network(..).gateway`).
    fn host_address(&self) -> Option<String> {
        None
    }

    /// Checks `container system status`, starting the system when it is not
    /// running.
    async fn ping(&self) -> RuntimeResult<()> {
        let args = strings(&["system", "status"]);
        let limit = self.timeouts().call;
        let sent_at = Instant::now();
        let status = self.runner.run(&args, limit).await?;
        if status.success() {
            return Ok(());
        }
        if !status.stdout.contains("not running") {
            return Err(RuntimeError::Unavailable {
                runtime: KIND,
                reason: format!(
                    "`container system status` failed: {}",
                    errors::one_line(&format!("{}\n{}", status.stdout, status.stderr))
                ),
            });
        }
        self.start_system(sent_at).await?;
        let status = self.runner.run(&args, limit).await?;
        if status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Unavailable {
                runtime: KIND,
                reason: format!(
                    "still not running after `container system start`: {}",
                    errors::one_line(&status.stdout)
                ),
            })
        }
    }

    async fn image_exists(&self, image: &str) -> RuntimeResult<bool> {
        let args = strings(&["image", "inspect", image]);
        let output = self.invoke(&args, self.timeouts().exec).await?;
        if output.success() {
            let images = parse::parse_images("image inspect", &output.stdout);
            return Ok(!images.map_err(parse_failure)?.is_empty());
        }
        // Legacy CLIs log `image inspect failed: …` without a clean message.
        let err = errors::classify(&args, &format!("image {image}"), &output);
        if err.is_not_found() || output.stderr.contains("inspect failed") {
            Ok(false)
        } else {
            Err(err)
        }
    }

    async fn list_images(&self) -> RuntimeResult<Vec<ImageInfo>> {
        let args = strings(&["image", "list", "--format", "json"]);
        let stdout = self.checked(&args, "images", self.timeouts().list).await?;
        parse::parse_images("image list", &stdout).map_err(parse_failure)
    }

    async fn remove_image(&self, image: &str) -> RuntimeResult<()> {
        let args = strings(&["image", "delete", image]);
        let what = format!("image {image}");
        match self.checked(&args, &what, self.timeouts().remove).await {
            Err(err) if err.is_not_found() => Ok(()),
            other => other.map(drop),
        }
    }

    /// With `--name`, the CLI's id is the name.
    async fn create_container(&self, spec: &ContainerSpec) -> RuntimeResult<String> {
        let args = create::create_args(spec)?;
        let what = format!("container {}", spec.name);
        let stdout = self.checked(&args, &what, self.timeouts().call).await?;
        let id = stdout.trim();
        Ok(if id.is_empty() { &spec.name } else { id }.to_string())
    }

    async fn start_container(&self, id: &str) -> RuntimeResult<()> {
        let what = format!("container {id}");
        self.checked(&strings(&["start", id]), &what, self.timeouts().call)
            .await
            .map(drop)
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> RuntimeResult<()> {
        let seconds = grace.as_secs_f64().ceil().to_string();
        let args = strings(&["stop", "--time", &seconds, id]);
        let what = format!("container {id}");
        let limit = self.timeouts().call + grace;
        self.checked(&args, &what, limit).await.map(drop)
    }

    async fn remove_container(&self, id: &str) -> RuntimeResult<()> {
        self.delete_container(id, true).await
    }

    async fn remove_stopped_container(&self, id: &str) -> RuntimeResult<()> {
        self.delete_container(id, false).await
    }

    /// Polls `inspect` until the container stops; the CLI reports no exit
    /// code, so the answer is always `None`. A few consecutive poll failures
    /// are tolerated (a long run outlives a CLI hiccup).
    async fn wait_container(&self, id: &str) -> RuntimeResult<Option<i64>> {
        let mut failures = 0;
        loop {
            match self.inspect(id).await {
                Ok(container) if !container.info.status.is_running() => return Ok(None),
                Ok(_) => failures = 0,
                Err(err) if err.is_not_found() => return Err(err),
                Err(err) if failures + 1 < WAIT_POLL_FAILURES => {
                    failures += 1;
                    tracing::warn!("waiting for container {id}: poll failed ({err}); retrying");
                }
                Err(err) => return Err(err),
            }
            tokio::time::sleep(self.options.poll_interval).await;
        }
    }

    async fn inspect_container(&self, id: &str) -> RuntimeResult<ContainerInfo> {
        Ok(self.inspect(id).await?.info)
    }

    /// The CLI keeps one stdio log, so all output is tagged stdout. It cannot
    /// filter by time, so `since` is refused.
    async fn logs(&self, id: &str, follow: bool, since: Option<DateTime<Utc>>) -> RuntimeResult<OutputStream> {
        if since.is_some() {
            return Err(unsupported(
                &format!("logs of container {id}"),
                "`container logs` has no --since; read the whole log instead",
            ));
        }
        if !follow {
            let what = format!("container {id}");
            let stdout = self
                .checked(&strings(&["logs", id]), &what, self.timeouts().call)
                .await?;
            let chunks = (!stdout.is_empty()).then(|| Ok(stdout_chunk(stdout.into())));
            return Ok(Box::pin(futures_util::stream::iter(chunks)));
        }
        self.inspect(id).await?;
        let lines = self.runner.stream(&strings(&["logs", "--follow", id])).await?;
        Ok(follow_logs(self.clone(), id.to_string(), lines))
    }

    /// A non-zero status is the command's own exit code unless stderr is
    /// the CLI's typed error about the container itself (not found, system
    /// down): the CLI passes the process's status through.
    async fn exec(&self, id: &str, command: &[String]) -> RuntimeResult<ExecOutput> {
        let mut args = strings(&["exec", id]);
        args.extend(command.iter().cloned());
        let output = self.invoke(&args, self.timeouts().call).await?;
        if !output.success() && errors::is_cli_error(&output) {
            let err = errors::classify(&args, &format!("container {id}"), &output);
            if !matches!(err, RuntimeError::Other { .. }) {
                return Err(err);
            }
        }
        Ok(ExecOutput {
            exit_code: Some(i64::from(output.status)),
            stdout: output.stdout.into_bytes(),
            stderr: output.stderr.into_bytes(),
        })
    }

    /// Containers named like moat's, with synthesised labels.
    async fn list_containers(&self) -> RuntimeResult<Vec<ContainerInfo>> {
        Ok(self
            .all_containers()
            .await?
            .into_iter()
            .map(|c| c.info)
            .filter(|info| parse::is_moat_managed(&info.labels))
            .collect())
    }

    /// `network create` (bounded: it hangs when the address pool is
    /// exhausted), then `network inspect` for the subnet and gateway.
    async fn create_network(&self, spec: &NetworkSpec) -> RuntimeResult<NetworkInfo> {
        if spec.internal {
            return Err(unsupported(
                &format!("create network {}", spec.name),
                "networks without a route out (internal)",
            ));
        }
        let args = strings(&["network", "create", &spec.name]);
        let what = format!("network {}", spec.name);
        self.checked(&args, &what, self.timeouts().network_create).await?;
        match self.network_record(&spec.name).await {
            Ok(info) => Ok(info),
            Err(err) => {
                tracing::warn!("network {} created but inspecting it failed: {err}", spec.name);
                Ok(NetworkInfo {
                    id: spec.name.clone(),
                    name: spec.name.clone(),
                    labels: parse::network_labels_from_name(&spec.name),
                    subnet: None,
                    gateway: None,
                    internal: false,
                    containers: Vec::new(),
                })
            }
        }
    }

    /// Retries refusals ("referring containers", "pending operation", the
    /// pre-0.11 allocator message) with backoff within
    /// [`AppleOptions::removal_retry`], then reports `InUse`. Containers
    /// referring to the network must be removed first (stopping is not
    /// enough): that ordering is the caller's.
    async fn remove_network(&self, name: &str) -> RuntimeResult<()> {
        let started = Instant::now();
        let give_up_at = started + self.options.removal_retry;
        let mut backoff = self.options.first_backoff;
        loop {
            let detail = match self.delete_network_once(name).await {
                Err(RuntimeError::InUse { detail, .. }) => detail,
                other => return other,
            };
            if Instant::now() + backoff > give_up_at {
                return Err(RuntimeError::InUse {
                    runtime: KIND,
                    what: format!("network {name}"),
                    detail: format!(
                        "{detail} (still refused after retrying for {:?}; remove the \
                         containers that refer to it first)",
                        started.elapsed()
                    ),
                });
            }
            tracing::debug!("network {name} not deletable yet ({detail}); retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
    }

    /// Networks named `moat-run_<12hex>`, with the containers referring to
    /// them (two CLI calls).
    async fn list_networks(&self) -> RuntimeResult<Vec<NetworkInfo>> {
        let mut networks: Vec<NetworkInfo> = self
            .all_networks()
            .await?
            .into_iter()
            .filter(|n| parse::is_moat_managed(&n.labels))
            .collect();
        if !networks.is_empty() {
            let containers = self.all_containers().await?;
            parse::attach_containers(&mut networks, &containers);
        }
        Ok(networks)
    }

    async fn inspect_network(&self, name: &str) -> RuntimeResult<NetworkInfo> {
        let mut network = [self.network_record(name).await?];
        let containers = self.all_containers().await?;
        parse::attach_containers(&mut network, &containers);
        let [network] = network;
        Ok(network)
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> RuntimeResult<()> {
        Err(unsupported(
            &format!("create volume {}", spec.name),
            "moat's Apple backend has no named volumes",
        ))
    }

    async fn remove_volume(&self, name: &str) -> RuntimeResult<()> {
        Err(unsupported(
            &format!("remove volume {name}"),
            "moat's Apple backend has no named volumes",
        ))
    }

    /// Always empty: moat creates no volumes on Apple.
    async fn list_volumes(&self) -> RuntimeResult<Vec<VolumeInfo>> {
        Ok(Vec::new())
    }
}
