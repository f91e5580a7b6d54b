//! AWS Signature Version 4 (the `AWS4-HMAC-SHA256` scheme) for the few
//! requests moat signs itself: the aws grant's STS `AssumeRole`. Written
//! here rather than taken from `aws-sigv4`, which would bring the AWS SDK's
//! runtime crates for one header; HMAC-SHA256 comes from `ring` (already
//! built for rustls). Checked against the examples of AWS's SigV4
//! documentation.

use std::fmt::Write as _;

use ring::hmac;
use sha2::{Digest, Sha256};

/// The algorithm named in the `Authorization` header and string to sign.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The last element of every credential scope.
const SCOPE_TERMINATOR: &str = "aws4_request";

/// Who signs: an access key id and its secret.
#[derive(Clone, Copy)]
pub struct SigningKey<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
}

impl std::fmt::Debug for SigningKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The request as signed. `headers` must already hold `host` and
/// `x-amz-date` (and `x-amz-security-token` for temporary keys); every
/// header given is signed.
#[derive(Clone, Copy, Debug)]
pub struct RequestToSign<'a> {
    pub method: &'a str,
    /// The absolute path, e.g. `/`.
    pub path: &'a str,
    /// Query parameters, not encoded.
    pub query: &'a [(&'a str, &'a str)],
    pub headers: &'a [(&'a str, &'a str)],
    pub payload: &'a [u8],
}

/// Where the signature is valid: `YYYYMMDD/region/service/aws4_request`.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// `YYYYMMDDTHHMMSSZ`, the request's `x-amz-date`.
    pub amz_date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

impl Scope<'_> {
    fn date(&self) -> &str {
        self.amz_date.get(..8).unwrap_or(self.amz_date)
    }

    fn credential_scope(&self) -> String {
        format!("{}/{}/{}/{SCOPE_TERMINATOR}", self.date(), self.region, self.service)
    }
}

/// The `Authorization` header value for `request`.
pub fn authorization(request: &RequestToSign<'_>, scope: &Scope<'_>, key: SigningKey<'_>) -> String {
    let (canonical, signed_headers) = canonical_request(request);
    let signature = signature(key.secret_access_key, scope, &canonical);
    format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}",
        key.access_key_id,
        scope.credential_scope()
    )
}

/// The canonical request and its signed-header list (`a;b;c`).
pub fn canonical_request(request: &RequestToSign<'_>) -> (String, String) {
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), collapse_spaces(value)))
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_headers = headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method,
        canonical_path(request.path),
        canonical_query(request.query),
        hex::encode(Sha256::digest(request.payload))
    );
    (canonical, signed_headers)
}

/// The hex signature of `canonical` under `secret` for `scope`.
pub fn signature(secret: &str, scope: &Scope<'_>, canonical: &str) -> String {
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        scope.amz_date,
        scope.credential_scope(),
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(secret, scope.date(), scope.region, scope.service);
    hex::encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), string_to_sign.as_bytes()).as_ref())
}

/// The key derived for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    [date, region, service, SCOPE_TERMINATOR]
        .iter()
        .fold(format!("AWS4{secret}").into_bytes(), |key, part| {
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes())
                .as_ref()
                .to_vec()
        })
}

/// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters
/// kept, everything else `%XX` (upper case).
pub fn uri_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// `a=1&b=2` with keys and values encoded, sorted by key then value.
pub fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query.iter().map(|(k, v)| (uri_encode(k), uri_encode(v))).collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/').map(uri_encode).collect::<Vec<_>>().join("/")
}

/// A header value trimmed, with runs of spaces made one.
fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example key of AWS's SigV4 documentation.
    const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    #[test]
    fn the_signing_key_matches_the_documented_derivation() {
        let key = signing_key(EXAMPLE_SECRET, "20120215", "us-east-1", "iam");
        assert_eq!(
            hex::encode(key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    /// AWS's worked example: `GET https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08`.
    #[test]
    fn the_documented_list_users_request_signs_to_its_published_signature() {
        let headers = [
            ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
            ("Host", "iam.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ];
        let request = RequestToSign {
            method: "GET",
            path: "/",
            query: &[("Version", "2010-05-08"), ("Action", "ListUsers")],
            headers: &headers,
            payload: b"",
        };
        let (canonical, signed) = canonical_request(&request);
        assert_eq!(signed, "content-type;host;x-amz-date");
        assert_eq!(
            hex::encode(Sha256::digest(canonical.as_bytes())),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let scope = Scope {
            amz_date: "20150830T123600Z",
            region: "us-east-1",
            service: "iam",
        };
        let key = SigningKey {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: EXAMPLE_SECRET,
        };
        assert_eq!(
            authorization(&request, &scope, key),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn encoding_keeps_only_unreserved_characters() {
        assert_eq!(
            uri_encode("arn:aws:iam::123456789012:role/moat dev~x"),
            "arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fmoat%20dev~x"
        );
        assert_eq!(canonical_query(&[("b", "2"), ("a", "x y")]), "a=x%20y&b=2");
        assert_eq!(collapse_spaces("  a   b "), "a b");
    }
}
