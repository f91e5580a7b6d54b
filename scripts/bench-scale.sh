#!/usr/bin/env bash
# Scale bench: N detached runs at once (default 100) of `sleep DURATION` on
# moat-base:bookworm, started PARALLEL at a time; then `moat list` latency
# (hyperfine), the daemon's memory and open files from `moat status` (idle
# before, with the N runs live, after they stopped) and the per-run memory
# overhead, `moat logs -f` on a few runs (they must print the run's line and
# end when it stops), then every run stopped and checked cleaned, the daemon
# stopped, and nothing of the home left in Docker (containers, networks).
# Fresh temporary MOAT_HOME, release build; needs Docker, hyperfine and the
# local base image (scripts/setup.sh). Everything of the home is removed on
# exit, even on failure.
#
# Usage: scripts/bench-scale.sh [N]
# Env:   DURATION (default 600 s: long enough that all N are live at once on
#        a slow machine; every run is stopped by the bench), PARALLEL (default 8),
#        NO_BUILD=1 (use the release binaries as they are)
set -euo pipefail

runs=${1:-100}
duration=${DURATION:-600}
parallel=${PARALLEL:-8}
image=moat-base:bookworm
root=$(cd "$(dirname "$0")/.." && pwd)
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }
[[ ${NO_BUILD:-0} = 1 ]] || cargo build --quiet --release -p moat -p moat-daemon --manifest-path "$root/Cargo.toml"
bin=${CARGO_TARGET_DIR:-$root/target}/release/moat

MOAT_HOME=$(mktemp -d /tmp/moat-bench-scale.XXXXXX)
workspace=$(mktemp -d /tmp/moat-bench-scale-ws.XXXXXX)
results=$(mktemp -d)
export MOAT_HOME NO_COLOR=1
# moat_core::MoatHome::label(): sha256 of the path, first 6 bytes in hex.
label=$(printf %s "$MOAT_HOME" | sha256sum | cut -c1-12)
log_pids=()

cleanup() {
  set +e
  for pid in "${log_pids[@]}"; do kill "$pid" 2>/dev/null; done
  "$bin" daemon stop >/dev/null 2>&1
  docker ps -aq --filter "label=dev.moat.home=$label" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "label=dev.moat.home=$label" | xargs -r docker network rm >/dev/null
  rm -rf "$MOAT_HOME" "$workspace" "$results"
}
trap cleanup EXIT

# status FIELD: a number from `moat status --json`'s daemon health.
health() {
  "$bin" status --json | python3 -c 'import json,sys; print((json.load(sys.stdin)["daemon"].get("health") or {}).get(sys.argv[1], 0))' "$1"
}
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
# count STATE: how many runs `moat list --all --json` shows in STATE.
count() {
  "$bin" list --all --json | python3 -c 'import json,sys; print(sum(r["state"] == sys.argv[1] for r in json.load(sys.stdin)))' "$1"
}
left_in_docker() {
  { docker ps -aq --filter "label=dev.moat.home=$label"; docker network ls -q --filter "label=dev.moat.home=$label"; } | wc -l
}
now_ms() { date +%s%3N; }

cd "$workspace"
echo "MOAT_HOME=$MOAT_HOME (label $label)" >&2
"$bin" run --image "$image" -- true >/dev/null # starts the daemon
sleep 3
idle_rss=$(health rss_bytes)
idle_files=$(health open_files)

start=$(now_ms)
seq 1 "$runs" | xargs -P "$parallel" -I{} \
  "$bin" run -d --name "scale-{}" --image "$image" -- \
  sh -c "trap 'exit 0' TERM; echo started scale-{}; sleep $duration & wait" \
  >"$results/ids" 2>"$results/run-errors" || true
started_ms=$(($(now_ms) - start))
created=$(grep -c '^run_' "$results/ids" || true)
if [[ $created -ne $runs ]]; then
  echo "only $created of $runs runs were created:" >&2
  sort "$results/run-errors" | uniq -c | head -20 >&2
  exit 1
fi
for _ in $(seq 600); do
  running=$(count running)
  [[ $running -eq $runs ]] && break
  sleep 0.5
done
[[ $running -eq $runs ]] || { echo "only $running of $runs runs are running" >&2; exit 1; }

live_rss=$(health rss_bytes)
live_files=$(health open_files)
files_limit=$(health open_files_limit)
live_count=$(health live_runs)
hyperfine --shell=none --warmup 3 --runs 30 --style basic --export-json "$results/list.json" \
  "$bin list" "$bin list --all" >&2
list_ms() {
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]; print("%.1f ms (min %.1f, max %.1f)" % (r["mean"]*1000, r["min"]*1000, r["max"]*1000))' "$results/list.json" "$1"
}
status_ms_start=$(now_ms)
"$bin" status >/dev/null
status_ms=$(($(now_ms) - status_ms_start))

# `moat logs -f` on a few runs: each must show its run's line and end once
# the run is stopped.
mapfile -t ids <"$results/ids"
followed=(0 $((runs / 3)) $((2 * runs / 3)) $((runs - 1)))
for i in "${followed[@]}"; do
  timeout 600 "$bin" logs -f "${ids[i]}" >"$results/follow-$i" 2>&1 &
  log_pids+=($!)
done
sleep 2

start=$(now_ms)
printf '%s\n' "${ids[@]}" | xargs -P "$parallel" -I{} "$bin" stop {} >/dev/null 2>"$results/stop-errors" || {
  echo "some stops failed:" >&2
  head -20 "$results/stop-errors" >&2
  exit 1
}
stopped_ms=$(($(now_ms) - start))
follow_ok=0
for n in "${!log_pids[@]}"; do
  i=${followed[n]}
  if wait "${log_pids[n]}" && grep -q "^started scale-" "$results/follow-$i"; then
    follow_ok=$((follow_ok + 1))
  else
    echo "moat logs -f ${ids[i]} failed:" >&2
    cat "$results/follow-$i" >&2
  fi
done
log_pids=()

cleaned=0
for _ in $(seq 600); do
  cleaned=$(cd "$MOAT_HOME/runs" && grep -l '"cleaned_at"' run_*/metadata.json 2>/dev/null | wc -l)
  # The first run (`true`) is cleaned too.
  [[ $cleaned -ge $((runs + 1)) ]] && break
  sleep 0.5
done
after_rss=$(health rss_bytes)
"$bin" daemon stop >/dev/null
left=0
for _ in $(seq 120); do
  left=$(left_in_docker)
  [[ $left -eq 0 ]] && break
  sleep 0.5
done

cat <<REPORT

$runs concurrent runs (PARALLEL=$parallel at a time), under whatever load the machine has:
  started all:             ${started_ms} ms ($((started_ms / runs)) ms per run, ${parallel} in parallel)
  moat list:               $(list_ms 0)
  moat list --all:         $(list_ms 1)
  moat status:             ${status_ms} ms
  daemon live runs:        ${live_count}
  daemon RSS idle:         $(mib "$idle_rss") MiB, ${idle_files} files open
  daemon RSS with $runs:    $(mib "$live_rss") MiB, ${live_files} of ${files_limit} files open
  per-run RSS overhead:    $(awk -v a="$live_rss" -v b="$idle_rss" -v n="$runs" 'BEGIN {printf "%.0f KiB", (a - b) / n / 1024}')
  daemon RSS after stop:   $(mib "$after_rss") MiB
  logs -f followed:        ${follow_ok} of ${#followed[@]} ended with the run, output intact
  stopped all:             ${stopped_ms} ms
  cleaned:                 $((cleaned - 1)) of $runs
  left in Docker:          ${left} objects of the home after the daemon stopped
REPORT
[[ $follow_ok -eq ${#followed[@]} && $cleaned -ge $((runs + 1)) && $left -eq 0 ]]
