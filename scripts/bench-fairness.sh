#!/usr/bin/env bash
# Noisy neighbour: run A tries to open 5,000 tunnels through moat's proxy
# (500 in flight, accepted ones held) while run B's request latency is
# measured on one keep-alive tunnel, alone and under the flood, with the
# default per-run limits and with the limits lifted
# (crates/moat-proxy/benches/throughput/fairness.rs). Loopback only; takes a
# few seconds, bounded well under a minute.
#
# Usage: scripts/bench-fairness.sh [--flood N] [--in-flight N] [--requests N]
#                                  [--limits default|off|both] [--threads A,P,U]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p moat-proxy --bench throughput --no-run
exec cargo bench -q -p moat-proxy --bench throughput -- --fairness "$@"
