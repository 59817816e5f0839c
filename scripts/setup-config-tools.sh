#!/usr/bin/env bash
# Installs what the atomix-config tests use to judge rendered output with real tools:
#   nft (nftables), dnsmasq, systemd-analyze (systemd), unshare (util-linux) on the host,
#   and a Debian 13 "trixie" amd64 tree with podman 5, whose Quadlet generator
#   (/usr/libexec/podman/quadlet) bookworm lacks, and systemd, whose systemd-analyze
#   verifies the units Quadlet generates (they run /usr/bin/podman, which only the tree
#   has); the tests run both under chroot.
# Idempotent: only what is missing is installed; the trixie tree is built once into
# ${ATOMIX_CACHE:-/var/cache/atomix}/quadlet-tree (outside the clone) and reused.
# Must run as root.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-config-tools: must run as root (apt-get, mmdebstrap, chroot)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
CACHE="${ATOMIX_CACHE:-/var/cache/atomix}"
TREE="$CACHE/quadlet-tree"
KEYRING=/usr/share/keyrings/debian-archive-trixie-stable.gpg

PACKAGES=(nftables dnsmasq-base mmdebstrap systemd util-linux debian-archive-keyring)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup-config-tools: installing ${missing[*]}"
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

# The tree is complete only once the stamp exists: an interrupted build is redone
# from scratch rather than trusted half-made.
if [ ! -e "$TREE/.atomix-complete" ] || [ ! -x "$TREE/usr/libexec/podman/quadlet" ] \
    || [ ! -x "$TREE/usr/bin/systemd-analyze" ]; then
    echo "setup-config-tools: building the trixie tree with podman in $TREE"
    rm -rf "$TREE" "$TREE.tmp"
    mkdir -p "$CACHE"
    start=$(date +%s)
    mmdebstrap --variant=apt --arch=amd64 --include=podman,systemd \
        --keyring="$KEYRING" \
        trixie "$TREE.tmp" http://deb.debian.org/debian
    touch "$TREE.tmp/.atomix-complete"
    mv "$TREE.tmp" "$TREE"
    echo "setup-config-tools: trixie tree built in $(( $(date +%s) - start ))s"
fi

chroot "$TREE" /usr/libexec/podman/quadlet -version
chroot "$TREE" systemd-analyze --version | head -1
echo "setup-config-tools: ok (nft, dnsmasq, systemd-analyze, quadlet in $TREE)"
