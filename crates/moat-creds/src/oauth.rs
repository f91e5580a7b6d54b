//! OAuth grants (`moat grant oauth NAME --issuer URL --client-id ID`): the
//! endpoints (discovered or given), the browser flow with PKCE and a
//! loopback callback, the device flow, the token endpoint's answers, and
//! refreshing — what is kept with the credential so the daemon can refresh
//! it ([`OauthState`]) and when it is due ([`refresh_due_at`]). The access
//! token is the credential's token; the refresh token never leaves the
//! encrypted store and the daemon.

pub mod callback;
pub mod http;
pub mod pkce;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::credential::Credential;
pub use http::{Client, endpoint_url};

/// A token is refreshed when this much of its life is left, at most.
pub const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// The device flow's polling interval when the issuer names none (RFC 8628).
const DEFAULT_DEVICE_INTERVAL: Duration = Duration::from_secs(5);
/// How much a `slow_down` answer adds to the polling interval.
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// Bound on a device authorization when the issuer names no expiry.
const DEFAULT_DEVICE_EXPIRY: Duration = Duration::from_secs(600);
/// The longest a device authorization is waited for, whatever the issuer says.
const MAX_DEVICE_WAIT: Duration = Duration::from_secs(1800);

#[derive(Debug, thiserror::Error)]
pub enum OauthError {
    #[error("{what} {url:?}: {reason}")]
    InvalidUrl { what: String, url: String, reason: String },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the issuer refused: {error}{}", .description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Issuer { error: String, description: Option<String> },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} answered something that is not {what}: {reason}")]
    Malformed {
        url: String,
        what: &'static str,
        reason: String,
    },
    #[error("the issuer {issuer} publishes no {what}; name it with {flag}")]
    NoEndpoint {
        issuer: String,
        what: &'static str,
        flag: &'static str,
    },
    #[error("the token endpoint gave a {0:?} token; moat injects only bearer tokens")]
    NotBearer(String),
    #[error("the loopback callback: {0}")]
    Callback(String),
    #[error("the callback's state does not match the request (a forged or stale callback); try again")]
    StateMismatch,
    #[error("the device code expired before it was approved")]
    DeviceExpired,
    #[error("cannot configure TLS: {0}")]
    Tls(String),
}

/// What an OAuth credential keeps besides the access token (encrypted
/// with it): where and how to refresh.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OauthState {
    pub issuer: String,
    pub token_url: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// When the current access token was issued.
    pub obtained_at: DateTime<Utc>,
}

impl std::fmt::Debug for OauthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OauthState")
            .field("issuer", &self.issuer)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "…"))
            .field("obtained_at", &self.obtained_at)
            .finish()
    }
}

/// The issuer's endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub authorization: Option<Url>,
    pub token: Option<Url>,
    pub device: Option<Url>,
}

/// Authorization server metadata (RFC 8414) / OpenID configuration: the
/// fields moat uses.
#[derive(Debug, Deserialize)]
struct Metadata {
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    device_authorization_endpoint: Option<String>,
}

impl Endpoints {
    /// `given` completed from the issuer's metadata, unless `given` names
    /// the token endpoint and an authorization or device endpoint already.
    pub async fn resolve(client: &Client, issuer: &Url, given: Endpoints) -> Result<Endpoints, OauthError> {
        if given.token.is_some() && (given.authorization.is_some() || given.device.is_some()) {
            return Ok(given);
        }
        let found = discover(client, issuer).await?;
        Ok(Endpoints {
            authorization: given.authorization.or(found.authorization),
            token: given.token.or(found.token),
            device: given.device.or(found.device),
        })
    }

    pub fn token(&self, issuer: &Url) -> Result<&Url, OauthError> {
        self.token.as_ref().ok_or_else(|| OauthError::NoEndpoint {
            issuer: issuer.to_string(),
            what: "token endpoint",
            flag: "--token-url",
        })
    }
}

/// The metadata documents of `issuer`: RFC 8414's
/// `/.well-known/oauth-authorization-server[/path]`, then OpenID's
/// `[path]/.well-known/openid-configuration`.
pub fn discovery_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let mut oauth = issuer.clone();
    oauth.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut openid = issuer.clone();
    openid.set_path(&format!("{path}/.well-known/openid-configuration"));
    for url in [&mut oauth, &mut openid] {
        url.set_query(None);
        url.set_fragment(None);
    }
    vec![oauth, openid]
}

async fn discover(client: &Client, issuer: &Url) -> Result<Endpoints, OauthError> {
    let mut last_error = None;
    for url in discovery_urls(issuer) {
        let answer = client.get(&url).await?;
        if answer.status != 200 {
            last_error = Some(OauthError::Status {
                url: url.to_string(),
                status: answer.status,
            });
            continue;
        }
        let metadata: Metadata = serde_json::from_slice(&answer.body).map_err(|e| OauthError::Malformed {
            url: url.to_string(),
            what: "authorization server metadata",
            reason: e.to_string(),
        })?;
        let parse = |what: &str, text: Option<String>| text.map(|t| endpoint_url(what, &t)).transpose();
        return Ok(Endpoints {
            authorization: parse("authorization_endpoint", metadata.authorization_endpoint)?,
            token: parse("token_endpoint", metadata.token_endpoint)?,
            device: parse("device_authorization_endpoint", metadata.device_authorization_endpoint)?,
        });
    }
    Err(last_error.unwrap_or(OauthError::NoEndpoint {
        issuer: issuer.to_string(),
        what: "metadata",
        flag: "--token-url",
    }))
}

/// What the client asks for in every flow.
#[derive(Clone, Debug)]
pub struct ClientRequest {
    pub client_id: String,
    pub scopes: Vec<String>,
}

impl ClientRequest {
    fn scope(&self) -> String {
        self.scopes.join(" ")
    }
}

/// The URL the browser opens for the authorization code flow with PKCE.
pub fn authorization_url(
    endpoint: &Url,
    client: &ClientRequest,
    redirect_uri: &str,
    state: &str,
    pkce: &pkce::Pkce,
) -> Url {
    let mut url = endpoint.clone();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &client.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256");
        if !client.scopes.is_empty() {
            query.append_pair("scope", &client.scope());
        }
    }
    url
}

/// A successful token endpoint answer (RFC 6749 § 5.1).
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// An error answer (RFC 6749 § 5.2).
#[derive(Debug, Deserialize)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Reads a token endpoint's answer: a bearer token, or the issuer's error.
pub fn parse_token_answer(url: &Url, status: u16, body: &[u8]) -> Result<TokenResponse, OauthError> {
    if let Ok(error) = serde_json::from_slice::<ErrorResponse>(body) {
        return Err(OauthError::Issuer {
            error: error.error,
            description: error.error_description,
        });
    }
    if status != 200 {
        return Err(OauthError::Status {
            url: http::without_query(url),
            status,
        });
    }
    let response: TokenResponse = serde_json::from_slice(body).map_err(|e| OauthError::Malformed {
        url: http::without_query(url),
        what: "a token response",
        reason: e.to_string(),
    })?;
    if !response.token_type.eq_ignore_ascii_case("bearer") {
        return Err(OauthError::NotBearer(response.token_type));
    }
    if response.access_token.is_empty() {
        return Err(OauthError::Malformed {
            url: http::without_query(url),
            what: "a token response",
            reason: "the access token is empty".into(),
        });
    }
    Ok(response)
}

async fn token_request(client: &Client, token_url: &Url, form: &[(&str, &str)]) -> Result<TokenResponse, OauthError> {
    let answer = client.post_form(token_url, form).await?;
    parse_token_answer(token_url, answer.status, &answer.body)
}

/// Trades the callback's code for tokens.
pub async fn exchange_code(
    client: &Client,
    token_url: &Url,
    request: &ClientRequest,
    code: &str,
    redirect_uri: &str,
    pkce: &pkce::Pkce,
) -> Result<TokenResponse, OauthError> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("client_id", request.client_id.as_str()),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    token_request(client, token_url, &form).await
}

/// New tokens for a stored credential's refresh token.
pub async fn refresh(client: &Client, state: &OauthState) -> Result<TokenResponse, OauthError> {
    let token_url = endpoint_url("token_url", &state.token_url)?;
    let Some(refresh_token) = state.refresh_token.as_deref() else {
        return Err(OauthError::Issuer {
            error: "no_refresh_token".into(),
            description: Some("the issuer gave no refresh token; grant it again".into()),
        });
    };
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", state.client_id.as_str()),
    ];
    token_request(client, &token_url, &form).await
}

/// A device authorization (RFC 8628 § 3.2): what the user is shown, and
/// how to poll.
#[derive(Clone, Deserialize)]
pub struct DeviceAuthorization {
    device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    interval: Option<u64>,
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .finish_non_exhaustive()
    }
}

/// Starts the device flow.
pub async fn start_device(
    client: &Client,
    device_url: &Url,
    request: &ClientRequest,
) -> Result<DeviceAuthorization, OauthError> {
    let scope = request.scope();
    let mut form = vec![("client_id", request.client_id.as_str())];
    if !scope.is_empty() {
        form.push(("scope", scope.as_str()));
    }
    let answer = client.post_form(device_url, &form).await?;
    if let Ok(error) = serde_json::from_slice::<ErrorResponse>(&answer.body) {
        return Err(OauthError::Issuer {
            error: error.error,
            description: error.error_description,
        });
    }
    if answer.status != 200 {
        return Err(OauthError::Status {
            url: device_url.to_string(),
            status: answer.status,
        });
    }
    serde_json::from_slice(&answer.body).map_err(|e| OauthError::Malformed {
        url: device_url.to_string(),
        what: "a device authorization",
        reason: e.to_string(),
    })
}

/// Polls the token endpoint until the user approves, refuses, or the code
/// expires (bounded by the issuer's expiry and [`MAX_DEVICE_WAIT`]).
pub async fn poll_device(
    client: &Client,
    token_url: &Url,
    request: &ClientRequest,
    device: &DeviceAuthorization,
) -> Result<TokenResponse, OauthError> {
    let mut interval = device.interval.map_or(DEFAULT_DEVICE_INTERVAL, Duration::from_secs);
    let lifetime = device
        .expires_in
        .map_or(DEFAULT_DEVICE_EXPIRY, Duration::from_secs)
        .min(MAX_DEVICE_WAIT);
    let deadline = tokio::time::Instant::now() + lifetime;
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device.device_code.as_str()),
        ("client_id", request.client_id.as_str()),
    ];
    loop {
        if tokio::time::Instant::now() + interval > deadline {
            return Err(OauthError::DeviceExpired);
        }
        tokio::time::sleep(interval).await;
        match token_request(client, token_url, &form).await {
            Err(OauthError::Issuer { error, .. }) if error == "authorization_pending" => {}
            Err(OauthError::Issuer { error, .. }) if error == "slow_down" => interval += SLOW_DOWN_STEP,
            Err(OauthError::Issuer { error, .. }) if error == "expired_token" => {
                return Err(OauthError::DeviceExpired);
            }
            outcome => return outcome,
        }
    }
}

/// When a token issued at `obtained_at` and expiring at `expires_at` is
/// refreshed: a third of its life before expiry, but never more than
/// [`MAX_REFRESH_MARGIN`] before (an hour's token at 55 minutes, a
/// 3-second token after 2 seconds).
pub fn refresh_due_at(obtained_at: DateTime<Utc>, expires_at: DateTime<Utc>) -> DateTime<Utc> {
    let lifetime = (expires_at - obtained_at).max(chrono::Duration::zero());
    let max_margin = chrono::Duration::from_std(MAX_REFRESH_MARGIN).unwrap_or(chrono::Duration::MAX);
    expires_at - (lifetime / 3).min(max_margin)
}

/// A credential that can be refreshed: its state and when it is due.
pub fn refresh_schedule(credential: &Credential) -> Option<(&OauthState, DateTime<Utc>)> {
    let state = credential.oauth.as_ref()?;
    state.refresh_token.as_ref()?;
    let expires_at = credential.metadata.expires_at?;
    Some((state, refresh_due_at(state.obtained_at, expires_at)))
}

/// Puts a token answer received at `now` into `credential`: the new access
/// token and expiry, the rotated refresh token (or the old one when the
/// issuer sends none), the granted scopes.
pub fn apply(credential: &mut Credential, response: TokenResponse, now: DateTime<Utc>) {
    credential.token = response.access_token;
    credential.metadata.expires_at = response
        .expires_in
        .and_then(|secs| i64::try_from(secs).ok())
        .map(|secs| now + chrono::Duration::seconds(secs));
    if let Some(scope) = response.scope {
        credential.metadata.scopes = scope.split_whitespace().map(str::to_owned).collect();
    }
    if let Some(state) = credential.oauth.as_mut() {
        state.obtained_at = now;
        if response.refresh_token.is_some() {
            state.refresh_token = response.refresh_token;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::CredentialKind;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn token_answers_are_parsed_or_refused() {
        let token_url = url("https://auth.example.com/token");
        let ok = br#"{"access_token":"at-1","token_type":"bearer","expires_in":3600,"refresh_token":"rt-1","scope":"read write"}"#;
        let parsed = parse_token_answer(&token_url, 200, ok).unwrap();
        assert_eq!(
            (
                parsed.access_token.as_str(),
                parsed.expires_in,
                parsed.refresh_token.as_deref()
            ),
            ("at-1", Some(3600), Some("rt-1"))
        );
        assert!(!format!("{parsed:?}").contains("at-1"), "Debug hides the tokens");
        let refused = br#"{"error":"invalid_grant","error_description":"refresh token revoked"}"#;
        let err = parse_token_answer(&token_url, 400, refused).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the issuer refused: invalid_grant (refresh token revoked)"
        );
        let mac = br#"{"access_token":"at","token_type":"mac"}"#;
        assert!(matches!(
            parse_token_answer(&token_url, 200, mac),
            Err(OauthError::NotBearer(_))
        ));
        let err = parse_token_answer(&token_url, 502, b"<html>bad gateway</html>").unwrap_err();
        assert_eq!(err.to_string(), "https://auth.example.com/token answered HTTP 502");
        assert!(parse_token_answer(&token_url, 200, b"{}").is_err());
    }

    #[test]
    fn refresh_comes_a_third_of_the_life_early_and_at_most_five_minutes() {
        let t0 = Utc::now();
        let secs = chrono::Duration::seconds;
        assert_eq!(refresh_due_at(t0, t0 + secs(3)), t0 + secs(2));
        assert_eq!(refresh_due_at(t0, t0 + secs(3600)), t0 + secs(3300));
        assert_eq!(refresh_due_at(t0, t0 + secs(600)), t0 + secs(400));
        assert_eq!(
            refresh_due_at(t0, t0 - secs(5)),
            t0 - secs(5),
            "an expired token is due now"
        );
    }

    #[test]
    fn an_answer_updates_the_credential_and_keeps_an_unrotated_refresh_token() {
        let t0 = Utc::now();
        let mut credential = Credential::new("at-old", CredentialKind::OauthToken);
        credential.oauth = Some(OauthState {
            issuer: "https://auth.example.com".into(),
            token_url: "https://auth.example.com/token".into(),
            client_id: "cli".into(),
            refresh_token: Some("rt-old".into()),
            obtained_at: t0,
        });
        let answer = |rt: Option<&str>| TokenResponse {
            access_token: "at-new".into(),
            token_type: "Bearer".into(),
            expires_in: Some(60),
            refresh_token: rt.map(str::to_owned),
            scope: None,
        };
        let later = t0 + chrono::Duration::seconds(30);
        apply(&mut credential, answer(None), later);
        assert_eq!(credential.token, "at-new");
        assert_eq!(
            credential.metadata.expires_at,
            Some(later + chrono::Duration::seconds(60))
        );
        let (state, due) = refresh_schedule(&credential).unwrap();
        assert_eq!(state.refresh_token.as_deref(), Some("rt-old"));
        assert_eq!(due, later + chrono::Duration::seconds(40));
        apply(&mut credential, answer(Some("rt-new")), later);
        assert_eq!(credential.oauth.unwrap().refresh_token.as_deref(), Some("rt-new"));
    }

    #[test]
    fn discovery_follows_rfc_8414_and_openid() {
        let shown =
            |issuer: &str| -> Vec<String> { discovery_urls(&url(issuer)).iter().map(ToString::to_string).collect() };
        assert_eq!(
            shown("https://auth.example.com"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            shown("https://auth.example.com/tenant/"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/tenant",
                "https://auth.example.com/tenant/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn the_authorization_url_carries_the_challenge_not_the_verifier() {
        let pkce = pkce::Pkce::generate();
        let request = ClientRequest {
            client_id: "moat cli".into(),
            scopes: vec!["read".into(), "write".into()],
        };
        let shown = authorization_url(
            &url("https://auth.example.com/authorize?tenant=x"),
            &request,
            "http://127.0.0.1:5000/callback",
            "st",
            &pkce,
        );
        let pairs: std::collections::HashMap<_, _> = shown.query_pairs().into_owned().collect();
        assert_eq!(pairs["tenant"], "x");
        assert_eq!(pairs["client_id"], "moat cli");
        assert_eq!(pairs["scope"], "read write");
        assert_eq!(pairs["code_challenge"], pkce.challenge);
        assert_eq!(pairs["code_challenge_method"], "S256");
        assert!(!shown.as_str().contains(&pkce.verifier));
    }
}
