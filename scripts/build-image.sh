#!/usr/bin/env bash
# Builds the flashable AtomixOS image into build/: the static aarch64 binaries, then
# `atomix-image build` (cached stages under ${ATOMIX_CACHE:-/var/cache/atomix}).
# Extra arguments go to `atomix-image build` (e.g. --provisioning-key FILE, --build-id ID).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

TARGET=${CARGO_TARGET_DIR:-target}
initrd=$(scripts/build-initrd-binary.sh)
provision=()
if [ -d userspace/provision ]; then
    scripts/cargo-aarch64.sh build --quiet --release -p atomix-provision
    provision=(--provision-binary "$TARGET/aarch64-unknown-linux-gnu/release/atomix-provision")
fi
cargo build --quiet --release -p atomix-image
exec "$TARGET/release/atomix-image" build --initrd-binary "$initrd" "${provision[@]}" "$@"
