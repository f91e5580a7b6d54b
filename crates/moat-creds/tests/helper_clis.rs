//! Grant flows and `secrets:` resolution against fake `gh`, `op` and `aws`
//! scripts. All scripts are written once, before any test spawns a process,
//! so no test executes a file another thread still has open for writing.

mod support;

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use moat_creds::{
    CredentialKind, GrantError, NoPrompt, Provider, Providers, SecretError, SecretResolver, TokenPrompt, TokenSources,
    resolve_secret,
};
use support::TempHome;

struct FakeClis {
    _dir: TempHome,
    root: PathBuf,
}

impl FakeClis {
    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

fn fakes() -> &'static FakeClis {
    static FAKES: OnceLock<FakeClis> = OnceLock::new();
    FAKES.get_or_init(|| {
        let dir = TempHome::new();
        let root = dir.home.root().to_path_buf();
        let scripts = [
            (
                "gh-logged-in",
                "#!/bin/sh\n[ \"$1 $2\" = 'auth token' ] || exit 9\necho fake-gh-cli-token\n",
            ),
            ("gh-logged-out", "#!/bin/sh\necho 'no oauth token found' >&2\nexit 1\n"),
            // Prints its arguments so the test can check the exact command.
            ("op", "#!/bin/sh\nprintf '%s|' \"$@\"\n"),
            (
                "op-signed-out",
                "#!/bin/sh\necho '[ERROR] You are not currently signed in.' >&2\nexit 1\n",
            ),
            ("aws", "#!/bin/sh\nprintf '%s|' \"$@\"\necho\n"),
            ("slow", "#!/bin/sh\nexec sleep 5\n"),
        ];
        for (name, body) in scripts {
            let path = root.join(name);
            fs::write(&path, body).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        FakeClis { _dir: dir, root }
    })
}

fn github() -> Provider {
    Providers::built_in().get("github").unwrap().clone()
}

fn sources(gh: &str) -> TokenSources {
    TokenSources {
        gh_program: fakes().path(gh),
        use_env: false,
        ..TokenSources::default()
    }
}

struct Answer(&'static str);

impl TokenPrompt for Answer {
    fn ask_token(&self, _provider: &Provider) -> io::Result<Option<String>> {
        Ok(Some(self.0.to_owned()))
    }
}

// === grants ===

#[test]
fn github_uses_gh_auth_token_when_the_environment_has_none() {
    let granted = sources("gh-logged-in").acquire(&github(), &NoPrompt).unwrap();
    assert_eq!(granted.token, "fake-gh-cli-token");
    assert_eq!(granted.source, "gh auth token");
    assert_eq!(granted.kind, CredentialKind::OauthToken);
    let credential = granted.into_credential();
    assert_eq!(credential.metadata.source.as_deref(), Some("gh auth token"));
}

#[test]
fn a_logged_out_gh_falls_through_to_the_prompt() {
    let granted = sources("gh-logged-out")
        .acquire(&github(), &Answer("  fake-typed-token \n"))
        .unwrap();
    assert_eq!(granted.token, "fake-typed-token");
    assert_eq!(granted.source, "prompt");
}

#[test]
fn without_any_source_the_error_lists_what_to_do() {
    let err = sources("gh-not-installed").acquire(&github(), &NoPrompt).unwrap_err();
    assert!(matches!(err, GrantError::NoToken { .. }), "{err}");
    let message = err.to_string();
    for hint in ["set GH_TOKEN", "set GITHUB_TOKEN", "gh auth login"] {
        assert!(message.contains(hint), "{message}");
    }
}

#[test]
fn a_hanging_gh_is_abandoned_at_its_timeout() {
    let sources = TokenSources {
        gh_timeout: Duration::from_millis(200),
        ..sources("slow")
    };
    let start = Instant::now();
    let granted = sources.acquire(&github(), &Answer("fake-after-timeout")).unwrap();
    assert_eq!(granted.token, "fake-after-timeout");
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn api_key_providers_never_run_gh() {
    let openai = Providers::built_in().get("openai").unwrap().clone();
    let err = sources("gh-logged-in").acquire(&openai, &NoPrompt).unwrap_err();
    assert!(err.to_string().contains("set OPENAI_API_KEY"), "{err}");
}

// === secrets ===

fn resolver(op: &str, aws: &str) -> SecretResolver {
    SecretResolver {
        op_program: fakes().path(op),
        aws_program: fakes().path(aws),
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn env_secrets_read_the_named_variable() {
    let path = std::env::var("PATH").unwrap();
    assert_eq!(resolve_secret("env://PATH").unwrap(), path);
    let err = resolve_secret("env://MOAT_TEST_SURELY_UNSET_VARIABLE").unwrap_err();
    assert!(matches!(err, SecretError::EnvUnset { .. }), "{err}");
    assert!(
        err.to_string().contains("MOAT_TEST_SURELY_UNSET_VARIABLE is not set"),
        "{err}"
    );
}

#[test]
fn op_secrets_run_op_read_with_the_reference() {
    let value = resolver("op", "aws").resolve("op://Dev/db/password").unwrap();
    assert_eq!(value, "read|--no-newline|op://Dev/db/password|");
}

#[test]
fn ssm_secrets_run_get_parameter_with_decryption() {
    let value = resolver("op", "aws").resolve("ssm:///prod/db/password").unwrap();
    assert_eq!(
        value,
        "ssm|get-parameter|--name|/prod/db/password|--with-decryption|--query|Parameter.Value|--output|text|"
    );
}

#[test]
fn a_missing_cli_says_how_to_install_it() {
    let r = resolver("no-such-op", "no-such-aws");
    let err = r.resolve("op://Dev/db/password").unwrap_err().to_string();
    assert!(err.contains("not installed"), "{err}");
    assert!(err.contains("install the 1Password CLI"), "{err}");
    let err = r.resolve("ssm://param").unwrap_err().to_string();
    assert!(err.contains("install the AWS CLI"), "{err}");
}

#[test]
fn a_failing_cli_reports_its_stderr_and_a_sign_in_hint() {
    let err = resolver("op-signed-out", "aws")
        .resolve("op://Dev/db/password")
        .unwrap_err();
    assert!(matches!(err, SecretError::CliFailed { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("not currently signed in"), "{message}");
    assert!(message.contains("op signin"), "{message}");
}

#[test]
fn a_hanging_cli_is_bounded() {
    let r = SecretResolver {
        timeout: Duration::from_millis(200),
        ..resolver("slow", "slow")
    };
    let start = Instant::now();
    let err = r.resolve("ssm://param").unwrap_err().to_string();
    assert!(err.contains("did not finish within"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn malformed_uris_are_rejected_before_running_anything() {
    let r = resolver("slow", "slow");
    for uri in ["op://vault/item", "op://vault//field", "ssm://", "env://", "vault://x"] {
        let start = Instant::now();
        assert!(r.resolve(uri).is_err(), "{uri}");
        assert!(start.elapsed() < Duration::from_millis(150), "{uri} ran a CLI");
    }
}
