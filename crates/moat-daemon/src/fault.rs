//! Crash points for fault-injection tests, acting in debug builds only
//! (the names are in [`moat_api::fault`]). Release builds ignore them.

use crate::api::RunSpec;

pub use moat_api::fault::{AFTER_SERVICE_CREATE, BEFORE_CLEANUP, LABEL, POINTS};

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
