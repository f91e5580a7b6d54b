//! A usable base image without a registry: when `moat-base:bookworm` is
//! missing, build a minimal Debian root filesystem with `mmdebstrap` from the
//! host's Debian mirror and `docker import` it (runtime.md, "Images"). Used
//! by air-gapped users and by the test suite. Progress goes through
//! [`BaseImageReporter`]; this library never prints.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use moat_core::subprocess::{Subprocess, SubprocessError};
use nix::sys::signal::Signal;
use tokio_util::io::ReaderStream;

use crate::docker::DockerRuntime;
use crate::{Runtime, RuntimeError};

/// Tag of the locally built base image.
pub const DEFAULT_LOCAL_BASE_IMAGE: &str = "moat-base:bookworm";
/// Mirror used when the host's apt configuration names none.
pub const DEFAULT_DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
/// Packages on top of `minbase`: TLS roots, an HTTP client, git, and the
/// firewall tool strict mode needs.
pub const BASE_PACKAGES: &[&str] = &["ca-certificates", "curl", "git", "iptables"];
/// A whole build (≈20–40 s on a good connection) must finish within this.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// Image configuration applied at import (`docker import --change`).
const IMPORT_CHANGES: &[&str] = &[
    r#"CMD ["/bin/sh"]"#,
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
];
/// mmdebstrap stderr lines kept for an error message.
const STDERR_TAIL_LINES: usize = 20;

/// What to build and where from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseImageRecipe {
    pub tag: String,
    pub suite: String,
    pub mirror: String,
    pub packages: Vec<String>,
    pub timeout: Duration,
}

impl BaseImageRecipe {
    /// Debian bookworm with [`BASE_PACKAGES`], tagged `tag`, from the host's
    /// apt mirror (or [`DEFAULT_DEBIAN_MIRROR`]).
    pub fn bookworm(tag: &str) -> BaseImageRecipe {
        BaseImageRecipe {
            tag: tag.to_string(),
            suite: "bookworm".to_string(),
            mirror: host_debian_mirror().unwrap_or_else(|| DEFAULT_DEBIAN_MIRROR.to_string()),
            packages: BASE_PACKAGES.iter().map(|p| p.to_string()).collect(),
            timeout: DEFAULT_BUILD_TIMEOUT,
        }
    }

    fn mmdebstrap_args(&self, output: &Path) -> Vec<String> {
        vec![
            "--variant=minbase".to_string(),
            format!("--include={}", self.packages.join(",")),
            self.suite.clone(),
            output.display().to_string(),
            self.mirror.clone(),
        ]
    }
}

/// Steps of a build, for a spinner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseImageProgress {
    Bootstrapping {
        suite: String,
        mirror: String,
    },
    /// One status line of mmdebstrap (`I: …`).
    BootstrapLine(String),
    Importing {
        tag: String,
    },
    Ready {
        tag: String,
        elapsed: Duration,
    },
}

/// Receives progress; the binary implements it with a spinner.
pub trait BaseImageReporter: Send + Sync {
    fn on_progress(&self, progress: BaseImageProgress);
}

/// Discards progress.
pub struct SilentReporter;

impl BaseImageReporter for SilentReporter {
    fn on_progress(&self, _progress: BaseImageProgress) {}
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseImageOutcome {
    AlreadyPresent,
    Built { elapsed: Duration },
}

#[derive(Debug, thiserror::Error)]
pub enum BaseImageError {
    #[error("building base image {tag} needs mmdebstrap, which is not installed: run `apt-get install mmdebstrap`")]
    MmdebstrapMissing { tag: String },
    #[error("mmdebstrap failed to build {tag} from {mirror} ({status}):\n{stderr_tail}")]
    Bootstrap {
        tag: String,
        mirror: String,
        status: String,
        stderr_tail: String,
    },
    #[error(
        "building base image {tag} timed out after {after:?} (mmdebstrap from {mirror}); check that the mirror is reachable"
    )]
    Timeout {
        tag: String,
        mirror: String,
        after: Duration,
    },
    #[error("building base image {tag}: {path}: {source}")]
    Io {
        tag: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Makes sure `recipe.tag` exists, building it when missing. A no-op (one
/// inspect call) when the image is present.
pub async fn ensure_base_image(
    docker: &DockerRuntime,
    recipe: &BaseImageRecipe,
    reporter: &dyn BaseImageReporter,
) -> Result<BaseImageOutcome, BaseImageError> {
    if docker.image_exists(&recipe.tag).await? {
        return Ok(BaseImageOutcome::AlreadyPresent);
    }
    let started = Instant::now();
    tokio::time::timeout(recipe.timeout, build(docker, recipe, reporter))
        .await
        .map_err(|_| BaseImageError::Timeout {
            tag: recipe.tag.clone(),
            mirror: recipe.mirror.clone(),
            after: recipe.timeout,
        })??;
    let elapsed = started.elapsed();
    reporter.on_progress(BaseImageProgress::Ready {
        tag: recipe.tag.clone(),
        elapsed,
    });
    Ok(BaseImageOutcome::Built { elapsed })
}

async fn build(
    docker: &DockerRuntime,
    recipe: &BaseImageRecipe,
    reporter: &dyn BaseImageReporter,
) -> Result<(), BaseImageError> {
    // A private directory, removed with the root filesystem when dropped.
    let scratch = tempfile::Builder::new()
        .prefix("moat-base-image-")
        .tempdir()
        .map_err(|source| io_error(recipe, &std::env::temp_dir(), source))?;
    let rootfs = scratch.path().join("rootfs.tar");
    bootstrap(recipe, &rootfs, reporter).await?;
    reporter.on_progress(BaseImageProgress::Importing {
        tag: recipe.tag.clone(),
    });
    let tar = tokio::fs::File::open(&rootfs)
        .await
        .map_err(|source| io_error(recipe, &rootfs, source))?;
    let changes: Vec<String> = IMPORT_CHANGES.iter().map(|c| c.to_string()).collect();
    docker
        .import_image(ReaderStream::new(tar), &recipe.tag, &changes, recipe.timeout)
        .await?;
    Ok(())
}

/// Runs mmdebstrap into `output`, forwarding its status lines.
async fn bootstrap(
    recipe: &BaseImageRecipe,
    output: &Path,
    reporter: &dyn BaseImageReporter,
) -> Result<(), BaseImageError> {
    reporter.on_progress(BaseImageProgress::Bootstrapping {
        suite: recipe.suite.clone(),
        mirror: recipe.mirror.clone(),
    });
    let mmdebstrap = Subprocess::new("mmdebstrap", recipe.timeout)
        .args(recipe.mmdebstrap_args(output))
        // Abandoned (timeout, cancellation), its whole process group is
        // asked to stop, so apt stops too and mmdebstrap removes its own
        // temporary root instead of being killed outright.
        .own_process_group(Signal::SIGTERM);
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    let on_line = |line: &str| {
        if line.starts_with("I: ") {
            reporter.on_progress(BaseImageProgress::BootstrapLine(line.to_string()));
        }
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_string());
    };
    let finished = mmdebstrap.run_with_stderr_lines(on_line).await;
    let status = match finished {
        Ok(finished) => finished.status,
        Err(SubprocessError::NotFound { .. }) => {
            return Err(BaseImageError::MmdebstrapMissing {
                tag: recipe.tag.clone(),
            });
        }
        Err(SubprocessError::TimedOut { after, .. }) => {
            return Err(BaseImageError::Timeout {
                tag: recipe.tag.clone(),
                mirror: recipe.mirror.clone(),
                after,
            });
        }
        Err(error) => return Err(io_error(recipe, Path::new("mmdebstrap"), io::Error::other(error))),
    };
    if status.success() {
        return Ok(());
    }
    Err(BaseImageError::Bootstrap {
        tag: recipe.tag.clone(),
        mirror: recipe.mirror.clone(),
        status: status.to_string(),
        stderr_tail: Vec::from(tail).join("\n"),
    })
}

fn io_error(recipe: &BaseImageRecipe, path: &Path, source: io::Error) -> BaseImageError {
    BaseImageError::Io {
        tag: recipe.tag.clone(),
        path: path.to_path_buf(),
        source,
    }
}

// === The host's mirror ===

const APT_SOURCES: &[&str] = &["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"];

/// The Debian mirror the host's apt uses, if it is configured in the usual
/// files.
pub fn host_debian_mirror() -> Option<String> {
    APT_SOURCES
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .find_map(|text| mirror_from_apt_sources(&text))
}

/// The first plain-HTTP(S) Debian archive (not `-security`) in apt sources,
/// one-line (`deb URL suite …`) or deb822 (`URIs: URL`) format.
pub fn mirror_from_apt_sources(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match words.next()? {
                "deb" => words.find(|w| !w.starts_with('[')),
                "URIs:" => words.next(),
                _ => None,
            }
        })
        .find(|uri| {
            (uri.starts_with("http://") || uri.starts_with("https://"))
                && uri.trim_end_matches('/').ends_with("/debian")
        })
        .map(|uri| uri.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_is_read_from_deb822_sources() {
        let text = "Types: deb\n# http://snapshot.debian.org/archive/debian/2025\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\n";
        assert_eq!(
            mirror_from_apt_sources(text).as_deref(),
            Some("http://deb.debian.org/debian")
        );
    }

    #[test]
    fn mirror_is_read_from_one_line_sources_skipping_security_and_options() {
        let text = "deb http://security.debian.org/debian-security bookworm-security main\ndeb [arch=amd64] http://ftp.de.debian.org/debian/ bookworm main\n";
        assert_eq!(
            mirror_from_apt_sources(text).as_deref(),
            Some("http://ftp.de.debian.org/debian")
        );
    }

    #[test]
    fn sources_without_a_debian_archive_give_none() {
        assert_eq!(
            mirror_from_apt_sources("deb http://archive.ubuntu.com/ubuntu jammy main"),
            None
        );
        assert_eq!(mirror_from_apt_sources(""), None);
    }

    #[test]
    fn mmdebstrap_gets_minbase_the_packages_and_the_mirror() {
        let recipe = BaseImageRecipe {
            tag: "t:1".into(),
            suite: "bookworm".into(),
            mirror: "http://m/debian".into(),
            packages: vec!["curl".into(), "git".into()],
            timeout: DEFAULT_BUILD_TIMEOUT,
        };
        assert_eq!(
            recipe.mmdebstrap_args(Path::new("/tmp/x/rootfs.tar")),
            [
                "--variant=minbase",
                "--include=curl,git",
                "bookworm",
                "/tmp/x/rootfs.tar",
                "http://m/debian"
            ]
        );
    }
}
