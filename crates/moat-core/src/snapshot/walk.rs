//! Walks a workspace in a stable order without following symlinks, leaving
//! out `.git`, what `.gitignore` files exclude (when asked) and the extra
//! patterns, and reporting each directory, file and symlink with its mode
//! and change stamp. Directories are opened one component at a time from
//! the root's descriptor (`O_NOFOLLOW`), so a directory swapped for a
//! symlink mid-walk cannot lead the walk outside the workspace.

use std::ffi::CStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rustix::fs::{FileType, Mode, OFlags, Stat};
use serde::{Deserialize, Serialize};

use super::confined::{open_dir_at, open_file_at, read_link_at, stat_at};
use super::{Rules, SnapshotError};

/// What identifies a file's content without reading it: when all of these
/// are unchanged the content is taken to be unchanged. `ctime` is part of it
/// because a program can set `mtime` (`touch -d`) but not `ctime`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
}

impl Stamp {
    // The field types of `struct stat` differ between platforms.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    pub(crate) fn of(stat: &Stat) -> Self {
        let ns = |secs: i64, nanos: i64| secs.saturating_mul(1_000_000_000).saturating_add(nanos);
        Stamp {
            size: stat.st_size as u64,
            mtime_ns: ns(stat.st_mtime as i64, stat.st_mtime_nsec as i64),
            ctime_ns: ns(stat.st_ctime as i64, stat.st_ctime_nsec as i64),
            ino: stat.st_ino as u64,
            dev: stat.st_dev as u64,
        }
    }
}

/// One path found by the walk.
pub(crate) enum Found<'a> {
    Dir,
    Symlink(String),
    File {
        dir: BorrowedFd<'a>,
        name: &'a CStr,
        stamp: Stamp,
    },
}

/// A visit: the relative path, its permission bits, what it is.
pub(crate) struct Visit<'a> {
    pub path: &'a str,
    pub mode: u32,
    pub found: Found<'a>,
}

/// Compiles `patterns` to see that each is valid `.gitignore` syntax.
pub(crate) fn check_patterns(patterns: &[String]) -> Result<(), SnapshotError> {
    let mut builder = GitignoreBuilder::new("/");
    for line in patterns {
        builder
            .add_line(None, line)
            .map_err(|e| SnapshotError::Rules(format!("{line:?}: {e}")))?;
    }
    builder
        .build()
        .map(drop)
        .map_err(|e| SnapshotError::Rules(e.to_string()))
}

/// The exclusion rules of one walk, compiled.
struct Excludes {
    root: PathBuf,
    additional: Gitignore,
    gitignore: bool,
    /// `.gitignore` matchers of the directories being walked, outermost first.
    stack: Vec<Option<Gitignore>>,
}

impl Excludes {
    fn new(root: &Path, rules: &Rules) -> Result<Self, SnapshotError> {
        let mut builder = GitignoreBuilder::new(root);
        for line in &rules.additional {
            builder
                .add_line(None, line)
                .map_err(|e| SnapshotError::Rules(e.to_string()))?;
        }
        let additional = builder.build().map_err(|e| SnapshotError::Rules(e.to_string()))?;
        Ok(Excludes {
            root: root.to_path_buf(),
            additional,
            gitignore: rules.gitignore,
            stack: Vec::new(),
        })
    }

    fn excluded(&self, rel: &str, is_dir: bool) -> bool {
        let path = self.root.join(rel);
        match self.additional.matched(&path, is_dir) {
            Match::Ignore(_) => return true,
            Match::Whitelist(_) => return false,
            Match::None => {}
        }
        for matcher in self.stack.iter().rev().flatten() {
            match matcher.matched(&path, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }

    /// The `.gitignore` of the directory `rel` (open as `dir`), plus
    /// `.git/info/exclude` at the root; never read through a symlink.
    fn enter(&mut self, dir: BorrowedFd<'_>, rel: &str) {
        if !self.gitignore {
            self.stack.push(None);
            return;
        }
        let mut builder = GitignoreBuilder::new(self.root.join(rel));
        let mut any = false;
        let mut add = |text: String| {
            for line in text.lines() {
                let _ = builder.add_line(None, line);
            }
            any = true;
        };
        if let Some(text) = read_small(dir, c".gitignore") {
            add(text);
        }
        if rel.is_empty()
            && let Ok(git) = open_dir_at(dir, ".git")
            && let Ok(info) = open_dir_at(git.as_fd(), "info")
            && let Some(text) = read_small(info.as_fd(), c"exclude")
        {
            add(text);
        }
        let matcher = if any { builder.build().ok() } else { None };
        self.stack.push(matcher);
    }

    fn leave(&mut self) {
        self.stack.pop();
    }
}

/// A regular file of at most 1 MiB, read without following a symlink.
fn read_small(dir: BorrowedFd<'_>, name: &CStr) -> Option<String> {
    let file = open_file_at(dir, name).ok()?;
    let stat = rustix::fs::fstat(&file).ok()?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return None;
    }
    let mut text = String::new();
    file.take(1 << 20).read_to_string(&mut text).ok()?;
    Some(text)
}

/// A walk of one workspace.
pub(crate) struct Walk<'a> {
    excludes: Excludes,
    cancel: &'a AtomicBool,
    /// Paths that could not be read (left out).
    pub skipped: Vec<String>,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(root: &Path, rules: &Rules, cancel: &'a AtomicBool) -> Result<Self, SnapshotError> {
        Ok(Walk {
            excludes: Excludes::new(root, rules)?,
            cancel,
            skipped: Vec::new(),
        })
    }

    /// Calls `visit` for every path kept, parents before children, names
    /// in byte order.
    pub(crate) fn run(
        &mut self,
        visit: &mut dyn FnMut(Visit<'_>) -> Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError> {
        let root = self.excludes.root.clone();
        let fd = rustix::fs::open(
            &root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SnapshotError::io("open the workspace", &root)(e.into()))?;
        self.dir(&fd, "", visit)
    }

    fn dir(
        &mut self,
        dir: &OwnedFd,
        rel: &str,
        visit: &mut dyn FnMut(Visit<'_>) -> Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError> {
        let root = self.excludes.root.clone();
        let mut names = Vec::new();
        let listing = rustix::fs::Dir::read_from(dir).map_err(io::Error::from);
        let listing = match listing {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                self.skipped.push(rel.to_string());
                return Ok(());
            }
            Err(e) => return Err(SnapshotError::io("list", root.join(rel))(e)),
        };
        for entry in listing {
            let entry = entry.map_err(|e| SnapshotError::io("list", root.join(rel))(e.into()))?;
            let name = entry.file_name();
            if name == c"." || name == c".." || name == c".git" {
                continue;
            }
            match name.to_str() {
                Ok(_) => names.push(name.to_owned()),
                Err(_) => self.skipped.push(join(rel, &name.to_string_lossy())),
            }
        }
        names.sort();
        self.excludes.enter(dir.as_fd(), rel);
        let walked = self.entries(dir, rel, &names, visit);
        self.excludes.leave();
        walked
    }

    fn entries(
        &mut self,
        dir: &OwnedFd,
        rel: &str,
        names: &[std::ffi::CString],
        visit: &mut dyn FnMut(Visit<'_>) -> Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError> {
        let root = self.excludes.root.clone();
        for name in names {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(SnapshotError::Cancelled(root));
            }
            let Ok(text) = name.to_str() else { continue };
            let path = join(rel, text);
            let stat = match stat_at(dir.as_fd(), name.as_c_str()) {
                Ok(stat) => stat,
                // Removed since it was listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SnapshotError::io("inspect", root.join(&path))(e)),
            };
            let mode = stat.st_mode & 0o7777;
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {
                    if self.excludes.excluded(&path, true) {
                        continue;
                    }
                    let sub = match open_dir_at(dir.as_fd(), text) {
                        Ok(sub) => sub,
                        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                            self.skipped.push(path);
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(SnapshotError::io("open", root.join(&path))(e)),
                    };
                    visit(Visit {
                        path: &path,
                        mode,
                        found: Found::Dir,
                    })?;
                    self.dir(&sub, &path, visit)?;
                }
                FileType::RegularFile => {
                    if self.excludes.excluded(&path, false) {
                        continue;
                    }
                    visit(Visit {
                        path: &path,
                        mode,
                        found: Found::File {
                            dir: dir.as_fd(),
                            name: name.as_c_str(),
                            stamp: Stamp::of(&stat),
                        },
                    })?;
                }
                FileType::Symlink => {
                    if self.excludes.excluded(&path, false) {
                        continue;
                    }
                    match read_link_at(dir.as_fd(), name.as_c_str()) {
                        Ok(target) => visit(Visit {
                            path: &path,
                            mode: 0o777,
                            found: Found::Symlink(target),
                        })?,
                        Err(_) => self.skipped.push(path),
                    }
                }
                // Sockets, pipes and devices are not workspace content.
                _ => {}
            }
        }
        Ok(())
    }
}

pub(crate) fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// Whether `path` is `prefix` or beneath it.
pub(crate) fn is_within(path: &str, prefix: &str) -> bool {
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}
