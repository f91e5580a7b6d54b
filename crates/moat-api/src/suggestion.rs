//! A proposed network policy learned from a run's trace
//! (`GET /v1/runs/{id}/suggestion`, `moat policy suggest`): rules per host
//! with how many of the run's requests each covers, what the proposal
//! leaves out, and its `moat.yaml` form. The daemon builds it.

use std::fmt::Write as _;

use moat_core::config::{HostRule, NetworkPolicy, PolicyMode};
use serde::{Deserialize, Serialize};

/// The proposal: rules per host, with how many requests each covers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Suggestion {
    pub hosts: Vec<HostSuggestion>,
    pub skipped: Skipped,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostSuggestion {
    pub host: String,
    pub requests: usize,
    pub rules: Vec<RuleSuggestion>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleSuggestion {
    pub rule: String,
    pub requests: usize,
}

/// Trace records the proposal does not stand for, by reason.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Skipped {
    /// Refused at the time: a proposal allows only what the run was allowed.
    pub refused: usize,
    /// CONNECT records: a refused tunnel or a failed TLS handshake.
    pub connections: usize,
    /// Paths method/path rules cannot judge (an encoded `/`, `\`, ...),
    /// which strict refuses wherever such rules apply.
    pub unjudgeable_paths: usize,
    /// Hosts no rule can name (IPv6 literals, redacted names).
    pub unnameable_hosts: usize,
}

impl Suggestion {
    /// Requests the proposal stands for.
    pub fn requests(&self) -> usize {
        self.hosts.iter().map(|h| h.requests).sum()
    }

    /// The proposal as the `network:` section moat.yaml reads.
    pub fn network_policy(&self) -> NetworkPolicy {
        let rules = self
            .hosts
            .iter()
            .map(|host| HostRule {
                host: host.host.clone(),
                requests: host.rules.iter().filter_map(|r| r.rule.parse().ok()).collect(),
            })
            .collect();
        NetworkPolicy {
            mode: PolicyMode::Strict,
            rules,
        }
    }

    /// A `moat.yaml` snippet: the policy and rules, each commented with
    /// how many of the run's requests it covers.
    pub fn to_yaml(&self, run_id: &str) -> String {
        let mut out = format!(
            "# Suggested by `moat policy suggest {run_id}` from {} request(s): each rule allows\n\
             # only what the run did, with identifiers that varied written as *.\n",
            self.requests()
        );
        out.push_str("network:\n  policy: strict\n");
        if self.hosts.is_empty() {
            out.push_str("  rules: []\n");
            return out;
        }
        out.push_str("  rules:\n");
        for host in &self.hosts {
            let _ = writeln!(out, "    # {}", plural(host.requests, "request"));
            let _ = writeln!(out, "    - {}:", quoted(&host.host));
            for rule in &host.rules {
                let _ = writeln!(
                    out,
                    "        - {}  # {}",
                    quoted(&rule.rule),
                    plural(rule.requests, "request")
                );
            }
        }
        out
    }
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}
