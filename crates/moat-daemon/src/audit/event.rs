//! What the audit log records (docs/audit.md § Events). Each variant is one
//! entry `kind` (snake_case) and its fields the entry's `data`. Names of
//! grants and secrets only: never a credential or a secret's value.

use moat_core::RunMetadata;
use moat_core::audit::canonical_json;
use moat_proxy::ProxyEvent;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use moat_runtime::ExecOutput;

use crate::api::RunSpec;
use crate::registry::without_secret_values;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Event {
    /// The run was registered, before its first runtime object.
    RunCreated {
        /// SHA-256 of the canonical JSON of the spec (secret values excluded).
        spec_hash: String,
        image: String,
        runtime: String,
        policy_mode: String,
        /// SHA-256 of the canonical JSON of the network policy.
        policy_hash: String,
        grants: Vec<String>,
        secrets: Vec<String>,
    },
    ContainerCreated {
        container: String,
    },
    ContainerStarted {
        container: String,
    },
    /// The workload ended (`state` exited or failed).
    Exited {
        state: String,
        exit_code: Option<i64>,
        failure: Option<String>,
    },
    /// Cleanup finished; `failures` are left for the reaper.
    Cleaned {
        failures: Vec<String>,
    },
    PolicyDenied {
        method: String,
        host: String,
        path: String,
        rule: String,
    },
    /// Shadow mode: an allowed request that `strict` with the run's rules
    /// would have refused under `rule`.
    PolicyShadowDenied {
        method: String,
        host: String,
        path: String,
        rule: String,
    },
    /// A grant's credential was added to a request (never the value).
    CredentialInjected {
        grant: String,
        host: String,
    },
    /// `moat exec`: the program and how many arguments (not their text,
    /// which may hold what the user typed as a secret).
    ExecStarted {
        program: String,
        arguments: usize,
    },
    ExecEnded {
        exit_code: Option<i64>,
        error: Option<String>,
    },
    /// A client attached to the run's output.
    Attached,
    Detached,
    /// The run's ssh agent had the host's agent sign with a granted key
    /// (its fingerprint; never the key).
    SshSigned {
        fingerprint: String,
        host: String,
    },
    /// The run's ssh agent refused (or the host's agent failed) a
    /// signature with this key.
    SshSignRefused {
        fingerprint: String,
        reason: String,
    },
    /// The aws grant's role was assumed for the run: short-lived keys
    /// valid until `expires_at` (never a key).
    AwsCredentialsIssued {
        role_arn: String,
        expires_at: String,
    },
    /// The run asked for aws credentials and STS (or its set-up) refused.
    AwsCredentialsRefused {
        role_arn: String,
        reason: String,
    },
    /// `moat revoke` (or a refresh) changed the run's grants.
    GrantsChanged {
        grants: Vec<String>,
    },
    /// The daemon refreshed a grant the run uses (its new expiry; never
    /// a token).
    GrantRefreshed {
        grant: String,
        expires_at: Option<String>,
    },
    /// Refreshing a grant the run uses failed; tried again later.
    GrantRefreshFailed {
        grant: String,
        reason: String,
        retry_in_seconds: u64,
    },
    /// Grants (names, never values) and hosts added to the live run, with
    /// the user's approval (`moat join`).
    GrantsAdded {
        grants: Vec<String>,
        hosts: Vec<String>,
    },
    /// A restarted daemon took the run over.
    Readopted {
        daemon_pid: u32,
    },
    /// The reaper removed (or failed to remove) one of the run's objects.
    Reaped {
        object: String,
        name: String,
        error: Option<String>,
    },
    /// Events that could not be queued (the writer fell behind).
    EventsDropped {
        count: u64,
    },
    /// The writer cut a torn last line (a crash mid-write) before appending.
    TornLineRemoved {
        bytes: u64,
        sha256: String,
    },
    /// The writer resumed a log that does not verify from `seq` on.
    ResumedDamagedLog {
        seq: u64,
        why: String,
    },
}

impl Event {
    /// [`Event::RunCreated`] for `spec`.
    pub fn run_created(spec: &RunSpec) -> Self {
        Event::RunCreated {
            spec_hash: sha256_of_json(&without_secret_values(spec)),
            image: spec.image.clone(),
            runtime: spec.runtime.clone(),
            policy_mode: spec.policy.mode.as_str().to_string(),
            policy_hash: sha256_of_json(&spec.policy),
            grants: spec.grants.clone(),
            secrets: spec.secret_names.clone(),
        }
    }

    pub fn container_created(container: &str) -> Self {
        Event::ContainerCreated {
            container: container.to_string(),
        }
    }

    /// [`Event::Exited`] from the run's recorded end.
    pub fn exited(meta: &RunMetadata) -> Self {
        Event::Exited {
            state: meta.state.to_string(),
            exit_code: meta.exit_code,
            failure: meta.failure.clone(),
        }
    }

    pub fn exec_started(command: &[String]) -> Self {
        Event::ExecStarted {
            program: command.first().cloned().unwrap_or_default(),
            arguments: command.len().saturating_sub(1),
        }
    }

    /// [`Event::ExecEnded`] from an exec's outcome (within its time bound or not).
    pub fn exec_ended<E: std::fmt::Display>(
        outcome: &Result<Result<ExecOutput, E>, tokio::time::error::Elapsed>,
    ) -> Self {
        let (exit_code, error) = match outcome {
            Ok(Ok(output)) => (output.exit_code, None),
            Ok(Err(e)) => (None, Some(e.to_string())),
            Err(_) => (None, Some("timed out".to_string())),
        };
        Event::ExecEnded { exit_code, error }
    }

    /// The event a proxy report stands for.
    pub fn from_proxy(event: ProxyEvent) -> Self {
        match event {
            ProxyEvent::Denied {
                method,
                host,
                path,
                rule,
            } => Event::PolicyDenied {
                method,
                host,
                path,
                rule,
            },
            ProxyEvent::ShadowDenied {
                method,
                host,
                path,
                rule,
            } => Event::PolicyShadowDenied {
                method,
                host,
                path,
                rule,
            },
            ProxyEvent::Injected { grant, host } => Event::CredentialInjected { grant, host },
        }
    }

    /// The entry's `kind` and `data`.
    pub fn kind_and_data(&self) -> (String, Value) {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let data = match value.get_mut("data").map(Value::take) {
            Some(data @ Value::Object(_)) => data,
            _ => Value::Object(serde_json::Map::default()),
        };
        (kind, data)
    }
}

/// Hex SHA-256 of `value`'s canonical JSON.
fn sha256_of_json(value: &impl Serialize) -> String {
    let json = serde_json::to_value(value).unwrap_or(Value::Null);
    hex::encode(Sha256::digest(canonical_json(&json).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_snake_case_and_unit_events_have_empty_data() {
        let (kind, data) = Event::Attached.kind_and_data();
        assert_eq!((kind.as_str(), data), ("attached", serde_json::json!({})));
        let (kind, data) = Event::CredentialInjected {
            grant: "github".into(),
            host: "api.github.com".into(),
        }
        .kind_and_data();
        assert_eq!(kind, "credential_injected");
        assert_eq!(data["grant"], "github");
    }
}
