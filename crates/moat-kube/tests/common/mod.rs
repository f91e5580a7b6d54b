//! The runtime under test, connected to a mock API server through a
//! kubeconfig file naming it (kept alive beside the runtime).

use moat_kube::mock::MockApiServer;
use moat_kube::{KubeOptions, KubeRuntime};

/// The namespace every test works in.
pub const NS: &str = "agents";

/// A kubeconfig whose current context is the mock, in [`NS`].
pub fn kubeconfig(mock: &MockApiServer) -> tempfile::NamedTempFile {
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(kubeconfig.path(), mock.kubeconfig(NS)).unwrap();
    kubeconfig
}

/// A runtime with `options`, talking to `mock`.
pub async fn connect(mock: &MockApiServer, options: KubeOptions) -> (KubeRuntime, tempfile::NamedTempFile) {
    let kubeconfig = kubeconfig(mock);
    let runtime = KubeRuntime::connect(KubeOptions {
        kubeconfig: Some(kubeconfig.path().to_path_buf()),
        ..options
    })
    .await
    .unwrap();
    (runtime, kubeconfig)
}
