#!/usr/bin/env bash
# The whole test suite: prerequisites (idempotent), then every test of the
# workspace, including those against the real Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --all-targets "$@"
