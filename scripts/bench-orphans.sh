#!/usr/bin/env bash
# Bench for the orphan issue (daemon-and-reaper.md §5): on a fresh temporary
# MOAT_HOME with the release build of moat, measures
#   1. `moat list` and `moat run -d -- true` latency with 0 vs 100 orphaned
#      moat networks present, and the ratio 100/0 (expected ≈ 1: no CLI path
#      lists networks any more);
#   2. the wall time of one forced sweep (`moat system prune --force
#      --networks`) with 10, 50 and 100 orphans.
# Orphans are real Docker networks labelled as this home's (subnets from
# 10.253.0.0/16, outside moat's own pool). Every network and container of
# the home is removed and its daemon stopped on exit, even on failure.
# Needs Docker and the moat-base:bookworm image (scripts/setup.sh).
# Usage: scripts/bench-orphans.sh [RUNS]   (hyperfine runs per `run` case,
# default 10; `list` cases get 5 times as many)
set -euo pipefail

runs=${1:-10}
image=moat-base:bookworm
root=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v hyperfine >/dev/null; then
  apt-get install -y hyperfine >/dev/null
fi
cargo build --quiet --release -p moat --manifest-path "$root/Cargo.toml"
bin=${CARGO_TARGET_DIR:-$root/target}/release/moat

MOAT_HOME=$(mktemp -d)
workspace=$(mktemp -d)
export MOAT_HOME NO_COLOR=1
# moat_core::MoatHome::label(): sha256 of the path, first 6 bytes in hex.
label=$(printf %s "$MOAT_HOME" | sha256sum | cut -c1-12)
results=$(mktemp -d)

cleanup() {
  set +e
  "$bin" daemon stop >/dev/null 2>&1
  docker ps -aq --filter "label=dev.moat.home=$label" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "label=dev.moat.home=$label" | xargs -r docker network rm >/dev/null
  rm -rf "$MOAT_HOME" "$workspace" "$results"
}
trap cleanup EXIT

orphan_count() {
  docker network ls -q --filter "label=dev.moat.home=$label" --filter "label=dev.moat.bench-orphan=true" | wc -l
}

# Creates N orphaned networks (numbered FROM..FROM+N-1) the way a killed
# moat would have left them: managed, of this home, of a run that is gone.
make_orphans() {
  local from=$1 count=$2 i id
  for ((i = from; i < from + count; i++)); do
    id=$(printf 'run_%012x' $((0xbe0000000000 + i)))
    docker network create --subnet "10.253.$((i / 16)).$(((i % 16) * 16))/28" \
      --label dev.moat.managed=true --label "dev.moat.run-id=$id" \
      --label "dev.moat.home=$label" --label dev.moat.bench-orphan=true \
      "moat-$id" >/dev/null
  done
}

remove_orphans() {
  docker network ls -q --filter "label=dev.moat.home=$label" --filter "label=dev.moat.bench-orphan=true" |
    xargs -r docker network rm >/dev/null
}

# hyperfine CASE-NAME RUNS COMMAND: mean seconds into $results/CASE-NAME.
measure() {
  local name=$1 count=$2 command=$3
  hyperfine --shell=none --warmup 3 --runs "$count" --style basic \
    --export-json "$results/$name.json" --command-name "$name" "$command" >&2
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["mean"])' \
    "$results/$name.json" >"$results/$name.mean"
}

mean_ms() { awk '{printf "%.1f", $1 * 1000}' "$results/$1.mean"; }
ratio() { awk -v a="$(cat "$results/$1.mean")" -v b="$(cat "$results/$2.mean")" 'BEGIN {printf "%.2f", a / b}'; }

cd "$workspace"
run_cmd="$bin run -d --image $image -- true"
list_cmd="$bin list --all"

echo "MOAT_HOME=$MOAT_HOME (label $label)" >&2
# Start the daemon once, so every case measures a warm daemon, and let its
# start-up sweep finish before timing anything.
$run_cmd >/dev/null
sleep 3

measure list-0 $((runs * 5)) "$list_cmd"
make_orphans 0 100
measure list-100 $((runs * 5)) "$list_cmd"
measure run-100 "$runs" "$run_cmd"
left_after_run=$(orphan_count)
remove_orphans
measure run-0 "$runs" "$run_cmd"

sweep_lines=()
for count in 10 50 100; do
  make_orphans 0 "$count"
  start=$(date +%s%N)
  report=$("$bin" system prune --force --networks)
  end=$(date +%s%N)
  left=$(orphan_count)
  if [[ $left -ne 0 ]]; then
    echo "the forced sweep left $left of $count orphans (label mismatch?):" >&2
    echo "$report" >&2
    exit 1
  fi
  took=$(grep -o 'took [0-9]* ms' <<<"$report" || echo "took ? ms")
  sweep_lines+=("$(printf '%4d orphans: %6d ms wall (daemon: %s)' "$count" $(((end - start) / 1000000)) "$took")")
done

cat <<REPORT

moat list --all        0 orphans: $(mean_ms list-0) ms   100 orphans: $(mean_ms list-100) ms   ratio $(ratio list-100 list-0)
moat run -d -- true    0 orphans: $(mean_ms run-0) ms   100 orphans: $(mean_ms run-100) ms   ratio $(ratio run-100 run-0)
(orphans still present after the 100-orphan run case: $left_after_run of 100)
forced sweep (moat system prune --force --networks):
$(printf '%s\n' "${sweep_lines[@]}")
REPORT
