//! `moatd`, the moat daemon's executable (the CLI starts it; people rarely
//! do). `moatd run` serves the API of the `MOAT_HOME` in its environment
//! until it is idle or told to stop. `moatd sweep` runs one reaper sweep in
//! this process, for when no daemon can be started: a sweep request as JSON
//! on stdin, the report as JSON on stdout. `moatd probe` prints what the
//! container runtime looks like, as JSON, starting nothing. `moatd proxy`
//! is the proxy in remote mode (the in-cluster proxy of a Kubernetes
//! namespace), driven by a daemon over its mutual-TLS control API.

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use moat_api::sweep::SweepRequest;
use moat_core::{MoatHome, config, env_vars};
use moat_daemon::runtimes::SystemRuntimes;
use moat_daemon::{DaemonConfig, probe, standalone};
use moat_proxy::remote::RemoteProxyOptions;

const USAGE: &str = "usage: moatd run | sweep | probe | proxy OPTIONS | --version";

/// Supervision tasks end with the async runtime; the next daemon re-adopts
/// the runs they watched.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    let outcome = match command.as_deref() {
        Some("run") | None => run(),
        Some("sweep") => sweep(),
        Some("probe") => probe(),
        Some("proxy") => remote_proxy(),
        Some("--version" | "-V") => say(&format!("moatd {}", env!("CARGO_PKG_VERSION"))),
        Some(other) => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let _ = writeln!(io::stderr(), "moatd: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon itself: settings from `config.yaml`, then serve until shutdown.
fn run() -> Result<(), String> {
    init_tracing("info");
    let home = home()?;
    let global = config::load_global(&home).map_err(|e| e.to_string())?.config;
    let daemon_config = DaemonConfig::from_global(home, &global);
    let runtimes = Arc::new(SystemRuntimes::new(&global).map_err(|e| format!("configuring runtimes: {e}"))?);
    let runtime = async_runtime()?;
    let served = runtime.block_on(moat_daemon::run(daemon_config, runtimes));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    served.map_err(|e| e.to_string())
}

fn sweep() -> Result<(), String> {
    init_tracing("warn");
    let home = home()?;
    let mut input = String::new();
    io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("reading the sweep request: {e}"))?;
    let request: SweepRequest = serde_json::from_str(&input).map_err(|e| format!("the sweep request: {e}"))?;
    let report = async_runtime()?
        .block_on(standalone::sweep(&home, &request))
        .map_err(|e| match e.hint() {
            Some(hint) => format!("{e}\nhint: {hint}"),
            None => e.to_string(),
        })?;
    say(&serde_json::to_string(&report).map_err(|e| e.to_string())?)
}

fn probe() -> Result<(), String> {
    init_tracing("warn");
    let check = async_runtime()?.block_on(probe::check_docker());
    say(&serde_json::to_string(&check).map_err(|e| e.to_string())?)
}

/// The proxy in remote mode: binds, says where, serves until killed.
fn remote_proxy() -> Result<(), String> {
    init_tracing("info");
    let options = RemoteProxyOptions::from_args(std::env::args().skip(2)).map_err(|e| e.to_string())?;
    async_runtime()?.block_on(async {
        let bound = options.bind().await.map_err(|e| e.to_string())?;
        say(&format!("proxy listening on {}", bound.proxy_addr))?;
        say(&format!("control listening on {}", bound.control_addr))?;
        bound.serve().await.map_err(|e| e.to_string())
    })
}

fn home() -> Result<MoatHome, String> {
    MoatHome::from_env().map_err(|e| e.to_string())
}

fn async_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn say(line: &str) -> Result<(), String> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the answer: {e}"))
}

/// Diagnostics to stderr (`daemon.log` for the daemon), filtered by
/// `MOAT_LOG`, with timestamps.
fn init_tracing(default: &str) {
    let filter = env_vars::read(env_vars::MOAT_LOG).unwrap_or_else(|| default.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(io::stderr)
        .try_init();
}
