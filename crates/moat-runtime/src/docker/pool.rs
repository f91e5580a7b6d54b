//! Creating Docker networks on blocks of moat's subnet pool: skip every
//! subnet any existing network uses, keep blocks being created in this
//! process apart, and move on to the next block when the engine reports an
//! overlap (another process won the race) (daemon-and-reaper.md §5).

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use bollard::Docker;
use bollard::query_parameters::ListNetworksOptions;

use super::convert;
use super::errors::{is_pool_overlap, map_error};
use crate::subnet::{Ipv4Subnet, SubnetPool};
use crate::{NetworkInfo, NetworkSpec, RuntimeError, RuntimeKind, RuntimeResult};

/// Overlap answers tolerated before giving up (each one means another
/// creator took the block between our listing and our request).
const MAX_OVERLAP_RETRIES: usize = 32;

pub struct NetworkPool {
    subnets: SubnetPool,
    /// Blocks with a creation in flight in this process.
    reserved: Mutex<BTreeSet<Ipv4Subnet>>,
}

/// A block held for one creation; released when dropped (also when the
/// creation times out and its future is dropped).
struct Reservation<'a> {
    pool: &'a NetworkPool,
    block: Ipv4Subnet,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.pool.reserved_set().remove(&self.block);
    }
}

impl NetworkPool {
    pub fn new(subnets: SubnetPool) -> NetworkPool {
        NetworkPool {
            subnets,
            reserved: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn subnets(&self) -> &SubnetPool {
        &self.subnets
    }

    fn reserved_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<Ipv4Subnet>> {
        // The set stays consistent even if a holder panicked.
        self.reserved.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves the first block free of `in_use`, `refused` and blocks
    /// reserved by concurrent creations, searching from a place derived
    /// from the network's name.
    fn reserve(&self, name: &str, in_use: &[Ipv4Subnet], refused: &[Ipv4Subnet]) -> Option<Reservation<'_>> {
        let mut reserved = self.reserved_set();
        let taken: Vec<Ipv4Subnet> = in_use.iter().chain(refused).chain(reserved.iter()).copied().collect();
        let block = self.subnets.first_free_from(&taken, search_start(name))?;
        reserved.insert(block);
        Some(Reservation { pool: self, block })
    }

    /// Creates the network on a free block (the caller bounds the time).
    pub async fn create_network(&self, docker: &Docker, spec: &NetworkSpec, op: &str) -> RuntimeResult<NetworkInfo> {
        let what = format!("network {}", spec.name);
        let mut refused = Vec::new();
        while refused.len() <= MAX_OVERLAP_RETRIES {
            let in_use = subnets_in_use(docker, op).await?;
            let reservation = self
                .reserve(&spec.name, &in_use, &refused)
                .ok_or_else(|| self.exhausted(spec))?;
            let block = reservation.block;
            let request = convert::network_create_request(spec, block);
            match docker.create_network(request).await {
                Ok(created) => {
                    tracing::debug!(network = %spec.name, subnet = %block, "created network");
                    return Ok(NetworkInfo {
                        id: created.id,
                        name: spec.name.clone(),
                        labels: spec.labels.clone(),
                        subnet: Some(block.to_string()),
                        gateway: Some(block.first_host().to_string()),
                        internal: spec.internal,
                        containers: Vec::new(),
                    });
                }
                Err(e) if is_pool_overlap(&e) => {
                    tracing::debug!(network = %spec.name, subnet = %block, "subnet taken meanwhile; trying the next one");
                    refused.push(block);
                }
                Err(e) => return Err(map_error(op, &what, e)),
            }
        }
        Err(RuntimeError::Other {
            runtime: RuntimeKind::Docker,
            op: op.to_string(),
            message: format!(
                "the engine refused {} subnets of {} as overlapping",
                refused.len(),
                self.subnets
            ),
        })
    }

    fn exhausted(&self, spec: &NetworkSpec) -> RuntimeError {
        RuntimeError::AddressSpaceExhausted {
            runtime: RuntimeKind::Docker,
            network: spec.name.clone(),
            pool: self.subnets.to_string(),
        }
    }
}

/// Where the search for a network's block starts: a stable hash of its
/// name (FNV-1a), so concurrent creators spread over the pool.
fn search_start(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Subnets of every network on the engine, moat's or not.
async fn subnets_in_use(docker: &Docker, op: &str) -> RuntimeResult<Vec<Ipv4Subnet>> {
    let networks = docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .map_err(|e| map_error(op, "networks", e))?;
    Ok(convert::subnets_of(networks.into_iter().map(|n| n.ipam)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> NetworkPool {
        NetworkPool::new(SubnetPool::parse("10.99.0.0/26", 28).unwrap())
    }

    /// The pool's blocks in the order a search for `name` visits them.
    fn search_order(pool: &NetworkPool, name: &str) -> Vec<Ipv4Subnet> {
        let blocks: Vec<_> = pool.subnets().blocks().collect();
        let start = (search_start(name) % blocks.len() as u64) as usize;
        blocks[start..].iter().chain(&blocks[..start]).copied().collect()
    }

    #[test]
    fn concurrent_reservations_get_distinct_blocks() {
        let pool = pool();
        let order = search_order(&pool, "moat-run_a");
        let first = pool.reserve("moat-run_a", &[], &[]).unwrap();
        let second = pool.reserve("moat-run_a", &[], &[]).unwrap();
        assert_eq!(first.block, order[0]);
        assert_eq!(second.block, order[1]);
    }

    #[test]
    fn different_names_start_at_different_blocks() {
        let pool = NetworkPool::new(SubnetPool::default());
        let starts: std::collections::BTreeSet<_> = (0..20)
            .map(|i| pool.reserve(&format!("moat-run_{i:012x}"), &[], &[]).unwrap().block)
            .collect();
        assert!(starts.len() > 15, "searches must spread over the pool: {starts:?}");
    }

    #[test]
    fn dropping_a_reservation_frees_its_block() {
        let pool = pool();
        let first = pool.reserve("n", &[], &[]).unwrap();
        let block = first.block;
        drop(first);
        assert_eq!(pool.reserve("n", &[], &[]).unwrap().block, block);
    }

    #[test]
    fn refused_and_used_blocks_are_skipped_until_none_is_left() {
        let pool = pool();
        let order = search_order(&pool, "n");
        let used = [order[0]];
        let refused = [order[1], order[2]];
        let last = pool.reserve("n", &used, &refused).unwrap();
        assert_eq!(last.block, order[3]);
        assert!(pool.reserve("n", &used, &refused).is_none());
    }
}
