//! The content-addressed object store: each distinct file content once,
//! at `objects/<first 2 hex>/<other 62 hex>` of its BLAKE3 hash, written
//! to a temp file and renamed into place (a reader never sees half an
//! object), readable only by the owner.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::confined::copy_hashing;
use crate::atomic::create_private_dir;

/// Contents up to this size are read whole, hashed, and written only when new.
const IN_MEMORY_LIMIT: u64 = 4 << 20;

pub(crate) struct Objects {
    dir: PathBuf,
}

/// A content put into the store.
pub(crate) struct Put {
    pub hash: String,
    pub size: u64,
    /// Bytes written (0 when the store held the content already).
    pub stored: u64,
}

impl Objects {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Objects { dir }
    }

    pub(crate) fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(&hash[..2]).join(&hash[2..])
    }

    pub(crate) fn contains(&self, hash: &str) -> bool {
        hash.len() == 64 && self.path(hash).is_file()
    }

    /// Stores the content of `file` (of about `size` bytes).
    pub(crate) fn put(&self, file: &mut File, size: u64) -> io::Result<Put> {
        if size <= IN_MEMORY_LIMIT {
            let mut content = Vec::with_capacity(size as usize);
            file.read_to_end(&mut content)?;
            let hash = blake3::hash(&content).to_hex().to_string();
            let stored = if self.contains(&hash) {
                0
            } else {
                self.write_new(&hash, |out| out.write_all(&content))?;
                content.len() as u64
            };
            return Ok(Put {
                hash,
                size: content.len() as u64,
                stored,
            });
        }
        let temp = self.temp_path();
        let mut out = create_private(&temp)?;
        let mut hasher = blake3::Hasher::new();
        let copied = copy_hashing(file, &mut out, &mut hasher).and_then(|n| out.flush().map(|()| n));
        let size = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
        };
        let hash = hasher.finalize().to_hex().to_string();
        if self.contains(&hash) {
            fs::remove_file(&temp)?;
            return Ok(Put { hash, size, stored: 0 });
        }
        self.place(&temp, &hash)?;
        Ok(Put {
            hash,
            size,
            stored: size,
        })
    }

    /// Opens the content of `hash`.
    pub(crate) fn open(&self, hash: &str) -> io::Result<File> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad object name {hash:?}"),
            ));
        }
        File::open(self.path(hash))
    }

    fn write_new(&self, hash: &str, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
        let temp = self.temp_path();
        let mut out = create_private(&temp)?;
        if let Err(e) = write(&mut out) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        self.place(&temp, hash)
    }

    fn place(&self, temp: &Path, hash: &str) -> io::Result<()> {
        let target = self.path(hash);
        let placed = target
            .parent()
            .map_or(Ok(()), create_private_dir)
            .and_then(|()| fs::rename(temp, &target));
        if placed.is_err() {
            let _ = fs::remove_file(temp);
        }
        placed
    }

    fn temp_path(&self) -> PathBuf {
        use rand::RngExt;
        let bytes: [u8; 8] = rand::rng().random();
        self.dir.join("tmp").join(hex::encode(bytes))
    }

    /// Removes every object not in `keep` and stray temp files; returns the
    /// count and bytes removed.
    pub(crate) fn sweep(&self, keep: &HashSet<String>) -> io::Result<(u64, u64)> {
        let (mut count, mut bytes) = (0, 0);
        let Ok(fans) = fs::read_dir(&self.dir) else {
            return Ok((0, 0));
        };
        for fan in fans {
            let fan = fan?;
            let prefix = fan.file_name().to_string_lossy().into_owned();
            if !fan.file_type()?.is_dir() {
                continue;
            }
            for object in fs::read_dir(fan.path())? {
                let object = object?;
                let name = format!("{prefix}{}", object.file_name().to_string_lossy());
                if prefix == "tmp" || !keep.contains(&name) {
                    bytes += object.metadata().map_or(0, |m| m.len());
                    fs::remove_file(object.path())?;
                    count += 1;
                }
            }
        }
        Ok((count, bytes))
    }
}

fn create_private(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}
