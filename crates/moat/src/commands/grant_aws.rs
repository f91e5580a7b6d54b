//! `moat grant aws --role-arn ARN [--aws-profile P] [--region R]
//! [--sts-endpoint URL]`: stores (encrypted) the host's AWS keys and the
//! role runs may assume with them. The keys come from `--aws-profile`'s
//! entry in the shared credentials file, else the environment, else the
//! `AWS_PROFILE` (or `default`) profile — the order the AWS SDKs use.
//! The role is assumed once now to check the keys and role; a refusal
//! stores nothing, an unreachable STS only warns.

use std::time::Duration;

use anyhow::{Context as _, Result};
use moat_core::config;
use moat_core::env_vars;
use moat_creds::CredentialStore;
use moat_creds::aws::{self, AWS_GRANT, AwsGrant, HostKeys};
use moat_creds::sts::{StsClient, StsError};

use crate::cli::GrantArgs;
use crate::commands::grant::notify_daemon;
use crate::context::{Context, ExitStatus};
use crate::live;
use crate::report::CliError;

/// Bound on the AssumeRole that checks a new grant.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

pub fn grant_aws(
    ctx: &Context,
    home: &moat_core::MoatHome,
    store: &CredentialStore,
    args: &GrantArgs,
) -> Result<ExitStatus> {
    let role_arn = args.role_arn.as_deref().ok_or_else(|| {
        CliError::new("name the role runs get: `moat grant aws --role-arn arn:aws:iam::ACCOUNT:role/NAME`")
    })?;
    let (keys, source) = host_keys(args.aws_profile.as_deref())?;
    let region = args
        .region
        .clone()
        .or_else(|| env_vars::read_non_empty(aws::AWS_REGION))
        .unwrap_or_else(|| aws::DEFAULT_REGION.to_owned());
    let grant = AwsGrant::new(role_arn, &region, args.sts_endpoint.as_deref(), keys)
        .map_err(|e| CliError::new(format!("moat grant aws: {e}")))?;
    ctx.printer
        .status(format!("host keys {} from {source}", grant.keys.access_key_id));
    check_role(ctx, home, &grant)?;
    store.save(AWS_GRANT, &grant.to_credential(&source)?)?;
    ctx.printer.status(format!(
        "granted aws: runs get 15-minute credentials for {role_arn}; use it with `moat run --grant aws`"
    ));
    notify_daemon(ctx, home);
    Ok(ExitStatus::Success)
}

/// The host's keys and where they came from.
fn host_keys(profile: Option<&str>) -> Result<(HostKeys, String)> {
    let lookup = |name: &str| env_vars::read(name);
    let home = env_vars::read_non_empty(env_vars::HOME).unwrap_or_default();
    let file = aws::shared_credentials_file(&lookup, std::path::Path::new(&home));
    let source = |profile: &str| format!("profile {profile} of {}", file.display());
    if let Some(profile) = profile {
        let keys = HostKeys::from_shared_file_at(&file, profile).map_err(|e| {
            CliError::new(format!("moat grant aws --aws-profile {profile}: {e}"))
                .with_hint("configure it with `aws configure --profile NAME`, or name another profile")
        })?;
        return Ok((keys, source(profile)));
    }
    if let Some(keys) = HostKeys::from_env(&lookup) {
        return Ok((keys, format!("env {}", aws::AWS_ACCESS_KEY_ID)));
    }
    let profile = env_vars::read_non_empty(aws::AWS_PROFILE).unwrap_or_else(|| "default".to_owned());
    let keys = HostKeys::from_shared_file_at(&file, &profile).map_err(|e| {
        CliError::new(format!(
            "moat grant aws: no AWS keys: {} and {} are not set, and {e}",
            aws::AWS_ACCESS_KEY_ID,
            aws::AWS_SECRET_ACCESS_KEY
        ))
        .with_hint("set the variables, or name a profile of ~/.aws/credentials with --aws-profile")
    })?;
    Ok((keys, source(&profile)))
}

/// Assumes the role once: STS refusing means the keys or the role are
/// wrong, and nothing is stored.
fn check_role(ctx: &Context, home: &moat_core::MoatHome, grant: &AwsGrant) -> Result<()> {
    let global = config::load_global(home)?.config;
    let extra_root_pem = match &global.extra_ca_file {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("extra_ca_file {}", path.display()))?),
        None => None,
    };
    let resolve = global.resolve.iter().map(|(host, ip)| (host.clone(), *ip)).collect();
    let sts = StsClient::new(extra_root_pem.as_deref(), resolve, CHECK_TIMEOUT)?;
    let checked = live::block_on(async { Ok(sts.assume_role(grant, "moat-grant-check", chrono::Utc::now()).await) })?;
    match checked {
        Ok(_) => {
            ctx.printer
                .status(format!("STS let the keys assume {}", grant.role_arn));
            Ok(())
        }
        Err(e @ StsError::Refused { .. }) => Err(CliError::new(format!("{e}; nothing was stored"))
            .with_hint("check the keys (`aws sts get-caller-identity`) and that the role trusts them")
            .into()),
        Err(e) => {
            ctx.printer
                .warning(format!("could not check the role with STS ({e}); storing it anyway"));
            Ok(())
        }
    }
}
