#!/bin/sh
# Builds the in-cluster proxy's image without a registry: moat's base image
# (scripts/base-image.sh) plus this checkout's `moatd`, which the proxy's
# Deployment runs as `moatd proxy ...` (docs/kubernetes.md, "The proxy
# image"). Load it into a local cluster (`kind load docker-image TAG`,
# `k3d image import TAG`) or push it to a registry the nodes pull from,
# and name it in `kubernetes.proxy_image`.
#
# Usage: scripts/proxy-image.sh [TAG]   (default moat-proxy:<version>)
# Env:   MOATD  a moatd binary to use instead of building one (release).
set -eu

root="$(cd "$(dirname "$0")/.." && pwd)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)"
tag="${1:-moat-proxy:$version}"

"$root/scripts/base-image.sh" >/dev/null

moatd="${MOATD:-}"
if [ -z "$moatd" ]; then
    (cd "$root" && cargo build --release -p moat-daemon --bin moatd)
    moatd="${CARGO_TARGET_DIR:-$root/target}/release/moatd"
fi
[ -x "$moatd" ] || { echo "error: $moatd is not an executable moatd" >&2; exit 1; }

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT INT TERM
cp "$moatd" "$context/moatd"
cat >"$context/Dockerfile" <<'DOCKERFILE'
FROM moat-base:bookworm
COPY moatd /usr/local/bin/moatd
USER 65532:65532
ENTRYPOINT ["moatd"]
CMD ["proxy"]
DOCKERFILE
docker build --quiet --tag "$tag" "$context" >/dev/null
echo "built $tag"
