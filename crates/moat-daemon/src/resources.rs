//! The daemon's own use of the machine: its resident memory, its open file
//! descriptors and their limit, reported by the health call so that `moat
//! status` shows them.

use std::fs;
use std::path::Path;

use nix::sys::resource::{Resource, getrlimit};

/// What the daemon uses now; each part `None` where the system does not say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub rss_bytes: Option<u64>,
    pub open_files: Option<u64>,
    pub open_files_limit: Option<u64>,
}

/// The current usage of this process.
pub fn usage() -> Usage {
    Usage {
        rss_bytes: fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| vm_rss_bytes(&status)),
        open_files: count_entries(Path::new("/proc/self/fd")),
        open_files_limit: getrlimit(Resource::RLIMIT_NOFILE).ok().map(|(soft, _)| soft),
    }
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

fn count_entries(dir: &Path) -> Option<u64> {
    let entries = fs::read_dir(dir).ok()?;
    u64::try_from(entries.count()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_the_status_text() {
        let status = "Name:\tmoatd\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_bytes(status), Some(12345 * 1024));
        assert_eq!(vm_rss_bytes("Name:\tx\n"), None);
        assert_eq!(vm_rss_bytes("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn this_process_reports_its_usage() {
        let usage = usage();
        assert!(usage.rss_bytes.is_some_and(|rss| rss > 0));
        assert!(usage.open_files.is_some_and(|n| n >= 3));
        assert!(usage.open_files_limit >= usage.open_files);
    }
}
