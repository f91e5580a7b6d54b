//! User-defined providers: one YAML file per provider in
//! `MOAT_HOME/providers/*.yaml`. Every problem is reported with the file and
//! the field path (cli.md, "Output conventions").
//!
//! ```yaml
//! name: gitlab
//! hosts: ["gitlab.example.com", "*.gitlab.example.com:8443"]
//! header: PRIVATE-TOKEN
//! prefix: ""                      # e.g. "Bearer "
//! placeholder: moat-placeholder-gitlab-token
//! env: GITLAB_TOKEN               # container sees the placeholder here
//! validate: { url: "https://gitlab.example.com/api/v4/user", expect_status: 200 }
//! plaintext: false                # true: also inject over plain http://, only
//!                                 # for hosts naming their port (host:8080)
//! ```
//!
//! Credentials go only to TLS upstreams. `plaintext: true` is the explicit
//! opt-in for a service reachable only over plain HTTP, and every host of
//! such a provider must name its port, so it never covers port 80 by default.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::credential::CredentialKind;
use crate::provider::{GrantSources, HeaderRule, Provider, ProviderSource, ValidationEndpoint, ValueFormat};
use crate::store::check_name;
use moat_core::HostPattern;

/// Placeholders shorter than this could occur in ordinary traffic.
const MIN_PLACEHOLDER_LEN: usize = 8;

/// Headers a provider may not set: the proxy owns them.
const RESERVED_HEADERS: [&str; 8] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "te",
    "proxy-authorization",
    "proxy-connection",
];

/// Variables moat sets itself in every container.
const RESERVED_ENV: [&str; 11] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "CURL_CA_BUNDLE",
];

/// One problem in one provider file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderFileError {
    pub path: PathBuf,
    /// Field path (`hosts[1]`, `validate.url`); `None` for syntax errors,
    /// whose message carries serde's own location.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ProviderFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {field}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderFile {
    name: String,
    hosts: Vec<String>,
    header: String,
    #[serde(default)]
    prefix: String,
    placeholder: Option<String>,
    env: Option<String>,
    validate: Option<ValidateFile>,
    #[serde(default)]
    plaintext: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateFile {
    url: String,
    #[serde(default = "default_expect_status")]
    expect_status: u16,
}

fn default_expect_status() -> u16 {
    200
}

/// Collects field errors for one file.
struct Checker<'a> {
    path: &'a Path,
    errors: Vec<ProviderFileError>,
}

impl Checker<'_> {
    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(ProviderFileError {
            path: self.path.to_path_buf(),
            field: Some(field.to_owned()),
            message: message.into(),
        });
    }
}

/// Parses and validates one provider file.
pub fn parse_provider_file(path: &Path, yaml: &str) -> Result<Provider, Vec<ProviderFileError>> {
    let file: ProviderFile = serde_saphyr::from_str(yaml).map_err(|e| {
        vec![ProviderFileError {
            path: path.to_path_buf(),
            field: None,
            message: e.without_snippet().to_string(),
        }]
    })?;
    let mut checker = Checker {
        path,
        errors: Vec::new(),
    };
    check_name_field(&mut checker, &file.name);
    let rules = header_rules(&mut checker, &file);
    check_header_value_part(&mut checker, "prefix", &file.prefix);
    let placeholder = file
        .placeholder
        .clone()
        .unwrap_or_else(|| format!("moat-placeholder-{}-token", file.name));
    check_placeholder(&mut checker, &placeholder);
    if let Some(env) = &file.env {
        check_env_name(&mut checker, env);
    }
    let validation = file.validate.as_ref().map(|v| validation_endpoint(&mut checker, v));
    if !checker.errors.is_empty() {
        return Err(checker.errors);
    }
    Ok(Provider {
        name: file.name,
        rules,
        placeholder,
        env_var: file.env.clone(),
        kind: CredentialKind::Token,
        grant_sources: GrantSources {
            env_vars: file.env.into_iter().collect(),
            gh_cli: false,
        },
        validation,
        source: ProviderSource::File(path.to_path_buf()),
    })
}

fn check_name_field(checker: &mut Checker<'_>, name: &str) {
    if let Err(e) = check_name("provider", name) {
        checker.fail("name", e.to_string());
    } else if crate::builtin::BUILT_IN_NAMES.contains(&name) {
        checker.fail("name", format!("{name:?} is a built-in provider; pick another name"));
    }
}

fn header_rules(checker: &mut Checker<'_>, file: &ProviderFile) -> Vec<HeaderRule> {
    if file.hosts.is_empty() {
        checker.fail("hosts", "list at least one host pattern");
    }
    let value = ValueFormat::Prefixed(file.prefix.clone());
    let mut rules = Vec::new();
    for (index, host) in file.hosts.iter().enumerate() {
        match HostPattern::parse(host) {
            Ok(host) if file.plaintext && host.port().is_none() => checker.fail(
                &format!("hosts[{index}]"),
                format!("with plaintext: true, name the plain port explicitly ({host}:8080)"),
            ),
            Ok(host) => rules.push(HeaderRule {
                host,
                header: file.header.clone(),
                value: value.clone(),
                plaintext: file.plaintext,
                list_additions: Vec::new(),
                removals: Vec::new(),
            }),
            Err(e) => checker.fail(&format!("hosts[{index}]"), e.to_string()),
        }
    }
    check_header_name(checker, &file.header);
    rules
}

fn check_header_name(checker: &mut Checker<'_>, header: &str) {
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if header.is_empty() || !header.chars().all(is_token_char) {
        checker.fail("header", format!("{header:?} is not a valid HTTP header name"));
    } else if RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
        checker.fail(
            "header",
            format!("{header} is managed by the proxy and cannot be injected"),
        );
    }
}

fn check_header_value_part(checker: &mut Checker<'_>, field: &str, value: &str) {
    if value.chars().any(|c| c.is_control()) {
        checker.fail(field, "must not contain control characters or newlines");
    }
}

fn check_placeholder(checker: &mut Checker<'_>, placeholder: &str) {
    if placeholder.len() < MIN_PLACEHOLDER_LEN {
        checker.fail(
            "placeholder",
            format!("must be at least {MIN_PLACEHOLDER_LEN} characters so the proxy can recognise it"),
        );
    } else if !placeholder.chars().all(|c| c.is_ascii_graphic()) {
        checker.fail("placeholder", "may contain only printable ASCII without spaces");
    }
}

fn check_env_name(checker: &mut Checker<'_>, env: &str) {
    let mut chars = env.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        checker.fail("env", format!("{env:?} is not a valid environment variable name"));
    } else if RESERVED_ENV.contains(&env) {
        checker.fail("env", format!("{env} is set by moat itself"));
    }
}

fn validation_endpoint(checker: &mut Checker<'_>, validate: &ValidateFile) -> ValidationEndpoint {
    match validate.url.parse::<hyper::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("https") && uri.host().is_some() => {}
        Ok(_) => checker.fail("validate.url", "must be an https:// URL with a host"),
        Err(e) => checker.fail("validate.url", format!("not a URL: {e}")),
    }
    if !(100..=599).contains(&validate.expect_status) {
        checker.fail("validate.expect_status", "must be an HTTP status from 100 to 599");
    }
    ValidationEndpoint {
        url: validate.url.clone(),
        expect_status: validate.expect_status,
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::Credential;

    fn parse(yaml: &str) -> Result<Provider, Vec<ProviderFileError>> {
        parse_provider_file(Path::new("/home/u/.moat/providers/p.yaml"), yaml)
    }

    fn errors(yaml: &str) -> Vec<String> {
        parse(yaml).unwrap_err().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_complete_file_becomes_a_provider() {
        let provider = parse(
            "name: gitlab\n\
             hosts: [gitlab.example.com, '*.gitlab.example.com:8443']\n\
             header: PRIVATE-TOKEN\n\
             placeholder: moat-placeholder-gitlab\n\
             env: GITLAB_TOKEN\n\
             validate: {url: 'https://gitlab.example.com/api/v4/user'}\n",
        )
        .unwrap();
        assert_eq!(provider.name(), "gitlab");
        assert_eq!(provider.hosts(), ["gitlab.example.com", "*.gitlab.example.com:8443"]);
        let injections = provider.injections(&Credential::new("fake-gl", CredentialKind::Token));
        assert_eq!(injections[1].header_name, "PRIVATE-TOKEN");
        assert_eq!(injections[1].header_value, "fake-gl");
        assert_eq!(
            provider.container_env(),
            [("GITLAB_TOKEN".to_owned(), "moat-placeholder-gitlab".to_owned())]
        );
        assert_eq!(provider.validation().unwrap().expect_status, 200);
        let lookup = |name: &str| (name == "GITLAB_TOKEN").then(|| "fake-gl".to_owned());
        assert_eq!(provider.grant_token_from_lookup(&lookup).unwrap().token, "fake-gl");
    }

    #[test]
    fn prefix_and_default_placeholder() {
        let provider = parse("name: corp\nhosts: [api.corp.test]\nheader: Authorization\nprefix: 'Bearer '\n").unwrap();
        let injection = &provider.injections(&Credential::new("fake", CredentialKind::Token))[0];
        assert_eq!(injection.header_value, "Bearer fake");
        assert_eq!(provider.placeholder(), "moat-placeholder-corp-token");
        assert!(provider.container_env().is_empty());
    }

    #[test]
    fn plaintext_is_off_by_default_and_needs_named_ports() {
        let credential = Credential::new("fake", CredentialKind::Token);
        let provider = parse("name: corp\nhosts: [api.corp.test]\nheader: X-Key\n").unwrap();
        assert!(!provider.injections(&credential)[0].plaintext);

        let provider = parse("name: corp\nhosts: ['api.corp.test:8080']\nheader: X-Key\nplaintext: true\n").unwrap();
        assert!(provider.injections(&credential)[0].plaintext);

        let found = errors("name: corp\nhosts: ['a.corp.test:8080', b.corp.test]\nheader: X-Key\nplaintext: true\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("/home/u/.moat/providers/p.yaml: hosts[1]: with plaintext: true"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn every_invalid_field_is_named_with_the_file() {
        let found = errors(
            "name: github\n\
             hosts: ['ok.test', 'bad host']\n\
             header: 'Proxy-Authorization'\n\
             prefix: \"Bearer\\n\"\n\
             placeholder: short\n\
             env: 1BAD\n\
             validate: {url: 'http://plain.test/', expect_status: 99}\n",
        );
        let path = "/home/u/.moat/providers/p.yaml";
        let expected_fields = [
            "name",
            "hosts[1]",
            "header",
            "prefix",
            "placeholder",
            "env",
            "validate.url",
            "validate.expect_status",
        ];
        assert_eq!(found.len(), expected_fields.len(), "{found:#?}");
        for (message, field) in found.iter().zip(expected_fields) {
            assert!(message.starts_with(&format!("{path}: {field}: ")), "{message}");
        }
    }

    #[test]
    fn syntax_errors_and_unknown_fields_name_the_file_and_location() {
        let found = errors("name: x\nhosts: [a.test]\nheader: X-Key\nhostz: [b.test]\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("/home/u/.moat/providers/p.yaml: "), "{}", found[0]);
        assert!(found[0].contains("unknown field `hostz`"), "{}", found[0]);
        assert!(found[0].contains("line 4"), "{}", found[0]);

        let found = errors("name: x\nheader: X-Key\n");
        assert!(found[0].contains("missing field `hosts`"), "{}", found[0]);

        let found = errors("name: x\nhosts: []\nheader: X-Key\n");
        assert!(
            found[0].ends_with("hosts: list at least one host pattern"),
            "{}",
            found[0]
        );
    }
}
