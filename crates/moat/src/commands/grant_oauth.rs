//! `moat grant oauth NAME --issuer URL --client-id ID --host HOST`: defines
//! NAME as a provider for HOST (`Authorization: Bearer`), runs the browser
//! flow with PKCE (the URL is always printed, and opened with `$BROWSER` or
//! the desktop's opener) or the device flow, and stores the tokens with
//! their expiry. The daemon refreshes them (moat-daemon's `oauth_refresh`).

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};
use chrono::Utc;
use moat_core::{MoatHome, config};
use moat_creds::oauth::callback::{CALLBACK_TIMEOUT, Callback};
use moat_creds::oauth::http::EXCHANGE_TIMEOUT;
use moat_creds::oauth::pkce::{Pkce, random_token};
use moat_creds::oauth::{self, ClientRequest, Endpoints, OauthState, TokenResponse, endpoint_url};
use moat_creds::{Credential, CredentialKind, CredentialStore, HostProvider};
use url::Url;

use crate::cli::OauthGrantArgs;
use crate::commands::grant::notify_daemon;
use crate::context::{Context, ExitStatus};
use crate::live;
use crate::report::CliError;

/// The flow that got the tokens, recorded as the credential's source.
const BROWSER_SOURCE: &str = "oauth browser";
const DEVICE_SOURCE: &str = "oauth device";

pub fn grant_oauth(
    ctx: &Context,
    home: &MoatHome,
    store: &CredentialStore,
    args: &OauthGrantArgs,
) -> Result<ExitStatus> {
    let refuse = |message: String| CliError::new(format!("moat grant oauth {}: {message}", args.name));
    let issuer = endpoint_url("--issuer", &args.issuer).map_err(|e| refuse(e.to_string()))?;
    let given = given_endpoints(args).map_err(|e| refuse(e.to_string()))?;
    let provider = HostProvider::from_flags(&args.name, &args.host, None, None);
    provider.save(home).map_err(|e| refuse(e.to_string()))?;
    ctx.printer.detail(format!(
        "provider {}: Authorization: Bearer <access token> on requests to {}",
        args.name, args.host
    ));
    let client = oauth::Client::new(extra_root_pem(home)?.as_deref(), EXCHANGE_TIMEOUT)?;
    let request = ClientRequest {
        client_id: args.client_id.clone(),
        scopes: scopes(&args.scopes),
    };
    let (response, source, token_url) = live::block_on(async {
        let endpoints = Endpoints::resolve(&client, &issuer, given).await?;
        let token_url = endpoints.token(&issuer)?.clone();
        let (response, source) = if args.device {
            (device_flow(ctx, &client, &endpoints, &request).await?, DEVICE_SOURCE)
        } else {
            (browser_flow(ctx, &client, &endpoints, &request).await?, BROWSER_SOURCE)
        };
        Ok((response, source, token_url))
    })
    .map_err(|e| refuse(format!("{e:#}")))?;
    let credential = credential_of(&issuer, &token_url, args, source, response);
    store.save(&args.name, &credential)?;
    let expiry = match credential.metadata.expires_at {
        Some(at) => format!(
            "expires {}; the daemon refreshes it",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => "no expiry given".into(),
    };
    if credential.oauth.as_ref().is_some_and(|s| s.refresh_token.is_none()) && credential.metadata.expires_at.is_some()
    {
        ctx.printer
            .warning("the issuer gave no refresh token: grant again when the token expires");
    }
    ctx.printer.status(format!(
        "granted {} ({expiry}); use it with `moat run --grant {}`",
        args.name, args.name
    ));
    notify_daemon(ctx, home);
    Ok(ExitStatus::Success)
}

fn given_endpoints(args: &OauthGrantArgs) -> Result<Endpoints, oauth::OauthError> {
    let parse = |flag: &str, text: &Option<String>| text.as_deref().map(|t| endpoint_url(flag, t)).transpose();
    Ok(Endpoints {
        authorization: parse("--auth-url", &args.auth_url)?,
        token: parse("--token-url", &args.token_url)?,
        device: parse("--device-url", &args.device_url)?,
    })
}

/// `--scopes "a b" --scopes c,d` is `[a, b, c, d]`.
fn scopes(given: &[String]) -> Vec<String> {
    given
        .iter()
        .flat_map(|s| s.split([' ', ',']))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The global config's `extra_ca_file`, trusted for the issuer too.
fn extra_root_pem(home: &MoatHome) -> Result<Option<Vec<u8>>> {
    let global = config::load_global(home)?.config;
    match &global.extra_ca_file {
        Some(path) => Ok(Some(
            std::fs::read(path).with_context(|| format!("extra_ca_file {}", path.display()))?,
        )),
        None => Ok(None),
    }
}

async fn browser_flow(
    ctx: &Context,
    client: &oauth::Client,
    endpoints: &Endpoints,
    request: &ClientRequest,
) -> Result<TokenResponse> {
    let Some(authorization) = &endpoints.authorization else {
        return Err(CliError::new(
            "the issuer publishes no authorization endpoint; name it with --auth-url, or use the device flow with --device",
        )
        .into());
    };
    let token_url = endpoints.token.as_ref().context("no token endpoint")?;
    let callback = Callback::bind().await?;
    let state = random_token();
    let pkce = Pkce::generate();
    let url = oauth::authorization_url(authorization, request, callback.redirect_uri(), &state, &pkce);
    ctx.printer
        .status(format!("to authorize moat, open this URL in a browser:\n  {url}"));
    open_browser(ctx, &url);
    ctx.printer.detail(format!(
        "waiting for the redirect to {} (at most {} s)",
        callback.redirect_uri(),
        CALLBACK_TIMEOUT.as_secs()
    ));
    let redirect_uri = callback.redirect_uri().to_owned();
    let code = callback.wait(&state, CALLBACK_TIMEOUT).await?;
    Ok(oauth::exchange_code(client, token_url, request, &code, &redirect_uri, &pkce).await?)
}

async fn device_flow(
    ctx: &Context,
    client: &oauth::Client,
    endpoints: &Endpoints,
    request: &ClientRequest,
) -> Result<TokenResponse> {
    let Some(device_url) = &endpoints.device else {
        return Err(CliError::new(
            "the issuer publishes no device authorization endpoint; name it with --device-url, or drop --device to use a browser",
        )
        .into());
    };
    let token_url = endpoints.token.as_ref().context("no token endpoint")?;
    let device = oauth::start_device(client, device_url, request).await?;
    ctx.printer.status(format!(
        "to authorize moat, open {} and enter the code {}",
        device.verification_uri, device.user_code
    ));
    if let Some(complete) = &device.verification_uri_complete {
        ctx.printer.status(format!("or open {complete}"));
    }
    Ok(oauth::poll_device(client, token_url, request, &device).await?)
}

/// Opens `url` with `$BROWSER`, else the desktop's opener; a failure is a
/// warning (the URL was printed).
fn open_browser(ctx: &Context, url: &Url) {
    let program = std::env::var_os("BROWSER")
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| if cfg!(target_os = "macos") { "open" } else { "xdg-open" }.into());
    let spawned = Command::new(&program)
        .arg(url.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        // Reaped in the background; the browser may outlive the grant.
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(e) => ctx.printer.warning(format!(
            "could not open a browser ({}: {e}); open the URL above yourself",
            program.to_string_lossy()
        )),
    }
}

fn credential_of(
    issuer: &Url,
    token_url: &Url,
    args: &OauthGrantArgs,
    source: &str,
    response: TokenResponse,
) -> Credential {
    let now = Utc::now();
    let mut credential = Credential::new(String::new(), CredentialKind::OauthToken);
    credential.metadata.source = Some(format!("{source} ({issuer})"));
    credential.metadata.scopes = scopes(&args.scopes);
    credential.oauth = Some(OauthState {
        issuer: issuer.to_string(),
        token_url: token_url.to_string(),
        client_id: args.client_id.clone(),
        refresh_token: None,
        obtained_at: now,
    });
    oauth::apply(&mut credential, response, now);
    credential
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_split_on_spaces_and_commas() {
        assert_eq!(
            scopes(&["read write".into(), "admin,".into(), "x,y".into()]),
            ["read", "write", "admin", "x", "y"]
        );
    }
}
