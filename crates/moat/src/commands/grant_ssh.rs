//! `moat grant ssh --host HOST [--key PATH|agent] [--known-hosts LINE]`:
//! records that HOST may use one key of the user's ssh-agent (its public
//! half and fingerprint; moat never reads a private key) and the host keys
//! runs trust for HOST (given, or collected with ssh-keyscan now).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use moat_core::subprocess::{Subprocess, stderr_excerpt};
use moat_creds::CredentialStore;
use moat_creds::ssh::{PublicKey, SSH_GRANT, SshGrants, SshKeyGrant, check_known_hosts_line};
use moat_creds::ssh_agent::{self, Identity};

use crate::cli::GrantArgs;
use crate::commands::grant::notify_daemon;
use crate::context::{Context, ExitStatus};
use crate::report::CliError;

/// Bound on each exchange with the user's ssh-agent.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on `ssh-keyscan` (it gets `-T` a little shorter).
const KEYSCAN_TIMEOUT: Duration = Duration::from_secs(20);

pub fn grant_ssh(
    ctx: &Context,
    home: &moat_core::MoatHome,
    store: &CredentialStore,
    args: &GrantArgs,
) -> Result<ExitStatus> {
    let host = args
        .host
        .clone()
        .ok_or_else(|| CliError::new("name the host the key is for: `moat grant ssh --host github.com`"))?;
    let agent_socket = moat_core::env_vars::read("SSH_AUTH_SOCK")
        .map(PathBuf::from)
        .ok_or_else(|| {
            CliError::new("moat grant ssh signs through your ssh-agent, and SSH_AUTH_SOCK is not set")
                .with_hint("start one (`eval \"$(ssh-agent)\"`) and add the key with `ssh-add`")
        })?;
    let identities = ssh_agent::list_identities(&agent_socket, AGENT_TIMEOUT)
        .map_err(|e| CliError::new(format!("listing the keys of your ssh-agent: {e}")))?;
    let key = choose_key(args.key.as_deref(), &identities)?;
    let known_hosts = if args.known_hosts.is_empty() {
        keyscan(&host)?
    } else {
        args.known_hosts
            .iter()
            .map(|line| check_known_hosts_line(line, &host))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CliError::new(format!("--known-hosts: {e}")))?
    };
    let mut grants = match store.load(SSH_GRANT)? {
        Some(credential) => SshGrants::from_credential(&credential)?,
        None => SshGrants::default(),
    };
    grants.upsert(SshKeyGrant {
        host: host.clone(),
        fingerprint: key.fingerprint(),
        public_key: key.to_openssh(),
        known_hosts,
        agent_socket: Some(agent_socket),
    });
    store.save(SSH_GRANT, &grants.to_credential()?)?;
    ctx.printer.status(format!(
        "granted ssh key {} for {host}; use it with `moat run --grant ssh`",
        key.fingerprint()
    ));
    notify_daemon(ctx, home);
    Ok(ExitStatus::Success)
}

/// The key `--key` names, which the agent must hold.
fn choose_key(key: Option<&str>, identities: &[Identity]) -> Result<PublicKey> {
    let held: Vec<PublicKey> = identities.iter().map(|i| PublicKey { blob: i.blob.clone() }).collect();
    let listing = || {
        identities
            .iter()
            .map(|i| format!("{} {}", PublicKey { blob: i.blob.clone() }.fingerprint(), i.comment))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match key {
        None | Some("agent") => match held.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(CliError::new("your ssh-agent holds no key")
                .with_hint("add one with `ssh-add PATH`")
                .into()),
            _ => Err(
                CliError::new(format!("your ssh-agent holds several keys ({}); name one", listing()))
                    .with_hint("pass its public key file: --key ~/.ssh/id_ed25519.pub")
                    .into(),
            ),
        },
        Some(path) => {
            let wanted = read_public_key(Path::new(path))?;
            if held.contains(&wanted) {
                Ok(wanted)
            } else {
                Err(CliError::new(format!(
                    "your ssh-agent does not hold the key of {path} ({})",
                    wanted.fingerprint()
                ))
                .with_hint("add it with `ssh-add` (moat signs through the agent and never reads a private key)")
                .into())
            }
        }
    }
}

/// The public key in `path`, or in `path.pub` when `path` is a private key
/// (which is never read).
fn read_public_key(path: &Path) -> Result<PublicKey> {
    let public = if path.extension().is_some_and(|e| e == "pub") {
        path.to_path_buf()
    } else {
        let mut with_pub = path.as_os_str().to_owned();
        with_pub.push(".pub");
        PathBuf::from(with_pub)
    };
    let text = std::fs::read_to_string(&public).map_err(|e| {
        CliError::new(format!("reading the public key {}: {e}", public.display()))
            .with_hint("--key takes a public key file (KEY.pub); moat never reads a private key")
    })?;
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
    Ok(PublicKey::parse_openssh(line).map_err(|e| CliError::new(format!("{}: {e}", public.display())))?)
}

/// The host keys of `host` (`name` or `[name]:port`), from ssh-keyscan.
fn keyscan(host: &str) -> Result<Vec<String>> {
    let (name, port) = match host.strip_prefix('[').and_then(|rest| rest.split_once("]:")) {
        Some((name, port)) => (name, port),
        None => (host, "22"),
    };
    let scan = Subprocess::new("ssh-keyscan", KEYSCAN_TIMEOUT).args(["-T", "15", "-p", port, name]);
    let output = scan.run_blocking().map_err(|e| {
        CliError::new(format!("collecting the host keys of {host} with ssh-keyscan: {e}"))
            .with_hint("pass them instead: --known-hosts \"HOST TYPE KEY\"")
    })?;
    let lines: Vec<String> = output
        .stdout
        .lines()
        .filter_map(|line| check_known_hosts_line(line, host).ok())
        .collect();
    if lines.is_empty() {
        return Err(CliError::new(format!(
            "ssh-keyscan found no host key for {host}: {}",
            stderr_excerpt(&output.stderr)
        ))
        .with_hint("pass them instead: --known-hosts \"HOST TYPE KEY\"")
        .into());
    }
    Ok(lines)
}
