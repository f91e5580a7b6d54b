//! STS `AssumeRole` for the aws grant: one SigV4-signed POST to the
//! grant's STS endpoint with the host's keys, answered with short-lived
//! keys for the role. TLS is verified against the system roots plus an
//! optional extra root (tests, corporate CAs); names may be pinned to
//! addresses (`config.yaml`'s `resolve:`, as for the proxy). The whole
//! exchange is bounded by a timeout that names the endpoint.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use moat_core::tls::{self, TrustedRoots};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::aws::{AwsGrant, SESSION_SECONDS, TemporaryCredentials};
use crate::sigv4::{self, RequestToSign, Scope, SigningKey};

/// Bound on one AssumeRole exchange (connect, TLS, request, response).
pub const STS_TIMEOUT: Duration = Duration::from_secs(20);
/// The STS API version the request names.
const STS_VERSION: &str = "2011-06-15";
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// Largest STS answer read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StsError {
    #[error("the STS endpoint {url:?} is not a usable https:// URL: {reason}")]
    InvalidEndpoint { url: String, reason: String },
    #[error("cannot configure TLS for STS: {0}")]
    Tls(String),
    #[error("STS at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("STS at {endpoint} sent no answer within {timeout:?}")]
    TimedOut { endpoint: String, timeout: Duration },
    #[error("STS refused AssumeRole of {role} (HTTP {status}): {code}: {message}")]
    Refused {
        role: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("STS at {endpoint} answered AssumeRole without {missing}")]
    Malformed { endpoint: String, missing: &'static str },
}

/// Sends AssumeRole requests; built once, used for every run.
#[derive(Clone)]
pub struct StsClient {
    tls: TlsConnector,
    resolve: HashMap<String, IpAddr>,
    timeout: Duration,
}

impl std::fmt::Debug for StsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsClient")
            .field("resolve", &self.resolve)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl StsClient {
    /// Trusts the system roots plus `extra_root_pem`; connects to the
    /// address `resolve` names for a host instead of looking it up.
    pub fn new(
        extra_root_pem: Option<&[u8]>,
        resolve: HashMap<String, IpAddr>,
        timeout: Duration,
    ) -> Result<Self, StsError> {
        let roots = tls::root_store(TrustedRoots {
            system: true,
            extra_pem: extra_root_pem,
        })
        .map_err(|e| StsError::Tls(e.to_string()))?;
        let config = tls::client_config(Arc::new(roots), &[b"http/1.1"]).map_err(|e| StsError::Tls(e.to_string()))?;
        Ok(StsClient {
            tls: TlsConnector::from(Arc::new(config)),
            resolve,
            timeout,
        })
    }

    /// Assumes `grant`'s role with its host keys for [`SESSION_SECONDS`],
    /// as session `session_name` (`[\w+=,.@-]{2,64}`, shown in CloudTrail).
    pub async fn assume_role(
        &self,
        grant: &AwsGrant,
        session_name: &str,
        now: DateTime<Utc>,
    ) -> Result<TemporaryCredentials, StsError> {
        let endpoint = Endpoint::parse(&grant.sts_endpoint)?;
        let request = signed_request(grant, &endpoint, session_name, now)?;
        let exchange = self.send(&endpoint, request);
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| StsError::TimedOut {
                endpoint: grant.sts_endpoint.clone(),
                timeout: self.timeout,
            })??;
        let body = String::from_utf8_lossy(&body);
        if status != 200 {
            return Err(StsError::Refused {
                role: grant.role_arn.clone(),
                status,
                code: xml_text(&body, "Code").unwrap_or_else(|| "no error code".into()),
                message: xml_text(&body, "Message").unwrap_or_else(|| body.chars().take(200).collect()),
            });
        }
        parse_credentials(&body).map_err(|missing| StsError::Malformed {
            endpoint: grant.sts_endpoint.clone(),
            missing,
        })
    }

    async fn send(&self, endpoint: &Endpoint, request: Request<Full<Bytes>>) -> Result<(u16, Bytes), StsError> {
        let unreachable = |reason: String| StsError::Unreachable {
            endpoint: endpoint.uri.to_string(),
            reason,
        };
        let tcp = match self.resolve.get(&endpoint.host) {
            Some(ip) => TcpStream::connect((*ip, endpoint.port)).await,
            None => TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await,
        }
        .map_err(|e| unreachable(format!("cannot connect: {e}")))?;
        let server_name =
            ServerName::try_from(endpoint.host.clone()).map_err(|e| unreachable(format!("invalid TLS name: {e}")))?;
        let stream = self
            .tls
            .connect(server_name, tcp)
            .await
            .map_err(|e| unreachable(format!("TLS handshake failed: {e}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(format!("HTTP handshake failed: {e}")))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("STS connection closed: {e}");
            }
        });
        let answer = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| unreachable(format!("request failed: {e}")))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        driver.abort();
        answer
    }
}

/// The parts of the STS URL a request needs.
struct Endpoint {
    uri: Uri,
    host: String,
    port: u16,
    /// `host[:port]` as the `Host` header (and the signature) carry it.
    authority: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, StsError> {
        let invalid = |reason: &str| StsError::InvalidEndpoint {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(invalid(
                "only https:// is allowed: the request is signed with the host's keys",
            ));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?.clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Endpoint {
            port: authority.port_u16().unwrap_or(443),
            authority: authority.as_str().to_owned(),
            host,
            uri,
        })
    }
}

/// The AssumeRole POST, signed with the grant's host keys.
fn signed_request(
    grant: &AwsGrant,
    endpoint: &Endpoint,
    session_name: &str,
    now: DateTime<Utc>,
) -> Result<Request<Full<Bytes>>, StsError> {
    let duration = SESSION_SECONDS.to_string();
    let form = sigv4::canonical_query(&[
        ("Action", "AssumeRole"),
        ("DurationSeconds", &duration),
        ("RoleArn", &grant.role_arn),
        ("RoleSessionName", session_name),
        ("Version", STS_VERSION),
    ]);
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let mut headers = vec![
        ("content-type", FORM_CONTENT_TYPE),
        ("host", endpoint.authority.as_str()),
        ("x-amz-date", amz_date.as_str()),
    ];
    if let Some(token) = &grant.keys.session_token {
        headers.push(("x-amz-security-token", token.as_str()));
    }
    let path = endpoint.uri.path();
    let authorization = sigv4::authorization(
        &RequestToSign {
            method: "POST",
            path,
            query: &[],
            headers: &headers,
            payload: form.as_bytes(),
        },
        &Scope {
            amz_date: &amz_date,
            region: &grant.region,
            service: "sts",
        },
        SigningKey {
            access_key_id: &grant.keys.access_key_id,
            secret_access_key: &grant.keys.secret_access_key,
        },
    );
    let invalid = |reason: String| StsError::InvalidEndpoint {
        url: grant.sts_endpoint.clone(),
        reason,
    };
    let mut builder = Request::post(path)
        .header(HOST, &endpoint.authority)
        .header(CONTENT_TYPE, FORM_CONTENT_TYPE)
        .header("x-amz-date", &amz_date)
        .header(USER_AGENT, concat!("moat/", env!("CARGO_PKG_VERSION")));
    if let Some(token) = &grant.keys.session_token {
        let mut value =
            HeaderValue::from_str(token).map_err(|_| invalid("the session token is no header value".into()))?;
        value.set_sensitive(true);
        builder = builder.header("x-amz-security-token", value);
    }
    let mut authorization = HeaderValue::from_str(&authorization).map_err(|e| invalid(e.to_string()))?;
    authorization.set_sensitive(true);
    builder
        .header(AUTHORIZATION, authorization)
        .body(Full::new(Bytes::from(form)))
        .map_err(|e| invalid(e.to_string()))
}

/// The credentials of an `AssumeRoleResponse`, or the first element missing.
fn parse_credentials(xml: &str) -> Result<TemporaryCredentials, &'static str> {
    let credentials = xml_text(xml, "Credentials").ok_or("Credentials")?;
    let field = |name: &'static str| xml_text(&credentials, name).ok_or(name);
    let expiration = field("Expiration")?;
    Ok(TemporaryCredentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: field("SessionToken")?,
        expiration: DateTime::parse_from_rfc3339(&expiration)
            .map_err(|_| "a valid Expiration")?
            .to_utc(),
    })
}

/// The text inside the first `<tag>…</tag>` of `xml`, entities decoded.
/// STS answers are flat and machine-written; this is no general XML parser.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(decode_entities(xml[start..end].trim()))
}

fn decode_entities(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::HostKeys;

    fn grant(session_token: Option<&str>) -> AwsGrant {
        AwsGrant::new(
            "arn:aws:iam::123456789012:role/moat-dev",
            "us-east-1",
            Some("https://sts.moat-test.example:8443/"),
            HostKeys {
                access_key_id: "HOSTKEYIDFAKE0000001".into(),
                secret_access_key: "fake-host-secret-for-tests-0000000000000".into(),
                session_token: session_token.map(String::from),
            },
        )
        .unwrap()
    }

    #[test]
    fn the_request_is_a_signed_form_post_that_carries_no_secret() {
        let grant = grant(Some("host-session-token"));
        let endpoint = Endpoint::parse(&grant.sts_endpoint).unwrap();
        let now = DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z").unwrap().to_utc();
        let request = signed_request(&grant, &endpoint, "moat-run_1", now).unwrap();
        assert_eq!(request.method(), "POST");
        assert_eq!(request.headers()[HOST], "sts.moat-test.example:8443");
        assert_eq!(request.headers()["x-amz-date"], "20261203T120000Z");
        assert_eq!(request.headers()["x-amz-security-token"], "host-session-token");
        let auth = request.headers()[AUTHORIZATION].to_str().unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=HOSTKEYIDFAKE0000001/20261203/us-east-1/sts/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
            ),
            "{auth}"
        );
        assert!(!auth.contains("fake-host-secret"));
        let signature = auth.rsplit("Signature=").next().unwrap();
        assert_eq!(signature.len(), 64);
        assert!(
            Endpoint::parse("http://sts.amazonaws.com/").is_err(),
            "plain http is refused"
        );
    }

    #[test]
    fn answers_parse_into_credentials_or_name_what_is_missing() {
        let ok = "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>\
                  <Credentials><AccessKeyId>ASIATEMP</AccessKeyId><SecretAccessKey>s&amp;k</SecretAccessKey>\
                  <SessionToken>tok+/=</SessionToken><Expiration>2026-12-03T12:15:00Z</Expiration></Credentials>\
                  </AssumeRoleResult></AssumeRoleResponse>";
        let credentials = parse_credentials(ok).unwrap();
        assert_eq!(credentials.access_key_id, "ASIATEMP");
        assert_eq!(credentials.secret_access_key, "s&k");
        assert_eq!(credentials.session_token, "tok+/=");
        assert_eq!(credentials.expiration.to_rfc3339(), "2026-12-03T12:15:00+00:00");
        assert_eq!(
            parse_credentials("<Credentials><AccessKeyId>a</AccessKeyId></Credentials>").unwrap_err(),
            "Expiration"
        );
        let refused =
            "<ErrorResponse><Error><Code>AccessDenied</Code><Message>not allowed</Message></Error></ErrorResponse>";
        assert_eq!(xml_text(refused, "Code").as_deref(), Some("AccessDenied"));
    }
}
