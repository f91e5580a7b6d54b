//! Host firewall rules for strict runs (proxy.md, "Network policy"): an
//! internal network has no route out, but the host keeps the bridge's
//! gateway address, so a container could still reach every host service
//! listening there or on all interfaces. Where moat can (iptables present,
//! enough privilege), it rejects all traffic from the run's bridge to the
//! host except the proxy port, with iptables and ip6tables alike. Rules carry a `moat:<run id>` comment so that
//! removing them needs nothing but the run id.

use std::net::IpAddr;
use std::time::Duration;

use moat_core::RunId;
use moat_core::subprocess::{Subprocess, SubprocessError};

/// Bound on one iptables call.
const IPTABLES_TIMEOUT: Duration = Duration::from_secs(10);
/// How long iptables may wait for the xtables lock, which Docker takes for
/// every network it creates or removes (without waiting, a busy engine
/// makes our calls fail at once).
const XTABLES_LOCK_WAIT_SECS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("iptables is not available: {0}")]
    Unavailable(String),
    #[error("{args}: {message}")]
    Failed { args: String, message: String },
    #[error("{0} timed out after {IPTABLES_TIMEOUT:?}")]
    Timeout(String),
}

/// The Linux interface of a Docker bridge network.
pub fn bridge_interface(network_id: &str) -> String {
    format!("br-{}", &network_id[..network_id.len().min(12)])
}

/// The host interface that holds `address` (a network's gateway is its
/// bridge's address, whatever the engine names the bridge: Docker
/// `br-<id>`, Podman `podman<n>`), if any.
pub fn interface_with_address(address: IpAddr) -> Option<String> {
    let interfaces = nix::ifaddrs::getifaddrs().ok()?;
    for interface in interfaces {
        let Some(storage) = interface.address else { continue };
        let held = match (storage.as_sockaddr_in(), storage.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => continue,
        };
        if held == address {
            return Some(interface.interface_name);
        }
    }
    None
}

fn comment(run_id: &RunId) -> String {
    format!("moat:{run_id}")
}

/// The two rule tables: IPv4, and IPv6 (a container keeps an IPv6
/// link-local address on an IPv4-only network, and the host answers on the
/// bridge's link-local address too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn program(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// Rejects traffic from `interface` to the host, except TCP to
/// `proxy_port` and, with `replies`, packets of connections the host opened
/// (the routing endpoint reaching a run's `ports:`), over IPv4 and IPv6.
/// IPv4 rules are required; a machine without `ip6tables` keeps only those
/// (logged).
pub async fn restrict_host(
    run_id: &RunId,
    interface: &str,
    proxy_port: u16,
    replies: bool,
) -> Result<(), FirewallError> {
    restrict_host_in(Family::V4, run_id, interface, proxy_port, replies).await?;
    match restrict_host_in(Family::V6, run_id, interface, proxy_port, replies).await {
        Err(FirewallError::Unavailable(reason)) => {
            tracing::warn!(run = %run_id, "ip6tables is not available ({reason}); only IPv4 to the host is closed");
            Ok(())
        }
        other => other,
    }
}

async fn restrict_host_in(
    family: Family,
    run_id: &RunId,
    interface: &str,
    proxy_port: u16,
    replies: bool,
) -> Result<(), FirewallError> {
    let comment = comment(run_id);
    let port = proxy_port.to_string();
    let everything: &[&str] = &[];
    let proxy: &[&str] = &["-p", "tcp", "--dport", &port];
    // Only connections the host opened: the container cannot make one so.
    let established: &[&str] = &["-m", "conntrack", "--ctstate", "ESTABLISHED"];
    let mut rules = vec![(everything, "REJECT"), (proxy, "ACCEPT")];
    if replies {
        rules.push((established, "ACCEPT"));
    }
    // Inserted in reverse: the ACCEPTs end up above the REJECT.
    for (matching, target) in rules {
        let mut args = vec!["-I", "INPUT", "-i", interface];
        args.extend_from_slice(matching);
        args.extend(["-m", "comment", "--comment", &comment, "-j", target]);
        iptables(family, &args).await?;
    }
    Ok(())
}

/// Removes every rule moat added for `run_id` (none is fine, and so is a
/// machine without iptables).
pub async fn release(run_id: &RunId) -> Result<(), FirewallError> {
    release_in(Family::V4, run_id).await?;
    release_in(Family::V6, run_id).await
}

async fn release_in(family: Family, run_id: &RunId) -> Result<(), FirewallError> {
    let rules = match iptables_output(family, &["-S", "INPUT"]).await {
        Ok(rules) => rules,
        Err(FirewallError::Unavailable(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let tag = comment(run_id);
    for rule in rules.lines() {
        let Some(spec) = rule.strip_prefix("-A ") else { continue };
        let words = shell_words(spec);
        if !words.contains(&tag) {
            continue;
        }
        let mut args = vec!["-D"];
        args.extend(words.iter().map(String::as_str));
        iptables(family, &args).await?;
    }
    Ok(())
}

async fn iptables(family: Family, args: &[&str]) -> Result<(), FirewallError> {
    iptables_output(family, args).await.map(|_| ())
}

async fn iptables_output(family: Family, args: &[&str]) -> Result<String, FirewallError> {
    let call = Subprocess::new(family.program(), IPTABLES_TIMEOUT)
        .args(["-w", XTABLES_LOCK_WAIT_SECS])
        .args(args);
    let output = match call.run().await {
        Ok(output) => output,
        Err(SubprocessError::TimedOut { command, .. }) => return Err(FirewallError::Timeout(command)),
        Err(e) => return Err(FirewallError::Unavailable(e.to_string())),
    };
    if output.success() {
        return Ok(output.stdout);
    }
    let message = output.stderr.trim().to_string();
    if message.contains("Permission denied") || message.contains("you must be root") {
        return Err(FirewallError::Unavailable(message));
    }
    Err(FirewallError::Failed {
        args: format!("{} {}", family.program(), args.join(" ")),
        message,
    })
}

/// Splits an `iptables -S` rule into arguments, honouring double quotes.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_split_like_the_shell_would() {
        let rule = r#"INPUT -i br-0123456789ab -m comment --comment "moat:run_0123456789ab" -j REJECT"#;
        assert_eq!(
            shell_words(rule),
            [
                "INPUT",
                "-i",
                "br-0123456789ab",
                "-m",
                "comment",
                "--comment",
                "moat:run_0123456789ab",
                "-j",
                "REJECT"
            ]
        );
    }

    #[test]
    fn the_loopback_address_is_found_on_its_interface() {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        assert!(interface_with_address(loopback).is_some_and(|name| name.starts_with("lo")));
        assert_eq!(interface_with_address(IpAddr::from([192, 0, 2, 77])), None);
    }

    #[test]
    fn bridge_interfaces_are_named_after_the_network_id() {
        assert_eq!(bridge_interface("0123456789abcdef0123"), "br-0123456789ab");
        assert_eq!(bridge_interface("abc"), "br-abc");
    }
}
