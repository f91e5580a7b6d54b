//! Starting a resolved run: pick the runtime, make sure a local base image
//! exists (built with progress when it is moat's own), resolve `secrets:`
//! on the host, turn everything into the daemon's `RunSpec`, create the run
//! through the daemon (relaying its progress lines and notices to stderr),
//! then follow it (or print its id with `-d`).

use std::time::Duration;

use anyhow::{Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use moat_api::PROXY_VARIABLES;
use moat_api::{RunSpec, SecretEnv};
use moat_core::config::NetworkPolicy;
use moat_runtime::apple::{AppleOptions, AppleRuntime};
use moat_runtime::base_image::{
    BaseImageProgress, BaseImageRecipe, BaseImageReporter, DEFAULT_LOCAL_BASE_IMAGE, ensure_base_image,
};
use moat_runtime::docker::{DockerOptions, DockerRuntime};
use moat_runtime::select::{Probe, SelectionInput, select_runtime};
use moat_runtime::{Runtime, RuntimeKind, Timeouts};

use crate::context::{Context, ExitStatus};
use crate::live;
use crate::printer::Printer;
use crate::report::CliError;
use crate::resolve::ResolvedRun;

/// Creates the run through the daemon and follows it to its end.
pub fn start(ctx: &Context, run: ResolvedRun) -> Result<ExitStatus> {
    if run.interactive {
        return Err(
            CliError::new("interactive runs (-i, `interactive: true`) are not available yet")
                .with_hint("run the command non-interactively, or follow its output with `moat attach`")
                .into(),
        );
    }
    let unsupported = run.unsupported();
    if !unsupported.is_empty() {
        return Err(CliError::new(format!(
            "this version of moat cannot act on {} yet; refusing to run without {}",
            unsupported.join(", "),
            if unsupported.len() == 1 { "it" } else { "them" }
        ))
        .with_hint("remove them from moat.yaml (or drop the flag) to run; `moat run --dry-run` shows the resolved run")
        .into());
    }
    let home = ctx.home()?;
    let mut clock = Stopwatch::new(run.timings, ctx.printer.clone());
    live::block_on(async {
        let runtime = choose_runtime(&run).await?;
        clock.lap("runtime probe");
        if runtime == RuntimeKind::Docker && run.image == DEFAULT_LOCAL_BASE_IMAGE {
            build_local_base_image(&ctx.printer).await?;
            clock.lap("base image check");
        }
        let spec = run_spec(ctx, &run, runtime)?;
        ctx.printer.detail(format!(
            "moat: {} run of {} on {runtime}, policy {}, grants [{}]",
            if spec.keep { "kept" } else { "throwaway" },
            spec.image,
            spec.policy.mode.as_str(),
            spec.grants.join(", ")
        ));
        let client = live::daemon(&home).await?;
        clock.lap("daemon connect/spawn");
        // The daemon's progress lines (e.g. while it sweeps orphans to make
        // room for the run's network) and notices go to stderr.
        let say = |message: &str| ctx.printer.status(format!("moat: {message}"));
        let created = match client.create_run_with_progress(&spec, say).await {
            // The daemon decided to exit while we asked: ask its successor.
            Err(e) if e.is_shutting_down() => live::daemon(&home).await?.create_run_with_progress(&spec, say).await,
            other => other,
        }
        .map_err(live::client_error)?;
        clock.lap("create request (round trip)");
        for step in &created.timings {
            clock.say(&format!("  daemon: {}", step.step), step.ms);
        }
        for notice in &created.notices {
            say(notice);
        }
        if run.detach {
            ctx.printer.data(&created.run_id)?;
            clock.total();
            return Ok(ExitStatus::Success);
        }
        ctx.printer
            .status(format!("{} started (Ctrl-C stops it)", created.run_id));
        let mut first_output = None;
        let status = live::follow_observed(&client, &created.run_id, &ctx.printer, true, &mut || {
            first_output.get_or_insert_with(std::time::Instant::now);
        })
        .await;
        if let Some(at) = first_output {
            clock.lap_at("first output", at);
        }
        clock.lap("exit");
        clock.total();
        status
    })
}

/// `--timings`: each step's duration on stderr, as it ends.
struct Stopwatch {
    enabled: bool,
    printer: Printer,
    started: std::time::Instant,
    last: std::time::Instant,
}

impl Stopwatch {
    fn new(enabled: bool, printer: Printer) -> Self {
        let now = std::time::Instant::now();
        Stopwatch {
            enabled,
            printer,
            started: now,
            last: now,
        }
    }

    fn lap(&mut self, step: &str) {
        self.lap_at(step, std::time::Instant::now());
    }

    fn lap_at(&mut self, step: &str, at: std::time::Instant) {
        let ms = at.saturating_duration_since(self.last).as_secs_f64() * 1000.0;
        self.last = at;
        self.say(step, ms);
    }

    fn say(&self, step: &str, ms: f64) {
        if self.enabled {
            self.printer.requested(format!("moat: timing: {step:<36} {ms:>8.1} ms"));
        }
    }

    fn total(&self) {
        self.say("total", self.started.elapsed().as_secs_f64() * 1000.0);
    }
}

/// The resolved runtime, or the detected one (runtime.md, "Selection").
async fn choose_runtime(run: &ResolvedRun) -> Result<RuntimeKind> {
    let docker = match DockerRuntime::new(DockerOptions {
        timeouts: probe_timeouts(),
        ..DockerOptions::default()
    }) {
        Ok(docker) => match docker.ping().await {
            Ok(()) => Probe::Available,
            Err(e) => Probe::Unavailable(e.to_string()),
        },
        Err(e) => Probe::Unavailable(e.to_string()),
    };
    // Selection itself refuses Apple off macOS/arm64, without a probe.
    let apple = if cfg!(all(target_os = "macos", target_arch = "aarch64")) {
        AppleRuntime::probe(AppleOptions {
            timeouts: probe_timeouts(),
            ..AppleOptions::default()
        })
        .await
    } else {
        Probe::Unavailable("Apple containers need macOS 26 on Apple silicon".into())
    };
    let input = SelectionInput {
        flag: run.runtime.map(|kind| kind.as_str()),
        config: None,
        env: None,
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
        docker,
        apple,
    };
    select_runtime(&input).map_err(|e| {
        CliError::new(e.to_string())
            .with_hint("start Docker (`systemctl start docker`), or check `moat doctor`")
            .into()
    })
}

fn probe_timeouts() -> Timeouts {
    let quick = Duration::from_secs(5);
    Timeouts {
        call: quick,
        network_create: quick,
        list: quick,
        remove: quick,
        exec: quick,
    }
}

/// Builds moat's local base image from Debian packages when it is missing
/// (no registry needed), with a spinner on a terminal.
async fn build_local_base_image(printer: &Printer) -> Result<()> {
    let docker = DockerRuntime::new(DockerOptions::default()).context("connecting to Docker")?;
    let reporter = SpinnerReporter::new(printer.clone());
    let recipe = BaseImageRecipe::bookworm(DEFAULT_LOCAL_BASE_IMAGE);
    let outcome = ensure_base_image(&docker, &recipe, &reporter).await;
    reporter.finish();
    outcome.map(|_| ()).map_err(|e| {
        CliError::new(format!(
            "cannot build the local base image {DEFAULT_LOCAL_BASE_IMAGE}: {e}"
        ))
        .with_hint("run `scripts/setup.sh`, or pass --image with an image you have")
        .into()
    })
}

/// Shows base-image build progress (a spinner on a terminal, plain lines
/// otherwise).
struct SpinnerReporter {
    bar: ProgressBar,
    printer: Printer,
}

impl SpinnerReporter {
    fn new(printer: Printer) -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        SpinnerReporter { bar, printer }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl BaseImageReporter for SpinnerReporter {
    fn on_progress(&self, progress: BaseImageProgress) {
        let line = match progress {
            BaseImageProgress::Bootstrapping { suite, mirror } => {
                format!("building the local base image {DEFAULT_LOCAL_BASE_IMAGE} (Debian {suite} from {mirror})")
            }
            BaseImageProgress::BootstrapLine(line) => line,
            BaseImageProgress::Importing { tag } => format!("importing {tag}"),
            BaseImageProgress::Ready { tag, elapsed } => format!("{tag} is ready ({elapsed:.0?})"),
        };
        if self.bar.is_hidden() {
            self.printer.status(line);
        } else {
            self.bar.set_message(line);
        }
    }
}

/// The daemon's view of the run: no secret value leaves the host except
/// inside the container's environment, and moat's proxy variables win.
fn run_spec(ctx: &Context, run: &ResolvedRun, runtime: RuntimeKind) -> Result<RunSpec> {
    let mut env: Vec<(String, String)> = Vec::new();
    for (key, value) in &run.env {
        if PROXY_VARIABLES.contains(&key.as_str()) {
            ctx.printer
                .warning(format!("{key} is ignored: moat sets the proxy variables itself"));
            continue;
        }
        env.push((key.clone(), value.clone()));
    }
    let mut secrets = SecretEnv::default();
    for (name, reference) in &run.secrets {
        let value = moat_creds::resolve_secret(&reference.to_string()).with_context(|| format!("secrets.{name}"))?;
        secrets.0.push((name.clone(), value));
    }
    let secret_names = secrets.0.iter().map(|(name, _)| name.clone()).collect();
    let mut mounts: Vec<moat_core::BindMount> = run
        .mounts
        .iter()
        .filter(|m| !(m.target == "/workspace" && m.source == run.workspace))
        .map(|m| moat_core::BindMount {
            source: m.source.display().to_string(),
            target: m.target.clone(),
            read_only: m.read_only,
        })
        .collect();
    mounts.extend(crate::exclude::masks(&ctx.home()?, &run.mounts)?);
    Ok(RunSpec {
        name: run.name.clone(),
        workspace: run.workspace.clone(),
        image: run.image.clone(),
        command: run.command.clone(),
        env,
        mounts,
        runtime: runtime.as_str().to_string(),
        keep: run.keep,
        interactive: run.interactive,
        memory_bytes: run.container.memory.map(|mb| (mb as i64).saturating_mul(1024 * 1024)),
        cpus: run.container.cpus,
        dns: run.container.dns.iter().map(|ip| ip.to_string()).collect(),
        grants: run.grants.clone(),
        secret_names,
        secrets,
        labels: fault_label(),
        policy: NetworkPolicy::from(&run.network),
        host_ports: run.network.host.clone(),
        require_isolation: run.require_isolation,
        profile: run.profile.clone(),
    })
}

/// In debug builds, `MOAT_FAULT` asks the daemon to crash or pause at a
/// step of this run's creation (fault-injection tests).
fn fault_label() -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::new();
    if cfg!(debug_assertions)
        && let Ok(fault) = std::env::var(moat_api::fault::ENV)
    {
        labels.insert(moat_api::fault::LABEL.to_string(), fault);
    }
    labels
}
