//! The runtimes a production daemon uses: Docker, connected on first use
//! and then shared; Apple's `container` CLI only exists on macOS.

use std::sync::Arc;

use async_trait::async_trait;
use moat_core::config::GlobalConfig;
use moat_runtime::docker::{DockerOptions, DockerRuntime};
use moat_runtime::subnet::{Ipv4Subnet, SubnetPool};
use moat_runtime::{Runtime, RuntimeError, RuntimeKind, Timeouts};
use tokio::sync::OnceCell;

use crate::state::Runtimes;

/// Docker (and, on macOS, Apple) runtimes built from `config.yaml`.
pub struct SystemRuntimes {
    docker_options: DockerOptions,
    docker: OnceCell<Arc<DockerRuntime>>,
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
            docker_options: DockerOptions {
                timeouts,
                subnet_pool,
                endpoint: None,
            },
            docker: OnceCell::new(),
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
}

#[async_trait]
impl Runtimes for SystemRuntimes {
    async fn get(&self, kind: &str) -> Result<Arc<dyn Runtime>, RuntimeError> {
        match kind {
            "docker" => Ok(self.docker().await?),
            "apple" => Err(RuntimeError::Unavailable {
                runtime: RuntimeKind::Apple,
                reason: "Apple containers need macOS 26 on Apple silicon".into(),
            }),
            other => Err(RuntimeError::Unavailable {
                runtime: RuntimeKind::Docker,
                reason: format!("unknown runtime {other:?} (expected docker or apple)"),
            }),
        }
    }

    async fn available(&self) -> Vec<Arc<dyn Runtime>> {
        match self.docker().await {
            Ok(docker) => vec![docker as Arc<dyn Runtime>],
            Err(e) => {
                tracing::debug!("docker is not available: {e}");
                Vec::new()
            }
        }
    }
}
