#!/usr/bin/env bash
# Times `moat list` (release build) on a throwaway MOAT_HOME holding N
# fabricated runs (default 1000), some with logs. Uses hyperfine when it is
# installed, else a plain timing loop. Usage: scripts/bench-list.sh [N]
set -euo pipefail

runs=${1:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --quiet --release -p moat --manifest-path "$root/Cargo.toml"
bin=${CARGO_TARGET_DIR:-$root/target}/release/moat

MOAT_HOME=$(mktemp -d)
export MOAT_HOME NO_COLOR=1
trap 'rm -rf "$MOAT_HOME"' EXIT

states=(exited exited exited failed running)
for ((i = 0; i < runs; i++)); do
  id=$(printf 'run_%012x' "$i")
  dir=$MOAT_HOME/runs/$id
  mkdir -p "$dir"
  state=${states[i % ${#states[@]}]}
  created=$(date -u -d "@$((1700000000 + i * 60))" +%Y-%m-%dT%H:%M:%SZ)
  cat >"$dir/metadata.json" <<JSON
{
  "version": 1,
  "id": "$id",
  "name": "bench-$((i % 50))",
  "workspace": "/home/user/src/project-$((i % 7))",
  "image": "debian:bookworm-slim",
  "command": ["sh", "-c", "make test"],
  "runtime": "docker",
  "state": "$state",
  "exit_code": $((i % 3)),
  "created_at": "$created",
  "started_at": "$created",
  "network": "moat-$id",
  "grants": ["github"],
  "labels": {"dev.moat.role": "run"}
}
JSON
  printf '{"ts":"%s","stream":"stdout","line":"hello"}\n' "$created" >"$dir/logs.jsonl"
done
echo "fabricated $runs runs in $MOAT_HOME" >&2

if command -v hyperfine >/dev/null; then
  hyperfine --shell=none --warmup 10 --runs 200 \
    "$bin list --all" "$bin list" "$bin list --all --json"
else
  for args in "list --all" "list" "list --all --json"; do
    start=$(date +%s%N)
    for ((r = 0; r < 50; r++)); do "$bin" $args >/dev/null; done
    end=$(date +%s%N)
    echo "moat $args: $(((end - start) / 50 / 1000)) µs mean over 50 runs"
  done
fi
