#!/usr/bin/env bash
# Latency of one short run, side by side: `moat run` with a warm daemon and
# its network pool filled (network taken from the pool, proxy registration,
# container, log capture, exit code), `moat run` cold (no daemon running
# before each run: spawn, pool fill, then the run), plain `docker run --rm`,
# `docker run --rm` on an existing network of its own (what a warm moat run
# asks of Docker), and moat's Docker work done by hand (a network, a
# container on it, removal of both). Release build; needs hyperfine and the
# local base image (scripts/setup.sh). RUNS (default 15) sets the runs per
# command; NO_BUILD=1 uses the release binaries as they are. Ends with each
# case's mean against the bare `docker run --rm`.
#
# `moat run --timings -- true` prints where one run's time goes.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }
[[ ${NO_BUILD:-0} = 1 ]] || cargo build --release -q -p moat -p moat-daemon
moat="${CARGO_TARGET_DIR:-$PWD/target}/release/moat"
image=moat-base:bookworm
home="$(mktemp -d /tmp/moat-bench-run.XXXXXX)"
workspace="$(mktemp -d /tmp/moat-bench-ws.XXXXXX)"
export MOAT_HOME="$home"
ready_network="moat-bench-ready-$$"
cleanup() {
    "$moat" daemon stop >/dev/null 2>&1 || true
    docker network rm "$ready_network" >/dev/null 2>&1 || true
    rm -rf "$home" "$workspace"
}
trap cleanup EXIT
cd "$workspace"
"$moat" run --image "$image" -- true 2>/dev/null # start the daemon (and fill its pool)
# Waits until this home's daemon has its pool full and armed again (2
# networks of each kind by default, each with its running holder) and the
# previous run is cleaned up, so that every warm run takes a ready network
# and no pool work is left to overlap it.
cat >"$home/wait-pool.sh" <<'WAIT'
pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$MOAT_HOME/daemon/daemon.json")
mine() { grep -c "^$pid-" || true; }
for _ in $(seq 400); do
    networks=$(docker network ls --filter label=dev.moat.role=pool --format '{{.Label "dev.moat.daemon"}}' | mine)
    holders=$(docker ps --filter label=dev.moat.role=pool --format '{{.Label "dev.moat.daemon"}}' | mine)
    home_label=$(docker network ls --filter label=dev.moat.role=pool --format '{{.Label "dev.moat.daemon"}} {{.Label "dev.moat.home"}}' | grep "^$pid-" | head -1 | cut -d' ' -f2)
    runs=$(docker ps -a --filter label=dev.moat.role=main --filter "label=dev.moat.home=$home_label" -q | wc -l)
    [ "$networks" -eq 4 ] && [ "$holders" -eq 4 ] && [ "$runs" -eq 0 ] && exit 0
    sleep 0.05
done
echo "the network pool did not fill" >&2
WAIT
docker network create "$ready_network" >/dev/null
echo "one warm run, step by step:"
sh "$home/wait-pool.sh"
"$moat" run --timings --image "$image" -- true
hyperfine --warmup 2 --runs "${RUNS:-15}" -N --export-json "$home/warm.json" \
    --prepare "sh $home/wait-pool.sh" \
    --command-name "moat run -- true (warm, pool filled)" "$moat run --image $image -- true" \
    --command-name "docker run --rm" "docker run --rm $image true" \
    --command-name "docker run --rm on a ready network" "docker run --rm --network $ready_network $image true" \
    --command-name "docker network + run + rm by hand" \
    "sh -c 'n=bench-\$\$; docker network create \$n >/dev/null && docker run --rm --network \$n $image true && docker network rm \$n >/dev/null'"
hyperfine --runs "${RUNS:-15}" -N --export-json "$home/cold.json" \
    --prepare "$moat daemon stop" \
    --command-name "moat run -- true (cold: no daemon running)" "$moat run --image $image -- true"
# Every case against the bare `docker run --rm` of the same bench run.
python3 - "$home/warm.json" "$home/cold.json" <<'PY'
import json, sys

results = [r for path in sys.argv[1:] for r in json.load(open(path))["results"]]
bare = next(r for r in results if r["command"] == "docker run --rm")
print("\n%-46s %9s %9s %9s" % ("command", "mean ms", "median ms", "vs bare"))
for r in results:
    print("%-46s %9.0f %9.0f %8.2fx" % (r["command"], r["mean"] * 1000, r["median"] * 1000, r["mean"] / bare["mean"]))
PY
