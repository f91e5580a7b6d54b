//! Paths no run may mount, whatever moat.yaml or the flags say, unless the
//! command line names them with `--allow-dangerous-mount PATH`: anything
//! that contains or is inside `MOAT_HOME` (daemon socket, keys, every live
//! run's proxy token), the container runtime's socket (root on the host),
//! `/`, `/etc`, `/proc`, `/sys` (and anything under `/proc` and `/sys`),
//! and the user's home directory as a whole. The worktrees `moat wt` makes
//! (`MOAT_HOME/worktrees/<repo>/<branch>`, and what is inside them) are the
//! one part of `MOAT_HOME` a run may mount. Paths are compared after
//! resolving symlinks, so a link in the workspace cannot smuggle one in.

use std::path::{Path, PathBuf};

use moat_core::docker_endpoint::{EndpointEnv, candidate_sockets};

use crate::report::CliError;

/// Where the checks look.
pub struct Guard {
    moat_home: PathBuf,
    home_dir: Option<PathBuf>,
    runtime_sockets: Vec<PathBuf>,
    allowed: Vec<PathBuf>,
}

impl Guard {
    /// The guard for this process: its `MOAT_HOME`, `$HOME`, the runtime
    /// sockets moat knows of (and `DOCKER_HOST`'s), and the paths allowed
    /// on the command line.
    pub fn for_process(moat_home: &Path, allowed: &[PathBuf]) -> Guard {
        let env = EndpointEnv::from_process();
        let mut sockets: Vec<PathBuf> = candidate_sockets(&env).into_iter().map(|(path, _)| path).collect();
        if let Some(path) = env.docker_host.as_deref().and_then(|h| h.strip_prefix("unix://")) {
            sockets.push(PathBuf::from(path));
        }
        sockets.push(PathBuf::from("/run/docker.sock"));
        Guard {
            moat_home: real(moat_home),
            home_dir: env.home.as_deref().map(real),
            runtime_sockets: sockets.iter().map(|s| real(s)).collect(),
            allowed: allowed.iter().map(|p| real(p)).collect(),
        }
    }

    /// Refuses `source` (a workspace or mount source) when it is dangerous
    /// and not allowed; `what` names it in the error.
    pub fn check(&self, what: &str, source: &Path) -> Result<(), CliError> {
        let source = real(source);
        let Some(reason) = self.danger(&source) else {
            return Ok(());
        };
        if self.allowed.contains(&source) {
            return Ok(());
        }
        Err(
            CliError::new(format!("refusing to mount {} ({what}): {reason}", source.display())).with_hint(format!(
                "if you really mean it, say so on the command line: --allow-dangerous-mount {}",
                source.display()
            )),
        )
    }

    /// `MOAT_HOME/worktrees/<repo>/<branch…>` or a path inside one.
    fn is_worktree(&self, source: &Path) -> bool {
        source
            .strip_prefix(self.moat_home.join("worktrees"))
            .is_ok_and(|rest| rest.components().count() >= 2)
    }

    fn danger(&self, source: &Path) -> Option<String> {
        if (source.starts_with(&self.moat_home) && !self.is_worktree(source)) || self.moat_home.starts_with(source) {
            return Some(format!(
                "it {} MOAT_HOME ({}), which holds the daemon's socket, keys and live runs' tokens",
                if source.starts_with(&self.moat_home) {
                    "is inside"
                } else {
                    "contains"
                },
                self.moat_home.display()
            ));
        }
        if let Some(socket) = self.runtime_sockets.iter().find(|s| s.starts_with(source)) {
            return Some(format!(
                "it is or contains the container runtime's socket {} (root on the host)",
                socket.display()
            ));
        }
        if is_socket(source) {
            return Some("it is a Unix socket".into());
        }
        if ["/", "/etc", "/proc", "/sys"].iter().any(|p| source == Path::new(p))
            || source.starts_with("/proc")
            || source.starts_with("/sys")
        {
            return Some("it is a system directory".into());
        }
        if self.home_dir.as_deref() == Some(source) {
            return Some("it is your whole home directory".into());
        }
        None
    }
}

/// The path with symlinks resolved, or as given when it does not exist.
fn real(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(root: &Path, allowed: &[&str]) -> Guard {
        Guard {
            moat_home: root.join("home/.moat"),
            home_dir: Some(root.join("home")),
            runtime_sockets: vec![root.join("run/docker.sock")],
            allowed: allowed.iter().map(|p| root.join(p)).collect(),
        }
    }

    #[test]
    fn dangerous_paths_are_refused_unless_allowed() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("moat-guard");
        for dir in [
            "home/.moat/daemon",
            "home/.moat/worktrees/repo/branch",
            "home/project/sub",
            "run",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let root = real(&root);
        // A symlink in the workspace pointing at MOAT_HOME is followed.
        std::os::unix::fs::symlink(root.join("home/.moat"), root.join("home/project/link")).unwrap();
        let g = guard(&root, &["run"]);
        let cases: Vec<(&str, PathBuf, bool)> = vec![
            ("a project directory", root.join("home/project"), true),
            ("a subdirectory", root.join("home/project/sub"), true),
            ("MOAT_HOME itself", root.join("home/.moat"), false),
            ("inside MOAT_HOME", root.join("home/.moat/daemon"), false),
            (
                "a worktree of `moat wt`",
                root.join("home/.moat/worktrees/repo/branch"),
                true,
            ),
            (
                "every worktree of a repository",
                root.join("home/.moat/worktrees/repo"),
                false,
            ),
            ("every worktree", root.join("home/.moat/worktrees"), false),
            ("a link to MOAT_HOME", root.join("home/project/link"), false),
            ("the whole home (contains MOAT_HOME)", root.join("home"), false),
            ("the root", PathBuf::from("/"), false),
            ("/etc", PathBuf::from("/etc"), false),
            ("under /proc", PathBuf::from("/proc/1/root"), false),
            ("/sys", PathBuf::from("/sys"), false),
            (
                "the runtime socket's directory, allowed by flag",
                root.join("run"),
                true,
            ),
        ];
        for (name, path, ok) in cases {
            assert_eq!(g.check("mount", &path).is_ok(), ok, "{name}: {path:?}");
        }
        let socket_guard = guard(&root, &[]);
        let err = socket_guard.check("mount", &root.join("run")).unwrap_err().to_string();
        assert!(err.contains("container runtime's socket"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_whole_home_directory_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let root = real(scratch.path());
        let g = Guard {
            moat_home: PathBuf::from("/nonexistent/.moat"),
            home_dir: Some(root.clone()),
            runtime_sockets: Vec::new(),
            allowed: Vec::new(),
        };
        let err = g.check("workspace", &root).unwrap_err().to_string();
        assert!(err.contains("your whole home directory"), "{err}");
    }
}
