//! The small HTTP client the OAuth flows use: one request per connection
//! (GET for discovery, form POST for the token and device endpoints) over
//! HTTPS, or plain HTTP to a loopback issuer (tests, local issuers). Every
//! exchange is bounded by a timeout and every answer by a size limit.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use moat_core::tls::{self, TrustedRoots};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::Url;

use super::OauthError;

/// Bound on one exchange with the issuer (connect, TLS, request, answer).
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer read from an issuer.
const MAX_BODY: usize = 256 * 1024;

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// Talks to one issuer's endpoints.
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Trusts the system roots plus `extra_root_pem` (corporate CAs, tests).
    pub fn new(extra_root_pem: Option<&[u8]>, timeout: Duration) -> Result<Self, OauthError> {
        let trusted = TrustedRoots {
            system: true,
            extra_pem: extra_root_pem,
        };
        let roots = tls::root_store(trusted).map_err(|e| OauthError::Tls(e.to_string()))?;
        let config = tls::client_config(Arc::new(roots), &[b"http/1.1"]).map_err(|e| OauthError::Tls(e.to_string()))?;
        Ok(Client {
            tls: TlsConnector::from(Arc::new(config)),
            timeout,
        })
    }

    pub async fn get(&self, url: &Url) -> Result<Answer, OauthError> {
        self.send(url, None).await
    }

    /// POSTs `form` as `application/x-www-form-urlencoded`.
    pub async fn post_form(&self, url: &Url, form: &[(&str, &str)]) -> Result<Answer, OauthError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.send(url, Some(body)).await
    }

    async fn send(&self, url: &Url, form: Option<String>) -> Result<Answer, OauthError> {
        let exchange = self.exchange(url, form);
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(OauthError::Unreachable {
                url: without_query(url),
                reason: format!("no answer within {:?}", self.timeout),
            }),
        }
    }

    async fn exchange(&self, url: &Url, form: Option<String>) -> Result<Answer, OauthError> {
        let unreachable = |reason: String| OauthError::Unreachable {
            url: without_query(url),
            reason,
        };
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| unreachable(format!("cannot connect: {e}")))?;
        let request = build_request(url, form).map_err(|e| unreachable(e.to_string()))?;
        if url.scheme() == "http" {
            return round_trip(tcp, request).await.map_err(unreachable);
        }
        let server_name = ServerName::try_from(host).map_err(|e| unreachable(format!("invalid TLS name: {e}")))?;
        let stream = self
            .tls
            .connect(server_name, tcp)
            .await
            .map_err(|e| unreachable(format!("TLS handshake failed: {e}")))?;
        round_trip(stream, request).await.map_err(unreachable)
    }
}

fn build_request(url: &Url, form: Option<String>) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let builder = Request::builder()
        .uri(path)
        .header(HOST, authority)
        .header(ACCEPT, "application/json")
        .header(USER_AGENT, concat!("moat/", env!("CARGO_PKG_VERSION")));
    match form {
        Some(body) => builder
            .method("POST")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body))),
        None => builder.method("GET").body(Full::new(Bytes::new())),
    }
}

async fn round_trip<S>(stream: S, request: Request<Full<Bytes>>) -> Result<Answer, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("oauth connection closed: {e}");
        }
    });
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?
            .to_bytes();
        Ok(Answer { status, body })
    }
    .await;
    driver.abort();
    answer
}

/// A URL for messages: never its query (which may carry codes).
pub fn without_query(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// Parses an issuer or endpoint URL: `https://`, or `http://` to a loopback
/// address only, with no credentials in it.
pub fn endpoint_url(what: &str, text: &str) -> Result<Url, OauthError> {
    let invalid = |reason: &str| OauthError::InvalidUrl {
        what: what.to_owned(),
        url: text.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials do not belong in the URL"));
    }
    match url.scheme() {
        "https" if url.host_str().is_some() => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(invalid("only https:// is allowed (http:// only to a loopback address)")),
        _ => Err(invalid("expected an https:// URL")),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_only_for_loopback_issuers() {
        assert!(endpoint_url("--issuer", "https://auth.example.com").is_ok());
        assert!(endpoint_url("--issuer", "http://127.0.0.1:8080/").is_ok());
        assert!(endpoint_url("--issuer", "http://[::1]:8080/").is_ok());
        assert!(endpoint_url("--issuer", "http://localhost:8080/").is_ok());
        let err = endpoint_url("--issuer", "http://auth.example.com").unwrap_err();
        assert!(err.to_string().contains("only https://"), "{err}");
        assert!(endpoint_url("--token-url", "https://u:p@auth.example.com/t").is_err());
        assert!(endpoint_url("--token-url", "ftp://auth.example.com/t").is_err());
        assert!(endpoint_url("--token-url", "not a url").is_err());
    }

    #[test]
    fn shown_urls_drop_the_query() {
        let url = Url::parse("https://a.example/cb?code=secret-code&state=s").unwrap();
        assert_eq!(without_query(&url), "https://a.example/cb");
    }
}
