//! Crash points for fault-injection tests, compiled into debug builds only.
//! A run whose spec carries the label `dev.moat.fault=<point>:kill` makes the
//! daemon SIGKILL itself at that step of the run's creation;
//! `<point>:pause` holds the creation there for a few seconds (so a test can
//! kill the CLI meanwhile). The CLI sets the label from `MOAT_FAULT` in
//! debug builds. Release builds ignore both.

use crate::api::RunSpec;

/// Names of the crash points, in the order run creation reaches them.
pub const POINTS: &[&str] = &[
    "after-registry-write",
    "after-network-create",
    "after-container-create",
    "after-start",
];

/// The start of a run's cleanup (after its exit was announced); `pause`
/// there lets a test act while the cleanup is pending.
pub const BEFORE_CLEANUP: &str = "before-cleanup";

/// Environment variable the CLI reads the crash point from.
pub const ENV: &str = "MOAT_FAULT";

/// Run label carrying the crash point to the daemon.
pub const LABEL: &str = "dev.moat.fault";

#[cfg(debug_assertions)]
pub async fn point(name: &str, spec: &RunSpec) {
    let Some((point, action)) = spec.labels.get(LABEL).and_then(|v| v.split_once(':')) else {
        return;
    };
    if point != name {
        return;
    }
    match action {
        "kill" => {
            tracing::warn!("fault injection: killing the daemon {name}");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        }
        "pause" => {
            tracing::warn!("fault injection: pausing {name}");
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        }
        _ => {}
    }
}

#[cfg(not(debug_assertions))]
pub async fn point(_name: &str, _spec: &RunSpec) {}
