//! Removing a run's objects exactly once, and recording that they are gone.
//! A few runs' objects are removed at a time: the engine serialises network
//! removals, so a hundred runs stopped at once would otherwise queue their
//! removals inside the engine until the later ones time out.

use chrono::Utc;
use moat_proxy::PolicyMode;
use moat_runtime::Runtime;
use tokio::sync::Semaphore;

use super::services::remove_sidecars;
use super::watch::announce_exit;
use crate::audit::Event;
use crate::fault;
use crate::firewall::{self};
use crate::registry::RunHandle;
use crate::state::Daemon;

/// Runs whose objects are being removed at once; each removal's timeout
/// runs from when it gets its turn.
static REMOVALS: Semaphore = Semaphore::const_new(4);

/// Removes the run's service sidecars (a kept run's are stopped), its
/// container (unless kept), its pool holder, network and firewall rules,
/// exactly once, records `cleaned_at` when all are gone, tells attached
/// clients, and leaves the registry.
pub async fn cleanup(daemon: &Daemon, runtime: &dyn Runtime, handle: &RunHandle) {
    if !handle.claim_cleanup() {
        return;
    }
    let _in_flight = daemon.cleanup_started();
    fault::point(fault::BEFORE_CLEANUP, &handle.spec).await;
    let meta = handle.metadata();
    let mut failures = Vec::new();
    // Never closed, so the permit always comes.
    let _turn = REMOVALS.acquire().await;
    failures.extend(remove_sidecars(runtime, handle, meta.keep, daemon.config().stop_grace).await);
    if !meta.keep {
        let container = meta.container_id.clone().unwrap_or_else(|| meta.id.to_string());
        if let Err(e) = runtime.remove_container(&container).await {
            failures.push(e.to_string());
        }
    }
    // A pool network's holder (named like it) goes before the network,
    // also for a kept run: it only held the network's namespace.
    if let Some(network) = meta.network.as_ref().filter(|n| crate::pool::is_pool_name(n))
        && let Err(e) = runtime.remove_container(network).await
    {
        failures.push(e.to_string());
    }
    if super::holder::needed(runtime)
        && let Err(e) = runtime.remove_container(&super::holder::holder_name(handle)).await
    {
        failures.push(e.to_string());
    }
    if !meta.keep
        && let Some(network) = &meta.network
        && let Err(e) = runtime.remove_network(network).await
    {
        failures.push(e.to_string());
    }
    if handle.spec.policy.mode == PolicyMode::Strict
        && let Err(e) = firewall::release(&meta.id).await
    {
        failures.push(format!("removing the run's firewall rules: {e}"));
    }
    let result = handle.update(daemon.store(), |m| {
        if failures.is_empty() && !m.keep {
            m.cleaned_at = Some(Utc::now());
        }
    });
    if let Err(e) = result {
        tracing::error!(run = %meta.id, "recording cleanup failed: {e}");
    }
    for failure in &failures {
        tracing::warn!(run = %meta.id, "cleanup left something for the reaper: {failure}");
    }
    announce_exit(handle);
    if let Some(egress) = daemon.egress() {
        egress.release(&meta.id);
    }
    daemon.cluster_proxies().release(daemon.home(), &meta.id).await;
    daemon.ssh_agents().stop(&meta.id);
    daemon.aws().forget(&meta.id);
    daemon.audit().record(&meta.id, Event::Cleaned { failures });
    daemon.audit().close(&meta.id);
    daemon.registry().remove(&meta.id);
}
