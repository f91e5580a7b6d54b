#!/usr/bin/env bash
# Installs what moat's build, tests and local base image need on a Debian
# machine with a Docker engine. Idempotent: quick when everything is there.
set -euo pipefail

need_apt=()
command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The interactive-run tests drive moat in a real pseudo-terminal.
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
# The routing endpoint's browser test loads a page in headless Chromium.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# ... trusting moat's CA through an NSS database made with certutil.
command -v certutil >/dev/null 2>&1 || need_apt+=(libnss3-tools)
# The real-engine suite runs a second time against a Podman service.
command -v podman >/dev/null 2>&1 || need_apt+=(podman)

if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${need_apt[*]} from Debian's packages" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The dependency check .ci/run runs (deny.toml).
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "setup: installing cargo-deny from crates.io" >&2
  cargo install --locked cargo-deny
fi

if ! docker info >/dev/null 2>&1; then
  echo "setup: no Docker engine answers (docker info failed); start it first" >&2
  exit 1
fi

"$(dirname "$0")/base-image.sh"
