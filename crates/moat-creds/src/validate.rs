//! Checking a granted token: one HTTPS GET to the provider's validation
//! endpoint with the header the proxy would inject, bounded by a timeout.
//! A network failure is a warning ([`ValidationOutcome::Unreachable`]), not
//! an error: grants must work offline. Upstream TLS is verified against the
//! system roots plus an optional extra root (tests, corporate CAs).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use moat_core::tls::{self, TlsSetupError, TrustedRoots};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::credential::Credential;
use crate::provider::Provider;

/// Bound on one whole validation exchange (connect, TLS, request).
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);

const HTTPS_PORT: u16 = 443;

/// Where and how to validate.
#[derive(Clone, Debug)]
pub struct ValidationOptions {
    /// Replaces the provider's validation URL (must be `https://`).
    pub endpoint: Option<String>,
    /// PEM certificates trusted in addition to the system roots.
    pub extra_root_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl Default for ValidationOptions {
    fn default() -> Self {
        ValidationOptions {
            endpoint: None,
            extra_root_pem: None,
            timeout: VALIDATION_TIMEOUT,
        }
    }
}

/// What the provider said about the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidationOutcome {
    /// The endpoint answered with the expected status.
    Valid,
    /// 401 or 403: the token is wrong, expired or revoked.
    Rejected { status: u16 },
    /// Any other status; the token may or may not work.
    UnexpectedStatus { status: u16 },
    /// No answer (offline, DNS, refused, TLS failure, timeout): a warning.
    Unreachable(String),
    /// The provider defines no validation endpoint.
    NotSupported,
}

impl std::fmt::Display for ValidationOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValidationOutcome::Valid => f.write_str("valid"),
            ValidationOutcome::Rejected { status } => write!(f, "rejected (HTTP {status})"),
            ValidationOutcome::UnexpectedStatus { status } => {
                write!(f, "unexpected answer (HTTP {status})")
            }
            ValidationOutcome::Unreachable(reason) => write!(f, "not checked: {reason}"),
            ValidationOutcome::NotSupported => f.write_str("not checked: no validation endpoint"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("invalid validation URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid extra root certificate: {0}")]
    InvalidRootCa(String),
    #[error("the {provider} token cannot be sent in the {header} header: {reason}")]
    InvalidHeader {
        provider: String,
        header: String,
        reason: String,
    },
    #[error("cannot configure TLS for validation: {0}")]
    Tls(#[from] rustls::Error),
}

/// The parts of an `https://` URL needed to connect.
struct Target {
    uri: Uri,
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> Result<Self, ValidationError> {
        let invalid = |reason: &str| ValidationError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
        if uri.scheme_str() != Some("https") {
            return Err(invalid(
                "only https:// is allowed, a token must not travel in clear text",
            ));
        }
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(HTTPS_PORT);
        Ok(Target { uri, host, port })
    }

    fn authority(&self) -> String {
        match self.uri.authority() {
            Some(authority) => authority.as_str().to_owned(),
            None => self.host.clone(),
        }
    }
}

impl Provider {
    /// Sends one authenticated GET and classifies the answer.
    pub async fn validate(
        &self,
        credential: &Credential,
        options: &ValidationOptions,
    ) -> Result<ValidationOutcome, ValidationError> {
        let configured = self.validation();
        let Some(url) = options.endpoint.as_deref().or(configured.map(|v| v.url.as_str())) else {
            return Ok(ValidationOutcome::NotSupported);
        };
        let target = Target::parse(url)?;
        let request = self.validation_request(&target, credential)?;
        let tls = TlsConnector::from(Arc::new(client_config(options.extra_root_pem.as_deref())?));
        let expect_status = configured.map_or(200, |v| v.expect_status);
        let exchange = send(tls, &target, request);
        let status = match tokio::time::timeout(options.timeout, exchange).await {
            Ok(Ok(status)) => status,
            Ok(Err(reason)) => return Ok(ValidationOutcome::Unreachable(reason)),
            Err(_) => {
                return Ok(ValidationOutcome::Unreachable(format!(
                    "no answer from {}:{} within {:?}",
                    target.host, target.port, options.timeout
                )));
            }
        };
        Ok(classify(status, expect_status))
    }

    fn validation_request(
        &self,
        target: &Target,
        credential: &Credential,
    ) -> Result<Request<Empty<Bytes>>, ValidationError> {
        // The header comes from the rule for the provider's own endpoint,
        // even when tests point the request elsewhere.
        let rule_host = self
            .validation()
            .and_then(|v| Target::parse(&v.url).ok())
            .map_or_else(|| target.host.clone(), |t| t.host);
        let mut headers = Vec::new();
        if let Some(auth) = self.validation_header(&rule_host, &credential.token) {
            headers.push(auth);
        }
        headers.extend(self.validation().into_iter().flat_map(|v| v.headers.clone()));

        let mut builder = Request::get(target.uri.clone())
            .header(HOST, target.authority())
            .header(USER_AGENT, concat!("moat/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            let (name, value) = self.header_pair(&name, &value)?;
            builder = builder.header(name, value);
        }
        builder.body(Empty::new()).map_err(|e| ValidationError::InvalidUrl {
            url: target.uri.to_string(),
            reason: e.to_string(),
        })
    }

    fn header_pair(&self, name: &str, value: &str) -> Result<(HeaderName, HeaderValue), ValidationError> {
        let invalid = |reason: String| ValidationError::InvalidHeader {
            provider: self.name().to_owned(),
            header: name.to_owned(),
            reason,
        };
        let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let mut header_value = HeaderValue::from_str(value)
            .map_err(|_| invalid("it contains characters not allowed in HTTP headers".into()))?;
        header_value.set_sensitive(true);
        Ok((header_name, header_value))
    }

    /// The header used to validate a token: the rule for the validation
    /// endpoint's host, or the first rule.
    pub(crate) fn validation_header(&self, host: &str, token: &str) -> Option<(String, String)> {
        let rule = self
            .rules
            .iter()
            .find(|rule| rule.host.matches(host, 443))
            .or_else(|| self.rules.first())?;
        Some((rule.header.clone(), rule.value.render(token)))
    }
}

fn classify(status: u16, expect_status: u16) -> ValidationOutcome {
    match status {
        s if s == expect_status => ValidationOutcome::Valid,
        401 | 403 => ValidationOutcome::Rejected { status },
        _ => ValidationOutcome::UnexpectedStatus { status },
    }
}

/// Connects, sends `request` over HTTP/1.1 and returns the status; any
/// failure is described for an `Unreachable` outcome.
async fn send(tls: TlsConnector, target: &Target, request: Request<Empty<Bytes>>) -> Result<u16, String> {
    let place = format!("{}:{}", target.host, target.port);
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect to {place}: {e}"))?;
    let server_name = ServerName::try_from(target.host.clone())
        .map_err(|e| format!("invalid TLS server name {}: {e}", target.host))?;
    let stream = tls
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {place} failed: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {place} failed: {e}"))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("validation connection closed: {e}");
        }
    });
    let response = sender.send_request(request).await;
    driver.abort();
    response
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("request to {place} failed: {e}"))
}

/// System roots plus `extra_root_pem`, offering HTTP/1.1.
fn client_config(extra_root_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, ValidationError> {
    let trusted = TrustedRoots {
        system: true,
        extra_pem: extra_root_pem,
    };
    let roots = tls::root_store(trusted).map_err(tls_error)?;
    tls::client_config(Arc::new(roots), &[b"http/1.1"]).map_err(tls_error)
}

fn tls_error(error: TlsSetupError) -> ValidationError {
    match error {
        TlsSetupError::InvalidExtraRoot(detail) => ValidationError::InvalidRootCa(detail),
        TlsSetupError::Config(error) => ValidationError::Tls(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_well() {
        assert_eq!(
            ValidationOutcome::Rejected { status: 401 }.to_string(),
            "rejected (HTTP 401)"
        );
        let offline = ValidationOutcome::Unreachable("cannot connect to a:443".into());
        assert_eq!(offline.to_string(), "not checked: cannot connect to a:443");
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(200, 200), ValidationOutcome::Valid);
        assert_eq!(classify(204, 204), ValidationOutcome::Valid);
        assert_eq!(classify(401, 200), ValidationOutcome::Rejected { status: 401 });
        assert_eq!(classify(403, 200), ValidationOutcome::Rejected { status: 403 });
        assert_eq!(classify(500, 200), ValidationOutcome::UnexpectedStatus { status: 500 });
    }

    #[test]
    fn only_https_urls_are_accepted() {
        assert!(Target::parse("http://api.example.test/").is_err());
        assert!(Target::parse("not a url").is_err());
        let target = Target::parse("https://[::1]:8443/user").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("::1", 8443));
        let target = Target::parse("https://api.github.com/user").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("api.github.com", 443));
        assert_eq!(target.authority(), "api.github.com");
    }

    #[test]
    fn garbage_root_pem_is_an_error() {
        let err = client_config(Some(b"not pem")).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
