#!/usr/bin/env bash
# Runs the atomix-config tests that need root and real tools (nft in a private network
# namespace, dnsmasq --test, podman's Quadlet generator and systemd-analyze from a trixie
# tree under chroot). Installs what they need first (idempotent), then runs the
# `#[ignore]`d tests; a plain `cargo test` runs everything else.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "test-config-tools: must run as root (namespaces, chroot)" >&2
    exit 1
fi
./scripts/setup-config-tools.sh
CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" cargo test -p atomix-config --test real_tools -- --ignored "$@"
