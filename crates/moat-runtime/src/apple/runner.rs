//! How the Apple backend runs the `container` CLI: the [`CommandRunner`]
//! seam, the real implementation on moat's bounded runner
//! ([`moat_core::subprocess`]) and a scripted one that replays recorded outputs in tests.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use moat_core::subprocess::{Streaming, Subprocess, SubprocessError};

use crate::{RuntimeError, RuntimeKind, RuntimeResult};

const KIND: RuntimeKind = RuntimeKind::Apple;

/// What one CLI invocation printed and how it exited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit status; `128 + signal` when killed by a signal.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// A stream of raw stdout chunks from a long-running invocation.
pub type ByteStream = Pin<Box<dyn Stream<Item = RuntimeResult<Bytes>> + Send>>;

/// Runs `container <args>`.
#[async_trait]
pub trait CommandRunner: Send + Sync + 'static {
    /// Runs to completion within `timeout`; a timeout kills the process and
    /// fails with [`RuntimeError::Timeout`] naming the command.
    async fn run(&self, args: &[String], timeout: Duration) -> RuntimeResult<CommandOutput>;

    /// Starts a long-running invocation (e.g. `logs --follow`) and streams
    /// its stdout; dropping the stream ends the process.
    async fn stream(&self, args: &[String]) -> RuntimeResult<ByteStream>;

    /// The program being run, for `moat doctor`.
    fn program(&self) -> String;
}

/// `container <args>` as a human-readable command line.
pub fn command_line(args: &[String]) -> String {
    let mut line = "container".to_string();
    for arg in args {
        line.push(' ');
        line.push_str(arg);
    }
    line
}

// === impl ProcessRunner ===

/// Runs the real `container` binary.
#[derive(Clone, Debug)]
pub struct ProcessRunner {
    program: PathBuf,
}

impl Default for ProcessRunner {
    fn default() -> Self {
        ProcessRunner {
            program: PathBuf::from("container"),
        }
    }
}

impl ProcessRunner {
    /// Runs `program` (a path or a name looked up on `PATH`).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        ProcessRunner {
            program: program.into(),
        }
    }

    fn subprocess(&self, args: &[String], timeout: Duration) -> Subprocess {
        Subprocess::new(&self.program, timeout).args(args)
    }

    fn error(&self, args: &[String], error: SubprocessError) -> RuntimeError {
        match error {
            SubprocessError::NotFound { .. } | SubprocessError::Spawn { .. } => RuntimeError::Unavailable {
                runtime: KIND,
                reason: format!("{error} (is Apple's `container` CLI installed?)"),
            },
            SubprocessError::TimedOut { after, .. } => RuntimeError::Timeout {
                runtime: KIND,
                op: command_line(args),
                after,
            },
            SubprocessError::Wait { .. } => RuntimeError::Other {
                runtime: KIND,
                op: command_line(args),
                message: error.to_string(),
            },
        }
    }
}

#[async_trait]
impl CommandRunner for ProcessRunner {
    async fn run(&self, args: &[String], timeout: Duration) -> RuntimeResult<CommandOutput> {
        let output = self
            .subprocess(args, timeout)
            .run()
            .await
            .map_err(|error| self.error(args, error))?;
        Ok(CommandOutput {
            status: output.code(),
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }

    async fn stream(&self, args: &[String]) -> RuntimeResult<ByteStream> {
        let streaming = self
            .subprocess(args, Duration::ZERO)
            .stream_stdout()
            .map_err(|error| self.error(args, error))?;
        let state = StdoutReader {
            streaming,
            op: command_line(args),
        };
        let stream = futures_util::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            let mut buffer = vec![0u8; 8192];
            match state.streaming.read(&mut buffer).await {
                Ok(0) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    Some((Ok(Bytes::from(buffer)), Some(state)))
                }
                Err(err) => {
                    let error = RuntimeError::Other {
                        runtime: KIND,
                        op: state.op.clone(),
                        message: format!("reading stdout failed: {err}"),
                    };
                    Some((Err(error), None))
                }
            }
        });
        Ok(Box::pin(stream))
    }

    fn program(&self) -> String {
        self.program.display().to_string()
    }
}

/// A streaming invocation: the process lives (and dies on drop) with it.
struct StdoutReader {
    streaming: Streaming,
    op: String,
}

// === impl ScriptedRunner ===

/// One scripted answer: what the command prints, after how long.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScriptedReply {
    pub output: CommandOutput,
    /// How long the command takes (tokio time); longer than the caller's
    /// timeout means the call times out.
    pub takes: Duration,
}

impl ScriptedReply {
    /// Exit 0 with `stdout`.
    pub fn ok(stdout: &str) -> Self {
        ScriptedReply {
            output: CommandOutput {
                status: 0,
                stdout: stdout.to_string(),
                stderr: String::new(),
            },
            takes: Duration::ZERO,
        }
    }

    /// Exit 1 with `stderr`, as the CLI fails.
    pub fn fail(stderr: &str) -> Self {
        ScriptedReply {
            output: CommandOutput {
                status: 1,
                stdout: String::new(),
                stderr: stderr.to_string(),
            },
            takes: Duration::ZERO,
        }
    }

    /// A command that never finishes.
    pub fn hang() -> Self {
        ScriptedReply {
            takes: Duration::MAX,
            ..ScriptedReply::default()
        }
    }

    /// The same reply, taking `takes` to arrive.
    pub fn taking(self, takes: Duration) -> Self {
        ScriptedReply { takes, ..self }
    }
}

/// Replays scripted replies for commands matched by argument prefix, and
/// records every invocation. Replies for one prefix are used in order; the
/// last one added with [`ScriptedRunner::always`] repeats.
#[derive(Clone, Default)]
pub struct ScriptedRunner {
    state: Arc<Mutex<ScriptState>>,
}

#[derive(Default)]
struct ScriptState {
    rules: Vec<Rule>,
    invocations: Vec<Vec<String>>,
}

struct Rule {
    prefix: Vec<String>,
    replies: VecDeque<ScriptedReply>,
    repeat: Option<ScriptedReply>,
}

impl Rule {
    fn matches(&self, args: &[String]) -> bool {
        args.starts_with(&self.prefix) && (!self.replies.is_empty() || self.repeat.is_some())
    }

    fn take(&mut self) -> Option<ScriptedReply> {
        self.replies.pop_front().or_else(|| self.repeat.clone())
    }
}

impl ScriptedRunner {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, ScriptState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers the next command starting with `prefix` with `reply` (once).
    pub fn once(&self, prefix: &[&str], reply: ScriptedReply) -> &Self {
        self.add(prefix, Some(reply), None)
    }

    /// Answers every command starting with `prefix` with `reply`, after any
    /// `once` replies for the same prefix are used up.
    pub fn always(&self, prefix: &[&str], reply: ScriptedReply) -> &Self {
        self.add(prefix, None, Some(reply))
    }

    fn add(&self, prefix: &[&str], once: Option<ScriptedReply>, repeat: Option<ScriptedReply>) -> &Self {
        let prefix: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        let mut state = self.lock();
        if let Some(rule) = state.rules.iter_mut().find(|r| r.prefix == prefix) {
            rule.replies.extend(once);
            if repeat.is_some() {
                rule.repeat = repeat;
            }
        } else {
            state.rules.push(Rule {
                prefix,
                replies: once.into_iter().collect(),
                repeat,
            });
        }
        self
    }

    /// Every invocation so far, in order.
    pub fn invocations(&self) -> Vec<Vec<String>> {
        self.lock().invocations.clone()
    }

    /// How many invocations started with `prefix`.
    pub fn count(&self, prefix: &[&str]) -> usize {
        let prefix: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        self.lock()
            .invocations
            .iter()
            .filter(|args| args.starts_with(&prefix))
            .count()
    }

    /// Records the invocation and picks its reply (longest matching prefix).
    fn reply_for(&self, args: &[String]) -> RuntimeResult<ScriptedReply> {
        let mut state = self.lock();
        state.invocations.push(args.to_vec());
        state
            .rules
            .iter_mut()
            .filter(|rule| rule.matches(args))
            .max_by_key(|rule| rule.prefix.len())
            .and_then(Rule::take)
            .ok_or_else(|| RuntimeError::Other {
                runtime: KIND,
                op: command_line(args),
                message: "the scripted runner has no reply for this command".to_string(),
            })
    }
}

#[async_trait]
impl CommandRunner for ScriptedRunner {
    async fn run(&self, args: &[String], timeout: Duration) -> RuntimeResult<CommandOutput> {
        let reply = self.reply_for(args)?;
        if reply.takes > timeout {
            tokio::time::sleep(timeout).await;
            return Err(RuntimeError::Timeout {
                runtime: KIND,
                op: command_line(args),
                after: timeout,
            });
        }
        tokio::time::sleep(reply.takes).await;
        Ok(reply.output)
    }

    /// Yields the reply's stdout, then stays open like `logs --follow`.
    async fn stream(&self, args: &[String]) -> RuntimeResult<ByteStream> {
        let reply = self.reply_for(args)?;
        let first = Bytes::from(reply.output.stdout.into_bytes());
        let printed = futures_util::stream::iter((!first.is_empty()).then_some(Ok(first)));
        let stream = futures_util::StreamExt::chain(printed, futures_util::stream::pending());
        Ok(Box::pin(stream))
    }

    fn program(&self) -> String {
        "container (scripted)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn process_runner_reports_status_and_both_streams() {
        let runner = ProcessRunner::new("sh");
        let output = runner
            .run(
                &args(&["-c", "echo out; echo err >&2; exit 3"]),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(output.status, 3);
        assert_eq!(output.stdout, "out\n");
        assert_eq!(output.stderr, "err\n");
    }

    #[tokio::test]
    async fn process_runner_kills_on_timeout() {
        let runner = ProcessRunner::new("sleep");
        let started = std::time::Instant::now();
        let err = runner
            .run(&args(&["30"]), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(err.to_string().contains("container 30"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn process_runner_missing_binary_is_unavailable() {
        let runner = ProcessRunner::new("/nonexistent/container");
        let err = runner.run(&args(&["list"]), Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, RuntimeError::Unavailable { .. }), "{err}");
    }

    #[tokio::test]
    async fn process_runner_streams_stdout() {
        use futures_util::StreamExt;
        let runner = ProcessRunner::new("sh");
        let stream = runner
            .stream(&args(&["-c", "printf a; sleep 0.1; printf b"]))
            .await
            .unwrap();
        let chunks: Vec<Bytes> = stream.map(|c| c.unwrap()).collect().await;
        assert_eq!(chunks.concat(), b"ab");
    }

    #[tokio::test]
    async fn scripted_runner_uses_once_replies_before_the_repeating_one() {
        let runner = ScriptedRunner::new();
        runner
            .once(&["network", "delete"], ScriptedReply::fail("busy"))
            .always(&["network", "delete"], ScriptedReply::ok("done"));
        let call = args(&["network", "delete", "n"]);
        let limit = Duration::from_secs(1);
        assert_eq!(runner.run(&call, limit).await.unwrap().status, 1);
        assert_eq!(runner.run(&call, limit).await.unwrap().stdout, "done");
        assert_eq!(runner.run(&call, limit).await.unwrap().stdout, "done");
        assert_eq!(runner.count(&["network"]), 3);
        assert!(runner.run(&args(&["list"]), limit).await.is_err());
    }
}
