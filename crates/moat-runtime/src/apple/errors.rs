//! Turns a failed `container` invocation into a typed [`RuntimeError`] by
//! the message substrings the CLI is known to print (fixture README,
//! "Notes for parsers" §5). The CLI prints `Error: <message>` on stderr and
//! exits 1; some failures are preceded by a log line with the server's
//! message, so the whole of stderr is searched.

use crate::{RuntimeError, RuntimeKind};

use super::runner::{CommandOutput, command_line};

const KIND: RuntimeKind = RuntimeKind::Apple;

/// Texts meaning the apiserver is not running (0.5+; wrapped differently
/// before 0.10, hence two independent markers).
const APISERVER_DOWN: &[&str] = &[
    "Ensure container system service has been started",
    "XPC connection error",
];

/// Texts meaning an object is still referenced or busy. The phrase "in use"
/// never appears in the CLI's network errors.
const IN_USE: &[&str] = &[
    "referring containers",
    "has a pending operation",
    "IP allocator cannot be disabled",
    "already exists",
];

/// Texts meaning the object does not exist. `failed to delete one or more
/// networks` is `network delete`'s client-side existence check; `no network
/// for id` the server's answer when it vanished in a race.
const NOT_FOUND: &[&str] = &[
    "not found",
    "No such container",
    "no network for id",
    "failed to delete one or more networks",
];

const NO_KERNEL: &str = "default kernel not configured";

fn contains_any(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(|needle| text.contains(needle))
}

/// Whether the invocation failed because the apiserver is not running.
pub fn is_apiserver_down(output: &CommandOutput) -> bool {
    !output.success() && contains_any(&output.stderr, APISERVER_DOWN)
}

/// Whether a failure is the CLI's own (`Error: …` as the last line, or the
/// apiserver being down) rather than the output of a command run in the
/// container, which may say "not found" too (`sh: foo: not found`).
pub fn is_cli_error(output: &CommandOutput) -> bool {
    let last_line = output.stderr.lines().rev().map(str::trim).find(|l| !l.is_empty());
    is_apiserver_down(output) || last_line.is_some_and(|line| line.starts_with("Error: "))
}

/// Stderr on one line, for error messages.
pub fn one_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The error for a failed invocation of `container <args>` about `what`
/// (e.g. `network moat-run_…`).
pub fn classify(args: &[String], what: &str, output: &CommandOutput) -> RuntimeError {
    let stderr = &output.stderr;
    let detail = if stderr.trim().is_empty() {
        format!("exit status {} with no message", output.status)
    } else {
        one_line(stderr)
    };
    if contains_any(stderr, APISERVER_DOWN) {
        RuntimeError::Unavailable {
            runtime: KIND,
            reason: format!("the container system service is not running: {detail}"),
        }
    } else if contains_any(stderr, IN_USE) {
        RuntimeError::InUse {
            runtime: KIND,
            what: what.to_string(),
            detail,
        }
    } else if contains_any(stderr, NOT_FOUND) {
        RuntimeError::NotFound {
            runtime: KIND,
            what: what.to_string(),
        }
    } else if stderr.contains(NO_KERNEL) {
        RuntimeError::Unavailable {
            runtime: KIND,
            reason: format!("{detail} (run `container system kernel set --recommended` once to install it)"),
        }
    } else {
        RuntimeError::Other {
            runtime: KIND,
            op: command_line(args),
            message: detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(stderr: &str) -> CommandOutput {
        CommandOutput {
            status: 1,
            stdout: String::new(),
            stderr: stderr.to_string(),
        }
    }

    fn classify_fixture(stderr: &str) -> RuntimeError {
        let args = vec!["network".to_string(), "delete".to_string()];
        classify(&args, "network moat-run_fedcba987654", &failed(stderr))
    }

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/apple-container/", $name))
        };
    }

    #[test]
    fn busy_network_errors_are_in_use() {
        for stderr in [
            fixture!("err-network-delete-in-use.txt"),
            fixture!("err-network-delete-pending.txt"),
            fixture!("err-network-delete-allocator-legacy.txt"),
            fixture!("err-legacy07-network-delete-allocator.txt"),
            fixture!("err-network-create-exists.txt"),
        ] {
            let err = classify_fixture(stderr);
            assert!(matches!(err, RuntimeError::InUse { .. }), "{stderr}: {err}");
        }
    }

    #[test]
    fn missing_objects_are_not_found() {
        for stderr in [
            fixture!("err-inspect-not-found.txt"),
            fixture!("err-network-delete-not-found.txt"),
            fixture!("err-network-inspect-not-found.txt"),
            fixture!("err-image-inspect-not-found.txt"),
            "Error: No such container: run_000000000000\n",
        ] {
            assert!(classify_fixture(stderr).is_not_found(), "{stderr}");
        }
    }

    #[test]
    fn apiserver_down_is_recognised() {
        let output = failed(fixture!("err-apiserver-not-running.txt"));
        assert!(is_apiserver_down(&output));
        assert!(matches!(
            classify(&[], "containers", &output),
            RuntimeError::Unavailable { .. }
        ));
        assert!(!is_apiserver_down(&failed(fixture!("err-inspect-not-found.txt"))));
    }

    #[test]
    fn cli_errors_are_told_apart_from_command_output() {
        assert!(is_cli_error(&failed(fixture!("err-inspect-not-found.txt"))));
        assert!(is_cli_error(&failed(fixture!("err-network-delete-in-use.txt"))));
        assert!(is_cli_error(&failed(fixture!("err-apiserver-not-running.txt"))));
        assert!(!is_cli_error(&failed("sh: 1: frobnicate: not found\n")));
        assert!(!is_cli_error(&failed("")));
    }

    #[test]
    fn missing_kernel_says_how_to_fix_it() {
        let err = classify_fixture(fixture!("err-kernel-not-configured.txt"));
        assert!(matches!(err, RuntimeError::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains("kernel set --recommended"), "{err}");
    }

    #[test]
    fn other_errors_keep_the_message_and_command() {
        let err = classify_fixture(fixture!("err-network-delete-builtin.txt"));
        let text = err.to_string();
        assert!(matches!(err, RuntimeError::Other { .. }), "{text}");
        assert!(text.contains("container network delete"), "{text}");
        assert!(text.contains("cannot delete a builtin network"), "{text}");
    }
}
