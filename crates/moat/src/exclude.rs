//! `mounts[].exclude`: paths inside a mount that the container must not
//! see. Each existing excluded path is masked by a read-only mount over it
//! in the container: an empty directory over a directory, `/dev/null` over
//! a file. Entries are literal paths relative to the mount's source; one
//! that leaves the source (`..`, a symlink pointing out) or uses glob
//! characters is refused rather than silently ignored.

use std::path::{Component, Path, PathBuf};

use moat_core::BindMount;
use moat_core::MoatHome;

use crate::report::CliError;
use crate::resolve::ResolvedMount;

/// What masks an excluded file.
const EMPTY_FILE: &str = "/dev/null";

/// The masking mounts for every mount's `exclude` entries.
pub fn masks(home: &MoatHome, mounts: &[ResolvedMount]) -> Result<Vec<BindMount>, CliError> {
    let mut masks = Vec::new();
    for mount in mounts {
        for entry in &mount.exclude {
            if let Some(mask) = mask(home, mount, entry)? {
                masks.push(mask);
            }
        }
    }
    Ok(masks)
}

fn mask(home: &MoatHome, mount: &ResolvedMount, entry: &str) -> Result<Option<BindMount>, CliError> {
    let invalid = |why: &str| {
        CliError::new(format!("mounts ({}): exclude {entry:?}: {why}", mount.target))
            .with_hint("exclude entries are paths relative to the mount's source, such as `.env` or `secrets/`")
    };
    if entry.contains(['*', '?', '[']) {
        return Err(invalid("glob patterns are not supported; list each path"));
    }
    let relative = Path::new(entry.trim_end_matches('/'));
    if relative.as_os_str().is_empty()
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(invalid("must be a relative path inside the mount"));
    }
    let path = mount.source.join(relative);
    if std::fs::symlink_metadata(&path).is_err() {
        // Nothing there to hide.
        return Ok(None);
    }
    let real = std::fs::canonicalize(&path).map_err(|e| invalid(&e.to_string()))?;
    let Ok(inside) = real.strip_prefix(&mount.source) else {
        return Err(invalid("it resolves outside the mount's source"));
    };
    let source = if real.is_dir() {
        empty_dir(home).map_err(|e| invalid(&format!("cannot prepare an empty directory to mask it: {e}")))?
    } else {
        PathBuf::from(EMPTY_FILE)
    };
    Ok(Some(BindMount {
        source: source.display().to_string(),
        target: format!("{}/{}", mount.target.trim_end_matches('/'), inside.display()),
        read_only: true,
    }))
}

/// `MOAT_HOME/masks/empty`: an empty, read-only directory.
fn empty_dir(home: &MoatHome) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = home.root().join("masks/empty");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555))?;
    if std::fs::read_dir(&dir)?.next().is_some() {
        return Err(std::io::Error::other(format!("{} is not empty", dir.display())));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories_are_masked_and_escapes_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(scratch.path()).unwrap();
        let ws = root.join("ws");
        std::fs::create_dir_all(ws.join("secrets")).unwrap();
        std::fs::write(ws.join(".env"), "TOKEN=x").unwrap();
        std::os::unix::fs::symlink("/etc", ws.join("out")).unwrap();
        let home = MoatHome::new(root.join("home"));
        let mount = |exclude: &[&str]| ResolvedMount {
            source: ws.clone(),
            target: "/workspace".into(),
            read_only: false,
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        };
        let got = masks(&home, &[mount(&[".env", "secrets/", "missing"])]).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].source.as_str(), got[0].target.as_str()),
            ("/dev/null", "/workspace/.env")
        );
        assert_eq!(got[1].target, "/workspace/secrets");
        assert!(got[1].source.ends_with("masks/empty") && got.iter().all(|m| m.read_only));
        for bad in ["../x", "/etc/passwd", "*.pem", "out"] {
            assert!(masks(&home, &[mount(&[bad])]).is_err(), "{bad} must be refused");
        }
        std::fs::remove_dir_all(root).unwrap();
    }
}
