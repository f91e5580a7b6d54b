//! The runtimes a production daemon uses: Docker, on macOS Apple's
//! `container` CLI, and Kubernetes (one per context and namespace, from
//! the user's kubeconfig); each is checked (pinged) on first use and then
//! shared. Elsewhere asking for Apple fails with an error that says why.

use std::sync::Arc;

use async_trait::async_trait;
use moat_core::config::{GlobalConfig, KubernetesConfig};
use moat_kube::{KubeOptions, KubeRuntime};
use moat_runtime::apple::{AppleOptions, AppleRuntime};
use moat_runtime::base_image::{
    BaseImageProgress, BaseImageRecipe, BaseImageReporter, DEFAULT_LOCAL_BASE_IMAGE, ensure_base_image,
};
use moat_runtime::docker::{BuildRequest, DockerOptions, DockerRuntime};
use moat_runtime::select::{Probe, SelectionInput, select_runtime};
use moat_runtime::subnet::{Ipv4Subnet, SubnetPool};
use moat_runtime::{Runtime, RuntimeError, RuntimeKind, Timeouts};
use tokio::sync::OnceCell;

use crate::deadline::IMAGE_DEADLINE;
use crate::image_build::ImageBuild;
use crate::progress::Progress;
use crate::state::Runtimes;

/// Whether this build can drive Apple's `container` CLI.
const APPLE_SUPPORTED: bool = cfg!(target_os = "macos");

/// Docker (and, on macOS, Apple) runtimes built from `config.yaml`.
pub struct SystemRuntimes {
    docker_options: DockerOptions,
    docker: OnceCell<Arc<DockerRuntime>>,
    apple_options: AppleOptions,
    apple: OnceCell<Arc<AppleRuntime>>,
    timeouts: Timeouts,
    /// Kubernetes runtimes that answered, by cluster target.
    kubernetes: tokio::sync::Mutex<std::collections::HashMap<KubernetesConfig, Arc<KubeRuntime>>>,
}

impl SystemRuntimes {
    pub fn new(config: &GlobalConfig) -> Result<Self, RuntimeError> {
        let base = Ipv4Subnet::containing(config.subnet_pool.base, config.subnet_pool.prefix_len);
        let subnet_pool = SubnetPool::new(base, config.subnet_prefix).map_err(|e| RuntimeError::Other {
            runtime: RuntimeKind::Docker,
            op: "configure the subnet pool".into(),
            message: e.to_string(),
        })?;
        let timeouts = Timeouts {
            network_create: config.network_create_timeout,
            ..Timeouts::default()
        };
        Ok(SystemRuntimes {
            apple_options: AppleOptions {
                timeouts: timeouts.clone(),
                ..AppleOptions::default()
            },
            timeouts: timeouts.clone(),
            kubernetes: tokio::sync::Mutex::new(std::collections::HashMap::new()),
            docker_options: DockerOptions {
                timeouts,
                subnet_pool,
                endpoint: None,
            },
            docker: OnceCell::new(),
            apple: OnceCell::new(),
        })
    }

    async fn docker(&self) -> Result<Arc<DockerRuntime>, RuntimeError> {
        let docker = self
            .docker
            .get_or_try_init(|| async {
                let docker = DockerRuntime::new(self.docker_options.clone())?;
                docker.ping().await?;
                Ok::<_, RuntimeError>(Arc::new(docker))
            })
            .await?;
        Ok(docker.clone())
    }

    /// Apple's CLI, once it answered (its `ping` starts the system service
    /// when it is down); on other systems, `Unavailable` saying why.
    async fn apple(&self) -> Result<Arc<AppleRuntime>, RuntimeError> {
        if !APPLE_SUPPORTED {
            return Err(RuntimeError::Unavailable {
                runtime: RuntimeKind::Apple,
                reason: apple_unsupported_reason(std::env::consts::OS),
            });
        }
        let apple = self
            .apple
            .get_or_try_init(|| async {
                let apple = AppleRuntime::new(self.apple_options.clone());
                apple.ping().await?;
                Ok::<_, RuntimeError>(Arc::new(apple))
            })
            .await?;
        Ok(apple.clone())
    }
}

/// Why Apple containers cannot be used on `os` (`std::env::consts::OS`).
fn apple_unsupported_reason(os: &str) -> String {
    let os = match os {
        "linux" => "Linux",
        "windows" => "Windows",
        "freebsd" => "FreeBSD",
        other => other,
    };
    format!("the apple runtime needs macOS (Apple's `container` CLI); this machine runs {os}")
}

#[async_trait]
impl Runtimes for SystemRuntimes {
    async fn get(&self, kind: &str) -> Result<Arc<dyn Runtime>, RuntimeError> {
        match kind {
            "docker" => Ok(self.docker().await?),
            "apple" => Ok(self.apple().await?),
            "kubernetes" => self.kubernetes(&KubernetesConfig::default()).await,
            other => Err(RuntimeError::Unavailable {
                runtime: RuntimeKind::Docker,
                reason: format!("unknown runtime {other:?} (expected docker, apple or kubernetes)"),
            }),
        }
    }

    async fn kubernetes(&self, target: &KubernetesConfig) -> Result<Arc<dyn Runtime>, RuntimeError> {
        Ok(self.kube(target).await?)
    }

    /// The kubeconfig (`KUBECONFIG` or ~/.kube/config, read by the daemon
    /// as the user) decides the server and credentials; the target picks
    /// the context and namespace.
    async fn kube(&self, target: &KubernetesConfig) -> Result<Arc<KubeRuntime>, RuntimeError> {
        let target = &target.cluster();
        let mut connected = self.kubernetes.lock().await;
        if let Some(runtime) = connected.get(target) {
            return Ok(runtime.clone());
        }
        let runtime = KubeRuntime::connect(KubeOptions {
            kubeconfig: None,
            context: target.context.clone(),
            namespace: target.namespace.clone(),
            workspace_claim: target.workspace_claim.clone(),
            timeouts: self.timeouts.clone(),
            start_timeout: None,
        })
        .await?;
        runtime.ping().await?;
        let runtime = Arc::new(runtime);
        connected.insert(target.clone(), runtime.clone());
        Ok(runtime)
    }

    /// Apple on Apple silicon Macs when it answers, else Docker
    /// (runtime.md, "Selection"); the error says why neither can be used.
    async fn detect(&self) -> Result<Arc<dyn Runtime>, RuntimeError> {
        let probe = |answer: Result<(), RuntimeError>| match answer {
            Ok(()) => Probe::Available,
            Err(e) => Probe::Unavailable(e.to_string()),
        };
        let docker = probe(self.docker().await.map(|_| ()));
        let apple = if APPLE_SUPPORTED {
            probe(self.apple().await.map(|_| ()))
        } else {
            Probe::Unavailable(apple_unsupported_reason(std::env::consts::OS))
        };
        let input = SelectionInput {
            flag: None,
            config: None,
            env: None,
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            docker,
            apple,
        };
        let kind = select_runtime(&input).map_err(|e| RuntimeError::Unavailable {
            runtime: RuntimeKind::Docker,
            reason: e.to_string(),
        })?;
        self.get(kind.as_str()).await
    }

    /// Builds moat's local base image from Debian's packages when a Docker
    /// run asks for it and it is missing (no registry needed).
    async fn ensure_image(
        &self,
        runtime: &dyn Runtime,
        image: &str,
        progress: &Progress,
    ) -> Result<bool, RuntimeError> {
        if runtime.kind() != RuntimeKind::Docker || image != DEFAULT_LOCAL_BASE_IMAGE {
            return runtime.image_exists(image).await;
        }
        let docker = self.docker().await?;
        let recipe = BaseImageRecipe::bookworm(DEFAULT_LOCAL_BASE_IMAGE);
        ensure_base_image(&docker, &recipe, &ProgressReporter(progress))
            .await
            .map(|_| true)
            .map_err(|e| RuntimeError::Other {
                runtime: RuntimeKind::Docker,
                op: format!("build the local base image {DEFAULT_LOCAL_BASE_IMAGE}"),
                message: e.to_string(),
            })
    }

    /// Docker builds through its API; every line goes to the log, each
    /// step (`Step 3/11 : RUN …`) to the client's spinner.
    async fn build_image(
        &self,
        runtime: &dyn Runtime,
        build: &ImageBuild<'_>,
        progress: &Progress,
    ) -> Result<(), RuntimeError> {
        if runtime.kind() != RuntimeKind::Docker {
            return Err(RuntimeError::Unavailable {
                runtime: runtime.kind(),
                reason: "only the docker runtime builds images (`dependencies:`, build hooks) so far".into(),
            });
        }
        let docker = self.docker().await?;
        let mut log = BuildLog::create(build.log)?;
        let request = BuildRequest {
            tag: &build.context.tag,
            files: &build.context.files,
            no_cache: build.no_cache,
            limit: IMAGE_DEADLINE,
        };
        let result = docker
            .build_image(&request, &mut |line| {
                log.write(line);
                if line.starts_with("Step ") {
                    progress.say(line.to_string());
                }
            })
            .await;
        log.finish(result.as_ref().err());
        result
    }

    async fn available(&self) -> Vec<Arc<dyn Runtime>> {
        let mut runtimes: Vec<Arc<dyn Runtime>> = Vec::new();
        match self.docker().await {
            Ok(docker) => runtimes.push(docker),
            Err(e) => tracing::debug!("docker is not available: {e}"),
        }
        if APPLE_SUPPORTED {
            match self.apple().await {
                Ok(apple) => runtimes.push(apple),
                Err(e) => tracing::debug!("apple containers are not available: {e}"),
            }
        }
        // The clusters this daemon's runs used (the reaper sweeps them too).
        let kubernetes = self.kubernetes.lock().await;
        for runtime in kubernetes.values() {
            runtimes.push(runtime.clone());
        }
        runtimes
    }
}

/// The full output of one build, `MOAT_HOME/builds/<hash>.log` (0600).
struct BuildLog {
    path: std::path::PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl BuildLog {
    fn create(path: &std::path::Path) -> Result<BuildLog, RuntimeError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| RuntimeError::Other {
                runtime: RuntimeKind::Docker,
                op: format!("open the build log {}", path.display()),
                message: e.to_string(),
            })?;
        Ok(BuildLog {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
        })
    }

    fn write(&mut self, line: &str) {
        use std::io::Write;
        if let Err(e) = writeln!(self.file, "{line}") {
            tracing::warn!("writing the build log {}: {e}", self.path.display());
        }
    }

    fn finish(mut self, error: Option<&RuntimeError>) {
        use std::io::Write;
        if let Some(error) = error {
            self.write(&format!("moat: the build failed: {error}"));
        }
        if let Err(e) = self.file.flush() {
            tracing::warn!("writing the build log {}: {e}", self.path.display());
        }
    }
}

/// Base-image build progress, told to the client waiting for its run.
struct ProgressReporter<'a>(&'a Progress);

impl BaseImageReporter for ProgressReporter<'_> {
    fn on_progress(&self, progress: BaseImageProgress) {
        self.0.say(match progress {
            BaseImageProgress::Bootstrapping { suite, mirror } => {
                format!("building the local base image {DEFAULT_LOCAL_BASE_IMAGE} (Debian {suite} from {mirror})")
            }
            BaseImageProgress::BootstrapLine(line) => line,
            BaseImageProgress::Importing { tag } => format!("importing {tag}"),
            BaseImageProgress::Ready { tag, elapsed } => format!("{tag} is ready ({elapsed:.0?})"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn apple_is_refused_with_the_reason_off_macos() {
        if APPLE_SUPPORTED {
            return;
        }
        let runtimes = SystemRuntimes::new(&GlobalConfig::default()).unwrap();
        let err = runtimes.get("apple").await.err().unwrap();
        let text = err.to_string();
        assert!(text.contains("needs macOS") && text.contains("container"), "{text}");
        assert!(matches!(
            err,
            RuntimeError::Unavailable {
                runtime: RuntimeKind::Apple,
                ..
            }
        ));
    }

    #[test]
    fn the_reason_names_this_system() {
        assert_eq!(
            apple_unsupported_reason("linux"),
            "the apple runtime needs macOS (Apple's `container` CLI); this machine runs Linux"
        );
    }
}
