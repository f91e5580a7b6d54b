#!/usr/bin/env bash
# Times workspace snapshots of a generated workspace of 50,000 files (500
# directories of 100 files, 1-4 KB each): the first snapshot (every file
# read, hashed and stored) and the next ones with nothing changed (the stat
# cache spares reading any file), which must take at most 2 s.
#
#   scripts/bench-snapshot.sh            # FILES=50000 by default
#   FILES=200000 scripts/bench-snapshot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-50000}
PER_DIR=100
cargo build --quiet --release -p moat-core --example snapshot
bin=${CARGO_TARGET_DIR:-target}/release/examples/snapshot
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
ws=$scratch/ws
home=$scratch/home
python3 - "$ws" "$FILES" "$PER_DIR" <<'PY'
import os, sys
ws, files, per_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(files):
    d = os.path.join(ws, f"dir{i // per_dir:04d}")
    if i % per_dir == 0:
        os.makedirs(d, exist_ok=True)
    size = 1024 + (i * 7919) % 3072
    line = f"file {i} of the benchmark workspace\n".encode()
    with open(os.path.join(d, f"file{i % per_dir:03d}.txt"), "wb") as f:
        f.write((line * (size // len(line) + 1))[:size])
PY
# Files changed less than 2 s before a snapshot are not cached (docs/snapshots.md).
sleep 3
echo "== first snapshot of $FILES files"
/usr/bin/time -f "   %e s wall, %M KB max RSS" "$bin" "$ws" "$home"
echo "== second snapshot (nothing changed; the stat cache is filled)"
"$bin" "$ws" "$home"
echo "== unchanged workspace, repeated"
if command -v hyperfine >/dev/null; then
    hyperfine --warmup 1 --runs 10 "$bin $ws $home"
else
    for _ in 1 2 3 4 5; do /usr/bin/time -f "   %e s wall" "$bin" "$ws" "$home"; done
fi
echo "== store: $(du -sh "$home/snapshots" | cut -f1) for $(du -sh "$ws" | cut -f1) of workspace"
