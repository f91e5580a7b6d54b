//! `secrets:` in moat.yaml: values resolved on the host at run start from
//! `env://NAME`, `op://vault/item/field` (1Password CLI `op read`) or
//! `ssm://parameter-name` (AWS CLI, decrypted). Each CLI call is bounded by
//! a timeout; errors say how to fix the setup.

use std::path::PathBuf;
use std::time::Duration;

use moat_core::env_vars;
use moat_core::subprocess::{Subprocess, SubprocessError, stderr_excerpt, strip_line_ending};

/// Default bound on one `op` or `aws` call (1Password may wait for an
/// unlock in its desktop app).
pub const SECRET_CLI_TIMEOUT: Duration = Duration::from_secs(30);

const OP_INSTALL_HINT: &str =
    "install the 1Password CLI (https://developer.1password.com/docs/cli/get-started/) and sign in with `op signin`";
const OP_FAILURE_HINT: &str =
    "check that you are signed in (`op whoami`, `op signin`) and that the vault, item and field exist";
const AWS_INSTALL_HINT: &str = "install the AWS CLI v2 (https://aws.amazon.com/cli/) and configure credentials with `aws configure` or AWS_PROFILE";
const AWS_FAILURE_HINT: &str =
    "check your AWS credentials and region (`aws sts get-caller-identity`) and that the parameter exists";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {uri:?}: unsupported scheme; use env://NAME, op://vault/item/field or ssm://parameter")]
    UnsupportedScheme { uri: String },
    #[error("secret {uri:?}: {reason}")]
    Malformed { uri: String, reason: &'static str },
    #[error("secret {uri:?}: environment variable {var} is not set; export it before running moat")]
    EnvUnset { uri: String, var: String },
    #[error("secret {uri:?}: {source}; {hint}")]
    CliUnavailable {
        uri: String,
        source: SubprocessError,
        hint: &'static str,
    },
    #[error("secret {uri:?}: `{program}` failed ({status}): {stderr}; {hint}")]
    CliFailed {
        uri: String,
        program: String,
        status: String,
        stderr: String,
        hint: &'static str,
    },
    #[error("secret {uri:?} resolved to an empty value")]
    Empty { uri: String },
}

/// The programs and bound used to resolve secrets.
#[derive(Clone, Debug)]
pub struct SecretResolver {
    pub op_program: PathBuf,
    pub aws_program: PathBuf,
    pub timeout: Duration,
}

impl Default for SecretResolver {
    fn default() -> Self {
        SecretResolver {
            op_program: PathBuf::from("op"),
            aws_program: PathBuf::from("aws"),
            timeout: SECRET_CLI_TIMEOUT,
        }
    }
}

/// Resolves `uri` with the default [`SecretResolver`].
pub fn resolve_secret(uri: &str) -> Result<String, SecretError> {
    SecretResolver::default().resolve(uri)
}

impl SecretResolver {
    pub fn resolve(&self, uri: &str) -> Result<String, SecretError> {
        let value = if let Some(var) = uri.strip_prefix("env://") {
            resolve_env(uri, var)?
        } else if uri.starts_with("op://") {
            self.resolve_op(uri)?
        } else if let Some(name) = uri.strip_prefix("ssm://") {
            self.resolve_ssm(uri, name)?
        } else {
            return Err(SecretError::UnsupportedScheme { uri: uri.to_owned() });
        };
        if value.is_empty() {
            return Err(SecretError::Empty { uri: uri.to_owned() });
        }
        Ok(value)
    }

    fn resolve_op(&self, uri: &str) -> Result<String, SecretError> {
        let parts: Vec<&str> = uri["op://".len()..].split('/').collect();
        if parts.len() < 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(malformed(uri, "expected op://vault/item/field"));
        }
        let cli = Cli {
            program: &self.op_program,
            install_hint: OP_INSTALL_HINT,
            failure_hint: OP_FAILURE_HINT,
            appends_newline: false,
        };
        self.run(uri, &cli, &["read", "--no-newline", uri])
    }

    fn resolve_ssm(&self, uri: &str, name: &str) -> Result<String, SecretError> {
        if name.is_empty() {
            return Err(malformed(uri, "expected ssm://parameter-name"));
        }
        let cli = Cli {
            program: &self.aws_program,
            install_hint: AWS_INSTALL_HINT,
            failure_hint: AWS_FAILURE_HINT,
            appends_newline: true,
        };
        let args = [
            "ssm",
            "get-parameter",
            "--name",
            name,
            "--with-decryption",
            "--query",
            "Parameter.Value",
            "--output",
            "text",
        ];
        self.run(uri, &cli, &args)
    }

    fn run(&self, uri: &str, cli: &Cli<'_>, args: &[&str]) -> Result<String, SecretError> {
        let helper = Subprocess::new(cli.program, self.timeout).args(args);
        let output = helper.run_blocking().map_err(|source| SecretError::CliUnavailable {
            uri: uri.to_owned(),
            source,
            hint: cli.install_hint,
        })?;
        if !output.status.success() {
            return Err(SecretError::CliFailed {
                uri: uri.to_owned(),
                program: cli.program.display().to_string(),
                status: output.status.to_string(),
                stderr: stderr_excerpt(&output.stderr),
                hint: cli.failure_hint,
            });
        }
        if cli.appends_newline {
            return Ok(strip_line_ending(&output.stdout).to_owned());
        }
        Ok(output.stdout)
    }
}

struct Cli<'a> {
    program: &'a std::path::Path,
    install_hint: &'static str,
    failure_hint: &'static str,
    /// Whether the CLI prints a newline after the value (`aws --output
    /// text` does; `op read --no-newline` does not).
    appends_newline: bool,
}

fn resolve_env(uri: &str, var: &str) -> Result<String, SecretError> {
    if var.is_empty() || var.contains(['=', '\0']) {
        return Err(malformed(uri, "expected env://VARIABLE_NAME"));
    }
    env_vars::read(var).ok_or_else(|| SecretError::EnvUnset {
        uri: uri.to_owned(),
        var: var.to_owned(),
    })
}

fn malformed(uri: &str, reason: &'static str) -> SecretError {
    SecretError::Malformed {
        uri: uri.to_owned(),
        reason,
    }
}
