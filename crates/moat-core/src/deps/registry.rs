//! The dependency registry shipped with moat (`data/dependencies.yaml`:
//! its dependencies and its agents) and the resolution of requested
//! entries: close matches for unknown names, version checks before any
//! build, `needs:` followed. Debug builds read an overlay file named by
//! `MOAT_REGISTRY_OVERLAY` whose entries replace the shipped ones (tests
//! swap an agent's install for a stand-in; release builds ignore it).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::DependencyError;
use super::agents::Agent;
use super::request::Request;
use crate::env_vars;

const SHIPPED: &str = include_str!("../../data/dependencies.yaml");
/// Names at most this far (edit distance) from an unknown one are offered.
const CLOSE_DISTANCE: usize = 2;

/// Which layer of the image an entry installs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Runtime,
    Tool,
}

/// One dependency moat knows how to install.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub layer: Layer,
    /// What moat installs; a requested version must be a prefix of it.
    #[serde(default)]
    pub version: Option<String>,
    /// A requested version goes to the installer (`{version}` in `run`).
    #[serde(default)]
    pub pass_version: bool,
    pub summary: String,
    #[serde(default)]
    pub apt: Vec<String>,
    #[serde(default)]
    pub run: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub needs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    dependencies: BTreeMap<String, Entry>,
    #[serde(default)]
    agents: BTreeMap<String, Agent>,
}

/// Every entry and agent of the shipped registry, by name.
#[derive(Clone, Debug)]
pub struct Registry {
    entries: BTreeMap<String, Entry>,
    agents: BTreeMap<String, Agent>,
}

/// The registry entries an image needs (with the version each was asked
/// at, for entries that pass it on) and the language and OS packages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub entries: BTreeMap<String, (Entry, Option<String>)>,
    pub apt: BTreeSet<String>,
    pub pip: BTreeSet<String>,
    pub npm: BTreeSet<String>,
}

impl Registry {
    /// The registry shipped with moat (with the test overlay in debug builds).
    pub fn shipped() -> Result<Registry, DependencyError> {
        let mut registry = Registry::parse(SHIPPED)?;
        if cfg!(debug_assertions)
            && let Some(path) = env_vars::read_non_empty(env_vars::MOAT_REGISTRY_OVERLAY)
        {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| DependencyError::Registry(format!("{}: {path}: {e}", env_vars::MOAT_REGISTRY_OVERLAY)))?;
            registry.overlay(Registry::parse(&text)?);
        }
        Ok(registry)
    }

    pub fn parse(text: &str) -> Result<Registry, DependencyError> {
        let file: RegistryFile = serde_saphyr::from_str(text).map_err(|e| DependencyError::Registry(e.to_string()))?;
        for (name, agent) in &file.agents {
            agent.check(name).map_err(DependencyError::Registry)?;
        }
        Ok(Registry {
            entries: file.dependencies,
            agents: file.agents,
        })
    }

    /// Entries and agents of `other` replace those of the same name.
    fn overlay(&mut self, other: Registry) {
        self.entries.extend(other.entries);
        self.agents.extend(other.agents);
    }

    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(name, entry)| (name.as_str(), entry))
    }

    pub fn agents(&self) -> impl Iterator<Item = (&str, &Agent)> {
        self.agents.iter().map(|(name, agent)| (name.as_str(), agent))
    }

    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.get(name)
    }

    /// Resolves `requests` and everything they need.
    pub fn resolve(&self, requests: &[Request]) -> Result<Resolved, DependencyError> {
        let mut resolved = Resolved::default();
        let mut pending: Vec<(Request, Option<String>)> = requests.iter().cloned().map(|r| (r, None)).collect();
        while let Some((request, needed_by)) = pending.pop() {
            match &request {
                Request::Named { name, version } => {
                    let entry = self.lookup(name)?;
                    self.check_version(name, entry, version.as_deref(), needed_by.as_deref())?;
                    if !record_entry(&mut resolved, name, entry, version.as_deref())? {
                        continue;
                    }
                    for need in &entry.needs {
                        pending.push((need.parse()?, Some(name.clone())));
                    }
                }
                Request::Pip { .. } => {
                    resolved.pip.insert(request.install_spec());
                    pending.push((named("python"), Some(request.install_spec())));
                }
                Request::Npm { .. } => {
                    resolved.npm.insert(request.install_spec());
                    pending.push((named("node"), Some(request.install_spec())));
                }
                Request::Apt { .. } => {
                    resolved.apt.insert(request.install_spec());
                }
            }
        }
        for (entry, _) in resolved.entries.values() {
            resolved.apt.extend(entry.apt.iter().cloned());
        }
        Ok(resolved)
    }

    fn lookup(&self, name: &str) -> Result<&Entry, DependencyError> {
        self.entries.get(name).ok_or_else(|| DependencyError::Unknown {
            name: name.to_string(),
            close: self.close_to(name),
            known: self.entries.keys().cloned().collect(),
        })
    }

    fn close_to(&self, name: &str) -> Vec<String> {
        self.entries
            .keys()
            .filter(|known| {
                strsim::levenshtein(known, name) <= CLOSE_DISTANCE
                    || (name.len() >= 3 && (known.starts_with(name) || known.contains(name)))
            })
            .cloned()
            .collect()
    }

    fn check_version(
        &self,
        name: &str,
        entry: &Entry,
        wanted: Option<&str>,
        needed_by: Option<&str>,
    ) -> Result<(), DependencyError> {
        let (Some(wanted), false) = (wanted, entry.pass_version) else {
            return Ok(());
        };
        let installed = entry.version.as_deref().unwrap_or("(unversioned)");
        let matches = installed == wanted || installed.strip_prefix(wanted).is_some_and(|rest| rest.starts_with('.'));
        if matches {
            return Ok(());
        }
        Err(DependencyError::Version {
            name: name.to_string(),
            wanted: wanted.to_string(),
            installed: installed.to_string(),
            needed_by: needed_by.map(str::to_string),
        })
    }
}

fn named(name: &str) -> Request {
    Request::Named {
        name: name.to_string(),
        version: None,
    }
}

/// Records `name`; false when it was there already. Two different versions
/// handed to the installer conflict.
fn record_entry(
    resolved: &mut Resolved,
    name: &str,
    entry: &Entry,
    version: Option<&str>,
) -> Result<bool, DependencyError> {
    let passed = version.filter(|_| entry.pass_version).map(str::to_string);
    match resolved.entries.get_mut(name) {
        None => {
            resolved.entries.insert(name.to_string(), (entry.clone(), passed));
            Ok(true)
        }
        Some((_, existing)) => match (existing.as_ref(), passed) {
            (Some(first), Some(second)) if *first != second => Err(DependencyError::Conflict {
                name: name.to_string(),
                first: first.clone(),
                second,
            }),
            (None, Some(second)) => {
                *existing = Some(second);
                Ok(false)
            }
            _ => Ok(false),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(deps: &[&str]) -> Result<Resolved, DependencyError> {
        let requests: Vec<Request> = deps.iter().map(|d| d.parse().unwrap()).collect();
        Registry::shipped().unwrap().resolve(&requests)
    }

    #[test]
    fn the_shipped_registry_parses_and_every_need_is_known() {
        let registry = Registry::shipped().unwrap();
        for (name, entry) in registry.entries() {
            assert!(entry.pass_version || entry.version.is_some(), "{name} has no version");
            for need in &entry.needs {
                let Request::Named { name: needed, .. } = need.parse().unwrap() else {
                    panic!("{name} needs {need}, which is not a registry entry");
                };
                assert!(registry.lookup(&needed).is_ok(), "{name} needs unknown {needed}");
            }
        }
    }

    #[test]
    fn an_unknown_name_offers_close_matches() {
        let err = resolve(&["pyhton"]).unwrap_err();
        assert_eq!(err.to_string(), r#"unknown dependency "pyhton" (did you mean python?)"#);
        let err = resolve(&["claude"]).unwrap_err();
        assert!(err.to_string().contains("did you mean claude-code?"), "{err}");
        let err = resolve(&["zzzzzz"]).unwrap_err();
        assert!(err.to_string().contains("known: claude-code, codex"), "{err}");
    }

    #[test]
    fn versions_match_on_dot_boundaries_only() {
        assert!(resolve(&["python@3"]).is_ok());
        assert!(resolve(&["python@3.11"]).is_ok());
        assert!(resolve(&["python@3.11.2"]).is_ok());
        let err = resolve(&["python@3.1"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "python@3.1 cannot be satisfied: moat installs python 3.11.2"
        );
        assert!(resolve(&["node@20"]).is_err());
    }

    #[test]
    fn a_need_that_cannot_be_met_names_who_needs_it() {
        let err = resolve(&["gemini-cli"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node@20 cannot be satisfied: moat installs node 18.19.0 (needed by gemini-cli)"
        );
    }

    #[test]
    fn language_packages_bring_their_runtime() {
        let resolved = resolve(&["pip:anthropic", "npm:typescript@5"]).unwrap();
        assert!(resolved.entries.contains_key("python") && resolved.entries.contains_key("node"));
        assert!(resolved.apt.contains("python3-venv") && resolved.apt.contains("nodejs"));
    }

    #[test]
    fn two_versions_for_the_installer_conflict() {
        let err = resolve(&["claude-code@1.0.0", "claude-code@2.0.0"]).unwrap_err();
        assert!(matches!(err, DependencyError::Conflict { .. }), "{err}");
        assert!(resolve(&["claude-code", "claude-code@2.0.0"]).is_ok());
    }
}
