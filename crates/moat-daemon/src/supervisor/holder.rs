//! A run's gateway holder, on runtimes whose host gets a network's gateway
//! address only once a container has joined the network
//! ([`moat_runtime::Capabilities::gateway_needs_a_container`], Podman):
//! a small container of the run, asleep on its network, started before
//! the proxy listens on the gateway. It belongs to the run like its
//! sidecars: labelled with the run's id (role `holder`), removed by its
//! cleanup, reclaimed by the reaper once the run is dead, and never taken
//! as evidence that the run lives.

use moat_runtime::base_image::DEFAULT_LOCAL_BASE_IMAGE;
use moat_runtime::{ContainerSpec, Runtime, labels};

use super::RunError;
use crate::deadline::Deadline;
use crate::registry::RunHandle;
use crate::state::Daemon;

/// The holder's name: the run's id and a suffix no service name takes.
pub fn holder_name(handle: &RunHandle) -> String {
    format!("{}-gateway-holder", handle.id())
}

/// Whether runs on `runtime` get a gateway holder.
pub fn needed(runtime: &dyn Runtime) -> bool {
    runtime.capabilities().gateway_needs_a_container
}

/// Starts the run's holder on `network` (within `deadline`), so that the
/// host has the network's gateway address when the call returns.
pub async fn start(
    daemon: &Daemon,
    runtime: &dyn Runtime,
    handle: &RunHandle,
    network: &str,
    deadline: &Deadline,
) -> Result<(), RunError> {
    let image = holder_image(runtime, handle, deadline).await?;
    let spec = ContainerSpec {
        name: holder_name(handle),
        image,
        // A shell as PID 1 traps SIGTERM, so that a stop is not a kill
        // after the grace period.
        command: ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
            .map(String::from)
            .to_vec(),
        user: Some("65534:65534".into()),
        network: Some(network.to_string()),
        labels: labels::for_run(&daemon.home().label(), handle.id().as_str(), labels::role::HOLDER),
        ..Default::default()
    };
    let step = format!("creating gateway holder {}", spec.name);
    let id = deadline.bound(step, runtime.create_container(&spec)).await??;
    let step = format!("starting gateway holder {}", spec.name);
    deadline.bound(step, runtime.start_container(&id)).await??;
    Ok(())
}

/// moat's base image where the runtime has it (it has `sh` and `sleep`),
/// else the run's own image.
async fn holder_image(runtime: &dyn Runtime, handle: &RunHandle, deadline: &Deadline) -> Result<String, RunError> {
    let step = format!("looking for image {DEFAULT_LOCAL_BASE_IMAGE}");
    let base = deadline
        .bound(step, runtime.image_exists(DEFAULT_LOCAL_BASE_IMAGE))
        .await??;
    Ok(if base {
        DEFAULT_LOCAL_BASE_IMAGE.to_string()
    } else {
        handle.spec.image.clone()
    })
}
