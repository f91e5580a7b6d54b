//! npm grants (`moat grant npm [--registry URL]`): the registry's host gets
//! `Authorization: Bearer <token>` from the proxy, and runs get an npm user
//! config naming the registry with a placeholder token, so npm sends its
//! requests authenticated without ever holding the token.

/// The grant (and provider) name runs use: `grants: [npm]`.
pub const NPM_GRANT: &str = "npm";
/// The registry when `--registry` is not given.
pub const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org/";

#[derive(Debug, thiserror::Error)]
pub enum NpmError {
    #[error("--registry {0}: expected an https:// URL such as {DEFAULT_REGISTRY}")]
    NotHttps(String),
    #[error("--registry {0}: the URL names no host")]
    NoHost(String),
}

/// A registry URL as npm writes it: `https://host[:port]/path/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    /// `host[:port]`, as the proxy's host patterns name it.
    pub host: String,
    /// `host[:port]/path/` (npm keys its per-registry settings by this).
    pub nerf: String,
}

impl Registry {
    pub fn parse(url: &str) -> Result<Self, NpmError> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| NpmError::NotHttps(url.to_string()))?;
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() || host.contains('@') {
            return Err(NpmError::NoHost(url.to_string()));
        }
        let mut nerf = rest.to_string();
        if !nerf.ends_with('/') {
            nerf.push('/');
        }
        let host = host.strip_suffix(":443").unwrap_or(host).to_string();
        Ok(Registry { host, nerf })
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.nerf)
    }

    /// The npm user config of a run: the registry and the placeholder
    /// token npm sends (the proxy replaces the whole header).
    pub fn npmrc(&self, placeholder: &str) -> String {
        format!(
            "# Written by moat for the npm grant; the token is a placeholder the proxy replaces.\n\
             registry={}\n//{}:_authToken={placeholder}\nalways-auth=true\n",
            self.url(),
            self.nerf
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_parse_to_host_and_npm_key() {
        let default = Registry::parse(DEFAULT_REGISTRY).unwrap();
        assert_eq!(default.host, "registry.npmjs.org");
        assert_eq!(default.nerf, "registry.npmjs.org/");
        let private = Registry::parse("https://npm.example.com:8443/api/npm").unwrap();
        assert_eq!(private.host, "npm.example.com:8443");
        assert_eq!(private.url(), "https://npm.example.com:8443/api/npm/");
        let rc = private.npmrc("moat-placeholder-npm-token");
        assert!(rc.contains("registry=https://npm.example.com:8443/api/npm/\n"), "{rc}");
        assert!(rc.contains("//npm.example.com:8443/api/npm/:_authToken=moat-placeholder-npm-token\n"));
        assert!(Registry::parse("http://registry.npmjs.org/").is_err());
        assert!(Registry::parse("https:///x").is_err());
        assert!(Registry::parse("https://user:pw@host/").is_err());
    }
}
