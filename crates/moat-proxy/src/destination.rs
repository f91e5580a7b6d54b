//! Which addresses a run may reach (proxy.md § Network policy): the address
//! classifier, the host's own interface addresses, and the destination check
//! that judges a target's one resolution and hands the judged addresses to
//! the connector.
//!
//! Restricted by default (refused unless `network.rules` names the target
//! exactly as `host:port`): loopback, `0.0.0.0/8`, link-local (cloud metadata
//! at `169.254.169.254`), `fc00::/7` (incl. `fd00:ec2::254`), `100.64.0.0/10`
//! (incl. `100.100.100.200`), `192.0.0.0/24`, multicast, reserved
//! `240.0.0.0/4`, the NAT64 local-use prefix, and the host's own interface
//! addresses. Loopback is also open on a run's `network.host` ports when the
//! name's address comes from configuration (`moat-host`, an override, an IP
//! literal, `localhost`), never from a DNS answer. RFC 1918 addresses are
//! refused in `strict` mode unless named the same way, and allowed (and
//! flagged in the trace) in `permissive` mode. IPv4-mapped (`::ffff:a.b.c.d`),
//! IPv4-compatible (`::a.b.c.d`) and NAT64 (`64:ff9b::/96`) addresses are
//! judged by the IPv4 address they embed.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::forward::{Refusal, Target};
use crate::policy::PolicyMode;
use crate::proxy::Shared;
use crate::registry::RunEntry;
use crate::resolve::Addresses;

/// How long an enumeration of the host's addresses is trusted.
const HOST_ADDRESSES_MAX_AGE: Duration = Duration::from_secs(1);

/// Why an address needs an explicit opt-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Restriction {
    Loopback,
    /// `0.0.0.0/8`, `::`.
    ThisNetwork,
    /// `169.254.0.0/16` (cloud metadata), `fe80::/10`, `fec0::/10`.
    LinkLocal,
    /// `fc00::/7`.
    UniqueLocal,
    /// `100.64.0.0/10` (carrier-grade NAT, some clouds' metadata).
    SharedAddressSpace,
    /// `192.0.0.0/24`.
    ProtocolAssignments,
    Multicast,
    /// `240.0.0.0/4`, including the broadcast address.
    Reserved,
    /// `64:ff9b:1::/48`.
    Nat64LocalUse,
    /// One of the host's own interface addresses (docker0, LAN, ...).
    HostInterface,
}

impl Restriction {
    fn describe(self) -> &'static str {
        match self {
            Self::Loopback => "a loopback address",
            Self::ThisNetwork => "an unspecified (this-network) address",
            Self::LinkLocal => "a link-local address (where cloud metadata services live)",
            Self::UniqueLocal => "a unique-local IPv6 address (fc00::/7)",
            Self::SharedAddressSpace => "a shared (carrier-grade NAT) address (100.64.0.0/10)",
            Self::ProtocolAssignments => "an IETF protocol-assignment address (192.0.0.0/24)",
            Self::Multicast => "a multicast address",
            Self::Reserved => "a reserved or broadcast address",
            Self::Nat64LocalUse => "a local-use NAT64 address (64:ff9b:1::/48)",
            Self::HostInterface => "one of this host's own addresses",
        }
    }
}

/// How the destination check treats an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AddressClass {
    Public,
    /// RFC 1918: refused in `strict`, allowed and flagged in `permissive`.
    Private,
    Restricted(Restriction),
}

/// Classifies `ip`, judging IPv4-mapped, IPv4-compatible and NAT64 IPv6
/// addresses by the IPv4 address they embed.
pub(crate) fn classify(ip: IpAddr, host_addresses: &HashSet<IpAddr>) -> AddressClass {
    let ip = match ip {
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    let class = match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    };
    match class {
        AddressClass::Restricted(_) => class,
        _ if host_addresses.contains(&ip) => AddressClass::Restricted(Restriction::HostInterface),
        _ => class,
    }
}

/// The IPv4 address an IPv6 address stands for: `::ffff:a.b.c.d`,
/// `::a.b.c.d` (except `::` and `::1`), `64:ff9b::a.b.c.d`.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compatible = s[..6].iter().all(|&x| x == 0) && !v6.is_unspecified() && !v6.is_loopback();
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0);
    (compatible || nat64).then_some(low)
}

fn classify_v4(v4: Ipv4Addr) -> AddressClass {
    use Restriction::{LinkLocal, Loopback, Multicast, ProtocolAssignments, Reserved, SharedAddressSpace, ThisNetwork};
    let [a, b, c, _] = v4.octets();
    let restricted = match (a, b, c) {
        (0, _, _) => Some(ThisNetwork),
        (127, _, _) => Some(Loopback),
        (169, 254, _) => Some(LinkLocal),
        (100, 64..=127, _) => Some(SharedAddressSpace),
        (192, 0, 0) => Some(ProtocolAssignments),
        (224..=239, _, _) => Some(Multicast),
        (240..=255, _, _) => Some(Reserved),
        _ => None,
    };
    match restricted {
        Some(r) => AddressClass::Restricted(r),
        None if v4.is_private() => AddressClass::Private,
        None => AddressClass::Public,
    }
}

fn classify_v6(v6: Ipv6Addr) -> AddressClass {
    use Restriction::{LinkLocal, Loopback, Multicast, Nat64LocalUse, ThisNetwork, UniqueLocal};
    let s = v6.segments();
    let restricted = if v6.is_loopback() {
        Some(Loopback)
    } else if v6.is_unspecified() {
        Some(ThisNetwork)
    } else if s[0] & 0xffc0 == 0xfe80 || s[0] & 0xffc0 == 0xfec0 {
        Some(LinkLocal)
    } else if s[0] & 0xfe00 == 0xfc00 {
        Some(UniqueLocal)
    } else if s[0] & 0xff00 == 0xff00 {
        Some(Multicast)
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        Some(Nat64LocalUse)
    } else {
        None
    };
    restricted.map_or(AddressClass::Public, AddressClass::Restricted)
}

// === impl HostAddresses ===

/// The host's own interface addresses, re-enumerated when older than
/// [`HOST_ADDRESSES_MAX_AGE`] (one `getifaddrs` per second at most) or on
/// demand (a new run network's gateway).
pub(crate) struct HostAddresses {
    state: Mutex<(Instant, Arc<HashSet<IpAddr>>)>,
}

impl HostAddresses {
    pub(crate) fn new() -> Self {
        let addresses = enumerate().unwrap_or_else(|e| {
            tracing::warn!("cannot list this host's addresses: {e}");
            HashSet::new()
        });
        Self {
            state: Mutex::new((Instant::now(), Arc::new(addresses))),
        }
    }

    /// The current set, refreshed first when stale.
    pub(crate) fn current(&self) -> Arc<HashSet<IpAddr>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0.elapsed() >= HOST_ADDRESSES_MAX_AGE {
            Self::refresh_locked(&mut state);
        }
        state.1.clone()
    }

    /// Re-enumerates now.
    pub(crate) fn refresh(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Self::refresh_locked(&mut state);
    }

    fn refresh_locked(state: &mut (Instant, Arc<HashSet<IpAddr>>)) {
        match enumerate() {
            Ok(addresses) => state.1 = Arc::new(addresses),
            // Keep the last good list; retry after the next interval.
            Err(e) => tracing::warn!("cannot list this host's addresses: {e}"),
        }
        state.0 = Instant::now();
    }
}

/// Every address on every interface, IPv4-mapped ones as IPv4.
pub(crate) fn enumerate() -> io::Result<HashSet<IpAddr>> {
    let interfaces = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    let mut addresses = HashSet::new();
    for interface in interfaces {
        let Some(address) = interface.address else { continue };
        if let Some(v4) = address.as_sockaddr_in() {
            addresses.insert(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            addresses.insert(IpAddr::V6(v6.ip()).to_canonical());
        }
    }
    Ok(addresses)
}

// === The check ===

/// A target's addresses as judged for one run: the only addresses the
/// connector may dial for it.
#[derive(Clone, Debug)]
pub(crate) struct Destination {
    pub(crate) addresses: Addresses,
    /// Some address is an RFC 1918 one (flagged in the trace).
    pub(crate) private: bool,
}

/// Resolves `target` once and judges every address for `run`; refuses if any
/// of them is not open to it (an answer mixing a public and a refused address
/// would let the dial fall back to the refused one).
pub(crate) async fn check_destination(
    shared: &Shared,
    run: &RunEntry,
    target: &Target,
) -> Result<Destination, Refusal> {
    let resolution = shared.resolver.resolve(&target.host).await.map_err(|e| Refusal {
        status: StatusCode::BAD_GATEWAY,
        rule: "resolve".to_string(),
        body: format!("moat could not resolve {}: {e}\n", target.host),
    })?;
    let host_addresses = shared.host_addresses.current();
    let explicit = run.policy().explicitly_names(&target.host, target.port);
    // Host services: loopback on a `network.host` port, for names whose
    // address the configuration (not a DNS answer) chose.
    let host_service = run.host_ports.contains(&target.port) && (resolution.configured || target.host == "localhost");
    let mut private = false;
    for &ip in resolution.addresses.iter() {
        match classify(ip, &host_addresses) {
            AddressClass::Public => {}
            AddressClass::Private => {
                private = true;
                if run.mode == PolicyMode::Strict && !explicit {
                    return Err(private_refusal(target, ip));
                }
            }
            AddressClass::Restricted(Restriction::Loopback) if explicit || host_service => {}
            AddressClass::Restricted(_) if explicit => {}
            AddressClass::Restricted(restriction) => return Err(restricted_refusal(target, ip, restriction)),
        }
    }
    Ok(Destination {
        addresses: resolution.addresses,
        private,
    })
}

fn restricted_refusal(target: &Target, ip: IpAddr, restriction: Restriction) -> Refusal {
    let (host, port) = (&target.host, target.port);
    Refusal {
        status: StatusCode::FORBIDDEN,
        rule: format!("restricted address {ip}"),
        body: format!(
            "moat blocked {host}:{port}: it resolves to {ip}, {}.\n\
             To allow it, add `{host}:{port}` to network.rules in moat.yaml; \
             for a service on this host, list port {port} under network.host and use the name moat-host.\n",
            restriction.describe()
        ),
    }
}

fn private_refusal(target: &Target, ip: IpAddr) -> Refusal {
    let (host, port) = (&target.host, target.port);
    Refusal {
        status: StatusCode::FORBIDDEN,
        rule: format!("strict: private address {ip}"),
        body: format!(
            "moat blocked {host}:{port}: it resolves to {ip}, a private (RFC 1918) address, \
             which strict runs reach only when named exactly.\n\
             To allow it, add `{host}:{port}` to network.rules in moat.yaml.\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(text: &str, host: &HashSet<IpAddr>) -> AddressClass {
        classify(text.parse().unwrap(), host)
    }

    /// Every restricted range, in the forms an agent controlling DNS answers
    /// (or typing literals) would use to reach the host or cloud metadata.
    #[test]
    fn restricted_ranges_are_refused_in_every_spelling() {
        use Restriction::*;
        let host: HashSet<IpAddr> = ["192.0.2.2", "172.17.0.1", "2001:db8::5"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let table: &[(&str, Restriction)] = &[
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Loopback),
            ("::127.0.0.1", Loopback),
            ("64:ff9b::7f00:1", Loopback),
            ("0.0.0.0", ThisNetwork),
            ("0.1.2.3", ThisNetwork),
            ("::", ThisNetwork),
            ("::ffff:0.0.0.0", ThisNetwork),
            ("169.254.169.254", LinkLocal),
            ("::ffff:169.254.169.254", LinkLocal),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("fe80::1", LinkLocal),
            ("fec0::1", LinkLocal),
            ("fd00:ec2::254", UniqueLocal),
            ("fc00::1", UniqueLocal),
            ("100.100.100.200", SharedAddressSpace),
            ("100.64.0.1", SharedAddressSpace),
            ("100.127.255.254", SharedAddressSpace),
            ("192.0.0.192", ProtocolAssignments),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("ff02::1", Multicast),
            ("::ffff:224.0.0.1", Multicast),
            ("255.255.255.255", Reserved),
            ("240.0.0.1", Reserved),
            ("64:ff9b:1::a00:1", Nat64LocalUse),
            ("192.0.2.2", HostInterface),
            ("::ffff:192.0.2.2", HostInterface),
            ("64:ff9b::c000:202", HostInterface),
            ("172.17.0.1", HostInterface),
            ("2001:db8::5", HostInterface),
        ];
        for (ip, expected) in table {
            assert_eq!(class(ip, &host), AddressClass::Restricted(*expected), "{ip}");
        }
    }

    #[test]
    fn private_and_public_addresses() {
        let host = HashSet::new();
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert_eq!(class(ip, &host), AddressClass::Private, "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "192.0.2.10",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2001:db8::1",
            "2606:4700::1111",
            "64:ff9b::5db8:d822",
        ] {
            assert_eq!(class(ip, &host), AddressClass::Public, "{ip}");
        }
    }

    /// The host's real interface addresses (docker0, the LAN) are refused.
    #[test]
    fn this_hosts_own_addresses_are_restricted() {
        let host = enumerate().unwrap();
        assert!(host.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{host:?}");
        for ip in host.iter().filter(|ip| !ip.is_loopback()) {
            assert!(
                matches!(classify(*ip, &host), AddressClass::Restricted(_)),
                "{ip} is this host's"
            );
        }
        let tracked = HostAddresses::new();
        assert!(tracked.current().contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
}
