//! A run's remote MCP servers (`mcp:`) on the container side: the proxy
//! routes registered for them, the relay URL of each
//! (`http://moat-proxy:PORT/mcp/<name>`) in `MOAT_MCP_<NAME>_URL`, and the
//! `mcpServers` entries added to a staged Claude Code `.claude.json`. The
//! entries carry the run's proxy token as their bearer (the container holds
//! it already, in its proxy variables): it names the run to the relay and
//! is removed there; the server's credential never enters the container.

use moat_api::HomeFile;
use moat_core::config::{McpServer, mcp_url_variable};
use moat_proxy::{McpRoute, PROXY_HOST_NAME, ProxyToken};
use serde_json::{Map, Value, json};

/// The staged file Claude Code reads its user-scope MCP servers from.
const CLAUDE_CONFIG_FILE: &str = ".claude.json";

/// The proxy routes of a run's servers.
pub fn routes(servers: &[McpServer]) -> Vec<McpRoute> {
    servers
        .iter()
        .map(|server| McpRoute {
            name: server.name.clone(),
            url: server.url.clone(),
            headers: server.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        })
        .collect()
}

/// Where the container reaches server `name`.
pub fn relay_url(proxy_port: u16, name: &str) -> String {
    format!("http://{PROXY_HOST_NAME}:{proxy_port}/mcp/{name}")
}

/// `MOAT_MCP_<NAME>_URL` for each server.
pub fn container_env(servers: &[McpServer], proxy_port: u16) -> Vec<(String, String)> {
    servers
        .iter()
        .map(|server| (mcp_url_variable(&server.name), relay_url(proxy_port, &server.name)))
        .collect()
}

/// What staging needs to point an agent's config at the relay.
#[derive(Clone)]
pub struct RelayAccess {
    pub proxy_port: u16,
    pub token: ProxyToken,
}

/// `files` with the servers added to a staged `.claude.json` (other files,
/// and a run without servers, unchanged).
pub fn stage_claude_servers(files: &[HomeFile], servers: &[McpServer], access: &RelayAccess) -> Vec<HomeFile> {
    files
        .iter()
        .map(|file| {
            if file.path != CLAUDE_CONFIG_FILE || servers.is_empty() {
                return file.clone();
            }
            HomeFile {
                contents: with_servers(&file.contents, servers, access),
                ..file.clone()
            }
        })
        .collect()
}

/// The Claude config `contents` with an `mcpServers` entry per server
/// (entries of the same name replaced); contents that are not a JSON
/// object become one holding only the servers.
fn with_servers(contents: &str, servers: &[McpServer], access: &RelayAccess) -> String {
    let mut config = match serde_json::from_str::<Value>(contents) {
        Ok(Value::Object(object)) => object,
        _ => Map::new(),
    };
    let entries = config.entry("mcpServers").or_insert_with(|| Value::Object(Map::new()));
    if !entries.is_object() {
        *entries = Value::Object(Map::new());
    }
    if let Value::Object(entries) = entries {
        for server in servers {
            entries.insert(
                server.name.clone(),
                json!({
                    "type": "http",
                    "url": relay_url(access.proxy_port, &server.name),
                    "headers": {"Authorization": format!("Bearer {}", access.token.as_str())},
                }),
            );
        }
    }
    Value::Object(config).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str) -> McpServer {
        McpServer {
            name: name.into(),
            url: "https://mcp.example.com/mcp".into(),
            grant: format!("mcp-{name}"),
            headers: [("X-Org".to_string(), "acme".to_string())].into(),
        }
    }

    fn file(path: &str, contents: &str) -> HomeFile {
        HomeFile {
            path: path.into(),
            mode: 0o600,
            contents: contents.into(),
        }
    }

    #[test]
    fn claude_config_gains_http_servers_on_the_relay_and_keeps_its_settings() {
        let access = RelayAccess {
            proxy_port: 18080,
            token: ProxyToken::generate(),
        };
        let files = [
            file(".claude/.credentials.json", "{\"claudeAiOauth\":{}}"),
            file(
                ".claude.json",
                "{\"hasCompletedOnboarding\":true,\"mcpServers\":{\"local\":{\"command\":\"x\"}}}",
            ),
        ];
        let staged = stage_claude_servers(&files, &[server("docs"), server("issues")], &access);
        assert_eq!(staged[0], files[0]);
        let config: Value = serde_json::from_str(&staged[1].contents).unwrap();
        assert_eq!(config["hasCompletedOnboarding"], true);
        assert_eq!(config["mcpServers"]["local"]["command"], "x", "stdio servers stay");
        let docs = &config["mcpServers"]["docs"];
        assert_eq!(docs["type"], "http");
        assert_eq!(docs["url"], "http://moat-proxy:18080/mcp/docs");
        assert_eq!(
            docs["headers"]["Authorization"],
            format!("Bearer {}", access.token.as_str()).as_str()
        );
        assert!(
            !staged[1].contents.contains("acme"),
            "extra headers are the relay's to add"
        );
        assert_eq!(
            config["mcpServers"]["issues"]["url"],
            "http://moat-proxy:18080/mcp/issues"
        );
        assert_eq!(staged[1].mode, 0o600);
    }

    #[test]
    fn every_server_gets_its_url_variable() {
        assert_eq!(
            container_env(&[server("my-docs")], 9000),
            [(
                "MOAT_MCP_MY_DOCS_URL".to_string(),
                "http://moat-proxy:9000/mcp/my-docs".to_string()
            )]
        );
    }
}
