//! Moat's own pool of small IPv4 subnets for per-run networks, so runs never
//! exhaust the address pools that Docker (about 30 bridge networks by
//! default) and other tools rely on (daemon-and-reaper.md §5, "Address
//! space"). Choosing a block is a pure function of the subnets in use.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Default pool: 10.213.0.0/16 split into /28 blocks (4096 networks of 14
/// hosts each).
pub const DEFAULT_POOL_BASE: &str = "10.213.0.0/16";
/// Default prefix length of one block of the pool.
pub const DEFAULT_BLOCK_PREFIX: u8 = 28;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    #[error("invalid IPv4 subnet {text:?}: expected ADDRESS/PREFIX such as 10.213.0.0/16")]
    Invalid { text: String },
    #[error("subnet {text:?} has host bits set (did you mean {network}?)")]
    HostBitsSet { text: String, network: Ipv4Subnet },
    #[error("block prefix /{block_prefix} does not fit pool {base}: it must be between the pool's prefix and /30")]
    BlockPrefix { base: Ipv4Subnet, block_prefix: u8 },
}

/// An IPv4 network: address with host bits clear, and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Subnet {
    /// The subnet of `prefix` bits containing `address`.
    pub fn containing(address: Ipv4Addr, prefix: u8) -> Ipv4Subnet {
        let prefix = prefix.min(32);
        Ipv4Subnet {
            network: Ipv4Addr::from(u32::from(address) & mask(prefix)),
            prefix,
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// First address after the network address, used as the gateway.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network).saturating_add(1))
    }

    fn first(self) -> u32 {
        u32::from(self.network)
    }

    fn last(self) -> u32 {
        self.first() | !mask(self.prefix)
    }

    /// Whether the two subnets share at least one address.
    pub fn overlaps(&self, other: &Ipv4Subnet) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Subnet {
    type Err = SubnetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || SubnetError::Invalid { text: text.to_string() };
        let (address, prefix) = text.trim().split_once('/').ok_or_else(invalid)?;
        let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        if prefix > 32 {
            return Err(invalid());
        }
        let subnet = Ipv4Subnet::containing(address, prefix);
        if subnet.network != address {
            return Err(SubnetError::HostBitsSet {
                text: text.to_string(),
                network: subnet,
            });
        }
        Ok(subnet)
    }
}

/// A base subnet cut into equal blocks, one block per network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetPool {
    base: Ipv4Subnet,
    block_prefix: u8,
}

impl Default for SubnetPool {
    fn default() -> Self {
        SubnetPool {
            base: Ipv4Subnet::containing(Ipv4Addr::new(10, 213, 0, 0), 16),
            block_prefix: DEFAULT_BLOCK_PREFIX,
        }
    }
}

impl SubnetPool {
    /// A pool of `/block_prefix` blocks inside `base`. Blocks must hold at
    /// least two hosts (a gateway and one container): at most /30.
    pub fn new(base: Ipv4Subnet, block_prefix: u8) -> Result<SubnetPool, SubnetError> {
        if block_prefix < base.prefix || block_prefix > 30 {
            return Err(SubnetError::BlockPrefix { base, block_prefix });
        }
        Ok(SubnetPool { base, block_prefix })
    }

    /// Parses a pool from configuration: `base` such as `10.213.0.0/16`.
    pub fn parse(base: &str, block_prefix: u8) -> Result<SubnetPool, SubnetError> {
        SubnetPool::new(base.parse()?, block_prefix)
    }

    pub fn base(&self) -> Ipv4Subnet {
        self.base
    }

    pub fn block_prefix(&self) -> u8 {
        self.block_prefix
    }

    /// How many networks the pool can hold.
    pub fn capacity(&self) -> u64 {
        1u64 << (self.block_prefix - self.base.prefix)
    }

    /// Every block of the pool, lowest address first.
    pub fn blocks(&self) -> impl Iterator<Item = Ipv4Subnet> + '_ {
        let step = 1u64 << (32 - u32::from(self.block_prefix));
        (0..self.capacity()).map(move |index| {
            let address = u64::from(self.base.first()) + index * step;
            // `address` stays within the base subnet, hence within u32.
            Ipv4Subnet::containing(Ipv4Addr::from(address as u32), self.block_prefix)
        })
    }

    /// Blocks that overlap none of `in_use`, lowest address first.
    pub fn free_blocks<'a>(&'a self, in_use: &'a [Ipv4Subnet]) -> impl Iterator<Item = Ipv4Subnet> + 'a {
        self.blocks()
            .filter(move |block| !in_use.iter().any(|used| used.overlaps(block)))
    }

    /// The first block that overlaps none of `in_use`.
    pub fn first_free(&self, in_use: &[Ipv4Subnet]) -> Option<Ipv4Subnet> {
        self.free_blocks(in_use).next()
    }

    /// The first free block at or after block `start` (modulo the pool's
    /// capacity), wrapping around. Creators that start at different
    /// places (one per network name) rarely race for the same block, even
    /// across daemons of different homes that share the engine.
    pub fn first_free_from(&self, in_use: &[Ipv4Subnet], start: u64) -> Option<Ipv4Subnet> {
        let start = start % self.capacity();
        let blocks: Vec<Ipv4Subnet> = self.blocks().collect();
        let (before, after) = blocks.split_at(start as usize);
        after
            .iter()
            .chain(before)
            .copied()
            .find(|block| !in_use.iter().any(|used| used.overlaps(block)))
    }
}

impl fmt::Display for SubnetPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (/{} each)", self.base, self.block_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Subnet {
        text.parse().unwrap()
    }

    #[test]
    fn default_pool_holds_4096_blocks_of_slash_28() {
        let pool = SubnetPool::default();
        assert_eq!(pool.base().to_string(), DEFAULT_POOL_BASE);
        assert_eq!(pool.capacity(), 4096);
        let blocks: Vec<_> = pool.blocks().collect();
        assert_eq!(blocks.len(), 4096);
        assert_eq!(blocks[0], net("10.213.0.0/28"));
        assert_eq!(blocks[1], net("10.213.0.16/28"));
        assert_eq!(blocks[4095], net("10.213.255.240/28"));
    }

    #[test]
    fn first_free_is_the_lowest_block_when_nothing_is_used() {
        let pool = SubnetPool::default();
        assert_eq!(pool.first_free(&[]), Some(net("10.213.0.0/28")));
    }

    #[test]
    fn first_free_skips_blocks_used_by_other_networks() {
        let pool = SubnetPool::default();
        let in_use = [net("10.213.0.0/28"), net("172.17.0.0/16"), net("10.213.0.32/28")];
        assert_eq!(pool.first_free(&in_use), Some(net("10.213.0.16/28")));
    }

    #[test]
    fn a_wide_subnet_in_use_hides_every_block_it_covers() {
        let pool = SubnetPool::default();
        let in_use = [net("10.213.0.0/24")];
        assert_eq!(pool.first_free(&in_use), Some(net("10.213.1.0/28")));
        let everything = [net("10.0.0.0/8")];
        assert_eq!(pool.first_free(&everything), None);
    }

    #[test]
    fn a_narrow_subnet_in_use_hides_its_enclosing_block() {
        let pool = SubnetPool::default();
        assert_eq!(pool.first_free(&[net("10.213.0.4/30")]), Some(net("10.213.0.16/28")));
    }

    #[test]
    fn a_full_pool_has_no_free_block() {
        let pool = SubnetPool::parse("192.168.50.0/26", 28).unwrap();
        let in_use: Vec<_> = pool.blocks().collect();
        assert_eq!(in_use.len(), 4);
        assert_eq!(pool.first_free(&in_use), None);
        assert_eq!(pool.first_free(&in_use[..3]), Some(in_use[3]));
    }

    #[test]
    fn first_free_from_starts_at_its_block_and_wraps() {
        let pool = SubnetPool::parse("10.99.0.0/26", 28).unwrap();
        assert_eq!(pool.first_free_from(&[], 2), Some(net("10.99.0.32/28")));
        assert_eq!(
            pool.first_free_from(&[], 6),
            Some(net("10.99.0.32/28")),
            "modulo capacity"
        );
        let used = [net("10.99.0.32/28"), net("10.99.0.48/28")];
        assert_eq!(
            pool.first_free_from(&used, 2),
            Some(net("10.99.0.0/28")),
            "wraps around"
        );
        let all: Vec<_> = pool.blocks().collect();
        assert_eq!(pool.first_free_from(&all, 3), None);
    }

    #[test]
    fn free_blocks_lists_the_gaps_in_order() {
        let pool = SubnetPool::parse("192.168.50.0/26", 28).unwrap();
        let used = [net("192.168.50.16/28")];
        let free: Vec<String> = pool.free_blocks(&used).map(|b| b.to_string()).collect();
        assert_eq!(free, ["192.168.50.0/28", "192.168.50.32/28", "192.168.50.48/28"]);
    }

    #[test]
    fn parsing_rejects_malformed_subnets_and_host_bits() {
        assert!(matches!(
            "10.213.0.0".parse::<Ipv4Subnet>(),
            Err(SubnetError::Invalid { .. })
        ));
        assert!(matches!(
            "10.213.0.0/33".parse::<Ipv4Subnet>(),
            Err(SubnetError::Invalid { .. })
        ));
        assert!(matches!(
            "fd00::/8".parse::<Ipv4Subnet>(),
            Err(SubnetError::Invalid { .. })
        ));
        let err = "10.213.0.1/16".parse::<Ipv4Subnet>().unwrap_err();
        assert_eq!(
            err,
            SubnetError::HostBitsSet {
                text: "10.213.0.1/16".into(),
                network: net("10.213.0.0/16")
            }
        );
    }

    #[test]
    fn block_prefix_must_fit_the_base_and_leave_room_for_hosts() {
        assert!(SubnetPool::parse("10.213.0.0/16", 15).is_err());
        assert!(SubnetPool::parse("10.213.0.0/16", 31).is_err());
        assert_eq!(SubnetPool::parse("10.213.0.0/16", 16).unwrap().capacity(), 1);
    }

    #[test]
    fn a_pool_reads_as_its_range_and_block_size() {
        let pool = SubnetPool::parse("10.250.0.0/23", 24).unwrap();
        assert_eq!(pool.to_string(), "10.250.0.0/23 (/24 each)");
    }

    #[test]
    fn overlap_is_symmetric_and_exact_at_the_edges() {
        let a = net("10.0.0.0/28");
        let b = net("10.0.0.16/28");
        assert!(!a.overlaps(&b) && !b.overlaps(&a));
        let c = net("10.0.0.0/27");
        assert!(a.overlaps(&c) && c.overlaps(&b));
        assert_eq!(a.first_host(), Ipv4Addr::new(10, 0, 0, 1));
    }
}
