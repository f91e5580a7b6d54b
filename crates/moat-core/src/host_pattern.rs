//! Host patterns, the one definition used by moat.yaml's network rules and
//! `--allow-host`, the proxy's policy and the credential providers'
//! injection rules (proxy.md, "Injection" and "Network policy"): `host`
//! (exact), `host:port`, and `*.suffix` (any subdomain, never the apex
//! itself). A pattern without a port matches ports 80 and 443 only. One
//! parser means a pattern the CLI accepts is one the daemon accepts.

use std::fmt;
use std::str::FromStr;

/// Ports a pattern without an explicit port matches.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// A parsed host pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostMatch {
    Exact(String),
    /// `*.example.com` stored as `example.com`.
    Subdomains(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid host pattern {pattern:?}: {reason}")]
pub struct HostPatternError {
    pub pattern: String,
    pub reason: &'static str,
}

impl HostPattern {
    /// Parses `host`, `host:port`, `*.suffix`, `*.suffix:port` or
    /// `[ipv6]:port`. Hosts are case-insensitive.
    pub fn parse(pattern: &str) -> Result<Self, HostPatternError> {
        let fail = |reason| HostPatternError {
            pattern: pattern.to_owned(),
            reason,
        };
        let (host, port) = split_port(pattern.trim()).map_err(fail)?;
        let host = host.to_ascii_lowercase();
        let host = match host.strip_prefix("*.") {
            Some(suffix) => HostMatch::Subdomains(check_host(suffix).map_err(fail)?),
            None => HostMatch::Exact(check_host(&host).map_err(fail)?),
        };
        Ok(HostPattern { host, port })
    }

    /// The port the pattern names, if it names one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether the pattern names a port (rather than matching 80 and 443).
    pub fn has_port(&self) -> bool {
        self.port.is_some()
    }

    /// True for an exact host with an explicit port (an explicit opt-in that
    /// may reach loopback or link-local addresses).
    pub fn is_explicit_host_port(&self) -> bool {
        matches!(self.host, HostMatch::Exact(_)) && self.port.is_some()
    }

    /// Whether a request to `host` on `port` is covered by this pattern.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let port_ok = match self.port {
            Some(expected) => port == expected,
            None => DEFAULT_PORTS.contains(&port),
        };
        port_ok && self.matches_host(&normalize_host(host))
    }

    fn matches_host(&self, host: &str) -> bool {
        match &self.host {
            HostMatch::Exact(expected) => host == expected,
            HostMatch::Subdomains(suffix) => host
                .strip_suffix(suffix.as_str())
                .and_then(|label| label.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
        }
    }
}

impl FromStr for HostPattern {
    type Err = HostPatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            HostMatch::Exact(host) => host.clone(),
            HostMatch::Subdomains(suffix) => format!("*.{suffix}"),
        };
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        match self.port {
            Some(port) => write!(f, "{host}:{port}"),
            None => f.write_str(&host),
        }
    }
}

/// Whether `pattern` covers `host:port`; an invalid pattern matches nothing.
pub fn host_matches(pattern: &str, host: &str, port: u16) -> bool {
    HostPattern::parse(pattern).is_ok_and(|p| p.matches(host, port))
}

fn split_port(pattern: &str) -> Result<(&str, Option<u16>), &'static str> {
    if let Some(rest) = pattern.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("missing `]` after IPv6 address")?;
        return match after {
            "" => Ok((host, None)),
            _ => {
                let port = after.strip_prefix(':').ok_or("expected `:port` after `]`")?;
                Ok((host, Some(parse_port(port)?)))
            }
        };
    }
    match pattern.split_once(':') {
        None => Ok((pattern, None)),
        Some((_, port)) if port.contains(':') => Err("IPv6 addresses must be written as [addr]"),
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
    }
}

fn parse_port(port: &str) -> Result<u16, &'static str> {
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("port must be a number from 1 to 65535"),
        Ok(port) => Ok(port),
    }
}

fn check_host(host: &str) -> Result<String, &'static str> {
    if host.is_empty() {
        return Err("host is empty");
    }
    // A fully qualified name's root dot (`example.com.`) names the same host.
    let host = host.strip_suffix('.').filter(|h| !h.is_empty()).unwrap_or(host);
    if host.contains('*') {
        return Err("`*` is allowed only as a leading `*.`");
    }
    if host.starts_with('.') || host.ends_with('.') || host.contains("..") {
        return Err("host has an empty label");
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_');
    if !host.chars().all(valid) {
        return Err("host may contain only letters, digits, `-`, `_` and `.`");
    }
    Ok(host.to_owned())
}

/// Lowercase, without IPv6 brackets or a trailing root dot.
fn normalize_host(host: &str) -> String {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_hosts_match_case_insensitively_on_default_ports() {
        assert!(host_matches("api.github.com", "api.github.com", 443));
        assert!(host_matches("api.github.com", "API.GitHub.com", 80));
        assert!(host_matches("API.GITHUB.COM", "api.github.com.", 443));
        assert!(!host_matches("api.github.com", "api.github.com", 8443));
        assert!(!host_matches("api.github.com", "github.com", 443));
        assert!(!host_matches("api.github.com", "evilapi.github.com", 443));
        assert!(!host_matches("github.com", "github.com.evil.test", 443));
    }

    #[test]
    fn an_explicit_port_matches_only_that_port() {
        assert!(host_matches("localhost:8443", "localhost", 8443));
        assert!(!host_matches("localhost:8443", "localhost", 443));
        assert!(host_matches("[::1]:9000", "[::1]", 9000));
        assert!(host_matches("[::1]", "::1", 443));
    }

    #[test]
    fn wildcards_match_subdomains_but_not_the_apex() {
        assert!(host_matches("*.example.com", "a.example.com", 443));
        assert!(host_matches("*.example.com", "a.b.example.com", 80));
        assert!(!host_matches("*.example.com", "example.com", 443));
        assert!(!host_matches("*.example.com", "badexample.com", 443));
        assert!(!host_matches("*.example.com", "a.example.com", 8080));
        assert!(host_matches("*.example.com:8080", "a.example.com", 8080));
    }

    #[test]
    fn malformed_patterns_are_rejected_with_a_reason() {
        for (pattern, reason) in [
            ("", "host is empty"),
            ("*.", "host is empty"),
            ("a.*.com", "`*` is allowed only as a leading `*.`"),
            ("example.com:0", "port must be a number from 1 to 65535"),
            ("example.com:https", "port must be a number from 1 to 65535"),
            ("::1", "IPv6 addresses must be written as [addr]"),
            (
                "exa mple.com",
                "host may contain only letters, digits, `-`, `_` and `.`",
            ),
            ("a..com", "host has an empty label"),
        ] {
            assert_eq!(HostPattern::parse(pattern).unwrap_err().reason, reason, "{pattern}");
            assert!(!host_matches(pattern, "example.com", 443));
        }
    }

    #[test]
    fn display_round_trips() {
        for pattern in ["api.github.com", "*.example.com:8443", "[::1]:9000", "localhost"] {
            let parsed = HostPattern::parse(pattern).unwrap();
            assert_eq!(parsed.to_string(), pattern);
            assert_eq!(HostPattern::parse(&parsed.to_string()).unwrap(), parsed);
        }
    }
}
