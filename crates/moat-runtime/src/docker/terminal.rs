//! Attached streams on Docker: a container's stdin and output through the
//! engine's hijacked attach connection, commands run with `exec` and a TTY,
//! and TTY resizes (issue 12).

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{AttachContainerOptions, ResizeContainerTTYOptions, ResizeExecOptions};
use futures_util::TryStreamExt;

use super::errors::map_error;
use super::output;
use crate::{Attached, ExecSpec, RuntimeError, RuntimeKind, TerminalSize};

/// The engine's detach sequence, which it swallows from stdin. The engine
/// cannot be told to have none, so moat picks one no keyboard sends by
/// accident (moat's own escape prefix is handled by the CLI).
pub const ENGINE_DETACH_KEYS: &str = "ctrl-^,ctrl-@,ctrl-^,ctrl-@,ctrl-^";

/// Attaches to container `id`'s stdin, stdout and stderr (live output only).
pub async fn attach(docker: &Docker, id: &str) -> Result<Attached, RuntimeError> {
    let op = format!("attach to container {id}");
    let what = format!("container {id}");
    let options = AttachContainerOptions {
        detach_keys: Some(ENGINE_DETACH_KEYS.to_string()),
        logs: false,
        stream: true,
        stdin: true,
        stdout: true,
        stderr: true,
    };
    let attached = docker
        .attach_container(id, Some(options))
        .await
        .map_err(|e| map_error(&op, &what, e))?;
    Ok(Attached {
        output: tagged_output(attached.output, op, what),
        input: attached.input,
    })
}

pub async fn resize_container(docker: &Docker, id: &str, size: TerminalSize) -> Result<(), RuntimeError> {
    let options = ResizeContainerTTYOptions {
        h: i32::from(size.rows),
        w: i32::from(size.cols),
    };
    docker.resize_container_tty(id, options).await.map_err(|e| {
        map_error(
            &format!("resize the TTY of container {id}"),
            &format!("container {id}"),
            e,
        )
    })
}

/// Creates and starts an exec with its streams attached, its TTY (if any)
/// resized at once (bollard's exec creation takes no initial size).
pub async fn exec(docker: &Docker, id: &str, spec: &ExecSpec) -> Result<(String, Attached), RuntimeError> {
    let op = format!("exec in container {id}");
    let what = format!("container {id}");
    let config = CreateExecOptions {
        cmd: Some(spec.command.clone()),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(spec.tty.is_some()),
        detach_keys: Some(ENGINE_DETACH_KEYS.to_string()),
        user: spec.user.clone(),
        env: (!spec.env.is_empty()).then(|| spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        ..Default::default()
    };
    let exec_id = docker
        .create_exec(id, config)
        .await
        .map_err(|e| map_error(&op, &what, e))?
        .id;
    let options = StartExecOptions {
        detach: false,
        tty: spec.tty.is_some(),
        output_capacity: None,
    };
    let started = docker.start_exec(&exec_id, Some(options)).await;
    if let (Ok(StartExecResults::Attached { .. }), Some(size)) = (&started, spec.tty) {
        resize_exec(docker, &exec_id, size).await?;
    }
    match started {
        Ok(StartExecResults::Attached { output, input }) => Ok((
            exec_id,
            Attached {
                output: tagged_output(output, op, what),
                input,
            },
        )),
        Ok(StartExecResults::Detached) => Err(RuntimeError::Other {
            runtime: RuntimeKind::Docker,
            op,
            message: "the engine started the command detached".to_string(),
        }),
        Err(e) => Err(map_error(&op, &what, e)),
    }
}

pub async fn resize_exec(docker: &Docker, exec_id: &str, size: TerminalSize) -> Result<(), RuntimeError> {
    let options = ResizeExecOptions {
        h: i32::from(size.rows),
        w: i32::from(size.cols),
    };
    docker.resize_exec(exec_id, options).await.map_err(|e| {
        map_error(
            &format!("resize the TTY of exec {exec_id}"),
            &format!("exec {exec_id}"),
            e,
        )
    })
}

pub async fn exec_exit_code(docker: &Docker, exec_id: &str) -> Result<Option<i64>, RuntimeError> {
    docker
        .inspect_exec(exec_id)
        .await
        .map(|inspected| inspected.exit_code)
        .map_err(|e| map_error(&format!("inspect exec {exec_id}"), &format!("exec {exec_id}"), e))
}

fn tagged_output(
    output: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<bollard::container::LogOutput, BollardError>> + Send>,
    >,
    op: String,
    what: String,
) -> crate::OutputStream {
    Box::pin(
        output
            .map_err(move |e| map_error(&op, &what, e))
            .try_filter_map(|chunk| async move { Ok(output::log_chunk(chunk)) }),
    )
}
