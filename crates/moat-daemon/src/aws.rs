//! The aws grant on the daemon's side: for each live run with it, the role
//! and host keys (in memory only) and the short-lived credentials last
//! issued. The run fetches them from the proxy's credential endpoint
//! (`http://moat-proxy:PORT/aws/credentials`, called by the staged
//! `credential_process`); the daemon assumes the role with the host's keys
//! when nothing cached is left with more than [`REFRESH_BEFORE`] to live.
//! `moat revoke aws` empties the run's grant: the next request is refused.
//! Each issuance is audited with the role and expiry, never a key.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use moat_core::RunId;
use moat_creds::aws::{AwsGrant, TemporaryCredentials};
use moat_creds::sts::{STS_TIMEOUT, StsClient};
use moat_proxy::{CredentialEndpoint, CredentialFuture, CredentialRefusal};

use crate::audit::{AuditLog, Event};
use crate::output::lock;

/// The endpoint's name: the run fetches `/aws/credentials`.
pub const ENDPOINT_NAME: &str = "aws";
/// Cached credentials are handed out until this long before they expire.
pub const REFRESH_BEFORE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// Where the staged AWS config and credential process appear.
pub const CONTAINER_AWS_DIR: &str = "/etc/moat/aws";
/// The staged config's name in [`CONTAINER_AWS_DIR`] (`AWS_CONFIG_FILE`).
pub const CONFIG_NAME: &str = "config";
/// The credential process's name in [`CONTAINER_AWS_DIR`].
pub const PROCESS_NAME: &str = "credential-process";

/// One run's grant and what was issued for it.
struct RunAws {
    /// `None` once revoked.
    grant: Mutex<Option<AwsGrant>>,
    /// The last credentials and the grant they were issued under; held
    /// across an STS call, so concurrent requests make one.
    issued: tokio::sync::Mutex<Option<(AwsGrant, TemporaryCredentials)>>,
}

/// The aws grants of live runs.
pub struct AwsIssuer {
    sts: Result<StsClient, String>,
    runs: Mutex<HashMap<RunId, Arc<RunAws>>>,
    audit: AuditLog,
}

impl AwsIssuer {
    /// Trusts the system roots plus `extra_root_ca` for STS, and the
    /// daemon's `resolve:` pins. A bad CA file is reported on each request.
    pub fn new(extra_root_ca: Option<&Path>, resolve: HashMap<String, IpAddr>, audit: AuditLog) -> Self {
        let pem = match extra_root_ca.map(std::fs::read).transpose() {
            Ok(pem) => pem,
            Err(e) => {
                let reason = format!("reading extra_ca_file for STS: {e}");
                return AwsIssuer {
                    sts: Err(reason),
                    runs: Mutex::default(),
                    audit,
                };
            }
        };
        AwsIssuer {
            sts: StsClient::new(pem.as_deref(), resolve, STS_TIMEOUT).map_err(|e| e.to_string()),
            runs: Mutex::default(),
            audit,
        }
    }

    /// Serves `grant` to run `id` (replacing an earlier grant of the run)
    /// and returns the endpoint to register with the proxy.
    pub fn endpoint(self: &Arc<Self>, id: &RunId, grant: AwsGrant) -> CredentialEndpoint {
        let run = Arc::new(RunAws {
            grant: Mutex::new(Some(grant)),
            issued: tokio::sync::Mutex::new(None),
        });
        lock(&self.runs).insert(id.clone(), run.clone());
        let issuer = self.clone();
        let id = id.clone();
        CredentialEndpoint {
            name: ENDPOINT_NAME.into(),
            source: Arc::new(move || -> CredentialFuture {
                let (issuer, run, id) = (issuer.clone(), run.clone(), id.clone());
                Box::pin(async move { issuer.credentials(&id, &run).await })
            }),
        }
    }

    /// Replaces a live run's grant (`None`: revoked). Credentials issued
    /// under another grant are never handed out again.
    pub fn update(&self, id: &RunId, grant: Option<AwsGrant>) {
        if let Some(run) = lock(&self.runs).get(id) {
            *lock(&run.grant) = grant;
        }
    }

    /// Forgets a run (its cleanup).
    pub fn forget(&self, id: &RunId) {
        lock(&self.runs).remove(id);
    }

    /// The run's credentials as `credential_process` output: cached while
    /// they have more than [`REFRESH_BEFORE`] to live, else fresh from STS.
    async fn credentials(&self, id: &RunId, run: &RunAws) -> Result<String, CredentialRefusal> {
        let mut issued = run.issued.lock().await;
        // Read under the lock: after a revoke, no request hands out keys.
        let Some(grant) = lock(&run.grant).clone() else {
            *issued = None;
            return Err(CredentialRefusal {
                status: 403,
                message: "the aws grant was revoked (`moat grant aws` grants it again; new runs get it)".into(),
            });
        };
        let now = Utc::now();
        if let Some((_, cached)) = issued.as_ref().filter(|(to, c)| *to == grant && fresh(c, now)) {
            return Ok(cached.process_output());
        }
        // Revoked or replaced: what was issued before is not kept around.
        *issued = None;
        let fetched = match &self.sts {
            Ok(sts) => sts
                .assume_role(&grant, &session_name(id), now)
                .await
                .map_err(|e| e.to_string()),
            Err(reason) => Err(reason.clone()),
        };
        match fetched {
            Ok(credentials) => {
                self.audit.record(
                    id,
                    Event::AwsCredentialsIssued {
                        role_arn: grant.role_arn.clone(),
                        expires_at: credentials.expiration.to_rfc3339(),
                    },
                );
                let output = credentials.process_output();
                *issued = Some((grant, credentials));
                Ok(output)
            }
            Err(reason) => {
                tracing::warn!(run = %id, "assuming {} failed: {reason}", grant.role_arn);
                self.audit.record(
                    id,
                    Event::AwsCredentialsRefused {
                        role_arn: grant.role_arn.clone(),
                        reason: reason.clone(),
                    },
                );
                Err(CredentialRefusal {
                    status: 502,
                    message: format!("no credentials for {}: {reason}", grant.role_arn),
                })
            }
        }
    }
}

/// Whether `credentials` may still be handed out at `now`.
fn fresh(credentials: &TemporaryCredentials, now: DateTime<Utc>) -> bool {
    credentials.expiration - now > REFRESH_BEFORE
}

/// `moat-<run id>`, as CloudTrail shows the session (`[\w+=,.@-]`, ≤ 64).
fn session_name(id: &RunId) -> String {
    let name: String = format!("moat-{id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(expires_in: chrono::TimeDelta, now: DateTime<Utc>) -> TemporaryCredentials {
        TemporaryCredentials {
            access_key_id: "ASIA".into(),
            secret_access_key: "s".into(),
            session_token: "t".into(),
            expiration: now + expires_in,
        }
    }

    #[test]
    fn credentials_are_reused_until_five_minutes_before_they_expire() {
        let now = Utc::now();
        assert!(fresh(&issued(chrono::TimeDelta::minutes(15), now), now));
        assert!(fresh(&issued(chrono::TimeDelta::seconds(301), now), now));
        assert!(!fresh(&issued(chrono::TimeDelta::seconds(300), now), now));
        assert!(!fresh(&issued(chrono::TimeDelta::minutes(-1), now), now));
    }

    #[test]
    fn session_names_carry_the_run_id_in_stss_alphabet() {
        let id = RunId::generate();
        let name = session_name(&id);
        assert_eq!(name, format!("moat-{id}"));
        assert!(name.len() <= 64);
    }
}
