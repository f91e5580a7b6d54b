//! Image import (`docker import`) for locally built base images.

use std::time::Duration;

use bollard::query_parameters::CreateImageOptions;
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};

use super::errors::map_error;
use super::{DOCKER, DockerRuntime};
use crate::{RuntimeResult, bounded};

impl DockerRuntime {
    /// Imports a root filesystem tarball as image `reference` (`docker
    /// import`), applying Dockerfile-style `changes` (`CMD …`, `ENV …`).
    pub async fn import_image(
        &self,
        rootfs_tar: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        reference: &str,
        changes: &[String],
        limit: Duration,
    ) -> RuntimeResult<()> {
        let op = format!("import image {reference}");
        let (repo, tag) = split_reference(reference);
        let options = CreateImageOptions {
            from_src: Some("-".to_string()),
            repo: Some(repo.to_string()),
            tag: Some(tag.to_string()),
            changes: changes.to_vec(),
            ..Default::default()
        };
        bounded(DOCKER, &op, limit, async {
            let docker = self.client().await?;
            let body = bollard::body_try_stream(rootfs_tar);
            docker
                .create_image(Some(options), Some(body), None)
                .try_for_each(|_| async { Ok(()) })
                .await
                .map_err(|e| map_error(&op, &format!("image {reference}"), e))
        })
        .await
    }
}

/// `repo:tag`, the tag defaulting to `latest`; a registry port is not a tag.
fn split_reference(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repo_and_tag() {
        assert_eq!(split_reference("moat-base:bookworm"), ("moat-base", "bookworm"));
        assert_eq!(split_reference("moat-base"), ("moat-base", "latest"));
        assert_eq!(split_reference("localhost:5000/img"), ("localhost:5000/img", "latest"));
        assert_eq!(split_reference("localhost:5000/img:v1"), ("localhost:5000/img", "v1"));
    }
}
