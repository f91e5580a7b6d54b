//! Crash points for fault-injection tests, compiled into debug builds only:
//! `MOAT_FAULT=<point>:kill` makes the daemon SIGKILL itself at that step of
//! run creation, `MOAT_FAULT=<point>:pause` holds it there for a few seconds
//! (so a test can kill the CLI meanwhile). Release builds ignore it.

/// Names of the crash points, in the order run creation reaches them.
pub const POINTS: &[&str] = &[
    "after-registry-write",
    "after-network-create",
    "after-container-create",
    "after-start",
];

/// Environment variable naming the crash point.
pub const ENV: &str = "MOAT_FAULT";

#[cfg(debug_assertions)]
pub async fn point(name: &str) {
    let Ok(spec) = std::env::var(ENV) else { return };
    let Some((point, action)) = spec.split_once(':') else {
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
pub async fn point(_name: &str) {}
