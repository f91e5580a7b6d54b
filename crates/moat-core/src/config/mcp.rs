//! `mcp:` in `moat.yaml`: remote MCP servers the agent reaches through the
//! proxy's relay (`http://moat-proxy:PORT/mcp/<name>`), which injects the
//! named grant's credential. This module owns the entry's shape, its URL
//! (HTTPS only, no user info, query or fragment) and the per-entry checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Problem;
use super::values;

/// Headers the relay sets itself, or that would confuse it: refused in `headers:`.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

/// One remote MCP server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct McpServer {
    /// Names the relay path (`/mcp/<name>`) and `MOAT_MCP_<NAME>_URL`.
    pub name: String,
    /// The server's endpoint, `https://host[:port]/path`.
    pub url: String,
    /// The grant whose credential the relay injects (`moat grant mcp NAME`
    /// stores `mcp-NAME`).
    pub grant: String,
    /// Extra headers (never a secret: they are in the file) sent upstream.
    #[serde(deserialize_with = "values::scalar_map", skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// The parts of an MCP server's URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpUrl {
    /// Lowercase; an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
}

impl McpUrl {
    /// Parses `https://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("{url:?} must start with https:// (credentials go only over TLS)"))?;
        if rest.contains(['?', '#']) {
            return Err(format!("{url:?} must not have a query or fragment"));
        }
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{url:?} must not contain spaces"));
        }
        let (authority, path) = rest.find('/').map_or((rest, "/"), |slash| rest.split_at(slash));
        if authority.contains('@') {
            return Err(format!("{url:?} must not carry user info (use a grant)"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| format!("{url:?} has no valid host[:port]"))?;
        Ok(McpUrl {
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_string(),
        })
    }

    /// `host` or `host:port` as a grant's host pattern names it (port 443 left out).
    pub fn host_pattern(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'));
    let port = match port {
        Some(port) => port.parse::<u16>().ok().filter(|p| *p != 0)?,
        None => 443,
    };
    valid_host.then_some((host, port))
}

/// A name usable in a URL path and a variable name: lowercase letters,
/// digits, `-` and `_`, starting with a letter.
pub fn check_mcp_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_');
    let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if starts_with_letter && name.chars().all(allowed) && name.len() <= 64 {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must start with a lowercase letter and use only a-z, 0-9, '-' and '_' (at most 64)"
        ))
    }
}

/// The variable holding a server's relay URL for commands other than the
/// agent: `MOAT_MCP_<NAME>_URL`, `-` as `_`, uppercase.
pub fn mcp_url_variable(name: &str) -> String {
    format!("MOAT_MCP_{}_URL", name.to_ascii_uppercase().replace('-', "_"))
}

fn check_header_name(name: &str) -> Result<(), String> {
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token_char) {
        return Err("not a valid header name".to_string());
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err("set by the relay; not allowed here (the grant carries credentials)".to_string());
    }
    Ok(())
}

/// Every problem of `mcp:`: names valid and unique (also as variables),
/// URLs https, grants named, header names and values valid.
pub(super) fn check_servers(servers: &[McpServer], problems: &mut Vec<Problem>) {
    for (i, server) in servers.iter().enumerate() {
        let field = |key: &str| format!("mcp[{i}].{key}");
        if let Err(message) = check_mcp_name(&server.name) {
            problems.push(Problem::new(field("name"), message));
        } else if let Some(first) = servers[..i]
            .iter()
            .position(|other| mcp_url_variable(&other.name) == mcp_url_variable(&server.name))
        {
            problems.push(Problem::new(
                field("name"),
                format!("{:?} is already used by mcp[{first}]", server.name),
            ));
        }
        if let Err(message) = McpUrl::parse(&server.url) {
            problems.push(Problem::new(field("url"), message));
        }
        if server.grant.trim().is_empty() {
            problems.push(Problem::new(
                field("grant"),
                "must name the grant whose credential the relay injects",
            ));
        }
        for (name, value) in &server.headers {
            if let Err(message) = check_header_name(name) {
                problems.push(Problem::new(field(&format!("headers.{name}")), message));
            } else if value.chars().any(|c| c.is_control()) {
                problems.push(Problem::new(
                    field(&format!("headers.{name}")),
                    "value must not contain control characters",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, url: &str) -> McpServer {
        McpServer {
            name: name.into(),
            url: url.into(),
            grant: "mcp-docs".into(),
            headers: BTreeMap::new(),
        }
    }

    fn problems(servers: &[McpServer]) -> Vec<String> {
        let mut problems = Vec::new();
        check_servers(servers, &mut problems);
        problems
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect()
    }

    #[test]
    fn urls_split_into_host_port_and_path() {
        let url = McpUrl::parse("https://MCP.Example.com/v1/mcp").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("mcp.example.com", 443, "/v1/mcp")
        );
        assert_eq!(url.host_pattern(), "mcp.example.com");
        let url = McpUrl::parse("https://mcp.example.com:8443").unwrap();
        assert_eq!((url.port, url.path.as_str()), (8443, "/"));
        assert_eq!(url.host_pattern(), "mcp.example.com:8443");
        let url = McpUrl::parse("https://[::1]:9000/mcp").unwrap();
        assert_eq!((url.host.as_str(), url.host_pattern().as_str()), ("::1", "[::1]:9000"));
        for bad in [
            "http://mcp.example.com/mcp",
            "https://user:pw@mcp.example.com/",
            "https://mcp.example.com/mcp?key=1",
            "https://mcp.example.com/#x",
            "https://:443/",
            "https://mcp.example.com:0/",
            "https://mcp example.com/",
            "mcp.example.com",
        ] {
            assert!(McpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_unique_even_as_variables_and_headers_are_checked() {
        let mut with_headers = server("docs", "https://a.example.com/mcp");
        with_headers.headers.insert("X-Org".into(), "acme".into());
        assert!(problems(&[with_headers.clone()]).is_empty());
        assert_eq!(mcp_url_variable("my-docs"), "MOAT_MCP_MY_DOCS_URL");

        let found = problems(&[
            server("my-docs", "https://a.example.com/"),
            server("my_docs", "https://b.example.com/"),
            server("Bad Name", "https://c.example.com/"),
            McpServer {
                grant: " ".into(),
                ..server("plain", "http://d.example.com/")
            },
        ]);
        assert!(
            found[0].starts_with("mcp[1].name: \"my_docs\" is already used by mcp[0]"),
            "{found:?}"
        );
        assert!(found[1].starts_with("mcp[2].name:"), "{found:?}");
        assert!(found[2].starts_with("mcp[3].url:"), "{found:?}");
        assert!(found[3].starts_with("mcp[3].grant:"), "{found:?}");

        for bad in ["Authorization", "host", "X Bad"] {
            let mut entry = server("docs", "https://a.example.com/");
            entry.headers.insert(bad.into(), "v".into());
            assert_eq!(problems(&[entry]).len(), 1, "{bad}");
        }
    }
}
