//! Container output: Docker's demultiplexed frames as tagged chunks, and
//! the collected output and exit code of an exec.

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::StreamExt;

use crate::{ExecOutput, OutputChunk, OutputStreamKind};

/// A chunk tagged with its stream (a TTY's output is its own stream);
/// stdin echoes are dropped.
pub fn log_chunk(output: LogOutput) -> Option<OutputChunk> {
    match output {
        LogOutput::StdOut { message } => Some(OutputChunk {
            stream: OutputStreamKind::Stdout,
            data: message,
        }),
        LogOutput::Console { message } => Some(OutputChunk {
            stream: OutputStreamKind::Tty,
            data: message,
        }),
        LogOutput::StdErr { message } => Some(OutputChunk {
            stream: OutputStreamKind::Stderr,
            data: message,
        }),
        LogOutput::StdIn { .. } => None,
    }
}

/// Runs `command` in container `id` and collects its output and exit code
/// (the caller bounds the time).
pub async fn exec(docker: &Docker, id: &str, command: &[String]) -> Result<ExecOutput, BollardError> {
    let config = CreateExecOptions {
        cmd: Some(command.to_vec()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec_id = docker.create_exec(id, config).await?.id;
    let started = docker.start_exec(&exec_id, Some(StartExecOptions::default())).await?;
    let mut output = ExecOutput {
        exit_code: None,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    if let StartExecResults::Attached { output: mut chunks, .. } = started {
        while let Some(chunk) = chunks.next().await {
            match log_chunk(chunk?) {
                Some(OutputChunk {
                    stream: OutputStreamKind::Stderr,
                    data,
                }) => output.stderr.extend_from_slice(&data),
                Some(OutputChunk { data, .. }) => output.stdout.extend_from_slice(&data),
                None => {}
            }
        }
    }
    output.exit_code = docker.inspect_exec(&exec_id).await?.exit_code;
    Ok(output)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn frames_keep_their_stream_and_tty_output_is_its_own() {
        let data = Bytes::from_static(b"x\n");
        let tagged = |output| log_chunk(output).map(|chunk: OutputChunk| chunk.stream);
        assert_eq!(
            tagged(LogOutput::StdOut { message: data.clone() }),
            Some(OutputStreamKind::Stdout)
        );
        assert_eq!(
            tagged(LogOutput::StdErr { message: data.clone() }),
            Some(OutputStreamKind::Stderr)
        );
        assert_eq!(
            tagged(LogOutput::Console { message: data.clone() }),
            Some(OutputStreamKind::Tty)
        );
        assert_eq!(tagged(LogOutput::StdIn { message: data }), None);
    }
}
