//! The agents `moat <agent>` runs, from the `agents:` section of the
//! registry shipped with moat: the command, the dependency that installs
//! it, the grants it can use, the hosts it talks to, how it is handed one
//! prompt, and the files (placeholders only) staged in its home so that it
//! starts logged in.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One agent moat knows how to run.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub summary: String,
    /// The program and its fixed arguments.
    pub command: Vec<String>,
    /// The registry entry that installs it.
    pub dependency: String,
    /// Grants it can use, preferred first; a run needs one of them stored.
    pub grants: Vec<String>,
    /// Hosts it talks to (allowed under the strict policy).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Arguments handing it one prompt (`{prompt}`) to answer and exit.
    pub prompt_args: Vec<String>,
    /// Variables set in its container; never a credential.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub files: Vec<StagedFile>,
}

/// A file written into the run user's home before the agent starts.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagedFile {
    /// Relative to the home directory.
    pub path: String,
    /// Octal permission bits (`"600"`).
    pub mode: String,
    /// Only staged when this grant is the one the run uses.
    #[serde(default)]
    pub grant: Option<String>,
    /// `{placeholder}` and `{placeholder_tail}` are filled in.
    pub contents: String,
}

/// How many trailing characters of a placeholder `{placeholder_tail}` is
/// (what Claude Code remembers of an approved API key).
const PLACEHOLDER_TAIL: usize = 20;

impl Agent {
    /// The agent's argv: its command, the prompt arguments when a prompt is
    /// given, then the user's arguments.
    pub fn argv(&self, prompt: Option<&str>, args: &[String]) -> Vec<String> {
        let prompt_args = prompt.map(|prompt| {
            self.prompt_args
                .iter()
                .map(|arg| arg.replace("{prompt}", prompt))
                .collect::<Vec<_>>()
        });
        self.command
            .iter()
            .cloned()
            .chain(prompt_args.into_iter().flatten())
            .chain(args.iter().cloned())
            .collect()
    }

    /// The files to stage when `grant` is used, with `placeholder` filled in.
    pub fn staged_files(&self, grant: &str, placeholder: &str) -> Vec<StagedFile> {
        self.files
            .iter()
            .filter(|file| file.grant.as_deref().is_none_or(|only| only == grant))
            .map(|file| StagedFile {
                contents: render(&file.contents, placeholder),
                grant: None,
                ..file.clone()
            })
            .collect()
    }

    /// What is wrong with this definition, if anything (the shipped file
    /// is checked by a test; an overlay when it is read).
    pub fn check(&self, name: &str) -> Result<(), String> {
        let problem = |what: String| Err(format!("agent {name}: {what}"));
        if self.command.is_empty() {
            return problem("command is empty".into());
        }
        if self.grants.is_empty() {
            return problem("grants is empty".into());
        }
        if !self.prompt_args.iter().any(|arg| arg.contains("{prompt}")) {
            return problem("prompt_args never uses {prompt}".into());
        }
        for host in &self.hosts {
            if let Err(e) = crate::HostPattern::parse(host) {
                return problem(format!("host {host:?}: {e}"));
            }
        }
        for file in &self.files {
            if let Err(e) = check_home_path(&file.path) {
                return problem(format!("file {:?}: {e}", file.path));
            }
            if u32::from_str_radix(&file.mode, 8).map_or(true, |mode| mode > 0o777) {
                return problem(format!(
                    "file {:?}: mode {:?} is not octal permission bits",
                    file.path, file.mode
                ));
            }
        }
        Ok(())
    }
}

impl StagedFile {
    /// The permission bits.
    pub fn mode_bits(&self) -> u32 {
        u32::from_str_radix(&self.mode, 8).unwrap_or(0o600)
    }
}

fn render(template: &str, placeholder: &str) -> String {
    let skip = placeholder.chars().count().saturating_sub(PLACEHOLDER_TAIL);
    let tail: String = placeholder.chars().skip(skip).collect();
    template
        .replace("{placeholder_tail}", &tail)
        .replace("{placeholder}", placeholder)
}

/// A path inside a home directory: relative, plain segments only.
pub fn check_home_path(path: &str) -> Result<(), String> {
    let plain = |segment: &str| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if path.split('/').all(plain) {
        Ok(())
    } else {
        Err("must be relative to the home, of plain segments ([A-Za-z0-9._-])".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deps::Registry;

    #[test]
    fn every_shipped_agent_is_valid_and_installable() {
        let registry = Registry::shipped().unwrap();
        let agents: Vec<&str> = registry.agents().map(|(name, _)| name).collect();
        assert_eq!(agents, ["claude", "codex", "gemini"]);
        for (name, agent) in registry.agents() {
            agent.check(name).unwrap();
            assert!(
                registry.entries().any(|(entry, _)| entry == agent.dependency),
                "{name} is installed by unknown {}",
                agent.dependency
            );
        }
    }

    #[test]
    fn claude_stages_oauth_credentials_only_for_the_claude_grant() {
        let registry = Registry::shipped().unwrap();
        let claude = registry.agent("claude").unwrap();
        let placeholder = "moat-placeholder-claude-oauth-token-0000000000000000000000000000abcd";
        let files = claude.staged_files("claude", placeholder);
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, [".claude/.credentials.json", ".claude.json"]);
        let credentials: serde_json::Value = serde_json::from_str(&files[0].contents).unwrap();
        assert_eq!(credentials["claudeAiOauth"]["accessToken"], placeholder);
        assert!(credentials["claudeAiOauth"]["expiresAt"].as_i64().unwrap() > 4_000_000_000_000);
        assert_eq!(files[0].mode_bits(), 0o600);

        let files = claude.staged_files("anthropic", placeholder);
        assert_eq!(files.len(), 1);
        let config: serde_json::Value = serde_json::from_str(&files[0].contents).unwrap();
        assert_eq!(
            config["customApiKeyResponses"]["approved"][0],
            "00000000000000000000000000abcd"[10..]
        );
    }

    #[test]
    fn a_prompt_goes_between_the_command_and_the_arguments() {
        let registry = Registry::shipped().unwrap();
        let claude = registry.agent("claude").unwrap();
        let args = vec!["--model".to_string(), "x".to_string()];
        assert_eq!(
            claude.argv(Some("hi there"), &args),
            ["claude", "-p", "hi there", "--model", "x"]
        );
        assert_eq!(claude.argv(None, &args), ["claude", "--model", "x"]);
    }

    #[test]
    fn home_paths_stay_in_the_home() {
        assert!(check_home_path(".claude/.credentials.json").is_ok());
        for bad in ["/etc/passwd", "../x", "a/../../x", "a//b", "", "a b", "$(id)"] {
            assert!(check_home_path(bad).is_err(), "{bad}");
        }
    }
}
