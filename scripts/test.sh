#!/usr/bin/env bash
# The whole test suite: host set-up, formatting and lints, unit tests, privileged
# integration tests (root: loop devices, mount namespaces), the image build and its checks.
# Usage: scripts/test.sh   (as root, on Debian 12)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

step "host set-up"
scripts/setup-host.sh
scripts/setup-config-tools.sh

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and integration tests (all crates but atomix-initrd and the built image)"
cargo test --workspace --locked --exclude atomix-initrd --exclude atomix-image --exclude atomix-qemu-tests
cargo test -p atomix-image --locked --bins

step "the web console in headless Chromium"
scripts/test-browser.sh

step "atomix-initrd: unit tests and privileged tests (loop devices, one at a time)"
cargo test -p atomix-initrd --locked -- --test-threads=1

step "atomix-image flash: onto loop devices full of random bytes (root)"
cargo test -p atomix-image --locked --test flash -- --test-threads=1

step "the flashable image (static aarch64 binaries, cached stages)"
scripts/build-image.sh

step "the built image, without booting"
cargo test -p atomix-image --locked --test built_image

step "boot tests: the built image in qemu-system-aarch64, one device at a time"
started=$(date +%s)
cargo test -p atomix-qemu-tests --locked -- --test-threads=1
echo "boot tests: $(( $(date +%s) - started )) s"
