//! AWS grants (`moat grant aws --role-arn ARN`): the host's AWS keys,
//! read once at grant time and stored encrypted like every credential, and
//! the role runs get. Runs never see these keys: the daemon assumes the
//! role with them ([`crate::sts`]) and hands a run only the short-lived
//! keys STS returns, through the proxy's credential endpoint, which the
//! container's AWS config calls as its `credential_process`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::credential::{Credential, CredentialKind};

/// The grant name runs use: `grants: [aws]`.
pub const AWS_GRANT: &str = "aws";
/// The region when `--region` is not given (and `AWS_REGION` is unset).
pub const DEFAULT_REGION: &str = "us-east-1";
/// How long issued credentials live: STS's minimum, 15 minutes.
pub const SESSION_SECONDS: u32 = 900;

/// Host variables read at grant time, as the AWS SDKs name them.
pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
/// The profile read from the shared credentials file when no keys are in
/// the environment and `--aws-profile` is not given.
pub const AWS_PROFILE: &str = "AWS_PROFILE";
/// Where the shared credentials file is, instead of `~/.aws/credentials`.
pub const AWS_SHARED_CREDENTIALS_FILE: &str = "AWS_SHARED_CREDENTIALS_FILE";
/// The region used when `--region` is not given.
pub const AWS_REGION: &str = "AWS_REGION";

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("--role-arn {0}: expected an IAM role ARN such as arn:aws:iam::123456789012:role/NAME")]
    NotARoleArn(String),
    #[error("--sts-endpoint {0}: expected an https:// URL such as https://sts.us-east-1.amazonaws.com")]
    NotHttps(String),
    #[error("--region {0}: expected a region name such as us-east-1")]
    NotARegion(String),
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} has no profile [{profile}] with aws_access_key_id and aws_secret_access_key")]
    NoProfile { path: PathBuf, profile: String },
    #[error("the stored aws grant is unreadable: {0}")]
    Unreadable(#[from] serde_json::Error),
}

/// Long-lived keys of the host. `Debug` shows the access key id only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
}

impl std::fmt::Debug for HostKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKeys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl HostKeys {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and
    /// `AWS_SESSION_TOKEN`) from `lookup`, when both keys are set.
    pub fn from_env(lookup: &dyn Fn(&str) -> Option<String>) -> Option<Self> {
        let read = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        Some(HostKeys {
            access_key_id: read(AWS_ACCESS_KEY_ID)?,
            secret_access_key: read(AWS_SECRET_ACCESS_KEY)?,
            session_token: read(AWS_SESSION_TOKEN),
        })
    }

    /// The keys of `[profile]` in a shared credentials file's `text`.
    pub fn from_shared_file(text: &str, profile: &str) -> Option<Self> {
        let mut section = None;
        let (mut id, mut secret, mut token) = (None, None, None);
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = Some(name.trim().to_owned());
                continue;
            }
            if section.as_deref() != Some(profile) {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = Some(value.trim().to_owned()).filter(|v| !v.is_empty());
            match key.trim() {
                "aws_access_key_id" => id = value,
                "aws_secret_access_key" => secret = value,
                "aws_session_token" => token = value,
                _ => {}
            }
        }
        Some(HostKeys {
            access_key_id: id?,
            secret_access_key: secret?,
            session_token: token,
        })
    }

    /// The keys of `profile` in the shared credentials file at `path`.
    pub fn from_shared_file_at(path: &Path, profile: &str) -> Result<Self, AwsError> {
        let text = std::fs::read_to_string(path).map_err(|source| AwsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_shared_file(&text, profile).ok_or_else(|| AwsError::NoProfile {
            path: path.to_path_buf(),
            profile: profile.to_owned(),
        })
    }
}

/// The shared credentials file: `AWS_SHARED_CREDENTIALS_FILE`, else
/// `~/.aws/credentials`.
pub fn shared_credentials_file(lookup: &dyn Fn(&str) -> Option<String>, home: &Path) -> PathBuf {
    lookup(AWS_SHARED_CREDENTIALS_FILE)
        .filter(|v| !v.is_empty())
        .map_or_else(|| home.join(".aws").join("credentials"), PathBuf::from)
}

/// What `moat grant aws` stores (encrypted): the role, where STS is, and
/// the host's keys that may assume it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsGrant {
    pub role_arn: String,
    pub region: String,
    /// `https://…`; STS's regional endpoint unless `--sts-endpoint`.
    pub sts_endpoint: String,
    pub keys: HostKeys,
}

impl AwsGrant {
    /// Checks the ARN, region and endpoint (the region's STS when `None`).
    pub fn new(role_arn: &str, region: &str, sts_endpoint: Option<&str>, keys: HostKeys) -> Result<Self, AwsError> {
        check_role_arn(role_arn)?;
        check_region(region)?;
        let sts_endpoint = match sts_endpoint {
            Some(url) if url.starts_with("https://") && url.len() > "https://".len() => url.to_owned(),
            Some(url) => return Err(AwsError::NotHttps(url.to_owned())),
            None => format!("https://sts.{region}.amazonaws.com/"),
        };
        Ok(AwsGrant {
            role_arn: role_arn.to_owned(),
            region: region.to_owned(),
            sts_endpoint,
            keys,
        })
    }

    pub fn from_credential(credential: &Credential) -> Result<Self, AwsError> {
        Ok(serde_json::from_str(&credential.token)?)
    }

    /// The credential to store; its account names the role, its source
    /// where the keys came from.
    pub fn to_credential(&self, source: &str) -> Result<Credential, AwsError> {
        let mut credential = Credential::new(serde_json::to_string(self)?, CredentialKind::AwsRole);
        credential.metadata.account = Some(self.role_arn.clone());
        credential.metadata.source = Some(source.to_owned());
        Ok(credential)
    }

    /// What a run's container gets: the region, the credential process,
    /// and the CA bundle the SDKs must trust (the proxy intercepts TLS).
    pub fn container_config(&self, credential_process: &str, ca_bundle: &str) -> String {
        format!(
            "# Written by moat for the aws grant: credentials come from the moat proxy, short-lived.\n\
             [default]\nregion = {}\ncredential_process = {credential_process}\nca_bundle = {ca_bundle}\n",
            self.region
        )
    }
}

/// `arn:PARTITION:iam::ACCOUNT:role/NAME`.
pub fn check_role_arn(arn: &str) -> Result<(), AwsError> {
    let invalid = || AwsError::NotARoleArn(arn.to_owned());
    let fields: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = fields.as_slice() else {
        return Err(invalid());
    };
    let name = resource.strip_prefix("role/").unwrap_or_default();
    let valid = *prefix == "arn"
        && partition.starts_with("aws")
        && *service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
        && !arn.contains(char::is_whitespace);
    if valid { Ok(()) } else { Err(invalid()) }
}

fn check_region(region: &str) -> Result<(), AwsError> {
    let valid = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(AwsError::NotARegion(region.to_owned()))
    }
}

/// Keys STS issued for a role. `Debug` shows the access key id only.
#[derive(Clone, PartialEq, Eq)]
pub struct TemporaryCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: DateTime<Utc>,
}

impl std::fmt::Debug for TemporaryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemporaryCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl TemporaryCredentials {
    /// The output the AWS `credential_process` protocol expects.
    pub fn process_output(&self) -> String {
        serde_json::json!({
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "SessionToken": self.session_token,
            "Expiration": self.expiration.to_rfc3339_opts(SecondsFormat::Secs, true),
        })
        .to_string()
    }
}

/// The container's `credential_process`: asks the moat proxy at `url`
/// through the run's proxy variables (their user part is the run's token,
/// which names the run), printing the JSON on success and the proxy's
/// reason on stderr otherwise. Needs `curl` (moat's images have it).
pub fn credential_process_script(url: &str) -> String {
    format!(
        r#"#!/bin/sh
# Written by moat for the aws grant: short-lived AWS credentials from the
# moat proxy. The run's token in HTTP_PROXY names the run; no key is here.
proxy="${{HTTP_PROXY:-${{http_proxy:-}}}}"
if [ -z "$proxy" ]; then
    echo "moat aws credential_process: HTTP_PROXY is not set (it names the run to the moat proxy)" >&2
    exit 1
fi
if ! command -v curl >/dev/null 2>&1; then
    echo "moat aws credential_process: needs curl in the image" >&2
    exit 1
fi
out=$(curl -sS --max-time 60 --proxy "$proxy" --write-out '\n%{{http_code}}' '{url}') || exit 1
status=$(printf '%s\n' "$out" | tail -n 1)
body=$(printf '%s\n' "$out" | sed '$d')
if [ "$status" != 200 ]; then
    printf 'moat aws credential_process: HTTP %s: %s\n' "$status" "$body" >&2
    exit 1
fi
printf '%s\n' "$body"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::123456789012:role/moat-dev";

    fn keys() -> HostKeys {
        HostKeys {
            access_key_id: "HOSTKEYIDFAKE0000001".into(),
            secret_access_key: "fake-host-secret-for-tests-0000000000000".into(),
            session_token: None,
        }
    }

    #[test]
    fn role_arns_regions_and_endpoints_are_checked() {
        assert!(check_role_arn(ROLE).is_ok());
        assert!(check_role_arn("arn:aws-cn:iam::123456789012:role/path/name").is_ok());
        for bad in [
            "arn:aws:iam::123456789012:user/me",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::12345:role/x",
            "arn:aws:iam::123456789012:role/",
            "role/x",
        ] {
            assert!(check_role_arn(bad).is_err(), "{bad}");
        }
        let grant = AwsGrant::new(ROLE, "eu-west-1", None, keys()).unwrap();
        assert_eq!(grant.sts_endpoint, "https://sts.eu-west-1.amazonaws.com/");
        assert!(AwsGrant::new(ROLE, "eu-west-1", Some("http://sts.local/"), keys()).is_err());
        assert!(AwsGrant::new(ROLE, "EU west", None, keys()).is_err());
    }

    #[test]
    fn keys_come_from_the_environment_or_a_profile() {
        let env = |name: &str| match name {
            AWS_ACCESS_KEY_ID => Some("KEYIDENV".to_string()),
            AWS_SECRET_ACCESS_KEY => Some("env-secret".to_string()),
            _ => None,
        };
        let from_env = HostKeys::from_env(&env).unwrap();
        assert_eq!(
            (from_env.access_key_id.as_str(), from_env.session_token),
            ("KEYIDENV", None)
        );
        assert!(HostKeys::from_env(&|_| None).is_none());
        let file = "[default]\naws_access_key_id = KEYIDDEFAULT\naws_secret_access_key = d\n\n\
                    # comment\n[work]\naws_access_key_id=KEYIDWORK\naws_secret_access_key = w-secret\n\
                    aws_session_token = tok\n";
        let work = HostKeys::from_shared_file(file, "work").unwrap();
        assert_eq!(work.access_key_id, "KEYIDWORK");
        assert_eq!(work.secret_access_key, "w-secret");
        assert_eq!(work.session_token.as_deref(), Some("tok"));
        assert_eq!(
            HostKeys::from_shared_file(file, "default").unwrap().access_key_id,
            "KEYIDDEFAULT"
        );
        assert!(HostKeys::from_shared_file(file, "other").is_none());
    }

    #[test]
    fn a_grant_round_trips_and_never_shows_its_secret_in_debug() {
        let grant = AwsGrant::new(ROLE, "us-east-1", Some("https://sts.test:8443/"), keys()).unwrap();
        let credential = grant.to_credential("env AWS_ACCESS_KEY_ID").unwrap();
        assert_eq!(credential.kind, CredentialKind::AwsRole);
        assert_eq!(credential.metadata.account.as_deref(), Some(ROLE));
        assert_eq!(AwsGrant::from_credential(&credential).unwrap(), grant);
        let shown = format!("{grant:?}");
        assert!(!shown.contains("fake-host-secret"), "{shown}");
        assert!(shown.contains("HOSTKEYIDFAKE0000001"), "{shown}");
        let config = grant.container_config("/etc/moat/aws/credential-process", "/etc/moat/ca/ca.crt");
        assert!(config.contains("credential_process = /etc/moat/aws/credential-process\n"));
        assert!(config.contains("ca_bundle = /etc/moat/ca/ca.crt\n"));
        assert!(!config.contains("HOSTKEYIDFAKE"), "{config}");
    }

    #[test]
    fn the_process_output_follows_the_credential_process_protocol() {
        let issued = TemporaryCredentials {
            access_key_id: "ASIATEMP".into(),
            secret_access_key: "temp-secret".into(),
            session_token: "temp-token".into(),
            expiration: DateTime::parse_from_rfc3339("2026-12-03T13:15:00Z").unwrap().to_utc(),
        };
        let output: serde_json::Value = serde_json::from_str(&issued.process_output()).unwrap();
        assert_eq!(output["Version"], 1);
        assert_eq!(output["AccessKeyId"], "ASIATEMP");
        assert_eq!(output["SecretAccessKey"], "temp-secret");
        assert_eq!(output["SessionToken"], "temp-token");
        assert_eq!(output["Expiration"], "2026-12-03T13:15:00Z");
        assert!(!format!("{issued:?}").contains("temp-secret"));
    }
}
