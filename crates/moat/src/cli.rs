//! Command-line arguments (clap types only; no logic). Commands, flags and
//! help follow cli.md; values that can be checked without side effects
//! (mounts, env pairs, host patterns) are checked here so that a bad flag is
//! a usage error (exit 2).

use std::path::PathBuf;

use crate::printer::Verbosity;
use clap::{Args, Parser, Subcommand};
use moat_core::RuntimeKind;
use moat_core::config::PolicyMode;
use moat_core::config::{self, HostRule, Mount};
use moat_core::env_vars;

/// Run AI coding agents (or any command) in isolated containers, with
/// credentials injected by a proxy so the agent never holds a real token.
#[derive(Debug, Parser)]
#[command(
    name = "moat",
    version,
    max_term_width = 100,
    after_help = "Runs are addressed by full id, id prefix (run_…) or name; without one, \
                  commands use the most recently created run.\n\
                  State lives in MOAT_HOME (default ~/.moat)."
)]
pub struct Cli {
    /// Credential profile to use.
    #[arg(
        long,
        global = true,
        env = env_vars::MOAT_PROFILE,
        hide_env_values = true,
        value_name = "NAME",
        display_order = 900
    )]
    pub profile: Option<String>,

    /// Print only warnings, errors and the command's data.
    #[arg(short, long, global = true, conflicts_with = "verbose", display_order = 901)]
    pub quiet: bool,

    /// Print more detail (moat's own diagnostics at info level; headers in
    /// `trace`).
    #[arg(short, long, global = true, display_order = 902)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    pub fn verbosity(&self) -> Verbosity {
        match (self.quiet, self.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, true) => Verbosity::Verbose,
            (false, false) => Verbosity::Normal,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new container with PATH mounted at /workspace.
    #[command(after_help = "Exits with the container's exit code. Flags override moat.yaml.\n\n\
                            Examples:\n  moat run -- npm test\n  moat run -g github ./project\n  \
                            moat run --dry-run --json")]
    Run(RunArgs),
    /// Run in a git worktree of this repository for BRANCH (made from HEAD when missing), or list or
    /// remove those worktrees.
    #[command(
        after_help = "Takes every `moat run` flag. The worktree is MOAT_HOME/worktrees/<repo>/<branch>; \
                            the container sees a working git repository (commits land on BRANCH), while \
                            the repository's config and hooks stay read-only.\n\n\
                            Examples:\n  moat wt feature-x -- claude\n  moat wt list\n  moat wt rm feature-x"
    )]
    Wt(WtArgs),
    /// Re-attach to a live run's output or terminal (the run goes on when you detach).
    Attach(AttachArgs),
    /// List runs, newest first.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show runtimes, live runs, disk used and health warnings.
    Status(StatusArgs),
    /// Print a run's output.
    Logs(LogsArgs),
    /// Stop a live run.
    Stop(StopArgs),
    /// Print the URL of a live run's endpoint (`ports:`) and open it in a browser when there is one.
    #[command(after_help = "Examples:\n  moat open my-app\n  moat open my-app api")]
    Open(OpenArgs),
    /// Delete a finished run's record (output, traces, audit log).
    #[command(visible_alias = "rm")]
    Destroy(DestroyArgs),
    /// Run a command inside a live run's container.
    Exec(ExecArgs),
    /// Start an agent in a live run's container, next to what runs there (a reviewer next to a
    /// coder); the grants and hosts it needs are added to the run once you approve them.
    #[command(
        after_help = "Interactive (with a terminal) unless -p is given; exits with the agent's exit code, and \
                      the run goes on. The run's image must have the agent's command (start it with the \
                      agent's dependency, e.g. `moat claude` or `dependencies: [claude-code]`). Grants added \
                      stay with the run until it ends.\n\n\
                      Examples:\n  moat join my-run codex\n  \
                      moat join my-run claude -p \"review the last commit\" --yes"
    )]
    Join(JoinArgs),
    /// List, compare and restore the workspace snapshots taken before runs.
    #[command(
        after_help = "Examples:\n  moat snapshot list my-run\n  moat snapshot diff my-run\n  \
                            moat snapshot restore my-run --force\n  moat snapshot restore my-run snap_0123456789ab --to /tmp/before"
    )]
    Snapshot(SnapshotArgs),
    /// Show the requests a run made through the proxy.
    Trace(TraceArgs),
    /// Verify and print a run's tamper-evident audit log, or export or verify a bundle.
    #[command(after_help = "Exits 1 when the log does not verify.\n\n\
                            Examples:\n  moat audit\n  moat audit my-run --export run.audit.json\n  \
                            moat audit key\n  moat audit verify run.audit.json --key ed25519:…")]
    Audit(AuditArgs),
    /// Propose network rules from what a run did.
    #[command(
        after_help = "Examples:\n  moat run --policy shadow -- ./agent\n  moat policy suggest > rules.yaml\n  \
                            moat trace --blocked"
    )]
    Policy(PolicyArgs),
    /// Write a moat.yaml guessed from the project's lock, toolchain and git files.
    #[command(after_help = "Examples:\n  moat init --dry-run\n  moat init ../app --yes")]
    Init(InitArgs),
    /// Store a credential for a provider, or list/show stored ones.
    Grant(GrantArgs),
    /// Delete a stored credential.
    Revoke(RevokeArgs),
    /// Remove finished runs' records and ask the daemon to reap orphans.
    Clean(CleanArgs),
    /// System-wide maintenance.
    System(SystemArgs),
    /// Diagnose the runtime, the daemon, the reaper and credentials.
    Doctor(DoctorArgs),
    /// Approve a workspace's moat.yaml: what it grants beyond moat's defaults.
    #[command(
        after_help = "A moat.yaml that asks for more than moat's defaults (mounts outside the \
                            workspace, secrets, grants, host ports) or more than was last approved \
                            must be approved before `moat run` uses it: the workspace is the agent's \
                            to write."
    )]
    Trust(TrustArgs),
    /// Manage the moat daemon (one per MOAT_HOME, started on demand).
    Daemon(DaemonArgs),
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  moat completions bash > ~/.local/share/bash-completion/completions/moat")]
    Completions(CompletionsArgs),
    /// Print moat's version.
    Version(VersionArgs),
    /// List the agents `moat <agent>` runs, and whether their grant is stored.
    Agents(AgentsArgs),
    /// `moat <agent>`: one subcommand per agent of the shipped registry,
    /// added by [`command`] (agents are data, so they are not variants).
    #[command(skip)]
    Agent(AgentCommand),
}

/// `moat claude …`, `moat codex …`: which agent, and its arguments.
#[derive(Debug)]
pub struct AgentCommand {
    pub name: String,
    pub args: AgentArgs,
}

/// The command tree, with one subcommand per agent of the shipped
/// registry (`moat claude`, `moat codex`, `moat gemini`).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut command = Cli::command();
    for (name, summary) in agent_names() {
        let about = format!("Run {summary} in a container (`moat run` with the agent's image, grant and hosts).");
        // After the arguments: their struct's doc comment would replace it.
        let agent = AgentArgs::augment_args(clap::Command::new(name))
            .about(about)
            .after_help(AGENT_HELP);
        command = command.subcommand(agent);
    }
    command
}

const AGENT_HELP: &str = "Interactive (with a terminal) unless -p is given; -p prints the agent's answer and \
                          exits with its exit code. Arguments after `--` go to the agent. `moat agents` lists \
                          the agents and their grants.\n\n\
                          Examples:\n  moat claude\n  moat claude ./project -p \"explain this repository\"\n  \
                          moat codex -- --model o4-mini";

/// Names and summaries of the agents (none if the shipped registry cannot
/// be read: `moat agents` then reports why).
fn agent_names() -> Vec<(String, String)> {
    moat_core::deps::Registry::shipped()
        .map(|registry| {
            registry
                .agents()
                .map(|(name, agent)| (name.to_string(), agent.summary.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Parses the process's arguments, agents' subcommands included.
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    let mut command = command();
    let matches = command.get_matches_mut();
    let parsed = match matches.subcommand() {
        Some((name, sub)) if agent_names().iter().any(|(agent, _)| agent == name) => AgentArgs::from_arg_matches(sub)
            .map(|args| Cli {
                profile: sub.get_one::<String>("profile").cloned(),
                quiet: sub.get_flag("quiet"),
                verbose: sub.get_flag("verbose"),
                command: Command::Agent(AgentCommand {
                    name: name.to_string(),
                    args,
                }),
            }),
        _ => Cli::from_arg_matches(&matches),
    };
    parsed.unwrap_or_else(|e| e.format(&mut command).exit())
}

/// A run reference: full id, id prefix (`run_…`) or name.
pub const RUN_HELP: &str = "Run id, id prefix (run_…) or name; defaults to the most recently created run";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Workspace directory, mounted at /workspace.
    #[arg(value_name = "PATH", default_value = ".")]
    pub path: PathBuf,

    /// Command and arguments (after `--`); default: `command:` from moat.yaml.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,

    #[command(flatten)]
    pub settings: RunSettings,

    /// Container runtime: docker, apple or kubernetes [default: auto-detect].
    #[arg(long, value_name = "RUNTIME", value_parser = str::parse::<RuntimeKind>)]
    pub runtime: Option<RuntimeKind>,

    /// Start the run and return; follow it with `moat logs -f` or `moat attach`.
    #[arg(short = 'd', long, conflicts_with = "interactive")]
    pub detach: bool,

    /// Keep stdin open and stream it to the command (EOF closes it).
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Give the command a terminal (implies -i): `moat run -it -- bash`.
    #[arg(short = 't', long, conflicts_with = "detach")]
    pub tty: bool,

    /// Show a status footer under an interactive run (not available yet).
    #[arg(long)]
    pub footer: bool,

    /// With --policy strict: refuse to start unless the daemon can close the
    /// host off from the container (iptables as root).
    #[arg(long)]
    pub require_isolation: bool,

    /// Allow mounting this path although it is dangerous (MOAT_HOME, the
    /// container runtime's socket, /, /etc, /proc, /sys, your home directory).
    #[arg(long = "allow-dangerous-mount", value_name = "PATH")]
    pub allow_dangerous_mounts: Vec<PathBuf>,
}

/// The flags `moat run` and `moat <agent>` share.
#[derive(Debug, Clone, Args)]
pub struct RunSettings {
    /// Inject a credential (repeatable; adds to moat.yaml's grants and an agent's own).
    #[arg(short = 'g', long = "grant", value_name = "PROVIDER")]
    pub grants: Vec<String>,

    /// Set an environment variable; KEY alone copies it from this shell (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    pub env: Vec<(String, Option<String>)>,

    /// Mount a host path: SRC:DST[:ro|rw] (repeatable).
    #[arg(short = 'm', long = "mount", value_name = "SRC:DST[:ro]", value_parser = config::parse_mount)]
    pub mounts: Vec<Mount>,

    /// Name the run (address it by name later).
    #[arg(short = 'n', long, value_name = "NAME")]
    pub name: Option<String>,

    /// Image to run, or to build the run's image on [default: debian:bookworm-slim].
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,

    /// Rebuild the image even if a cached one exists.
    #[arg(long)]
    pub rebuild: bool,

    /// Keep the container after it exits (for inspection).
    #[arg(long)]
    pub keep: bool,

    /// Network policy: strict (only allowed hosts and granted credentials' hosts), permissive, or
    /// shadow (permissive, recording in the trace and audit log what strict would have refused).
    #[arg(long, value_name = "POLICY", value_parser = str::parse::<PolicyMode>)]
    pub policy: Option<PolicyMode>,

    /// Also allow this host (pattern like *.example.com; repeatable).
    #[arg(long = "allow-host", value_name = "HOST", value_parser = parse_host_rule)]
    pub allow_hosts: Vec<HostRule>,

    /// Use this workspace's moat.yaml for this run even if it asks for more
    /// than was approved (nothing is recorded; see `moat trust`).
    #[arg(long)]
    pub trust: bool,

    /// Print how long each step took to stderr (also `MOAT_TIMINGS=1`).
    #[arg(long)]
    pub timings: bool,

    /// Load and check the configuration, print the resolved run, create nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// With --dry-run: print the resolved run as JSON.
    #[arg(long, requires = "dry_run")]
    pub json: bool,
}

/// `moat <agent> [PATH] [-p PROMPT] [-- ARGS]`: `moat run` of an agent.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Workspace directory, mounted at /workspace.
    #[arg(value_name = "PATH", default_value = ".")]
    pub path: PathBuf,

    /// Hand the agent one prompt; print its answer and exit with its code.
    #[arg(short = 'p', long, value_name = "PROMPT")]
    pub prompt: Option<String>,

    /// Arguments for the agent (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,

    #[command(flatten)]
    pub settings: RunSettings,
}

#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    // `moat run`'s PATH: the worktree is the workspace (any other is
    // refused). Changing an argument moves it last: the order is restated.
    mut_arg("path", |arg| arg.hide(true).index(2)),
    mut_arg("command", |arg| arg.index(3))
)]
pub struct WtArgs {
    #[command(subcommand)]
    pub action: Option<WtAction>,

    /// Branch to work on; created from HEAD when it does not exist.
    #[arg(value_name = "BRANCH", required = true, index = 1)]
    pub branch: Option<String>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum WtAction {
    /// List this repository's worktrees: branch, live run, dirty or clean, path.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a worktree (its branch and commits stay).
    Rm {
        #[arg(value_name = "BRANCH")]
        branch: String,
        /// Remove it even with uncommitted changes (they are lost).
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Run id, id prefix (run_…) or name.
    #[arg(value_name = "RUN")]
    pub run: String,

    /// Take the input of an interactive run from the client holding it
    /// (otherwise this client watches while another one types).
    #[arg(long)]
    pub take_input: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show every run, not only live runs and the most recent ones.
    #[arg(short, long)]
    pub all: bool,

    /// Print JSON (one array, snake_case keys) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[arg(value_name = "RUN", help = RUN_HELP)]
    pub run: Option<String>,

    /// Print only the last N lines.
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,

    /// Keep printing new output until the run ends.
    #[arg(short, long)]
    pub follow: bool,

    /// Prefix each line with its time (RFC 3339, UTC).
    #[arg(short, long)]
    pub timestamps: bool,

    /// Print records as JSON lines ({"ts","stream","line"}) on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct OpenArgs {
    #[arg(value_name = "RUN", help = RUN_HELP)]
    pub run: String,
    /// Endpoint name from the run's `ports:` (default: the first).
    #[arg(value_name = "ENDPOINT")]
    pub endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[arg(value_name = "RUN", help = RUN_HELP)]
    pub run: Option<String>,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    #[arg(value_name = "RUN", help = RUN_HELP)]
    pub run: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Run id, id prefix (run_…) or name.
    #[arg(value_name = "RUN")]
    pub run: String,

    /// Command and arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,

    /// Keep stdin open and stream it to the command (EOF closes it).
    #[arg(short, long)]
    pub interactive: bool,

    /// Give the command a terminal (implies -i): `moat exec -it RUN -- bash`.
    #[arg(short = 't', long)]
    pub tty: bool,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Run id, id prefix (run_…) or name.
    #[arg(value_name = "RUN")]
    pub run: String,

    /// The agent to start (`moat agents` lists them).
    #[arg(value_name = "AGENT")]
    pub agent: String,

    /// Hand the agent one prompt; print its answer and exit with its code.
    #[arg(short = 'p', long, value_name = "PROMPT")]
    pub prompt: Option<String>,

    /// Add the grants and hosts the agent needs without asking.
    #[arg(short = 'y', long)]
    pub yes: bool,

    /// Arguments for the agent (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[arg(value_name = "RUN", help = RUN_HELP)]
    pub run: Option<String>,

    /// Show proxied network requests (the default and only trace for now).
    #[arg(long)]
    pub network: bool,

    /// Print JSON lines instead of a table.
    #[arg(long, conflicts_with = "har")]
    pub json: bool,

    /// Write the requests as an HTTP Archive to FILE.
    #[arg(long, value_name = "FILE")]
    pub har: Option<PathBuf>,

    /// Only requests that were refused, or that a shadow run let through but
    /// strict would have refused.
    #[arg(long)]
    pub blocked: bool,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub action: PolicyAction,
}

#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Print the narrowest network.rules that would have allowed exactly what a run did, as a
    /// moat.yaml snippet.
    #[command(
        after_help = "Varying identifiers in paths (numbers, UUIDs, hashes, long tokens) become `*`; \
                            everything else stays literal. See docs/policy.md."
    )]
    Suggest {
        #[arg(value_name = "RUN", help = RUN_HELP)]
        run: Option<String>,
        /// Print JSON (the rules in moat.yaml's shape, with counts) instead of YAML.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub action: Option<AuditAction>,

    #[arg(value_name = "RUN", help = RUN_HELP)]
    pub run: Option<String>,

    /// Also write a self-contained bundle (entries, signed head) to FILE.
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Print this MOAT_HOME's audit public key (pin it where bundles are verified).
    Key,
    /// Verify an exported bundle against a public key you trust.
    #[command(group(clap::ArgGroup::new("trusted_key").required(true).args(["key", "key_file", "trust_embedded_key"])))]
    Verify {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The signer's public key (ed25519:<hex>, from `moat audit key`).
        #[arg(long, value_name = "PUBKEY")]
        key: Option<String>,
        /// A file holding the signer's public key.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Check against the key inside the bundle (proves nothing about who wrote it).
        #[arg(long)]
        trust_embedded_key: bool,
    },
}

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  moat grant github\n  echo \"$TOKEN\" | moat grant anthropic\n  \
                  moat grant mytool --host api.example.com --header X-Api-Key\n  \
                  moat grant ssh --host github.com --key ~/.ssh/id_ed25519.pub\n  \
                  echo \"$NPM_TOKEN\" | moat grant npm --registry https://npm.example.com/\n  \
                  moat grant oauth corp --issuer https://auth.corp.example --client-id moat --host api.corp.example\n  \
                  moat grant aws --role-arn arn:aws:iam::123456789012:role/agent --aws-profile work"
)]
pub struct GrantArgs {
    #[command(subcommand)]
    pub action: Option<GrantAction>,

    /// Provider to store a credential for: github, anthropic, claude, openai, gemini, one defined
    /// in MOAT_HOME/providers/, or a new name with --host.
    #[arg(value_name = "PROVIDER", required = true)]
    pub provider: Option<String>,

    /// Define PROVIDER as a provider for this one host (pattern like *.example.com, or
    /// host:port): the credential goes into --header of requests to it. With ssh: the host the
    /// key is granted for, as ssh names it (github.com, [git.example.com]:2222).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,

    /// With ssh: the key, as a public key file whose private half your ssh-agent holds, or
    /// `agent` for the agent's only key [default: agent]. moat never reads a private key.
    #[arg(long, value_name = "PATH|agent")]
    pub key: Option<String>,

    /// With ssh: a known_hosts line for --host (repeatable) [default: collected with
    /// ssh-keyscan now].
    #[arg(long = "known-hosts", value_name = "LINE")]
    pub known_hosts: Vec<String>,

    /// With npm: the registry the token is for [default: https://registry.npmjs.org/].
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,

    /// With aws: the IAM role runs get short-lived credentials for (15 minutes, renewed).
    #[arg(long, value_name = "ARN")]
    pub role_arn: Option<String>,

    /// With aws: take the host's keys from this profile of ~/.aws/credentials
    /// (AWS_SHARED_CREDENTIALS_FILE) [default: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else
    /// the AWS_PROFILE or default profile]. (`--profile` is moat's own credential profile.)
    #[arg(long, value_name = "NAME")]
    pub aws_profile: Option<String>,

    /// With aws: the region runs use and STS is signed for [default: AWS_REGION, else
    /// us-east-1].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// With aws: the STS endpoint, https:// [default: https://sts.REGION.amazonaws.com/].
    #[arg(long, value_name = "URL")]
    pub sts_endpoint: Option<String>,

    /// With --host: the header that carries the credential [default: Authorization].
    #[arg(long, value_name = "NAME", requires = "host")]
    pub header: Option<String>,

    /// With --host: text before the credential in the header's value [default: "Bearer " for
    /// Authorization, nothing otherwise].
    #[arg(long, value_name = "TEXT", requires = "host")]
    pub prefix: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum GrantAction {
    /// List stored credentials (never their values).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one stored credential's metadata (never its value).
    Show {
        #[arg(value_name = "PROVIDER")]
        provider: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Authorize moat with an OAuth issuer (browser with PKCE, or the device flow) and keep the
    /// token, refreshed by the daemon before it expires, for requests to --host.
    #[command(after_help = "Examples:\n  \
                            moat grant oauth corp --issuer https://auth.corp.example --client-id moat --host api.corp.example\n  \
                            moat grant oauth corp --issuer https://auth.corp.example --client-id moat --host api.corp.example \
                            --scopes api.read api.write --device")]
    Oauth(OauthGrantArgs),
    /// Store the token of one remote MCP server (as grant mcp-NAME, injected on
    /// requests to the URL's host); name it in moat.yaml's mcp: entries.
    #[command(after_help = "Example:\n  echo \"$TOKEN\" | moat grant mcp docs --url https://mcp.example.com/mcp")]
    Mcp {
        /// The server's name (lowercase letters, digits, '-' and '_').
        #[arg(value_name = "NAME")]
        name: String,
        /// The server's https:// URL; the token goes to its host (and port) only.
        #[arg(long, value_name = "URL")]
        url: String,
        /// The header that carries the token [default: Authorization].
        #[arg(long, value_name = "NAME")]
        header: Option<String>,
        /// Text before the token in the header's value [default: "Bearer " for
        /// Authorization, nothing otherwise].
        #[arg(long, value_name = "TEXT")]
        prefix: Option<String>,
    },
}

/// `moat grant oauth NAME`.
#[derive(Debug, Args)]
pub struct OauthGrantArgs {
    /// The grant's name (a provider for --host is defined under it).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The issuer's URL (https://, or http:// on a loopback address); its endpoints are discovered
    /// from /.well-known/oauth-authorization-server or openid-configuration unless given below.
    #[arg(long, value_name = "URL")]
    pub issuer: String,
    /// The OAuth client id moat uses (a public client: no secret).
    #[arg(long = "client-id", value_name = "ID")]
    pub client_id: String,
    /// Scopes to ask for, separated by spaces or commas (repeatable).
    #[arg(long, value_name = "SCOPES", num_args = 1..)]
    pub scopes: Vec<String>,
    /// The host (pattern like *.example.com, or host:port) whose HTTPS requests get
    /// `Authorization: Bearer <access token>`.
    #[arg(long, value_name = "HOST")]
    pub host: String,
    /// Use the device flow (a code to enter on another device) instead of a browser.
    #[arg(long)]
    pub device: bool,
    /// The authorization endpoint [default: discovered].
    #[arg(long = "auth-url", value_name = "URL")]
    pub auth_url: Option<String>,
    /// The token endpoint [default: discovered].
    #[arg(long = "token-url", value_name = "URL")]
    pub token_url: Option<String>,
    /// The device authorization endpoint [default: discovered].
    #[arg(long = "device-url", value_name = "URL")]
    pub device_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The project directory [default: the current directory].
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,

    /// Replace an existing moat.yaml.
    #[arg(long)]
    pub force: bool,

    /// Write without asking (the guess is printed all the same).
    #[arg(short, long)]
    pub yes: bool,

    /// Print the guess; write nothing.
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[arg(value_name = "PROVIDER")]
    pub provider: String,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,

    /// Print what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List the snapshots of a run's workspace, newest first.
    List(SnapshotListArgs),
    /// Show the paths added, removed and modified in the workspace since a snapshot.
    Diff(SnapshotDiffArgs),
    /// Put the workspace (or another directory) back as a snapshot recorded it.
    Restore(SnapshotRestoreArgs),
}

#[derive(Debug, Args)]
pub struct SnapshotListArgs {
    #[arg(value_name = "RUN", help = RUN_HELP)]
    pub run: Option<String>,

    /// Print JSON (one array, snake_case keys) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotDiffArgs {
    /// Run id, id prefix (run_…) or name.
    #[arg(value_name = "RUN")]
    pub run: String,

    /// Snapshot id [default: the one taken before RUN started].
    #[arg(value_name = "ID")]
    pub id: Option<String>,

    /// Print JSON (one array, snake_case keys) instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotRestoreArgs {
    /// Run id, id prefix (run_…) or name.
    #[arg(value_name = "RUN")]
    pub run: String,

    /// Snapshot id [default: the one taken before RUN started].
    #[arg(value_name = "ID")]
    pub id: Option<String>,

    /// Restore into this directory (new or empty) instead of the workspace.
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,

    /// Overwrite the workspace even where it differs from its newest snapshot
    /// (the workspace is snapshotted first, so this can be undone).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SystemArgs {
    #[command(subcommand)]
    pub command: SystemCommand,
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Ask the daemon to sweep orphaned containers, networks and volumes now.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only networks.
    #[arg(long)]
    pub networks: bool,

    /// Only containers.
    #[arg(long)]
    pub containers: bool,

    /// Only volumes.
    #[arg(long)]
    pub volumes: bool,

    /// Report what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Remove orphans at once instead of on their second sighting (live runs are never touched).
    #[arg(long)]
    pub force: bool,

    /// Also remove what moat's earlier Go implementation left behind (`moat.managed=true` or `moat-` names without
    /// `dev.moat.*` labels), which sweeps never touch: running containers are stopped first.
    #[arg(long)]
    pub legacy: bool,

    /// Remove the images moat built from `dependencies:` (moat/run:*) that no live run uses and no run used
    /// within --older-than days (instead of sweeping orphans).
    #[arg(long, conflicts_with_all = ["networks", "containers", "volumes", "force", "legacy"])]
    pub images: bool,

    /// With --images: the days an image must have gone unused [default: 30].
    #[arg(long, value_name = "DAYS", requires = "images")]
    pub older_than: Option<u32>,
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Workspace whose moat.yaml (or agent.yaml) to approve.
    #[arg(value_name = "PATH", default_value = ".")]
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[command(subcommand)]
    pub command: DaemonCommand,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Show whether the daemon runs, its pid, socket, uptime and live runs.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop the daemon (live runs keep running; they are adopted on restart).
    Stop,
    /// Stop the daemon and start a new one.
    Restart,
    /// Run the daemon in the foreground (this process becomes `moatd run`).
    #[command(hide = true)]
    Run,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_env_pair(text: &str) -> Result<(String, Option<String>), String> {
    let (key, value) = match text.split_once('=') {
        Some((key, value)) => (key, Some(value.to_string())),
        None => (text, None),
    };
    let valid = key.chars().next().is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && key.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
    if !valid {
        return Err(format!("{key:?} is not a valid environment variable name"));
    }
    Ok((key.to_string(), value))
}

fn parse_host_rule(text: &str) -> Result<HostRule, String> {
    Ok(HostRule {
        host: config::check_host_pattern(text)?,
        requests: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
        command().debug_assert();
    }

    #[test]
    fn every_agent_is_a_subcommand_with_its_arguments() {
        let matches = command()
            .try_get_matches_from(["moat", "claude", "ws", "-p", "hi", "--", "--model", "x"])
            .unwrap();
        let (name, sub) = matches.subcommand().unwrap();
        assert_eq!(name, "claude");
        let args = <AgentArgs as clap::FromArgMatches>::from_arg_matches(sub).unwrap();
        assert_eq!(args.path, PathBuf::from("ws"));
        assert_eq!(args.prompt.as_deref(), Some("hi"));
        assert_eq!(args.args, ["--model", "x"]);
        for agent in ["codex", "gemini"] {
            assert!(command().try_get_matches_from(["moat", agent]).is_ok(), "{agent}");
        }
    }

    #[test]
    fn an_agents_help_opens_with_its_own_summary_and_takes_the_run_flags() {
        let mut tree = command();
        let claude = tree.find_subcommand_mut("claude").unwrap();
        let about = claude.get_about().unwrap().to_string();
        assert!(
            about.starts_with("Run Anthropic's Claude Code in a container"),
            "{about}"
        );
        let matches = command()
            .try_get_matches_from([
                "moat",
                "claude",
                "-g",
                "npm",
                "--policy",
                "strict",
                "--dry-run",
                "--json",
            ])
            .unwrap();
        let args = <AgentArgs as clap::FromArgMatches>::from_arg_matches(matches.subcommand().unwrap().1).unwrap();
        assert_eq!(args.settings.grants, ["npm"]);
        assert_eq!(args.settings.policy, Some(PolicyMode::Strict));
        assert!(args.settings.dry_run && args.settings.json);
    }

    #[test]
    fn join_takes_a_run_an_agent_a_prompt_and_the_agents_arguments() {
        let cli = Cli::try_parse_from([
            "moat", "join", "my-run", "codex", "-p", "review", "-y", "--", "--model", "x",
        ])
        .unwrap();
        let Command::Join(args) = cli.command else {
            panic!("not join")
        };
        assert_eq!((args.run.as_str(), args.agent.as_str()), ("my-run", "codex"));
        assert_eq!(args.prompt.as_deref(), Some("review"));
        assert!(args.yes);
        assert_eq!(args.args, ["--model", "x"]);
        let cli = Cli::try_parse_from(["moat", "join", "my-run", "claude"]).unwrap();
        let Command::Join(args) = cli.command else {
            panic!("not join")
        };
        assert!(!args.yes && args.prompt.is_none() && args.args.is_empty());
        assert!(
            Cli::try_parse_from(["moat", "join", "my-run"]).is_err(),
            "the agent is required"
        );
    }

    #[test]
    fn wt_takes_a_branch_run_flags_and_a_command() {
        let cli = Cli::try_parse_from(["moat", "wt", "feature", "-g", "github", "--", "sh", "-c", "x"]).unwrap();
        let Command::Wt(args) = cli.command else {
            panic!("not wt")
        };
        assert_eq!(args.branch.as_deref(), Some("feature"));
        assert_eq!(args.run.settings.grants, ["github"]);
        assert_eq!(args.run.command, ["sh", "-c", "x"]);
        assert_eq!(args.run.path, PathBuf::from("."));
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env_pair("A=b=c"), Ok(("A".into(), Some("b=c".into()))));
        assert_eq!(parse_env_pair("HOME"), Ok(("HOME".into(), None)));
        assert!(parse_env_pair("1A=x").is_err());
        assert!(parse_env_pair("=x").is_err());
    }

    #[test]
    fn policy_and_runtime_parse_into_the_core_types() {
        let cli = Cli::try_parse_from(["moat", "run", "--policy", "shadow", "--runtime", "apple"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not a run")
        };
        assert_eq!(args.settings.policy, Some(PolicyMode::Shadow));
        assert_eq!(args.runtime, Some(RuntimeKind::Apple));
        let err = Cli::try_parse_from(["moat", "run", "--policy", "lax"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected \"strict\", \"permissive\" or \"shadow\""),
            "{err}"
        );
    }
}
