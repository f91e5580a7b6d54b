//! Credential injection rules and applying them to one request's headers
//! (proxy.md § Injection): replace a recognised placeholder, or inject when
//! the client sent nothing; never touch a credential the client chose itself.
//! A rule that injects may also add a token to a comma-separated header
//! (`anthropic-beta: oauth-2025-04-20`) and remove headers that would
//! contradict its credential (a client's `x-api-key` beside an OAuth token).
//! Credentials go only to TLS upstreams: a plain `http://` request gets one
//! only from a rule that opted in with `plaintext` and names its port.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::error::ProxyError;
use crate::policy::{HostPattern, parse_host_pattern};

/// One credential to add to requests for matching hosts.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectionRule {
    /// Exact host, `host:port`, or `*.suffix` (without a port: 80 and 443).
    pub host_pattern: String,
    /// e.g. `Authorization`, `x-api-key`.
    pub header_name: String,
    /// The secret header value, e.g. `Bearer …`.
    pub header_value: String,
    /// The fake credential the container holds; replaced when seen in the header.
    #[serde(default)]
    pub placeholder: Option<String>,
    /// Name of the grant this credential comes from (recorded in the trace).
    pub grant: String,
    /// Also inject into plain-HTTP (unencrypted) requests. Only valid with a
    /// `host:port` pattern: without it, credentials go to TLS upstreams only.
    #[serde(default)]
    pub plaintext: bool,
    /// When the rule injects: (header, token) pairs, each token added to
    /// its header's comma-separated list unless already there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub list_additions: Vec<(String, String)>,
    /// When the rule injects: headers removed from the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removals: Vec<String>,
}

impl std::fmt::Debug for InjectionRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InjectionRule")
            .field("host_pattern", &self.host_pattern)
            .field("header_name", &self.header_name)
            .field("header_value", &"<redacted>")
            .field("placeholder", &self.placeholder.as_ref().map(|_| "<redacted>"))
            .field("grant", &self.grant)
            .field("plaintext", &self.plaintext)
            .field("list_additions", &self.list_additions)
            .field("removals", &self.removals)
            .finish()
    }
}

/// A validated rule ready to apply.
pub(crate) struct CompiledInjection {
    pattern: HostPattern,
    header: HeaderName,
    value: HeaderValue,
    placeholder: Option<String>,
    pub(crate) grant: String,
    /// Opted in to plain-HTTP upstreams (its pattern names a port).
    plaintext: bool,
    list_additions: Vec<(HeaderName, String)>,
    removals: Vec<HeaderName>,
}

/// A run's current set of injection rules (one immutable snapshot).
#[derive(Default)]
pub(crate) struct InjectionSet {
    rules: Vec<CompiledInjection>,
}

impl InjectionSet {
    pub(crate) fn compile(rules: &[InjectionRule]) -> Result<Self, ProxyError> {
        let rules = rules.iter().map(compile_rule).collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// Whether any rule targets this host (such hosts are allowed in strict mode).
    pub(crate) fn covers(&self, host: &str, port: u16) -> bool {
        self.rules.iter().any(|r| r.pattern.matches(host, port))
    }

    /// Applies every matching rule to `headers`; returns the grants injected.
    /// `tls` says whether the upstream connection is encrypted: if not, only
    /// rules that opted in to plaintext apply.
    pub(crate) fn apply(&self, host: &str, port: u16, tls: bool, headers: &mut HeaderMap) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| r.pattern.matches(host, port) && (tls || r.plaintext))
            .filter(|r| r.apply(headers))
            .map(|r| r.grant.clone())
            .collect()
    }

    /// Placeholders (and secrets) to redact from traced URLs.
    pub(crate) fn redactable_strings(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| r.placeholder.as_deref().into_iter().chain(r.value.to_str().ok()))
    }
}

fn compile_rule(rule: &InjectionRule) -> Result<CompiledInjection, ProxyError> {
    let invalid = |reason: String| ProxyError::InvalidInjection {
        host: rule.host_pattern.clone(),
        grant: rule.grant.clone(),
        reason,
    };
    let header = HeaderName::from_bytes(rule.header_name.as_bytes())
        .map_err(|e| invalid(format!("header name {:?}: {e}", rule.header_name)))?;
    let mut value =
        HeaderValue::from_str(&rule.header_value).map_err(|e| invalid(format!("header value for {header}: {e}")))?;
    value.set_sensitive(true);
    let placeholder = rule.placeholder.clone().filter(|p| !p.is_empty());
    let pattern = parse_host_pattern(&rule.host_pattern)?;
    if rule.plaintext && !pattern.has_port() {
        return Err(invalid(
            "plaintext injection needs a pattern naming its port (host:8080)".to_string(),
        ));
    }
    let header_name =
        |name: &str| HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(format!("header name {name:?}: {e}")));
    let mut list_additions = Vec::new();
    for (name, token) in &rule.list_additions {
        HeaderValue::from_str(token).map_err(|e| invalid(format!("token {token:?} for {name}: {e}")))?;
        list_additions.push((header_name(name)?, token.clone()));
    }
    let removals = rule
        .removals
        .iter()
        .map(|name| header_name(name))
        .collect::<Result<_, _>>()?;
    Ok(CompiledInjection {
        pattern,
        header,
        value,
        placeholder,
        grant: rule.grant.clone(),
        plaintext: rule.plaintext,
        list_additions,
        removals,
    })
}

impl CompiledInjection {
    /// Sets the header if absent or carrying the placeholder; true if it did.
    fn apply(&self, headers: &mut HeaderMap) -> bool {
        let replace = match headers.get(&self.header) {
            None => true,
            Some(sent) => self.is_placeholder(sent.as_bytes()),
        };
        if replace {
            headers.insert(self.header.clone(), self.value.clone());
            for removed in &self.removals {
                headers.remove(removed);
            }
            for (name, token) in &self.list_additions {
                add_to_list(headers, name, token);
            }
        }
        replace
    }

    /// Recognises the placeholder verbatim, or inside a `Basic` credential
    /// (git sends `Basic base64(user:placeholder)`).
    fn is_placeholder(&self, sent: &[u8]) -> bool {
        let Some(placeholder) = &self.placeholder else {
            return false;
        };
        let needle = placeholder.as_bytes();
        contains(sent, needle) || decoded_basic(sent).is_some_and(|d| contains(&d, needle))
    }
}

/// Adds `token` to the comma-separated values of `name` (every occurrence
/// joined into one) unless one of them is `token` already.
fn add_to_list(headers: &mut HeaderMap, name: &HeaderName, token: &str) {
    let mut values: Vec<String> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if values.iter().any(|v| v == token) {
        return;
    }
    values.push(token.to_string());
    if let Ok(joined) = HeaderValue::from_str(&values.join(",")) {
        headers.insert(name.clone(), joined);
    }
}

fn decoded_basic(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, credential) = text.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("basic")
        .then(|| BASE64.decode(credential.trim()).ok())
        .flatten()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(host: &str, placeholder: Option<&str>) -> InjectionRule {
        InjectionRule {
            host_pattern: host.to_string(),
            header_name: "Authorization".to_string(),
            header_value: "Bearer real-value-for-tests".to_string(),
            placeholder: placeholder.map(str::to_string),
            grant: "github".to_string(),
            plaintext: false,
            list_additions: Vec::new(),
            removals: Vec::new(),
        }
    }

    /// The claude grant's shape: Bearer, the OAuth beta added, any client
    /// API key removed.
    fn oauth_rule() -> InjectionRule {
        InjectionRule {
            list_additions: vec![("anthropic-beta".into(), "oauth-2025-04-20".into())],
            removals: vec!["x-api-key".into()],
            ..rule("api.anthropic.com", Some("fake-placeholder-1234"))
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn an_injecting_rule_adds_its_list_token_and_removes_contradicting_headers() {
        let set = InjectionSet::compile(&[oauth_rule()]).unwrap();
        let mut sent = headers(&[
            ("authorization", "Bearer fake-placeholder-1234"),
            ("anthropic-beta", "claude-code-20250219, fine-grained"),
            ("x-api-key", "fake-placeholder-1234"),
        ]);
        assert_eq!(set.apply("api.anthropic.com", 443, true, &mut sent), ["github"]);
        assert_eq!(sent["authorization"], "Bearer real-value-for-tests");
        assert_eq!(
            sent["anthropic-beta"],
            "claude-code-20250219,fine-grained,oauth-2025-04-20"
        );
        assert!(sent.get("x-api-key").is_none());

        let mut bare = HeaderMap::new();
        set.apply("api.anthropic.com", 443, true, &mut bare);
        assert_eq!(bare["anthropic-beta"], "oauth-2025-04-20");

        let mut already = headers(&[("anthropic-beta", "oauth-2025-04-20")]);
        set.apply("api.anthropic.com", 443, true, &mut already);
        assert_eq!(already["anthropic-beta"], "oauth-2025-04-20");
    }

    #[test]
    fn a_rule_that_does_not_inject_edits_nothing() {
        let set = InjectionSet::compile(&[oauth_rule()]).unwrap();
        let mut own = headers(&[("authorization", "Bearer users-own"), ("x-api-key", "users-own-key")]);
        assert!(set.apply("api.anthropic.com", 443, true, &mut own).is_empty());
        assert_eq!(own["x-api-key"], "users-own-key");
        assert!(own.get("anthropic-beta").is_none());
    }

    fn apply(rules: &[InjectionRule], host: &str, sent: Option<&str>) -> (Vec<String>, Option<String>) {
        apply_to(rules, host, 443, true, sent)
    }

    fn apply_to(
        rules: &[InjectionRule],
        host: &str,
        port: u16,
        tls: bool,
        sent: Option<&str>,
    ) -> (Vec<String>, Option<String>) {
        let set = InjectionSet::compile(rules).unwrap();
        let mut headers = HeaderMap::new();
        if let Some(sent) = sent {
            headers.insert("authorization", HeaderValue::from_str(sent).unwrap());
        }
        let grants = set.apply(host, port, tls, &mut headers);
        let value = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
        (grants, value)
    }

    #[test]
    fn injects_when_absent_and_only_for_matching_hosts() {
        let rules = [rule("api.example.com", None)];
        let (grants, value) = apply(&rules, "api.example.com", None);
        assert_eq!(grants, ["github"]);
        assert_eq!(value.as_deref(), Some("Bearer real-value-for-tests"));
        assert_eq!(apply(&rules, "evil.example.com", None), (vec![], None));
    }

    #[test]
    fn replaces_placeholder_plain_and_inside_basic() {
        let rules = [rule("*.example.com", Some("fake-placeholder-1234"))];
        let (_, value) = apply(&rules, "a.example.com", Some("token fake-placeholder-1234"));
        assert_eq!(value.as_deref(), Some("Bearer real-value-for-tests"));
        let basic = format!("Basic {}", BASE64.encode("x-access-token:fake-placeholder-1234"));
        let (grants, value) = apply(&rules, "a.example.com", Some(&basic));
        assert_eq!(grants, ["github"]);
        assert_eq!(value.as_deref(), Some("Bearer real-value-for-tests"));
    }

    #[test]
    fn leaves_a_client_chosen_credential_alone() {
        let rules = [rule("api.example.com", Some("fake-placeholder-1234"))];
        let (grants, value) = apply(&rules, "api.example.com", Some("Bearer users-own"));
        assert!(grants.is_empty());
        assert_eq!(value.as_deref(), Some("Bearer users-own"));
    }

    /// Attack: `curl http://api.example.com/` — a pattern without a port
    /// matches port 80 too, and the token must not go out in clear.
    #[test]
    fn plain_http_gets_no_credential_without_an_explicit_opt_in() {
        let rules = [rule("api.example.com", Some("fake-placeholder-1234"))];
        assert_eq!(apply_to(&rules, "api.example.com", 80, false, None), (vec![], None));
        let sent = Some("token fake-placeholder-1234");
        let (grants, value) = apply_to(&rules, "api.example.com", 80, false, sent);
        assert!(grants.is_empty());
        assert_eq!(value.as_deref(), sent, "the placeholder is not swapped for the secret");
        // A named port without the opt-in is not enough either.
        let rules = [rule("api.example.com:8080", None)];
        assert_eq!(apply_to(&rules, "api.example.com", 8080, false, None), (vec![], None));
        assert_eq!(apply_to(&rules, "api.example.com", 8080, true, None).0, ["github"]);
    }

    #[test]
    fn plaintext_opt_in_needs_a_named_port() {
        let opted = InjectionRule {
            plaintext: true,
            ..rule("api.example.com:8080", None)
        };
        let (grants, _) = apply_to(std::slice::from_ref(&opted), "api.example.com", 8080, false, None);
        assert_eq!(grants, ["github"]);
        let portless = InjectionRule {
            plaintext: true,
            ..rule("api.example.com", None)
        };
        assert!(InjectionSet::compile(&[portless]).is_err());
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let text = format!("{:?}", rule("api.example.com", Some("fake-placeholder-1234")));
        assert!(!text.contains("real-value"));
        assert!(!text.contains("fake-placeholder"));
    }
}
