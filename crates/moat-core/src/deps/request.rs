//! One entry of `dependencies:` as written: `name[@version]` from the
//! registry, or a package of a language or the OS (`pip:pkg[==v]`,
//! `npm:pkg[@v]`, `apt:pkg[=v]`). Names and versions are checked against
//! strict character sets here, since they end up in shell commands.

use std::str::FromStr;

use super::DependencyError;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Request {
    /// An entry of the shipped registry.
    Named {
        name: String,
        version: Option<String>,
    },
    Pip {
        name: String,
        version: Option<String>,
    },
    Npm {
        name: String,
        version: Option<String>,
    },
    Apt {
        name: String,
        version: Option<String>,
    },
}

impl Request {
    /// The package spec handed to the installer (`pkg==v`, `pkg@v`, `pkg=v`).
    pub fn install_spec(&self) -> String {
        let (name, version, separator) = match self {
            Request::Named { name, version } | Request::Npm { name, version } => (name, version, "@"),
            Request::Pip { name, version } => (name, version, "=="),
            Request::Apt { name, version } => (name, version, "="),
        };
        match version {
            Some(v) => format!("{name}{separator}{v}"),
            None => name.clone(),
        }
    }
}

impl FromStr for Request {
    type Err = DependencyError;

    fn from_str(text: &str) -> Result<Self, DependencyError> {
        let malformed = |why: &str| DependencyError::Malformed(text.to_string(), why.to_string());
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("pip:") {
            let (name, version) = split_version(rest, "==");
            check(name, is_pip_name, "a pip package name ([A-Za-z0-9._-])").map_err(|e| malformed(&e))?;
            check_version(version, "a pip version after ==").map_err(|e| malformed(&e))?;
            return Ok(Request::Pip {
                name: name.to_string(),
                version: version.map(str::to_string),
            });
        }
        if let Some(rest) = text.strip_prefix("npm:") {
            let (name, version) = split_npm(rest);
            check(name, is_npm_name, "an npm package name ([@scope/]name, lowercase)").map_err(|e| malformed(&e))?;
            check_version(version, "an npm version after @").map_err(|e| malformed(&e))?;
            return Ok(Request::Npm {
                name: name.to_string(),
                version: version.map(str::to_string),
            });
        }
        if let Some(rest) = text.strip_prefix("apt:") {
            let (name, version) = split_version(rest, "=");
            check(name, is_apt_name, "a Debian package name ([a-z0-9+.-])").map_err(|e| malformed(&e))?;
            check_version(version, "a Debian version after =").map_err(|e| malformed(&e))?;
            return Ok(Request::Apt {
                name: name.to_string(),
                version: version.map(str::to_string),
            });
        }
        if let Some((prefix, _)) = text.split_once(':') {
            return Err(malformed(&format!(
                "unknown kind {prefix:?} (expected pip:, npm: or apt:)"
            )));
        }
        let (name, version) = split_version(text, "@");
        check(name, is_apt_name, "a dependency name ([a-z0-9+.-])").map_err(|e| malformed(&e))?;
        check_version(version, "a version after @").map_err(|e| malformed(&e))?;
        Ok(Request::Named {
            name: name.to_string(),
            version: version.map(str::to_string),
        })
    }
}

fn split_version<'a>(text: &'a str, separator: &str) -> (&'a str, Option<&'a str>) {
    match text.split_once(separator) {
        Some((name, version)) => (name, Some(version)),
        None => (text, None),
    }
}

/// `@scope/name@1.2` → (`@scope/name`, `1.2`): the scope's `@` is not a
/// version separator.
fn split_npm(text: &str) -> (&str, Option<&str>) {
    let skip = usize::from(text.starts_with('@'));
    match text[skip..].find('@') {
        Some(at) => (&text[..skip + at], Some(&text[skip + at + 1..])),
        None => (text, None),
    }
}

fn check(name: &str, valid: fn(&str) -> bool, expected: &str) -> Result<(), String> {
    if valid(name) {
        Ok(())
    } else {
        Err(format!("{name:?} is not {expected}"))
    }
}

fn check_version(version: Option<&str>, expected: &str) -> Result<(), String> {
    let valid = |v: &str| {
        !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || ".+-~^*:".contains(c))
    };
    match version {
        Some(v) if !valid(v) => Err(format!("{v:?} is not {expected} ([A-Za-z0-9.+-~^*:])")),
        _ => Ok(()),
    }
}

fn is_plain_name(name: &str, extra: &str) -> bool {
    name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

fn is_pip_name(name: &str) -> bool {
    is_plain_name(name, "._-")
}

fn is_apt_name(name: &str) -> bool {
    is_plain_name(name, "+.-") && !name.chars().any(|c| c.is_ascii_uppercase())
}

fn is_npm_name(name: &str) -> bool {
    let lower = |part: &str| is_plain_name(part, "._-") && !part.chars().any(|c| c.is_ascii_uppercase());
    match name.strip_prefix('@').map(|scoped| scoped.split_once('/')) {
        Some(Some((scope, package))) => lower(scope) && lower(package),
        Some(None) => false,
        None => lower(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Request {
        text.parse().unwrap()
    }

    #[test]
    fn each_kind_parses_with_and_without_a_version() {
        assert_eq!(
            parse("python@3.11"),
            Request::Named {
                name: "python".into(),
                version: Some("3.11".into())
            }
        );
        assert_eq!(parse("pip:anthropic==0.40.0").install_spec(), "anthropic==0.40.0");
        assert_eq!(
            parse("npm:@anthropic-ai/claude-code@1.0").install_spec(),
            "@anthropic-ai/claude-code@1.0"
        );
        assert_eq!(parse("npm:@scope/pkg").install_spec(), "@scope/pkg");
        assert_eq!(parse("apt:jq=1.6-2.1").install_spec(), "jq=1.6-2.1");
        assert_eq!(parse("git").install_spec(), "git");
    }

    #[test]
    fn shell_metacharacters_are_refused_everywhere() {
        for text in [
            "pip:x;rm -rf /",
            "pip:x==1$(id)",
            "npm:a b",
            "apt:jq`id`",
            "python@3;id",
            "npm:@scope",
            "pip:",
            "npm:x@",
            "cargo:ripgrep",
            "apt:JQ",
        ] {
            let err = text.parse::<Request>().unwrap_err();
            assert!(matches!(err, DependencyError::Malformed(..)), "{text}: {err}");
        }
    }
}
