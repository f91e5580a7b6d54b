//! Fairness between runs: each run's open tunnels are counted against
//! [`RunLimits::max_tunnels`] and its new tunnels (client TLS handshakes,
//! certificate minting) against a token bucket refilled at
//! [`RunLimits::handshakes_per_second`]. The agent chooses how many
//! connections it opens and how fast; without these, one run could take
//! every file descriptor and all the CPU the proxy has.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::RunLimits;

/// Why a run may not open another tunnel now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LimitExceeded {
    #[error("the run already has {0} tunnels open (config.yaml: proxy_max_tunnels)")]
    Tunnels(u32),
    #[error("the run opens tunnels faster than {0} per second (config.yaml: proxy_handshakes_per_second)")]
    Handshakes(u32),
}

/// One run's share of the proxy.
pub(crate) struct RunLimiter {
    limits: RunLimits,
    tunnels: Arc<Semaphore>,
    handshakes: Mutex<TokenBucket>,
}

/// Held while a tunnel is open; dropping it frees the slot.
pub(crate) struct TunnelSlot {
    _permit: OwnedSemaphorePermit,
}

impl RunLimiter {
    pub(crate) fn new(limits: RunLimits) -> Self {
        let rate = f64::from(limits.handshakes_per_second.max(1));
        Self {
            limits,
            tunnels: Arc::new(Semaphore::new(limits.max_tunnels as usize)),
            handshakes: Mutex::new(TokenBucket {
                capacity: rate,
                per_second: rate,
                tokens: rate,
                refilled: Instant::now(),
            }),
        }
    }

    /// A slot for one more tunnel, if the run is within both limits. A
    /// refused CONNECT costs no handshake token.
    pub(crate) fn open_tunnel(&self) -> Result<TunnelSlot, LimitExceeded> {
        let permit = self
            .tunnels
            .clone()
            .try_acquire_owned()
            .map_err(|_| LimitExceeded::Tunnels(self.limits.max_tunnels))?;
        let mut bucket = self.handshakes.lock().unwrap_or_else(|p| p.into_inner());
        if !bucket.take(Instant::now()) {
            return Err(LimitExceeded::Handshakes(self.limits.handshakes_per_second));
        }
        Ok(TunnelSlot { _permit: permit })
    }

    pub(crate) fn max_streams_per_tunnel(&self) -> u32 {
        self.limits.max_streams_per_tunnel
    }
}

struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn tunnels_are_counted_until_their_slot_is_dropped() {
        let limiter = RunLimiter::new(RunLimits {
            max_tunnels: 2,
            max_streams_per_tunnel: 1,
            handshakes_per_second: 1000,
        });
        let first = limiter.open_tunnel().unwrap();
        let _second = limiter.open_tunnel().unwrap();
        assert_eq!(limiter.open_tunnel().err(), Some(LimitExceeded::Tunnels(2)));
        drop(first);
        assert!(limiter.open_tunnel().is_ok());
    }

    #[test]
    fn handshakes_refill_at_the_configured_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket {
            capacity: 2.0,
            per_second: 2.0,
            tokens: 2.0,
            refilled: start,
        };
        assert!(bucket.take(start));
        assert!(bucket.take(start));
        assert!(!bucket.take(start));
        assert!(!bucket.take(start + Duration::from_millis(100)));
        assert!(bucket.take(start + Duration::from_millis(600)));
        // Never more than a burst, however long the run was idle.
        let later = start + Duration::from_secs(60);
        assert!(bucket.take(later) && bucket.take(later) && !bucket.take(later));
    }
}
