//! The narrowest `network.rules` that would have
//! allowed exactly the requests a run made (docs/policy.md), for `moat policy suggest`.
//!
//! Each allowed request of the trace becomes (host pattern, method, path as
//! rules match it). Paths of one host and method that agree segment by
//! segment, except at segments that look like identifiers (numbers, UUIDs,
//! hex digests, long opaque tokens, redacted values), share one rule with a
//! `*` where those identifiers vary; a segment that does not vary stays
//! literal. Nothing else is generalised: no `**`, no `*` method, no host
//! wildcard. The proposal is checked against the proxy's own matcher before
//! it is shown: every traced request it stands for must be allowed.

use std::collections::BTreeMap;

use moat_api::suggestion::{HostSuggestion, RuleSuggestion, Skipped, Suggestion};
use moat_core::config::{RequestRule, RuleAction, check_host_pattern};
use moat_proxy::{PolicyCheck, ProxyError, rule_matching_path};
use serde_json::Value;

/// The records of a run's `network.jsonl` (a missing file is an empty
/// trace; lines that are not JSON are skipped).
pub fn read_trace(path: &std::path::Path) -> std::io::Result<Vec<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// What the trace writes in place of a secret.
const REDACTED: &str = "[REDACTED]";

#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    #[error("the suggested rules do not compile: {0}")]
    Proxy(#[from] ProxyError),
    #[error("the suggested rules do not allow {method} {target}, which the run made; this is a bug in moat")]
    Uncovered { method: String, target: String },
}

/// One request as a rule sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    /// The host pattern that names its destination (`host`, or `host:port`
    /// off 80 and 443).
    pattern: String,
    method: String,
    /// Segments of the path as rules match it (normalised, no `;params`).
    segments: Vec<String>,
}

/// The proposal for a trace's records (the lines of `network.jsonl`).
pub fn suggest(records: &[Value]) -> Result<Suggestion, SuggestError> {
    let mut skipped = Skipped::default();
    let observed: Vec<Observed> = records
        .iter()
        .filter_map(|record| observe(record, &mut skipped))
        .collect();
    let suggestion = Suggestion {
        hosts: propose(&observed),
        skipped,
    };
    check_covers(&suggestion, &observed)?;
    Ok(suggestion)
}

/// Every request the proposal stands for must pass the proxy's own
/// matcher in strict mode: a proposal that would block the run it came
/// from is a bug, never output.
fn check_covers(suggestion: &Suggestion, observed: &[Observed]) -> Result<(), SuggestError> {
    let check = PolicyCheck::compile(&suggestion.network_policy())?;
    for request in observed {
        let (host, port) = split_pattern(&request.pattern);
        let path = format!("/{}", request.segments.join("/")).replace(REDACTED, "REDACTED");
        if !check.allows(&request.method, host, port, &path) {
            return Err(SuggestError::Uncovered {
                method: request.method.clone(),
                target: format!("{}{path}", request.pattern),
            });
        }
    }
    Ok(())
}

// === reading the trace ===

/// The request a trace record stands for, if the proposal should allow it.
fn observe(record: &Value, skipped: &mut Skipped) -> Option<Observed> {
    let method = record["method"].as_str()?;
    if method == "CONNECT" {
        skipped.connections += 1;
        return None;
    }
    if record["decision"].as_str() != Some("allow") {
        skipped.refused += 1;
        return None;
    }
    let Some((pattern, path)) = record["url"].as_str().and_then(split_url) else {
        skipped.unnameable_hosts += 1;
        return None;
    };
    let Some(matching) = rule_matching_path(&path) else {
        skipped.unjudgeable_paths += 1;
        return None;
    };
    Some(Observed {
        pattern,
        method: method.to_ascii_uppercase(),
        segments: matching
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// `scheme://host[:port]/path?query` → (host pattern, path without the
/// query); `None` for a host no rule can name.
fn split_url(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = if scheme == "http" { 80 } else { 443 };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let path = path.split('?').next().unwrap_or("/");
    if authority.starts_with('[') || authority.contains(REDACTED) {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (authority, default_port),
    };
    let pattern = if port == 80 || port == 443 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    Some((check_host_pattern(&pattern).ok()?, path.to_string()))
}

/// A host pattern's name and the port to check it with.
fn split_pattern(pattern: &str) -> (&str, u16) {
    match pattern.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().unwrap_or(443)),
        None => (pattern, 443),
    }
}

// === generalising ===

/// How a path segment takes part in grouping: literally, or as an
/// identifier (with the extension it keeps, as in `42.json`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Literal(String),
    Identifier { suffix: String },
}

fn part_of(segment: &str) -> Part {
    if segment.contains(REDACTED) || is_identifier(segment) {
        return Part::Identifier { suffix: String::new() };
    }
    match segment.rsplit_once('.') {
        Some((stem, ext))
            if is_identifier(stem) && !ext.is_empty() && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            Part::Identifier {
                suffix: format!(".{ext}"),
            }
        }
        _ => Part::Literal(segment.to_string()),
    }
}

/// Numbers, UUIDs, hex digests (7+ hex digits with a digit: git object
/// ids, hashes) and long opaque tokens (16+ letters, digits, `-` or `_`
/// with both letters and digits: base64url ids, ULIDs).
fn is_identifier(segment: &str) -> bool {
    let digits = segment.chars().filter(char::is_ascii_digit).count();
    let letters = segment.chars().filter(char::is_ascii_alphabetic).count();
    let all = |f: fn(char) -> bool| !segment.is_empty() && segment.chars().all(f);
    all(|c| c.is_ascii_digit())
        || is_uuid(segment)
        || (segment.len() >= 7 && digits > 0 && all(|c| c.is_ascii_hexdigit()))
        || (segment.len() >= 16
            && digits > 0
            && letters > 0
            && all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

fn is_uuid(segment: &str) -> bool {
    let groups: Vec<&str> = segment.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Groups the requests by host, method and path shape, and writes one rule
/// per group.
fn propose(observed: &[Observed]) -> Vec<HostSuggestion> {
    type Shape = (String, Vec<Part>);
    let mut groups: BTreeMap<String, BTreeMap<Shape, Vec<&Observed>>> = BTreeMap::new();
    for request in observed {
        let shape = request.segments.iter().map(|s| part_of(s)).collect();
        groups
            .entry(request.pattern.clone())
            .or_default()
            .entry((request.method.clone(), shape))
            .or_default()
            .push(request);
    }
    groups
        .into_iter()
        .map(|(host, shapes)| {
            let mut rules: Vec<RuleSuggestion> = shapes
                .into_values()
                .map(|members| RuleSuggestion {
                    rule: rule_for(&members).to_string(),
                    requests: members.len(),
                })
                .collect();
            rules.sort_by_key(|r| rule_order(&r.rule));
            HostSuggestion {
                host,
                requests: rules.iter().map(|r| r.requests).sum(),
                rules,
            }
        })
        .collect()
}

/// Rules sorted by path, then method.
fn rule_order(rule: &str) -> (String, String) {
    let mut words = rule.split_whitespace().skip(1);
    let method = words.next().unwrap_or_default().to_string();
    (words.next().unwrap_or_default().to_string(), method)
}

/// The rule for one group (same method, same shape): each segment literal
/// where every member agrees, `*` (keeping an extension) where they differ
/// or a redacted value stood.
fn rule_for(members: &[&Observed]) -> RequestRule {
    let first = members[0];
    let segments: Vec<String> = first
        .segments
        .iter()
        .enumerate()
        .map(|(i, segment)| {
            let varies = members.iter().any(|m| m.segments[i] != *segment);
            match part_of(segment) {
                Part::Identifier { suffix } if varies || segment.contains(REDACTED) => format!("*{suffix}"),
                _ => segment.clone(),
            }
        })
        .collect();
    RequestRule {
        action: RuleAction::Allow,
        method: first.method.clone(),
        path: format!("/{}", segments.join("/")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_core::config::{NetworkPolicy, PolicyMode};
    use serde_json::json;

    fn allowed(method: &str, url: &str) -> Value {
        json!({"method": method, "url": url, "host": "x", "decision": "allow", "rule": "permissive"})
    }

    fn suggest(records: &[Value]) -> Suggestion {
        super::suggest(records).unwrap()
    }

    fn rules_of(suggestion: &Suggestion) -> Vec<(String, String, usize)> {
        suggestion
            .hosts
            .iter()
            .flat_map(|h| h.rules.iter().map(|r| (h.host.clone(), r.rule.clone(), r.requests)))
            .collect()
    }

    #[test]
    fn identifiers_that_vary_become_a_star_and_the_rest_stays_literal() {
        let mut records: Vec<Value> = (0..20)
            .map(|i| {
                allowed(
                    "GET",
                    &format!("https://api.example.com:8443/items/{}/detail?page={i}", 1000 + i),
                )
            })
            .collect();
        records.push(allowed("GET", "https://api.example.com:8443/v1/user"));
        records.push(allowed("POST", "https://api.example.com:8443/items"));
        records.push(allowed("GET", "https://api.example.com:8443/items/42.json"));
        records.push(allowed("GET", "https://api.example.com:8443/items/43.json"));
        records.push(allowed("GET", "https://cdn.example.com/pkg/0.1.0/app.tgz"));
        let s = suggest(&records);
        assert_eq!(
            rules_of(&s),
            [
                ("api.example.com:8443".into(), "allow POST /items".into(), 1),
                ("api.example.com:8443".into(), "allow GET /items/*.json".into(), 2),
                ("api.example.com:8443".into(), "allow GET /items/*/detail".into(), 20),
                ("api.example.com:8443".into(), "allow GET /v1/user".into(), 1),
                ("cdn.example.com".into(), "allow GET /pkg/0.1.0/app.tgz".into(), 1),
            ]
        );
        assert_eq!(s.requests(), 25);
    }

    #[test]
    fn an_identifier_seen_once_or_always_the_same_stays_literal() {
        let records = [
            allowed("GET", "https://h.example/orders/123"),
            allowed("GET", "https://h.example/sha/0a1b2c3d4e5f/files"),
            allowed("GET", "https://h.example/sha/0a1b2c3d4e5f/files"),
        ];
        assert_eq!(
            rules_of(&suggest(&records)),
            [
                ("h.example".into(), "allow GET /orders/123".into(), 1),
                ("h.example".into(), "allow GET /sha/0a1b2c3d4e5f/files".into(), 2),
            ]
        );
    }

    #[test]
    fn names_that_vary_are_not_identifiers() {
        let records = [
            allowed("GET", "https://h.example/users/alice"),
            allowed("GET", "https://h.example/users/bob"),
            allowed("GET", "https://h.example/v1/x"),
            allowed("GET", "https://h.example/v2/x"),
        ];
        let rules: Vec<String> = rules_of(&suggest(&records)).into_iter().map(|r| r.1).collect();
        assert_eq!(
            rules,
            [
                "allow GET /users/alice",
                "allow GET /users/bob",
                "allow GET /v1/x",
                "allow GET /v2/x"
            ]
        );
    }

    #[test]
    fn identifier_shapes() {
        for id in [
            "7",
            "123456",
            "550e8400-e29b-41d4-a716-446655440000",
            "0a1b2c3",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "V1StGXR8_Z5jdHi6B-myT",
        ] {
            assert!(is_identifier(id), "{id}");
        }
        for word in ["v1", "users", "deadbeef", "facade", "release-notes-page", "", "abc-def"] {
            assert!(!is_identifier(word), "{word}");
        }
    }

    /// Leak and widening: a redacted secret in a path is a `*` even when
    /// seen once (the rule never spells "[REDACTED]"); refused requests,
    /// tunnels and unjudgeable paths are left out and counted.
    #[test]
    fn redacted_refused_and_unjudgeable_requests() {
        let refused = json!({"method": "GET", "url": "https://evil.example/x", "decision": "deny"});
        let connect = json!({"method": "CONNECT", "url": "https://evil.example", "decision": "deny"});
        let summary = json!({"time": "t", "trace_records_dropped": 3});
        let records = [
            allowed("GET", "https://h.example/keys/[REDACTED]/use"),
            allowed("GET", "https://h.example/a%2Fb"),
            allowed("GET", "https://[::1]:8080/x"),
            refused,
            connect,
            summary,
        ];
        let s = suggest(&records);
        assert_eq!(rules_of(&s), [("h.example".into(), "allow GET /keys/*/use".into(), 1)]);
        assert_eq!(
            s.skipped,
            Skipped {
                refused: 1,
                connections: 1,
                unjudgeable_paths: 1,
                unnameable_hosts: 1,
            }
        );
    }

    /// The snippet is read back by moat's own loader, and the rules it holds
    /// allow every request of the trace and nothing the run did not do.
    #[test]
    fn the_snippet_loads_as_moat_yaml_and_is_exactly_as_wide_as_the_run() {
        let records: Vec<Value> = (0..20)
            .map(|i| allowed("GET", &format!("https://api.example.com:8443/items/{}", 7 * i + 3)))
            .chain([
                allowed("DELETE", "https://api.example.com:8443/items/5"),
                allowed("GET", "http://plain.example/"),
            ])
            .collect();
        let s = suggest(&records);
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("moat-suggest");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("moat.yaml");
        std::fs::write(&file, s.to_yaml("run_test")).unwrap();
        let loaded = moat_core::config::load_project_file(&file).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let policy = NetworkPolicy::from(&loaded.config.network);
        assert_eq!(policy, s.network_policy());
        assert_eq!(policy.mode, PolicyMode::Strict);

        let check = PolicyCheck::compile(&policy).unwrap();
        for i in 0..20 {
            assert!(check.allows("GET", "api.example.com", 8443, &format!("/items/{}", 7 * i + 3)));
        }
        assert!(check.allows("DELETE", "api.example.com", 8443, "/items/5"));
        assert!(check.allows("GET", "plain.example", 80, "/"));
        for (method, host, port, path) in [
            ("DELETE", "api.example.com", 8443, "/items/6"),
            ("POST", "api.example.com", 8443, "/items/3"),
            ("GET", "api.example.com", 8443, "/items/3/x"),
            ("GET", "api.example.com", 8443, "/admin"),
            ("GET", "api.example.com", 443, "/items/3"),
            ("GET", "plain.example", 80, "/x"),
            ("GET", "other.example", 443, "/"),
        ] {
            assert!(!check.allows(method, host, port, path), "{method} {host}:{port}{path}");
        }
    }

    #[test]
    fn an_empty_trace_proposes_no_rules() {
        let s = suggest(&[]);
        assert!(s.hosts.is_empty());
        assert!(s.to_yaml("run_x").contains("rules: []"));
    }
}
