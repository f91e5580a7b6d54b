//! Network policy: host patterns, method/path rules (first match wins), and
//! the allow/deny decision for a CONNECT or a request (proxy.md § Network policy).
//!
//! Where a host has method/path rules, a request's path is normalised
//! ([`crate::path`]) before it is matched, and the normalised path is the one
//! forwarded; method-override headers and parameters are refused where a rule
//! names a method, since the server would act on another method than the one
//! checked.

use http::{HeaderMap, Method, Uri};
pub use moat_core::config::{HostRule, NetworkPolicy, PolicyMode};

use moat_core::HostPattern as MoatHostPattern;

use crate::error::ProxyError;
use crate::path::{
    METHOD_OVERRIDE_HEADERS, METHOD_OVERRIDE_PARAM, PathError, normalize_path, normalize_segment,
    query_overrides_method,
};

// === host patterns ===

/// The shared [`MoatHostPattern`], with parse errors in the proxy's terms.
pub(crate) type HostPattern = MoatHostPattern;

pub(crate) fn parse_host_pattern(pattern: &str) -> Result<HostPattern, ProxyError> {
    HostPattern::parse(pattern).map_err(|e| ProxyError::InvalidHostPattern {
        pattern: e.pattern,
        reason: e.reason.to_string(),
    })
}

/// Lowercases and strips a trailing dot and IPv6 brackets.
pub(crate) fn normalize_host(host: &str) -> String {
    let host = host.trim_end_matches('.');
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.to_ascii_lowercase()
}

// === impl MethodPathRule ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Allow,
    Deny,
}

#[derive(Clone, Debug)]
struct MethodPathRule {
    verdict: Verdict,
    /// `None` means any method (`*`).
    method: Option<String>,
    path_segments: Vec<String>,
    text: String,
}

impl MethodPathRule {
    fn parse(host: &str, rule: &str) -> Result<Self, ProxyError> {
        let invalid = |reason: &str| ProxyError::InvalidMethodPathRule {
            host: host.to_string(),
            rule: rule.to_string(),
            reason: reason.to_string(),
        };
        let words: Vec<&str> = rule.split_whitespace().collect();
        let [verdict, method, path] = words[..] else {
            return Err(invalid("expected `allow|deny METHOD /path`"));
        };
        let verdict = match verdict.to_ascii_lowercase().as_str() {
            "allow" => Verdict::Allow,
            "deny" => Verdict::Deny,
            _ => return Err(invalid("must start with allow or deny")),
        };
        if !path.starts_with('/') {
            return Err(invalid("path must start with /"));
        }
        let method = (method != "*").then(|| method.to_ascii_uppercase());
        // Spelled as normalised request paths are, so `%7e` and `~` agree;
        // a deny rule's in lower case (see `matches`).
        let path_segments = path_segments(path)
            .map(|segment| {
                let segment = normalize_segment(segment)?;
                Ok(match verdict {
                    Verdict::Deny => segment.to_ascii_lowercase(),
                    Verdict::Allow => segment,
                })
            })
            .collect::<Result<_, PathError>>()
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(Self {
            verdict,
            method,
            path_segments,
            text: words.join(" "),
        })
    }

    /// Matches a normalised path. A deny rule ignores ASCII case, since many
    /// servers do (GitHub's owner and repository names): `/Admin` cannot
    /// slip past `deny * /admin/**`. An allow rule matches case exactly, so
    /// it never covers more than it names.
    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self.method.as_deref().is_none_or(|m| m == method);
        if !method_ok {
            return false;
        }
        let lowered;
        let path = match self.verdict {
            Verdict::Deny => {
                lowered = path.to_ascii_lowercase();
                &lowered
            }
            Verdict::Allow => path,
        };
        let segments: Vec<&str> = path_segments(path).collect();
        let pattern: Vec<&str> = self.path_segments.iter().map(String::as_str).collect();
        glob_segments(&pattern, &segments)
    }
}

fn path_segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// `**` matches any number of segments, `*` within a segment any characters.
fn glob_segments(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| glob_segments(rest, &path[skip..])),
        Some((first, rest)) => path
            .split_first()
            .is_some_and(|(seg, tail)| glob_chars(first, seg) && glob_segments(rest, tail)),
    }
}

fn glob_chars(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            text.starts_with(prefix)
                && (prefix.len()..=text.len()).any(|i| text.is_char_boundary(i) && glob_chars(rest, &text[i..]))
        }
    }
}

// === impl CompiledPolicy ===

struct CompiledHostRule {
    pattern: HostPattern,
    method_path_rules: Vec<MethodPathRule>,
}

impl CompiledHostRule {
    /// The first method/path rule matching (a normalised path) decides; with
    /// none, the request is denied if any rule allows, else allowed.
    fn decide(&self, host_text: &str, method: &str, path: &str) -> Decision {
        match self.method_path_rules.iter().find(|r| r.matches(method, path)) {
            Some(r) if r.verdict == Verdict::Allow => allow(format!("{host_text}: {}", r.text)),
            Some(r) => deny(format!("{host_text}: {}", r.text)),
            None if self.method_path_rules.iter().any(|r| r.verdict == Verdict::Allow) => {
                deny(format!("{host_text}: no allow rule matches {method} {path}"))
            }
            None => allow(format!("network.rules host {host_text}")),
        }
    }

    /// Whether a rule names a method (not `*`), so a method override matters.
    fn names_a_method(&self) -> bool {
        self.method_path_rules.iter().any(|r| r.method.is_some())
    }
}

/// How a request asks the server to treat it as another method, if it does:
/// an override header, or the `_method` query parameter.
fn method_override(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    if let Some(name) = METHOD_OVERRIDE_HEADERS.iter().find(|name| headers.contains_key(**name)) {
        return Some(format!("the method override header {name}"));
    }
    uri.query()
        .is_some_and(query_overrides_method)
        .then(|| format!("the method override parameter {METHOD_OVERRIDE_PARAM}"))
}

/// A validated policy plus the host patterns of the run's injections.
pub(crate) struct CompiledPolicy {
    mode: PolicyMode,
    rules: Vec<CompiledHostRule>,
}

/// The outcome of a policy check, with the rule that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub allowed: bool,
    /// Human-readable name of the deciding rule.
    pub rule: String,
    /// In shadow mode, for an allowed request: the rule under which
    /// `strict` (with the same rules) would have refused it.
    pub would_block: Option<String>,
}

/// The outcome of checking one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RequestCheck {
    /// Send it: `path_and_query`, when set, is the normalised path (and the
    /// query as sent) to forward in place of the client's.
    Allow {
        rule: String,
        path_and_query: Option<String>,
        /// Shadow mode: why `strict` would have refused it.
        would_block: Option<String>,
    },
    /// Refused by policy (403); `path` is the path the rules judged.
    Deny { decision: Decision, path: String },
    /// Refused because the rules cannot judge the path (400).
    Malformed { rule: String, error: PathError },
}

impl RequestCheck {
    fn from_decision(decision: Decision, path_and_query: Option<String>, path: &str) -> Self {
        if decision.allowed {
            Self::Allow {
                rule: decision.rule,
                path_and_query,
                would_block: decision.would_block,
            }
        } else {
            Self::Deny {
                decision,
                path: path.to_string(),
            }
        }
    }
}

impl CompiledPolicy {
    pub(crate) fn compile(policy: &NetworkPolicy) -> Result<Self, ProxyError> {
        let rules = policy
            .rules
            .iter()
            .map(|rule| {
                let pattern = parse_host_pattern(&rule.host)?;
                let method_path_rules = rule
                    .requests
                    .iter()
                    .map(|r| MethodPathRule::parse(&rule.host, &r.to_string()))
                    .collect::<Result<_, _>>()?;
                Ok(CompiledHostRule {
                    pattern,
                    method_path_rules,
                })
            })
            .collect::<Result<_, ProxyError>>()?;
        Ok(Self {
            mode: policy.mode,
            rules,
        })
    }

    /// Host-level check (on CONNECT). `implicit` names why the run may reach
    /// the host without a rule (a grant's host, a `network.host` port), if it may.
    pub(crate) fn check_host(&self, host: &str, port: u16, implicit: Option<&str>) -> Decision {
        match self.host_rule(host, port) {
            Some(rule) => allow(format!("network.rules host {}", rule.pattern)),
            None => self.unmatched(implicit),
        }
    }

    /// Full check of one request: host, then the host rule's method/path
    /// rules against the normalised path.
    pub(crate) fn check_request(
        &self,
        host: &str,
        port: u16,
        implicit: Option<&str>,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> RequestCheck {
        let Some(rule) = self.host_rule(host, port) else {
            let decision = self.unmatched(implicit);
            return RequestCheck::from_decision(decision, None, uri.path());
        };
        let host_text = rule.pattern.to_string();
        if rule.method_path_rules.is_empty() {
            return RequestCheck::from_decision(allow(format!("network.rules host {host_text}")), None, uri.path());
        }
        if rule.names_a_method()
            && let Some(how) = method_override(uri, headers)
        {
            let decision = deny(format!("{host_text}: {how} is refused where method rules apply"));
            return RequestCheck::from_decision(decision, None, uri.path());
        }
        let path = match normalize_path(uri.path()) {
            Ok(path) => path,
            Err(error) => {
                return RequestCheck::Malformed {
                    rule: format!("{host_text}: ambiguous path"),
                    error,
                };
            }
        };
        let decision = rule.decide(&host_text, method.as_str(), &path.matching);
        let forward = match uri.query() {
            Some(query) => format!("{}?{query}", path.forward),
            None => path.forward.clone(),
        };
        RequestCheck::from_decision(decision, Some(forward), &path.forward)
    }

    /// Whether an explicit `host:port` rule names this destination.
    pub(crate) fn explicitly_names(&self, host: &str, port: u16) -> bool {
        self.rules
            .iter()
            .any(|r| r.pattern.is_explicit_host_port() && r.pattern.matches(host, port))
    }

    fn host_rule(&self, host: &str, port: u16) -> Option<&CompiledHostRule> {
        self.rules.iter().find(|r| r.pattern.matches(host, port))
    }

    /// The decision for a destination no host rule names: the only place
    /// where the mode matters. Shadow allows what strict would refuse, and
    /// says so.
    fn unmatched(&self, implicit: Option<&str>) -> Decision {
        match (self.mode, implicit) {
            (PolicyMode::Permissive, _) => allow("permissive".to_string()),
            (PolicyMode::Strict | PolicyMode::Shadow, Some(reason)) => {
                allow(format!("{}: {reason}", self.mode.as_str()))
            }
            (PolicyMode::Strict, None) => deny(STRICT_NO_RULE.to_string()),
            (PolicyMode::Shadow, None) => Decision {
                allowed: true,
                rule: "shadow".to_string(),
                would_block: Some(STRICT_NO_RULE.to_string()),
            },
        }
    }

    /// Whether this run is in shadow mode (records what strict would refuse).
    pub(crate) fn is_shadow(&self) -> bool {
        self.mode == PolicyMode::Shadow
    }
}

/// Why strict refuses a destination without a rule.
const STRICT_NO_RULE: &str = "strict: no network.rules entry matches this host";

// === impl PolicyCheck ===

/// A policy compiled as the proxy enforces it, for judging requests off the
/// data path (`moat policy suggest` checks its own proposal with it).
pub struct PolicyCheck(CompiledPolicy);

impl PolicyCheck {
    pub fn compile(policy: &NetworkPolicy) -> Result<Self, ProxyError> {
        CompiledPolicy::compile(policy).map(Self)
    }

    /// Whether the rules let `method path_and_query` to `host:port` through
    /// without any implicit allowance (grant hosts, `network.host` ports)
    /// and without a shadow note; the resolved address is not judged.
    pub fn allows(&self, method: &str, host: &str, port: u16, path_and_query: &str) -> bool {
        let (Ok(method), Ok(uri)) = (Method::from_bytes(method.as_bytes()), path_and_query.parse::<Uri>()) else {
            return false;
        };
        let host = normalize_host(host);
        let check = self
            .0
            .check_request(&host, port, None, &method, &uri, &HeaderMap::new());
        matches!(check, RequestCheck::Allow { would_block: None, .. })
    }
}

/// A request path as method/path rules match it (normalised, `;params`
/// dropped), or `None` when the rules cannot judge it.
pub fn rule_matching_path(raw: &str) -> Option<String> {
    normalize_path(raw).ok().map(|path| path.matching)
}

fn allow(rule: String) -> Decision {
    Decision {
        allowed: true,
        rule,
        would_block: None,
    }
}

fn deny(rule: String) -> Decision {
    Decision {
        allowed: false,
        rule,
        would_block: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> HostPattern {
        HostPattern::parse(text).unwrap()
    }

    #[test]
    fn host_patterns_match_exact_port_and_suffix() {
        assert!(pattern("api.example.com").matches("api.example.com", 443));
        assert!(pattern("api.example.com").matches("api.example.com", 80));
        assert!(!pattern("api.example.com").matches("api.example.com", 8443));
        assert!(pattern("api.example.com:8443").matches("api.example.com", 8443));
        assert!(!pattern("api.example.com:8443").matches("api.example.com", 443));
        assert!(pattern("*.example.com").matches("a.b.example.com", 443));
        assert!(!pattern("*.example.com").matches("example.com", 443));
        assert!(!pattern("*.example.com").matches("badexample.com", 443));
        assert!(pattern("API.Example.com.").matches("api.example.com", 443));
        assert!(pattern("[::1]:8080").matches("::1", 8080));
    }

    #[test]
    fn the_proxy_accepts_exactly_the_host_patterns_the_cli_accepts() {
        // Issue 18: `--allow-host a.*.example.com` passed the CLI's check
        // and then failed the run at the daemon.
        for text in [
            "a.*.example.com",
            "*.*.example.com",
            "*.example.com",
            "api.example.com:8443",
            "[::1]:8080",
            "x.com:0",
            "https://x.com",
            "*",
        ] {
            let cli = moat_core::config::check_host_pattern(text).is_ok();
            let proxy = parse_host_pattern(text).is_ok();
            assert_eq!(cli, proxy, "{text:?}: CLI accepts {cli}, proxy accepts {proxy}");
        }
        assert!(moat_core::config::check_host_pattern("a.*.example.com").is_err());
    }

    #[test]
    fn malformed_host_patterns_are_rejected() {
        for bad in ["", "*.", "a.*.com", "host:notaport", "*"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn path_globs() {
        let rule = MethodPathRule::parse("h", "allow GET /repos/**").unwrap();
        assert!(rule.matches("GET", "/repos"));
        assert!(rule.matches("GET", "/repos/a/b/c"));
        assert!(!rule.matches("POST", "/repos/a"));
        assert!(!rule.matches("GET", "/reposx"));
        let rule = MethodPathRule::parse("h", "deny * /admin/*").unwrap();
        assert!(rule.matches("DELETE", "/admin/users"));
        assert!(!rule.matches("GET", "/admin/users/1"));
        let rule = MethodPathRule::parse("h", "allow get /v1/*.json").unwrap();
        assert!(rule.matches("GET", "/v1/models.json"));
        assert!(!rule.matches("GET", "/v1/models.txt"));
        assert!(MethodPathRule::parse("h", "permit GET /").is_err());
        assert!(MethodPathRule::parse("h", "allow GET repos").is_err());
    }

    fn strict(rules: &[(&str, &[&str])]) -> CompiledPolicy {
        let rules = rules
            .iter()
            .map(|(host, mp)| HostRule {
                host: host.to_string(),
                requests: mp.iter().map(|s| s.parse().unwrap()).collect(),
            })
            .collect();
        CompiledPolicy::compile(&NetworkPolicy {
            mode: PolicyMode::Strict,
            rules,
        })
        .unwrap()
    }

    /// Shadow never refuses what permissive allows, notes each request that
    /// strict would refuse, and keeps every refusal the rules themselves make.
    #[test]
    fn shadow_allows_like_permissive_and_notes_what_strict_would_refuse() {
        let rules = vec![HostRule {
            host: "api.example.com".into(),
            requests: vec!["allow GET /items/*".parse().unwrap()],
        }];
        let policy = |mode| {
            CompiledPolicy::compile(&NetworkPolicy {
                mode,
                rules: rules.clone(),
            })
            .unwrap()
        };
        let (shadow, strict) = (policy(PolicyMode::Shadow), policy(PolicyMode::Strict));
        let unlisted = shadow.check_host("other.example.com", 443, None);
        assert!(unlisted.allowed);
        assert_eq!(unlisted.would_block.as_deref(), Some(STRICT_NO_RULE));
        assert!(!strict.check_host("other.example.com", 443, None).allowed);
        let granted = shadow.check_host("other.example.com", 443, Some("grant"));
        assert_eq!((granted.allowed, granted.would_block), (true, None));
        let outcome = check(&shadow, "GET", "/items/1", &[]);
        assert!(
            matches!(outcome, RequestCheck::Allow { would_block: None, .. }),
            "{outcome:?}"
        );
        let outcome = check(&shadow, "DELETE", "/items/1", &[]);
        assert!(matches!(outcome, RequestCheck::Deny { .. }), "{outcome:?}");
        let uri: Uri = "/anything".parse().unwrap();
        let outcome = shadow.check_request("other.example.com", 443, None, &Method::GET, &uri, &HeaderMap::new());
        assert!(
            matches!(&outcome, RequestCheck::Allow { would_block: Some(rule), .. } if rule.starts_with("strict")),
            "{outcome:?}"
        );
    }

    #[test]
    fn policy_check_judges_like_the_data_path() {
        let check = PolicyCheck::compile(&NetworkPolicy {
            mode: PolicyMode::Strict,
            rules: vec![HostRule {
                host: "api.example.com:8443".into(),
                requests: vec!["allow GET /items/*".parse().unwrap()],
            }],
        })
        .unwrap();
        assert!(check.allows("GET", "api.example.com", 8443, "/items/7?x=1"));
        assert!(check.allows("GET", "API.example.com", 8443, "/items/./7"));
        assert!(!check.allows("GET", "api.example.com", 443, "/items/7"));
        assert!(!check.allows("GET", "api.example.com", 8443, "/items/7/x"));
        assert!(!check.allows("POST", "api.example.com", 8443, "/items/7"));
        assert!(!check.allows("GET", "other.example.com", 8443, "/items/7"));
        assert_eq!(rule_matching_path("/a/./b;v=1//c/").as_deref(), Some("/a/b/c/"));
        assert_eq!(rule_matching_path("/a%2Fb"), None);
    }

    #[test]
    fn strict_mode_allows_only_ruled_or_granted_hosts() {
        let policy = strict(&[("api.example.com", &[])]);
        assert!(policy.check_host("api.example.com", 443, None).allowed);
        assert!(!policy.check_host("other.example.com", 443, None).allowed);
        assert!(policy.check_host("other.example.com", 443, Some("grant")).allowed);
    }

    /// Checks `method target` (path and query) with `headers` against `policy`
    /// for api.example.com.
    fn check(policy: &CompiledPolicy, method: &str, target: &str, headers: &[(&str, &str)]) -> RequestCheck {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let uri: Uri = target.parse().unwrap();
        policy.check_request("api.example.com", 443, None, &method, &uri, &map)
    }

    fn allowed(check: &RequestCheck) -> bool {
        matches!(check, RequestCheck::Allow { .. })
    }

    #[test]
    fn method_path_rules_first_match_wins() {
        let policy = strict(&[("api.example.com", &["deny * /repos/secret/**", "allow GET /repos/**"])]);
        assert!(allowed(&check(&policy, "GET", "/repos/public", &[])));
        let RequestCheck::Deny { decision, .. } = check(&policy, "GET", "/repos/secret/x", &[]) else {
            panic!("not denied");
        };
        assert!(decision.rule.contains("deny * /repos/secret/**"), "{}", decision.rule);
        assert!(!allowed(&check(&policy, "POST", "/repos/public", &[])));
    }

    #[test]
    fn deny_only_rules_leave_other_requests_allowed() {
        let policy = strict(&[("api.example.com", &["deny DELETE /**"])]);
        assert!(allowed(&check(&policy, "GET", "/x", &[])));
        assert!(!allowed(&check(&policy, "DELETE", "/x", &[])));
    }

    /// Attack: spell a path so that the raw text escapes a rule that the path
    /// the server resolves falls under. Each must be decided on the path it reaches.
    #[test]
    fn path_tricks_are_judged_on_the_path_they_reach() {
        let policy = strict(&[(
            "api.example.com",
            &["deny * /admin/**", "allow GET /repos/**", "allow * /public/**"],
        )]);
        let denied = [
            // `allow GET /repos/**` must not cover what `..` climbs to
            "/repos/../orgs/x",
            "/repos/%2e%2e/orgs/x",
            "/repos/%2E./orgs/x",
            "/repos/..;x/orgs/x",
            "/repos/x/../../orgs/x",
            // `deny * /admin/**` must hold however /admin is spelled
            "/./admin",
            "/%61dmin",
            "/%61DMIN",
            "/admin;x",
            "/admin;x/users",
            "//admin",
            "/repos/..//admin/users",
            "/Admin/users",
            "/ADMIN",
            "/public/../admin",
        ];
        for target in denied {
            let outcome = check(&policy, "GET", target, &[]);
            assert!(matches!(outcome, RequestCheck::Deny { .. }), "{target}: {outcome:?}");
        }
        let malformed = [
            ("/repos/x%2F..%2F..%2Fadmin", PathError::EncodedSlash),
            ("/repos/x%2f..%2f..%2fadmin", PathError::EncodedSlash),
            ("/repos/x\\..\\..\\admin", PathError::Backslash),
            ("/repos/x%5C..%5C..%5Cadmin", PathError::Backslash),
            ("/repos/x%00/../../admin", PathError::EncodedControl),
            ("/repos/%252e%252e/admin", PathError::EncodedPercent),
            ("/repos/x%3B/admin", PathError::EncodedSemicolon),
        ];
        for (target, expected) in malformed {
            let outcome = check(&policy, "GET", target, &[]);
            assert!(
                matches!(&outcome, RequestCheck::Malformed { error, .. } if *error == expected),
                "{target}: {outcome:?}"
            );
        }
    }

    #[test]
    fn the_normalised_path_is_what_is_forwarded() {
        let policy = strict(&[("api.example.com", &["allow GET /repos/**"])]);
        let cases = [
            ("/repos/x", "/repos/x"),
            ("/repos/./x//y", "/repos/x/y"),
            ("/repos/z/../%78?page=2&q=a%2Fb", "/repos/x?page=2&q=a%2Fb"),
            ("/repos/x;v=1/y", "/repos/x;v=1/y"),
            ("/repos/caf%c3%a9", "/repos/caf%C3%A9"),
        ];
        for (target, forwarded) in cases {
            match check(&policy, "GET", target, &[]) {
                RequestCheck::Allow { path_and_query, .. } => {
                    assert_eq!(path_and_query.as_deref(), Some(forwarded), "{target}");
                }
                other => panic!("{target}: {other:?}"),
            }
        }
        // Without method/path rules the request goes as sent.
        let policy = strict(&[("api.example.com", &[])]);
        match check(&policy, "GET", "/a/../b%2Fc", &[]) {
            RequestCheck::Allow { path_and_query, .. } => assert_eq!(path_and_query, None),
            other => panic!("{other:?}"),
        }
    }

    /// Attack: an allowed GET that the server runs as DELETE through a method
    /// override header or parameter.
    #[test]
    fn method_overrides_are_refused_where_a_rule_names_a_method() {
        let policy = strict(&[("api.example.com", &["allow GET /repos/**"])]);
        for header in ["X-HTTP-Method-Override", "x-http-method", "X-Method-Override"] {
            let outcome = check(&policy, "GET", "/repos/x", &[(header, "DELETE")]);
            let RequestCheck::Deny { decision, .. } = outcome else {
                panic!("{header}: {outcome:?}");
            };
            assert!(decision.rule.contains("method override"), "{}", decision.rule);
        }
        for target in ["/repos/x?_method=DELETE", "/repos/x?a=1&%5Fmethod=delete"] {
            let outcome = check(&policy, "GET", target, &[]);
            assert!(matches!(outcome, RequestCheck::Deny { .. }), "{target}: {outcome:?}");
        }
        // Rules for any method, or no rules at all: an override changes nothing.
        for rules in [&["deny * /admin/**"][..], &[]] {
            let policy = strict(&[("api.example.com", rules)]);
            let outcome = check(&policy, "GET", "/repos/x?_method=DELETE", &[("x-http-method", "PUT")]);
            assert!(allowed(&outcome), "{rules:?}: {outcome:?}");
        }
    }

    #[test]
    fn rule_paths_are_spelled_like_normalised_paths() {
        let policy = strict(&[("api.example.com", &["allow GET /%7euser/%c3%a9/**"])]);
        assert!(allowed(&check(&policy, "GET", "/~user/%C3%A9/x", &[])));
        assert!(MethodPathRule::parse("h", "allow GET /a%2Fb").is_err());
    }
}
