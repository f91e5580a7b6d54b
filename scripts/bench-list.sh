#!/usr/bin/env bash
# Times `moat list` (release build) on a throwaway MOAT_HOME holding N
# fabricated runs (default 10000; one in 500 live, the rest finished), each
# with a log line. Cases: `moat list` (the newest runs: reads only the
# records it shows, the list index knows the rest), the same with the index
# removed before each run (the listing that rebuilds it), and `moat list
# --all` (every record). Uses hyperfine when it is installed, else a plain
# timing loop. Usage: scripts/bench-list.sh [N]
set -euo pipefail

runs=${1:-10000}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --quiet --release -p moat --manifest-path "$root/Cargo.toml"
bin=${CARGO_TARGET_DIR:-$root/target}/release/moat

MOAT_HOME=$(mktemp -d)
export MOAT_HOME NO_COLOR=1
trap 'rm -rf "$MOAT_HOME"' EXIT

python3 - "$MOAT_HOME/runs" "$runs" <<'PY'
import datetime, json, os, sys

runs_dir, count = sys.argv[1], int(sys.argv[2])
states = ["exited", "exited", "exited", "failed", "exited"]
for i in range(count):
    run_id = "run_%012x" % i
    directory = os.path.join(runs_dir, run_id)
    os.makedirs(directory, mode=0o700)
    created = datetime.datetime.fromtimestamp(1700000000 + i * 60, datetime.timezone.utc)
    stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = {
        "version": 1,
        "id": run_id,
        "name": "bench-%d" % (i % 50),
        "workspace": "/home/user/src/project-%d" % (i % 7),
        "image": "debian:bookworm-slim",
        "command": ["sh", "-c", "make test"],
        "runtime": "docker",
        "state": "running" if i % 500 == 0 else states[i % len(states)],
        "exit_code": i % 3,
        "created_at": stamp,
        "started_at": stamp,
        "network": "moat-" + run_id,
        "grants": ["github"],
        "labels": {"dev.moat.role": "run"},
    }
    with open(os.path.join(directory, "metadata.json"), "w") as f:
        json.dump(meta, f, indent=2)
    with open(os.path.join(directory, "logs.jsonl"), "w") as f:
        f.write(json.dumps({"ts": stamp, "stream": "stdout", "line": "hello"}) + "\n")
PY
echo "fabricated $runs runs in $MOAT_HOME" >&2
index=$MOAT_HOME/runs/.index

if command -v hyperfine >/dev/null; then
  hyperfine --shell=none --warmup 5 --runs 50 "$bin list"
  hyperfine --shell=none --runs 10 --prepare "rm -f $index" \
    --command-name "$bin list (no index: rebuilds it)" "$bin list"
  hyperfine --shell=none --warmup 2 --runs 10 "$bin list --all" "$bin list --all --json"
else
  for args in "list" "list --all" "list --all --json"; do
    start=$(date +%s%N)
    for ((r = 0; r < 10; r++)); do "$bin" $args >/dev/null; done
    end=$(date +%s%N)
    echo "moat $args: $(((end - start) / 10 / 1000)) µs mean over 10 runs"
  done
fi
