//! Images built from a run's `dependencies:` and build hooks
//! (`hooks.post_build_root`, `hooks.post_build`): the plan (moat-core's
//! registry and Dockerfile), the decision to build (only when the
//! content-hash tag is missing, or on `--rebuild`), the base image first,
//! the full log under `MOAT_HOME/builds/<hash>.log`, and the error a failed
//! build gives (the hook that failed and its exit code when it was a hook,
//! its last lines and the log's path). The engine tags an image only when
//! its build succeeded.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use moat_core::deps::{BuildContext, BuildHooks, DependencyError, HookFailure, IMAGE_REPOSITORY, plan_build};
use moat_runtime::Runtime;

use crate::api::RunSpec;
use crate::progress::Progress;
use crate::state::Daemon;
use crate::supervisor::RunError;

/// One build at a time in a daemon: two runs asking for the same image
/// build it once, and builds sharing their first steps share those layers
/// (concurrent ones would each make their own copy).
static ONE_BUILD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Lines of the log a failed build shows.
pub const FAILURE_TAIL_LINES: usize = 30;

/// One build the daemon asks a runtime for.
#[derive(Debug)]
pub struct ImageBuild<'a> {
    pub context: &'a BuildContext,
    /// Build every step again (`--rebuild`).
    pub no_cache: bool,
    /// Where every line of output goes.
    pub log: &'a Path,
}

/// Why a run's image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("dependencies: {0}")]
    Dependencies(#[from] DependencyError),
    #[error("build_ca_file {}: {source}", path.display())]
    BuildCa { path: PathBuf, source: std::io::Error },
    #[error("cannot create the build log directory {}: {source}", dir.display())]
    LogDir { dir: PathBuf, source: std::io::Error },
    #[error("building {tag} failed: {reason}\nlast lines of the build:\n{tail}\nfull log: {}", log.display())]
    Failed {
        tag: String,
        reason: String,
        tail: String,
        log: PathBuf,
    },
    #[error(
        "{hook} exited {code} while building {tag} (a hook of moat.yaml, not moat or the container)\n\
         last lines of the build:\n{tail}\nfull log: {}",
        log.display()
    )]
    HookFailed {
        hook: String,
        code: i32,
        tag: String,
        tail: String,
        log: PathBuf,
    },
}

/// What a run's image is built for, for progress lines: its dependencies
/// and hooks.
pub fn what_is_built(spec: &RunSpec) -> String {
    let hooks = [
        ("hooks.post_build_root", spec.post_build_root.is_some()),
        ("hooks.post_build", spec.post_build.is_some()),
    ];
    spec.dependencies
        .iter()
        .map(String::as_str)
        .chain(hooks.into_iter().filter(|(_, set)| *set).map(|(name, _)| name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The build hooks of the run; `post_build` runs as the run's user.
fn build_hooks(spec: &RunSpec) -> BuildHooks {
    BuildHooks {
        post_build_root: spec.post_build_root.clone(),
        post_build: spec.post_build.clone(),
        user: crate::supervisor::command_user(spec).unwrap_or_else(|| "0:0".to_string()),
    }
}

/// The tag of the run's image, built on `spec.image` when it is missing
/// (or always, without the cache, on `--rebuild`).
pub async fn ensure_dependency_image(
    daemon: &Daemon,
    runtime: &dyn Runtime,
    spec: &RunSpec,
    progress: &Progress,
) -> Result<String, RunError> {
    let build_ca = read_build_ca(daemon.config().build_ca_file.as_deref())?;
    let hooks = build_hooks(spec);
    let context = plan_build(&spec.image, &spec.dependencies, &hooks, build_ca.as_deref()).map_err(BuildError::from)?;
    if !spec.rebuild && runtime.image_exists(&context.tag).await? {
        progress.say(format!("{} is up to date", context.tag));
        return Ok(context.tag);
    }
    let _one = if let Ok(one) = ONE_BUILD.try_lock() {
        one
    } else {
        progress.say("waiting for another build to finish");
        ONE_BUILD.lock().await
    };
    if !spec.rebuild && runtime.image_exists(&context.tag).await? {
        progress.say(format!("{} was built meanwhile", context.tag));
        return Ok(context.tag);
    }
    if !daemon.runtimes().ensure_image(runtime, &spec.image, progress).await? {
        return Err(RunError::UnknownImage {
            image: spec.image.clone(),
            runtime: runtime.kind().to_string(),
        });
    }
    let log = log_path(daemon, &context.tag)?;
    progress.say(format!("building {} for {}", context.tag, what_is_built(spec)));
    let build = ImageBuild {
        context: &context,
        no_cache: spec.rebuild,
        log: &log,
    };
    if let Err(e) = daemon.runtimes().build_image(runtime, &build, progress).await {
        return Err(build_failure(context.tag.clone(), &e.to_string(), log).into());
    }
    Ok(context.tag)
}

/// The error of a failed build: a hook's when the log's last hook report
/// says one failed.
fn build_failure(tag: String, reason: &str, log: PathBuf) -> BuildError {
    let tail = log_tail(&log, FAILURE_TAIL_LINES);
    let hook = std::fs::read_to_string(&log)
        .ok()
        .and_then(|text| text.lines().rev().find_map(HookFailure::parse));
    match hook {
        Some(HookFailure { hook, code }) => BuildError::HookFailed {
            hook,
            code,
            tag,
            tail,
            log,
        },
        None => BuildError::Failed {
            tag,
            reason: reason.to_string(),
            tail,
            log,
        },
    }
}

fn read_build_ca(path: Option<&Path>) -> Result<Option<Vec<u8>>, BuildError> {
    path.map(|path| {
        std::fs::read(path).map_err(|source| BuildError::BuildCa {
            path: path.to_path_buf(),
            source,
        })
    })
    .transpose()
}

/// `MOAT_HOME/builds/<hash>.log` (the directory made 0700).
fn log_path(daemon: &Daemon, tag: &str) -> Result<PathBuf, RunError> {
    let dir = daemon.home().root().join("builds");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| BuildError::LogDir {
            dir: dir.clone(),
            source,
        })?;
    let hash = tag
        .strip_prefix(IMAGE_REPOSITORY)
        .and_then(|t| t.strip_prefix(':'))
        .unwrap_or(tag);
    Ok(dir.join(format!("{hash}.log")))
}

/// The last `lines` lines of the log (empty when it cannot be read).
fn log_tail(log: &Path, lines: usize) -> String {
    let Ok(file) = std::fs::File::open(log) else {
        return String::new();
    };
    let mut tail = VecDeque::with_capacity(lines);
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        if tail.len() == lines {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    Vec::from(tail).join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_lines_in_order() {
        let dir = std::env::temp_dir().join(format!("moat-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("x.log");
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = log_tail(&log, FAILURE_TAIL_LINES);
        std::fs::remove_dir_all(&dir).unwrap();
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines.len(), 30);
        assert_eq!(lines[0], "line 71");
        assert_eq!(lines[29], "line 100");
    }
}
