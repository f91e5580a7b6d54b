//! The Kubernetes runtime (docs/kubernetes.md): a run's container is a Pod,
//! its "network" a NetworkPolicy, its read-only files a Secret, all owned
//! by a per-run ConfigMap that carries the run's metadata, so deleting that
//! one object lets the cluster's garbage collector remove the rest. Talks
//! to the API server with the user's kubeconfig through `kube`; every call
//! is bounded and fails with a typed `RuntimeError` that says what to fix.

mod errors;
pub mod manifest;
#[cfg(feature = "mock")]
pub mod mock;
pub mod names;
mod pod_state;
mod port_forward;
pub mod proxy_manifest;
mod runtime;

pub use port_forward::ProxyControlStream;
pub use runtime::{KubeOptions, KubeRuntime};
