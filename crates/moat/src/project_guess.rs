//! `moat init`'s guess at a project's moat.yaml: the toolchains its lock
//! and toolchain files name (as `dependencies:`), the github grant when
//! its git remote is on github.com, and the package registries those
//! toolchains fetch from as a strict `network.rules` list. Reads files
//! only; runs nothing.

use std::collections::BTreeSet;
use std::path::Path;

/// What a project's files suggest.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Guess {
    pub dependencies: BTreeSet<String>,
    pub grants: BTreeSet<String>,
    pub hosts: BTreeSet<String>,
    /// `file: what it said`, for the header comment.
    pub evidence: Vec<String>,
    /// Things the user should check (a pinned version moat may not have).
    pub notes: Vec<String>,
}

/// A file whose presence means a toolchain and the hosts it fetches from.
struct Marker {
    file: &'static str,
    dependency: &'static str,
    hosts: &'static [&'static str],
}

const NPM_HOSTS: &[&str] = &["registry.npmjs.org"];
const CARGO_HOSTS: &[&str] = &["crates.io", "index.crates.io", "static.crates.io"];
const PYPI_HOSTS: &[&str] = &["pypi.org", "files.pythonhosted.org"];
const GO_HOSTS: &[&str] = &["proxy.golang.org", "sum.golang.org"];

const MARKERS: &[Marker] = &[
    Marker {
        file: "package-lock.json",
        dependency: "node",
        hosts: NPM_HOSTS,
    },
    Marker {
        file: "package.json",
        dependency: "node",
        hosts: NPM_HOSTS,
    },
    Marker {
        file: "Cargo.lock",
        dependency: "rust",
        hosts: CARGO_HOSTS,
    },
    Marker {
        file: "Cargo.toml",
        dependency: "rust",
        hosts: CARGO_HOSTS,
    },
    Marker {
        file: "requirements.txt",
        dependency: "python",
        hosts: PYPI_HOSTS,
    },
    Marker {
        file: "pyproject.toml",
        dependency: "python",
        hosts: PYPI_HOSTS,
    },
    Marker {
        file: "uv.lock",
        dependency: "uv",
        hosts: PYPI_HOSTS,
    },
    Marker {
        file: "go.mod",
        dependency: "go",
        hosts: GO_HOSTS,
    },
];

/// Toolchain files pinning a version: (file, dependency).
const TOOLCHAIN_FILES: &[(&str, &str)] = &[
    (".nvmrc", "node"),
    (".node-version", "node"),
    (".python-version", "python"),
    ("rust-toolchain", "rust"),
    ("rust-toolchain.toml", "rust"),
    (".tool-versions", ""),
];

/// Inspects the project at `dir`.
pub fn guess(dir: &Path) -> Guess {
    let mut guess = Guess::default();
    for marker in MARKERS {
        if dir.join(marker.file).is_file() {
            guess.dependencies.insert(marker.dependency.into());
            guess.hosts.extend(marker.hosts.iter().map(|h| (*h).to_string()));
            guess.evidence.push(format!("{} → {}", marker.file, marker.dependency));
        }
    }
    if guess.dependencies.contains("uv") {
        guess.dependencies.insert("python".into());
    }
    toolchain_notes(dir, &mut guess);
    git_remote(dir, &mut guess);
    guess
}

fn toolchain_notes(dir: &Path, guess: &mut Guess) {
    for (file, dependency) in TOOLCHAIN_FILES {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
            continue;
        };
        let pinned = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'));
        let Some(pinned) = pinned else { continue };
        if dependency.is_empty() {
            guess.notes.push(format!(
                "{file} pins tools ({pinned}…); check the versions moat installs"
            ));
            continue;
        }
        guess.dependencies.insert((*dependency).to_string());
        guess.notes.push(format!(
            "{file} asks for {dependency} {pinned}; moat installs one version of {dependency} \
             (docs/dependencies.md): write {dependency}@VERSION if it must match"
        ));
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("go.mod"))
        && let Some(version) = text.lines().find_map(|l| l.trim().strip_prefix("go "))
    {
        guess.notes.push(format!(
            "go.mod asks for go {}; moat installs one version of go (docs/dependencies.md)",
            version.trim()
        ));
    }
}

/// A github.com remote in `.git/config` means the github grant and git.
fn git_remote(dir: &Path, guess: &mut Guess) {
    let Ok(config) = std::fs::read_to_string(dir.join(".git").join("config")) else {
        return;
    };
    let urls: Vec<&str> = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("url"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(str::trim)
        .collect();
    if urls.is_empty() {
        return;
    }
    guess.dependencies.insert("git".into());
    if urls.iter().any(|url| on_github(url)) {
        guess.grants.insert("github".into());
        guess
            .evidence
            .push(".git/config: a github.com remote → git, grant github".into());
    } else {
        guess.evidence.push(".git/config: a git remote → git".into());
        guess.notes.push(format!(
            "the git remote ({}) is not on github.com: add its host to network.rules and a grant \
             (`moat grant NAME --host HOST`, or `moat grant ssh --host HOST`)",
            urls[0]
        ));
    }
}

fn on_github(url: &str) -> bool {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .rsplit_once('@')
        .map_or_else(|| url.split_once("://").map_or(url, |(_, r)| r), |(_, host)| host);
    let host = rest.split([':', '/']).next().unwrap_or_default();
    host.eq_ignore_ascii_case("github.com")
}

impl Guess {
    /// The moat.yaml text: a header saying where each part came from,
    /// then `dependencies:`, `grants:` and a strict `network:`.
    pub fn to_yaml(&self) -> String {
        let mut lines = vec!["# Written by `moat init`; review it before the first run.".to_string()];
        if self.evidence.is_empty() {
            lines.push("# Nothing recognised: no lock, toolchain or git files.".into());
        }
        lines.extend(self.evidence.iter().map(|line| format!("#   {line}")));
        lines.extend(self.notes.iter().map(|note| format!("# Note: {note}")));
        if !self.dependencies.is_empty() {
            lines.push(format!("dependencies: [{}]", join(&self.dependencies)));
        }
        if !self.grants.is_empty() {
            lines.push(format!("grants: [{}]", join(&self.grants)));
        }
        lines.push("network:\n  policy: strict".into());
        if self.hosts.is_empty() {
            lines.push("  rules: []".into());
        } else {
            lines.push("  rules:".into());
            lines.extend(self.hosts.iter().map(|host| format!("    - {host}")));
        }
        lines.iter().map(|line| format!("{line}\n")).collect()
    }
}

fn join(items: &BTreeSet<String>) -> String {
    items.iter().cloned().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    /// The guess for `files`, checked to load with moat's own config loader.
    fn yaml_of(files: &[(&str, &str)]) -> String {
        let dir = project(files);
        let yaml = guess(dir.path()).to_yaml();
        std::fs::write(dir.path().join("moat.yaml"), &yaml).unwrap();
        let loaded = moat_core::config::load_project(dir.path()).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        yaml
    }

    const GITHUB_REMOTE: &str = "[remote \"origin\"]\n\turl = git@github.com:example/app.git\n";

    #[test]
    fn node_project_on_github() {
        insta::assert_snapshot!(yaml_of(&[
            ("package.json", "{}"),
            ("package-lock.json", "{}"),
            (".nvmrc", "20\n"),
            (".git/config", GITHUB_REMOTE),
        ]));
    }

    #[test]
    fn rust_project() {
        insta::assert_snapshot!(yaml_of(&[("Cargo.toml", "[package]\n"), ("Cargo.lock", "")]));
    }

    #[test]
    fn python_project_with_uv_and_a_gitlab_remote() {
        insta::assert_snapshot!(yaml_of(&[
            ("pyproject.toml", "[project]\n"),
            ("uv.lock", ""),
            (".python-version", "3.11\n"),
            (
                ".git/config",
                "[remote \"origin\"]\n\turl = https://gitlab.com/example/app.git\n"
            ),
        ]));
    }

    #[test]
    fn go_project() {
        insta::assert_snapshot!(yaml_of(&[("go.mod", "module example.com/app\n\ngo 1.19\n")]));
    }

    #[test]
    fn empty_directory() {
        insta::assert_snapshot!(yaml_of(&[]));
    }

    #[test]
    fn github_urls_in_every_form() {
        for url in [
            "git@github.com:o/r.git",
            "https://github.com/o/r",
            "ssh://git@github.com/o/r.git",
            "https://user@GitHub.com/o/r",
        ] {
            assert!(on_github(url), "{url}");
        }
        for url in [
            "https://github.com.evil.example/o/r",
            "git@gitlab.com:o/r.git",
            "https://evil.example/github.com",
        ] {
            assert!(!on_github(url), "{url}");
        }
    }
}
