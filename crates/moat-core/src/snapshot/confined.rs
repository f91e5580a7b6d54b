//! File operations confined to one directory tree that never follow a
//! symlink: every path is resolved one component at a time from the root's
//! descriptor with `O_NOFOLLOW`, so a symlink planted anywhere in the tree
//! (even while the operation runs) can neither be read through nor written
//! through. A non-directory where a directory is needed is replaced (when
//! writing) or reported (when reading).

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};

/// Suffix-free prefix of the temp names writes use before renaming into place.
const TEMP_PREFIX: &str = ".moat-restore-";

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the directory `name` in `parent` without following a symlink.
pub(crate) fn open_dir_at(parent: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    Ok(rfs::openat(parent, name, dir_flags(), Mode::empty())?)
}

/// Opens the regular file `name` in `parent` for reading, without following a symlink.
pub(crate) fn open_file_at<P: rustix::path::Arg>(parent: BorrowedFd<'_>, name: P) -> io::Result<File> {
    let fd = rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// `lstat` of `name` in `parent`.
pub(crate) fn stat_at<P: rustix::path::Arg>(parent: BorrowedFd<'_>, name: P) -> io::Result<Stat> {
    Ok(rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

pub(crate) fn read_link_at(parent: BorrowedFd<'_>, name: &CStr) -> io::Result<String> {
    let target = rfs::readlinkat(parent, name, Vec::new())?;
    target
        .into_string()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "symlink target is not UTF-8"))
}

pub(crate) fn is_dir(stat: &Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::Directory
}

/// A directory tree written to without following symlinks.
pub(crate) struct Confined {
    root: OwnedFd,
}

impl Confined {
    /// Opens `root` (created when missing). `root` itself is the caller's
    /// choice and may be reached through symlinks; nothing below it is.
    pub(crate) fn open(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let root = rfs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Confined { root })
    }

    /// The directory `rel` ("" for the root), made a real directory when it
    /// is missing or something else (a symlink or file there is removed).
    fn dir(&self, rel: &str) -> io::Result<OwnedFd> {
        let mut dir = rustix::io::dup(&self.root)?;
        for name in rel.split('/').filter(|c| !c.is_empty()) {
            dir = match open_dir_at(dir.as_fd(), name) {
                Ok(next) => next,
                Err(e) if is_not_a_dir(&e) || e.kind() == io::ErrorKind::NotFound => {
                    if e.kind() != io::ErrorKind::NotFound {
                        rfs::unlinkat(&dir, name, AtFlags::empty())?;
                    }
                    match rfs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    open_dir_at(dir.as_fd(), name)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(dir)
    }

    /// Makes `rel` a directory with `mode`.
    pub(crate) fn make_dir(&self, rel: &str, mode: u32) -> io::Result<()> {
        let dir = self.dir(rel)?;
        rfs::fchmod(&dir, Mode::from_raw_mode(mode))?;
        Ok(())
    }

    /// Sets the mode of the directory `rel` (after its content is written).
    pub(crate) fn chmod_dir(&self, rel: &str, mode: u32) -> io::Result<()> {
        self.make_dir(rel, mode)
    }

    /// Replaces whatever is at `rel` with a file of `content` and `mode`.
    pub(crate) fn write_file(&self, rel: &str, content: &mut dyn Read, mode: u32) -> io::Result<()> {
        let (parent, name) = split(rel);
        let dir = self.dir(parent)?;
        let temp = temp_name();
        let fd = rfs::openat(
            &dir,
            temp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut file = File::from(fd);
        let written = io::copy(content, &mut file)
            .and_then(|_| file.flush())
            .and_then(|()| Ok(rfs::fchmod(&file, Mode::from_raw_mode(mode))?))
            .and_then(|()| replace_with(dir.as_fd(), &temp, name));
        if written.is_err() {
            let _ = rfs::unlinkat(&dir, temp.as_str(), AtFlags::empty());
        }
        written
    }

    /// Replaces whatever is at `rel` with a symlink to `target`.
    pub(crate) fn write_symlink(&self, rel: &str, target: &str) -> io::Result<()> {
        let (parent, name) = split(rel);
        let dir = self.dir(parent)?;
        let temp = temp_name();
        rfs::symlinkat(target, &dir, temp.as_str())?;
        let replaced = replace_with(dir.as_fd(), &temp, name);
        if replaced.is_err() {
            let _ = rfs::unlinkat(&dir, temp.as_str(), AtFlags::empty());
        }
        replaced
    }

    /// Removes `rel` (a directory with everything in it). Missing is fine;
    /// a parent that is not a directory means `rel` is gone already.
    pub(crate) fn remove(&self, rel: &str) -> io::Result<()> {
        let (parent, name) = split(rel);
        let mut dir = rustix::io::dup(&self.root)?;
        for component in parent.split('/').filter(|c| !c.is_empty()) {
            dir = match open_dir_at(dir.as_fd(), component) {
                Ok(next) => next,
                Err(e) if is_not_a_dir(&e) || e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
        }
        remove_at(dir.as_fd(), name)
    }
}

/// Renames `temp` over `name` in `dir`, removing a directory in the way.
fn replace_with(dir: BorrowedFd<'_>, temp: &str, name: &str) -> io::Result<()> {
    if let Ok(stat) = stat_at(dir, name)
        && is_dir(&stat)
    {
        remove_at(dir, name)?;
    }
    Ok(rfs::renameat(dir, temp, dir, name)?)
}

/// Removes `name` in `dir`: a directory recursively, without following symlinks.
fn remove_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let stat = match stat_at(dir, name) {
        Ok(stat) => stat,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !is_dir(&stat) {
        return Ok(rfs::unlinkat(dir, name, AtFlags::empty())?);
    }
    let sub = open_dir_at(dir, name)?;
    // Writable so that its entries can go (a read-only directory was restored that way).
    rfs::fchmod(&sub, Mode::from_raw_mode(0o700))?;
    for entry in rfs::Dir::read_from(&sub)? {
        let entry = entry?;
        let child = entry.file_name();
        if child == c"." || child == c".." {
            continue;
        }
        let child = child
            .to_str()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file name is not UTF-8"))?;
        remove_at(sub.as_fd(), child)?;
    }
    Ok(rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

fn is_not_a_dir(e: &io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP)
    )
}

fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

fn temp_name() -> String {
    use rand::RngExt;
    let bytes: [u8; 8] = rand::rng().random();
    format!("{TEMP_PREFIX}{}", hex::encode(bytes))
}

/// Copies `reader` into `writer`, feeding the bytes to `hasher` too.
pub(crate) fn copy_hashing(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    hasher: &mut blake3::Hasher,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
}
