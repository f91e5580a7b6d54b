#!/bin/sh
# Builds moat's local base image (moat-base:bookworm by default) without a
# registry: a minimal Debian root filesystem from mmdebstrap, imported into
# Docker. Idempotent and quick when the image already exists. Mirrors
# crates/moat-runtime/src/base_image.rs; CI calls it before the tests.
#
# Usage: scripts/base-image.sh [TAG]
# Env:   MOAT_DEBIAN_MIRROR  Debian mirror (default: the host apt's, else
#                            http://deb.debian.org/debian)
set -eu

tag="${1:-moat-base:bookworm}"
suite=bookworm
packages=ca-certificates,curl,git,iptables

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag is present"
    exit 0
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
    echo "error: mmdebstrap is not installed: run \`apt-get install mmdebstrap\`" >&2
    exit 1
fi

host_mirror() {
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        [ -r "$f" ] || continue
        awk '$1 == "URIs:" { print $2 } $1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i; break } }' "$f" |
            sed 's:/*$::' | grep -E '^https?://.*/debian$' | head -n 1
    done | head -n 1
}
mirror="${MOAT_DEBIAN_MIRROR:-$(host_mirror)}"
mirror="${mirror:-http://deb.debian.org/debian}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT INT TERM

echo "building $tag from $mirror ($suite, minbase + $packages)"
timeout 600 mmdebstrap --variant=minbase --include="$packages" "$suite" "$scratch/rootfs.tar" "$mirror"
docker import \
    --change 'CMD ["/bin/sh"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$scratch/rootfs.tar" "$tag" >/dev/null
docker run --rm "$tag" sh -c 'curl --version >/dev/null && git --version >/dev/null'
echo "$tag is ready"
