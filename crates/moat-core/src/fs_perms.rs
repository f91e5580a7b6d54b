//! Refusing files that someone else could have written. Files that steer
//! what moat trusts or injects (the proxy's `ca.key`, provider YAML in
//! `MOAT_HOME/providers/`, the credential key file) must belong to the
//! current user (or root) and must not be writable by group or others;
//! otherwise another local user could swap in their own CA key or point a
//! credential at their own host. Each refusal carries the command that fixes
//! it (`chmod go-w FILE`, `chown`).
//!
//! [`read_trusted`] checks the opened file (`fstat`), not the path, so the
//! file cannot be swapped between the check and the read.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a file was not trusted.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedFile {
    /// Group- or other-writable.
    Writable {
        path: PathBuf,
        mode: u32,
        who: &'static str,
    },
    /// Owned by neither the current user nor root.
    Owner { path: PathBuf, owner: u32, user: u32 },
    /// Could not be opened or read.
    Io { path: PathBuf, source: io::Error },
}

impl fmt::Display for UntrustedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UntrustedFile::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            _ => write!(f, "refusing to load {}: {}", self.path().display(), self.reason()),
        }
    }
}

impl UntrustedFile {
    /// The offending file.
    pub fn path(&self) -> &Path {
        match self {
            UntrustedFile::Writable { path, .. }
            | UntrustedFile::Owner { path, .. }
            | UntrustedFile::Io { path, .. } => path,
        }
    }

    /// What is wrong and how to fix it, without the leading path, for
    /// callers whose messages already name the file.
    pub fn reason(&self) -> String {
        match self {
            UntrustedFile::Writable { path, mode, who } => format!(
                "it is writable by {who} (mode {mode:03o}), so another user could change it; run `chmod go-w {}`",
                path.display()
            ),
            UntrustedFile::Owner { path, owner, user } => format!(
                "it is owned by uid {owner}, not by you (uid {user}) or root; if you trust its contents, run `sudo chown {user} {}`",
                path.display()
            ),
            UntrustedFile::Io { source, .. } => source.to_string(),
        }
    }
}

/// The effective uid of this process.
pub fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Checks the metadata of `path` (ideally from the open file): owned by
/// `user` or root, and not writable by group or others.
pub fn check_metadata(path: &Path, meta: &Metadata, user: u32) -> Result<(), UntrustedFile> {
    let owner = meta.uid();
    if owner != user && owner != 0 {
        return Err(UntrustedFile::Owner {
            path: path.to_path_buf(),
            owner,
            user,
        });
    }
    let mode = meta.mode() & 0o7777;
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group and others",
        (true, false) => "its group",
        (false, true) => "others",
        (false, false) => return Ok(()),
    };
    Err(UntrustedFile::Writable {
        path: path.to_path_buf(),
        mode,
        who,
    })
}

/// Opens `path` and checks it as [`check_metadata`] does for the current
/// user; the returned file is the one checked.
pub fn open_trusted(path: &Path) -> Result<File, UntrustedFile> {
    let io_error = |source| UntrustedFile::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    check_metadata(path, &meta, current_uid())?;
    Ok(file)
}

/// The contents of `path` as UTF-8, after [`open_trusted`]'s checks.
pub fn read_trusted(path: &Path) -> Result<String, UntrustedFile> {
    let mut file = open_trusted(path)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|source| UntrustedFile::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A file in a fresh directory; both go when dropped.
    struct Scratch(
        PathBuf,
        #[allow(dead_code, reason = "removes the directory when dropped")] tempfile::TempDir,
    );

    impl Scratch {
        fn new(contents: &str, mode: u32) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("file");
            fs::write(&path, contents).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            Scratch(path, dir)
        }
    }

    #[test]
    fn a_private_or_world_readable_file_of_ours_is_read() {
        for mode in [0o600, 0o644, 0o400] {
            let file = Scratch::new("name: x\n", mode);
            assert_eq!(read_trusted(&file.0).unwrap(), "name: x\n");
        }
    }

    #[test]
    fn group_or_other_write_is_refused_with_a_chmod_hint() {
        for (mode, who) in [(0o664, "its group"), (0o646, "others"), (0o666, "group and others")] {
            let file = Scratch::new("x", mode);
            let err = read_trusted(&file.0).unwrap_err();
            assert!(matches!(err, UntrustedFile::Writable { .. }), "{err}");
            let message = err.to_string();
            assert!(message.contains(who), "{message}");
            assert!(
                message.contains(&format!("chmod go-w {}", file.0.display())),
                "{message}"
            );
            assert_eq!(err.path(), file.0);
        }
    }

    #[test]
    fn a_file_owned_by_someone_else_is_refused_with_a_chown_hint() {
        // Another local user leaves a file of theirs where moat looks.
        let file = Scratch::new("x", 0o644);
        let me = current_uid();
        let err = if me == 0 {
            std::os::unix::fs::chown(&file.0, Some(4242), None).unwrap();
            read_trusted(&file.0).unwrap_err()
        } else {
            // Unprivileged: the file is ours, so judge it as another user.
            let meta = fs::metadata(&file.0).unwrap();
            check_metadata(&file.0, &meta, me + 4242).unwrap_err()
        };
        assert!(matches!(err, UntrustedFile::Owner { .. }), "{err}");
        assert!(err.to_string().contains("chown "), "{err}");
    }

    #[test]
    fn root_owned_files_are_trusted() {
        let file = Scratch::new("x", 0o644);
        let meta = fs::metadata(&file.0).unwrap();
        if meta.uid() != 0 {
            return; // only root can make a root-owned file here
        }
        check_metadata(&file.0, &meta, 4242).unwrap();
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_it() {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("moat-fs-perms-missing");
        let err = read_trusted(&path).unwrap_err();
        assert!(matches!(err, UntrustedFile::Io { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }
}
