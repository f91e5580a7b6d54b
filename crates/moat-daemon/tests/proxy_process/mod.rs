//! A `moatd proxy` process on loopback, as the in-cluster proxy's pod runs
//! it, for tests: its key directories written as a Secret volume would
//! mount them, its two listening addresses read from its first lines, and
//! killed when dropped. Shared by the daemon's and the CLI's tests.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The running process and where it listens.
pub struct ProxyProcess {
    child: Child,
    pub proxy_addr: SocketAddr,
    pub control_addr: SocketAddr,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `contents` to `path` with `mode`.
pub fn write_file(path: &Path, contents: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A test's HTTPS upstream: its CA file and the host name resolved to it
/// (on 127.0.0.1).
pub struct TestUpstream<'a> {
    pub ca_file: &'a Path,
    pub host: &'a str,
}

/// Starts `moatd proxy` with the files of `dir/ca` and `dir/control`
/// (already written), trusting `upstream`'s CA and resolving its host.
pub fn start(moatd: &Path, dir: &Path, upstream: Option<TestUpstream<'_>>) -> ProxyProcess {
    let mut command = Command::new(moatd);
    command
        .arg("proxy")
        .args(["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"])
        .arg("--ca-dir")
        .arg(dir.join("ca"))
        .arg("--control-dir")
        .arg(dir.join("control"))
        .arg("--state-dir")
        .arg(dir.join("state"));
    if let Some(upstream) = upstream {
        command
            .arg("--upstream-ca")
            .arg(upstream.ca_file)
            .args(["--resolve", &format!("{}=127.0.0.1", upstream.host)]);
    }
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut addr_after = |prefix: &str| -> SocketAddr {
        let line = lines.next().unwrap().unwrap();
        line.strip_prefix(prefix).unwrap().parse().unwrap()
    };
    let proxy_addr = addr_after("proxy listening on ");
    let control_addr = addr_after("control listening on ");
    ProxyProcess {
        child,
        proxy_addr,
        control_addr,
    }
}
