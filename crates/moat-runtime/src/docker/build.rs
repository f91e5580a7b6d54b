//! `docker build` through the engine's API (the classic builder, which
//! every engine has): the build context as an in-memory tar, each output
//! line handed to the caller, the engine's error as the result. The engine
//! tags the image only when every step succeeded.

use std::time::Duration;

use bollard::query_parameters::{BuildImageOptions, BuilderVersion};
use bytes::Bytes;
use futures_util::StreamExt;
use moat_core::deps::ContextFile;

use super::errors::map_error;
use super::{DOCKER, DockerRuntime};
use crate::{RuntimeError, RuntimeResult, bounded};

/// Size of a tar block and header.
const BLOCK: usize = 512;

/// One image to build.
#[derive(Clone, Debug)]
pub struct BuildRequest<'a> {
    pub tag: &'a str,
    /// The context; `Dockerfile` among them.
    pub files: &'a [ContextFile],
    /// Build every step again (`--rebuild`).
    pub no_cache: bool,
    pub limit: Duration,
}

impl DockerRuntime {
    /// Builds `request.tag`, calling `on_line` with every line of output.
    pub async fn build_image(
        &self,
        request: &BuildRequest<'_>,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> RuntimeResult<()> {
        let op = format!("build image {}", request.tag);
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".to_string(),
            t: Some(request.tag.to_string()),
            nocache: request.no_cache,
            rm: true,
            forcerm: true,
            version: BuilderVersion::BuilderV1,
            ..Default::default()
        };
        let body = bollard::body_full(Bytes::from(context_tar(request.files)));
        bounded(DOCKER, &op, request.limit, async {
            let docker = self.client().await?;
            let mut output = docker.build_image(options, None, Some(body));
            let mut pending = String::new();
            while let Some(info) = output.next().await {
                let info = info.map_err(|e| map_error(&op, &format!("image {}", request.tag), e))?;
                if let Some(text) = info.stream.or(info.status) {
                    pending.push_str(&text);
                    while let Some(end) = pending.find('\n') {
                        let line: String = pending.drain(..=end).collect();
                        on_line(line.trim_end());
                    }
                }
                if let Some(message) = info.error_detail.and_then(|d| d.message) {
                    on_line(&message);
                    return Err(RuntimeError::Other {
                        runtime: DOCKER,
                        op: op.clone(),
                        message,
                    });
                }
            }
            if !pending.trim().is_empty() {
                on_line(pending.trim_end());
            }
            Ok(())
        })
        .await
    }
}

/// A ustar archive of `files` with fixed owner and time, so the same files
/// always make the same bytes.
pub fn context_tar(files: &[ContextFile]) -> Vec<u8> {
    let mut tar = Vec::new();
    for file in files {
        tar.extend_from_slice(&header(&file.name, file.contents.len(), file.mode));
        tar.extend_from_slice(&file.contents);
        tar.resize(tar.len().next_multiple_of(BLOCK), 0);
    }
    tar.resize(tar.len() + 2 * BLOCK, 0);
    tar
}

fn header(name: &str, size: usize, mode: u32) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    let mut put = |offset: usize, value: &[u8]| block[offset..offset + value.len()].copy_from_slice(value);
    put(0, &name.as_bytes()[..name.len().min(100)]);
    put(100, format!("{mode:07o}\0").as_bytes());
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{size:011o}\0").as_bytes());
    put(136, b"00000000000\0");
    put(148, b"        ");
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    let checksum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_is_a_tar_the_system_tar_reads_back() {
        let files = vec![
            ContextFile {
                name: "Dockerfile".into(),
                contents: b"FROM scratch\n".to_vec(),
                mode: 0o644,
            },
            ContextFile {
                name: "moat-init".into(),
                contents: vec![b'x'; 700],
                mode: 0o755,
            },
        ];
        let tar = context_tar(&files);
        assert_eq!(tar.len() % BLOCK, 0);
        assert_eq!(context_tar(&files), tar, "the same files make the same bytes");
        let dir = std::env::temp_dir().join(format!("moat-tar-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("context.tar");
        std::fs::write(&archive, &tar).unwrap();
        let listing = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&archive)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(
            listing.contains("-rw-r--r--") && listing.contains("Dockerfile"),
            "{listing}"
        );
        assert!(
            listing.contains("-rwxr-xr-x") && listing.contains("700") && listing.contains("moat-init"),
            "{listing}"
        );
    }
}
