//! Deploying a namespace's in-cluster proxy: created once (anchor first,
//! then its Secrets, Deployment and Service, all owned by the anchor),
//! reused by later runs of the same moat home holding the same material,
//! and waited for until its pod is ready (bounded; an image the cluster
//! cannot pull fails at once with the cluster's reason).

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, PostParams};
use moat_runtime::{RuntimeError, RuntimeResult, bounded, labels};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{KubeRuntime, cannot_start};
use crate::errors::KUBERNETES;
use crate::manifest;
use crate::names::PROXY_POD_LABEL;
use crate::pod_state::{self, Progress};
use crate::proxy_manifest::{
    self, MATERIAL_ANNOTATION, PROXY_ANCHOR, PROXY_CONTAINER, PROXY_NAME, ProxyPlacement, ProxySecrets,
};

/// How often a proxy that is not ready yet is looked at again.
const READY_POLL: Duration = Duration::from_millis(500);

impl KubeRuntime {
    /// Makes sure the namespace's proxy exists with `secrets` and is ready,
    /// waiting at most `ready_timeout` for its pod. A proxy deployed by
    /// another moat home, or holding other material, is refused with what
    /// to do.
    pub async fn ensure_proxy(
        &self,
        placement: &ProxyPlacement,
        secrets: &ProxySecrets,
        ready_timeout: Duration,
    ) -> RuntimeResult<()> {
        // Boxed: the API calls' futures are large.
        Box::pin(self.deploy_proxy(placement, secrets, ready_timeout)).await
    }

    async fn deploy_proxy(
        &self,
        placement: &ProxyPlacement,
        secrets: &ProxySecrets,
        ready_timeout: Duration,
    ) -> RuntimeResult<()> {
        let op = format!("deploy the moat proxy in namespace {}", self.namespace);
        let anchor = bounded(KUBERNETES, &op, self.timeouts.call, self.proxy_anchor(placement, &op)).await?;
        let owner = manifest::owner_reference(&anchor).ok_or_else(|| RuntimeError::Other {
            runtime: KUBERNETES,
            op: op.clone(),
            message: format!("the API server gave configmap {PROXY_ANCHOR} no uid"),
        })?;
        let objects = proxy_manifest::proxy_objects(placement, secrets, Some(&owner));
        bounded(KUBERNETES, &op, self.timeouts.call, async {
            self.create_if_missing::<Secret>(&objects.ca_secret, &op).await?;
            self.create_if_missing::<Secret>(&objects.control_secret, &op).await?;
            self.create_if_missing::<Deployment>(&objects.deployment, &op).await?;
            self.create_if_missing::<Service>(&objects.service, &op).await
        })
        .await?;
        self.proxy_ready(ready_timeout).await
    }

    /// The proxy's anchor: created, or the existing one when it is ours.
    async fn proxy_anchor(&self, placement: &ProxyPlacement, op: &str) -> RuntimeResult<ConfigMap> {
        let api: Api<ConfigMap> = self.api();
        let wanted = proxy_manifest::proxy_anchor(placement, &chrono::Utc::now().to_rfc3339());
        let existing = match api.create(&PostParams::default(), &wanted).await {
            Ok(created) => return Ok(created),
            Err(kube::Error::Api(status)) if status.code == 409 => api
                .get(PROXY_ANCHOR)
                .await
                .map_err(|e| self.error(op, &format!("configmap {PROXY_ANCHOR}"), e))?,
            Err(e) => return Err(self.error(op, &format!("configmap {PROXY_ANCHOR}"), e)),
        };
        let meta = &existing.metadata;
        let home = meta.labels.as_ref().and_then(|l| l.get(labels::HOME));
        let material = meta.annotations.as_ref().and_then(|a| a.get(MATERIAL_ANNOTATION));
        let refuse = |message: String| RuntimeError::Other {
            runtime: KUBERNETES,
            op: op.to_string(),
            message,
        };
        if home != Some(&placement.home) {
            return Err(refuse(format!(
                "namespace {} already has a moat proxy of another moat home ({}); use a namespace of your own",
                self.namespace,
                home.map_or("unlabelled", String::as_str)
            )));
        }
        if material != Some(&placement.material) {
            return Err(refuse(format!(
                "the moat proxy in namespace {ns} holds keys this daemon does not have (made by an earlier \
                 install of this moat home); remove it with `kubectl -n {ns} delete configmap {PROXY_ANCHOR}` \
                 and run again",
                ns = self.namespace
            )));
        }
        Ok(existing)
    }

    async fn create_if_missing<K>(&self, object: &K, op: &str) -> RuntimeResult<()>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + Serialize
            + DeserializeOwned,
        <K as kube::Resource>::DynamicType: Default,
    {
        let api: Api<K> = self.api();
        let what = format!(
            "{} {}",
            K::kind(&K::DynamicType::default()).to_lowercase(),
            object.meta().name.clone().unwrap_or_default()
        );
        match api.create(&PostParams::default(), object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(self.error(op, &what, e)),
        }
    }

    /// Waits until the Deployment has a ready pod.
    async fn proxy_ready(&self, timeout: Duration) -> RuntimeResult<()> {
        let op = format!(
            "wait for deployment {PROXY_NAME} in namespace {} to have a ready pod",
            self.namespace
        );
        bounded(KUBERNETES, &op, timeout, async {
            loop {
                let deployment: Deployment = bounded(KUBERNETES, &op, self.timeouts.call, async {
                    self.api::<Deployment>()
                        .get(PROXY_NAME)
                        .await
                        .map_err(|e| self.error(&op, &format!("deployment {PROXY_NAME}"), e))
                })
                .await?;
                let ready = deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
                if ready > 0 {
                    return Ok(());
                }
                self.proxy_pod_cannot_start(&op).await?;
                tokio::time::sleep(READY_POLL).await;
            }
        })
        .await
    }

    /// Fails when a proxy pod is stuck (an image it cannot pull, ...).
    async fn proxy_pod_cannot_start(&self, op: &str) -> RuntimeResult<()> {
        let selector = format!("{}={}", PROXY_POD_LABEL.0, PROXY_POD_LABEL.1);
        let pods = bounded(KUBERNETES, op, self.timeouts.call, self.pods_with(&selector)).await?;
        for pod in &pods {
            if let Progress::CannotStart(reason) = pod_state::container_progress(pod, PROXY_CONTAINER) {
                let name = pod.metadata.name.clone().unwrap_or_default();
                return Err(cannot_start(&name, &format!("{reason}; check the proxy image")));
            }
        }
        Ok(())
    }
}
