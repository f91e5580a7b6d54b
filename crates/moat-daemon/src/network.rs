//! Creating a run's network (daemon-and-reaper.md §5, "Bounded network
//! creation" and "Address space"). When the runtime times out or moat's
//! subnet pool has no free block, the daemon sweeps orphans — forced past
//! the two-sweep wait, never past the liveness check, within the
//! creation's deadline — and retries once. A failure names the cause and
//! the fix; a retry that succeeds says what was reclaimed.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use moat_runtime::{NetworkInfo, NetworkSpec, Runtime, RuntimeError, RuntimeKind, labels};

use crate::deadline::Deadline;
use crate::progress::Progress;
use crate::reaper::decide::ObjectKind;
use crate::reaper::{SweepReport, SweepRequest};
use crate::state::Daemon;
use crate::supervisor::RunError;

/// What the client hears while the daemon sweeps before its retry.
pub const SWEEPING: &str = "still creating the network (sweeping orphans first)…";

/// Reaper trigger of the sweep between two attempts.
const SWEEP_TRIGGER: &str = "network creation failed";

/// The run's network, and what the user should hear about how it was made.
#[derive(Debug)]
pub struct CreatedNetwork {
    pub info: NetworkInfo,
    pub notice: Option<String>,
}

/// What the sweep between the two attempts did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SweepOutcome {
    /// The creation's deadline left no time for a sweep and a retry.
    Skipped,
    /// The sweep finished and removed `reclaimed` networks.
    Done { reclaimed: usize },
    /// The sweep did not finish within `budget` (it goes on in the
    /// background).
    Unfinished { budget: Duration },
    /// The sweep reclaimed nothing and reported errors.
    Failed(String),
}

impl SweepOutcome {
    fn from_report(report: &SweepReport) -> SweepOutcome {
        let reclaimed = report
            .runtimes
            .iter()
            .flat_map(|r| &r.removed)
            .filter(|key| key.kind == ObjectKind::Network)
            .count();
        let errors: Vec<&str> = report
            .error
            .iter()
            .chain(report.runtimes.iter().flat_map(|r| &r.errors))
            .map(String::as_str)
            .collect();
        if reclaimed == 0 && !errors.is_empty() {
            SweepOutcome::Failed(errors.join("; "))
        } else {
            SweepOutcome::Done { reclaimed }
        }
    }
}

/// How the sweep went, as the end of an error message.
impl fmt::Display for SweepOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SweepOutcome::Skipped => f.write_str("; no time was left to sweep orphans and retry"),
            SweepOutcome::Done { reclaimed: 0 } => f.write_str(", even after a sweep of orphans (none to reclaim)"),
            SweepOutcome::Done { reclaimed } => {
                write!(f, ", even after reclaiming {reclaimed} orphaned network(s)")
            }
            SweepOutcome::Unfinished { budget } => {
                write!(f, "; a sweep of orphans did not finish within {budget:?}")
            }
            SweepOutcome::Failed(reason) => write!(f, "; sweeping orphans failed: {reason}"),
        }
    }
}

/// A run's network could not be created, also not after a sweep.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("creating network {network}: no free subnet in moat's pool {pool}{sweep}")]
    Exhausted {
        network: String,
        runtime: RuntimeKind,
        pool: String,
        sweep: SweepOutcome,
        config_file: PathBuf,
    },
    #[error("creating network {network}: {runtime}'s `{op}` timed out after {after:?}{sweep}")]
    TimedOut {
        network: String,
        runtime: RuntimeKind,
        op: String,
        after: Duration,
        sweep: SweepOutcome,
        config_file: PathBuf,
    },
}

impl NetworkError {
    /// The fix, one step per line.
    pub fn hint(&self) -> String {
        match self {
            NetworkError::Exhausted {
                runtime, config_file, ..
            } => format!(
                "remove orphaned networks with `moat system prune --networks`, or widen `subnet_pool` in {}\n\
                 `{}` shows what uses the range (other tools' networks count too)",
                config_file.display(),
                list_all_networks(*runtime),
            ),
            NetworkError::TimedOut {
                runtime, config_file, ..
            } => format!(
                "{runtime} may be wedged: `{}` lists moat's networks, `moat doctor` checks the runtime\n\
                 `network_create_timeout` in {} sets the bound",
                list_moat_networks(*runtime),
                config_file.display(),
            ),
        }
    }
}

/// The command that lists moat's networks on `runtime`.
pub fn list_moat_networks(runtime: RuntimeKind) -> String {
    match runtime {
        RuntimeKind::Apple => "container network list".to_string(),
        RuntimeKind::Kubernetes => format!("kubectl get networkpolicies -l {}=true", labels::MANAGED),
        RuntimeKind::Docker | RuntimeKind::Fake => {
            format!("docker network ls --filter label={}=true", labels::MANAGED)
        }
    }
}

fn list_all_networks(runtime: RuntimeKind) -> &'static str {
    match runtime {
        RuntimeKind::Apple => "container network list",
        RuntimeKind::Kubernetes => "kubectl get networkpolicies",
        RuntimeKind::Docker | RuntimeKind::Fake => "docker network ls",
    }
}

/// Creates the run's network within `deadline`; on a timeout or a full
/// pool, sweeps orphans (saying so through `progress`) and retries once.
pub async fn create(
    daemon: &Daemon,
    runtime: &dyn Runtime,
    spec: &NetworkSpec,
    deadline: &Deadline,
    progress: &Progress,
) -> Result<CreatedNetwork, RunError> {
    let step = format!("creating network {}", spec.name);
    let first = match deadline.bound(step, runtime.create_network(spec)).await? {
        Ok(info) => return Ok(CreatedNetwork { info, notice: None }),
        Err(e) if worth_a_sweep(&e) => e,
        Err(e) => return Err(e.into()),
    };
    let Some(budget) = deadline.sweep_budget() else {
        return Err(failure(daemon, spec, first, SweepOutcome::Skipped));
    };
    tracing::warn!(
        "creating network {} failed ({first}); sweeping orphans and retrying once",
        spec.name
    );
    progress.say(SWEEPING);
    let sweep = sweep_orphans(daemon, budget).await;
    let step = format!("creating network {} again after a sweep of orphans", spec.name);
    match deadline.bound(step, runtime.create_network(spec)).await? {
        Ok(info) => {
            let notice = retried(&first, &sweep);
            tracing::info!("network {}: {notice}", spec.name);
            Ok(CreatedNetwork {
                info,
                notice: Some(notice),
            })
        }
        Err(e) if worth_a_sweep(&e) => Err(failure(daemon, spec, e, sweep)),
        Err(e) => Err(e.into()),
    }
}

/// Failures that orphans can cause: a full pool, or a runtime so loaded
/// with networks that creating one more times out.
fn worth_a_sweep(e: &RuntimeError) -> bool {
    e.is_timeout() || e.is_address_space_exhausted()
}

/// What the user hears after a retry that worked.
fn retried(first: &RuntimeError, sweep: &SweepOutcome) -> String {
    match sweep {
        SweepOutcome::Done { reclaimed } if *reclaimed > 0 && first.is_address_space_exhausted() => {
            format!("reclaimed {reclaimed} orphaned network(s) to make room")
        }
        SweepOutcome::Done { reclaimed } => format!(
            "created the network on a second attempt, after reclaiming {reclaimed} orphaned network(s) (the first failed: {first})"
        ),
        _ => format!("created the network on a second attempt (the first failed: {first}{sweep})"),
    }
}

fn failure(daemon: &Daemon, spec: &NetworkSpec, error: RuntimeError, sweep: SweepOutcome) -> RunError {
    let config_file = daemon.home().config_file();
    let network = spec.name.clone();
    match error {
        RuntimeError::AddressSpaceExhausted { runtime, pool, .. } => NetworkError::Exhausted {
            network,
            runtime,
            pool,
            sweep,
            config_file,
        }
        .into(),
        RuntimeError::Timeout { runtime, op, after } => NetworkError::TimedOut {
            network,
            runtime,
            op,
            after,
            sweep,
            config_file,
        }
        .into(),
        other => other.into(),
    }
}

/// Sweeps dead runs' containers and networks at once (no second
/// sighting), waiting at most `budget`. The sweep runs in its own task so
/// that one which overruns finishes in the background instead of stopping
/// half-way.
async fn sweep_orphans(daemon: &Daemon, budget: Duration) -> SweepOutcome {
    let request = SweepRequest {
        kinds: vec![ObjectKind::Container, ObjectKind::Network],
        force: true,
        ..SweepRequest::default()
    };
    let sweeping = tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.reaper().sweep(&daemon, &request, SWEEP_TRIGGER).await }
    });
    match tokio::time::timeout(budget, sweeping).await {
        Ok(Ok(report)) => SweepOutcome::from_report(&report),
        Ok(Err(e)) => SweepOutcome::Failed(format!("the sweep ended abnormally: {e}")),
        Err(_) => SweepOutcome::Unfinished { budget },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exhausted(sweep: SweepOutcome) -> NetworkError {
        NetworkError::Exhausted {
            network: "moat-run_0123456789ab".into(),
            runtime: RuntimeKind::Docker,
            pool: "10.213.0.0/16 (/24 each)".into(),
            sweep,
            config_file: PathBuf::from("/home/u/.moat/config.yaml"),
        }
    }

    #[test]
    fn a_full_pool_names_the_pool_and_the_fix() {
        let e = exhausted(SweepOutcome::Done { reclaimed: 0 });
        assert_eq!(
            e.to_string(),
            "creating network moat-run_0123456789ab: no free subnet in moat's pool 10.213.0.0/16 (/24 each), \
             even after a sweep of orphans (none to reclaim)"
        );
        let hint = e.hint();
        assert!(hint.contains("`moat system prune --networks`"), "{hint}");
        assert!(hint.contains("`subnet_pool` in /home/u/.moat/config.yaml"), "{hint}");
        assert!(hint.contains("`docker network ls`"), "{hint}");
    }

    #[test]
    fn a_timeout_names_the_operation_its_bound_and_how_to_look() {
        let e = NetworkError::TimedOut {
            network: "moat-run_0123456789ab".into(),
            runtime: RuntimeKind::Docker,
            op: "create network moat-run_0123456789ab".into(),
            after: Duration::from_secs(30),
            sweep: SweepOutcome::Unfinished {
                budget: Duration::from_secs(15),
            },
            config_file: PathBuf::from("/m/config.yaml"),
        };
        assert_eq!(
            e.to_string(),
            "creating network moat-run_0123456789ab: docker's `create network moat-run_0123456789ab` timed out \
             after 30s; a sweep of orphans did not finish within 15s"
        );
        let hint = e.hint();
        assert!(
            hint.contains("`docker network ls --filter label=dev.moat.managed=true`"),
            "{hint}"
        );
        assert!(hint.contains("`network_create_timeout` in /m/config.yaml"), "{hint}");
    }

    #[test]
    fn apple_users_are_told_apple_commands() {
        assert_eq!(list_moat_networks(RuntimeKind::Apple), "container network list");
    }

    #[test]
    fn a_retry_after_reclaiming_says_so() {
        let full = RuntimeError::AddressSpaceExhausted {
            runtime: RuntimeKind::Docker,
            network: "n".into(),
            pool: "p".into(),
        };
        assert_eq!(
            retried(&full, &SweepOutcome::Done { reclaimed: 2 }),
            "reclaimed 2 orphaned network(s) to make room"
        );
        let slow = RuntimeError::Timeout {
            runtime: RuntimeKind::Docker,
            op: "create network n".into(),
            after: Duration::from_secs(30),
        };
        let notice = retried(&slow, &SweepOutcome::Done { reclaimed: 0 });
        assert!(
            notice.contains("second attempt") && notice.contains("timed out"),
            "{notice}"
        );
    }
}
