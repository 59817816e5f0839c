#!/usr/bin/env bash
# The whole test suite: host set-up, formatting and lints, unit tests, privileged
# integration tests (root: loop devices, mount namespaces), the image build and its checks.
# Usage: scripts/test.sh   (as root, on Debian 12)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

# Each tier's time, printed as a table at the end (also when a tier fails).
suite_started=$(date +%s)
tier="" tier_started=$suite_started times=""
end_tier() {
    local now
    now=$(date +%s)
    [ -n "$tier" ] && times+=$(printf '%6d s  %s' $((now - tier_started)) "$tier")$'\n'
    tier_started=$now
}
step() {
    end_tier
    tier="$*"
    printf '\n==> %s\n' "$tier"
}
report_times() {
    local rc=$?
    end_tier
    printf '\n==> time per tier%s\n%s%6d s  in all\n' \
        "$([ "$rc" -eq 0 ] || echo " (failed in: $tier)")" "$times" $(( $(date +%s) - suite_started ))
}
trap report_times EXIT

step "host set-up"
scripts/setup-host.sh
scripts/setup-config-tools.sh
scripts/setup-update-server.sh

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
# --nocapture: each test prints its harness steps with their times, also when it passes.
cargo test -p atomix-qemu-tests --locked -- --test-threads=1 --nocapture
