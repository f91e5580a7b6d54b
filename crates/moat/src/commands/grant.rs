//! `moat grant PROVIDER` stores a credential (from the provider's usual
//! sources, a prompt, or standard input), validated against the provider's
//! API when the network allows; `moat grant list|show` print stored
//! credentials with the token redacted to its last four characters.
//! `moat grant NAME --host HOST` first defines NAME as a provider for that
//! one host (moat-creds' `host_provider`); `moat grant mcp NAME --url URL`
//! does so as `mcp-NAME` for the host of one MCP server, and `moat grant
//! npm` defines npm for its registry that way. `moat grant ssh` lives in
//! `grant_ssh.rs`, `moat grant oauth` in `grant_oauth.rs`, `moat grant aws` in
//! `grant_aws.rs`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context as _, Result};
use moat_core::config;
use moat_creds::aws::AWS_GRANT;
use moat_creds::npm::{self, NPM_GRANT, Registry};
use moat_creds::ssh::SSH_GRANT;
use moat_creds::{
    CredentialStore, CredentialSummary, HostProvider, Provider, Providers, TokenPrompt, ValidationOptions,
    ValidationOutcome,
};

use crate::cli::{GrantAction, GrantArgs};
use crate::commands::{grant_aws, grant_oauth, grant_ssh};
use crate::context::{Context, ExitStatus};
use crate::live;
use crate::printer::Printer;
use crate::report::CliError;

/// The grant of MCP server NAME is `mcp-NAME`.
const MCP_GRANT_PREFIX: &str = "mcp-";
/// Bound on validating a grant against the provider's API.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);

pub fn grant(ctx: &Context, args: &GrantArgs) -> Result<ExitStatus> {
    let home = ctx.home()?;
    check_flags(args)?;
    let store = CredentialStore::open(&home, ctx.profile.as_deref())?;
    if args.action.is_none() {
        match args.provider.as_deref() {
            Some(SSH_GRANT) => return grant_ssh::grant_ssh(ctx, &home, &store, args),
            Some(NPM_GRANT) => return grant_npm(ctx, &home, &store, args.registry.as_deref()),
            Some(AWS_GRANT) => return grant_aws::grant_aws(ctx, &home, &store, args),
            _ => {}
        }
    }
    if let (Some(host), Some(name)) = (&args.host, &args.provider) {
        define_host_provider(ctx, &home, name, host, args)?;
    }
    match (&args.action, &args.provider) {
        (Some(GrantAction::List { json }), _) => list(ctx, &store, *json),
        (Some(GrantAction::Show { provider, json }), _) => show(ctx, &store, provider, *json),
        (Some(GrantAction::Oauth(oauth)), _) => grant_oauth::grant_oauth(ctx, &home, &store, oauth),
        (
            Some(GrantAction::Mcp {
                name,
                url,
                header,
                prefix,
            }),
            _,
        ) => {
            let provider = McpGrant {
                name,
                url,
                header,
                prefix,
            }
            .define(ctx, &home)?;
            store_grant(ctx, &home, &store, &provider, None)
        }
        (None, Some(provider)) => store_grant(ctx, &home, &store, provider, None),
        (None, None) => Err(CliError::new("name a provider: `moat grant github`").into()),
    }
}

/// `moat grant mcp NAME --url URL`: the flags of one MCP server's grant.
struct McpGrant<'a> {
    name: &'a str,
    url: &'a str,
    header: &'a Option<String>,
    prefix: &'a Option<String>,
}

impl McpGrant<'_> {
    /// Defines provider `mcp-NAME` for the URL's host (and port); returns its name.
    fn define(&self, ctx: &Context, home: &moat_core::MoatHome) -> Result<String> {
        let refuse = |message: String| CliError::new(format!("moat grant mcp {}: {message}", self.name));
        config::check_mcp_name(self.name).map_err(refuse)?;
        let url = config::McpUrl::parse(self.url).map_err(|e| refuse(format!("--url {e}")))?;
        let provider_name = format!("{MCP_GRANT_PREFIX}{}", self.name);
        let host = url.host_pattern();
        let provider = HostProvider::from_flags(&provider_name, &host, self.header.as_deref(), self.prefix.as_deref());
        let path = provider.save(home).map_err(|e| refuse(e.to_string()))?;
        ctx.printer.detail(format!(
            "provider {provider_name}: {}: {}<token> on requests to {host} ({})",
            provider.header,
            provider.prefix,
            path.display()
        ));
        Ok(provider_name)
    }
}

/// Refuses flags the named grant kind does not take.
fn check_flags(args: &GrantArgs) -> Result<()> {
    let name = args.provider.as_deref().unwrap_or_default();
    let refuse = |flag: &str, kind: &str| -> Result<()> {
        Err(CliError::new(format!("{flag} is for `moat grant {kind}`, not `moat grant {name}`")).into())
    };
    if name != SSH_GRANT && args.key.is_some() {
        return refuse("--key", SSH_GRANT);
    }
    if name != SSH_GRANT && !args.known_hosts.is_empty() {
        return refuse("--known-hosts", SSH_GRANT);
    }
    if name != NPM_GRANT && args.registry.is_some() {
        return refuse("--registry", NPM_GRANT);
    }
    let aws_flags = [
        ("--role-arn", args.role_arn.is_some()),
        ("--aws-profile", args.aws_profile.is_some()),
        ("--region", args.region.is_some()),
        ("--sts-endpoint", args.sts_endpoint.is_some()),
    ];
    if let Some((flag, _)) = aws_flags.iter().find(|(_, given)| *given).filter(|_| name != AWS_GRANT) {
        return refuse(flag, AWS_GRANT);
    }
    if name == AWS_GRANT && (args.host.is_some() || args.header.is_some() || args.prefix.is_some()) {
        return Err(CliError::new("`moat grant aws` injects no header: it takes --role-arn, not --host").into());
    }
    if name == NPM_GRANT && args.host.is_some() {
        return Err(CliError::new("`moat grant npm` takes --registry URL, not --host").into());
    }
    if name == SSH_GRANT && (args.header.is_some() || args.prefix.is_some()) {
        return Err(CliError::new("`moat grant ssh` injects no header: drop --header and --prefix").into());
    }
    Ok(())
}

/// `moat grant npm [--registry URL]`: npm becomes a provider for the
/// registry's host (`Authorization: Bearer`), and the token is stored with
/// the registry, from which runs get their npm config.
fn grant_npm(
    ctx: &Context,
    home: &moat_core::MoatHome,
    store: &CredentialStore,
    registry: Option<&str>,
) -> Result<ExitStatus> {
    let registry =
        Registry::parse(registry.unwrap_or(npm::DEFAULT_REGISTRY)).map_err(|e| CliError::new(e.to_string()))?;
    let provider = HostProvider::from_flags(NPM_GRANT, &registry.host, None, None);
    provider.save(home).map_err(|e| {
        CliError::new(format!("moat grant npm: {e}"))
            .with_hint("`moat grant npm` keeps MOAT_HOME/providers/npm.yaml; remove a hand-written one")
    })?;
    ctx.printer.detail(format!(
        "npm: Authorization: Bearer <token> on requests to {}",
        registry.host
    ));
    store_grant(ctx, home, store, NPM_GRANT, Some(registry.url()))
}

/// `--host`: defines (or redefines) `name` as a provider for one host
/// before its credential is asked for.
fn define_host_provider(
    ctx: &Context,
    home: &moat_core::MoatHome,
    name: &str,
    host: &str,
    args: &GrantArgs,
) -> Result<()> {
    let provider = HostProvider::from_flags(name, host, args.header.as_deref(), args.prefix.as_deref());
    let path = provider.save(home).map_err(|e| {
        CliError::new(format!("moat grant {name} --host {host}: {e}"))
            .with_hint("`moat grant --help` describes --host, --header and --prefix")
    })?;
    ctx.printer.detail(format!(
        "provider {name}: {}: {}<token> on requests to {host} ({})",
        provider.header,
        provider.prefix,
        path.display()
    ));
    Ok(())
}

/// Stores the token for provider `name`; `registry` (npm) is kept with it.
fn store_grant(
    ctx: &Context,
    home: &moat_core::MoatHome,
    store: &CredentialStore,
    name: &str,
    registry: Option<String>,
) -> Result<ExitStatus> {
    let providers = Providers::load(home)?;
    let provider = providers.require(name)?;
    let granted = provider.acquire_token(&TerminalPrompt(&ctx.printer))?;
    ctx.printer.status(format!("token for {name} from {}", granted.source));
    let mut credential = granted.into_credential();
    credential.metadata.registry = registry;
    let global = config::load_global(home)?.config;
    let extra_root_pem = match &global.extra_ca_file {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("extra_ca_file {}", path.display()))?),
        None => None,
    };
    let options = ValidationOptions {
        extra_root_pem,
        timeout: VALIDATION_TIMEOUT,
        ..ValidationOptions::default()
    };
    let outcome = live::block_on(async { Ok(provider.validate(&credential, &options).await?) })?;
    match outcome {
        ValidationOutcome::Valid => ctx.printer.status(format!("{name} accepted the token")),
        ValidationOutcome::Rejected { status } => {
            return Err(
                CliError::new(format!("{name} rejected the token (HTTP {status}); nothing was stored"))
                    .with_hint("check the token (expired? missing scopes?) and run `moat grant` again")
                    .into(),
            );
        }
        ValidationOutcome::UnexpectedStatus { status } => ctx.printer.warning(format!(
            "{name} answered HTTP {status} when checking the token; storing it anyway"
        )),
        ValidationOutcome::Unreachable(why) => ctx.printer.warning(format!(
            "could not check the token with {name} ({why}); storing it anyway"
        )),
        ValidationOutcome::NotSupported => {}
    }
    store.save(name, &credential)?;
    let usage = match name.strip_prefix("mcp-") {
        Some(server) => format!("name it as `grant: {name}` of the `mcp:` entry `{server}` in moat.yaml"),
        None => format!("use it with `moat run --grant {name}`"),
    };
    ctx.printer.status(format!("granted {name}; {usage}"));
    notify_daemon(ctx, home);
    Ok(ExitStatus::Success)
}

/// Tells a running daemon (never starting one) that credentials changed,
/// so live runs pick the change up on their next request.
pub fn notify_daemon(ctx: &Context, home: &moat_core::MoatHome) {
    let client = moat_api::DaemonClient::new(home.daemon_socket());
    let refreshed = live::block_on(async { Ok(client.refresh_grants().await) });
    if let Ok(Err(e)) = refreshed
        && !matches!(e, moat_api::ClientError::NotRunning(_))
    {
        ctx.printer
            .warning(format!("live runs may keep the old credential: {e}"));
    }
}

fn list(ctx: &Context, store: &CredentialStore, json: bool) -> Result<ExitStatus> {
    let summaries = store.list()?;
    if json {
        write_json(ctx, &summaries)
    } else {
        print_table(ctx, &summaries)
    }
}

fn write_json(ctx: &Context, value: &impl serde::Serialize) -> Result<ExitStatus> {
    let mut out = ctx.printer.stdout();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(ExitStatus::Success)
}

fn print_table(ctx: &Context, summaries: &[CredentialSummary]) -> Result<ExitStatus> {
    let mut out = ctx.printer.stdout();
    writeln!(
        out,
        "{:<16} {:<12} {:<12} {:<24} {:<24} SOURCE",
        "PROVIDER", "TOKEN", "KIND", "GRANTED", "EXPIRES"
    )?;
    for summary in summaries {
        writeln!(out, "{}", row(summary))?;
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}

fn row(summary: &CredentialSummary) -> String {
    match (&summary.details, &summary.error) {
        (Some(d), _) => format!(
            "{:<16} {:<12} {:<12} {:<24} {:<24} {}",
            summary.provider,
            d.token,
            serde_json::to_value(d.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            d.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            d.metadata
                .expires_at
                .map_or_else(|| "-".to_owned(), |at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
            d.metadata.source.as_deref().unwrap_or("-")
        ),
        (None, error) => format!(
            "{:<16} unreadable: {}",
            summary.provider,
            error.as_deref().unwrap_or("?")
        ),
    }
}

fn show(ctx: &Context, store: &CredentialStore, provider: &str, json: bool) -> Result<ExitStatus> {
    let Some(summary) = store.summary(provider)? else {
        return Err(CliError::new(format!("no credential for {provider}"))
            .with_hint(format!("grant one with `moat grant {provider}`"))
            .into());
    };
    if json {
        write_json(ctx, &summary)
    } else {
        print_table(ctx, std::slice::from_ref(&summary))
    }
}

/// Asks on the terminal without echo, or reads the first line of standard
/// input when it is not a terminal (`echo "$TOKEN" | moat grant x`).
struct TerminalPrompt<'a>(&'a Printer);

impl TokenPrompt for TerminalPrompt<'_> {
    fn ask_token(&self, provider: &Provider) -> std::io::Result<Option<String>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            let mut line = String::new();
            stdin.lock().read_line(&mut line)?;
            let token = line.trim().to_string();
            return Ok((!token.is_empty()).then_some(token));
        }
        self.0.prompt(format!("{} token (input hidden): ", provider.name()));
        let token = read_without_echo(&stdin)?;
        self.0.prompt("\n");
        Ok((!token.is_empty()).then_some(token))
    }
}

fn read_without_echo(stdin: &std::io::Stdin) -> std::io::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let original = tcgetattr(stdin).map_err(std::io::Error::from)?;
    let mut silent = original.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(stdin, SetArg::TCSANOW, &silent).map_err(std::io::Error::from)?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let restored = tcsetattr(stdin, SetArg::TCSANOW, &original).map_err(std::io::Error::from);
    read?;
    restored?;
    Ok(line.trim().to_string())
}
