//! Starting a resolved run: resolve `secrets:` on the host, turn
//! everything into the daemon's `RunSpec`, create the run through the
//! daemon (which picks the runtime when none is named and builds moat's
//! local base image when it is missing; its progress lines and notices are
//! relayed to stderr), then follow it (or print its id with `-d`).

use anyhow::{Context as _, Result};
use moat_api::PROXY_VARIABLES;
use moat_api::terminal::Open;
use moat_api::{RunSpec, SecretEnv};
use moat_core::TerminalSize;
use moat_core::config::NetworkPolicy;
use moat_core::env_vars;

use crate::context::{Context, ExitStatus};
use crate::live;
use crate::printer::Printer;
use crate::report::CliError;
use crate::resolve::ResolvedRun;

/// Creates the run through the daemon and follows it to its end.
pub fn start(ctx: &Context, run: ResolvedRun) -> Result<ExitStatus> {
    let terminal = terminal_size(&run)?;
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
    check_dependencies(&run)?;
    let home = ctx.home()?;
    let mut clock = Stopwatch::new(run.timings, ctx.printer.clone());
    live::block_on(async {
        let mut spec = run_spec(ctx, &run)?;
        spec.terminal = terminal;
        ctx.printer.detail(format!(
            "moat: {} run of {} on {}, policy {}, grants [{}]",
            if spec.keep { "kept" } else { "throwaway" },
            spec.image,
            if spec.runtime.is_empty() {
                "the detected runtime"
            } else {
                &spec.runtime
            },
            spec.policy.mode.as_str(),
            spec.grants.join(", ")
        ));
        let client = live::daemon(&home).await?;
        clock.lap("daemon connect/spawn");
        // The daemon's progress lines (e.g. while it sweeps orphans to make
        // room for the run's network) and notices go to stderr.
        let progress = ctx.printer.progress();
        let say = |message: &str| progress.say(message);
        let created = match client.create_run_with_progress(&spec, say).await {
            // The daemon decided to exit while we asked: ask its successor.
            Err(e) if e.is_shutting_down() => live::daemon(&home).await?.create_run_with_progress(&spec, say).await,
            other => other,
        }
        .map_err(live::client_error)?;
        drop(progress);
        let say = |message: &str| ctx.printer.status(format!("moat: {message}"));
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
        if run.interactive {
            let options = crate::tty::SessionOptions {
                tty: terminal.is_some(),
                stop_on_interrupt: true,
                escape_key: run.escape_key,
            };
            let open = Open::Attach {
                take_input: true,
                watch: false,
                size: terminal,
            };
            let io = client
                .terminal(&created.run_id, &open)
                .await
                .map_err(live::client_error)?;
            let status = crate::tty::run(&client, &created.run_id, io, &ctx.printer, options).await;
            clock.lap("exit");
            return status;
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

/// The size of the run's TTY (`-t`, or `interactive: true` on a terminal),
/// taken now so the program starts at the client's size; `None` without a
/// TTY. A TTY needs a terminal on stdin.
fn terminal_size(run: &ResolvedRun) -> Result<Option<TerminalSize>> {
    use std::io::IsTerminal;
    if !run.tty {
        return Ok(None);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::new("-t needs a terminal on stdin, and stdin is not one")
            .with_hint("drop -t to stream stdin to the command: `... | moat run -i -- CMD`")
            .into());
    }
    Ok(Some(
        crate::tty::raw::size().unwrap_or(moat_core::TerminalSize::DEFAULT),
    ))
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

/// The daemon's view of the run: no secret value leaves the host except
/// inside the container's environment, and moat's proxy variables win.
fn run_spec(ctx: &Context, run: &ResolvedRun) -> Result<RunSpec> {
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
        // Empty: the daemon detects it.
        runtime: run.runtime.map(|kind| kind.as_str().to_string()).unwrap_or_default(),
        kubernetes: run.kubernetes.clone(),
        keep: run.keep,
        interactive: run.interactive,
        terminal: None,
        memory_bytes: run.container.memory.map(|mb| (mb as i64).saturating_mul(1024 * 1024)),
        cpus: run.container.cpus,
        ports: run.ports.clone(),
        ulimits: run.container.ulimits.clone(),
        pids_limit: run.container.pids_limit,
        dns: run.container.dns.iter().map(|ip| ip.to_string()).collect(),
        grants: run.grants.clone(),
        secret_names,
        secrets,
        labels: fault_label(),
        policy: NetworkPolicy::from(&run.network),
        host_ports: run.network.host.clone(),
        require_isolation: run.require_isolation,
        profile: run.profile.clone(),
        dependencies: run.dependencies.clone(),
        services: run.services.clone(),
        rebuild: run.rebuild,
        user: run.container.user.clone(),
        post_build_root: run.hooks.post_build_root.clone(),
        post_build: run.hooks.post_build.clone(),
        home_files: run.home_files.clone(),
        snapshot: snapshot_spec(&run.snapshots)?,
        mcp: run.mcp.clone(),
    })
}

/// The pre-run snapshot `snapshots:` asks for; `None` when it is off.
fn snapshot_spec(config: &moat_core::config::SnapshotConfig) -> Result<Option<moat_api::SnapshotSpec>> {
    if config.disabled || config.triggers.disable_pre_run {
        return Ok(None);
    }
    let rules = moat_core::snapshot::Rules {
        gitignore: !config.exclude.ignore_gitignore,
        additional: config.exclude.additional.clone(),
    };
    rules.check().map_err(|e| CliError::new(e.to_string()))?;
    let max_count = match config.retention.max_count {
        0 => moat_core::snapshot::DEFAULT_MAX_COUNT,
        n => n,
    };
    Ok(Some(moat_api::SnapshotSpec {
        rules,
        max_count,
        delete_initial: config.retention.delete_initial,
    }))
}

/// Refuses `dependencies:` that cannot become an image (unknown names,
/// versions moat cannot install) before anything is asked of the daemon,
/// and `--rebuild` with nothing to rebuild.
pub fn check_dependencies(run: &ResolvedRun) -> Result<()> {
    let has_build_hooks = run.hooks.post_build_root.is_some() || run.hooks.post_build.is_some();
    if run.dependencies.is_empty() {
        if run.rebuild && !has_build_hooks && run.services.is_empty() {
            return Err(CliError::new(
                "--rebuild rebuilds the images of `dependencies:`, build hooks and services, and this run has none",
            )
            .with_hint("add `dependencies:` or `hooks.post_build` to moat.yaml, or drop --rebuild")
            .into());
        }
        return Ok(());
    }
    moat_core::deps::plan_image(&run.image, &run.dependencies, None).map_err(|e| {
        CliError::new(format!("dependencies: {e}")).with_hint("docs/dependencies.md lists what `dependencies:` accepts")
    })?;
    Ok(())
}

/// In debug builds, `MOAT_FAULT` asks the daemon to crash or pause at a
/// step of this run's creation (fault-injection tests).
fn fault_label() -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::new();
    if cfg!(debug_assertions)
        && let Some(fault) = env_vars::read(env_vars::MOAT_FAULT)
    {
        labels.insert(moat_api::fault::LABEL.to_string(), fault);
    }
    labels
}
