//! `moat daemon status|stop|restart|run`: manage the daemon of this
//! MOAT_HOME (`run` becomes `moatd run` in the foreground, for debugging;
//! the CLI itself starts `moatd` in the background on demand).

use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::Utc;
use moat_api::spawn::process_alive;
use moat_api::{API_VERSION, Health};
use moat_api::{ClientError, DaemonClient};
use moat_core::MoatHome;
use moat_core::lock::FileLock;

use crate::cli::{DaemonArgs, DaemonCommand};
use crate::context::{Context, ExitStatus};
use crate::live;
use crate::printer::Printer;
use crate::report::CliError;

/// Bound on a daemon exiting after it was asked to.
const STOP_WAIT: Duration = Duration::from_secs(15);

pub fn daemon(ctx: &Context, args: &DaemonArgs) -> Result<ExitStatus> {
    let home = ctx.home()?;
    match args.command {
        DaemonCommand::Status { json } => live::block_on(status(&ctx.printer, &home, json)),
        DaemonCommand::Stop => live::block_on(async {
            stop(ctx, &home).await?;
            Ok(ExitStatus::Success)
        }),
        DaemonCommand::Restart => live::block_on(async {
            stop(ctx, &home).await?;
            let client = live::daemon(&home).await?;
            let health = client.health().await.map_err(live::client_error)?;
            ctx.printer.status(format!("daemon restarted (pid {})", health.pid));
            Ok(ExitStatus::Success)
        }),
        DaemonCommand::Run => run_foreground(&home),
    }
}

/// What `daemon status` found: a daemon that answered, none, or one that
/// is there but cannot be used (and why).
async fn status(printer: &Printer, home: &MoatHome, json: bool) -> Result<ExitStatus> {
    let client = DaemonClient::new(home.daemon_socket());
    let answer = client.health().await;
    if json {
        let (health, problem) = match &answer {
            Ok(health) => (Some(health), None),
            Err(ClientError::NotRunning(_)) => (None, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let value = serde_json::json!({
            "running": health.is_some(),
            "socket": home.daemon_socket(),
            "health": health,
            "problem": problem,
            "version_skew": health.and_then(version_skew),
        });
        printer.data(serde_json::to_string_pretty(&value)?)?;
        return Ok(ExitStatus::Success);
    }
    let health = match answer {
        Ok(health) => health,
        Err(ClientError::NotRunning(_)) => {
            printer.data("daemon: not running (it starts on demand)")?;
            return Ok(ExitStatus::Success);
        }
        Err(e @ ClientError::Timeout { .. }) => {
            let holder = FileLock::holder(&home.daemon_lock());
            let who = holder.map_or(String::new(), |pid| format!(" (pid {pid})"));
            return Err(CliError::new(format!("daemon{who}: not answering: {e}"))
                .with_hint("`moat daemon restart` replaces a wedged daemon")
                .into());
        }
        Err(e) => {
            let hint = e
                .hint()
                .unwrap_or("check the owner and mode of the daemon socket")
                .to_string();
            return Err(CliError::new(format!("daemon: cannot be asked: {e}"))
                .with_hint(hint)
                .into());
        }
    };
    let uptime = (Utc::now() - health.started_at).to_std().unwrap_or_default();
    let mut lines = vec![
        "daemon: running".to_string(),
        format!("pid: {}", health.pid),
        format!("version: {} (API {})", health.version, health.api_version),
        format!("socket: {}", home.daemon_socket().display()),
    ];
    if let Some(port) = health.proxy_port {
        lines.push(format!("proxy port: {port}"));
    }
    lines.push(format!("uptime: {}s", uptime.as_secs()));
    lines.push(format!("live runs: {}", health.live_runs));
    if let Some(sweep) = &health.last_sweep {
        lines.push(format!("last sweep: {}", sweep["started_at"].as_str().unwrap_or("?")));
    }
    printer.data(lines.join("\n"))?;
    if let Some(skew) = version_skew(&health) {
        printer.warning(skew);
    }
    Ok(ExitStatus::Success)
}

/// A daemon of another version than this CLI: what to say about it.
fn version_skew(health: &Health) -> Option<String> {
    let mine = env!("CARGO_PKG_VERSION");
    if health.api_version != API_VERSION {
        return Some(format!(
            "the daemon speaks API {} and this moat API {API_VERSION}: restart it with `moat daemon restart`",
            health.api_version
        ));
    }
    (health.version != mine).then(|| {
        format!(
            "the daemon is version {} and this moat {mine}; it is replaced once no run is live",
            health.version
        )
    })
}

/// Asks the daemon to exit and waits until its process is gone.
async fn stop(ctx: &Context, home: &MoatHome) -> Result<()> {
    let client = DaemonClient::new(home.daemon_socket());
    let Ok(health) = client.health().await else {
        ctx.printer.status("daemon: not running");
        return Ok(());
    };
    client.shutdown().await.map_err(live::client_error)?;
    let deadline = Instant::now() + STOP_WAIT;
    while process_alive(health.pid) {
        if Instant::now() > deadline {
            return Err(CliError::new(format!(
                "the daemon (pid {}) did not exit within {STOP_WAIT:?}",
                health.pid
            ))
            .with_hint(format!("kill it: `kill {}`", health.pid))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctx.printer.status(format!(
        "daemon stopped (pid {}); live runs go on and are adopted by the next daemon",
        health.pid
    ));
    Ok(())
}

/// The daemon in the foreground: this process becomes `moatd run`.
fn run_foreground(home: &MoatHome) -> Result<ExitStatus> {
    use std::os::unix::process::CommandExt;
    let exe = moat_api::spawn::daemon_executable().map_err(live::spawn_error)?;
    let failure = std::process::Command::new(&exe)
        .arg("run")
        .env(moat_core::env_vars::MOAT_HOME, home.root())
        .exec();
    Err(anyhow::Error::from(failure).context(format!("starting {}", exe.display())))
}
