#!/usr/bin/env bash
# Latency of one short run, side by side: `moat run` (warm daemon; network,
# proxy registration, container, log capture, exit code) against plain
# `docker run --rm` and against doing moat's Docker work by hand (a network,
# a container on it, removal of both). Release build; needs hyperfine and the
# local base image (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }
cargo build --release -q -p moat
moat="$PWD/target/release/moat"
image=moat-base:bookworm
home="$(mktemp -d /tmp/moat-bench-run.XXXXXX)"
workspace="$(mktemp -d /tmp/moat-bench-ws.XXXXXX)"
export MOAT_HOME="$home"
cleanup() {
    "$moat" daemon stop >/dev/null 2>&1 || true
    rm -rf "$home" "$workspace"
}
trap cleanup EXIT
cd "$workspace"
"$moat" run --image "$image" -- true 2>/dev/null # start the daemon
hyperfine --warmup 2 --runs "${RUNS:-15}" -N \
    --command-name "moat run -- true" "$moat run --image $image -- true" \
    --command-name "docker run --rm" "docker run --rm $image true" \
    --command-name "docker network + run + rm by hand" \
    "sh -c 'n=bench-\$\$; docker network create \$n >/dev/null && docker run --rm --network \$n $image true && docker network rm \$n >/dev/null'"
